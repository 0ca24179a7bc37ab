//! The console's router without a browser or services: what reaches a handler and what is refused before it —
//! the sign-in form's double-submit token, pages and forms without a session, forms without their CSRF token,
//! field validation before anything is sent — and the headers on every response. (The services are never
//! contacted here: their address is a closed port, so a request that got through to them would fail as 503.)

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tokumei_console::{Console, ConsoleConfig, Services, router};
use tower::ServiceExt;
use zeroize::Zeroizing;

/// A console whose services are a closed loopback port (never reached by these tests).
fn config() -> ConsoleConfig {
    ConsoleConfig {
        policy_url: "http://127.0.0.1:1".into(),
        policy_ca: "/nonexistent".into(),
        release_url: None,
        release_ca: None,
        tls: None,
        published: None,
        platform_key: None,
    }
}

fn console() -> Arc<Console> {
    let config = config();
    Arc::new(Console::new(&config, true).expect("lazy channels"))
}

async fn send(console: &Arc<Console>, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router(console.clone()).oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

fn signed_in(console: &Arc<Console>) -> (String, String) {
    signed_in_as(console, "hana")
}

fn signed_in_as(console: &Arc<Console>, who: &str) -> (String, String) {
    signed_in_with(console, who, "researcher")
}

fn signed_in_with(console: &Arc<Console>, who: &str, role: &str) -> (String, String) {
    let cookie = console.sessions.open(
        who.into(),
        "univ-h".into(),
        vec![role.into()],
        Zeroizing::new("tks1.x".into()),
        Duration::from_secs(600),
    );
    let csrf = console.sessions.get(&cookie).expect("open").csrf.clone();
    (format!("__Host-tokumei-session={cookie}"), csrf)
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let c = console();
    for path in ["/signin", "/applications", "/registers", "/static/console.css", "/nope"] {
        let (_, h, _) = send(&c, get(path, None)).await;
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'") && !csp.contains("script"),
            "{path}: {csp}"
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert!(h.contains_key(header::STRICT_TRANSPORT_SECURITY), "{path}");
    }
}

#[tokio::test]
async fn sign_in_needs_the_forms_own_token() {
    let c = console();
    let (status, h, body) = send(&c, get("/signin", None)).await;
    assert_eq!(status, StatusCode::OK);
    let set = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    assert!(
        body.contains(&format!("value=\"{token}\"")),
        "the form does not carry its token"
    );
    assert!(body.contains("lang=\"ja\""), "Japanese is not the default");
    // Without the cookie, or with another token: refused before the policy service is asked.
    for (cookie, form) in [
        (None, format!("csrf={token}&username=a&password=b&code=123456")),
        (
            Some(format!("tokumei-signin={token}")),
            "csrf=other&username=a&password=b&code=123456".to_owned(),
        ),
    ] {
        let (status, _, body) = send(&c, post("/signin", cookie.as_deref(), &form)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("CSRF_INVALID"));
    }
}

#[tokio::test]
async fn nothing_behind_sign_in_without_a_session() {
    let c = console();
    for path in [
        "/",
        "/applications",
        "/applications/new",
        "/reviews",
        "/releases",
        "/applications/A-1",
        "/statistics",
        "/orders/1/table.csv",
        "/orders/1/built",
        "/workspace",
        "/workspace/W-1",
        "/workspace/W-1/results/1",
        "/trace",
        "/violations",
        "/hospitals",
    ] {
        let (status, h, _) = send(&c, get(path, None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(h[header::LOCATION], "/signin", "{path}");
    }
    let (status, _, _) = send(
        &c,
        post("/applications/A-1/vote", Some("__Host-tokumei-session=forged"), ""),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_form_without_its_token_never_reaches_a_handler() {
    let c = console();
    let (cookie, csrf) = signed_in(&c);
    // Another person's valid token, and one of the right length that is nobody's.
    let (_, theirs) = signed_in_as(&c, "yui");
    let wrong_length = format!("csrf={}", &csrf[1..]);
    let flipped = format!("csrf={}{}", if csrf.starts_with('0') { '1' } else { '0' }, &csrf[1..]);
    for path in [
        "/applications/new",
        "/applications/A-1/vote",
        "/applications/A-1/recuse",
        "/applications/A-1/assign",
        "/applications/A-1/decide",
        "/applications/A-1/withdraw",
        "/applications/A-1/plan",
        "/releases/download",
        "/releases/deletion",
        "/outputs/1/decide",
        "/audit/export",
        "/operator/status",
        "/operator/build",
        "/orders/1/complete",
        "/registers/decisions",
        "/statistics",
        "/workspace/W-1/query",
        "/workspace/W-1/analyse",
        "/workspace/W-1/output",
        "/workspace/outputs/1/fetch",
        "/violations",
        "/violations/bans/export",
        "/violations/bans/import",
        "/hospitals",
        "/hospitals/directory",
        "/hospitals/directory.json",
        "/signout",
    ] {
        for body in [
            String::new(),
            "csrf=".to_owned(),
            wrong_length.clone(),
            flipped.clone(),
            format!("csrf={theirs}"),
        ] {
            let (status, _, text) = send(&c, post(path, Some(&cookie), &body)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {body}");
            assert!(text.contains("CSRF_INVALID"), "{path}");
        }
    }
    assert!(
        c.sessions.get(cookie.split_once('=').unwrap().1).is_some(),
        "a forged sign-out signed out"
    );
}

/// A `multipart/form-data` upload to `path` with `parts` (name, file name if a file, content) in this order.
fn upload(path: &str, cookie: &str, parts: &[(&str, Option<&str>, &str)]) -> Request<Body> {
    const BOUNDARY: &str = "tokumei-test-boundary";
    let mut body = String::new();
    for (name, file, content) in parts {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\""
        ));
        if let Some(f) = file {
            body.push_str(&format!("; filename=\"{f}\"\r\nContent-Type: text/csv"));
        }
        body.push_str(&format!("\r\n\r\n{content}\r\n"));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    Request::post(path)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn an_upload_is_refused_unless_its_first_field_is_the_token() {
    let c = console();
    let (cookie, csrf) = signed_in_with(&c, "daichi", "operator");
    let (_, theirs) = signed_in_with(&c, "kou", "operator");
    let file = ("file", Some("leak.csv"), "a,b\n1,2\n");
    let release = ("release", None, "R-A-1-1");
    for parts in [
        vec![release, file],
        vec![("csrf", None, ""), release, file],
        vec![("csrf", None, theirs.as_str()), release, file],
        vec![("csrf", None, &csrf[1..]), release, file],
        // The right token, but after the file: the file would have been read first.
        vec![release, file, ("csrf", None, csrf.as_str())],
    ] {
        let (status, _, text) = send(&c, upload("/trace", &cookie, &parts)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{parts:?}");
        assert!(text.contains("CSRF_INVALID"));
    }
    // A field the form does not have; a token larger than any token.
    let extra = [("csrf", None, csrf.as_str()), ("comment", None, "x"), file];
    let (status, _, text) = send(&c, upload("/trace", &cookie, &extra)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("FORM_INVALID"));
    let huge = "0".repeat(64 * 1024);
    let (status, _, text) = send(&c, upload("/trace", &cookie, &[("csrf", None, &huge), file])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text.contains("FORM_TOO_LARGE"));
    // A file in another field than `file`, or `file` as text: refused.
    for parts in [
        [
            ("csrf", None, csrf.as_str()),
            ("release", Some("leak.csv"), "a,b\n"),
            file,
        ],
        [("csrf", None, csrf.as_str()), release, ("file", None, "a,b\n")],
    ] {
        let (status, _, text) = send(&c, upload("/trace", &cookie, &parts)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{parts:?}");
        assert!(text.contains("FORM_INVALID"));
    }
    // Someone who may not trace: refused before a byte of the body is read.
    let (researcher, theirs_too) = signed_in(&c);
    let parts = [("csrf", None, theirs_too.as_str()), release, file];
    let (status, _, text) = send(&c, upload("/trace", &researcher, &parts)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("ROLE_NOT_PERMITTED"));
    // Not an upload at all.
    let (status, _, text) = send(&c, post("/trace", Some(&cookie), &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("FORM_INVALID"));
    // The token first and no release named: the form says so beside the field before the release zone is asked.
    let (status, _, text) = send(&c, upload("/trace", &cookie, &[("csrf", None, &csrf), file])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text.contains("id=\"trace-release-error\""),
        "the missing release is not named beside its field"
    );
}

#[tokio::test]
async fn the_form_names_each_problem_beside_its_field_before_anything_is_sent() {
    let c = console();
    let (cookie, csrf) = signed_in(&c);
    let body = format!("csrf={csrf}&title=&purpose=%E7%9B%AE%E7%9A%84&channel=file&period_from=2027-13-01");
    let (status, _, page) = send(&c, post("/applications/new", Some(&cookie), &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for id in [
        "title-error",
        "period_from-error",
        "tables-error",
        "recipients-error",
        "not_for_advertising-error",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    assert!(page.contains("目的"), "what was typed was lost");
    assert!(page.contains("aria-invalid=\"true\""));
}

#[tokio::test]
async fn the_language_switch_and_the_public_registers() {
    let c = console();
    let (status, h, _) = send(&c, get("/lang/en", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(h[header::SET_COOKIE].to_str().unwrap().starts_with("tokumei-lang=en"));
    let (status, _, page) = send(&c, get("/registers", Some("tokumei-lang=en"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Decisions") && page.contains("lang=\"en\""));
    let (status, _, page) = send(&c, get("/registers/decisions", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("register-empty"));
    let (status, _, _) = send(&c, get("/registers/secrets", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sign_ins_from_one_address_are_limited_before_the_service_is_asked() {
    let c = console();
    let (_, h, _) = send(&c, get("/signin", None)).await;
    let set = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    let token = pair.split_once('=').unwrap().1.to_owned();
    let form = format!("csrf={token}&username=hana&password=wrong&code=000000");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, _, _) = send(&c, post("/signin", Some(&pair), &form)).await;
        statuses.push(status);
    }
    // The service is unreachable here: the first ten are its failure, the rest the console's own refusal.
    assert!(
        statuses[..10].iter().all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses[10..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A sign-in posted from another site is refused even with the right token.
    let request = Request::post("/signin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &pair)
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(form))
        .unwrap();
    let (status, _, body) = send(&c, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("CROSS_SITE_REFUSED"));
}

#[tokio::test]
async fn plaintext_is_served_on_loopback_only() {
    let config = config();
    let refused = tokumei_console::serve(&config, "0.0.0.0:0".parse().unwrap(), std::future::pending())
        .await
        .err()
        .expect("a plaintext console on every interface was started");
    assert!(refused.to_string().contains("PLAINTEXT_REFUSED"), "{refused}");
    let running = tokumei_console::serve(&config, "127.0.0.1:0".parse().unwrap(), async {})
        .await
        .expect("loopback");
    running.task.await.expect("stopped");
    let remote = ConsoleConfig {
        policy_url: "http://10.0.0.5:50061".into(),
        ..config
    };
    assert!(
        Services::connect(&remote).is_err(),
        "a plaintext policy URL off loopback was accepted"
    );
}
