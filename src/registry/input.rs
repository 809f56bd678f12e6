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
use std::time::Duration;

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

impl Pending {
    fn new(latest: UserRecord) -> Self {
        Self {
            latest,
            trail: Vec::new(),
            trail_overflowed: false,
        }
    }

    /// Takes a newer record; false if `record` is not newer (stale: dropped).
    fn merge(&mut self, record: UserRecord, keep_trail: bool) -> bool {
        if record.version <= self.latest.version {
            return false;
        }
        let older = std::mem::replace(&mut self.latest, record);
        if keep_trail && older.public_changed() {
            if self.trail.len() < MAX_TRAIL {
                self.trail.push(older);
            } else {
                self.trail_overflowed = true;
            }
        }
        true
    }
}

/// Whether one more fan-out of a user may go now (`Ok`) or how long until it may: the
/// user's delivery rate (`PRESENCE_USER_CHANGE_RATE_PER_S` / `_BURST`, over every change of
/// the user this node fans out, whichever session or node caused it).
pub type Pace<'a> = &'a dyn Fn(&str) -> Result<(), Duration>;

/// What `offer` asks of its caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// Send the registry a `Drain`.
    pub drain: bool,
    /// Users whose change was held back by their rate: call `release` after the wait.
    pub held: Vec<(String, Duration)>,
}

/// What `release` asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// The held change is pending for fan-out; `true`: send the registry a `Drain`.
    Pending(bool),
    /// Still over the rate: call `release` again after this long.
    Wait(Duration),
    /// Nothing was held for the user.
    Nothing,
}

#[derive(Debug, Default)]
struct Queue {
    pending: HashMap<String, Pending>,
    /// Changes of users past their delivery rate, coalesced, waiting for `release`. A user
    /// is never in `pending` and here at once, so its changes go out in order.
    held: HashMap<String, Pending>,
    /// A `Drain` is in the registry's mailbox (or being handled).
    scheduled: bool,
}

impl Queue {
    /// A `Drain` must be sent unless one is due already or nothing is pending.
    fn schedule(&mut self) -> bool {
        if self.pending.is_empty() || self.scheduled {
            return false;
        }
        self.scheduled = true;
        true
    }
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

    /// Adds changed records. A user already pending coalesces (no new delivery); a user
    /// past its rate (`pace`) is held back, coalesced, and released later: watchers get the
    /// latest view, later, never lose it.
    pub fn offer(&self, records: Vec<UserRecord>, pace: Pace<'_>) -> Offered {
        let keep_trail = self.streams.load(Ordering::Relaxed);
        let mut queue = self.lock();
        let mut coalesced = 0u64;
        let mut stale = 0u64;
        let mut held = Vec::new();
        for record in records {
            let user = record.user_id.as_str();
            let merged = if let Some(p) = queue.held.get_mut(user) {
                Some(p.merge(record, keep_trail))
            } else if let Some(p) = queue.pending.get_mut(user) {
                Some(p.merge(record, keep_trail))
            } else {
                match pace(user) {
                    Ok(()) => {
                        queue.pending.insert(user.to_owned(), Pending::new(record));
                    }
                    Err(wait) => {
                        held.push((user.to_owned(), wait));
                        queue.held.insert(user.to_owned(), Pending::new(record));
                    }
                }
                None
            };
            match merged {
                Some(true) => coalesced += 1,
                Some(false) => stale += 1,
                None => {}
            }
        }
        if coalesced > 0 {
            metrics::counter!(crate::metrics::FANOUT_COALESCED).increment(coalesced);
        }
        if stale > 0 {
            // Older than what is pending: no watcher may see it now.
            metrics::counter!(crate::metrics::UPDATES_DROPPED, "reason" => "stale")
                .increment(stale);
        }
        if !held.is_empty() {
            metrics::counter!(crate::metrics::FANOUT_HELD).increment(held.len() as u64);
        }
        Offered {
            drain: queue.schedule(),
            held,
        }
    }

    /// Moves `user_id`'s held change to the pending ones once its rate allows.
    pub fn release(&self, user_id: &str, pace: Pace<'_>) -> Released {
        let mut queue = self.lock();
        if !queue.held.contains_key(user_id) {
            return Released::Nothing;
        }
        if let Err(wait) = pace(user_id) {
            return Released::Wait(wait);
        }
        let Some(held) = queue.held.remove(user_id) else {
            return Released::Nothing;
        };
        // Never pending at the same time (see `Queue::held`).
        queue.pending.insert(user_id.to_owned(), held);
        Released::Pending(queue.schedule())
    }

