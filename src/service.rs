//! The gRPC edge of `presence.v1.PresenceService`: identity and admission of each call; the
//! statuses it answers with come from `errors`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;

use ractor::ActorCell;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Identity;
use crate::errors;
use crate::node::Node;
use crate::policy::Decision;
use crate::presence::{Limits, UserRecord};
use crate::proto::presence_service_server::PresenceService;
use crate::proto::{ClientFrame, GetPresenceRequest, GetPresenceResponse, Presence};
use crate::session::admission::{self, Transport};
use crate::session::outbox::OutboxStream;
use crate::session::Inbound;
use crate::transport::request_end::RequestEnd;

pub struct PresenceApi {
    node: Arc<Node>,
    /// Session actors are spawned linked to it, so a crashing one is cleaned up.
    supervisor: ActorCell,
}

impl PresenceApi {
    pub fn new(node: Arc<Node>, supervisor: ActorCell) -> Self {
        Self { node, supervisor }
    }

    /// The caller's identity, checked once when the call starts.
    fn identify(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Identity, Status> {
        admission::identify(&self.node, metadata)
    }
}

#[tonic::async_trait]
impl PresenceService for PresenceApi {
    type SessionStream = OutboxStream;

    async fn session(
        &self,
        request: Request<Streaming<ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = self.identify(request.metadata())?;
        let inbound_end = request.extensions().get::<RequestEnd>().cloned();
        let inbound = Inbound::grpc(request.into_inner(), inbound_end);
        let outbox = admission::open(
            &self.node,
            &self.supervisor,
            identity,
            inbound,
            Transport::Grpc,
        )
        .await?;
        Ok(Response::new(OutboxStream::new(outbox)))
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let identity = self.identify(request.metadata())?;
        if let Err(wait) = self.node.rates.get(&identity.user_id) {
            metrics::counter!(crate::metrics::REFUSED, "reason" => "get_rate").increment(1);
            return Err(errors::rate_limited("GetPresence calls", wait));
        }
        let ids = request.into_inner().user_ids;
        self.node
            .limits
            .check_lookup_ids(&ids)
            .map_err(errors::invalid_argument)?;
        // Each distinct id is decided, read and viewed once; a repeated id shares its view.
        let distinct = distinct_ids(&ids);
        // Decided before the store is read: refused users are never read.
        let decisions = self
            .node
            .policy
            .check(&identity, &distinct, self.node.now_ms())
            .await
            .map_err(errors::watch_policy_unavailable)?;
        let allowed: Vec<String> = distinct
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| **d == Decision::Allow)
            .map(|(id, _)| id.clone())
            .collect();
        let mut records = if allowed.is_empty() {
            Vec::new()
        } else {
            self.node
                .store
                .get(&allowed, self.node.now_ms())
                .await
                .map_err(|e| errors::store(&e))?
        }
        .into_iter();
        let mut denied_user_ids: Vec<String> = Vec::new();
        let views: HashMap<&str, Presence> = distinct
            .iter()
            .zip(&decisions)
            .map(|(id, decision)| {
                let view = match decision {
                    Decision::Allow => {
                        let owner = *id == identity.user_id;
                        records
                            .next()
                            .flatten()
                            .unwrap_or_else(|| UserRecord::new(id.as_str()))
                            .view(owner)
                    }
                    // Both look exactly like a never-seen user; only DENY is listed.
                    refused => {
                        if *refused == Decision::Deny {
                            denied_user_ids.push(id.clone());
                        }
                        UserRecord::new(id.as_str()).view(false)
                    }
                };
                (id.as_str(), view)
            })
            .collect();
        // The answer's size, known before any copy is made: refused past the bound.
        let bytes: usize = ids
            .iter()
            .map(|id| {
                let len = views.get(id.as_str()).map_or(0, Message::encoded_len);
                1 + prost::length_delimiter_len(len) + len
            })
            .sum::<usize>()
            + denied_user_ids
                .iter()
                .map(|id| 1 + prost::length_delimiter_len(id.len()) + id.len())
                .sum::<usize>();
        let max = max_answer_bytes(&self.node.limits, self.node.config.max_lingering_per_user);
        if bytes > max {
            metrics::counter!(crate::metrics::REFUSED, "reason" => "get_answer_bytes").increment(1);
            return Err(errors::answer_too_large(bytes, max));
        }
        let presences = ids
            .iter()
            .filter_map(|id| views.get(id.as_str()).cloned())
            .collect();
        Ok(Response::new(GetPresenceResponse {
            presences,
            denied_user_ids,
        }))
    }
}

/// The ids in the order of their first appearance, each once.
fn distinct_ids(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// gRPC's default limit on a decoded message, in clients as in this node: an answer larger
/// than that would fail in the caller's decoder anyway.
const GRPC_DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The largest `GetPresence` answer the limits allow, capped at gRPC's default message size.
///
/// One `Presence` is at most: the user id, the status text, and the device labels of the live
/// sessions plus the lingering ones (`PRESENCE_MAX_SESSIONS_PER_USER` +
/// `PRESENCE_MAX_LINGERING_PER_USER`, distinct labels), each with its tag and length (3 bytes
/// for the id and the text, 2 for a label), plus four varints (status, since, last seen, version: at most 11 bytes each
/// with tags) and its own tag and length (3 bytes). With the defaults (128-byte ids, 256-byte
/// text, 16 + 16 sessions of 64-byte labels) that is 131 + 259 + 32 x 66 + 44 + 3 = 2,549
/// bytes; plus a denied id of 131 bytes, times 1,000 ids: 2,680,000 bytes (2.6 MiB).
/// Anything larger (records built under other limits, or limits raised past what gRPC clients
/// decode) is refused with RESOURCE_EXHAUSTED rather than sent.
pub fn max_answer_bytes(limits: &Limits, max_lingering: usize) -> usize {
    let field = |len: usize| 1 + prost::length_delimiter_len(len) + len;
    let devices = (limits.max_sessions_per_user + max_lingering) * field(limits.max_device_bytes);
    let presence =
        field(limits.max_user_id_bytes) + field(limits.max_status_text_bytes) + devices + 4 * 11;
    let per_id = field(presence) + field(limits.max_user_id_bytes);
    (per_id * limits.max_ids_per_request).min(GRPC_DEFAULT_MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_worst_case_answer_fits_a_grpc_message() {
        let max = max_answer_bytes(&Limits::default(), 16);
        assert_eq!(max, 2_680_000);
        assert!(max < GRPC_DEFAULT_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn repeated_ids_are_kept_once_in_order() {
        let ids: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        assert_eq!(distinct_ids(&ids), vec!["b", "a", "c"]);
    }
}
