//! Sign-in attempts per client address: the policy service locks an account after repeated wrong passwords, and
//! usernames are not secret (the provision register names recipients), so without a limit anyone on the network
//! could lock named people out through the console. Each address gets [`ATTEMPTS`] sign-ins per [`WINDOW`];
//! beyond that the console refuses (`429 SIGNIN_THROTTLED`) without asking the service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sign-ins allowed per address and window.
pub const ATTEMPTS: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);

/// The counts per address.
#[derive(Default)]
pub struct SignInThrottle {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl SignInThrottle {
    /// Counts an attempt from `addr` at `now`; whether it may go on.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = seen.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= ATTEMPTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_per_window_per_address() {
        let t = SignInThrottle::default();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..ATTEMPTS {
            assert!(t.admit(a, now));
        }
        assert!(!t.admit(a, now), "the eleventh attempt went through");
        assert!(t.admit(b, now), "another address was throttled");
        assert!(t.admit(a, now + WINDOW), "the window did not end");
    }
}
