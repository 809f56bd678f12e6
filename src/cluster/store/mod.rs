//! The Redis store: the truth about every user lives in Redis, shared by all nodes.
//!
//! A write reads the user's record, applies the same pure logic as the memory store, and
//! writes it back with a compare-and-set script that also assigns the next version (from
//! Redis's clock, so versions increase across nodes) and publishes the change on the
//! user's channel, atomically. Two round trips per change; retried on a conflict.
//!
//! The store also remembers what this node holds (its sessions and the last record of their
//! users) so it can re-assert them when Redis lost or missed writes, and keep changes made
//! while Redis is unreachable until it returns.
//!
//! - this file: the store (writes, reads, reaping, leaving) and its connection and health.
//! - `held`: what this node holds and the changes kept during an outage (pure, no Redis).
//! - `reassert`: making Redis agree with what this node holds.
//! - `lease`: node leases and stats, admin commands to nodes, sweeping dead nodes.
//! - `../scripts/*.lua`: the scripts Redis runs (each says what it takes and returns).

mod held;
mod lease;
mod reassert;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use tokio::sync::watch;
use tracing::{info, warn};

use super::codec;
use super::connection::{Backend, Conn, Endpoint};
use super::keys::Keys;
use crate::presence::UserRecord;
use crate::store::{apply_to_record, Op, Outcome, Store, StoreError};
use held::Held;

/// Compare-and-set of one user's record that assigns the version and publishes the change.
const WRITE_SCRIPT: &str = include_str!("../scripts/write.lua");
/// Many users' records in one request (one Redis, not Cluster).
const READ_SCRIPT: &str = include_str!("../scripts/read.lua");

/// Conflicting writes to one user retried before giving up.
const MAX_WRITE_ATTEMPTS: usize = 32;
/// Striped locks serialising this node's writes per user.
const STRIPES: usize = 256;

/// Records how long a Redis request (or a read-modify-write) took, when dropped.
struct RequestTimer {
    op: &'static str,
    started: std::time::Instant,
}

