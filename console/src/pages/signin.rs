//! Sign-in (password and TOTP — or a recovery code — checked by the policy service, which issues the session),
//! sign-out (the policy session is revoked and the console forgets the cookie), and the language switch.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::policy::v1 as pb;
use zeroize::Zeroizing;

use crate::AppState;
use crate::extract::{Language, Signed, UrlForm};
use crate::i18n::Lang;
use crate::layout::{notice, public_page};
use crate::security::{
    LANG_COOKIE, clear_cookie, cookie, cross_site, same_token, session_cookie_name, set_cookie, signin_cookie_name,
};
use crate::services::{PageError, authed};
use crate::sessions::random_token;

/// How long a sign-in form stays valid.
const SIGNIN_FORM_SECS: u64 = 600;

fn form(lang: Lang, token: &str, username: &str, error: Option<&PageError>) -> Markup {
    public_page(
        lang,
        ("サインイン", "Sign in"),
        html! {
            @if let Some(e) = error {
                div.error role="alert" id="signin-error" {
                    p { strong.reason { (e.reason) } " " (lang.t("サインインできませんでした。", "Sign-in failed.")) }
                }
            }
            form method="post" action="/signin" {
                input type="hidden" name="csrf" value=(token);
                div.field {
                    label for="username" { (lang.t("ユーザー名", "Username")) }
                    input id="username" name="username" type="text" autocomplete="username" required value=(username);
                }
                div.field {
                    label for="password" { (lang.t("パスワード", "Password")) }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                }
                div.field {
                    label for="code" { (lang.t("確認コード（認証アプリの6桁）", "Code (6 digits from your authenticator)")) }
                    input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}";
                }
                details {
                    summary { (lang.t("認証アプリを使えないとき", "Cannot use your authenticator?")) }
                    div.field {
                        label for="recovery" { (lang.t("リカバリーコード", "Recovery code")) }
                        input id="recovery" name="recovery" type="text" autocomplete="off";
                    }
                }
                button type="submit" id="signin" { (lang.t("サインイン", "Sign in")) }
            }
        },
    )
}

/// The sign-in form with a fresh double-submit token (and its cookie), `username` filled in and `error` shown.
fn fresh_form(console: &AppState, lang: Lang, username: &str, error: Option<&PageError>) -> impl IntoResponse {
    let token = random_token();
    let cookie = set_cookie(
        signin_cookie_name(console.secure),
        &token,
        SIGNIN_FORM_SECS,
        console.secure,
    );
    ([(header::SET_COOKIE, cookie)], form(lang, &token, username, error))
}

/// The sign-in page.
pub async fn page(State(console): State<AppState>, Language(lang): Language) -> Response {
    fresh_form(&console, lang, "", None).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery: String,
}

/// Signs in through the policy service's `Login`.
pub async fn submit(
    State(console): State<AppState>,
    Language(lang): Language,
    headers: HeaderMap,
    peer: Option<axum::Extension<tokumei_platform::https::Peer>>,
    UrlForm(f): UrlForm<SignIn>,
) -> Response {
    // The secrets are zeroed when the handler ends.
    let password = Zeroizing::new(f.password);
    let recovery = Zeroizing::new(f.recovery);
    let expected = cookie(&headers, signin_cookie_name(console.secure)).unwrap_or("");
    if cross_site(&headers) {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "CROSS_SITE_REFUSED",
            "a sign-in posted from another site is refused",
        )
        .into_response();
    }
    if !same_token(&f.csrf, expected) {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "CSRF_INVALID",
            "the sign-in form did not carry its token; reload the page and try again",
        )
        .into_response();
    }
    // Past the limit of this network's failures, the service is not asked (it would count the attempt against the
    // account).
    let addr = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |axum::Extension(p)| p.0.ip());
    if !console.throttle.admit(addr, std::time::Instant::now()) {
        return PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "SIGNIN_THROTTLED",
            "too many sign-ins from this address; wait a few minutes",
        )
        .into_response();
    }
    let second_factor = if recovery.trim().is_empty() {
        pb::login_request::SecondFactor::TotpCode(f.code.trim().to_owned())
    } else {
        pb::login_request::SecondFactor::RecoveryCode(recovery.trim().to_owned())
    };
    let request = pb::LoginRequest {
        username: f.username.trim().to_owned(),
        password: password.to_string(),
        second_factor: Some(second_factor),
    };
    let reply = match console.services.policy.clone().login(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            console.throttle.failed(addr, std::time::Instant::now());
            let error = PageError::refused(status);
            return (
                StatusCode::UNAUTHORIZED,
                fresh_form(&console, lang, f.username.trim(), Some(&error)),
            )
                .into_response();
        }
    };
    let actor = reply.actor.unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let lifetime = std::time::Duration::from_secs(u64::try_from(reply.expires_at - now).unwrap_or(0));
    let opened = console.sessions.open(
        actor.username,
        actor.organisation,
        actor.roles,
        Zeroizing::new(reply.session_token),
        lifetime,
    );
    let name = session_cookie_name(console.secure);
    // Signing in over a session ends that session, here and at the policy service.
    if let Some(old) = cookie(&headers, name).and_then(|c| console.sessions.close(c))
        && let Ok(request) = authed(old.token(), pb::Empty {})
    {
        let _ = console.services.policy.clone().logout(request).await;
    }
    let mut response = crate::layout::see_other("/");
    let h = response.headers_mut();
    for value in [
        set_cookie(name, &opened, lifetime.as_secs(), console.secure),
        clear_cookie(signin_cookie_name(console.secure), console.secure),
    ] {
        if let Ok(v) = value.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Nothing but the CSRF token.
#[derive(Deserialize)]
pub struct Nothing {}

/// Signs out: the policy session is revoked, the console forgets the cookie.
pub async fn signout(State(console): State<AppState>, headers: HeaderMap, signed: Signed<Nothing>) -> Response {
    if let Ok(request) = authed(signed.viewer.token(), pb::Empty {})
        && let Err(status) = console.services.policy.clone().logout(request).await
    {
        tracing::warn!(code = ?status.code(), "the policy service did not confirm a sign-out");
    }
    let name = session_cookie_name(console.secure);
    if let Some(c) = cookie(&headers, name) {
        console.sessions.close(c);
    }
    let lang = signed.viewer.lang;
    (
        [(header::SET_COOKIE, clear_cookie(name, console.secure))],
        public_page(
            lang,
            ("サインアウト", "Signed out"),
            html! {
                (notice(lang.t("サインアウトしました。", "You are signed out.")))
                p { a href="/signin" { (lang.t("もう一度サインイン", "Sign in again")) } }
            },
        ),
    )
        .into_response()
}

/// Switches the language (`ja` or `en`) and returns home.
pub async fn language(State(console): State<AppState>, Path(code): Path<String>) -> Response {
    let value = if code == "en" { "en" } else { "ja" };
    (
        [(
            header::SET_COOKIE,
            set_cookie(LANG_COOKIE, value, 365 * 86_400, console.secure),
        )],
        axum::response::Redirect::to("/"),
    )
        .into_response()
}
