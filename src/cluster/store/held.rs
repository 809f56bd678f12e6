//! What this node holds in cluster mode: its users' last known records, the changes made
//! while Redis could not be written, and its lingering sessions' deadlines.
//!
//! Pure bookkeeping with time passed in (no Redis, no async): the Redis store consults it
//! before a write (the lowest version Redis may assign), after one (what to remember), when
//! a write fails (keep the change until Redis returns) and when it re-asserts (what to write
//! again).

use std::collections::HashMap;

use crate::presence::{Choice, UserRecord};
use crate::store::linger::LingerIndex;
use crate::store::{apply_to_record, Op, Outcome, StoreError};

/// A user this node holds sessions of (or held, with changes not yet written).
#[derive(Debug)]
struct HeldUser {
    /// The last record known (from Redis, or changed locally while Redis was unreachable).
    record: UserRecord,
    /// A status chosen while Redis was unreachable (with when it was chosen), to write when
    /// it returns unless a later choice reached Redis meanwhile.
    unwritten_status: Option<Choice>,
    /// Whether the sessions changed while Redis was unreachable.
    unwritten: bool,
}

/// Whether Redis's record (at `stored_version`) is below a version this node already handed
/// out (`min_version`, from `Held::min_version`, is one above the highest): then it is
/// written even when the op changes nothing, so this node's watchers, who saw those
/// provisional versions, see it too.
pub fn behind(stored_version: u64, min_version: u64) -> bool {
    stored_version.saturating_add(1) < min_version
}

#[derive(Debug)]
pub struct Held {
    /// Whose sessions count as held: this node's.
    node_id: String,
    users: HashMap<String, HeldUser>,
    /// This node's lingering sessions: only the node that held a session knows its grace.
    lingering: LingerIndex,
    /// `PRESENCE_MAX_LINGERING_PER_USER`, applied by the re-assertions too.
    max_lingering: usize,
}

/// What re-asserting one user writes, from what the node holds of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reassertion {
    /// The node's sessions of the user (none when it holds nothing of the user) and a
    /// status chosen while Redis was unreachable.
    pub op: Op,
    /// Whether the node holds anything of the user.
    pub held: bool,
    /// Whether a change made while Redis was unreachable waits to be written.
    pub unwritten: bool,
}

impl Held {
    pub fn new(node_id: &str) -> Self {
        Self {
            max_lingering: usize::MAX,
            node_id: node_id.to_owned(),
            users: HashMap::new(),
            lingering: LingerIndex::default(),
        }
    }

    /// At most `max` lingering sessions per user after a re-assertion (as after an end).
    pub fn set_max_lingering(&mut self, max: usize) {
        self.max_lingering = max;
    }

