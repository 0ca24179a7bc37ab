//! Japanese first, English by a switch: every text of a page is written in both, side by side in the page's code
//! (`lang.t("申請", "Applications")`), so neither can be missing. The choice is a cookie; the services' own
//! messages (a refusal's explanation) stay as the service wrote them, beside their reason code.

use axum::http::HeaderMap;

use crate::security::{LANG_COOKIE, cookie};

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 日本語 (the default).
    Ja,
    /// English.
    En,
}

impl Lang {
    /// The language the request asks for (its cookie; Japanese without one).
    pub fn of(headers: &HeaderMap) -> Lang {
        match cookie(headers, LANG_COOKIE) {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }

    /// The text in this language.
    pub fn t(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }

    /// The `lang` attribute of the page.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// An application's status, as people read it.
    pub fn status(self, status: &str) -> &'static str {
        match status {
            "submitted" => self.t("受付", "Submitted"),
            "under_review" => self.t("審査中", "Under review"),
            "approved" => self.t("承認", "Approved"),
            "refused" => self.t("不承認", "Refused"),
            "revoked" => self.t("承認取消", "Revoked"),
            "withdrawn" => self.t("取下げ", "Withdrawn"),
            _ => self.t("不明", "Unknown"),
        }
    }

    /// A provision channel, as people read it.
    pub fn channel(self, channel: &str) -> &'static str {
        match channel {
            "file" => self.t("ファイル提供", "File release"),
            "statistics" => self.t("統計表", "Statistics"),
            "on_platform" => self.t("オンサイト解析", "On-platform analysis"),
            _ => self.t("不明", "Unknown"),
        }
    }

    /// A role, as people read it.
    pub fn role(self, role: &str) -> &'static str {
        match role {
            "researcher" => self.t("研究者", "Researcher"),
            "committee_member" => self.t("審査委員", "Committee member"),
            "committee_chair" => self.t("委員長", "Committee chair"),
            "operator" => self.t("運用担当", "Operator"),
            "auditor" => self.t("監査担当", "Auditor"),
            "administrator" => self.t("管理者", "Administrator"),
            "output_checker" => self.t("出力チェック担当", "Output checker"),
            "hospital" => self.t("医療機関", "Hospital"),
            _ => self.t("その他", "Other"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    #[test]
    fn japanese_unless_english_is_asked() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of(&h), Lang::Ja);
        h.insert(header::COOKIE, HeaderValue::from_static("tokumei-lang=en"));
        assert_eq!(Lang::of(&h), Lang::En);
        h.insert(header::COOKIE, HeaderValue::from_static("tokumei-lang=fr"));
        assert_eq!(Lang::of(&h), Lang::Ja);
    }

    #[test]
    fn every_status_and_role_has_both_languages() {
        for s in [
            "submitted",
            "under_review",
            "approved",
            "refused",
            "revoked",
            "withdrawn",
        ] {
            assert_ne!(Lang::Ja.status(s), Lang::Ja.status("?"), "{s}");
            assert_ne!(Lang::En.status(s), Lang::En.status("?"), "{s}");
        }
        for r in [
            "researcher",
            "committee_member",
            "committee_chair",
            "operator",
            "auditor",
            "administrator",
            "output_checker",
        ] {
            assert_ne!(Lang::En.role(r), "Other", "{r}");
        }
    }
}
