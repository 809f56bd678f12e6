//! The nodes of the cluster: this node's lease (renewed with its stats), the other nodes'
//! leases and stats, admin commands to them, and sweeping the sessions of the dead ones.
//!
//! A node is alive while its lease (a score in one sorted set, from Redis's clock) is in
//! the future. A node whose lease expired is claimed by one sweeper, which removes its
//! sessions user by user (found through the dead node's index) and then forgets the node.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use redis::{AsyncCommands, Script};
use tracing::info;

use super::{RedisStore, RequestTimer};
use crate::presence::UserRecord;
use crate::store::{Op, StoreError};

/// Renews this node's lease and records its stats (see the script's header).
pub(super) fn renew_script() -> Script {
    Script::new(include_str!("../scripts/renew.lua"))
}

/// Claims expired nodes for this sweeper (see the script's header).
pub(super) fn claim_script() -> Script {
    Script::new(include_str!("../scripts/claim.lua"))
}

/// Users removed per batch when sweeping a dead node.
const SWEEP_BATCH: usize = 500;
/// How long a sweep claim holds (another node retries after it).
const SWEEP_CLAIM_TTL_MS: u64 = 60_000;

impl RedisStore {
    /// Renews this node's lease. Returns true when the node had been forgotten (swept as
    /// dead, or Redis lost its data) and must re-assert what it holds.
    pub async fn renew_lease(&self, sessions: usize, users: usize) -> Result<bool, StoreError> {
        if self.closing.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut conn = self.conn().await?;
        let _timer = RequestTimer::new("lease");
        let renewed: Result<i64, _> = self
            .renew
            .key(self.keys.leases())
            .key(self.keys.node_stats())
            .arg(&self.node_id)
            .arg(self.lease_ttl_ms)
            .arg(format!("{sessions} {users}"))
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(added) => Ok(added == 1),
            Err(e) => {
                self.backend.reset();
                Err(StoreError::unavailable(e))
            }
        }
    }

    /// Live nodes (lease not expired) with their last reported stats: (node, lease expiry
    /// ms, sessions, users).
    pub async fn node_stats(&self) -> Result<Vec<(String, u64, u64, u64)>, StoreError> {
        let mut conn = self.conn().await?;
        type Reply = (Vec<(String, f64)>, HashMap<String, String>, (u64, u64));
        let (leases, stats, now): Reply = redis::pipe()
            .cmd("ZRANGE")
            .arg(self.keys.leases())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .hgetall(self.keys.node_stats())
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let now_ms = now.0 * 1000 + now.1 / 1000;
        Ok(leases
            .into_iter()
            .filter(|(_, expiry)| *expiry as u64 > now_ms)
            .map(|(node, expiry)| {
                let (sessions, users) = stats
                    .get(&node)
                    .and_then(|s| s.split_once(' '))
                    .map(|(a, b)| (a.parse().unwrap_or(0), b.parse().unwrap_or(0)))
                    .unwrap_or((0, 0));
                (node, expiry as u64, sessions, users)
            })
            .collect())
    }

    /// Sends an admin command to another node.
    pub async fn send_control(&self, node_id: &str, command: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd(self.target.publish_command())
            .arg(self.keys.node_control(node_id))
            .arg(command)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Removes the sessions of nodes whose lease expired (each dead node is claimed by one
    /// sweeper) and forgets those nodes. Returns the records that changed.
    pub async fn sweep_dead_nodes(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let claim_prefix = self.keys.sweep_claim("");
        let dead: Vec<String> = self
            .claim
            .key(self.keys.leases())
            .arg(&self.node_id)
            .arg(&claim_prefix)
            .arg(SWEEP_CLAIM_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mut changed = Vec::new();
        for node in &dead {
            // Counted per node: the metric and the log line are about this node's users.
            let swept = self.sweep_node(node, now_ms).await?;
            metrics::counter!(crate::metrics::DEAD_NODE_SWEEPS).increment(1);
            metrics::counter!(crate::metrics::SWEPT_USERS).increment(swept.len() as u64);
            info!(dead_node = %node, users = swept.len(), "swept the sessions of a dead node");
            changed.extend(swept);
        }
        Ok(changed)
    }

    /// Removes one dead node's sessions and forgets the node. Returns the records that
    /// changed.
    async fn sweep_node(&self, node: &str, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let index = self.keys.node_index(node);
        let mut changed = Vec::new();
        loop {
            let users: Vec<String> = conn
                .srandmember_multiple(&index, SWEEP_BATCH as isize)
                .await
                .map_err(|e| self.fail(e))?;
            if users.is_empty() {
                break;
            }
            for user_id in &users {
                let op = Op::RemoveNode {
                    user_id: user_id.clone(),
                    node_id: node.to_owned(),
                };
                let (_, next) = self.write_through(&op, now_ms, 0).await?;
                changed.extend(next);
            }
            let _: () = conn.srem(&index, &users).await.map_err(|e| self.fail(e))?;
        }
        let _: () = redis::pipe()
            .del(&index)
            .ignore()
            .zrem(self.keys.leases(), node)
            .ignore()
            .hdel(self.keys.node_stats(), node)
            .ignore()
            .del(self.keys.sweep_claim(node))
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(changed)
    }
}
