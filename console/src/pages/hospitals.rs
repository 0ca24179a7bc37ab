//! Hospitals (医療機関): the service identities that push records through the ingest gateway. A hospital is
//! registered by its 10-digit institution code, its organisation and the SHA-256 of its client certificate — the
//! console computes the fingerprint from the PEM certificate pasted here (or takes the fingerprint as typed), so
//! no one copies 64 digits by hand. The gateway admits only the hospitals of the directory the policy service
//! signs: publishing it here shows the key to pin in the gateway and gives the file to carry there. Each act is a
//! call to the policy service, which checks the role and audits it.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Notice, Signed, Viewer};
use crate::fields::{Problems, described, field, invalid};
use crate::i18n::Lang;
use crate::layout::{csrf, notice, page, row};
use crate::pages::signin::Nothing;
use crate::services::{PageError, authed};

/// Who is shown the forms to register hospitals and publish the directory (the service checks the role itself:
/// today `manage_users`, an administrator's).
const MANAGERS: &[&str] = &["administrator"];

/// Why a pasted certificate gives no fingerprint.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// A private key was pasted (it must never leave the hospital).
    PrivateKey,
    /// Neither a PEM certificate nor 64 hex digits.
    Unreadable,
    /// A certificate whose subject CN is not the institution code (the gateway reads the hospital from the CN).
    OtherInstitution,
}

/// The SHA-256 (lower-case hex) of the DER of the first certificate in `text` (PEM) — an X.509 certificate whose
/// subject CN is `code`, the identity the gateway will read from it —, or a fingerprint typed as 64 hex digits (`:`
/// and spaces ignored, as `openssl x509 -fingerprint -sha256` prints it; nothing to check it against).
fn certificate_sha256(text: &str, code: &str) -> Result<String, Unusable> {
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(Unusable::PrivateKey);
    }
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(digits);
    }
    // The parser's errors quote the text; only their kind is kept.
    let der = CertificateDer::from_pem_slice(text.as_bytes()).map_err(|_| Unusable::Unreadable)?;
    let bytes: &[u8] = &der;
    match tokumei_platform::tls::subject_cn(bytes) {
        None => Err(Unusable::Unreadable),
        Some(cn) if cn != code => Err(Unusable::OtherInstitution),
        Some(_) => Ok(hex::encode(Sha256::digest(bytes))),
    }
}

/// A hospital as typed (all text, so that what was typed comes back when something is wrong).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HospitalForm {
    code: String,
    organisation: String,
    certificate: String,
}

impl HospitalForm {
    /// The service's request, or each field's problem (naming the rule, never the value).
    fn check(&self, lang: Lang) -> Result<pb::AddHospitalRequest, Problems> {
        let mut p = Problems::new();
        let code = self.code.trim();
        if !tokumei_platform::tls::is_institution_code(code) {
            p.insert(
                "hospital-code",
                lang.t(
                    "医療機関コードは数字10桁です（先頭2桁は都道府県番号 01〜47）。",
                    "The institution code is 10 digits (the first two the prefecture, 01–47).",
                ),
            );
        }
        if self.organisation.trim().is_empty() {
            p.insert("hospital-organisation", lang.t("入力してください。", "Required."));
        }
        let fingerprint = certificate_sha256(&self.certificate, code);
        match &fingerprint {
            Ok(_) => {}
            Err(Unusable::PrivateKey) => {
                p.insert(
                    "hospital-certificate",
                    lang.t(
                        "秘密鍵が含まれています。証明書だけを貼り付けてください（貼り付けた鍵は交換してください）。",
                        "This contains a private key: paste the certificate only (and replace that key).",
                    ),
                );
            }
            Err(Unusable::OtherInstitution) => {
                p.insert(
                    "hospital-certificate",
                    lang.t(
                        "証明書の CN が医療機関コードと一致しません。",
                        "The certificate's CN is not the institution code.",
                    ),
                );
            }
            Err(Unusable::Unreadable) => {
                p.insert(
                    "hospital-certificate",
                    lang.t(
                        "PEM 形式の証明書（-----BEGIN CERTIFICATE-----）か、SHA-256 指紋（16進数64桁）を入力してください。",
                        "A PEM certificate (-----BEGIN CERTIFICATE-----) or a SHA-256 fingerprint (64 hexadecimal digits).",
                    ),
                );
            }
        }
        match fingerprint {
            Ok(certificate_sha256) if p.is_empty() => Ok(pb::AddHospitalRequest {
                code: code.to_owned(),
                organisation: self.organisation.trim().to_owned(),
                certificate_sha256,
            }),
            _ => Err(p),
        }
    }
}

