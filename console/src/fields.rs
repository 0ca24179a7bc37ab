//! The parts of a form every page shares: a labelled field with its hint and its problem tied to the input for
//! screen readers (`aria-describedby`, `aria-invalid`, `role=alert`), and the checks made before anything is sent
//! to a service — so a physician sees what to mend beside the field, in their language, and the service still
//! refuses on its own.

use std::collections::BTreeMap;

use maud::{Markup, html};

/// A field's problem, by field name.
pub type Problems = BTreeMap<&'static str, &'static str>;

/// Dates are typed as text (every browser and screen reader the same way, whatever the locale's date picker).
pub const DATE_HINT: &str = "YYYY-MM-DD";

/// A date as the console takes it (`YYYY-MM-DD`, typed as text: every browser and screen reader the same way).
pub fn valid_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// Whether the field `id` has a problem, for `aria-invalid`.
pub fn invalid(id: &str, problems: &Problems) -> Option<&'static str> {
    problems.contains_key(id).then_some("true")
}

/// The ids of the field's hint and problem, for `aria-describedby` (none: no attribute).
pub fn described(id: &str, hint: bool, problems: &Problems) -> Option<String> {
    let mut ids = Vec::new();
    if hint {
        ids.push(format!("{id}-hint"));
    }
    if problems.contains_key(id) {
        ids.push(format!("{id}-error"));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// One labelled field: its input, its hint, its problem (tied to the input by `aria-describedby`). `id` is the
/// input's element id, and the key of its problem.
pub fn field(id: &'static str, label: &str, hint: Option<&str>, problems: &Problems, input: Markup) -> Markup {
    let problem = problems.get(id);
    html! {
        div class={ "field" @if problem.is_some() { " invalid" } } {
            label for=(id) { (label) }
            @if let Some(h) = hint { p.hint id={ (id) "-hint" } { (h) } }
            (input)
            @if let Some(msg) = problem { p.problem id={ (id) "-error" } role="alert" { (msg) } }
        }
    }
}

/// A one-line text input `id` posted as `name`, tied to its hint and problem.
pub fn text_named(id: &'static str, name: &str, value: &str, problems: &Problems, hint: bool) -> Markup {
    html! {
        input type="text" id=(id) name=(name) value=(value)
            aria-invalid=[invalid(id, problems)]
            aria-describedby=[described(id, hint, problems)];
    }
}

/// A text area `id` posted as `name`, `rows` high, tied to its hint and problem.
pub fn area_named(id: &'static str, name: &str, value: &str, problems: &Problems, hint: bool, rows: u8) -> Markup {
    html! {
        textarea id=(id) name=(name) rows=(rows)
            aria-invalid=[invalid(id, problems)]
            aria-describedby=[described(id, hint, problems)] { (value) }
    }
}

/// A one-line text input whose id is its name.
pub fn text(name: &'static str, value: &str, problems: &Problems, hint: bool) -> Markup {
    text_named(name, name, value, problems, hint)
}

/// A four-line text area whose id is its name.
pub fn area(name: &'static str, value: &str, problems: &Problems, hint: bool) -> Markup {
    area_named(name, name, value, problems, hint, 4)
}
