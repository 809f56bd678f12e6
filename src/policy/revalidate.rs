//! Revalidation: pairs still watched are asked again when their decision expires, and at
//! once after an invalidation; a pair whose decision turned to DENY or HIDE is revoked in
//! its sessions (a last OFFLINE update, then unwatched).
//!
//! One task per node. It looks at the watched pairs only when the earliest decision in use
//! is due (or after an invalidation), so an idle node does no work per tick, and at most once
//! per twentieth of the cache TTL otherwise (a node whose decisions expire all the time does
//! not scan every tick; an expired watched pair is asked again at most 5% of the TTL late).
//! When it looks, each viewer's expired pairs go to the policy as one batch, which the
//! decision cache collapses with whatever else is asking.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::ActorRef;

use super::Decision;
use crate::auth::Identity;
use crate::node::Node;
use crate::session::SessionMsg;

/// After a failed re-ask, how long until the pairs are asked again (the sessions keep
/// what they have meanwhile: an authorizer outage must not blank every watch list).
const RETRY_MS: u64 = 1_000;

/// Viewers asked at once during one pass.
const CONCURRENT_BATCHES: usize = 32;

/// Runs until the node stops (aborted with the node's tasks).
pub async fn run(node: Arc<Node>) {
    let Some(cache) = node.policy.cache() else {
        return;
    };
    let mut tick =
        tokio::time::interval(Duration::from_millis(node.config.sweep_interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let min_gap_ms = cache.ttl_ms() / 20;
    let mut last_scan_ms = 0u64;
    loop {
        let invalidated = tokio::select! {
            _ = tick.tick() => false,
            _ = cache.invalidated.notified() => true,
        };
        let now = node.now_ms();
        let due = now >= cache.next_due_ms() && now >= last_scan_ms.saturating_add(min_gap_ms);
        if invalidated || due {
            last_scan_ms = now;
            once(&node).await;
        }
    }
}

/// One pass over the watched pairs. Returns how many pairs were revoked.
pub async fn once(node: &Node) -> usize {
    let Some(cache) = node.policy.cache() else {
        return 0;
    };
    let now = node.now_ms();
    // viewer -> (pairs to ask again, the viewer's sessions)
    let mut viewers: HashMap<String, (HashSet<String>, Vec<ActorRef<SessionMsg>>)> = HashMap::new();
    let mut next_due = u64::MAX;
    for (viewer, actor, outbox) in node.sessions.watchers() {
        let watched = outbox.watched_ids();
        let (due, actors) = viewers.entry(viewer.clone()).or_default();
        actors.push(actor);
        let expiries = cache.expiries(&viewer, &watched, now);
        for (user, expiry) in watched.into_iter().zip(expiries) {
            if user == viewer {
                continue;
            }
            match expiry {
                Some(expires_at_ms) => next_due = next_due.min(expires_at_ms),
                None => {
                    due.insert(user);
                }
            }
        }
    }
    // Answers given from now on lower it again to their own expiry.
    cache.set_next_due(next_due);
    let max_ids = node.limits.max_ids_per_request.max(1);
    let mut batches = Vec::new();
    for (viewer, (due, actors)) in viewers {
        let due: Vec<String> = due.into_iter().collect();
        let actors = Arc::new(actors);
        for chunk in due.chunks(max_ids) {
            batches.push((viewer.clone(), chunk.to_vec(), actors.clone()));
        }
    }
    // Viewers are asked concurrently (a bounded number at a time), so one slow answer does
    // not hold up everyone else's revocation.
    futures::stream::iter(batches)
        .map(|(viewer, ids, actors)| revalidate(node, cache, viewer, ids, actors, now))
        .buffer_unordered(CONCURRENT_BATCHES)
        .fold(0, |total, n| async move { total + n })
        .await
}

/// Asks again about one viewer's `ids`; revokes the ones no longer allowed in its sessions.
async fn revalidate(
    node: &Node,
    cache: &super::DecisionCache,
    viewer: String,
    ids: Vec<String>,
    actors: Arc<Vec<ActorRef<SessionMsg>>>,
    now: u64,
) -> usize {
    let identity = Identity::user(viewer);
    match node.policy.check(&identity, &ids, now).await {
        Ok(decisions) => {
            let lost: Vec<(String, Decision)> = ids
                .into_iter()
                .zip(decisions)
                .filter(|(_, d)| *d != Decision::Allow)
                .collect();
            if !lost.is_empty() {
                for actor in actors.iter() {
                    let _ = actor.cast(SessionMsg::Revoke(lost.clone()));
                }
            }
            lost.len()
        }
        Err(e) => {
            tracing::warn!(viewer = %identity.user_id, error = %e, "cannot revalidate watched users; keeping them, retrying");
            cache.set_next_due(cache.next_due_ms().min(now + RETRY_MS));
            0
        }
    }
}
