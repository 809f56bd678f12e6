//! The Redis bridge: the one task that owns the pub/sub connection.
//!
//! It subscribes to the channels of the users local sessions watch (the registry's interest),
//! turns change events from other nodes into local fan-out, renews this node's lease,
//! sweeps dead nodes, and resyncs (re-subscribe, re-assert what this node holds, re-read
//! watched users) on every reconnect and periodically: pub/sub is at-most-once, so events
//! are hints and the resync repairs whatever was missed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::codec;
use super::connection::{Event, Subscriber};
use super::store::RedisStore;
use crate::node::Node;
use crate::registry::Interest;
use crate::store::{Store, StoreError};

/// Channels subscribed or unsubscribed per command.
const SUBSCRIBE_BATCH: usize = 500;
/// Users re-read per round trip during a resync.
const RESYNC_BATCH: usize = 500;
/// Events handed to the registry in one message at most.
const EVENT_BATCH: usize = 256;

/// Timings of the bridge's periodic work.
#[derive(Debug, Clone)]
pub struct BridgeTimings {
    pub lease_renew: Duration,
    pub sweep: Duration,
    pub resync: Duration,
}

impl BridgeTimings {
    pub fn from_lease_ttl(lease_ttl_ms: u64, resync_ms: u64) -> Self {
        Self {
            lease_renew: Duration::from_millis((lease_ttl_ms / 3).max(1)),
            sweep: Duration::from_millis((lease_ttl_ms / 2).max(1)),
            resync: Duration::from_millis(resync_ms.max(1)),
        }
    }
}

