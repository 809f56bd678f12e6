//! Who may see whom (API.md "Who may see whom"): decided before a subscription reaches the
//! registry and before `GetPresence` reads the store, so the registry and the outbox only
//! ever see allowed pairs.
//!
//! - `open`: anyone may see anyone (the default).
//! - `token`: the viewer's JWT `presence_watch` claim lists whom it may see.
//! - `authorizer`: the app's `presence.v1.WatchAuthorizer`, behind `cache` (one decision
//!   cache per node, concurrent identical questions collapsed into one call).
//! - `revalidate`: pairs still watched are asked again when their decision expires or is
//!   invalidated, and revoked when it turned to DENY or HIDE.
//!
//! A viewer always sees itself, and a caller with the `presence:read` scope is not subject to
//! the policy: neither is ever asked.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

mod authorizer;
pub mod cache;
mod open;
pub mod revalidate;
mod token;

pub use authorizer::AuthorizerPolicy;
pub use cache::DecisionCache;
pub use open::OpenPolicy;
pub use token::TokenPolicy;

use crate::auth::Identity;
use crate::config::{Config, WatchPolicyMode};

/// What a viewer may see of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// As with the `open` policy.
    Allow,
    /// OFFLINE, version 0, listed in `denied_user_ids`, never an update.
    Deny,
    /// Exactly like a user the node has never seen.
    Hide,
}

impl Decision {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Hide => "hide",
        }
    }
}

/// Why no decision could be had: the request is refused whole (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("watch authorizer unavailable: {0}")]
    Unavailable(String),
}

/// One way of deciding. `ids` are distinct, never the viewer itself, and at most the id
/// limit; the answer has one decision per id, in order.
#[async_trait]
pub trait WatchPolicy: Send + Sync + 'static {
    async fn decide(
        &self,
        viewer: &str,
        identity: &Identity,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Decision>, PolicyError>;

    /// The decision cache, for policies whose decisions expire and can be revoked.
    fn cache(&self) -> Option<&DecisionCache> {
        None
    }
}

/// The node's watch policy: the configured [`WatchPolicy`] plus the rules every policy
/// shares (self, the `presence:read` scope).
#[derive(Clone)]
pub struct Policy {
    inner: Arc<dyn WatchPolicy>,
    /// `open`: nothing to ask, ever.
    open: bool,
}

impl Policy {
    pub fn new(inner: Arc<dyn WatchPolicy>, open: bool) -> Self {
        Self { inner, open }
    }

    pub fn open() -> Self {
        Self::new(Arc::new(OpenPolicy), true)
    }

    /// The policy the (validated) settings describe. Needs a Tokio runtime (the authorizer's
    /// channel is created here, connected on first use).
    pub fn from_config(config: &Config) -> Self {
        match config.watch_policy {
            WatchPolicyMode::Open => Self::open(),
            WatchPolicyMode::Token => Self::new(Arc::new(TokenPolicy), false),
            WatchPolicyMode::Authorizer => {
                Self::new(Arc::new(AuthorizerPolicy::from_config(config)), false)
            }
        }
    }

    /// Whether `identity` is subject to the policy at all.
    pub fn applies_to(&self, identity: &Identity) -> bool {
        !self.open && !identity.presence_read
    }

    /// One decision per id of `ids` (in order, duplicates allowed) for `identity`.
    pub async fn check(
        &self,
        identity: &Identity,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Decision>, PolicyError> {
        if !self.applies_to(identity) {
            return Ok(vec![Decision::Allow; ids.len()]);
        }
        let viewer = identity.user_id.as_str();
        let mut asked: Vec<String> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            if id != viewer && !index.contains_key(id.as_str()) {
                index.insert(id, asked.len());
                asked.push(id.clone());
            }
        }
        let answers = if asked.is_empty() {
            Vec::new()
        } else {
            self.inner.decide(viewer, identity, &asked, now_ms).await?
        };
        for decision in &answers {
            metrics::counter!(crate::metrics::WATCH_DECISIONS, "decision" => decision.label())
                .increment(1);
        }
        Ok(ids
            .iter()
            .map(|id| match index.get(id.as_str()) {
                Some(&i) => answers.get(i).copied().unwrap_or(Decision::Deny),
                None => Decision::Allow,
            })
            .collect())
    }

    pub fn cache(&self) -> Option<&DecisionCache> {
        self.inner.cache()
    }

    /// Drops cached decisions whose viewer is in `viewers` or user in `users`; pairs still
    /// watched are asked again at once. Returns how many were dropped.
    pub fn invalidate(&self, viewers: &[String], users: &[String]) -> usize {
        self.cache()
            .map(|cache| cache.invalidate(viewers, users))
            .unwrap_or(0)
    }
}
