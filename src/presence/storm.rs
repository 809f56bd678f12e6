//! Mass abrupt disconnects ("storms") get a longer, bounded grace.
//!
//! When a load balancer, a NAT or a network path restarts, thousands of a node's sessions end
//! abruptly within a second, and their devices reconnect over the next several seconds, many
//! after the normal offline grace (3 s). With the normal grace every one of those shows its
//! watchers OFFLINE then ONLINE: a flap storm. A single dropped device, though, should still go
//! OFFLINE after the normal grace.
//!
//! The rule: when at least `threshold` sessions of this node end abruptly within `window_ms`,
//! the node is in a storm until `storm_grace_ms` after the last abrupt end seen during it; an
//! abrupt end during a storm lingers for `storm_grace_ms` instead of the normal grace, and the
//! sessions that ended abruptly in the window that started the storm are extended too (they
//! were given the normal grace before the storm was known). Worst-case ghost time: a device
//! that dropped in a storm and never comes back is shown online for `storm_grace_ms`.
//!
//! Pure bookkeeping with time passed in; the caller writes the extensions.

use std::collections::VecDeque;

/// The settings of the rule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormRule {
    pub window_ms: u64,
    /// Abrupt ends within the window that make a storm; 0 turns the rule off.
    pub threshold: usize,
    pub normal_grace_ms: u64,
    pub storm_grace_ms: u64,
}

/// What an abrupt end gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grace {
    /// The session lingers until this.
    pub linger_until_ms: u64,
    /// Sessions (user id, session id) that ended abruptly just before the storm was seen:
    /// linger them until `linger_until_ms` too.
    pub extend: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct StormGuard {
    rule: StormRule,
    /// Abrupt ends in the current window while no storm is on (at most `threshold`).
    recent: VecDeque<(u64, String, String)>,
    /// The storm lasts until this (0: no storm).
    storm_until_ms: u64,
}

impl StormGuard {
    pub fn new(rule: StormRule) -> Self {
        Self {
            rule,
            recent: VecDeque::new(),
            storm_until_ms: 0,
        }
    }

    pub fn in_storm(&self, now_ms: u64) -> bool {
        now_ms < self.storm_until_ms
    }

    /// Session `session_id` of `user_id` ended abruptly at `now_ms`.
    pub fn abrupt_end(&mut self, now_ms: u64, user_id: &str, session_id: &str) -> Grace {
        let rule = self.rule;
        let storm_until = now_ms + rule.storm_grace_ms;
        if rule.threshold == 0 || rule.storm_grace_ms <= rule.normal_grace_ms {
            return self.normal(now_ms);
        }
        if self.in_storm(now_ms) {
            self.storm_until_ms = storm_until;
            return Grace {
                linger_until_ms: storm_until,
                extend: Vec::new(),
            };
        }
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| at + rule.window_ms <= now_ms)
        {
            self.recent.pop_front();
        }
        if self.recent.len() + 1 < rule.threshold {
            self.recent
                .push_back((now_ms, user_id.to_owned(), session_id.to_owned()));
            return self.normal(now_ms);
        }
        self.storm_until_ms = storm_until;
        Grace {
            linger_until_ms: storm_until,
            extend: self
                .recent
                .drain(..)
                .map(|(_, user, session)| (user, session))
                .collect(),
        }
    }

    fn normal(&self, now_ms: u64) -> Grace {
        Grace {
            linger_until_ms: now_ms + self.rule.normal_grace_ms,
            extend: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn guard() -> StormGuard {
        StormGuard::new(StormRule {
            window_ms: 1_000,
            threshold: 3,
            normal_grace_ms: 3_000,
            storm_grace_ms: 30_000,
        })
    }

    #[test]
    fn a_single_drop_gets_the_normal_grace() {
        let mut g = guard();
        let grace = g.abrupt_end(T0, "alice", "s1");
        assert_eq!(grace.linger_until_ms, T0 + 3_000);
        assert!(grace.extend.is_empty());
        assert!(!g.in_storm(T0));
    }

    #[test]
    fn drops_spread_wider_than_the_window_never_make_a_storm() {
        let mut g = guard();
        for i in 0..100u64 {
            let at = T0 + i * 600;
            let grace = g.abrupt_end(at, &format!("u{i}"), "s");
            assert_eq!(grace.linger_until_ms, at + 3_000, "drop {i}");
        }
    }

    #[test]
    fn the_threshold_within_the_window_starts_a_storm_and_extends_the_first_drops() {
        let mut g = guard();
        assert_eq!(g.abrupt_end(T0, "a", "s1").linger_until_ms, T0 + 3_000);
        assert_eq!(
            g.abrupt_end(T0 + 400, "b", "s2").linger_until_ms,
            T0 + 3_400
        );
        let third = g.abrupt_end(T0 + 900, "c", "s3");
        assert_eq!(third.linger_until_ms, T0 + 30_900);
        assert_eq!(
            third.extend,
            vec![
                ("a".to_owned(), "s1".to_owned()),
                ("b".to_owned(), "s2".to_owned())
            ]
        );
        assert!(g.in_storm(T0 + 900));
        // During the storm: the storm grace, nothing more to extend.
        let fourth = g.abrupt_end(T0 + 5_000, "d", "s4");
        assert_eq!(
            (fourth.linger_until_ms, fourth.extend.len()),
            (T0 + 35_000, 0)
        );
    }

    #[test]
    fn the_storm_ends_a_storm_grace_after_its_last_drop() {
        let mut g = guard();
        for (i, at) in [T0, T0 + 1, T0 + 2].into_iter().enumerate() {
            g.abrupt_end(at, &format!("u{i}"), "s");
        }
        assert!(g.in_storm(T0 + 30_001));
        assert!(!g.in_storm(T0 + 30_002));
        let later = g.abrupt_end(T0 + 40_000, "late", "s");
        assert_eq!(later.linger_until_ms, T0 + 43_000);
    }

    #[test]
    fn a_threshold_of_zero_turns_the_rule_off() {
        let mut g = StormGuard::new(StormRule {
            threshold: 0,
            ..guard().rule
        });
        for i in 0..10 {
            assert_eq!(
                g.abrupt_end(T0, &format!("u{i}"), "s").linger_until_ms,
                T0 + 3_000
            );
        }
    }
}