/// Runs until aborted.
pub async fn run(
    node: Arc<Node>,
    store: Arc<RedisStore>,
    interest: Arc<Interest>,
    timings: BridgeTimings,
) {
    let backoff_builder = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    let mut backoff = backoff_builder.build();
    loop {
        let mut was_up = false;
        if let Err(e) = connected(&node, &store, &interest, &timings, &mut was_up).await {
            warn!(error = %e, "redis bridge: connection lost or failed");
        }
        store.set_healthy(false);
        if was_up {
            // A connection that worked starts the backoff over.
            backoff = backoff_builder.build();
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
}

/// One connection's life: subscribe, resync, then serve events and timers until it drops.
async fn connected(
    node: &Arc<Node>,
    store: &Arc<RedisStore>,
    interest: &Arc<Interest>,
    timings: &BridgeTimings,
    was_up: &mut bool,
) -> Result<(), StoreError> {
    // Dropped when the connection is done (or the bridge is aborted): ends its resync.
    let mut background = BackgroundResync::default();
    serve_connection(node, store, interest, timings, was_up, &mut background).await
}

/// A resync running beside event delivery (it can take many round trips, and events must not
/// wait for it), and the reason of one more wanted when it ends.
#[derive(Default)]
struct BackgroundResync {
    running: Option<tokio::task::JoinHandle<()>>,
    again: Option<&'static str>,
}

impl BackgroundResync {
    /// Starts a resync, or remembers to start one when the running one ends.
    fn request(
        &mut self,
        node: &Arc<Node>,
        store: &Arc<RedisStore>,
        interest: &Arc<Interest>,
        reason: &'static str,
    ) {
        if self
            .running
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            self.again = Some(reason);
            return;
        }
        let (node, store, interest) = (node.clone(), store.clone(), interest.clone());
        self.running = Some(tokio::spawn(async move {
            if let Err(e) = resync(&node, &store, &interest, reason).await {
                warn!(error = %e, reason, "resync failed; the next one repairs");
            }
        }));
    }

    /// Starts the remembered resync if the running one has ended.
    fn follow_up(&mut self, node: &Arc<Node>, store: &Arc<RedisStore>, interest: &Arc<Interest>) {
        if self.running.as_ref().is_some_and(|task| task.is_finished()) {
            self.running = None;
            if let Some(reason) = self.again.take() {
                self.request(node, store, interest, reason);
            }
        }
    }

    fn abort(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }
}

impl Drop for BackgroundResync {
    /// The bridge task being aborted (the node stopping) ends its resync too.
    fn drop(&mut self) {
        self.abort();
    }
}

async fn serve_connection(
    node: &Arc<Node>,
    store: &Arc<RedisStore>,
    interest: &Arc<Interest>,
    timings: &BridgeTimings,
    was_up: &mut bool,
    background: &mut BackgroundResync,
) -> Result<(), StoreError> {
    let mut events = store.target().subscriber().await?;
    // The event connection was lost (or never made): the command connection most likely
    // broke with it (a Redis restart); start afresh instead of failing once on it.
    store.reset_connection();
    let mut subscribed = Subscribed::default();
    reconcile(store, interest, &mut events, &mut subscribed).await?;
    events
        .subscribe(&[store.keys().node_control(&node.node_id)])
        .await?;
    store
        .renew_lease(node.sessions.len(), node.sessions.users())
        .await?;
    resync(node, store, interest, "connect").await?;
    store.set_healthy(true);
    *was_up = true;
    info!(
        channels = subscribed.users.len(),
        "redis bridge connected and resynced"
    );

    let mut lease = tokio::time::interval(timings.lease_renew);
    let mut sweep = tokio::time::interval(timings.sweep);
    let mut periodic = tokio::time::interval(timings.resync);
    for timer in [&mut lease, &mut sweep, &mut periodic] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        timer.reset();
    }
    loop {
        background.follow_up(node, store, interest);
        tokio::select! {
            event = events.next() => {
                let mut gap = false;
                let mut dropped = Vec::new();
                let mut batch = Vec::new();
                let Some(first) = event else {
                    return Err(StoreError::Unavailable("pub/sub connection closed".into()));
                };
                let mut next = Some(first);
                // Take whatever else already arrived, to fan out in one registry message.
                while let Some(event) = next.take() {
                    match event {
                        Event::Message { channel, payload } => {
                            handle_event(node, store, &channel, &payload, &mut batch);
                        }
                        Event::Gap => gap = true,
                        Event::Dropped(channel) => dropped.push(channel),
                    }
                    if batch.len() < EVENT_BATCH {
                        next = futures::FutureExt::now_or_never(events.next()).flatten();
                    }
                }
                node.publish(batch);
                // Subscriptions Redis dropped (a slot moved) that are still wanted: subscribe
                // again (the client routes to the slot's new owner), then resync.
                let lost: Vec<String> = dropped
                    .into_iter()
                    .filter(|channel| {
                        store
                            .keys()
                            .user_of_channel(channel)
                            .is_some_and(|user| subscribed.users.contains(user))
                    })
                    .collect();
                if !lost.is_empty() {
                    warn!(channels = lost.len(), "redis dropped subscriptions (slot moved): subscribing again");
                    events.subscribe(&lost).await?;
                    gap = true;
                }
                if gap {
                    // Events may have been lost while a connection or slot moved.
                    background.request(node, store, interest, "gap");
                }
            }
            _ = interest.changed() => {
                let added = reconcile(store, interest, &mut events, &mut subscribed).await?;
                // A session read these users before their channel was subscribed to; a
                // change published in between reached nobody here (pub/sub keeps nothing).
                // Reading them again now that events flow closes that gap; outboxes drop
                // what they have seen.
                if let Err(e) = read_and_publish(node, store, &added).await {
                    // One failed read (a timeout, a key something else wrote) is no loss of
                    // Redis: the connection and readiness stay; a resync reads them again.
                    warn!(error = %e, users = added.len(), "could not read newly watched users; resyncing");
                    background.request(node, store, interest, "gap");
                }
            }
            _ = lease.tick() => {
                if store
                    .renew_lease(node.sessions.len(), node.sessions.users())
                    .await?
                {
                    warn!("this node's lease was gone (swept, or redis lost its data): re-asserting");
                    background.request(node, store, interest, "lease_lost");
                }
                store.set_healthy(true);
            }
            _ = sweep.tick() => {
                let changed = store.sweep_dead_nodes(node.now_ms()).await?;
                node.publish(changed);
            }
            _ = periodic.tick() => {
                background.request(node, store, interest, "periodic");
            }
        }
    }
}

