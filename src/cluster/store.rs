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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use tokio::sync::watch;
use tracing::{info, warn};

use super::codec;
use super::connection::{Backend, Conn, Endpoint};
use super::keys::Keys;
use crate::presence::UserRecord;
use crate::proto::Status;
use crate::store::{apply_to_record, Op, Outcome, Store, StoreError};

/// Compare-and-set of one user's record. KEYS[1] the user's hash. ARGV: expected version,
/// body, channel, event prefix (origin node), lowest acceptable version, TTL ms, publish
/// command (PUBLISH, or SPUBLISH on Redis Cluster: the channel shares the key's hash tag).
/// Returns {1, new version} or {0, current version}.
const WRITE_SCRIPT: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
local t = redis.call('TIME')
local v = math.max(cur + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(ARGV[5]))
local vs = string.format('%.0f', v)
redis.call('HSET', KEYS[1], 'v', vs, 'r', vs .. '\n' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(ARGV[7], ARGV[3], ARGV[4] .. vs .. '\n' .. ARGV[2])
return {1, v}
"#;

/// Reads many users' records in one request (one Redis, not Cluster: the keys span slots).
/// KEYS: the users' hashes. Returns their fields `r` (`<version>\n<body>`, empty for none)
/// joined by the record separator \x1e (never in a record: JSON escapes control
/// characters). One command and one string reply instead of a pipeline of 1,000 commands
/// and replies: measured, most of the node's CPU per 1,000-id GetPresence went to
/// building those commands and parsing those replies.
const READ_SCRIPT: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'r') or ''
end
return table.concat(out, '\30')
"#;

/// Renews this node's lease and records its stats. KEYS[1] the lease zset, KEYS[2] the
/// stats hash. ARGV: node id, lease TTL ms, stats. Returns 1 when the node was not
/// registered (first start, swept as dead, or Redis lost its data): the caller must
/// re-assert what it holds.
const RENEW_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"#;

/// Finds nodes whose lease expired and claims each for this node (one sweeper per dead
/// node). KEYS[1] the lease zset. ARGV: this node, claim key prefix, claim TTL ms.
const CLAIM_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
local claimed = {}
for _, node in ipairs(dead) do
  if node ~= ARGV[1] and redis.call('SET', ARGV[2] .. node, ARGV[1], 'NX', 'PX', ARGV[3]) then
    table.insert(claimed, node)
  end
end
return claimed
"#;

/// Conflicting writes to one user retried before giving up.
const MAX_WRITE_ATTEMPTS: usize = 32;
/// Striped locks serialising this node's writes per user.
const STRIPES: usize = 256;
/// Users checked per batch when re-asserting this node's sessions.
const REASSERT_BATCH: usize = 500;
/// Users removed per batch when sweeping a dead node.
const SWEEP_BATCH: usize = 500;
/// How long a sweep claim holds (another node retries after it).
const SWEEP_CLAIM_TTL_MS: u64 = 60_000;

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

/// A user this node holds sessions of (or held, with changes not yet written).
#[derive(Debug)]
struct HeldUser {
    /// The last record known (from Redis, or changed locally while Redis was unreachable).
    record: UserRecord,
    /// A status chosen while Redis was unreachable, to write when it returns.
    unwritten_status: Option<(Status, String)>,
    /// Whether the sessions changed while Redis was unreachable.
    unwritten: bool,
}

#[derive(Debug, Default)]
struct Held {
    users: HashMap<String, HeldUser>,
    /// (grace deadline, user) of this node's lingering sessions.
    lingering: BTreeSet<(u64, String)>,
}

