//! The store: the truth about every user's record.
//!
//! Events are hints; the record in the store is what counts. Every write returns the record
//! after the change (or `None` when nothing changed), and the caller hands it to the registry
//! for fan-out. The store produces the per-user versions. The trait is async and takes
//! batches so a networked store (Redis) can pipeline; the embedded default is `memory`.

pub mod memory;

use async_trait::async_trait;

use crate::presence::{RecordError, SessionEntry, UserRecord};
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
    /// The user chose a status.
    SetStatus {
        user_id: String,
        status: Status,
        text: String,
    },
    /// A session ended: removed at once, or lingering until `linger_until_ms`.
    End {
        user_id: String,
        session_id: String,
        linger_until_ms: Option<u64>,
    },
}

impl Op {
    pub fn user_id(&self) -> &str {
        match self {
            Op::Open { user_id, .. } | Op::SetStatus { user_id, .. } | Op::End { user_id, .. } => {
                user_id
            }
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
}

/// The record after a write, when the write changed it.
pub type Outcome = Result<Option<UserRecord>, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies writes in order; one outcome per op. Ops for one user are applied in order.
    async fn apply(&self, ops: Vec<Op>, now_ms: u64) -> Vec<Outcome>;

    /// The records of these users (`None` for a user the store does not know), in order.
    async fn get(
        &self,
        user_ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Option<UserRecord>>, StoreError>;

    /// Periodic upkeep: removes lingering sessions whose grace has passed and forgets
    /// records past retention. Returns the changed records, to be fanned out.
    async fn reap(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError>;

    /// Applies one write.
    async fn apply_one(&self, op: Op, now_ms: u64) -> Outcome {
        self.apply(vec![op], now_ms).await.pop().unwrap_or(Ok(None))
    }
}
