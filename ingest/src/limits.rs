//! Per-hospital rate limiting: one misbehaving hospital system cannot starve the others.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// A keyed token bucket over records per second.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl RateLimits {
    /// `records_per_second` is both the sustained rate and the burst a hospital may send at once.
    pub fn new(records_per_second: u32) -> Self {
        let rate = NonZeroU32::new(records_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            per_second: rate.get(),
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
                "hospital {hospital} exceeded its rate of {} records/s; retry after a short back-off",
                self.per_second
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
}