impl RequestTimer {
    fn new(op: &'static str) -> Self {
        Self {
            op,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        metrics::histogram!(crate::metrics::REDIS_SECONDS, "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}

pub struct RedisStore {
    /// Where Redis is (standalone or Cluster), for the bridge's pub/sub connection too.
    target: Endpoint,
    /// The shared command connection.
    backend: Backend,
    keys: Keys,
    node_id: String,
    write: Script,
    read: Script,
    renew: Script,
    claim: Script,
    /// Each user's key expires this long after its last write.
    retention_ms: u64,
    /// How long this node counts as alive after renewing its lease.
    lease_ttl_ms: u64,
    /// Serialise this node's writes per user (read-modify-write, and the held record).
    stripes: Vec<tokio::sync::Mutex<()>>,
    held: Mutex<Held>,
    /// Whether Redis answered last time (set by writes that failed and by the bridge).
    healthy: AtomicBool,
    /// Set when the node leaves the cluster: no re-assert or lease renewal may undo it.
    closing: AtomicBool,
    /// `healthy`'s changes, for the health service.
    health: watch::Sender<bool>,
}

impl RedisStore {
    pub async fn new(
        target: Endpoint,
        prefix: &str,
        node_id: &str,
        retention_ms: u64,
        lease_ttl_ms: u64,
    ) -> Result<Self, StoreError> {
        let backend = target.backend().await?;
        Ok(Self {
            target,
            backend,
            keys: Keys::new(prefix),
            node_id: node_id.to_owned(),
            write: Script::new(WRITE_SCRIPT),
            read: Script::new(READ_SCRIPT),
            renew: lease::renew_script(),
            claim: lease::claim_script(),
            retention_ms,
            lease_ttl_ms,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            held: Mutex::new(Held::new(node_id)),
            healthy: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            health: watch::channel(false).0,
        })
    }

    /// At most `max` lingering sessions per user after this node re-asserts its sessions
    /// (`PRESENCE_MAX_LINGERING_PER_USER`, as an end applies it).
    pub fn with_max_lingering(self, max: usize) -> Self {
        self.held().set_max_lingering(max);
        self
    }

    pub fn target(&self) -> &Endpoint {
        &self.target
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Marks Redis reachable or not (the bridge knows first).
    pub fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::SeqCst) != healthy {
            if healthy {
                info!("redis reachable");
            } else {
                warn!("redis unreachable: serving what this node knows, keeping changes");
            }
            self.health.send_replace(healthy);
            metrics::gauge!(crate::metrics::REDIS_UP).set(if healthy { 1.0 } else { 0.0 });
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap()
    }

    fn stripe(&self, user_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user_id.hash(&mut h);
        &self.stripes[(h.finish() as usize) % STRIPES]
    }

    /// Makes the next request use a fresh connection.
    pub fn reset_connection(&self) {
        self.backend.reset();
    }

    /// A command failed: the shared connection may be broken, so the next request gets a
    /// fresh one.
    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        metrics::counter!(crate::metrics::REDIS_ERRORS).increment(1);
        self.backend.reset();
        StoreError::unavailable(e)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.backend.conn().await
    }

    /// Reads, applies and writes one op (compare-and-set), retrying on conflicts. Returns
    /// the record before and, if it changed, after.
    async fn write_through(
        &self,
        op: &Op,
        now_ms: u64,
        min_version: u64,
    ) -> Result<(UserRecord, Option<UserRecord>), StoreError> {
        let user_id = op.user_id();
        let key = self.keys.user(user_id);
        let mut conn = self.conn().await?;
        let _timer = RequestTimer::new("write");
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut read = redis::pipe();
            if matches!(op, Op::Open { .. } | Op::SyncNode { .. }) {
                // The node index is written before the session, so it is always a superset
                // of this node's sessions: a sweep after a crash misses nobody. (Redis
                // Cluster: another slot, so not in the same pipeline.)
                let index = self.keys.node_index(&self.node_id);
                if self.target.is_cluster() {
                    let _: () = conn.sadd(index, user_id).await.map_err(|e| self.fail(e))?;
                } else {
                    read.sadd(index, user_id).ignore();
                }
            }
            // HMGET, not HGET: scripts use HGET, so `INFO commandstats` tells the node's
            // round trips (hmget, evalsha, sadd) from what its scripts run. The version field
            // comes too: the compare-and-set checks it, so a hash whose record is missing or
            // unreadable (written by an older layout, say) is replaced instead of failing
            // every attempt.
            read.cmd("HMGET")
                .arg(&key)
                .arg(codec::RECORD_FIELD)
                .arg(codec::VERSION_FIELD);
            let ((stored, version),): ((Option<String>, Option<u64>),) = read
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            let current = match stored.map(|stored| codec::decode_stored(user_id, &stored)) {
                // The compare-and-set checks `v`: take the version from there (the two only
                // differ if something else wrote to the hash).
                Some(Ok(record)) => UserRecord {
                    version: version.unwrap_or(record.version),
                    ..record
                },
                unreadable => {
                    if let Some(Err(e)) = unreadable {
                        warn!(error = %e, "unreadable record replaced");
                    } else if version.is_some() {
                        warn!(user = user_id, "record without its body replaced");
                    }
                    UserRecord {
                        version: version.unwrap_or(0),
                        ..UserRecord::new(user_id)
                    }
                }
            };
            let mut next = current.clone();
            if !apply_to_record(&mut next, op, now_ms)?
                && !held::behind(current.version, min_version)
            {
                return Ok((current, None));
            }
            // Changed, or unchanged but behind what this node handed out while Redis could
            // not be written (say a choice kept during an outage lost to a later one made
            // elsewhere): written anyway, so its version passes those provisional ones and
            // this node's watchers see it.
            let (written, new_version): (i64, u64) = self
                .write
                .key(&key)
                .arg(current.version)
                .arg(codec::encode_body(&next))
                .arg(self.keys.channel(user_id))
                .arg(codec::encode_event_prefix(&self.node_id))
                .arg(min_version)
                .arg(self.retention_ms)
                .arg(self.target.publish_command())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            if written == 1 {
                next.version = new_version;
                let had = current.sessions.iter().any(|s| s.node_id == self.node_id);
                let has = next.sessions.iter().any(|s| s.node_id == self.node_id);
                if had && !has {
                    // Best effort: a stale index entry only costs the sweeper a no-op.
                    let _: Result<(), _> = conn
                        .srem(self.keys.node_index(&self.node_id), user_id)
                        .await;
                }
                return Ok((current, Some(next)));
            }
        }
        // Not `Unavailable`: Redis answers; marking the node unhealthy and switching to
        // outage mode for one hot user would flap readiness for everyone.
        Err(StoreError::Contended(format!("{user_id:?}")))
    }

    async fn apply_op(&self, op: Op, now_ms: u64) -> Outcome {
        let _serial = self.stripe(op.user_id()).lock().await;
        let min_version = self.held().min_version(op.user_id());
        match self.write_through(&op, now_ms, min_version).await {
            Ok((current, next)) => {
                self.held().hold(next.as_ref().unwrap_or(&current), &op);
                Ok(next)
            }
            Err(e @ StoreError::Unavailable(_)) => {
                self.backend.reset();
                self.set_healthy(false);
                // Kept locally (and fanned out with a provisional version) until Redis
                // returns; new sessions are refused meanwhile.
                self.held().apply_unwritten(&op, now_ms, e)
            }
            Err(e @ StoreError::Contended(_)) => {
                // Redis is fine, so the node stays healthy; the change is kept as during an
                // outage (an end must not be lost) and the next re-assert writes it.
                self.held().apply_unwritten(&op, now_ms, e)
            }
            Err(e) => Err(e),
        }
    }

    /// Lets the store know a newer version exists (a change event from another node), so
    /// provisional versions made during an outage stay above it.
    pub fn observe(&self, record: &UserRecord) {
        self.held().observe(record);
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn apply(&self, op: Op, now_ms: u64) -> Outcome {
        self.apply_op(op, now_ms).await
    }

    async fn get(
        &self,
        user_ids: &[String],
        _now_ms: u64,
    ) -> Result<Vec<Option<UserRecord>>, StoreError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let _timer = RequestTimer::new("read");
        let read = async {
            if let Conn::Cluster(cluster) = &conn {
                // Users live in different slots: one request each, all in flight at once
                // on the multiplexed cluster connection.
                let reads = user_ids.iter().map(|id| {
                    let mut c = cluster.clone();
                    let key = self.keys.user(id);
                    async move {
                        redis::cmd("HMGET")
                            .arg(key)
                            .arg(codec::RECORD_FIELD)
                            .query_async::<(Option<String>,)>(&mut c)
                            .await
                            .map(|(stored,)| stored)
                    }
                });
                futures::future::try_join_all(reads).await
            } else {
                let mut invocation = self.read.prepare_invoke();
                for id in user_ids {
                    invocation.key(self.keys.user(id));
                }
                let joined: String = invocation.invoke_async(&mut conn).await?;
                match codec::split_joined(&joined, user_ids.len()) {
                    Some(rows) => Ok(rows.into_iter().map(|r| r.map(str::to_owned)).collect()),
                    None => {
                        // A record holds the separator (nodes never write one: something
                        // else wrote to the key). Read them one by one instead.
                        warn!("a record holds the bulk-read separator: reading one by one");
                        let mut pipe = redis::pipe();
                        for id in user_ids {
                            pipe.cmd("HMGET")
                                .arg(self.keys.user(id))
                                .arg(codec::RECORD_FIELD);
                        }
                        let rows: Vec<(Option<String>,)> = pipe.query_async(&mut conn).await?;
                        Ok(rows.into_iter().map(|(stored,)| stored).collect())
                    }
                }
            }
        };
        // A failed read fails this request only: readiness is not touched (one read that
        // timed out or hit a bad key is no loss of Redis; a real loss is seen by writes and
        // by the bridge, whose checks turn readiness off and on again).
        let rows: Vec<Option<String>> = read.await.map_err(|e| self.fail(e))?;
        let records: Vec<Option<UserRecord>> = user_ids
            .iter()
            .zip(rows)
            .map(|(id, stored)| codec::decode_stored(id, &stored?).ok())
            .collect();
        // What this node holds follows what it reads too, not only events (which it gets
        // only for watched users): a change kept during an outage then builds on the
        // latest record known (another node's sessions included).
        let mut held = self.held();
        for record in records.iter().flatten() {
            held.observe(record);
        }
        Ok(records)
    }

    async fn reap(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let due = self.held().take_due(now_ms);
        let mut changed = Vec::new();
        let mut warned = false;
        for user_id in due {
            let expire = Op::ExpireLingering {
                user_id: user_id.clone(),
            };
            let next = match self.apply_op(expire, now_ms).await {
                Ok(next) => next,
                Err(e) => {
                    // Every due user gets its turn: one failure must not drop the others'
                    // deadlines (they live only here).
                    self.held().retry_expiry(&user_id, now_ms);
                    if !std::mem::replace(&mut warned, true) {
                        warn!(error = %e, "could not expire a lingering session; trying again");
                    }
                    continue;
                }
            };
            changed.extend(next);
        }
        Ok(changed)
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn health_changes(&self) -> Option<watch::Receiver<bool>> {
        Some(self.health.subscribe())
    }

    fn last_linger_deadline(&self) -> Option<u64> {
        self.held().last_linger_deadline()
    }

    /// Removes every session this node still holds and leaves the cluster.
    async fn close(&self, now_ms: u64) {
        // First, so that a re-assert or lease renewal still running cannot write back what
        // is removed below (both check it; a re-assert under the same user lock as here).
        self.closing.store(true, Ordering::SeqCst);
        let users = self.held().user_ids();
        for user_id in users {
            let _serial = self.stripe(&user_id).lock().await;
            let (op, min_version) = {
                let held = self.held();
                (held.leave_op(&user_id), held.min_version(&user_id))
            };
            match self.write_through(&op, now_ms, min_version).await {
                Ok((current, next)) => self.held().hold(next.as_ref().unwrap_or(&current), &op),
                Err(e) => {
                    warn!(error = %e, "could not remove this node's sessions; the sweeper will");
                    return;
                }
            }
        }
        if let Ok(mut conn) = self.conn().await {
            let _: Result<(), _> = redis::pipe()
                .zrem(self.keys.leases(), &self.node_id)
                .ignore()
                .hdel(self.keys.node_stats(), &self.node_id)
                .ignore()
                .del(self.keys.node_index(&self.node_id))
                .ignore()
                .query_async(&mut conn)
                .await;
        }
    }
}
