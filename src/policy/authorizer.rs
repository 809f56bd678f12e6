//! The `authorizer` policy: the app's `presence.v1.WatchAuthorizer` at
//! `PRESENCE_AUTHORIZER_URL`, asked once per request for the ids the cache cannot answer
//! (at most the id limit per call), with a timeout and the bearer token; any failure fails
//! the whole request (fail closed), while unexpired cached decisions go on serving.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::cache::{self, DecisionCache, Plan};
use super::{Decision, PolicyError, WatchPolicy};
use crate::auth::Identity;
use crate::config::Config;
use crate::proto::watch_authorizer_client::WatchAuthorizerClient;
use crate::proto::{CheckWatchRequest, Decision as WireDecision};

pub struct AuthorizerPolicy {
    client: WatchAuthorizerClient<Channel>,
    /// `Bearer <token>`, when a token is configured.
    bearer: Option<AsciiMetadataValue>,
    timeout: Duration,
    /// Most ids in one `CheckWatch` (the request id limit).
    max_ids: usize,
    cache: DecisionCache,
}

impl AuthorizerPolicy {
    /// From validated settings; the channel connects on first use (and again after a failure).
    pub fn from_config(config: &Config) -> Self {
        let timeout = Duration::from_millis(config.authorizer_timeout_ms);
        let url = config.authorizer_url.as_deref().unwrap_or_default();
        let channel = match crate::client::parse_server(url) {
            Ok(endpoint) => endpoint.connect_timeout(timeout).connect_lazy(),
            // Validated at start; an unusable URL still fails closed, never panics.
            Err(_) => tonic::transport::Endpoint::from_static("http://0.0.0.0:0").connect_lazy(),
        };
        let bearer = config
            .authorizer_token
            .as_ref()
            .filter(|t| !t.is_empty())
            .and_then(|t| format!("Bearer {}", t.expose()).parse().ok());
        Self {
            client: WatchAuthorizerClient::new(channel),
            bearer,
            timeout,
            max_ids: config.max_ids_per_request.max(1),
            cache: DecisionCache::new(config.authorizer_cache_ms, config.authorizer_cache_entries),
        }
    }

    /// One `CheckWatch` call.
    async fn call(&self, viewer: &str, ids: &[String]) -> Result<Vec<Decision>, PolicyError> {
        let started = Instant::now();
        let result = self.call_once(viewer, ids).await;
        metrics::histogram!(crate::metrics::AUTHORIZER_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err((reason, _)) => reason,
        };
        metrics::counter!(crate::metrics::AUTHORIZER_CALLS, "result" => outcome).increment(1);
        result.map_err(|(_, e)| e)
    }

    async fn call_once(
        &self,
        viewer: &str,
        ids: &[String],
    ) -> Result<Vec<Decision>, (&'static str, PolicyError)> {
        let mut request = tonic::Request::new(CheckWatchRequest {
            viewer_id: viewer.to_owned(),
            user_ids: ids.to_vec(),
        });
        request.set_timeout(self.timeout);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert(crate::auth::AUTHORIZATION_HEADER, bearer.clone());
        }
        let mut client = self.client.clone();
        let response = match tokio::time::timeout(self.timeout, client.check_watch(request)).await {
            Err(_) => {
                return Err((
                    "timeout",
                    PolicyError::Unavailable(format!("no answer within {:?}", self.timeout)),
                ))
            }
            Ok(Err(status)) => {
                return Err((
                    "error",
                    PolicyError::Unavailable(format!(
                        "CheckWatch failed: {}",
                        crate::client::code_name(status.code())
                    )),
                ))
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        if response.decisions.len() != ids.len() {
            return Err((
                "wrong_count",
                PolicyError::Unavailable(format!(
                    "CheckWatch answered {} decisions for {} ids",
                    response.decisions.len(),
                    ids.len()
                )),
            ));
        }
        Ok(response
            .decisions
            .into_iter()
            .map(|d| match WireDecision::try_from(d) {
                Ok(WireDecision::Allow) => Decision::Allow,
                Ok(WireDecision::Hide) => Decision::Hide,
                // UNSPECIFIED and unknown values are treated as DENY.
                _ => Decision::Deny,
            })
            .collect())
    }
}

#[async_trait]
impl WatchPolicy for AuthorizerPolicy {
    async fn decide(
        &self,
        viewer: &str,
        _identity: &Identity,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Decision>, PolicyError> {
        let (plans, flight) = self.cache.plan(viewer, ids, now_ms);
        let asked = flight.ids().len();
        let hits = plans
            .iter()
            .filter(|p| matches!(p, Plan::Cached(_)))
            .count();
        let cache = crate::metrics::DECISION_CACHE;
        metrics::counter!(cache, "result" => "hit").increment(hits as u64);
        metrics::counter!(cache, "result" => "miss").increment(asked as u64);
        metrics::counter!(cache, "result" => "collapsed")
            .increment((ids.len() - hits - asked) as u64);
        let mut fresh = Vec::with_capacity(asked);
        if asked > 0 {
            let to_ask = flight.ids().to_vec();
            for chunk in to_ask.chunks(self.max_ids) {
                match self.call(viewer, chunk).await {
                    Ok(decisions) => fresh.extend(decisions),
                    Err(e) => {
                        flight.fail(e.clone());
                        return Err(e);
                    }
                }
            }
            flight.answer(&fresh, now_ms);
        }
        let mut fresh = fresh.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for plan in plans {
            out.push(match plan {
                Plan::Cached(decision) => decision,
                Plan::Ask => fresh.next().unwrap_or(Decision::Deny),
                Plan::Wait(answer, index) => {
                    // The asking call is bounded by its own timeout; this bounds the wait
                    // even if it were not.
                    match tokio::time::timeout(self.timeout * 2, cache::wait(answer, index)).await {
                        Ok(result) => result?,
                        Err(_) => {
                            return Err(PolicyError::Unavailable(
                                "no answer within the timeout".into(),
                            ))
                        }
                    }
                }
            });
        }
        Ok(out)
    }

    fn cache(&self) -> Option<&DecisionCache> {
        Some(&self.cache)
    }
}
