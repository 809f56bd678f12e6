//! The store: the truth about every user's record.
//!
//! Events are hints; the record in the store is what counts. Every write returns the record
//! after the change (or `None` when nothing changed), and the caller hands it to the registry
//! for fan-out. The store produces the per-user versions. The trait is async so a networked
//! store (Redis, `cluster::store`) fits behind it.
//!
//! - `memory`: the embedded default, one node, no Redis.
//! - `linger`: the index of lingering sessions by deadline, which both stores keep.

pub mod linger;
pub mod memory;

use async_trait::async_trait;

use crate::presence::{Choice, RecordError, SessionEntry, UserRecord};
use crate::proto::Status;

pub use memory::MemoryStore;

/// One write to a user's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A session said hello. `initial` (status, text) is applied in the same change.
    Open {
        user_id: String,
        session: SessionEntry,
        initial: Option<(Status, String)>,
        max_live_sessions: usize,
    },
    /// The user chose a status, at the `now_ms` the op is applied with (the wall clock of
    /// the node where the choice was made: that time is kept as the choice's).
    SetStatus {
        user_id: String,
        status: Status,
        text: String,
    },
    /// A session ended: removed at once, or lingering until `linger_until_ms`. Past
    /// `max_lingering` lingering sessions of the user, the oldest stops counting at once.
    End {
        user_id: String,
        session_id: String,
        linger_until_ms: Option<u64>,
        max_lingering: usize,
    },
    /// Lingering sessions whose grace has passed go.
    ExpireLingering { user_id: String },
    /// Every session of a dead node goes (the sweeper).
    RemoveNode { user_id: String, node_id: String },
    /// A node re-asserts its sessions of this user (and a status chosen while the store
    /// was unreachable).
    SyncNode {
        user_id: String,
        node_id: String,
        sessions: Vec<SessionEntry>,
        /// Chosen while the store was unreachable: written over what the store has unless
        /// the store has a later choice (made through another node meanwhile).
        chosen: Option<Choice>,
        /// What the node last knew: restored only if the store lost the record.
        known: Option<Choice>,
        /// Past this many lingering sessions of the user, the oldest stop counting.
        max_lingering: usize,
    },
}

impl Op {
    pub fn user_id(&self) -> &str {
        match self {
            Op::Open { user_id, .. }
            | Op::SetStatus { user_id, .. }
            | Op::End { user_id, .. }
            | Op::ExpireLingering { user_id }
            | Op::RemoveNode { user_id, .. }
            | Op::SyncNode { user_id, .. } => user_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The backing service cannot be reached; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Other nodes kept changing this user's record while this write was retried: it gave
    /// up. The store itself is fine (unlike `Unavailable`); the caller may retry.
    #[error("too many concurrent writes: {0}")]
    Contended(String),
}

impl StoreError {
    /// The backing service failed or cannot be reached (`e` says how).
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The record after a write, when the write changed it.
pub type Outcome = Result<Option<UserRecord>, StoreError>;

/// Applies `op` to `record` (the pure part every store shares). Returns whether it changed.
pub fn apply_to_record(record: &mut UserRecord, op: &Op, now_ms: u64) -> Result<bool, StoreError> {
    Ok(match op {
        Op::Open {
            session,
            initial,
            max_live_sessions,
            ..
        } => {
            record.open_session(session.clone(), initial.clone(), *max_live_sessions, now_ms)?;
            true
        }
        Op::SetStatus { status, text, .. } => record.set_status(*status, text.clone(), now_ms),
        Op::End {
            session_id,
            linger_until_ms,
            max_lingering,
            ..
        } => {
            let before = record.sessions.len();
            let changed =
                record.end_session_capped(session_id, *linger_until_ms, *max_lingering, now_ms);
            // A lingering end keeps its session; one fewer is what the cap dropped.
            let kept = usize::from(changed && linger_until_ms.is_some());
            let dropped = (before + kept).saturating_sub(record.sessions.len() + 1);
            if dropped > 0 {
                metrics::counter!(crate::metrics::REFUSED, "reason" => "lingering_per_user")
                    .increment(dropped as u64);
            }
            changed
        }
        Op::ExpireLingering { .. } => record.expire_lingering(now_ms),
        Op::RemoveNode { node_id, .. } => record.remove_node_sessions(node_id, now_ms),
        Op::SyncNode {
            node_id,
            sessions,
            chosen,
            known,
            max_lingering,
            ..
        } => record.sync_node_sessions(
            node_id,
            sessions,
            chosen.clone(),
            known.clone(),
            *max_lingering,
            now_ms,
        ),
    })
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies one write. Writes to one user are applied in the order they are made.
    async fn apply(&self, op: Op, now_ms: u64) -> Outcome;

    /// The records of these users (`None` for a user the store does not know), in order.
    async fn get(
        &self,
        user_ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Option<UserRecord>>, StoreError>;

    /// Periodic upkeep: removes lingering sessions whose grace has passed and forgets
    /// records past retention. Returns the changed records, to be fanned out.
    async fn reap(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError>;

    /// Whether the store can be written now (cluster mode: Redis reachable).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Changes of `is_healthy`, for the health service; `None` when it never changes.
    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// When the last session this node holds lingering ends its grace (cluster mode: the
    /// node waits for it before leaving, so a reconnect elsewhere is seamless).
    fn last_linger_deadline(&self) -> Option<u64> {
        None
    }

    /// Called once when the node stops, after the drain.
    async fn close(&self, _now_ms: u64) {}
}
