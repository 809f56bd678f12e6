//! Re-asserting: making Redis agree with what this node holds, after Redis lost or missed
//! writes (a failover, a flush, a reply that timed out, changes kept during an outage).
//!
//! The node's index in Redis (a set of user ids) is kept a superset of the users with a
//! session of this node, so the users it lists but the node does not hold are where stale
//! sessions under this node's id can be, and are checked too.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::held::Reassertion;
use super::RedisStore;
use crate::presence::UserRecord;
use crate::store::{apply_to_record, Store, StoreError};

/// Users checked per batch (one bulk read each), and per index scan step.
const REASSERT_BATCH: usize = 500;

impl RedisStore {
    /// Makes Redis agree with what this node holds: writes again its sessions of every user
    /// it holds and any change made while Redis was unreachable, and removes sessions under
    /// this node's id that it does not hold (an end Redis lost in a failover, an open whose
    /// reply timed out, or the sessions of this node id's previous run after a restart).
    /// Used after reconnecting, after Redis lost data, and periodically. Returns the records
    /// that changed.
    pub async fn reassert(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let held = self.held().user_ids();
        // The node's index is a superset of the users with its sessions in Redis: those in
        // it that the node does not hold are checked too.
        let indexed = self.index_members().await?;
        let known: HashSet<&str> = held.iter().map(String::as_str).collect();
        let leftovers: Vec<String> = indexed
            .into_iter()
            .filter(|u| !known.contains(u.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut changed = Vec::new();
        for (users, are_held) in [(held, true), (leftovers, false)] {
            for batch in users.chunks(REASSERT_BATCH) {
                if are_held {
                    // Repairs an index that lost members (it must stay a superset).
                    self.add_to_index(batch).await?;
                }
                if !self.reassert_batch(batch, now_ms, &mut changed).await? {
                    return Ok(changed);
                }
            }
        }
        Ok(changed)
    }

    /// Checks a batch of users with one bulk read (most need no write: Redis already has
    /// what this node holds) and writes only those whose record differs. Returns false
    /// when the node started leaving meanwhile.
    async fn reassert_batch(
        &self,
        batch: &[String],
        now_ms: u64,
        changed: &mut Vec<UserRecord>,
    ) -> Result<bool, StoreError> {
        let stored = self.get(batch, now_ms).await?;
        for (user_id, stored) in batch.iter().zip(stored) {
            let _serial = self.stripe(user_id).lock().await;
            if self.closing.load(Ordering::SeqCst) {
                // `close` removes what the node holds.
                return Ok(false);
            }
            // What to write is read under the user's lock, not listed up front: a session
            // that ended since the list was taken (its write took this lock) must not be
            // written back, or it becomes a ghost that this node keeps re-asserting.
            let Reassertion {
                op,
                held,
                unwritten,
            } = self.held().reassertion(user_id);
            if !unwritten {
                let mut after = stored.unwrap_or_else(|| UserRecord::new(user_id.as_str()));
                if !apply_to_record(&mut after, &op, now_ms)? {
                    // Redis has this node's sessions as held. (Read before the lock: a
                    // later local write only made it more current.)
                    if !held {
                        // An index entry left behind: nothing of the user is here.
                        self.remove_from_index(user_id).await?;
                    }
                    continue;
                }
            }
            let min_version = self.held().min_version(user_id);
            let (current, next) = self.write_through(&op, now_ms, min_version).await?;
            self.held().hold(next.as_ref().unwrap_or(&current), &op);
            changed.extend(next);
        }
        Ok(true)
    }

    /// Every user in this node's index.
    async fn index_members(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let key = self.keys.node_index(&self.node_id);
        let mut members = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(REASSERT_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            members.extend(batch);
            if next == 0 {
                return Ok(members);
            }
            cursor = next;
        }
    }

    async fn remove_from_index(&self, user_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        conn.srem::<_, _, ()>(self.keys.node_index(&self.node_id), user_id)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Adds users to this node's index (before their sessions are re-asserted: the index is
    /// a superset of the node's sessions). One key, so one request on Redis Cluster too.
    async fn add_to_index(&self, users: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        conn.sadd::<_, _, ()>(self.keys.node_index(&self.node_id), users)
            .await
            .map_err(|e| self.fail(e))
    }
}
