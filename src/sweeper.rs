//! The sweeper: one task per node that finds silent sessions (past their liveness
//! deadline), expired credentials, and lingering sessions whose grace has passed. One task
//! instead of a timer per session keeps idle sessions cheap.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::node::Node;
use crate::session::SessionMsg;

/// Runs until aborted.
pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.sweep_interval_ms));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(&node).await;
    }
}

/// One pass at the node's current time.
pub async fn sweep(node: &Node) {
    let now = node.now_ms();
    for (actor, expiry) in node.sessions.expired(now) {
        // The actor may be ending already; then there is nothing to do.
        let _ = actor.cast(SessionMsg::Expire(expiry));
    }
    node.rates.upkeep();
    if let Err(e) = node.reap().await {
        warn!(error = %e, "could not reap lingering sessions");
    }
}
