//! The node's live sessions. Liveness needs no timer task per session: the reader moves a
//! deadline on every frame and one sweeper checks all deadlines periodically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use ractor::ActorRef;
use tokio::sync::Notify;

use super::actor::{Expiry, SessionMsg};
use super::outbox::Outbox;
use crate::registry::SessionKey;

pub struct SessionSlot {
    pub user_id: String,
    pub session_id: String,
    pub actor: ActorRef<SessionMsg>,
    pub outbox: Arc<Outbox>,
    /// Unix ms after which the session is dead unless a frame arrives (the hello timeout
    /// until the first frame).
    pub deadline_ms: Arc<AtomicU64>,
    /// When the credential stops being valid (jwt `exp` + leeway).
    pub credential_expires_ms: Option<u64>,
    /// When the session is asked to reconnect to spread load (max session age, jittered);
    /// `u64::MAX` once asked, or never.
    pub rebalance_at_ms: AtomicU64,
    /// Not subject to the watch policy (`open`, or the `presence:read` scope): never
    /// revalidated.
    pub watch_exempt: bool,
}

#[derive(Default)]
pub struct SessionTable {
    slots: DashMap<SessionKey, SessionSlot>,
    /// user id -> how many of the node's sessions are that user's (for `users online`).
    users: DashMap<String, u32>,
    /// Signalled when the table becomes empty (drain waits on it).
    emptied: Notify,
}

impl SessionTable {
    pub fn insert(&self, key: SessionKey, slot: SessionSlot) {
        let mut count = self.users.entry(slot.user_id.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            metrics::gauge!(crate::metrics::USERS_ONLINE).increment(1.0);
        }
        drop(count);
        self.slots.insert(key, slot);
        metrics::gauge!(crate::metrics::SESSIONS).increment(1.0);
    }

    /// Removes a session; the one caller that gets `Some` does the cleanup.
    pub fn remove(&self, key: SessionKey) -> Option<SessionSlot> {
        let slot = self.slots.remove(&key).map(|(_, slot)| slot);
        if let Some(slot) = &slot {
            metrics::gauge!(crate::metrics::SESSIONS).decrement(1.0);
            let gone = self
                .users
                .remove_if_mut(&slot.user_id, |_, count| {
                    *count -= 1;
                    *count == 0
                })
                .is_some();
            if gone {
                metrics::gauge!(crate::metrics::USERS_ONLINE).decrement(1.0);
            }
        }
        if self.slots.is_empty() {
            self.emptied.notify_waiters();
        }
        slot
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Distinct users with a session here.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sessions whose deadline, credential or age has passed. A session is reported for
    /// rebalancing once.
    pub fn expired(&self, now_ms: u64) -> Vec<(ActorRef<SessionMsg>, Expiry)> {
        self.slots
            .iter()
            .filter_map(|slot| {
                if slot.credential_expires_ms.is_some_and(|exp| exp <= now_ms) {
                    Some((slot.actor.clone(), Expiry::CredentialExpired))
                } else if slot.deadline_ms.load(Ordering::Relaxed) <= now_ms {
                    Some((slot.actor.clone(), Expiry::Silent))
                } else if slot.rebalance_at_ms.load(Ordering::Relaxed) <= now_ms {
                    slot.rebalance_at_ms.store(u64::MAX, Ordering::Relaxed);
                    Some((slot.actor.clone(), Expiry::MaxAge))
                } else {
                    None
                }
            })
            .collect()
    }

    /// The session an actor serves (a scan: only used after a crash).
    pub fn key_of_actor(&self, actor: ractor::ActorId) -> Option<SessionKey> {
        self.slots
            .iter()
            .find(|slot| slot.actor.get_id() == actor)
            .map(|slot| *slot.key())
    }

    /// The actors of a user's sessions here (only `session_id` when given).
    pub fn actors_of(&self, user_id: &str, session_id: Option<&str>) -> Vec<ActorRef<SessionMsg>> {
        self.slots
            .iter()
            .filter(|slot| {
                slot.user_id == user_id && session_id.is_none_or(|id| slot.session_id == id)
            })
            .map(|slot| slot.actor.clone())
            .collect()
    }

    /// (user, session id) of every session here.
    pub fn list(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .map(|slot| (slot.user_id.clone(), slot.session_id.clone()))
            .collect()
    }

    /// (user, actor, outbox) of every session subject to the watch policy (revalidation).
    pub fn watchers(&self) -> Vec<(String, ActorRef<SessionMsg>, Arc<Outbox>)> {
        self.slots
            .iter()
            .filter(|slot| !slot.watch_exempt)
            .map(|slot| {
                (
                    slot.user_id.clone(),
                    slot.actor.clone(),
                    slot.outbox.clone(),
                )
            })
            .collect()
    }

    /// Every session's actor (for drain).
    pub fn actors(&self) -> Vec<ActorRef<SessionMsg>> {
        self.slots.iter().map(|slot| slot.actor.clone()).collect()
    }

    /// Waits until no session is left.
    pub async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.slots.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}
