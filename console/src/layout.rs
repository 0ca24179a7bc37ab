//! The frame every page shares: the platform's name, the person signed in and their roles, the navigation their
//! roles open, the language switch and sign-out — then the page. Plain HTML that works without JavaScript and
//! with the keyboard alone (a skip link, labelled landmarks, visible focus in the stylesheet).

use maud::{DOCTYPE, Markup, html};

use crate::extract::Viewer;
use crate::i18n::Lang;
use crate::services::PageError;

/// A `303 See Other` to `location`, a path of this console. Any byte outside visible ASCII (an identifier typed in
/// the address bar and decoded from the path) is percent-encoded, so that no location can fail to be a header value
/// (axum's `Redirect::to` panics on one).
pub fn see_other(location: &str) -> axum::response::Response {
    use std::fmt::Write;
    let mut safe = String::with_capacity(location.len());
    for b in location.bytes() {
        if (0x21..=0x7e).contains(&b) {
            safe.push(char::from(b));
        } else {
            let _ = write!(safe, "%{b:02X}");
        }
    }
    axum::response::IntoResponse::into_response(axum::response::Redirect::to(&safe))
}

/// The hidden field every form of `viewer` carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.session.csrf); }
}

/// One entry of the navigation, if `viewer` holds one of `roles` (empty: everyone signed in).
struct NavItem {
    href: &'static str,
    ja: &'static str,
    en: &'static str,
    roles: &'static [&'static str],
}

const NAV: &[NavItem] = &[
    NavItem {
        href: "/",
        ja: "ホーム",
        en: "Home",
        roles: &[],
    },
    NavItem {
        href: "/applications",
        ja: "申請",
        en: "Applications",
        roles: &[],
    },
    NavItem {
        href: "/applications/new",
        ja: "新規申請",
        en: "New application",
        roles: &["researcher"],
    },
    NavItem {
        href: "/reviews",
        ja: "担当審査",
        en: "My reviews",
        roles: &["committee_member", "committee_chair"],
    },
    NavItem {
        href: "/releases",
        ja: "提供データ",
        en: "Releases",
        roles: &["researcher"],
    },
    NavItem {
        href: "/statistics",
        ja: "統計表",
        en: "Statistics",
        roles: &["researcher"],
    },
    NavItem {
        href: "/workspace",
        ja: "解析環境",
        en: "Analysis workspace",
        roles: &["researcher"],
    },
    NavItem {
        href: "/outputs",
        ja: "出力チェック",
        en: "Output checks",
        roles: &["output_checker"],
    },
    NavItem {
        href: "/operator",
        ja: "運用",
        en: "Operations",
        roles: &["operator"],
    },
    NavItem {
        href: "/trace",
        ja: "流出追跡",
        en: "Trace a leak",
        roles: &["operator"],
    },
    NavItem {
        href: "/hospitals",
        ja: "医療機関",
        en: "Hospitals",
        roles: &["operator", "administrator", "auditor"],
    },
    NavItem {
        href: "/violations",
        ja: "違反と利用停止",
        en: "Violations",
        roles: &["committee_chair", "operator", "auditor"],
    },
    NavItem {
        href: "/audit",
        ja: "監査",
        en: "Audit",
        roles: &["auditor", "operator"],
    },
    NavItem {
        href: "/registers",
        ja: "公表",
        en: "Registers",
        roles: &[],
    },
];

/// A page for `viewer` titled `title` (ja, en) with `body`.
pub fn page(viewer: &Viewer, title: (&str, &str), body: Markup) -> Markup {
    let lang = viewer.lang;
    let nav = html! {
        nav aria-label=(lang.t("メインメニュー", "Main menu")) {
            ul {
                @for item in NAV {
                    @if item.roles.is_empty() || item.roles.iter().any(|r| viewer.has(r)) {
                        li { a href=(item.href) { (lang.t(item.ja, item.en)) } }
                    }
                }
            }
        }
    };
    let who = html! {
        div.who {
            span { (viewer.session.username) " (" (viewer.session.organisation) ")" }
            " "
            @for role in &viewer.session.roles {
                span.role { (lang.role(role)) }
            }
            form method="post" action="/signout" {
                (csrf(viewer))
                button type="submit" id="signout" { (lang.t("サインアウト", "Sign out")) }
            }
        }
    };
    shell(lang, title, Some(nav), Some(who), body)
}

/// A page for someone not signed in (sign-in, public registers).
pub fn public_page(lang: Lang, title: (&str, &str), body: Markup) -> Markup {
    let nav = html! {
        nav aria-label=(lang.t("メインメニュー", "Main menu")) {
            ul {
                li { a href="/signin" { (lang.t("サインイン", "Sign in")) } }
                li { a href="/registers" { (lang.t("公表", "Registers")) } }
            }
        }
    };
    shell(lang, title, Some(nav), None, body)
}

fn shell(lang: Lang, title: (&str, &str), nav: Option<Markup>, who: Option<Markup>, body: Markup) -> Markup {
    let title = if lang == Lang::Ja { title.0 } else { title.1 };
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — tokumei" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                a.skip href="#main" { (lang.t("本文へ移動", "Skip to content")) }
                header {
                    div.brand { a href="/" { "tokumei" } span { (lang.t("医療データ匿名加工基盤", "Medical data anonymisation platform")) } }
                    @if let Some(who) = who { (who) }
                    div.lang {
                        @if lang == Lang::Ja {
                            a href="/lang/en" lang="en" { "English" }
                        } @else {
                            a href="/lang/ja" lang="ja" { "日本語" }
                        }
                    }
                    @if let Some(nav) = nav { (nav) }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A notice above a page's content (`role=status`, read out by screen readers).
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// The page of an error: its reason code and the message, in both languages' frame.
pub fn error_page(error: &PageError) -> Markup {
    shell(
        Lang::Ja,
        ("エラー / Error", "Error"),
        Some(html! { nav aria-label="menu" { ul { li { a href="/" { "ホーム / Home" } } } } }),
        None,
        html! {
            div.error role="alert" {
                p { strong.reason id="reason" { (error.reason) } }
                // The console's and the services' messages are English; the frame is bilingual.
                p lang="en" { (error.message) }
                p { (error.status.as_u16()) " " (error.status.canonical_reason().unwrap_or("")) }
            }
        },
    )
}

/// A label–value row of a description list.
pub fn row(label: &str, value: impl maud::Render) -> Markup {
    html! { dt { (label) } dd { (value) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_always_a_header_value() {
        let r = see_other("/applications/あ b\r\n?done=voted");
        assert_eq!(r.status(), axum::http::StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/applications/%E3%81%82%20b%0D%0A?done=voted");
    }
}
