//! Lockout with back-off: the rule that stops online guessing of passwords and codes.
//!
//! After [`LockoutPolicy::max_failures`] consecutive failed logins the account is locked for
//! [`LockoutPolicy::base_lock_secs`]; every further failure (after the lock has passed) locks it again for
//! twice as long as the previous lock, up to [`LockoutPolicy::max_lock_secs`]. While locked, attempts are
//! refused before the password is even looked at, and they neither count nor extend the lock (so an
//! attacker cannot keep a person locked out longer by hammering the account). A successful login resets
//! the count. The rule is pure: the stored state and `now` in, the new state out.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};

/// The lockout parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock the account.
    pub max_failures: u32,
    /// Length of the first lock, seconds.
    pub base_lock_secs: i64,
    /// Longest lock, seconds: the back-off stops doubling here.
    pub max_lock_secs: i64,
}

impl Default for LockoutPolicy {
    /// Five failures, then one minute, doubling up to an hour: a person who mistypes a few times is barely
    /// slowed, a guesser gets about 24 tries a day after the first hour.
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            base_lock_secs: 60,
            max_lock_secs: 3600,
        }
    }
}

/// What is stored per account for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockoutState {
    /// Consecutive failures since the last success.
    pub failed_attempts: i64,
    /// Until when logins are refused (unix milliseconds), if a lock was ever set since the last success.
    pub locked_until_ms: Option<i64>,
}

impl LockoutPolicy {
    /// Refuses nonsensical parameters (no failures allowed, non-positive or inverted durations).
    pub fn validate(&self) -> Result<()> {
        if self.max_failures == 0 {
            return Err(PolicyError::Invalid(
                "lockout max_failures must be at least 1".to_owned(),
            ));
        }
        if self.base_lock_secs <= 0 || self.max_lock_secs < self.base_lock_secs {
            return Err(PolicyError::Invalid(
                "lockout durations must satisfy 0 < base_lock_secs <= max_lock_secs".to_owned(),
            ));
        }
        Ok(())
    }

    /// `Err(AccountLocked)` (with the RFC 3339 end of the lock) while `state` is locked at `now`.
    pub fn check(&self, state: &LockoutState, now: DateTime<Utc>) -> Result<()> {
        match state.locked_until_ms {
            Some(until) if until > now.timestamp_millis() => Err(PolicyError::AccountLocked {
                until: rfc3339_ms(until),
            }),
            _ => Ok(()),
        }
    }

    /// How long the `failures`-th consecutive failure locks the account, seconds (`None`: not at all).
    pub fn lock_secs(&self, failures: i64) -> Option<i64> {
        let beyond = failures.checked_sub(i64::from(self.max_failures))?;
        if beyond < 0 {
            return None;
        }
        let factor = 1i64.checked_shl(beyond.min(62) as u32).unwrap_or(i64::MAX);
        Some(self.base_lock_secs.saturating_mul(factor).min(self.max_lock_secs))
    }

    /// The state after a failed attempt at `now` (only call it when [`LockoutPolicy::check`] passed: an
    /// attempt refused by the lock is not a failure).
    pub fn after_failure(&self, state: &LockoutState, now: DateTime<Utc>) -> LockoutState {
        let failed_attempts = state.failed_attempts.saturating_add(1);
        let locked_until_ms = match self.lock_secs(failed_attempts) {
            Some(secs) => Some(now.timestamp_millis().saturating_add(secs.saturating_mul(1000))),
            None => state.locked_until_ms,
        };
        LockoutState {
            failed_attempts,
            locked_until_ms,
        }
    }

    /// The state after a successful login: no failures, no lock.
    pub fn after_success(&self) -> LockoutState {
        LockoutState::default()
    }
}

/// Unix milliseconds as RFC 3339 UTC, as shown to the locked-out person.
fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    /// Plays one attempt: refused while locked, otherwise a success or a counted failure.
    fn attempt(
        policy: &LockoutPolicy,
        state: &mut LockoutState,
        now: DateTime<Utc>,
        credentials_ok: bool,
    ) -> Result<()> {
        policy.check(state, now)?;
        if credentials_ok {
            *state = policy.after_success();
            Ok(())
        } else {
            *state = policy.after_failure(state, now);
            Err(PolicyError::AuthenticationFailed)
        }
    }

    #[test]
    fn fifth_failure_locks_then_back_off_doubles() {
        let policy = LockoutPolicy::default();
        policy.validate().unwrap_or_else(|e| panic!("{e}"));
        let mut state = LockoutState::default();
        for i in 1..=4 {
            let now = t0() + TimeDelta::seconds(i);
            assert!(matches!(
                attempt(&policy, &mut state, now, false),
                Err(PolicyError::AuthenticationFailed)
            ));
            assert_eq!(state.locked_until_ms, None, "not locked after {i} failures");
        }
        let fifth = t0() + TimeDelta::seconds(5);
        assert!(matches!(
            attempt(&policy, &mut state, fifth, false),
            Err(PolicyError::AuthenticationFailed)
        ));
        let until = fifth + TimeDelta::seconds(60);
        assert_eq!(state.locked_until_ms, Some(until.timestamp_millis()));

        // During the lock even the right credentials are refused, and the lock is not extended.
        let during = fifth + TimeDelta::seconds(30);
        match attempt(&policy, &mut state, during, true) {
            Err(PolicyError::AccountLocked { until: text }) => assert_eq!(text, "2023-11-14T22:14:25Z"),
            other => panic!("{other:?}"),
        }
        assert!(attempt(&policy, &mut state, during, false).is_err());
        assert_eq!(state.failed_attempts, 5);
        assert_eq!(state.locked_until_ms, Some(until.timestamp_millis()));

        // The lock ends exactly at `until`; a wrong password then locks for twice as long.
        let after = until;
        assert!(matches!(
            attempt(&policy, &mut state, after, false),
            Err(PolicyError::AuthenticationFailed)
        ));
        assert_eq!(
            state.locked_until_ms,
            Some((after + TimeDelta::seconds(120)).timestamp_millis())
        );
        assert!(matches!(
            attempt(&policy, &mut state, after + TimeDelta::seconds(119), true),
            Err(PolicyError::AccountLocked { .. })
        ));

        // After that lock, the right credentials get in and reset everything.
        let later = after + TimeDelta::seconds(120);
        assert!(attempt(&policy, &mut state, later, true).is_ok());
        assert_eq!(state, LockoutState::default());
        assert!(matches!(
            attempt(&policy, &mut state, later, false),
            Err(PolicyError::AuthenticationFailed)
        ));
        assert_eq!(state.locked_until_ms, None, "one failure after a reset does not lock");
    }

    #[test]
    fn back_off_is_capped() {
        let policy = LockoutPolicy::default();
        let secs: Vec<Option<i64>> = (3..=13).map(|n| policy.lock_secs(n)).collect();
        assert_eq!(
            secs,
            [
                None,
                None,
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(960),
                Some(1920),
                Some(3600),
                Some(3600),
                Some(3600)
            ]
        );
        assert_eq!(policy.lock_secs(i64::MAX), Some(3600));
        assert!(
            LockoutPolicy {
                max_failures: 0,
                ..policy
            }
            .validate()
            .is_err()
        );
        assert!(
            LockoutPolicy {
                base_lock_secs: 0,
                ..policy
            }
            .validate()
            .is_err()
        );
        assert!(
            LockoutPolicy {
                max_lock_secs: 10,
                ..policy
            }
            .validate()
            .is_err()
        );
    }
}
