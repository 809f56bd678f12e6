//! The other nodes of a cluster, as the core sees them: their lease stats and a control
//! channel. The admin API uses this trait, never the Redis types, so the core does not depend
//! on `cluster/` (the embedded single node has no peers).

use async_trait::async_trait;

use crate::store::StoreError;

/// One node of the cluster, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub node_id: String,
    /// Unix ms at which the lease runs out unless renewed.
    pub lease_expires_ms: u64,
    /// As of the node's last lease renewal.
    pub sessions: u64,
    pub users_online: u64,
}

#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Every node with a lease, this one included.
    async fn stats(&self) -> Result<Vec<PeerStats>, StoreError>;

    /// Sends `command` to node `node_id` (at most once; a node that is gone misses it).
    async fn send(&self, node_id: &str, command: &ControlCommand) -> Result<(), StoreError>;

    /// Whether a change stream of every user can be served (Redis Cluster has no sharded
    /// pattern subscription).
    fn can_watch_everyone(&self) -> bool;
}

/// A command from one node to another (the admin API's forwarding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// End (or, with `reconnect`, move) the sessions of `user_id` held by the receiving node;
    /// only `session_id` when given.
    Disconnect {
        user_id: String,
        session_id: Option<String>,
        reason: String,
        reconnect: bool,
    },
    /// Drop cached watch decisions whose viewer is in `viewer_ids` or user in `user_ids`
    /// (admin `InvalidateDecisions`, sent to every node).
    InvalidateDecisions {
        viewer_ids: Vec<String>,
        user_ids: Vec<String>,
    },
}

/// Separates the ids of a list inside one field (user ids cannot hold control characters).
const LIST_SEPARATOR: char = '\u{1f}';

fn join(ids: &[String]) -> String {
    ids.iter()
        .map(|id| id.replace(['\t', LIST_SEPARATOR], ""))
        .collect::<Vec<_>>()
        .join(&LIST_SEPARATOR.to_string())
}

fn split(field: &str) -> Vec<String> {
    field
        .split(LIST_SEPARATOR)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ControlCommand {
    /// The wire form: tab-separated fields, `disconnect <TAB> reconnect|end <TAB> user <TAB>
    /// session (or empty) <TAB> reason`, or `invalidate <TAB> viewers <TAB> users` (ids
    /// separated by U+001F). Tabs in the reason become spaces (user and session ids cannot
    /// hold control characters).
    pub fn encode(&self) -> String {
        match self {
            ControlCommand::Disconnect {
                user_id,
                session_id,
                reason,
                reconnect,
            } => format!(
                "disconnect\t{}\t{user_id}\t{}\t{}",
                if *reconnect { "reconnect" } else { "end" },
                session_id.as_deref().unwrap_or_default(),
                reason.replace('\t', " ")
            ),
            ControlCommand::InvalidateDecisions {
                viewer_ids,
                user_ids,
            } => format!("invalidate\t{}\t{}", join(viewer_ids), join(user_ids)),
        }
    }

    /// The inverse of [`encode`](Self::encode); `None` for anything else.
    pub fn decode(wire: &str) -> Option<Self> {
        let parts: Vec<&str> = wire.splitn(5, '\t').collect();
        match parts.as_slice() {
            ["invalidate", viewers, users] => Some(ControlCommand::InvalidateDecisions {
                viewer_ids: split(viewers),
                user_ids: split(users),
            }),
            ["disconnect", mode @ ("reconnect" | "end"), user, session, reason]
                if !user.is_empty() =>
            {
                Some(ControlCommand::Disconnect {
                    user_id: (*user).to_owned(),
                    session_id: (!session.is_empty()).then(|| (*session).to_owned()),
                    reason: (*reason).to_owned(),
                    reconnect: *mode == "reconnect",
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disconnect(session: Option<&str>, reason: &str, reconnect: bool) -> ControlCommand {
        ControlCommand::Disconnect {
            user_id: "alice".into(),
            session_id: session.map(str::to_owned),
            reason: reason.into(),
            reconnect,
        }
    }

    #[test]
    fn commands_round_trip() {
        for command in [
            disconnect(None, "maintenance", true),
            disconnect(Some("n1:0000abcd:7"), "", false),
            disconnect(None, "reason with spaces and ünïcode", false),
            ControlCommand::InvalidateDecisions {
                viewer_ids: vec!["bob".into(), "carol smith".into()],
                user_ids: vec![],
            },
            ControlCommand::InvalidateDecisions {
                viewer_ids: vec![],
                user_ids: vec!["alice".into()],
            },
        ] {
            assert_eq!(ControlCommand::decode(&command.encode()), Some(command));
        }
    }

    #[test]
    fn tabs_in_a_reason_do_not_shift_fields() {
        let wire = disconnect(None, "a\tb", true).encode();
        assert_eq!(
            ControlCommand::decode(&wire),
            Some(disconnect(None, "a b", true))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for wire in [
            "",
            "disconnect",
            "disconnect\tmaybe\talice\t\tx",
            "disconnect\tend\t\t\tx",
            "reboot\tend\talice\t\tx",
            "invalidate\tbob",
            "invalidate\tbob\talice\textra",
        ] {
            assert_eq!(ControlCommand::decode(wire), None, "{wire:?}");
        }
    }
}
