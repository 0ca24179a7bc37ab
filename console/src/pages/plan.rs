//! A release plan as a committee member reads it before deciding: what a build would withhold, generalise and
//! code, what is lost, and the linkage attack the released file would face — in sentences and tables, not the
//! core's JSON keys. Aggregates only: the core reports counts and levels, never a value of the data.

use maud::{Markup, html};
use tokumei_release::builder::plan::PlanOutcome;

use crate::i18n::Lang;
use crate::layout::row;

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0.0 %".to_owned()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// The plan's figures, for `lang`.
pub fn report(lang: Lang, p: &PlanOutcome) -> Markup {
    let m = &p.privacy_model;
    html! {
        section aria-labelledby="plan-h" id="plan" {
            h2 id="plan-h" { (lang.t("提供計画", "Release plan")) " " (p.application) }
            p {
                @if p.approved { (lang.t("承認された範囲と条件での計画です。", "Planned on the approved scope and conditions.")) }
                @else { (lang.t("申請された範囲での計画です（まだ承認されていません）。", "Planned on the scope applied for (not yet approved).")) }
            }
            dl {
                (row(lang.t("匿名化の条件", "Privacy model"), format!("k = {}, m = {}, {} ≤ {:.1} %", m.k, m.m, lang.t("削除", "suppression"), m.max_suppression * 100.0)))
                (row(lang.t("対象", "Cohort"), p.cohort.as_str()))
                (row(lang.t("テーブル", "Tables"), p.tables.join(", ")))
                (row(lang.t("患者数", "Patients"), html! { span id="plan-patients" { (p.patients) } }))
                (row(lang.t("提供しない患者", "Patients withheld"), html! { span id="plan-withheld" { (p.suppressed_patients) } " (" (percent(p.suppressed_patients, p.patients)) ")" }))
                (row(lang.t("90歳以上にまとめる生年月日", "Birth dates top-coded (90+)"), p.top_coded_birth_dates))
                (row(lang.t("統合した重複行", "Duplicate rows merged"), p.merged_patient_rows))
                (row(lang.t("情報損失", "Information lost"), html! {
                    meter id="plan-loss" min="0" max="1" low="0.3" high="0.6" optimum="0" value=(p.release_loss) { (format!("{:.3}", p.release_loss)) }
                    " " (format!("{:.3}", p.release_loss)) " " (lang.t("（0 = 記録のまま、1 = 何も残らない）", "(0 = as recorded, 1 = nothing left)"))
                }))
            }
            @if !p.demographics.is_empty() {
                table.list id="plan-demographics" {
                    caption { (lang.t("属性の一般化（段階 / 最大）", "Generalisation of the demographics (level / highest)")) }
                    thead { tr { th scope="col" { (lang.t("列", "Column")) } th scope="col" { (lang.t("段階", "Level")) } } }
                    tbody { @for l in &p.demographics { tr { td { (l.column) } td { (l.level) " / " (l.max_level) } } } }
                }
            }
            @if let Some(items) = &p.items {
                table.list id="plan-items" {
                    caption { (lang.t("診療行為・検査などの項目", "Event items (diagnoses, tests, prescriptions)")) }
                    thead { tr {
                        th scope="col" { (lang.t("テーブル", "Table")) }
                        th scope="col" { (lang.t("コードの段階", "Code levels")) }
                        th scope="col" { (lang.t("まれな項目で削除する行", "Rows of rare items suppressed")) }
                        th scope="col" { (lang.t("損失", "Loss")) }
                    } }
                    tbody {
                        @for t in &items.tables {
                            tr {
                                td { (t.table) }
                                td { (t.levels.iter().map(|(c, l)| format!("{c}: {l}")).collect::<Vec<_>>().join(", ")) }
                                td { (t.suppressed_rows) " / " (t.rows_before) " (" (percent(t.suppressed_rows, t.rows_before)) ")" }
                                td { (format!("{:.3}", t.loss)) }
                            }
                        }
                    }
                }
            }
            @if !p.extremes.is_empty() || !p.count_caps.is_empty() {
                ul id="plan-coding" {
                    @for e in &p.extremes {
                        li { (e.table) "." (e.column) ": " (lang.t("極端な値を上限で丸める", "extreme values top-coded")) " " (e.top_coded) ", " (lang.t("下限で丸める", "bottom-coded")) " " (e.bottom_coded) ", " (lang.t("提供しない", "withheld")) " " (e.withheld) }
                    }
                    @for c in &p.count_caps {
                        li { (c.table) ": " (lang.t("1人あたりの行数に上限", "rows per patient capped for")) " " (c.patients_capped) " / " (c.patients) ", " (lang.t("提供しない行", "rows not released")) " " (c.rows_dropped)
                            @if c.withheld { " " (lang.t("（k人未満のため提供しない）", "(withheld: fewer than k patients)")) } }
                    }
                }
            }
            table.list id="plan-attack" {
                caption { (lang.t("連結攻撃：患者の項目を m 個知る攻撃者", "Linkage attack: an attacker who knows m of a patient's items")) }
                thead { tr {
                    th scope="col" { "m" }
                    th scope="col" { (lang.t("k人未満に絞り込める患者", "Patients narrowed below k")) }
                    th scope="col" { (lang.t("1人に特定できる患者", "Patients singled out")) }
                    th scope="col" { (lang.t("保証", "Promise")) }
                } }
                tbody {
                    @for f in &p.check.attack {
                        tr {
                            td { (f.m) }
                            td { (f.below_k) " (" (format!("{:.1} %", f.share_below_k * 100.0)) ")" }
                            td { (f.unique) " (" (format!("{:.1} %", f.share_unique * 100.0)) ")" }
                            td { @if f.m <= m.m as usize { (lang.t("保証する範囲", "promised")) } @else { (lang.t("参考", "for information")) } }
                        }
                    }
                }
            }
        }
    }
}
