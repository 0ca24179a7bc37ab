//! The synthetic hospitals' records (`tokumei-synth`) are what a well-behaved vendor sends: every one passes the
//! gateway's validation and none carries a My Number look-alike (the demo and the benchmarks rely on both).

use tokumei_synth::{Synth, text_fields};

const H: [&str; 3] = ["1310000017", "2710000019", "1410000015"];

#[test]
fn records_pass_the_gateway_validation() {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 10, 31).expect("a date");
    for code in H {
        for r in Synth::new(17).records(code, 0, 3000) {
            if let Err(refusal) = crate::validate::validate_record(&r, today) {
                panic!("synthetic record refused: {refusal:?}");
            }
            assert!(text_fields(&r).iter().all(|s| !crate::my_number::contains_my_number(s)));
        }
    }
}
