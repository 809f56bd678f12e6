//! The node's decision cache: one decision per (viewer, user) with an expiry, bounded in
//! size, shared by every session and call of a viewer; and the flights that collapse
//! concurrent identical questions into one authorizer call (a reconnect storm of one
//! viewer's devices must not become an authorizer storm).
//!
//! Time is passed in (`now_ms`, the node's clock), so expiry is tested by moving the clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Decision, PolicyError};

/// The answer of one flight: decisions in the order of the flight's ids.
pub type FlightResult = Option<Result<Arc<[Decision]>, PolicyError>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    decision: Decision,
    expires_at_ms: u64,
}

/// A pair some call is asking about right now: wait for that call's answer.
#[derive(Clone)]
struct InFlight {
    flight: u64,
    index: usize,
    answer: watch::Receiver<FlightResult>,
}

#[derive(Default)]
struct Inner {
    /// viewer -> user -> decision (nested, so lookups by `&str` need no allocation).
    entries: HashMap<String, HashMap<String, Entry>>,
    len: usize,
    /// viewer -> user -> the call asking about it.
    flights: HashMap<String, HashMap<String, InFlight>>,
}

/// How to answer one id of a request.
pub enum Plan {
    Cached(Decision),
    /// Another call is asking: its answer at `index`.
    Wait(watch::Receiver<FlightResult>, usize),
    /// Not known: this call must ask (it is registered as the pair's flight).
    Ask,
}

pub struct DecisionCache {
    ttl_ms: u64,
    max_entries: usize,
    inner: Mutex<Inner>,
    /// Bumped by every invalidation: an answer to a call started before it is not cached.
    generation: AtomicU64,
    next_flight: AtomicU64,
    /// Earliest expiry of a decision in use (or 0 after an invalidation): when revalidation
    /// has work to do.
    next_due_ms: AtomicU64,
    /// Signalled by invalidations, so revalidation runs at once.
    pub(crate) invalidated: tokio::sync::Notify,
}

/// The flight a call registered for the ids it must ask; answered (or failed) exactly once,
/// and unregistered when dropped.
pub struct Flight<'a> {
    cache: &'a DecisionCache,
    viewer: String,
    ids: Vec<String>,
    id: u64,
    generation: u64,
    answer: Option<watch::Sender<FlightResult>>,
}

