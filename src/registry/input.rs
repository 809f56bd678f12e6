//! The registry's input: changed records waiting for fan-out, coalesced per user.
//!
//! A watcher needs the latest view of a user, not every intermediate one, so a user changing
//! faster than the registry fans out holds one pending record here, not a queue of them: the
//! registry's mailbox carries at most one `Drain` at a time, whatever the change rate. What a
//! pending record weighs is bounded by the users that changed since the last drain.
//!
//! Admin change streams (`WatchChanges`) get every change others can see, not coalesced:
//! while one is open, a replaced record others could see is kept in its user's trail, up to
//! `MAX_TRAIL` per user; past that the streams wanting the user are ended as overflowed
//! (the same as a stream falling that far behind on its own queue).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::presence::UserRecord;

/// Most replaced records kept per user for change streams between two drains (as many as a
/// change stream's own queue holds).
pub const MAX_TRAIL: usize = 4096;

/// Most users fanned out per `Drain` message, so watch registrations interleave.
pub const MAX_DRAIN_BATCH: usize = 1024;

/// One user's pending change.
#[derive(Debug)]
pub struct Pending {
    /// The newest record (versions never go back).
    pub latest: UserRecord,
    /// Older records others could see, oldest first, for change streams only.
    pub trail: Vec<UserRecord>,
    /// The trail hit `MAX_TRAIL`: change streams wanting this user missed changes.
    pub trail_overflowed: bool,
}

#[derive(Debug, Default)]
struct Queue {
    pending: HashMap<String, Pending>,
    /// A `Drain` is in the registry's mailbox (or being handled).
    scheduled: bool,
}

#[derive(Debug, Default)]
pub struct FanoutInput {
    queue: Mutex<Queue>,
    /// A change stream is open: replaced records others could see are kept.
    streams: AtomicBool,
}

impl FanoutInput {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds changed records; returns whether the caller must send the registry a `Drain`.
    pub fn offer(&self, records: Vec<UserRecord>) -> bool {
        let streams = self.streams.load(Ordering::Relaxed);
        let mut queue = self.lock();
        let mut coalesced = 0u64;
        for record in records {
            match queue.pending.get_mut(&record.user_id) {
                None => {
                    queue.pending.insert(
                        record.user_id.clone(),
                        Pending {
                            latest: record,
                            trail: Vec::new(),
                            trail_overflowed: false,
                        },
                    );
                }
                Some(pending) => {
                    if record.version <= pending.latest.version {
                        // Older than what is pending: no watcher may see it now.
                        metrics::counter!(crate::metrics::UPDATES_DROPPED, "reason" => "stale")
                            .increment(1);
                        continue;
                    }
                    coalesced += 1;
                    let older = std::mem::replace(&mut pending.latest, record);
                    if streams && older.public_changed() {
                        if pending.trail.len() < MAX_TRAIL {
                            pending.trail.push(older);
                        } else {
                            pending.trail_overflowed = true;
                        }
                    }
                }
            }
        }
        if coalesced > 0 {
            metrics::counter!(crate::metrics::FANOUT_COALESCED).increment(coalesced);
        }
        if queue.pending.is_empty() || queue.scheduled {
            return false;
        }
        queue.scheduled = true;
        true
    }

    /// Takes up to `MAX_DRAIN_BATCH` pending users; the second value says whether more
    /// remain (the registry then sends itself another `Drain`).
    pub fn take_batch(&self) -> (Vec<Pending>, bool) {
        let mut queue = self.lock();
        let batch: Vec<Pending> = if queue.pending.len() <= MAX_DRAIN_BATCH {
            let all = std::mem::take(&mut queue.pending);
            all.into_values().collect()
        } else {
            let ids: Vec<String> = queue
                .pending
                .keys()
                .take(MAX_DRAIN_BATCH)
                .cloned()
                .collect();
            ids.iter()
                .filter_map(|id| queue.pending.remove(id))
                .collect()
        };
        let more = !queue.pending.is_empty();
        queue.scheduled = more;
        (batch, more)
    }

    /// Whether change streams are open (set by the registry).
    pub fn set_streams(&self, open: bool) {
        self.streams.store(open, Ordering::Relaxed);
    }

    /// Users waiting for fan-out.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, version: u64) -> UserRecord {
        let mut r = UserRecord::new(user);
        r.version = version;
        r
    }

    #[test]
    fn a_hot_user_holds_one_pending_record_and_one_drain() {
        let input = FanoutInput::default();
        assert!(input.offer(vec![record("hot", 1)]));
        for v in 2..10_000 {
            assert!(!input.offer(vec![record("hot", v)]), "one drain at a time");
        }
        assert!(!input.offer(vec![record("hot", 5)]), "stale");
        assert!(!input.offer(vec![record("cold", 1)]));
        let (batch, more) = input.take_batch();
        assert!(!more);
        let mut versions: Vec<(String, u64)> = batch
            .iter()
            .map(|p| (p.latest.user_id.clone(), p.latest.version))
            .collect();
        versions.sort();
        assert_eq!(
            versions,
            vec![("cold".to_string(), 1), ("hot".to_string(), 9_999)]
        );
        assert!(batch.iter().all(|p| p.trail.is_empty()), "no change stream");
        // Drained: the next change schedules a drain again.
        assert!(input.offer(vec![record("hot", 10_000)]));
    }

    #[test]
    fn change_streams_keep_the_trail_up_to_its_bound() {
        let input = FanoutInput::default();
        input.set_streams(true);
        for v in 1..=(MAX_TRAIL as u64 + 10) {
            input.offer(vec![record("hot", v)]);
        }
        let (batch, _) = input.take_batch();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].trail.len(), MAX_TRAIL);
        assert!(batch[0].trail_overflowed);
        assert!(batch[0]
            .trail
            .windows(2)
            .all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn drains_are_batched() {
        let input = FanoutInput::default();
        let records = (0..(MAX_DRAIN_BATCH + 5))
            .map(|i| record(&format!("u{i}"), 1))
            .collect();
        assert!(input.offer(records));
        let (first, more) = input.take_batch();
        assert_eq!((first.len(), more), (MAX_DRAIN_BATCH, true));
        assert!(
            !input.offer(vec![record("late", 1)]),
            "a drain is still due"
        );
        let (second, more) = input.take_batch();
        assert_eq!((second.len(), more), (6, false));
    }
}
