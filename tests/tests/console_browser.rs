//! The web console in a real browser: Debian's headless Chromium driven over WebDriver (chromedriver), against the
//! console serving over TLS as a client of the policy and release services, which run as processes of their own.
//!
//! The story of the issue, every step asserted on the page: a researcher files an application (a field left empty
//! is named next to it first; a title with a script tag is shown as text), the chair assigns three members, each
//! signs in and votes, the chair decides with conditions, an operator builds the release, and the researcher
//! downloads their copy in the browser (its SHA-256 checked against the page) and declares its deletion.
//!
//! And as an attacker would try it: a form posted without its CSRF token is refused and changes nothing; the
//! session cookie stolen before sign-out names nothing after it; every response carries the security headers and
//! the cookies are `Secure; HttpOnly; SameSite=Strict`.
//!
//! With `TOKUMEI_CONSOLE_SCREENSHOTS=DIR` the main pages are saved there as PNG (docs/console/ holds the ones the
//! documentation shows).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::core_orders::BuildZones;
use common::people::{self, Enrolled, PolicyService};
use common::{HOSPITAL_A, HOSPITAL_B, Home, tokumei_bin};
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::{Digest, Sha256};
use tokumei_ingest::synth::Synth;
use tokumei_proto::ingest::v1::RecordBatch;

const SESSION_COOKIE: &str = "__Host-tokumei-session";

/// `tokumei console serve` over TLS with the development PKI's server certificate; stopped when dropped.
struct Console {
    child: Child,
    url: String,
}

