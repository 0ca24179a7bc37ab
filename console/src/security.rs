//! What every response carries and every form must prove.
//!
//! - Headers: a strict Content-Security-Policy (nothing but the console's own stylesheet and images; no script
//!   at all; forms post only to the console; a download is a plain link to the release service's one-time URL,
//!   which the console shows after admitting it), `X-Frame-Options: DENY` and `frame-ancestors 'none'`, `nosniff`, no referrer,
//!   `Cache-Control: no-store` (pages show personal and committee data), HSTS over TLS.
//! - Cookies: `Secure; HttpOnly; SameSite=Strict; Path=/`, under the `__Host-` prefix over TLS (no subdomain can
//!   set or read them).
//! - CSRF: every form carries its session's random token, compared in constant time ([`same_token`]); the
//!   sign-in form, before any session, carries a token also set in a short-lived cookie (double submit).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::{AppState, ConsoleError};

/// The session cookie's name over TLS.
const SESSION_COOKIE_TLS: &str = "__Host-tokumei-session";
/// The session cookie's name on a plaintext development console.
const SESSION_COOKIE_DEV: &str = "tokumei-session";
/// The sign-in form's double-submit cookie over TLS (`__Host-`: no sibling subdomain can plant one).
const SIGNIN_COOKIE_TLS: &str = "__Host-tokumei-signin";
/// The sign-in form's double-submit cookie on a plaintext development console.
const SIGNIN_COOKIE_DEV: &str = "tokumei-signin";
/// The language cookie (`en`; absent: Japanese).
pub const LANG_COOKIE: &str = "tokumei-lang";

/// The session cookie's name for a console served over TLS or not.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure { SESSION_COOKIE_TLS } else { SESSION_COOKIE_DEV }
}

/// The sign-in cookie's name for a console served over TLS or not.
pub fn signin_cookie_name(secure: bool) -> &'static str {
    if secure { SIGNIN_COOKIE_TLS } else { SIGNIN_COOKIE_DEV }
}

/// Whether a request says it comes from anywhere but the console's own pages: `Sec-Fetch-Site` other than
/// `same-origin` or `none` (a sibling subdomain is `same-site`, and refused too), or — from a browser that sends no
/// `Sec-Fetch-Site` — an `Origin` whose host is not the request's `Host`. (`Origin: null`, which browsers send
/// under the console's `no-referrer` policy, says nothing either way.) Such a request never signs anyone in.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    if origin == "null" {
        return false;
    }
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host.as_bytes() != host.as_bytes()
}

/// A `Set-Cookie` value: `Secure` when served over TLS, always `HttpOnly; SameSite=Strict; Path=/`.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}")
}

/// A `Set-Cookie` value that removes `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", 0, secure)
}

/// The value of cookie `name` in the request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a token presented equals the expected one, in time independent of where they differ; an empty
/// expected token never matches.
pub fn same_token(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    if b.is_empty() || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Content-Security-Policy: the console's own stylesheet and images, no script, forms to the console only,
/// never framed.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response.
pub async fn headers(State(console): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if console.secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// The console's TLS configuration from a PEM certificate chain and key (HTTP/1.1 by ALPN).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ConsoleError> {
    tokumei_platform::tls::install_crypto_provider();
    let certs =
        tokumei_platform::tls::load_certs(cert).map_err(|e| ConsoleError::Config(format!("--tls-cert: {e}")))?;
    let key = tokumei_platform::tls::load_key(key).map_err(|e| ConsoleError::Config(format!("--tls-key: {e}")))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConsoleError::Config(format!("the console's certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", ""), "an empty token matched");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-tokumei-session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "__Host-tokumei-session"), Some("xyz"));
        assert_eq!(cookie(&h, "tokumei-session"), None);
        assert_eq!(cookie(&h, "b"), Some("2"));
    }

    #[test]
    fn a_request_from_another_site_is_known() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("console.example.jp"));
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://console.example.jp"));
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!cross_site(&h));
        for (site, refused) in [
            ("cross-site", true),
            ("same-site", true),
            ("same-origin", false),
            ("none", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("sec-fetch-site", HeaderValue::from_str(site).unwrap());
            assert_eq!(cross_site(&h), refused, "{site}");
        }
    }

    #[test]
    fn cookies_are_strict() {
        let c = set_cookie(SESSION_COOKIE_TLS, "v", 900, true);
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }

    #[test]
    fn the_policy_allows_no_script() {
        let csp = CONTENT_SECURITY_POLICY;
        assert!(!csp.contains("script-src"), "{csp}");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
