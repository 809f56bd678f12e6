//! The `open` policy: anyone with an identity may see anyone.

use async_trait::async_trait;

use super::{Decision, PolicyError, WatchPolicy};
use crate::auth::Identity;

pub struct OpenPolicy;

#[async_trait]
impl WatchPolicy for OpenPolicy {
    async fn decide(
        &self,
        _viewer: &str,
        _identity: &Identity,
        ids: &[String],
        _now_ms: u64,
    ) -> Result<Vec<Decision>, PolicyError> {
        Ok(vec![Decision::Allow; ids.len()])
    }
}
