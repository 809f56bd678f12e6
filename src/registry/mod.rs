//! The registry actor: which local sessions watch which users.
//!
//! It fans a changed record out to the local watchers of its user, computing the two views
//! (public and owner) once per change. The first local watcher of a user and the last one
//! leaving are the interest changes that cluster mode turns into channel (un)subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

mod input;
mod interest;
pub use input::{FanoutInput, Released};
pub use interest::Interest;

use crate::presence::UserRecord;
use crate::proto::Presence;
use crate::session::outbox::{Outbox, ViewPair};

/// Local key of a session on this node.
pub type SessionKey = u64;

pub enum RegistryMsg {
    /// Adds `session` as a watcher of `user_ids`; replies once registered, so a snapshot read
    /// after the reply cannot miss a change fanned out later.
    Watch {
        session: SessionKey,
        outbox: Arc<Outbox>,
        user_ids: Vec<String>,
        reply: RpcReplyPort<()>,
    },
    /// Removes `session` as a watcher of `user_ids`.
    Unwatch {
        session: SessionKey,
        user_ids: Vec<String>,
    },
    /// Changed records to fan out.
    Publish(Vec<UserRecord>),
    /// The node's coalesced input (`Node::publish`); sent once when the node is made.
    Attach(Arc<FanoutInput>),
    /// Fan out what is pending in the attached input (at most one in the mailbox).
    Drain,
    /// Number of (user, watching session) pairs; for tests and stats.
    Count(RpcReplyPort<(usize, usize)>),
    /// Adds a backend's change stream (`WatchChanges`); replies once registered.
    WatchChanges(ChangeWatcher, RpcReplyPort<()>),
    /// Removes a change stream.
    UnwatchChanges(u64),
}

/// A backend's stream of every change (admin `WatchChanges`). Unlike a session it gets every
/// change, not the latest: its queue is bounded and a stream that falls that far behind is
/// ended (`overflowed`) rather than buffered without bound.
pub struct ChangeWatcher {
    pub id: u64,
    /// Only these users; `None`: everyone.
    pub users: Option<HashSet<String>>,
    pub tx: tokio::sync::mpsc::Sender<Presence>,
    pub overflowed: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Registry;

#[derive(Default)]
pub struct RegistryState {
    /// user id -> the local sessions watching it.
    watchers: HashMap<String, HashMap<SessionKey, Arc<Outbox>>>,
    /// Cluster mode: where first-watcher / last-watcher changes go (channel subscriptions).
    interest: Option<Arc<Interest>>,
    /// Backends' change streams.
    change_watchers: Vec<ChangeWatcher>,
    /// Where `Node::publish` leaves changed records, coalesced per user.
    input: Option<Arc<FanoutInput>>,
}

impl RegistryState {
    fn watch(&mut self, session: SessionKey, outbox: &Arc<Outbox>, user_ids: Vec<String>) {
        for user in user_ids {
            if let (Some(interest), false) = (&self.interest, self.watchers.contains_key(&user)) {
                interest.add(&user);
            }
            self.watchers
                .entry(user)
                .or_default()
                .insert(session, outbox.clone());
        }
    }

    fn unwatch(&mut self, session: SessionKey, user_ids: &[String]) {
        for user in user_ids {
            if let Some(sessions) = self.watchers.get_mut(user) {
                sessions.remove(&session);
                if sessions.is_empty() {
                    self.watchers.remove(user);
                    self.drop_interest_if_unused(user);
                }
            }
        }
    }

    /// Whether a local session or a change stream still needs events of `user`.
    fn interested(&self, user: &str) -> bool {
        self.watchers.contains_key(user)
            || self
                .change_watchers
                .iter()
                .any(|w| w.users.as_ref().is_some_and(|users| users.contains(user)))
    }

    fn drop_interest_if_unused(&self, user: &str) {
        if let (Some(interest), false) = (&self.interest, self.interested(user)) {
            interest.remove(user);
        }
    }

