//! How a session ends: the causes, what each means for the store (at once or after the
//! grace) and for the stream, and the one routine that ends a session, used by the session
//! actor and by the supervisor after a crash.

use std::sync::Arc;

use tracing::warn;

use super::table::SessionSlot;
use crate::errors;
use crate::node::Node;
use crate::registry::{RegistryMsg, SessionKey};
use crate::store::Op;

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// Clean half-close by the client: stops counting at once.
    Clean,
    /// TTL (or hello timeout) passed: at once, the TTL already waited.
    Silent,
    CredentialExpired,
    /// Reset or transport error: lingers for the offline grace.
    Abrupt(tonic::Status),
    /// The session was refused (bad hello, limits, draining) or broke the protocol.
    Refused(tonic::Status),
    /// The device does not read its replies.
    SlowConsumer,
    /// Still open when the shutdown grace ran out.
    ShutdownGraceOver,
    /// The actor stopped without saying why (crash, node stop).
    Stopped,
    /// An operator ended it (admin `Disconnect`).
    Kicked(String),
}

impl End {
    /// The `reason` label of the sessions-closed metric.
    pub fn label(&self) -> &'static str {
        match self {
            End::Clean => "clean",
            End::Silent => "ttl",
            End::CredentialExpired => "credential_expired",
            End::Abrupt(_) => "abrupt",
            End::Refused(_) => "refused",
            End::SlowConsumer => "slow_consumer",
            End::ShutdownGraceOver => "shutdown",
            End::Stopped => "stopped",
            End::Kicked(_) => "admin",
        }
    }

    /// Whether the session keeps counting for the offline grace, so a quick reconnect is
    /// invisible to watchers.
    pub fn lingers(&self) -> bool {
        matches!(
            self,
            End::Abrupt(_) | End::SlowConsumer | End::ShutdownGraceOver | End::Stopped
        )
    }

    pub fn stream_result(&self) -> Result<(), tonic::Status> {
        match self {
            End::Clean => Ok(()),
            End::Silent => Err(errors::session::silent()),
            End::CredentialExpired => Err(errors::session::credential_expired()),
            End::Abrupt(status) | End::Refused(status) => Err(status.clone()),
            End::SlowConsumer => Err(errors::session::slow_consumer()),
            End::ShutdownGraceOver => Err(errors::session::shutdown()),
            End::Stopped => Err(errors::session::stopped()),
            End::Kicked(reason) => Err(errors::session::kicked(reason)),
        }
    }
}

/// How long an ended session keeps counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    /// Gone at once.
    No,
    /// The offline grace: the device was told to move (drain, rebalance).
    Grace,
    /// An abrupt end: the offline grace, or the storm grace in a mass disconnect.
    Abrupt,
}

/// Ends the session in `slot` (just taken out of the node's session table, so this runs
/// once per session): the store forgets it (at once, or after its grace), the registry
/// forgets its watch list, and its stream ends with `result`. `counted`: the session said
/// hello, so the store has it.
pub async fn close_session(
    node: &Arc<Node>,
    key: SessionKey,
    slot: SessionSlot,
    counted: bool,
    linger: Linger,
    result: Result<(), tonic::Status>,
) {
    if counted {
        let now = node.now_ms();
        let (linger_until_ms, extend) = match linger {
            Linger::No => (None, Vec::new()),
            Linger::Grace => (Some(now + node.config.offline_grace_ms), Vec::new()),
            Linger::Abrupt => {
                let grace = node
                    .storm
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .abrupt_end(now, &slot.user_id, &slot.session_id);
                (Some(grace.linger_until_ms), grace.extend)
            }
        };
        let op = Op::End {
            user_id: slot.user_id.clone(),
            session_id: slot.session_id.clone(),
            linger_until_ms,
            max_lingering: node.config.max_lingering_per_user,
        };
        if let Err(e) = node.write(op).await {
            warn!(user = %slot.user_id, session = %slot.session_id, error = %e,
                "could not record the end of a session");
        }
        if !extend.is_empty() {
            extend_storm_grace(node, extend, linger_until_ms);
        }
    }
    let watched = slot.outbox.watched_ids();
    if !watched.is_empty() {
        let _ = node.registry.cast(RegistryMsg::Unwatch {
            session: key,
            user_ids: watched,
        });
    }
    slot.outbox.close(result);
}

/// A storm began: the sessions that ended abruptly just before it (with the normal grace)
/// linger as long as the storm's. Written in the background: this session's end must not wait
/// for them. A session that was replaced or expired meanwhile is not in the record: nothing
/// changes for it.
fn extend_storm_grace(node: &Arc<Node>, sessions: Vec<(String, String)>, until: Option<u64>) {
    let node = node.clone();
    metrics::counter!(crate::metrics::STORMS).increment(1);
    warn!(
        extended = sessions.len(),
        "mass abrupt disconnect: abrupt ends linger for the storm grace"
    );
    tokio::spawn(async move {
        for (user_id, session_id) in sessions {
            let op = Op::End {
                user_id,
                session_id,
                linger_until_ms: until,
                max_lingering: node.config.max_lingering_per_user,
            };
            let _ = node.write(op).await;
        }
    });
}
