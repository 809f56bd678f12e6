//! The gRPC edge of `presence.v1.PresenceService`: identity and admission of each call; the
//! statuses it answers with come from `errors`.

use std::sync::Arc;

use ractor::{Actor, ActorCell};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Identity;
use crate::errors;
use crate::node::Node;
use crate::policy::Decision;
use crate::presence::UserRecord;
use crate::proto::presence_service_server::PresenceService;
use crate::proto::{ClientFrame, GetPresenceRequest, GetPresenceResponse};
use crate::session::actor::SessionActor;
use crate::session::outbox::{Outbox, OutboxStream};
use crate::session::SessionArgs;
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
        let identity = self
            .node
            .auth
            .authenticate(metadata, self.node.now_ms())
            .map_err(errors::unauthenticated)?;
        self.node
            .limits
            .check_user_id(&identity.user_id)
            .map_err(errors::unauthenticated)?;
        Ok(identity)
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
        if self.node.is_draining() {
            return Err(errors::draining());
        }
        if let Some(max) = self.node.config.max_sessions {
            if self.node.sessions.len() >= max {
                return Err(errors::node_at_capacity(max));
            }
        }
        let outbox = Outbox::bounded(
            identity.user_id.clone(),
            self.node.config.max_unread_frames,
            self.node.config.max_unread_bytes,
        );
        let (key, session_id) = self.node.next_session();
        let args = SessionArgs {
            node: self.node.clone(),
            key,
            session_id,
            identity,
            outbox: outbox.clone(),
            inbound_end: request.extensions().get::<RequestEnd>().cloned(),
            inbound: request.into_inner(),
        };
        let spawned = Actor::spawn_linked(None, SessionActor, args, self.supervisor.clone()).await;
        match spawned {
            Ok(_) => Ok(Response::new(OutboxStream::new(outbox))),
            Err(e) => Err(errors::cannot_start_session(e)),
        }
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let identity = self.identify(request.metadata())?;
        let ids = request.into_inner().user_ids;
        self.node
            .limits
            .check_lookup_ids(&ids)
            .map_err(errors::invalid_argument)?;
        // Decided before the store is read: refused users are never read.
        let decisions = self
            .node
            .policy
            .check(&identity, &ids, self.node.now_ms())
            .await
            .map_err(errors::watch_policy_unavailable)?;
        let allowed: Vec<String> = ids
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
        let presences = ids
            .iter()
            .zip(&decisions)
            .map(|(id, decision)| match decision {
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
                    if *refused == Decision::Deny && !denied_user_ids.contains(id) {
                        denied_user_ids.push(id.clone());
                    }
                    UserRecord::new(id.as_str()).view(false)
                }
            })
            .collect();
        Ok(Response::new(GetPresenceResponse {
            presences,
            denied_user_ids,
        }))
    }
}
