//! Per-hospital rate limiting: one misbehaving hospital system cannot starve the others, and a hospital
//! cannot send patients' requests (opt-out, erasure) by the thousand — each names a person by identity
//! keys that may be guessed (kana name, birth date, sex).

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// A keyed token bucket per hospital.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    per_second: u32,
    /// "records/s" or "patient requests/min", for messages.
    unit: &'static str,
}

impl RateLimits {
    /// `records_per_second` is both the sustained rate and the burst a hospital may send at once.
    pub fn new(records_per_second: u32) -> Self {
        let rate = NonZeroU32::new(records_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            per_second: rate.get(),
            unit: "records/s",
        }
    }

    /// Patients' requests: `per_minute` sustained, and as the burst.
    pub fn patient_requests(per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            limiter: RateLimiter::keyed(Quota::per_minute(rate)),
            per_second: rate.get(),
            unit: "patient requests/min",
        }
    }

    /// Takes `records` tokens from the hospital's bucket, or says why not.
    pub fn check(&self, hospital: &str, records: usize) -> Result<(), String> {
        let Some(n) = u32::try_from(records).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match self.limiter.check_key_n(&hospital.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(format!(
                "hospital {hospital} exceeded its rate of {} {}; retry after a back-off",
                self.per_second, self.unit
            )),
            Err(_) => Err(format!(
                "a batch of {records} records exceeds the per-hospital burst of {}; split it",
                self.per_second
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_hospital() {
        let l = RateLimits::new(100);
        assert!(l.check("A", 100).is_ok());
        assert!(l.check("A", 10).is_err());
        assert!(l.check("B", 50).is_ok());
        assert!(l.check("B", 101).is_err());
    }

    #[test]
    fn patient_requests_are_counted_per_minute() {
        let l = RateLimits::patient_requests(3);
        for _ in 0..3 {
            assert!(l.check("A", 1).is_ok());
        }
        let refused = l.check("A", 1).expect_err("the fourth in a minute");
        assert!(refused.contains("patient requests/min"), "{refused}");
        assert!(l.check("B", 1).is_ok());
    }
}