pub struct RedisStore {
    target: Endpoint,
    backend: Backend,
    keys: Keys,
    node_id: String,
    write: Script,
    read: Script,
    renew: Script,
    claim: Script,
    retention_ms: u64,
    lease_ttl_ms: u64,
    stripes: Vec<tokio::sync::Mutex<()>>,
    held: Mutex<Held>,
    healthy: AtomicBool,
    /// Set when the node leaves the cluster: no re-assert or lease renewal may undo it.
    closing: AtomicBool,
    health: watch::Sender<bool>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
            renew: Script::new(RENEW_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
            retention_ms,
            lease_ttl_ms,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            held: Mutex::new(Held::default()),
            healthy: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            health: watch::channel(false).0,
        })
    }

    pub fn target(&self) -> &Endpoint {
        &self.target
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
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

    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.subscribe()
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
        unavailable(e)
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
            if !apply_to_record(&mut next, op, now_ms)? {
                return Ok((current, None));
            }
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

    /// Remembers what this node holds after a successful write or read.
    fn hold(&self, record: &UserRecord, op: &Op) {
        let mut held = self.held.lock().unwrap();
        let ours = record.sessions.iter().any(|s| s.node_id == self.node_id);
        if let Op::End {
            user_id,
            linger_until_ms: Some(until),
            ..
        } = op
        {
            held.lingering.insert((*until, user_id.clone()));
        }
        if ours {
            let entry = held
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
        } else {
            held.users.remove(&record.user_id);
        }
    }

    /// Applies an op while Redis is unreachable: kept locally (and fanned out locally with a
    /// provisional version) until Redis returns. New sessions are refused meanwhile.
    fn apply_unwritten(&self, op: &Op, now_ms: u64, cause: StoreError) -> Outcome {
        let mut held = self.held.lock().unwrap();
        let Some(user) = held.users.get_mut(op.user_id()) else {
            return Err(cause);
        };
        match op {
            Op::SetStatus { status, text, .. } => {
                user.unwritten_status = Some((*status, text.clone()));
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
            held.lingering.insert((*until, user_id.clone()));
        }
        Ok(changed.then_some(record))
    }

    async fn apply_op(&self, op: Op, now_ms: u64) -> Outcome {
        let _serial = self.stripe(op.user_id()).lock().await;
        let min_version = self.min_version(op.user_id());
        match self.write_through(&op, now_ms, min_version).await {
            Ok((current, next)) => {
                self.hold(next.as_ref().unwrap_or(&current), &op);
                Ok(next)
            }
            Err(e @ StoreError::Unavailable(_)) => {
                self.backend.reset();
                self.set_healthy(false);
                self.apply_unwritten(&op, now_ms, e)
            }
            Err(e @ StoreError::Contended(_)) => {
                // Redis is fine, so the node stays healthy; the change is kept as during an
                // outage (an end must not be lost) and the next re-assert writes it.
                self.apply_unwritten(&op, now_ms, e)
            }
            Err(e) => Err(e),
        }
    }

    /// The lowest version Redis may assign next for this user: above any provisional
    /// version handed out locally while Redis was unreachable.
    fn min_version(&self, user_id: &str) -> u64 {
        let held = self.held.lock().unwrap();
        held.users
            .get(user_id)
            .map(|u| u.record.version + 1)
            .unwrap_or(0)
    }

    /// Lets the store know a newer version exists (a change event from another node), so
    /// provisional versions made during an outage stay above it.
    pub fn observe(&self, record: &UserRecord) {
        let mut held = self.held.lock().unwrap();
        if let Some(user) = held.users.get_mut(&record.user_id) {
            if record.version > user.record.version
                && !user.unwritten
                && user.unwritten_status.is_none()
            {
                user.record = record.clone();
            } else if record.version > user.record.version {
                user.record.version = record.version;
            }
        }
    }

    /// Makes Redis agree with what this node holds: writes again its sessions of every user
    /// it holds and any change made while Redis was unreachable, and removes sessions under
    /// this node's id that it does not hold (an end Redis lost in a failover, an open whose
    /// reply timed out, or the sessions of this node id's previous run after a restart).
    /// Used after reconnecting, after Redis lost data, and periodically. Returns the records
    /// that changed.
    pub async fn reassert(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let held: Vec<String> = self.held.lock().unwrap().users.keys().cloned().collect();
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
            let (op, held, unwritten) = self.sync_op(user_id);
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
            let min_version = self.min_version(user_id);
            let (current, next) = self.write_through(&op, now_ms, min_version).await?;
            self.hold(next.as_ref().unwrap_or(&current), &op);
            changed.extend(next);
        }
        Ok(true)
    }

    /// The op that removes every session of this node from `user_id`'s record.
    fn leave_op(&self, user_id: &str) -> Op {
        Op::SyncNode {
            user_id: user_id.to_owned(),
            node_id: self.node_id.clone(),
            sessions: Vec::new(),
            chosen: None,
            known: None,
        }
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

    /// The op that writes what this node holds of `user_id` (its sessions, and a status
    /// chosen while Redis was unreachable; no session when it holds nothing of the user),
    /// whether it holds anything of the user, and whether a change made during an outage
    /// waits to be written.
    fn sync_op(&self, user_id: &str) -> (Op, bool, bool) {
        let held = self.held.lock().unwrap();
        let Some(user) = held.users.get(user_id) else {
            return (self.leave_op(user_id), false, false);
        };
        let unwritten = user.unwritten || user.unwritten_status.is_some();
        let op = Op::SyncNode {
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
            known: Some((user.record.status, user.record.status_text.clone())),
        };
        (op, true, unwritten)
    }

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
                Err(unavailable(e))
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
    /// sweeper). Returns the changed records and the swept nodes.
    pub async fn sweep_dead_nodes(
        &self,
        now_ms: u64,
    ) -> Result<(Vec<UserRecord>, Vec<String>), StoreError> {
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
            let index = self.keys.node_index(node);
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
                        node_id: node.clone(),
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
            metrics::counter!(crate::metrics::DEAD_NODE_SWEEPS).increment(1);
            metrics::counter!(crate::metrics::SWEPT_USERS).increment(changed.len() as u64);
            info!(dead_node = %node, users = changed.len(), "swept the sessions of a dead node");
        }
        Ok((changed, dead))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn apply(&self, ops: Vec<Op>, now_ms: u64) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(self.apply_op(op, now_ms).await);
        }
        outcomes
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
        let rows: Vec<Option<String>> = match read.await {
            Ok(rows) => rows,
            Err(e) => {
                self.backend.reset();
                self.set_healthy(false);
                return Err(unavailable(e));
            }
        };
        Ok(user_ids
            .iter()
            .zip(rows)
            .map(|(id, stored)| codec::decode_stored(id, &stored?).ok())
            .collect())
    }

    async fn reap(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let due: Vec<String> = {
            let mut held = self.held.lock().unwrap();
            let later = held.lingering.split_off(&(now_ms + 1, String::new()));
            let due = std::mem::replace(&mut held.lingering, later);
            due.into_iter().map(|(_, user)| user).collect()
        };
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
                    // deadlines (they live only here). This one is tried again next time,
                    // unless nothing of the user is held any more (its lingering session was
                    // replaced or removed since): then there is nothing left to expire.
                    let mut held = self.held.lock().unwrap();
                    if held.users.contains_key(&user_id) {
                        held.lingering.insert((now_ms, user_id));
                    }
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
        Some(self.health())
    }

    fn last_linger_deadline(&self) -> Option<u64> {
        self.held
            .lock()
            .unwrap()
            .lingering
            .iter()
            .next_back()
            .map(|(d, _)| *d)
    }

    /// Removes every session this node still holds and leaves the cluster.
    async fn close(&self, now_ms: u64) {
        // First, so that a re-assert or lease renewal still running cannot write back what
        // is removed below (both check it; a re-assert under the same user lock as here).
        self.closing.store(true, Ordering::SeqCst);
        let users: Vec<String> = self.held.lock().unwrap().users.keys().cloned().collect();
        for user_id in users {
            let _serial = self.stripe(&user_id).lock().await;
            let op = self.leave_op(&user_id);
            match self
                .write_through(&op, now_ms, self.min_version(&user_id))
                .await
            {
                Ok((current, next)) => self.hold(next.as_ref().unwrap_or(&current), &op),
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