    fn watch_changes(&mut self, watcher: ChangeWatcher) {
        if let Some(interest) = &self.interest {
            match &watcher.users {
                Some(users) => users.iter().for_each(|u| interest.add(u)),
                None => interest.add_everyone(),
            }
        }
        self.change_watchers.push(watcher);
        self.streams_changed();
    }

    /// Tells the input whether replaced records must be kept for change streams.
    fn streams_changed(&self) {
        if let Some(input) = &self.input {
            input.set_streams(!self.change_watchers.is_empty());
        }
    }

    /// Fans out one batch of the input; returns whether more is pending.
    fn drain(&mut self) -> bool {
        let Some(input) = self.input.clone() else {
            return false;
        };
        let (batch, more) = input.take_batch();
        let mut latest = Vec::with_capacity(batch.len());
        for pending in batch {
            if pending.trail_overflowed {
                self.overflow_change_watchers_of(&pending.latest.user_id);
            }
            if !self.change_watchers.is_empty() {
                for older in &pending.trail {
                    self.publish_to_change_watchers(older, &older.public_view());
                }
            }
            latest.push(pending.latest);
        }
        self.publish(latest);
        more
    }

    /// Ends the change streams wanting `user` (they missed changes of it).
    fn overflow_change_watchers_of(&mut self, user: &str) {
        let ended: Vec<u64> = self
            .change_watchers
            .iter()
            .filter(|w| w.users.as_ref().is_none_or(|u| u.contains(user)))
            .map(|w| {
                w.overflowed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                w.id
            })
            .collect();
        for id in ended {
            self.unwatch_changes(id);
        }
    }

    fn unwatch_changes(&mut self, id: u64) {
        let Some(pos) = self.change_watchers.iter().position(|w| w.id == id) else {
            return;
        };
        let watcher = self.change_watchers.swap_remove(pos);
        self.streams_changed();
        match &watcher.users {
            Some(users) => users.iter().for_each(|u| self.drop_interest_if_unused(u)),
            None => {
                if let Some(interest) = &self.interest {
                    interest.remove_everyone();
                }
            }
        }
    }

    /// Hands a change to the change streams that want it; a stream whose queue is full is
    /// ended. A stream sees users as everyone but the user does, so a change others cannot
    /// see (anything an INVISIBLE user does) is not one for it either.
    fn publish_to_change_watchers(&mut self, record: &UserRecord, view: &Presence) {
        let mut ended = Vec::new();
        for w in &self.change_watchers {
            if w.users
                .as_ref()
                .is_some_and(|u| !u.contains(&record.user_id))
            {
                continue;
            }
            match w.tx.try_send(view.clone()) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    w.overflowed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    ended.push(w.id);
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => ended.push(w.id),
            }
        }
        for id in ended {
            self.unwatch_changes(id);
        }
    }