    /// Users whose change is held back by their rate.
    pub fn held(&self) -> usize {
        self.lock().held.len()
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

    fn free(_: &str) -> Result<(), Duration> {
        Ok(())
    }

    /// (user, version) of each pending change in `batch`, sorted.
    fn versions(batch: &[Pending]) -> Vec<(String, u64)> {
        let mut versions: Vec<(String, u64)> = batch
            .iter()
            .map(|p| (p.latest.user_id.clone(), p.latest.version))
            .collect();
        versions.sort();
        versions
    }

    fn record(user: &str, version: u64) -> UserRecord {
        let mut r = UserRecord::new(user);
        r.version = version;
        r
    }

    #[test]
    fn a_hot_user_holds_one_pending_record_and_one_drain() {
        let input = FanoutInput::default();
        assert!(input.offer(vec![record("hot", 1)], &free).drain);
        for v in 2..10_000 {
            assert!(
                !input.offer(vec![record("hot", v)], &free).drain,
                "one drain at a time"
            );
        }
        assert!(!input.offer(vec![record("hot", 5)], &free).drain, "stale");
        assert!(!input.offer(vec![record("cold", 1)], &free).drain);
        let (batch, more) = input.take_batch();
        assert!(!more);
        let versions = versions(&batch);
        assert_eq!(
            versions,
            vec![("cold".to_string(), 1), ("hot".to_string(), 9_999)]
        );
        assert!(batch.iter().all(|p| p.trail.is_empty()), "no change stream");
        // Drained: the next change schedules a drain again.
        assert!(input.offer(vec![record("hot", 10_000)], &free).drain);
    }

    #[test]
    fn change_streams_keep_the_trail_up_to_its_bound() {
        let input = FanoutInput::default();
        input.set_streams(true);
        for v in 1..=(MAX_TRAIL as u64 + 10) {
            input.offer(vec![record("hot", v)], &free);
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
        assert!(input.offer(records, &free).drain);
        let (first, more) = input.take_batch();
        assert_eq!((first.len(), more), (MAX_DRAIN_BATCH, true));
        assert!(
            !input.offer(vec![record("late", 1)], &free).drain,
            "a drain is still due"
        );
        let (second, more) = input.take_batch();
        assert_eq!((second.len(), more), (6, false));
    }

    /// A bucket of `burst` tokens refilled one per `every` of time passed in.
    struct Bucket {
        tokens: std::cell::Cell<u32>,
    }

    impl Bucket {
        fn pace(&self, _: &str) -> Result<(), Duration> {
            match self.tokens.get() {
                0 => Err(Duration::from_millis(200)),
                n => {
                    self.tokens.set(n - 1);
                    Ok(())
                }
            }
        }
    }

    #[test]
    fn a_user_past_its_rate_is_held_coalesced_and_released_in_order() {
        let input = FanoutInput::default();
        let bucket = Bucket {
            tokens: std::cell::Cell::new(1),
        };
        let pace = |u: &str| bucket.pace(u);
        let first = input.offer(vec![record("hot", 1)], &pace);
        assert_eq!(
            first,
            Offered {
                drain: true,
                held: vec![]
            }
        );
        // Pending already: coalesces without a token.
        assert!(!input.offer(vec![record("hot", 2)], &pace).drain);
        let (batch, _) = input.take_batch();
        assert_eq!(batch[0].latest.version, 2);

        // No token left: held, once, with the wait.
        let held = input.offer(vec![record("hot", 3)], &pace);
        assert_eq!(
            held,
            Offered {
                drain: false,
                held: vec![("hot".into(), Duration::from_millis(200))]
            }
        );
        // Later changes coalesce into the held one (no second timer), stale ones go.
        assert_eq!(
            input.offer(vec![record("hot", 5)], &pace),
            Offered::default()
        );
        assert_eq!(
            input.offer(vec![record("hot", 4)], &pace),
            Offered::default()
        );
        // Other users are not held back.
        assert!(input.offer(vec![record("cold", 1)], &free).drain);
        assert_eq!(input.held(), 1);
        assert_eq!(
            input.release("hot", &pace),
            Released::Wait(Duration::from_millis(200))
        );
        bucket.tokens.set(1);
        // A drain is still due for "cold": no second one.
        assert_eq!(input.release("hot", &pace), Released::Pending(false));
        assert_eq!(input.release("hot", &pace), Released::Nothing);
        let (batch, more) = input.take_batch();
        assert!(!more);
        let versions = versions(&batch);
        assert_eq!(versions, vec![("cold".into(), 1), ("hot".into(), 5)]);
        assert_eq!(input.held(), 0);
    }

    #[test]
    fn a_release_alone_schedules_a_drain() {
        let input = FanoutInput::default();
        let none = |_: &str| Err(Duration::from_millis(10));
        let held = input.offer(vec![record("hot", 1)], &none);
        assert_eq!(held.held.len(), 1);
        assert!(!held.drain);
        assert_eq!(input.release("hot", &free), Released::Pending(true));
        let (batch, _) = input.take_batch();
        assert_eq!(batch[0].latest.version, 1);
    }

    #[test]
    fn held_changes_keep_the_trail_for_change_streams() {
        let input = FanoutInput::default();
        input.set_streams(true);
        let none = |_: &str| Err(Duration::from_millis(10));
        // Both changes are public (`public_at` unset): the replaced one is kept.
        input.offer(vec![record("hot", 1)], &none);
        input.offer(vec![record("hot", 2)], &none);
        input.release("hot", &free);
        let (batch, _) = input.take_batch();
        assert_eq!(batch[0].latest.version, 2);
        assert_eq!(batch[0].trail.len(), 1);
        assert_eq!(batch[0].trail[0].version, 1);
    }
}