impl Console {
    fn start(home: &Home, policy_addr: &str, release_url: &str) -> Console {
        let pki = home.path().join("pki");
        let mut child = Command::new(tokumei_bin())
            .env("TOKUMEI_HOME", home.path())
            .env("RUST_LOG", "warn")
            .args(["--json", "console", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(pki.join("gateway.crt"))
            .arg("--tls-key")
            .arg(pki.join("gateway.key"))
            .args(["--policy-url", &format!("https://{policy_addr}"), "--policy-ca"])
            .arg(pki.join("ca.crt"))
            .args(["--release-url", release_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tokumei console serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the console's first line");
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let url = ready["url"].as_str().expect("url").replace("127.0.0.1", "localhost");
        Console { child, url }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver on a free loopback port and a headless Chromium session; stopped when dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Browser {
    async fn start(downloads: &Path, profile: &Path) -> Browser {
        let port = common::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/test.sh installs it)");
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), true.into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,1000", "--lang=ja",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let mut last = None;
        for _ in 0..50 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Browser {
                        driver,
                        client: Some(client),
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no WebDriver session: {last:?}");
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A second factor typed at sign-in.
enum Second<'a> {
    Code(String),
    Recovery(&'a str),
}

/// The text of the first element `css` finds, waiting for it; read again if the page was replaced in between.
async fn text(c: &Client, css: &str) -> String {
    for _ in 0..20 {
        let element = match c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let main = match c.find(Locator::Css("main")).await {
                    Ok(m) => m.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("{css} not on the page {url}: {e}\n{main}");
            }
        };
        if let Ok(text) = element.text().await {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} kept going stale");
}

async fn type_into(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Clicks what submits a form or follows a link, and waits until the browser left the page (the old page's root
/// element goes stale): what is read next is the new page's, never the old one's.
async fn submit(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("a page");
    click(c, css).await;
    for _ in 0..300 {
        if old.tag_name().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("clicking {css} did not leave the page");
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("TOKUMEI_CONSOLE_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).expect("write screenshot");
    }
}

async fn sign_in(c: &Client, console: &Console, who: &Enrolled, second: Second<'_>) {
    c.goto(&format!("{}/signin", console.url)).await.expect("sign-in page");
    type_into(c, "#username", &who.username).await;
    type_into(c, "#password", people::PASSWORD).await;
    match second {
        Second::Code(code) => type_into(c, "#code", &code).await,
        Second::Recovery(code) => {
            click(c, "details summary").await;
            type_into(c, "#recovery", code).await;
        }
    }
    submit(c, "#signin").await;
    let Ok(who_line) = c.find(Locator::Css(".who")).await else {
        panic!("{} could not sign in: {}", who.username, text(c, "main").await);
    };
    let who_line = who_line.text().await.expect("text");
    assert!(
        who_line.contains(&who.username),
        "not signed in as {}: {who_line}",
        who.username
    );
}

async fn sign_out(c: &Client) {
    submit(c, "#signout").await;
    let main = text(c, "main").await;
    assert!(main.contains("サインアウトしました"), "{main}");
}

/// Waits on an order's page until the core reported, following its "see the latest state" link as a person would;
/// the order must be done.
async fn wait_for_order(c: &Client) {
    for _ in 0..300 {
        let state = text(c, "#order-state").await;
        if state == "完了" {
            return;
        }
        assert!(
            state != "失敗" && state != "期限切れ",
            "the order ended {state}: {}",
            text(c, "main").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        submit(c, "#refresh").await;
    }
    panic!("the core did not report");
}

async fn push_cohort(home: &Home) {
    let gw = home.start();
    let mut client = gw.client(home, HOSPITAL_A).await;
    let records = Synth::new(11).records(HOSPITAL_A, 0, 400);
    let batches: Vec<RecordBatch> = records
        .chunks(200)
        .enumerate()
        .map(|(i, c)| RecordBatch {
            batch_id: format!("b{i}"),
            records: c.to_vec(),
        })
        .collect();
    tokumei_ingest::client::push(&mut client, batches).await.expect("push");
    common::drain_core(home);
}

fn https_client(home: &Home) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(home.pki.ca_cert()).expect("CA");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTPS client")
}

/// The headers and cookie flags every page must carry.
async fn check_headers(http: &reqwest::Client, console: &Console) {
    let response = http
        .get(format!("{}/signin", console.url))
        .send()
        .await
        .expect("GET /signin");
    assert_eq!(response.status(), 200);
    let h = response.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("script") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.contains_key("strict-transport-security"));
    let cookie = h["set-cookie"].to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script"), "a page carries a script");
    // A signed-out visitor is sent to sign in, not shown anything.
    let r = http.get(format!("{}/applications", console.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/signin");
}

/// The researcher's form: a missing field named beside it, then filed with a script tag in its title.
async fn file_application(c: &Client, console: &Console, title: &str) -> String {
    c.goto(&format!("{}/applications/new", console.url)).await.unwrap();
    screenshot(c, "application-form").await;
    type_into(c, "#purpose", "糖尿病患者のHbA1cと転帰の関連を調べる").await;
    submit(c, "#file").await;
    let problem = text(c, "#title-error").await;
    assert!(problem.contains("入力してください"), "{problem}");
    assert_eq!(
        c.find(Locator::Css("#purpose"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("糖尿病患者のHbA1cと転帰の関連を調べる"),
        "what was typed was lost"
    );
    assert_eq!(
        c.find(Locator::Css("#title"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    screenshot(c, "application-form-problems").await;
    let today = chrono::Utc::now().date_naive();
    type_into(c, "#title", title).await;
    type_into(c, "#public_interest", "地域の糖尿病診療の改善").await;
    type_into(c, "#methods", "記述統計とロジスティック回帰").await;
    c.find(Locator::Css("#channel"))
        .await
        .unwrap()
        .select_by_value("file")
        .await
        .unwrap();
    type_into(c, "#period_from", &today.to_string()).await;
    type_into(c, "#period_to", &(today + chrono::Duration::days(365)).to_string()).await;
    type_into(c, "#tables", "patients: linkage_key, birth_date, sex, prefecture").await;
    type_into(c, "#security_measures", "施錠した解析室、暗号化した端末").await;
    type_into(c, "#funding", "科研費").await;
    type_into(c, "#recipients", "hana").await;
    click(c, "#not_for_advertising").await;
    submit(c, "#file").await;
    let id = text(c, "#app-id").await;
    assert_eq!(text(c, "#status").await, "受付");
    assert!(text(c, ".notice").await.contains("申請を受け付けました"));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_goes_from_form_to_deleted_download_in_the_browser_and_attacks_fail() {
    let home = Home::new();
    push_cohort(&home).await;
    let db: &[(&str, &str)] = &[];
    people::operator(home.path(), db);
    let (hana, chair, members, operator) = {
        let service = PolicyService::start(home.path(), db);
        let enrol = |u: &str, org: &str, roles: &str| people::invite_enrolled(&service, home.path(), db, u, org, roles);
        let hana = enrol("hana", "univ-h", "researcher");
        let chair = enrol("haruka", "univ-c", "committee_chair,committee_member");
        let members: Vec<Enrolled> = [("aoi", "univ-m"), ("ren", "hosp-r"), ("yuto", "law-y")]
            .iter()
            .map(|(u, o)| enrol(u, o, "committee_member"))
            .collect();
        let operator = enrol("daichi", "platform", "operator");
        (hana, chair, members, operator)
    };
    let zones = BuildZones::start(&home, &home.path().join("console-release.log"));
    let console = Console::start(&home, &zones.core.policy.addr, &zones.release.url());
    let http = https_client(&home);
    check_headers(&http, &console).await;

    let downloads = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), profile.path()).await;
    let c = browser.c();

    // The researcher files; the script in the title is text on the page, never run.
    sign_in(c, &console, &hana, Second::Code(hana.next_code())).await;
    screenshot(c, "home-researcher").await;
    let title = "<script>alert(1)</script> 糖尿病と転帰";
    let id = file_application(c, &console, title).await;
    assert_eq!(text(c, "#title").await, title);
    let source = c.source().await.unwrap();
    assert!(
        source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the title was not escaped"
    );
    assert!(
        !source.contains("<script>alert(1)"),
        "the title reached the page as markup"
    );
    screenshot(c, "application-filed").await;
    let session = c.get_named_cookie(SESSION_COOKIE).await.expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.same_site().map(|s| s.to_string()).as_deref(), Some("Strict"));
    let stolen = format!("{SESSION_COOKIE}={}", session.value());

    // A forged form (the cookie, without the page's token): refused, and the application is not withdrawn.
    for body in ["", "csrf=0000"] {
        let r = http
            .post(format!("{}/applications/{id}/withdraw", console.url))
            .header("cookie", &stolen)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "a form without its token went through");
        assert!(r.text().await.unwrap().contains("CSRF_INVALID"));
    }
    c.goto(&format!("{}/applications/{id}", console.url)).await.unwrap();
    assert_eq!(
        text(c, "#status").await,
        "受付",
        "the forged withdrawal changed the application"
    );
    // The cookie works until sign-out, and names nothing after it.
    let r = http
        .get(format!("{}/applications", console.url))
        .header("cookie", &stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sign_out(c).await;
    let r = http
        .get(format!("{}/applications", console.url))
        .header("cookie", &stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a cookie still worked after sign-out");

    // The chair assigns three members.
    sign_in(c, &console, &chair, Second::Code(chair.next_code())).await;
    c.goto(&format!("{}/applications/{id}", console.url)).await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
    type_into(c, "#members", &names.join(", ")).await;
    submit(c, "#assign").await;
    assert!(text(c, ".notice").await.contains("審査委員を割り当てました"));
    assert_eq!(text(c, "#status").await, "審査中");
    sign_out(c).await;

    // Each member finds it among their reviews and votes.
    for (i, m) in members.iter().enumerate() {
        sign_in(c, &console, m, Second::Code(m.next_code())).await;
        assert_eq!(text(c, "#count-reviews").await, "1");
        c.goto(&format!("{}/reviews", console.url)).await.unwrap();
        if i == 0 {
            screenshot(c, "reviews").await;
        }
        submit(c, &format!("a[href='/applications/{id}']")).await;
        if i == 0 {
            screenshot(c, "application-review").await;
        }
        click(c, "#vote-approve").await;
        type_into(c, "#vote-comment", "目的と安全管理は妥当").await;
        submit(c, "#vote").await;
        assert!(text(c, ".notice").await.contains("投票を記録しました"));
        let quorum = text(c, "#quorum").await;
        assert!(quorum.contains(&format!("賛成 {}", i + 1)), "{quorum}");
        sign_out(c).await;
    }

    // The chair reads the release plan the core computes, then decides with conditions (a second sign-in today:
    // with a recovery code).
    sign_in(c, &console, &chair, Second::Recovery(&chair.recovery_codes[0])).await;
    c.goto(&format!("{}/applications/{id}", console.url)).await.unwrap();
    let quorum = text(c, "#quorum").await;
    assert!(quorum.contains("賛成 3"), "{quorum}");
    // The rule the service is configured with (here its default), not text of the console's own.
    assert!(quorum.contains("定足数：3名以上、賛成2/3以上"), "{quorum}");
    submit(c, "#plan").await;
    wait_for_order(c).await;
    assert!(
        text(c, "#plan-patients").await.parse::<u64>().unwrap_or(0) > 0,
        "the plan names no patients"
    );
    assert!(
        text(c, "#plan-attack").await.contains("保証する範囲"),
        "the promised attack is not shown"
    );
    screenshot(c, "release-plan").await;
    c.goto(&format!("{}/applications/{id}", console.url)).await.unwrap();
    type_into(c, "#m", "1").await;
    type_into(c, "#max_downloads", "5").await;
    screenshot(c, "decision").await;
    submit(c, "#decide").await;
    assert!(text(c, ".notice").await.contains("決定を記録しました"));
    assert_eq!(text(c, "#status").await, "承認");
    assert!(text(c, "#conditions").await.contains("k = 5, m = 1"));
    sign_out(c).await;

    // An operator builds the release: the core's half as an order, then the release service's.
    sign_in(c, &console, &operator, Second::Code(operator.next_code())).await;
    c.goto(&format!("{}/operator", console.url)).await.unwrap();
    type_into(c, "#build-application", &id).await;
    submit(c, "#build").await;
    wait_for_order(c).await;
    submit(c, "#complete-build").await;
    assert!(text(c, "#built").await.contains("提供データを作成しました"));
    // Reloading the outcome asks the release zone nothing again.
    c.refresh().await.unwrap();
    assert!(text(c, "#built").await.contains("提供データを作成しました"));
    let report = text(c, "#report").await;
    let release = report
        .split_whitespace()
        .find(|w| w.starts_with(&format!("R-{id}")))
        .unwrap_or_else(|| panic!("no release id in the build's report: {report}"))
        .to_owned();
    screenshot(c, "release-built").await;
    c.goto(&format!("{}/operator", console.url)).await.unwrap();
    submit(c, "#store-status").await;
    wait_for_order(c).await;
    assert!(
        text(c, "#store-tables").await.contains("patients"),
        "the store's status names no table"
    );
    screenshot(c, "store-status").await;
    // The operator publishes the decisions register; anyone reads it without signing in.
    c.goto(&format!("{}/registers", console.url)).await.unwrap();
    submit(c, "#publish-decisions").await;
    sign_out(c).await;
    c.goto(&format!("{}/registers/decisions", console.url)).await.unwrap();
    assert!(
        text(c, "#register").await.contains(&id),
        "the public register does not list the approval"
    );
    screenshot(c, "register-public").await;

    // The researcher downloads their copy in the browser and declares its deletion.
    sign_in(c, &console, &hana, Second::Recovery(&hana.recovery_codes[0])).await;
    c.goto(&format!("{}/budget", console.url)).await.unwrap();
    assert!(text(c, "main").await.contains("予算が付与された統計の承認はありません"));
    c.goto(&format!("{}/releases", console.url)).await.unwrap();
    assert!(text(c, "main").await.contains(&release));
    screenshot(c, "releases").await;
    let button = c
        .find(Locator::Css("button.download"))
        .await
        .expect("a file to download");
    let file = button.attr("data-file").await.unwrap().expect("file name");
    button.click().await.unwrap();
    let sha256 = text(c, "#sha256").await;
    click(c, "#download-link").await;
    let saved = downloads.path().join(&file);
    let mut waited = 0;
    while !saved.exists() && waited < 300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let bytes = std::fs::read(&saved).unwrap_or_else(|e| panic!("the browser saved no {file}: {e}"));
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        sha256,
        "the download's hash differs from the page's"
    );
    c.goto(&format!("{}/releases", console.url)).await.unwrap();
    let statement = c
        .find(Locator::Css("textarea[name=statement]"))
        .await
        .expect("deletion form");
    statement
        .send_keys("解析端末とバックアップから消去し、消去ツールで上書きした")
        .await
        .unwrap();
    submit(c, "button.declare").await;
    assert!(text(c, ".notice").await.contains("削除の申告を記録しました"));
    sign_out(c).await;

    // The copy turns up outside the platform: the operator uploads it and the release zone names its recipient.
    sign_in(c, &console, &operator, Second::Recovery(&operator.recovery_codes[0])).await;
    c.goto(&format!("{}/trace", console.url)).await.unwrap();
    type_into(c, "#trace-release", &release).await;
    c.find(Locator::Css("#trace-file"))
        .await
        .expect("the file input")
        .send_keys(&saved.display().to_string())
        .await
        .expect("choose the leaked file");
    submit(c, "#trace").await;
    let accused = text(c, "#accused").await;
    assert!(
        accused.contains("hana"),
        "the trace did not name the recipient: {accused}"
    );
    screenshot(c, "trace").await;
    sign_out(c).await;

    // Every act reached the ledger as a network request of the person who did it.
    let ledger = people::ledger(home.path()).await;
    let done = |actor: &str, action: &str| {
        ledger.iter().any(|e| {
            e.actor == actor
                && e.action == action
                && e.outcome == "ok"
                && e.source
                    .as_deref()
                    .is_some_and(|s| s.starts_with("grpc:") || s.starts_with("https:"))
        })
    };
    assert!(done("hana", "application.file"), "the filing is not on the ledger");
    for m in &members {
        assert!(
            done(&m.username, "review.vote"),
            "{}'s vote is not on the ledger",
            m.username
        );
    }
    assert!(done("haruka", "review.assign"));
    assert!(done("haruka", "review.decide"));
    assert!(done("daichi", "core.requested"), "the build order is not on the ledger");
    assert!(done("hana", "download.transfer"));
    assert!(done("hana", "deletion.declare"));
    assert!(done("daichi", "trace.leak"), "the trace is not on the ledger");
    // Signing out of the console ended the policy session too.
    assert!(done("hana", "logout"), "sign-out did not reach the policy service");
}

/// Waits on a workspace output request's list until it is released (the core signs it after the checker's approval).
async fn wait_for_release(c: &Client, page: &str) {
    for _ in 0..300 {
        c.goto(page).await.unwrap();
        if text(c, "#workspace-outputs").await.contains("公開済み") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the output was not released: {}", text(c, "main").await);
}

/// The other desks of the issue in the browser: a researcher's DP table and analysis workspace, the output checker
/// who lets a result leave, the chair recording a violation, an administrator registering a hospital and its
/// certificate and publishing the directory, and an auditor verifying the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_workspace_outputs_violations_hospitals_and_audit_work_in_the_browser() {
    let home = Home::new();
    push_cohort(&home).await;
    let db: &[(&str, &str)] = &[];
    people::operator(home.path(), db);
    let service = PolicyService::start(home.path(), db);
    let enrol = |u: &str, org: &str, roles: &str| people::invite_enrolled(&service, home.path(), db, u, org, roles);
    let rika = enrol("rika", "univ-a", "researcher");
    let chair = enrol("haruka", "univ-c", "committee_chair,committee_member");
    let members: Vec<Enrolled> = [("aoi", "univ-m"), ("ren", "hosp-r"), ("yuto", "law-y")]
        .iter()
        .map(|(u, o)| enrol(u, o, "committee_member"))
        .collect();
    let checker = enrol("oto", "trc-o", "output_checker");
    let admin = enrol("kaito", "platform", "administrator");
    let auditor = enrol("mio", "audit-office", "auditor");
    // The approvals are made on the command line (the browser story of the committee is the other test's).
    let login = |who: &Enrolled| people::login(&service, home.path(), db, who);
    let (researcher, chair_cli) = (login(&rika), login(&chair));
    let members_cli: Vec<people::Person> = members.iter().map(login).collect();
    let today = chrono::Utc::now().date_naive();
    let until = today + chrono::Duration::days(180);
    let tables =
        "\n[[tables]]\ntable = \"patients\"\ncolumns = [\"linkage_key\", \"sex\", \"birth_date\", \"prefecture\"]\n";
    let form = |channel: &str| {
        format!(
            "title = \"{channel} study\"\npurpose = \"Testing\"\npublic_interest = \"Tests\"\nmethods = \"Tables\"\n\
             period_from = \"{today}\"\nperiod_to = \"{until}\"\nchannel = \"{channel}\"\n\
             security_measures = \"Platform\"\nfunding = \"None\"\nrecipients = [\"rika\"]\nnot_for_advertising = true\n{tables}"
        )
    };
    let committee = (&chair_cli, members_cli.as_slice());
    let statistics = people::approve(
        &service,
        home.path(),
        db,
        &researcher,
        committee,
        &form("statistics"),
        &format!(
            "channel = \"statistics\"\nexpires_on = \"{until}\"\nmax_downloads = 0\nrecipients = [\"rika\"]\n\
             dp_budget = {{ epsilon = 2.0, delta = 1e-6 }}\n[statistics]\nsmall_cell_min = 10\n{tables}"
        ),
    );
    let workspace = people::approve(
        &service,
        home.path(),
        db,
        &researcher,
        committee,
        &form("on_platform"),
        &format!(
            "channel = \"on_platform\"\nexpires_on = \"{until}\"\nmax_downloads = 0\nrecipients = [\"rika\"]\n\
             pseudonymised = true\nprivacy = {{ k = 5, m = 1, max_suppression = 0.05 }}\n{tables}"
        ),
    );
    service.run(
        home.path(),
        db,
        &chair_cli,
        &[
            "analysis",
            "certify",
            "--username",
            "rika",
            "--reference",
            "MHLW-2026-0042",
            "--expires-on",
            &until.to_string(),
        ],
    );
    drop(service);
    let zones = BuildZones::start(&home, &home.path().join("console-release.log"));
    let console = Console::start(&home, &zones.core.policy.addr, &zones.release.url());
    let downloads = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), profile.path()).await;
    let c = browser.c();

    // A differentially private table: asked in the researcher's words, computed by the core, spent from the budget.
    sign_in(c, &console, &rika, Second::Recovery(&rika.recovery_codes[0])).await;
    c.goto(&format!("{}/statistics", console.url)).await.unwrap();
    type_into(c, "#table", "patients").await;
    type_into(c, "#group_by", "sex").await;
    // The level with a fixed list: its codes are the public keys (no partition selection, no δ).
    type_into(c, "#hierarchy", "sex=value").await;
    type_into(c, "#epsilon", "0.5").await;
    type_into(c, "#max_contrib", "x").await;
    submit(c, "#request-statistics").await;
    assert!(
        text(c, "#max_contrib-error").await.contains("整数"),
        "a bad number was not named beside its field"
    );
    c.find(Locator::Css("#max_contrib"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    type_into(c, "#max_contrib", "1").await;
    submit(c, "#request-statistics").await;
    wait_for_order(c).await;
    assert!(
        text(c, "#cells").await.parse::<u64>().unwrap_or(0) >= 1,
        "no cell released"
    );
    assert_eq!(text(c, "#epsilon-spent").await, "0.5");
    let table = text(c, "#result-table").await;
    assert!(table.contains("sex"), "{table}");
    screenshot(c, "statistics").await;
    let sha256 = text(c, "#table-sha256").await;
    click(c, "#table-csv").await;
    let saved = downloads.path().join(format!(
        "statistics-{}.csv",
        c.current_url().await.unwrap().path().rsplit('/').next().unwrap()
    ));
    let mut waited = 0;
    while !saved.exists() && waited < 300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let bytes = std::fs::read(&saved).unwrap_or_else(|e| panic!("the browser saved no table: {e}"));
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        sha256,
        "the CSV is not the table shown"
    );
    c.goto(&format!("{}/budget", console.url)).await.unwrap();
    assert!(text(c, "main").await.contains(&statistics));
    assert_eq!(text(c, ".spent").await, "0.500", "the budget does not show the spend");

    // The workspace: a query whose rows come back sealed to this session, then an analysis asked to leave.
    c.goto(&format!("{}/workspace", console.url)).await.unwrap();
    submit(c, &format!("a[href='/workspace/{workspace}']")).await;
    type_into(c, "#workspace-sql", "SELECT count(*) AS n FROM patients").await;
    submit(c, "#run-query").await;
    wait_for_order(c).await;
    let counted = text(c, "#result-table").await;
    assert!(counted.contains("400"), "the query's rows were not opened: {counted}");
    screenshot(c, "workspace-query").await;
    // Two analyses asked to leave: by sex (large cells), and by prefecture and sex (small cells the checks refuse).
    let mut outputs = Vec::new();
    for spec in [
        r#"{"analysis": "crosstab", "sql": "SELECT patient, sex FROM patients", "rows": "sex"}"#,
        r#"{"analysis": "crosstab", "sql": "SELECT patient, sex, prefecture FROM patients", "rows": "prefecture", "columns": "sex"}"#,
    ] {
        c.goto(&format!("{}/workspace/{workspace}", console.url)).await.unwrap();
        type_into(c, "#workspace-spec", spec).await;
        submit(c, "#run-analysis").await;
        wait_for_order(c).await;
        let counts = text(c, "#result-table").await;
        assert!(
            counts.contains('F') && counts.contains('M'),
            "the analysis's values were not opened: {counts}"
        );
        submit(c, "#prepare-this-output").await;
        wait_for_order(c).await;
        outputs.push(text(c, "#output-link").await);
    }
    sign_out(c).await;

    // The output checker reads the findings and lets it leave.
    sign_in(c, &console, &checker, Second::Code(checker.next_code())).await;
    c.goto(&format!("{}/outputs", console.url)).await.unwrap();
    assert!(
        text(c, "main").await.contains(&outputs[1]),
        "the queue does not list the request"
    );
    // The small cells: the findings name their rule and cell; the checker asks for changes.
    submit(c, &format!("a[href='/outputs/{}']", outputs[1])).await;
    assert_eq!(text(c, "#verdict").await, "不可");
    let findings = text(c, "#findings").await;
    assert!(
        findings.contains("THRESHOLD") && findings.contains("セル"),
        "the findings are not shown cell by cell: {findings}"
    );
    screenshot(c, "output-check").await;
    click(c, "#d-changes").await;
    type_into(c, "#o-comment", "都道府県を地方にまとめてください").await;
    submit(c, "#decide-output").await;
    assert!(text(c, ".notice").await.contains("判断を記録しました"));
    // The large cells: approved.
    c.goto(&format!("{}/outputs/{}", console.url, outputs[0]))
        .await
        .unwrap();
    click(c, "#d-approve").await;
    type_into(c, "#o-comment", "性別のみ、十分な人数").await;
    submit(c, "#decide-output").await;
    assert!(text(c, ".notice").await.contains("判断を記録しました"));
    sign_out(c).await;

    // The researcher takes the released output, signed by the platform.
    sign_in(c, &console, &rika, Second::Recovery(&rika.recovery_codes[1])).await;
    let workspace_page = format!("{}/workspace/{workspace}", console.url);
    wait_for_release(c, &workspace_page).await;
    click(c, "#workspace-outputs button").await;
    let mut fetched = None;
    for _ in 0..300 {
        fetched = std::fs::read_dir(downloads.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"));
        if fetched.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetched = fetched.expect("the browser saved no output");
    // The file verifies under the platform's key read from the policy zone's home, not the key the file names.
    let signed: tokumei_policy::analysis::SignedOutput =
        serde_json::from_slice(&std::fs::read(&fetched).unwrap()).unwrap();
    let platform = std::fs::read_to_string(home.path().join("policy").join("service.pub")).unwrap();
    let platform = tokumei_policy::service_key::ServicePublicKey::from_hex(platform.trim()).unwrap();
    assert!(
        signed.verify(&platform),
        "the output does not verify under the platform's key"
    );
    assert_eq!(signed.sha256, hex::encode(Sha256::digest(signed.document.as_bytes())));
    let document: serde_json::Value = serde_json::from_str(&signed.document).unwrap();
    let number = fetched
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("output-")
        .to_owned();
    assert_eq!(document["output"].to_string(), number, "the file is another output");
    sign_out(c).await;

    // The chair records a violation; it is on the register the chair reads.
    sign_in(c, &console, &chair, Second::Recovery(&chair.recovery_codes[0])).await;
    c.goto(&format!("{}/violations", console.url)).await.unwrap();
    c.find(Locator::Css("#violation-subject-kind"))
        .await
        .unwrap()
        .select_by_value("person")
        .await
        .unwrap();
    type_into(c, "#violation-subject", "yuto").await;
    type_into(c, "#violation-kind", "unauthorised_sharing").await;
    type_into(c, "#violation-description", "提供データを第三者に渡した").await;
    type_into(c, "#violation-until", "2027-13-40").await;
    submit(c, "#record-violation").await;
    assert!(
        !text(c, "#violation-until-error").await.is_empty(),
        "a bad date was not named"
    );
    c.find(Locator::Css("#violation-until"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    type_into(c, "#violation-until", &until.to_string()).await;
    submit(c, "#record-violation").await;
    assert!(
        text(c, "#violations").await.contains("yuto"),
        "the violation is not listed"
    );
    screenshot(c, "violations").await;
    sign_out(c).await;

    // An administrator registers a hospital from its certificate and publishes the gateway's directory.
    sign_in(c, &console, &admin, Second::Code(admin.next_code())).await;
    c.goto(&format!("{}/hospitals", console.url)).await.unwrap();
    // Another hospital's certificate under this code: its CN is not the code, named beside the field.
    let pem = std::fs::read_to_string(home.creds(HOSPITAL_A).cert).unwrap();
    type_into(c, "#hospital-code", HOSPITAL_B).await;
    type_into(c, "#hospital-organisation", "hosp-r").await;
    type_into(c, "#hospital-certificate", &pem).await;
    submit(c, "#add-hospital").await;
    assert!(text(c, "#hospital-certificate-error").await.contains("CN"));
    type_into(c, "#hospital-code", HOSPITAL_A).await;
    type_into(c, "#hospital-certificate", &pem).await;
    submit(c, "#add-hospital").await;
    let listed = text(c, "#hospitals").await;
    assert!(listed.contains(HOSPITAL_A), "{listed}");
    let der = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let mut title = String::new();
    for row in c.find_all(Locator::Css("#hospitals tbody tr")).await.unwrap() {
        if row.text().await.unwrap().contains(HOSPITAL_A) {
            let hash = row.find(Locator::Css("code.hash")).await.expect("a fingerprint cell");
            title = hash.attr("title").await.unwrap().unwrap_or_default();
        }
    }
    assert_eq!(
        title,
        hex::encode(Sha256::digest(der.as_ref())),
        "the list does not show the certificate's fingerprint"
    );
    submit(c, "#publish-directory").await;
    assert!(text(c, "#directory-hospitals").await.parse::<u64>().unwrap_or(0) >= 1);
    assert!(
        text(c, "#directory").await.contains(HOSPITAL_A),
        "the directory does not list the hospital"
    );
    assert_eq!(text(c, "#directory-key").await.len(), 64);
    screenshot(c, "hospitals").await;
    sign_out(c).await;

    // An auditor verifies the ledger.
    sign_in(c, &console, &auditor, Second::Code(auditor.next_code())).await;
    c.goto(&format!("{}/audit", console.url)).await.unwrap();
    assert!(!text(c, "#ledger-ok").await.is_empty(), "the ledger did not verify");
    sign_out(c).await;

    let ledger = people::ledger(home.path()).await;
    let done = |actor: &str, action: &str| {
        ledger
            .iter()
            .any(|e| e.actor == actor && e.action == action && e.outcome == "ok")
    };
    assert!(
        ledger.iter().any(|e| e.actor == "rika"
            && e.action == "core.requested"
            && e.outcome == "ok"
            && serde_json::from_str::<serde_json::Value>(&e.details).is_ok_and(|d| d["operation"] == "statistics")),
        "the table's order is not on the ledger"
    );
    assert!(
        done("oto", "analysis.output_decided"),
        "the checker's decision is not on the ledger"
    );
    assert!(done("haruka", "violation.record"), "the violation is not on the ledger");
    assert!(done("kaito", "user.add_hospital"), "the hospital is not on the ledger");
}
