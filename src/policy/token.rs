//! The `token` policy: the viewer's JWT claim `presence_watch` lists the users it may see;
//! anyone else is DENY. The decision lives in the credential, so nothing is cached or
//! re-asked (a new token means a new session).

use async_trait::async_trait;

use super::{Decision, PolicyError, WatchPolicy};
use crate::auth::Identity;

pub struct TokenPolicy;

#[async_trait]
impl WatchPolicy for TokenPolicy {
    async fn decide(
        &self,
        _viewer: &str,
        identity: &Identity,
        ids: &[String],
        _now_ms: u64,
    ) -> Result<Vec<Decision>, PolicyError> {
        let allowed = identity.presence_watch.as_deref().unwrap_or_default();
        Ok(ids
            .iter()
            .map(|id| {
                if allowed.contains(id) {
                    Decision::Allow
                } else {
                    Decision::Deny
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_users_are_allowed() {
        let mut identity = Identity::user("bob");
        let ids = vec!["alice".to_owned(), "carol".to_owned()];
        let none = TokenPolicy.decide("bob", &identity, &ids, 0).await.unwrap();
        assert_eq!(none, [Decision::Deny, Decision::Deny]);
        identity.presence_watch = Some(vec!["carol".to_owned()].into());
        let some = TokenPolicy.decide("bob", &identity, &ids, 0).await.unwrap();
        assert_eq!(some, [Decision::Deny, Decision::Allow]);
    }
}
