//! Failed sign-ins per client network: the policy service locks an account after repeated wrong passwords, and
//! usernames are not secret, so without a limit anyone on the network could lock named people out through the
//! console. Each network — an IPv4 address, an IPv6 /64 (one host's usual allocation) — gets [`ATTEMPTS`] failed
//! sign-ins per [`WINDOW`]; beyond that the console refuses (`429 SIGNIN_THROTTLED`) without asking the service.
//! Successful sign-ins are not counted: people behind one hospital's or university's address sign in freely.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins allowed per network and window.
pub const ATTEMPTS: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Networks tracked at once; past it, expired entries are dropped first and then the oldest.
const TRACKED: usize = 100_000;

/// The failures per network.
#[derive(Default)]
pub struct SignInThrottle {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The network an address is counted under.
fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

impl SignInThrottle {
    /// Whether a sign-in from `addr` may be tried at `now`.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&network(addr)) {
            Some((start, failures)) => now.duration_since(*start) >= WINDOW || *failures < ATTEMPTS,
            None => true,
        }
    }

    /// Counts a failed sign-in from `addr` at `now`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= TRACKED {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if seen.len() >= TRACKED
                && let Some(oldest) = seen.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(network(addr)).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_per_window_per_network() {
        let t = SignInThrottle::default();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..ATTEMPTS {
            assert!(t.admit(a, now));
            t.failed(a, now);
        }
        assert!(!t.admit(a, now), "the eleventh attempt went through");
        assert!(t.admit(b, now), "another address was throttled");
        assert!(t.admit(a, now + WINDOW), "the window did not end");
    }

    #[test]
    fn an_ipv6_host_cannot_step_around_the_limit() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        for i in 0..ATTEMPTS {
            t.failed(format!("2001:db8::{i:x}").parse().unwrap(), now);
        }
        assert!(
            !t.admit("2001:db8::ffff".parse().unwrap(), now),
            "a new address of the same /64 went through"
        );
        assert!(
            t.admit("2001:db8:1::1".parse().unwrap(), now),
            "another /64 was throttled"
        );
    }
}