/// What the page shows besides the list: the form as typed, its problems, a refusal, a notice.
#[derive(Default)]
struct Draft {
    form: HospitalForm,
    problems: Problems,
    refusal: Option<PageError>,
    done: String,
}

fn status(lang: Lang, s: &str) -> &'static str {
    match s {
        "active" => lang.t("有効", "Active"),
        "disabled" => lang.t("停止", "Disabled"),
        "invited" => lang.t("招待中", "Invited"),
        "pending_totp" => lang.t("二要素の設定待ち", "Awaiting second factor"),
        _ => lang.t("不明", "Unknown"),
    }
}

/// A SHA-256 fingerprint: its first and last eight digits on the page, all 64 in the title.
fn fingerprint(hex: &str) -> Markup {
    let short = match (hex.get(..8), hex.len().checked_sub(8).and_then(|at| hex.get(at..))) {
        (Some(head), Some(tail)) if hex.len() > 20 => format!("{head}…{tail}"),
        _ => hex.to_owned(),
    };
    html! { code.hash title=(hex) { (short) } }
}

fn table(lang: Lang, hospitals: &[&pb::User]) -> Markup {
    html! {
        @if hospitals.is_empty() {
            p.empty { (lang.t("登録された医療機関はありません。", "No hospitals registered.")) }
        } @else {
            table.list id="hospitals" {
                thead { tr {
                    th scope="col" { (lang.t("医療機関コード", "Institution code")) }
                    th scope="col" { (lang.t("組織", "Organisation")) }
                    th scope="col" { (lang.t("証明書の SHA-256", "Certificate SHA-256")) }
                    th scope="col" { (lang.t("状態", "Status")) }
                } }
                tbody {
                    @for h in hospitals {
                        tr {
                            td { code { (h.username) } }
                            td { (h.display_name) " (" (h.organisation) ")" }
                            td { (fingerprint(&h.certificate_sha256)) }
                            td { span class={ "status " (h.status) } { (status(lang, &h.status)) } }
                        }
                    }
                }
            }
        }
    }
}

fn add_form(viewer: &Viewer, v: &HospitalForm, problems: &Problems) -> Markup {
    let lang = viewer.lang;
    html! {
        section aria-labelledby="add-h" {
            h2 id="add-h" { (lang.t("医療機関の登録", "Register a hospital")) }
            form method="post" action="/hospitals" novalidate {
                (csrf(viewer))
                (field("hospital-code", lang.t("医療機関コード", "Institution code"), Some(lang.t("数字10桁（証明書の CN）", "10 digits (the certificate's CN)")), problems, html! {
                    input type="text" id="hospital-code" name="code" value=(v.code) inputmode="numeric" autocomplete="off"
                        aria-invalid=[invalid("hospital-code", problems)]
                        aria-describedby=[described("hospital-code", true, problems)];
                }))
                (field("hospital-organisation", lang.t("組織ID", "Organisation id"), None, problems, html! {
                    input type="text" id="hospital-organisation" name="organisation" value=(v.organisation)
                        aria-invalid=[invalid("hospital-organisation", problems)]
                        aria-describedby=[described("hospital-organisation", false, problems)];
                }))
                (field("hospital-certificate", lang.t("クライアント証明書", "Client certificate"),
                    Some(lang.t("医療機関のゲートウェイが提示する証明書を PEM 形式で貼り付けます（SHA-256 指紋でも可）。秘密鍵は貼り付けないでください。", "The certificate the hospital's gateway presents, pasted as PEM (or its SHA-256 fingerprint). Never paste a private key.")),
                    problems, html! {
                    textarea id="hospital-certificate" name="certificate" rows="8" spellcheck="false" autocomplete="off"
                        aria-invalid=[invalid("hospital-certificate", problems)]
                        aria-describedby=[described("hospital-certificate", true, problems)] { (v.certificate) }
                }))
                button type="submit" id="add-hospital" { (lang.t("登録する", "Register")) }
            }
        }
    }
}

