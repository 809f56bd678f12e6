//! The workload both servers get, and what the receiving clients tally.
//!
//! Users u0..uN-1 each follow F others (uniformly at random, seeded). A change of user u is
//! made from u's own client and carries `t=<scheduled unix us>;s=<seq of u>;p=<phase>`:
//! latency is measured from the moment the change was *scheduled* (change k of a phase at
//! start + k / rate), so a driver that falls behind counts its lateness (no coordinated
//! omission). A watcher records the newest seq it saw per followed user: a change counts as
//! delivered when the watcher saw it or a later one of that user (coalesced away if it never
//! saw it itself).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::Histograms;

pub fn user_id(i: usize) -> String {
    format!("u{i}")
}

pub fn user_index(id: &str) -> Option<usize> {
    id.strip_prefix('u')?.parse().ok()
}

/// The text of a change (the node's status text; in MQTT, the payload after the status).
pub fn change_text(scheduled_us: u64, seq: u32, phase: usize) -> String {
    format!("t={scheduled_us};s={seq};p={phase}")
}

/// `(scheduled_us, seq, phase)` of a change text, anywhere after a `t=`.
pub fn parse_change(text: &str) -> Option<(u64, u32, usize)> {
    let (_, rest) = text.split_once("t=")?;
    let (t, rest) = rest.split_once(";s=")?;
    let (s, p) = rest.split_once(";p=")?;
    Some((t.parse().ok()?, s.parse().ok()?, p.parse().ok()?))
}

/// Follow lists: users `0..churn_users` follow `follow` others among themselves; the extra
/// users up to `total` (held only for the memory figure) follow among the extras, so
/// closing them leaves the churn graph as it was.
pub fn build_graph(total: usize, churn_users: usize, follow: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..total)
        .map(|me| {
            let (lo, hi) = if me < churn_users {
                (0, churn_users)
            } else {
                (churn_users, total)
            };
            let want = follow.min(hi - lo - 1);
            let mut chosen = std::collections::BTreeSet::new();
            while chosen.len() < want {
                let c = rng.random_range(lo..hi);
                if c != me {
                    chosen.insert(c as u32);
                }
            }
            chosen.into_iter().collect()
        })
        .collect()
}

/// What one phase's receivers saw.
pub struct PhaseTally {
    pub latencies: Histograms,
    pub deliveries: AtomicU64,
}

/// Shared by every receiving client of one server.
pub struct Tally {
    pub graph: Vec<Vec<u32>>,
    follow: usize,
    /// Newest seq seen, at `watcher * follow + position in its follow list`.
    newest: Vec<AtomicU32>,
    /// Index 0 is unused (texts without a phase are not changes).
    pub phases: Vec<PhaseTally>,
    /// Own changes the server acknowledged (node `Ack`, MQTT `PUBACK`).
    pub acks: AtomicU64,
    /// Clients that failed or ended before the end.
    pub failures: AtomicU64,
}

impl Tally {
    pub fn new(graph: Vec<Vec<u32>>, follow: usize, phases: usize) -> Self {
        let newest = (0..graph.len() * follow)
            .map(|_| AtomicU32::new(0))
            .collect();
        Self {
            graph,
            follow,
            newest,
            phases: (0..=phases)
                .map(|_| PhaseTally {
                    latencies: Histograms::new(),
                    deliveries: AtomicU64::new(0),
                })
                .collect(),
            acks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Watcher `w` received `text` of user `user` at `now_us`.
    pub fn received(&self, w: usize, user: usize, text: &str, now_us: u64) {
        let Some((scheduled, seq, phase)) = parse_change(text) else {
            return;
        };
        let Some(tally) = self.phases.get(phase).filter(|_| phase > 0) else {
            return;
        };
        if let Ok(pos) = self.graph[w].binary_search(&(user as u32)) {
            self.newest[w * self.follow + pos].fetch_max(seq, Ordering::Relaxed);
        }
        tally.latencies.record(w, now_us.saturating_sub(scheduled));
        tally.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// (expected, covered) deliveries of the changes with seq in `(from[u], to[u]]`, over the
    /// watchers `0..watchers`: expected = changes x watchers, covered = those a watcher saw
    /// or superseded by a later one it saw.
    pub fn coverage(&self, watchers: usize, from: &[u32], to: &[u32]) -> (u64, u64) {
        let (mut expected, mut covered) = (0u64, 0u64);
        for (w, list) in self.graph.iter().enumerate().take(watchers) {
            for (pos, user) in list.iter().enumerate() {
                let (a, b) = (from[*user as usize], to[*user as usize]);
                let newest = self.newest[w * self.follow + pos].load(Ordering::Relaxed);
                expected += u64::from(b - a);
                covered += u64::from(newest.clamp(a, b) - a);
            }
        }
        (expected, covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_text_round_trips() {
        let text = change_text(1_700_000_000_000_000, 42, 2);
        assert_eq!(parse_change(&text), Some((1_700_000_000_000_000, 42, 2)));
        assert_eq!(
            parse_change(&format!("away;{text}")),
            Some((1_700_000_000_000_000, 42, 2))
        );
        assert_eq!(parse_change("online"), None);
        assert_eq!(parse_change("t=1;s=2"), None);
    }

    #[test]
    fn graph_keeps_extras_apart() {
        let g = build_graph(30, 20, 5, 1);
        assert_eq!(g.len(), 30);
        for (me, list) in g.iter().enumerate() {
            assert_eq!(list.len(), 5);
            assert!(!list.contains(&(me as u32)));
            assert!(list.iter().all(|u| (*u < 20) == (me < 20)));
        }
    }

    #[test]
    fn coverage_counts_superseded_changes() {
        let tally = Tally::new(vec![vec![1], vec![0]], 1, 1);
        // Watcher 0 saw change 3 of user 1 (of 1..=4 this phase): 3 covered of 4.
        tally.received(0, 1, &change_text(1, 3, 1), 10);
        let (expected, covered) = tally.coverage(2, &[0, 0], &[2, 4]);
        assert_eq!((expected, covered), (6, 3));
        assert_eq!(tally.phases[1].deliveries.load(Ordering::Relaxed), 1);
    }
}
