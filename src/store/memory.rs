//! The embedded in-memory store: the single-node default, no Redis needed.

use std::sync::Mutex;

use async_trait::async_trait;
use dashmap::DashMap;

use super::linger::LingerIndex;
use super::{apply_to_record, Op, Outcome, Store, StoreError};
use crate::presence::UserRecord;

/// How often (in store time) the retention scan runs; it walks every record.
const RETENTION_SCAN_INTERVAL_MS: u64 = 60_000;

pub struct MemoryStore {
    /// user id -> record; sharded locks so sessions of different users never contend.
    records: DashMap<String, UserRecord>,
    /// Lingering sessions by deadline, so reaping does not walk every user.
    lingering: Mutex<LingerIndex>,
    retention_ms: u64,
    /// When the retention scan runs next.
    next_retention_scan_ms: Mutex<u64>,
}

impl MemoryStore {
    pub fn new(retention_ms: u64) -> Self {
        Self {
            records: DashMap::new(),
            lingering: Mutex::new(LingerIndex::default()),
            retention_ms,
            next_retention_scan_ms: Mutex::new(0),
        }
    }

    fn apply_op(&self, op: Op, now_ms: u64) -> Outcome {
        let mut record = self
            .records
            .entry(op.user_id().to_owned())
            .or_insert_with(|| UserRecord::new(op.user_id()));
        let changed = apply_to_record(&mut record, &op, now_ms)?;
        if let (
            true,
            Op::End {
                user_id,
                linger_until_ms: Some(until),
                ..
            },
        ) = (changed, &op)
        {
            self.lingering.lock().unwrap().insert(*until, user_id);
        }
        Ok(changed.then(|| record.clone()))
    }

    fn forget_expired(&self, now_ms: u64) {
        {
            let mut next = self.next_retention_scan_ms.lock().unwrap();
            if now_ms < *next {
                return;
            }
            *next = now_ms + RETENTION_SCAN_INTERVAL_MS;
        }
        let retention = self.retention_ms;
        self.records
            .retain(|_, record| !record.is_expired(now_ms, retention));
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn apply(&self, op: Op, now_ms: u64) -> Outcome {
        self.apply_op(op, now_ms)
    }

    async fn get(
        &self,
        user_ids: &[String],
        _now_ms: u64,
    ) -> Result<Vec<Option<UserRecord>>, StoreError> {
        Ok(user_ids
            .iter()
            .map(|id| self.records.get(id).map(|r| r.clone()))
            .collect())
    }

    async fn reap(&self, now_ms: u64) -> Result<Vec<UserRecord>, StoreError> {
        let due = self.lingering.lock().unwrap().take_due(now_ms);
        let mut changed = Vec::new();
        for user in due {
            if let Some(mut record) = self.records.get_mut(&user) {
                if record.expire_lingering(now_ms) {
                    changed.push(record.clone());
                }
            }
        }
        self.forget_expired(now_ms);
        Ok(changed)
    }
}
