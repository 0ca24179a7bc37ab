//! Calendar arithmetic on day numbers, so that generation never parses or formats through a date library
//! (fast, allocation-light, and independent of the clock and the time zone).

/// A day number: days since 1970-01-01 (proleptic Gregorian). Integers make "is before" and "add n days"
/// trivial and cannot produce an invalid calendar date.
pub type Day = i32;

/// The fixed "today" of generation (2026-10-31), so output never depends on when it is run.
pub const TODAY: Day = days_from_civil(2026, 10, 31);

/// The earliest date generation may emit; nothing clinical or personal predates it.
pub const EPOCH_1900: Day = days_from_civil(1900, 1, 1);

/// Day number of a civil date (Howard Hinnant's algorithm; exact for every Gregorian date).
pub const fn days_from_civil(y: i32, m: u32, d: u32) -> Day {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

/// Civil date (year, month, day) of a day number; the inverse of [`days_from_civil`].
pub const fn civil_from_days(z: Day) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The same calendar day `years` years earlier (used to turn an age into a birth-date range).
pub fn years_before(day: Day, years: i32) -> Day {
    let (y, m, d) = civil_from_days(day);
    // Feb 29 does not exist in most years; step back to Feb 28 rather than overflow into March.
    let d = if m == 2 && d == 29 { 28 } else { d };
    days_from_civil(y - years, m, d)
}

/// Completed years of age on `on` for someone born on `birth`.
pub fn age_on(birth: Day, on: Day) -> u32 {
    let (by, bm, bd) = civil_from_days(birth);
    let (y, m, d) = civil_from_days(on);
    let mut age = y - by;
    if (m, d) < (bm, bd) {
        age -= 1;
    }
    age.max(0) as u32
}

/// "YYYY-MM-DD", the format of every date in the ingest contract. Writes into a pre-sized String to keep
/// generation to one allocation per date.
pub fn format(day: Day) -> String {
    let (y, m, d) = civil_from_days(day);
    let mut s = String::with_capacity(10);
    push_digits(&mut s, y as u32, 4);
    s.push('-');
    push_digits(&mut s, m, 2);
    s.push('-');
    push_digits(&mut s, d, 2);
    s
}

/// Appends `value` as exactly `width` zero-padded decimal digits (higher digits are dropped).
pub fn push_digits(s: &mut String, value: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        s.push(char::from(b'0' + ((value / div) % 10) as u8));
        div /= 10;
    }
}

/// Like [`push_digits`] for 64-bit values (identifiers of up to 11 digits).
pub fn push_digits_u64(s: &mut String, value: u64, width: u32) {
    let mut div = 10u64.pow(width - 1);
    while div > 0 {
        s.push(char::from(b'0' + ((value / div) % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_known_values() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format(TODAY), "2026-10-31");
        assert_eq!(format(EPOCH_1900), "1900-01-01");
        for z in (EPOCH_1900..=TODAY).step_by(17) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn ages_count_completed_years() {
        let birth = days_from_civil(2000, 11, 1);
        assert_eq!(age_on(birth, TODAY), 25);
        assert_eq!(age_on(days_from_civil(2000, 10, 31), TODAY), 26);
        assert_eq!(
            years_before(days_from_civil(2024, 2, 29), 1),
            days_from_civil(2023, 2, 28)
        );
    }
}
