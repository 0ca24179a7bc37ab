//! Chapter 10: the web console. The demo starts `tokumei console serve` over TLS as a process of its own — a client
//! of the policy and release services like every desk — then signs in as the chair would in a browser (the sign-in
//! form's token, password and a recovery code), opens her pages and checks the security headers; it prints the
//! console's address and a sign-in for the person running the demo. With `tokumei demo --console` the platform
//! and the console keep running until Ctrl-C.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use tokumei_keys::pki::PkiLayout;

use crate::desk::{PASSWORD, Person};
use crate::platform::Platform;

/// What the chapter showed.
#[derive(Debug, Default, Serialize)]
pub struct ConsoleChapter {
    /// The console's address.
    pub url: String,
    /// Who signed in through it.
    pub signed_in_as: String,
    /// The pages opened after sign-in, each answered 200.
    pub pages: Vec<String>,
    /// Whether every page carried the Content-Security-Policy without script and `X-Frame-Options: DENY`.
    pub headers_checked: bool,
    /// A sign-in without the form's token was refused `CSRF_INVALID`.
    pub forged_sign_in_refused: bool,
}

fn form_token(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_owned())
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

fn secure_headers(response: &reqwest::Response) -> bool {
    let h = response.headers();
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    csp.starts_with("default-src 'none'")
        && !csp.contains("script")
        && h.get("x-frame-options").is_some_and(|v| v == "DENY")
}

/// Starts the console beside `platform`, signs `visitor` in with their first recovery code and shows their pages.
pub async fn chapter(
    platform: &mut Platform,
    home: &Path,
    pki: &PkiLayout,
    visitor: &Person,
    say: &impl Fn(&str),
) -> Result<ConsoleChapter> {
    let path = |p: std::path::PathBuf| p.display().to_string();
    let (service, line) = crate::process::start(
        home,
        &[
            "--json",
            "console",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &path(pki.gateway_cert()),
            "--tls-key",
            &path(pki.gateway_key()),
            "--policy-url",
            &platform.desk.url,
            "--policy-ca",
            &path(pki.ca_cert()),
            "--release-url",
            &platform.release_url,
        ],
    )?;
    platform.keep(service);
    let ready: serde_json::Value = serde_json::from_str(&line).context("the console's readiness line")?;
    let url = ready["url"].as_str().context("the console's address")?.to_owned();
    let mut out = ConsoleChapter {
        url: url.clone(),
        ..ConsoleChapter::default()
    };
    say(&format!(
        "   the console ({url}) is one more client of the services: it holds the services' addresses and, per person signed in, their session — no key, no database"
    ));
    tokumei_platform::tls::install_crypto_provider();
    let ca = std::fs::read(pki.ca_cert()).context("the CA")?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (codes, username) = (&visitor.recovery_codes, visitor.username.as_str());
    anyhow::ensure!(codes.len() >= 2, "{username} kept no recovery codes");
    // A browser's sign-in: the form's token from the page and its cookie, password and a recovery code.
    let page = http.get(format!("{url}/signin")).send().await?;
    out.headers_checked = secure_headers(&page);
    let signin_cookie = cookie_pair(&page, "__Host-tokumei-signin").context("the sign-in cookie")?;
    let token = form_token(&page.text().await?).context("the sign-in form's token")?;
    let forged = http
        .post(format!("{url}/signin"))
        .header("cookie", &signin_cookie)
        .form(&[
            ("csrf", "forged"),
            ("username", username),
            ("password", PASSWORD),
            ("recovery", codes[0].as_str()),
        ])
        .send()
        .await?;
    out.forged_sign_in_refused = forged.status() == 403 && forged.text().await?.contains("CSRF_INVALID");
    let signed = http
        .post(format!("{url}/signin"))
        .header("cookie", &signin_cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("username", username),
            ("password", PASSWORD),
            ("recovery", codes[0].as_str()),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        signed.status() == 303,
        "the console did not sign {username} in: {}",
        signed.status()
    );
    let session = cookie_pair(&signed, "__Host-tokumei-session").context("the session cookie")?;
    for page in ["/", "/applications", "/reviews", "/registers"] {
        let response = http
            .get(format!("{url}{page}"))
            .header("cookie", &session)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "{page} answered {}", response.status());
        out.headers_checked &= secure_headers(&response);
        let body = response.text().await?;
        anyhow::ensure!(
            page == "/registers" || body.contains(username),
            "{page} is not {username}'s"
        );
        out.pages.push(page.to_owned());
    }
    out.signed_in_as = username.to_owned();
    anyhow::ensure!(out.headers_checked, "a console page lacked its security headers");
    anyhow::ensure!(
        out.forged_sign_in_refused,
        "a sign-in without the form's token was not refused"
    );
    say(&format!(
        "   {username} signed in through it (password + a recovery code) and opened {}: each page with a script-free Content-Security-Policy and X-Frame-Options: DENY; a sign-in without the form's token was refused (CSRF_INVALID)",
        out.pages.join(", "),
    ));
    say(&format!(
        "   try it (demo only — a throwaway account): {url}  — sign in as {username} with the password \"{PASSWORD}\" and, under \"認証アプリを使えないとき\", the recovery code {} (the demo's CA: {}; run `tokumei demo --console` to keep the platform open)",
        codes[1].as_str(),
        pki.ca_cert().display()
    ));
    Ok(out)
}