/// The page: the notice or the problems, the hospitals, and for those who manage them the forms.
async fn render(console: &AppState, viewer: &Viewer, draft: &Draft) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let users = console
        .services
        .policy
        .clone()
        .list_users(authed(viewer.token(), pb::Empty {})?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .users;
    let hospitals: Vec<&pb::User> = users
        .iter()
        .filter(|u| u.roles.iter().any(|r| r == "hospital"))
        .collect();
    let manages = MANAGERS.iter().any(|r| viewer.has(r));
    Ok(page(
        viewer,
        ("医療機関", "Hospitals"),
        html! {
            @if draft.done == "added" { (notice(lang.t("医療機関を登録しました。ゲートウェイに反映するには名簿を公開してください。", "The hospital was registered. Publish the directory for the gateway to admit it."))) }
            @if let Some(e) = &draft.refusal {
                div.error role="alert" id="refusal" { p { strong.reason { (e.reason) } " " (e.message) } }
            }
            @if !draft.problems.is_empty() {
                div.error role="alert" id="problems" {
                    p { (lang.t("入力内容を確認してください：", "Please check the fields:")) " " (draft.problems.len()) }
                }
            }
            (table(lang, &hospitals))
            @if manages {
                (add_form(viewer, &draft.form, &draft.problems))
                section aria-labelledby="directory-h" {
                    h2 id="directory-h" { (lang.t("ゲートウェイ用の名簿", "The gateway's directory")) }
                    p.hint { (lang.t("有効な医療機関とその証明書の指紋を、ポリシーサービスの署名付きで公開します。", "Publishes the enabled hospitals and their certificates' fingerprints, signed by the policy service.")) }
                    form method="post" action="/hospitals/directory" {
                        (csrf(viewer))
                        button type="submit" id="publish-directory" { (lang.t("名簿を公開する", "Publish the directory")) }
                    }
                }
            }
        },
    ))
}

/// `GET /hospitals`: the hospitals and the forms.
pub async fn list(State(console): State<AppState>, viewer: Viewer, Notice(done): Notice) -> Result<Markup, PageError> {
    let draft = Draft {
        done,
        ..Draft::default()
    };
    render(&console, &viewer, &draft).await
}