/// Decodes one event into `batch` (events this node published itself were fanned out
/// locally already).
fn handle_event(
    node: &Node,
    store: &RedisStore,
    channel: &str,
    payload: &[u8],
    batch: &mut Vec<crate::presence::UserRecord>,
) {
    let Some(user_id) = store.keys().user_of_channel(channel) else {
        if channel == store.keys().node_control(&node.node_id) {
            if let Ok(command) = std::str::from_utf8(payload) {
                node.handle_control(command);
            }
        }
        return;
    };
    let Ok(payload) = std::str::from_utf8(payload) else {
        return;
    };
    let Some((origin, version, body)) = codec::decode_event(payload) else {
        warn!(channel = %channel, "unreadable change event");
        return;
    };
    if origin == node.node_id {
        return;
    }
    match codec::decode(user_id, version, body) {
        Ok(record) => {
            store.observe(&record);
            batch.push(record);
        }
        Err(e) => warn!(error = %e, "unreadable change event"),
    }
}

/// What the event connection is subscribed to.
#[derive(Default)]
struct Subscribed {
    users: HashSet<String>,
    /// The pattern of every user channel (a change stream of everyone).
    everyone: bool,
}

/// Subscribes to newly watched users and unsubscribes from users nobody watches any more.
/// Subscribes to what is wanted and unsubscribes from the rest. Returns the users newly
/// subscribed to.
async fn reconcile(
    store: &RedisStore,
    interest: &Interest,
    events: &mut Subscriber,
    subscribed: &mut Subscribed,
) -> Result<Vec<String>, StoreError> {
    let everyone = interest.wants_everyone();
    if everyone != subscribed.everyone {
        let pattern = store.keys().all_user_channels();
        if everyone {
            events.psubscribe(&pattern).await?;
        } else {
            events.punsubscribe(&pattern).await?;
        }
        subscribed.everyone = everyone;
    }
    let subscribed = &mut subscribed.users;
    let desired = interest.snapshot();
    let to_add: Vec<String> = desired.difference(subscribed).cloned().collect();
    let to_remove: Vec<String> = subscribed.difference(&desired).cloned().collect();
    for chunk in to_add.chunks(SUBSCRIBE_BATCH) {
        let channels: Vec<String> = chunk.iter().map(|u| store.keys().channel(u)).collect();
        events.subscribe(&channels).await?;
        subscribed.extend(chunk.iter().cloned());
    }
    for chunk in to_remove.chunks(SUBSCRIBE_BATCH) {
        let channels: Vec<String> = chunk.iter().map(|u| store.keys().channel(u)).collect();
        events.unsubscribe(&channels).await?;
        for user in chunk {
            subscribed.remove(user);
        }
    }
    Ok(to_add)
}

/// Re-asserts what this node holds, then re-reads every watched user so watchers get any
/// version they missed (older ones are dropped by their outboxes).
async fn resync(
    node: &Node,
    store: &RedisStore,
    interest: &Interest,
    reason: &'static str,
) -> Result<(), StoreError> {
    metrics::counter!(crate::metrics::RESYNCS, "reason" => reason).increment(1);
    let changed = store.reassert(node.now_ms()).await?;
    node.publish(changed);
    let watched: Vec<String> = interest.snapshot().into_iter().collect();
    read_and_publish(node, store, &watched).await
}

/// Reads users from Redis and fans their records out locally (outboxes drop versions they
/// have seen), in batches.
async fn read_and_publish(
    node: &Node,
    store: &RedisStore,
    users: &[String],
) -> Result<(), StoreError> {
    for chunk in users.chunks(RESYNC_BATCH) {
        let records = store.get(chunk, node.now_ms()).await?;
        node.publish(records.into_iter().flatten().collect());
    }
    Ok(())
}
