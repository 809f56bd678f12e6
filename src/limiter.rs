//! Token buckets per user, per identity and per session (API.md "What one caller can consume
//! is bounded"): session opens and visible changes per user across all of its sessions,
//! `GetPresence` calls per identity, frames per session. All on this node.
//!
//! The keyed ones hold one small state per key seen recently; `UserRates::upkeep` (from the
//! sweeper) drops keys whose bucket is full again (indistinguishable from a fresh one), so
//! their memory follows the users active in the last seconds, not every user ever seen.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::Config;

type Instant = <MonotonicClock as Clock>::Instant;

/// A keyed limiter on the std monotonic clock (see `session::actor` on why not quanta).
type Keyed =
    RateLimiter<String, HashMapStateStore<String>, MonotonicClock, NoOpMiddleware<Instant>>;

/// One bucket (a session's frames).
pub type Direct = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<Instant>>;

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// A bucket of `burst` tokens refilled at `per_second`.
pub fn direct(per_second: u32, burst: u32) -> Direct {
    RateLimiter::direct_with_clock(quota(per_second, burst), MonotonicClock)
}

/// Takes one token from `limiter`, or says how long until one is there.
pub fn take(limiter: &Direct) -> Result<(), Duration> {
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(MonotonicClock.now()))
}

/// Waits until `limiter` has a token and takes it. Returns whether it had to wait.
pub async fn wait_for(limiter: &Direct) -> bool {
    let mut waited = false;
    while let Err(wait) = take(limiter) {
        waited = true;
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
    waited
}

/// How many sweeps between two `retain_recent` passes, and between two `shrink_to_fit`.
const RETAIN_EVERY: u64 = 4;
const SHRINK_EVERY: u64 = 240;

/// The keyed buckets of one node.
pub struct UserRates {
    opens: Keyed,
    changes: Keyed,
    /// Fan-outs of each user's changes on this node (whatever caused them, here or on
    /// another node): past it, changes are held and go out later, coalesced.
    deliveries: Keyed,
    gets: Keyed,
    upkeeps: AtomicU64,
}

fn check(limiter: &Keyed, key: &str) -> Result<(), Duration> {
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| not_until.wait_time_from(MonotonicClock.now()))
}

impl UserRates {
    pub fn new(config: &Config) -> Self {
        let keyed =
            |per_s, burst| RateLimiter::hashmap_with_clock(quota(per_s, burst), MonotonicClock);
        Self {
            opens: keyed(
                config.session_open_rate_per_s,
                config.session_open_rate_burst,
            ),
            changes: keyed(config.user_change_rate_per_s, config.user_change_rate_burst),
            deliveries: keyed(config.user_change_rate_per_s, config.user_change_rate_burst),
            gets: keyed(config.get_rate_per_s, config.get_rate_burst),
            upkeeps: AtomicU64::new(0),
        }
    }

    /// One more session of `user_id`; `Err`: how long until one may open.
    pub fn open(&self, user_id: &str) -> Result<(), Duration> {
        check(&self.opens, user_id)
    }

    /// One more visible change chosen by `user_id` (`set_status`); `Err`: refused.
    pub fn change(&self, user_id: &str) -> Result<(), Duration> {
        check(&self.changes, user_id)
    }

    /// A change that is never refused (a session opening or ending): it takes a token when
    /// there is one, so the user's chosen changes have that much less room.
    pub fn count_change(&self, user_id: &str) {
        let _ = check(&self.changes, user_id);
    }

    /// One more fan-out of `user_id`'s changes; `Err`: how long until one may go.
    pub fn deliver(&self, user_id: &str) -> Result<(), Duration> {
        check(&self.deliveries, user_id)
    }

    /// One more `GetPresence` by `identity`; `Err`: how long until one is answered.
    pub fn get(&self, identity: &str) -> Result<(), Duration> {
        check(&self.gets, identity)
    }

    /// Keys held over all buckets (what upkeep bounds).
    pub fn keys(&self) -> usize {
        self.opens.len() + self.changes.len() + self.deliveries.len() + self.gets.len()
    }

    /// Drops the keys whose bucket is full again; now and then gives the memory back.
    pub fn upkeep(&self) {
        let n = self.upkeeps.fetch_add(1, Ordering::Relaxed);
        if n % RETAIN_EVERY != 0 {
            return;
        }
        for limiter in [&self.opens, &self.changes, &self.deliveries, &self.gets] {
            limiter.retain_recent();
            if n % SHRINK_EVERY == 0 {
                limiter.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn rates(args: &[&str]) -> UserRates {
        let mut argv = vec!["presence-node"];
        argv.extend_from_slice(args);
        UserRates::new(&Config::parse_from(argv))
    }

    #[test]
    fn opens_are_limited_per_user_not_per_node() {
        let r = rates(&[
            "--session-open-rate-per-s",
            "1",
            "--session-open-rate-burst",
            "3",
        ]);
        for _ in 0..3 {
            r.open("alice").unwrap();
        }
        let wait = r.open("alice").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        r.open("bob").unwrap();
    }

    #[test]
    fn counted_changes_leave_less_room_but_are_never_refused() {
        let r = rates(&[
            "--user-change-rate-per-s",
            "1",
            "--user-change-rate-burst",
            "2",
        ]);
        r.count_change("alice");
        r.change("alice").unwrap();
        assert!(r.change("alice").is_err());
        r.count_change("alice");
    }

    #[test]
    fn upkeep_forgets_keys_whose_bucket_is_full_again() {
        let r = rates(&["--get-rate-per-s", "1000", "--get-rate-burst", "1"]);
        for i in 0..100 {
            r.get(&format!("u{i}")).unwrap();
        }
        assert_eq!(r.keys(), 100);
        std::thread::sleep(Duration::from_millis(5));
        r.upkeep();
        assert_eq!(r.keys(), 0);
    }

    #[test]
    fn a_direct_bucket_says_how_long_to_wait() {
        let d = direct(10, 1);
        take(&d).unwrap();
        let wait = take(&d).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
    }
}