/// `POST /hospitals`: checks the fields, fingerprints the certificate, registers through the policy service.
pub async fn add(State(console): State<AppState>, signed: Signed<HospitalForm>) -> Response {
    let Signed { viewer, mut form } = signed;
    let (draft, code) = match form.check(viewer.lang) {
        Err(problems) => (
            Draft {
                form: {
                    // A pasted private key is never sent back in the page.
                    if form.certificate.contains("PRIVATE KEY") {
                        form.certificate.clear();
                    }
                    form
                },
                problems,
                ..Draft::default()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Ok(message) => {
            let request = match authed(viewer.token(), message) {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
            match console.services.policy.clone().add_hospital(request).await {
                Ok(_) => return crate::layout::see_other("/hospitals?done=added"),
                Err(refused) => {
                    let e = PageError::refused(refused);
                    let code = e.status;
                    let draft = Draft {
                        form,
                        refusal: Some(e),
                        ..Draft::default()
                    };
                    (draft, code)
                }
            }
        }
    };
    match render(&console, &viewer, &draft).await {
        Ok(markup) => (code, markup).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The directory as signed now.
async fn publish(console: &AppState, viewer: &Viewer) -> Result<pb::HospitalDirectory, PageError> {
    Ok(console
        .services
        .policy
        .clone()
        .publish_hospital_directory(authed(viewer.token(), pb::Empty {})?)
        .await
        .map_err(PageError::refused)?
        .into_inner())
}

/// The hospitals a published directory lists — (institution code, certificate SHA-256) — read from its payload.
fn listed_in(json: &str) -> Vec<(String, String)> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let payload = serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|d| d.get("payload").and_then(Value::as_str).map(str::to_owned))
        .and_then(|p| serde_json::from_str::<Value>(&p).ok())
        .unwrap_or(Value::Null);
    payload
        .get("hospitals")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|h| (text(h, "institution_code"), text(h, "certificate_sha256")))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /hospitals/directory`: signs the directory now; shows what it lists and the key the gateway pins.
pub async fn directory(State(console): State<AppState>, signed: Signed<Nothing>) -> Result<Markup, PageError> {
    let viewer = signed.viewer;
    let lang = viewer.lang;
    let d = publish(&console, &viewer).await?;
    let listed = listed_in(&d.json);
    Ok(page(
        &viewer,
        ("医療機関の名簿", "Hospital directory"),
        html! {
            p.notice role="status" { (lang.t("署名付きの名簿を作成しました。", "The signed directory was made.")) }
            dl {
                (row(lang.t("掲載した医療機関", "Hospitals listed"), html! { span id="directory-hospitals" { (d.hospitals) } }))
                (row(lang.t("ゲートウェイに固定する公開鍵", "Public key to pin in the gateway"), html! { code.hash id="directory-key" { (d.public_key) } }))
            }
            p.hint { (lang.t("ゲートウェイの設定 [gateway.directory] public_key にこの鍵を設定します。", "Set this key as public_key in the gateway's [gateway.directory].")) }
            @if !listed.is_empty() {
                table.list id="directory" {
                    thead { tr {
                        th scope="col" { (lang.t("医療機関コード", "Institution code")) }
                        th scope="col" { (lang.t("証明書の SHA-256", "Certificate SHA-256")) }
                    } }
                    tbody {
                        @for (institution, sha256) in &listed {
                            tr { td { code { (institution) } } td { (fingerprint(sha256)) } }
                        }
                    }
                }
            }
            form method="post" action="/hospitals/directory.json" {
                (csrf(&viewer))
                button type="submit" id="download-directory" { (lang.t("名簿のファイルを保存する", "Save the directory file")) }
            }
            p.hint { (lang.t("保存するたびに、その時点の名簿があらためて署名されます。ファイルはゲートウェイのホストに運びます。", "Each save signs the directory as it is then. Carry the file to the gateway's host.")) }
            p { a href="/hospitals" { (lang.t("医療機関に戻る", "Back to hospitals")) } }
        },
    ))
}

/// `POST /hospitals/directory.json`: the signed directory as the file the gateway reads.
pub async fn directory_file(State(console): State<AppState>, signed: Signed<Nothing>) -> Response {
    match publish(&console, &signed.viewer).await {
        Ok(d) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"hospital-directory.json\"",
                ),
            ],
            d.json,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "3f2a9c1b00112233445566778899aabbccddeeff00112233445566778899aabb";

    #[test]
    fn a_fingerprint_is_taken_as_typed_or_as_openssl_prints_it() {
        assert_eq!(
            certificate_sha256(FINGERPRINT, "1310000001"),
            Ok(FINGERPRINT.to_owned())
        );
        let colons = FINGERPRINT
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(certificate_sha256(&colons, "1310000001"), Ok(FINGERPRINT.to_owned()));
    }

    /// A self-signed certificate whose subject CN is `cn`, as PEM, and the SHA-256 of its DER.
    fn certificate(cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), hex::encode(Sha256::digest(cert.der())))
    }

    #[test]
    fn a_pem_certificate_is_fingerprinted_over_its_der_when_its_cn_is_the_code() {
        let (pem, sha256) = certificate("1310000001");
        assert_eq!(certificate_sha256(&pem, "1310000001"), Ok(sha256));
        assert_eq!(certificate_sha256(&pem, "1310000002"), Err(Unusable::OtherInstitution));
        // Base64 between the markers that is no certificate.
        let not_x509 = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_sha256(not_x509, "1310000001"), Err(Unusable::Unreadable));
    }

    #[test]
    fn a_private_key_or_garbage_is_refused() {
        let key = "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n";
        assert_eq!(certificate_sha256(key, "1310000001"), Err(Unusable::PrivateKey));
        assert_eq!(certificate_sha256("hello", "1310000001"), Err(Unusable::Unreadable));
        assert_eq!(certificate_sha256("", "1310000001"), Err(Unusable::Unreadable));
    }

    #[test]
    fn each_problem_names_its_field_and_never_the_value() {
        let f = HospitalForm {
            code: "13100-secret".into(),
            organisation: " ".into(),
            certificate: "secret".into(),
        };
        let p = f.check(Lang::En).expect_err("invalid");
        let ids: Vec<&str> = p.keys().copied().collect();
        assert_eq!(ids, ["hospital-certificate", "hospital-code", "hospital-organisation"]);
        assert!(p.values().all(|m| !m.contains("secret")));
    }

    #[test]
    fn a_complete_hospital_becomes_the_request() {
        let f = HospitalForm {
            code: " 1310000001 ".into(),
            organisation: "org-h".into(),
            certificate: FINGERPRINT.to_ascii_uppercase(),
        };
        let r = f.check(Lang::Ja).expect("valid");
        assert_eq!(r.code, "1310000001");
        assert_eq!(r.certificate_sha256, FINGERPRINT);
    }

    #[test]
    fn the_directory_lists_its_payloads_hospitals() {
        let payload = format!(
            r#"{{"issued_at":"2026-12-04T00:00:00Z","hospitals":[{{"institution_code":"1310000001","certificate_sha256":"{FINGERPRINT}"}}]}}"#
        );
        let file = serde_json::json!({"payload": payload, "signature": "00"}).to_string();
        assert_eq!(listed_in(&file), [("1310000001".to_owned(), FINGERPRINT.to_owned())]);
        assert!(listed_in("not json").is_empty());
    }

    #[test]
    fn a_fingerprint_is_shortened_on_the_page_and_whole_in_its_title() {
        let html = fingerprint(FINGERPRINT).into_string();
        assert!(html.contains("3f2a9c1b…8899aabb"));
        assert!(html.contains(&format!("title=\"{FINGERPRINT}\"")));
    }
}
