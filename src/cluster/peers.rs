//! The Redis store as the core's view of the other nodes (`crate::peers::Peers`).

use async_trait::async_trait;

use super::connection::Target;
use super::RedisStore;
use crate::peers::{ControlCommand, PeerStats, Peers};
use crate::store::StoreError;

#[async_trait]
impl Peers for RedisStore {
    async fn stats(&self) -> Result<Vec<PeerStats>, StoreError> {
        Ok(self
            .node_stats()
            .await?
            .into_iter()
            .map(
                |(node_id, lease_expires_ms, sessions, users_online)| PeerStats {
                    node_id,
                    lease_expires_ms,
                    sessions,
                    users_online,
                },
            )
            .collect())
    }

    async fn send(&self, node_id: &str, command: &ControlCommand) -> Result<(), StoreError> {
        self.send_control(node_id, &command.encode()).await
    }

    fn can_watch_everyone(&self) -> bool {
        !matches!(self.target().target, Target::Cluster(_))
    }
}
