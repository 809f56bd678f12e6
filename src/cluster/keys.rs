//! Redis key and channel names. All of one user's keys share the hash tag `{u:<id>}` so a
//! per-user script touches one slot (Redis Cluster); node-level keys share `{<prefix>:nodes}`.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `<p>:{u:<id>}` | hash | `v` version, `r` version + newline + record (JSON); TTL = status retention |
//! | `<p>:{u:<id>}:ch` | channel | change events of the user |
//! | `{<p>:nodes}:leases` | zset | node id -> lease expiry (unix ms, Redis clock) |
//! | `{<p>:nodes}:idx:<node>` | set | users that have (or had) sessions on the node |
//! | `{<p>:nodes}:sweep:<node>` | string | who sweeps a dead node (claim, with expiry) |
//! | `{<p>:nodes}:stats` | hash | node id -> "sessions users" (with each lease renewal) |
//! | `{<p>:nodes}:ctl:<node>` | channel | admin commands for a node (disconnect) |

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn user(&self, user_id: &str) -> String {
        format!("{}:{{u:{user_id}}}", self.prefix)
    }

    pub fn channel(&self, user_id: &str) -> String {
        format!("{}:{{u:{user_id}}}:ch", self.prefix)
    }

    /// The user id of a channel name, if it is one of ours.
    pub fn user_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{u:")?
            .strip_suffix("}:ch")
    }

    pub fn leases(&self) -> String {
        format!("{{{}:nodes}}:leases", self.prefix)
    }

    pub fn node_index(&self, node_id: &str) -> String {
        format!("{{{}:nodes}}:idx:{node_id}", self.prefix)
    }

    /// node id -> "sessions users", written with each lease renewal (admin `Stats`).
    pub fn node_stats(&self) -> String {
        format!("{{{}:nodes}}:stats", self.prefix)
    }

    /// Commands for one node (admin `Disconnect` of a session held elsewhere).
    pub fn node_control(&self, node_id: &str) -> String {
        format!("{{{}:nodes}}:ctl:{node_id}", self.prefix)
    }

    /// Every user channel (pattern; one Redis only: admin `WatchChanges` of everyone).
    pub fn all_user_channels(&self) -> String {
        format!("{}:{{u:*}}:ch", self.prefix)
    }

    pub fn sweep_claim(&self, node_id: &str) -> String {
        format!("{{{}:nodes}}:sweep:{node_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_even_with_odd_user_ids() {
        let keys = Keys::new("presence");
        for user in ["alice", "a}b", "{x}", "ü:1"] {
            assert_eq!(keys.user_of_channel(&keys.channel(user)), Some(user));
        }
        assert_eq!(keys.user_of_channel("other:{u:a}:ch"), None);
        assert_eq!(keys.user("alice"), "presence:{u:alice}");
        assert_eq!(keys.leases(), "{presence:nodes}:leases");
    }
}