    fn publish(&mut self, records: Vec<UserRecord>) {
        for record in records {
            let to_streams = !self.change_watchers.is_empty() && record.public_changed();
            if !to_streams && !self.watchers.contains_key(&record.user_id) {
                continue;
            }
            // The two views, once per change; every path out of the node takes one of them.
            let public = record.public_view();
            if to_streams {
                self.publish_to_change_watchers(&record, &public);
            }
            let Some(sessions) = self.watchers.get(&record.user_id) else {
                continue;
            };
            let started = std::time::Instant::now();
            let pair = ViewPair::new(public, record.owner_view());
            for outbox in sessions.values() {
                outbox.offer(&pair);
            }
            metrics::histogram!(crate::metrics::FANOUT_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
    }

    fn count(&self) -> (usize, usize) {
        let pairs = self.watchers.values().map(HashMap::len).sum();
        (self.watchers.len(), pairs)
    }
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    /// Cluster mode: the interest set the Redis bridge follows.
    type Arguments = Option<Arc<Interest>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        interest: Option<Arc<Interest>>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RegistryState {
            interest,
            ..RegistryState::default()
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Watch {
                session,
                outbox,
                user_ids,
                reply,
            } => {
                state.watch(session, &outbox, user_ids);
                // The session may have gone meanwhile; nothing to do then.
                let _ = reply.send(());
            }
            RegistryMsg::Unwatch { session, user_ids } => state.unwatch(session, &user_ids),
            RegistryMsg::Publish(records) => state.publish(records),
            RegistryMsg::Attach(input) => {
                state.input = Some(input);
                state.streams_changed();
            }
            RegistryMsg::Drain => {
                if state.drain() {
                    // More pending: after what else is in the mailbox (watch registrations).
                    let _ = myself.cast(RegistryMsg::Drain);
                }
            }
            RegistryMsg::Count(reply) => {
                let _ = reply.send(state.count());
            }
            RegistryMsg::WatchChanges(watcher, reply) => {
                state.watch_changes(watcher);
                let _ = reply.send(());
            }
            RegistryMsg::UnwatchChanges(id) => state.unwatch_changes(id),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::SessionEntry;
    use crate::proto::Status;

    #[test]
    fn last_watcher_leaving_forgets_the_user() {
        let mut state = RegistryState::default();
        let a = Outbox::new("a", 8);
        let b = Outbox::new("b", 8);
        state.watch(1, &a, vec!["bob".into(), "carol".into()]);
        state.watch(2, &b, vec!["bob".into()]);
        assert_eq!(state.count(), (2, 3));
        state.unwatch(1, &["bob".into(), "carol".into()]);
        assert_eq!(state.count(), (1, 1));
        state.unwatch(2, &["bob".into()]);
        assert_eq!(state.count(), (0, 0));
    }

    #[test]
    fn publish_reaches_only_watchers_of_that_user() {
        let mut state = RegistryState::default();
        let a = Outbox::new("a", 8);
        let b = Outbox::new("b", 8);
        for (outbox, user) in [(&a, "bob"), (&b, "carol")] {
            outbox.begin_watch(&[user.to_string()]);
            outbox
                .complete_snapshot(1, vec![UserRecord::new(user).view(false)], Vec::new())
                .unwrap();
        }
        state.watch(1, &a, vec!["bob".into()]);
        state.watch(2, &b, vec!["carol".into()]);
        let mut bob = UserRecord::new("bob");
        bob.open_session(
            SessionEntry {
                session_id: "s".into(),
                device: "ios".into(),
                node_id: "n".into(),
                connected_at_ms: 1,
                linger_until_ms: None,
            },
            None,
            16,
            1_000,
        )
        .unwrap();
        state.publish(vec![bob]);
        assert_eq!(a.coalesced(), 0);
        // a: snapshot + one update queued; b: snapshot only.
        use futures::{FutureExt, StreamExt};
        let count = |o: &Arc<Outbox>| {
            let mut s = crate::session::outbox::OutboxStream::new(o.clone());
            let mut n = 0;
            while let Some(Some(_)) = s.next().now_or_never() {
                n += 1;
            }
            n
        };
        assert_eq!(count(&a), 2);
        assert_eq!(count(&b), 1);
    }

    #[test]
    fn change_streams_see_only_what_others_see() {
        let mut state = RegistryState::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        state.watch_changes(ChangeWatcher {
            id: 1,
            users: None,
            tx,
            overflowed: Arc::default(),
        });
        let entry = |id: &str| SessionEntry {
            session_id: id.into(),
            device: "ios".into(),
            node_id: "n".into(),
            connected_at_ms: 1,
            linger_until_ms: None,
        };
        let mut alice = UserRecord::new("alice");
        alice.open_session(entry("s1"), None, 16, 1_000).unwrap();
        state.publish(vec![alice.clone()]);
        alice.set_status(Status::Invisible, String::new(), 1_001);
        state.publish(vec![alice.clone()]);
        let frozen = alice.public_view();
        alice.set_status(Status::Invisible, "shh".into(), 1_002);
        alice.open_session(entry("s2"), None, 16, 1_003).unwrap();
        state.publish(vec![alice.clone()]);
        let seen: Vec<Presence> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(seen.len(), 2, "online, then offline: {seen:?}");
        assert_eq!(seen[1], frozen);
    }
}