impl DecisionCache {
    pub fn new(ttl_ms: u64, max_entries: usize) -> Self {
        Self {
            ttl_ms,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
            generation: AtomicU64::new(0),
            next_flight: AtomicU64::new(1),
            next_due_ms: AtomicU64::new(u64::MAX),
            invalidated: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of cached decisions (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unexpired decision of a pair, with its expiry.
    pub fn lookup(&self, viewer: &str, user: &str, now_ms: u64) -> Option<(Decision, u64)> {
        let inner = self.lock();
        let entry = inner.entries.get(viewer)?.get(user)?;
        (entry.expires_at_ms > now_ms).then_some((entry.decision, entry.expires_at_ms))
    }

    /// The expiry of each of `users`' unexpired decisions for `viewer` (one lock for all).
    pub fn expiries(&self, viewer: &str, users: &[String], now_ms: u64) -> Vec<Option<u64>> {
        let inner = self.lock();
        let cached = inner.entries.get(viewer);
        users
            .iter()
            .map(|user| {
                let entry = cached?.get(user.as_str())?;
                (entry.expires_at_ms > now_ms).then_some(entry.expires_at_ms)
            })
            .collect()
    }

    /// How long decisions are reused.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// When revalidation should next look at the watched pairs.
    pub fn next_due_ms(&self) -> u64 {
        self.next_due_ms.load(Ordering::SeqCst)
    }

    /// Revalidation looked: the next watched pair expires at `ms`.
    pub fn set_next_due(&self, ms: u64) {
        self.next_due_ms.store(ms, Ordering::SeqCst);
    }

    fn note_in_use(&self, expires_at_ms: u64) {
        self.next_due_ms.fetch_min(expires_at_ms, Ordering::SeqCst);
    }

    /// For each id (distinct): the cached decision, another call's flight to wait for, or
    /// `Ask`; the ids to ask are registered as one new flight.
    pub fn plan(&self, viewer: &str, ids: &[String], now_ms: u64) -> (Vec<Plan>, Flight<'_>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let mut asked = Vec::new();
        let mut plans = Vec::with_capacity(ids.len());
        let cached = inner.entries.get(viewer);
        let mut earliest = u64::MAX;
        for user in ids {
            if let Some(entry) = cached.and_then(|m| m.get(user.as_str())) {
                if entry.expires_at_ms > now_ms {
                    earliest = earliest.min(entry.expires_at_ms);
                    plans.push(Plan::Cached(entry.decision));
                    continue;
                }
            }
            if let Some(f) = inner.flights.get(viewer).and_then(|m| m.get(user.as_str())) {
                plans.push(Plan::Wait(f.answer.clone(), f.index));
                continue;
            }
            plans.push(Plan::Ask);
            asked.push(user.clone());
        }
        if !asked.is_empty() {
            let flights = inner.flights.entry(viewer.to_owned()).or_default();
            for (index, user) in asked.iter().enumerate() {
                flights.insert(
                    user.clone(),
                    InFlight {
                        flight: id,
                        index,
                        answer: rx.clone(),
                    },
                );
            }
        }
        drop(rx);
        self.note_in_use(earliest);
        let flight = Flight {
            cache: self,
            viewer: viewer.to_owned(),
            ids: asked,
            id,
            generation: self.generation.load(Ordering::SeqCst),
            answer: Some(tx),
        };
        (plans, flight)
    }

    fn insert(inner: &mut Inner, max: usize, viewer: &str, user: &str, entry: Entry, now_ms: u64) {
        if inner.len >= max {
            // Expired decisions first; then whole viewers, until a tenth is free.
            let mut len = 0;
            for users in inner.entries.values_mut() {
                users.retain(|_, e| e.expires_at_ms > now_ms);
                len += users.len();
            }
            inner.entries.retain(|_, users| !users.is_empty());
            let target = max - max / 10 - 1;
            while len > target {
                let Some(victim) = inner.entries.keys().next().cloned() else {
                    break;
                };
                len -= inner.entries.remove(&victim).map_or(0, |u| u.len());
            }
            inner.len = len;
        }
        let users = inner.entries.entry(viewer.to_owned()).or_default();
        if users.insert(user.to_owned(), entry).is_none() {
            inner.len += 1;
        }
    }

    /// Drops decisions whose viewer is in `viewers` or user in `users`; returns how many.
    pub fn invalidate(&self, viewers: &[String], users: &[String]) -> usize {
        let mut inner = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut dropped = 0;
        for viewer in viewers {
            if let Some(m) = inner.entries.remove(viewer) {
                dropped += m.len();
            }
        }
        if !users.is_empty() {
            for m in inner.entries.values_mut() {
                for user in users {
                    dropped += usize::from(m.remove(user).is_some());
                }
            }
            inner.entries.retain(|_, m| !m.is_empty());
        }
        inner.len -= dropped;
        drop(inner);
        self.next_due_ms.store(0, Ordering::SeqCst);
        self.invalidated.notify_one();
        dropped
    }
}

impl Flight<'_> {
    /// The ids this call must ask about, in the order of its answer.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Caches the answer (unless an invalidation came meanwhile) and hands it to the calls
    /// waiting on this flight.
    pub fn answer(mut self, decisions: &[Decision], now_ms: u64) {
        let cache = self.cache;
        let expires_at_ms = now_ms.saturating_add(cache.ttl_ms);
        if cache.generation.load(Ordering::SeqCst) == self.generation {
            let mut inner = cache.lock();
            for (user, &decision) in self.ids.iter().zip(decisions) {
                let entry = Entry {
                    decision,
                    expires_at_ms,
                };
                DecisionCache::insert(
                    &mut inner,
                    cache.max_entries,
                    &self.viewer,
                    user,
                    entry,
                    now_ms,
                );
            }
            drop(inner);
            cache.note_in_use(expires_at_ms);
        }
        self.unregister();
        if let Some(tx) = self.answer.take() {
            let _ = tx.send(Some(Ok(decisions.into())));
        }
    }

    /// The call failed: every waiter fails too (fail closed); nothing is cached.
    pub fn fail(mut self, error: PolicyError) {
        self.unregister();
        if let Some(tx) = self.answer.take() {
            let _ = tx.send(Some(Err(error)));
        }
    }

    fn unregister(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut inner = self.cache.lock();
        if let Some(flights) = inner.flights.get_mut(&self.viewer) {
            for user in &self.ids {
                if flights.get(user).is_some_and(|f| f.flight == self.id) {
                    flights.remove(user);
                }
            }
            if flights.is_empty() {
                inner.flights.remove(&self.viewer);
            }
        }
        self.ids.clear();
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Abandoned (the asking call was cancelled): waiters see the sender gone and fail.
        self.unregister();
    }
}

/// Waits for another call's answer to one id.
pub async fn wait(
    mut answer: watch::Receiver<FlightResult>,
    index: usize,
) -> Result<Decision, PolicyError> {
    let abandoned = || PolicyError::Unavailable("the call asking was abandoned".into());
    let result = answer
        .wait_for(Option::is_some)
        .await
        .map_err(|_| abandoned())?
        .clone();
    match result {
        Some(Ok(decisions)) => decisions.get(index).copied().ok_or_else(abandoned),
        Some(Err(e)) => Err(e),
        None => Err(abandoned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn answers_are_cached_until_they_expire() {
        let cache = DecisionCache::new(100, 10);
        let (plans, flight) = cache.plan("v", &ids(&["a", "b"]), 0);
        assert!(plans.iter().all(|p| matches!(p, Plan::Ask)));
        flight.answer(&[Decision::Allow, Decision::Hide], 0);
        assert_eq!(cache.lookup("v", "a", 99), Some((Decision::Allow, 100)));
        assert_eq!(cache.lookup("v", "b", 50), Some((Decision::Hide, 100)));
        assert_eq!(cache.lookup("v", "a", 100), None);
        assert_eq!(cache.next_due_ms(), 100);
        let (plans, flight) = cache.plan("v", &ids(&["a"]), 10);
        assert!(matches!(plans[0], Plan::Cached(Decision::Allow)));
        assert!(flight.ids().is_empty());
    }

    #[tokio::test]
    async fn a_second_question_waits_for_the_first() {
        let cache = DecisionCache::new(100, 10);
        let (_, first) = cache.plan("v", &ids(&["a", "b"]), 0);
        let (plans, second) = cache.plan("v", &ids(&["b", "c"]), 0);
        assert_eq!(second.ids(), ["c"]);
        let Plan::Wait(rx, index) = &plans[0] else {
            panic!("b should wait for the first flight");
        };
        let waiting = wait(rx.clone(), *index);
        first.answer(&[Decision::Allow, Decision::Deny], 0);
        assert_eq!(waiting.await, Ok(Decision::Deny));
        // A failed or abandoned flight fails its waiters.
        let (_, third) = cache.plan("w", &ids(&["a"]), 0);
        let (plans, _) = cache.plan("w", &ids(&["a"]), 0);
        let Plan::Wait(rx, index) = &plans[0] else {
            panic!("should wait");
        };
        drop(third);
        assert!(wait(rx.clone(), *index).await.is_err());
    }

    #[test]
    fn invalidation_drops_by_viewer_or_user_and_outdates_calls_in_flight() {
        let cache = DecisionCache::new(100, 10);
        let (_, f) = cache.plan("v", &ids(&["a", "b"]), 0);
        f.answer(&[Decision::Allow, Decision::Allow], 0);
        let (_, f) = cache.plan("w", &ids(&["a", "c"]), 0);
        f.answer(&[Decision::Allow, Decision::Allow], 0);
        let (_, late) = cache.plan("x", &ids(&["a"]), 0);
        assert_eq!(cache.invalidate(&ids(&["v"]), &ids(&["c"])), 3);
        assert_eq!(cache.len(), 1);
        assert!(cache.lookup("w", "a", 0).is_some());
        late.answer(&[Decision::Allow], 0);
        assert!(
            cache.lookup("x", "a", 0).is_none(),
            "answer from before the invalidation"
        );
        assert_eq!(cache.next_due_ms(), 0);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = DecisionCache::new(100, 50);
        for i in 0..200 {
            let (_, f) = cache.plan(&format!("v{i}"), &ids(&["a"]), 0);
            f.answer(&[Decision::Allow], 0);
            assert!(cache.len() <= 50);
        }
        assert!(!cache.is_empty());
    }
}