    /// The users held, in no order.
    pub fn user_ids(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Remembers `record`, what Redis has after `op` was written (or found nothing to
    /// change): held while it has a session of this node, forgotten otherwise.
    pub fn hold(&mut self, record: &UserRecord, op: &Op) {
        if let Op::End {
            user_id,
            linger_until_ms: Some(until),
            ..
        } = op
        {
            self.lingering.insert(*until, user_id);
        }
        if !self.is_ours(record) {
            self.users.remove(&record.user_id);
            return;
        }
        let entry = self
            .users
            .entry(record.user_id.clone())
            .or_insert_with(|| HeldUser {
                record: record.clone(),
                unwritten_status: None,
                unwritten: false,
            });
        // A newer record may have arrived by pub/sub (`observe`) since this write; it
        // already includes the write, so it is kept.
        if record.version >= entry.record.version {
            entry.record = record.clone();
        }
        entry.unwritten = false;
        entry.unwritten_status = None;
    }

    /// Applies `op` while it cannot be written (`cause`): kept here, with a provisional
    /// version, until the next re-assert writes it. Only changes to users already held
    /// and that do not need Redis's answer are kept: a new session, a sweep or a re-assert
    /// fails with `cause`.
    pub fn apply_unwritten(&mut self, op: &Op, now_ms: u64, cause: StoreError) -> Outcome {
        let Some(user) = self.users.get_mut(op.user_id()) else {
            return Err(cause);
        };
        match op {
            Op::SetStatus { status, text, .. } => {
                user.unwritten_status = Some(Choice {
                    status: *status,
                    text: text.clone(),
                    at_ms: now_ms,
                });
            }
            Op::End { .. } | Op::ExpireLingering { .. } => user.unwritten = true,
            Op::Open { .. } | Op::RemoveNode { .. } | Op::SyncNode { .. } => return Err(cause),
        }
        let changed = apply_to_record(&mut user.record, op, now_ms)?;
        let record = user.record.clone();
        if let Op::End {
            user_id,
            linger_until_ms: Some(until),
            ..
        } = op
        {
            self.lingering.insert(*until, user_id);
        }
        Ok(changed.then_some(record))
    }

    /// The lowest version Redis may assign next for this user: above any provisional
    /// version handed out while Redis was unreachable.
    pub fn min_version(&self, user_id: &str) -> u64 {
        self.users
            .get(user_id)
            .map(|u| u.record.version + 1)
            .unwrap_or(0)
    }

    /// Takes in a newer record of a held user (a change event from another node, or a
    /// read), except this node's sessions: what it holds of them is what a re-assert
    /// writes, and Redis may have lost them (a failover, a sweep). While a change of this
    /// node waits to be written only its version is taken, so provisional versions stay
    /// above it and the change is not lost.
    pub fn observe(&mut self, record: &UserRecord) {
        let node_id = &self.node_id;
        let Some(user) = self.users.get_mut(&record.user_id) else {
            return;
        };
        if record.version <= user.record.version {
            return;
        }
        if !user.unwritten && user.unwritten_status.is_none() {
            let mut observed = record.clone();
            observed.sessions.retain(|s| s.node_id != *node_id);
            // A lingering session of ours whose device reconnected elsewhere was replaced
            // (as `UserRecord::sync_node_sessions` has it).
            let taken: Vec<String> = observed.sessions.iter().map(|s| s.device.clone()).collect();
            observed.sessions.extend(
                user.record
                    .sessions
                    .iter()
                    .filter(|s| s.node_id == *node_id)
                    .filter(|s| s.is_live() || !taken.contains(&s.device))
                    .cloned(),
            );
            user.record = observed;
        } else {
            user.record.version = record.version;
        }
    }

    /// The op that removes every session of this node from `user_id`'s record.
    pub fn leave_op(&self, user_id: &str) -> Op {
        Op::SyncNode {
            user_id: user_id.to_owned(),
            node_id: self.node_id.clone(),
            sessions: Vec::new(),
            chosen: None,
            known: None,
            max_lingering: self.max_lingering,
        }
    }

    /// What re-asserting `user_id` writes: this node's sessions of it, a status chosen
    /// while Redis was unreachable (applied only if Redis has no later choice), and the
    /// status last known (restored if Redis lost the record). For a user not held, the op removes this node's sessions.
    pub fn reassertion(&self, user_id: &str) -> Reassertion {
        let Some(user) = self.users.get(user_id) else {
            return Reassertion {
                op: self.leave_op(user_id),
                held: false,
                unwritten: false,
            };
        };
        Reassertion {
            op: Op::SyncNode {
                user_id: user_id.to_owned(),
                node_id: self.node_id.clone(),
                sessions: user
                    .record
                    .sessions
                    .iter()
                    .filter(|s| s.node_id == self.node_id)
                    .cloned()
                    .collect(),
                chosen: user.unwritten_status.clone(),
                known: Some(user.record.choice()),
                max_lingering: self.max_lingering,
            },
            held: true,
            unwritten: user.unwritten || user.unwritten_status.is_some(),
        }
    }

    /// Takes out the users whose lingering session's grace ended at or before `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<String> {
        self.lingering.take_due(now_ms)
    }

    /// A due user whose expiry failed: tried again at the next reap, unless nothing of it is
    /// held any more (its lingering session was replaced or removed since), for then there
    /// is nothing left to expire.
    pub fn retry_expiry(&mut self, user_id: &str, now_ms: u64) {
        if self.users.contains_key(user_id) {
            self.lingering.insert(now_ms, user_id);
        }
    }

    /// When the last of this node's lingering sessions ends its grace.
    pub fn last_linger_deadline(&self) -> Option<u64> {
        self.lingering.last_deadline()
    }

    fn is_ours(&self, record: &UserRecord) -> bool {
        record.sessions.iter().any(|s| s.node_id == self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::SessionEntry;
    use crate::proto::Status;

    const NODE: &str = "n1";
    const T0: u64 = 1_800_000_000_000;

    fn session(id: &str, node_id: &str) -> SessionEntry {
        SessionEntry {
            session_id: id.into(),
            device: format!("device-{id}"),
            node_id: node_id.into(),
            connected_at_ms: T0,
            linger_until_ms: None,
        }
    }

    fn open(user: &str, id: &str, node_id: &str) -> Op {
        Op::Open {
            user_id: user.into(),
            session: session(id, node_id),
            initial: None,
            max_live_sessions: 10,
        }
    }

    fn end(user: &str, id: &str, linger_until_ms: Option<u64>) -> Op {
        Op::End {
            user_id: user.into(),
            session_id: id.into(),
            linger_until_ms,
            max_lingering: 16,
        }
    }

    fn busy(user: &str) -> Op {
        Op::SetStatus {
            user_id: user.into(),
            status: Status::Busy,
            text: "focus".into(),
        }
    }

    fn away(user: &str) -> Op {
        Op::SetStatus {
            user_id: user.into(),
            status: Status::Away,
            text: String::new(),
        }
    }

    /// What Redis would hold after `ops`, as the Redis store would see it (a write changes
    /// the record and Redis assigns a version).
    fn written(record: &mut UserRecord, op: &Op, now_ms: u64) -> UserRecord {
        apply_to_record(record, op, now_ms).unwrap();
        record.clone()
    }

    fn choice(status: Status, text: &str, at_ms: u64) -> Choice {
        Choice {
            status,
            text: text.into(),
            at_ms,
        }
    }

    fn down() -> StoreError {
        StoreError::Unavailable("down".into())
    }

    /// A node holding alice's session s1 (written to Redis).
    fn holding_alice() -> (Held, UserRecord) {
        let mut held = Held::new(NODE);
        let mut record = UserRecord::new("alice");
        let op = open("alice", "s1", NODE);
        let after = written(&mut record, &op, T0);
        held.hold(&after, &op);
        (held, after)
    }

    #[test]
    fn holds_users_while_they_have_a_session_here() {
        let (mut held, mut record) = holding_alice();
        assert_eq!(held.user_ids(), vec!["alice"]);
        assert_eq!(held.min_version("alice"), record.version + 1);
        assert_eq!(
            held.min_version("bob"),
            0,
            "anything goes for a user not held"
        );

        // Another node's session does not make a user held.
        let mut bob = UserRecord::new("bob");
        let op = open("bob", "s9", "n2");
        held.hold(&written(&mut bob, &op, T0), &op);
        assert_eq!(held.user_ids(), vec!["alice"]);

        // The last session here ends: forgotten.
        let op = end("alice", "s1", None);
        held.hold(&written(&mut record, &op, T0 + 1), &op);
        assert!(held.user_ids().is_empty());
        assert!(!held.reassertion("alice").held);
    }

    #[test]
    fn a_newer_record_observed_meanwhile_is_kept() {
        let (mut held, record) = holding_alice();
        let mut newer = record.clone();
        newer.version += 10;
        newer.status_text = "from another node".into();
        held.observe(&newer);
        // The write's own answer arrives later than the event that includes it.
        held.hold(&record, &open("alice", "s1", NODE));
        assert_eq!(held.min_version("alice"), newer.version + 1);
        let Op::SyncNode { known, .. } = held.reassertion("alice").op else {
            panic!("a re-assert syncs the node");
        };
        assert_eq!(known, Some(choice(Status::Online, "from another node", 0)));
    }

    #[test]
    fn an_observed_record_brings_other_nodes_sessions_but_not_its_own() {
        let (mut held, record) = holding_alice();
        // Redis lost this node's session (a failover), then n2 added one.
        let mut lost = record.clone();
        lost.sessions.clear();
        let op = open("alice", "s9", "n2");
        let observed = written(&mut lost, &op, T0 + 10);
        held.observe(&observed);
        assert_eq!(held.min_version("alice"), observed.version + 1);
        let Op::SyncNode { sessions, .. } = held.reassertion("alice").op else {
            panic!("a re-assert syncs the node");
        };
        assert_eq!(sessions, vec![session("s1", NODE)], "still re-asserted");
        // A change kept during an outage builds on both.
        let kept = held
            .apply_unwritten(&busy("alice"), T0 + 20, down())
            .unwrap()
            .expect("a change");
        let mut ids: Vec<&str> = kept
            .sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec!["s1", "s9"]);
    }

    #[test]
    fn an_observed_reconnect_elsewhere_replaces_a_lingering_session_of_ours() {
        let (mut held, mut record) = holding_alice();
        let op = end("alice", "s1", Some(T0 + 3_000));
        held.hold(&written(&mut record, &op, T0 + 1), &op);
        // The same device reconnected on n2, which replaced the lingering session.
        let mut moved = session("s9", "n2");
        moved.device = "device-s1".into();
        let op = Op::Open {
            user_id: "alice".into(),
            session: moved,
            initial: None,
            max_live_sessions: 10,
        };
        let observed = written(&mut record, &op, T0 + 2);
        assert_eq!(observed.sessions.len(), 1);
        held.observe(&observed);
        let mut after = observed.clone();
        let again = held.reassertion("alice");
        assert!(
            !apply_to_record(&mut after, &again.op, T0 + 3).unwrap(),
            "nothing to re-assert"
        );
    }

    #[test]
    fn changes_of_held_users_are_kept_while_redis_is_unreachable() {
        let (mut held, record) = holding_alice();
        let kept = held
            .apply_unwritten(&busy("alice"), T0 + 5, down())
            .unwrap()
            .expect("a change");
        assert_eq!(kept.status, Status::Busy);
        assert!(
            kept.version > record.version,
            "a provisional version, above Redis's"
        );
        assert_eq!(held.min_version("alice"), kept.version + 1);

        let again = held.reassertion("alice");
        assert!(again.held && again.unwritten);
        assert_eq!(
            again.op,
            Op::SyncNode {
                user_id: "alice".into(),
                node_id: NODE.into(),
                sessions: vec![session("s1", NODE)],
                chosen: Some(choice(Status::Busy, "focus", T0 + 5)),
                known: Some(choice(Status::Busy, "focus", T0 + 5)),
                max_lingering: usize::MAX,
            }
        );

        // Once written, nothing waits any more.
        held.hold(&kept, &again.op);
        let after = held.reassertion("alice");
        assert!(after.held && !after.unwritten);
    }

    #[test]
    fn an_end_while_unreachable_is_kept_and_lingers() {
        let (mut held, _) = holding_alice();
        let kept = held
            .apply_unwritten(&end("alice", "s1", Some(T0 + 3_000)), T0 + 1, down())
            .unwrap()
            .expect("a change");
        assert!(!kept.sessions[0].is_live());
        assert!(held.reassertion("alice").unwritten);
        assert_eq!(held.last_linger_deadline(), Some(T0 + 3_000));
        assert!(held.take_due(T0 + 2_999).is_empty());
        assert_eq!(held.take_due(T0 + 3_000), vec!["alice"]);
    }

    #[test]
    fn what_needs_redis_fails_with_the_cause() {
        let (mut held, _) = holding_alice();
        for op in [
            open("alice", "s2", NODE),
            Op::RemoveNode {
                user_id: "alice".into(),
                node_id: "n2".into(),
            },
            held.leave_op("alice"),
            busy("bob"),
        ] {
            assert_eq!(
                held.apply_unwritten(&op, T0 + 1, down()),
                Err(down()),
                "{op:?}"
            );
        }
        let contended = StoreError::Contended("alice".into());
        assert_eq!(
            held.apply_unwritten(&open("alice", "s2", NODE), T0 + 1, contended.clone()),
            Err(contended)
        );
        assert!(!held.reassertion("alice").unwritten, "nothing was kept");
    }

    #[test]
    fn an_observed_record_does_not_overwrite_an_unwritten_change() {
        let (mut held, record) = holding_alice();
        let kept = held
            .apply_unwritten(&busy("alice"), T0 + 1, down())
            .unwrap()
            .unwrap();
        let mut newer = record.clone();
        newer.version = kept.version + 100;
        held.observe(&newer);
        assert_eq!(
            held.min_version("alice"),
            newer.version + 1,
            "stays above it"
        );
        let again = held.reassertion("alice");
        assert!(again.unwritten);
        let Op::SyncNode { chosen, .. } = again.op else {
            panic!("a re-assert syncs the node");
        };
        assert_eq!(chosen, Some(choice(Status::Busy, "focus", T0 + 1)));

        // An older event changes nothing.
        let v = held.min_version("alice");
        held.observe(&record);
        assert_eq!(held.min_version("alice"), v);
    }

    #[test]
    fn a_choice_kept_during_an_outage_is_not_written_over_a_later_one() {
        let (mut held, stored) = holding_alice();
        // Cut off from Redis, alice chooses AWAY through this node...
        let kept = held
            .apply_unwritten(&away("alice"), T0 + 100, down())
            .unwrap()
            .expect("a change");
        // ...and BUSY later through n2, which reaches Redis.
        let mut redis = stored.clone();
        let op = open("alice", "s2", "n2");
        written(&mut redis, &op, T0 + 150);
        written(&mut redis, &busy("alice"), T0 + 200);

        let again = held.reassertion("alice");
        assert!(again.unwritten);
        let mut after = redis.clone();
        assert!(
            !apply_to_record(&mut after, &again.op, T0 + 300).unwrap(),
            "the later choice stays, and nothing else differs"
        );
        assert_eq!(after.choice(), choice(Status::Busy, "focus", T0 + 200));
        // Redis's version is above the provisional one: a plain read reaches the watchers.
        assert!(redis.version > kept.version);
        assert!(!behind(redis.version, held.min_version("alice")));
        // Had Redis's clock been behind this node's, the record would be written anyway.
        assert!(behind(kept.version - 5, held.min_version("alice")));

        // Once re-asserted, the node holds Redis's record: the later choice.
        held.hold(&after, &again.op);
        let now = held.reassertion("alice");
        assert!(!now.unwritten);
        let Op::SyncNode { known, chosen, .. } = now.op else {
            panic!("a re-assert syncs the node");
        };
        assert_eq!(chosen, None);
        assert_eq!(known, Some(choice(Status::Busy, "focus", T0 + 200)));
    }

    #[test]
    fn a_choice_kept_during_an_outage_is_written_when_it_is_the_latest() {
        let (mut held, stored) = holding_alice();
        let mut redis = stored.clone();
        written(&mut redis, &busy("alice"), T0 + 100);
        held.apply_unwritten(&away("alice"), T0 + 200, down())
            .unwrap()
            .expect("a change");
        let mut after = redis.clone();
        assert!(apply_to_record(&mut after, &held.reassertion("alice").op, T0 + 300).unwrap());
        assert_eq!(after.choice(), choice(Status::Away, "", T0 + 200));
        assert!(after.version > redis.version);
    }

    #[test]
    fn only_a_record_below_the_versions_handed_out_is_behind() {
        assert!(!behind(10, 0), "nothing handed out");
        assert!(!behind(10, 11), "in step with Redis");
        assert!(behind(10, 12));
        assert!(!behind(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_user_not_held_is_left() {
        let held = Held::new(NODE);
        assert_eq!(
            held.reassertion("carol"),
            Reassertion {
                op: held.leave_op("carol"),
                held: false,
                unwritten: false,
            }
        );
        assert_eq!(
            held.leave_op("carol"),
            Op::SyncNode {
                user_id: "carol".into(),
                node_id: NODE.into(),
                sessions: Vec::new(),
                chosen: None,
                known: None,
                max_lingering: usize::MAX,
            }
        );
    }

    #[test]
    fn a_failed_expiry_is_retried_only_while_the_user_is_held() {
        let (mut held, mut record) = holding_alice();
        let op = end("alice", "s1", Some(T0 + 100));
        held.hold(&written(&mut record, &op, T0 + 1), &op);
        assert_eq!(held.take_due(T0 + 100), vec!["alice"]);
        held.retry_expiry("alice", T0 + 100);
        held.retry_expiry("bob", T0 + 100);
        assert_eq!(held.take_due(T0 + 100), vec!["alice"], "bob was never held");

        let expire = Op::ExpireLingering {
            user_id: "alice".into(),
        };
        held.hold(&written(&mut record, &expire, T0 + 100), &expire);
        held.retry_expiry("alice", T0 + 100);
        assert!(held.take_due(u64::MAX).is_empty(), "nothing left to expire");
    }
}
