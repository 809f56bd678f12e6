//! The gRPC edge of `presence.v1.PresenceService`: identity, admission, and the one place
//! where internal errors become `tonic::Status`.

use std::sync::Arc;

use ractor::Actor;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AuthError, Identity};
use crate::node::Node;
use crate::presence::UserRecord;
use crate::proto::presence_service_server::PresenceService;
use crate::proto::{ClientFrame, GetPresenceRequest, GetPresenceResponse};
use crate::session::actor::SessionActor;
use crate::session::outbox::{Outbox, OutboxStream};
use crate::session::SessionArgs;
use crate::store::StoreError;

pub struct PresenceApi {
    node: Arc<Node>,
}

impl PresenceApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The caller's identity, checked once when the call starts.
    fn identify(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Identity, Status> {
        let identity = self
            .node
            .auth
            .authenticate(metadata, self.node.now_ms())
            .map_err(auth_status)?;
        self.node
            .limits
            .check_user_id(&identity.user_id)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Ok(identity)
    }
}

/// Refusal of a session over the node's cap, with gRPC's standard retry hint
/// (`grpc-retry-pushback-ms`, jittered) so clients back off and the load balancer can pick
/// another node.
fn shed(max: usize) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "node at capacity ({max} sessions); retry later or elsewhere"
    ));
    let retry_ms = rand::random_range(1_000..=5_000u64);
    if let Ok(value) = retry_ms.to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

fn auth_status(e: AuthError) -> Status {
    Status::unauthenticated(e.to_string())
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(msg) | StoreError::Contended(msg) => Status::unavailable(msg),
        StoreError::Record(e) => Status::resource_exhausted(e.to_string()),
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
            return Err(Status::unavailable(
                "node draining; reconnect to another node",
            ));
        }
        if let Some(max) = self.node.config.max_sessions {
            if self.node.sessions.len() >= max {
                return Err(shed(max));
            }
        }
        let outbox = Outbox::new(identity.user_id.clone(), self.node.config.max_unread_frames);
        let (key, session_id) = self.node.next_session();
        let args = SessionArgs {
            node: self.node.clone(),
            key,
            session_id,
            identity,
            outbox: outbox.clone(),
            inbound: request.into_inner(),
        };
        let spawned =
            Actor::spawn_linked(None, SessionActor, args, self.node.supervisor.get_cell()).await;
        match spawned {
            Ok(_) => Ok(Response::new(OutboxStream::new(outbox))),
            Err(e) => Err(Status::unavailable(format!("cannot start a session: {e}"))),
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
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let records = self
            .node
            .store
            .get(&ids, self.node.now_ms())
            .await
            .map_err(store_status)?;
        let presences = ids
            .iter()
            .zip(records)
            .map(|(id, record)| {
                let owner = *id == identity.user_id;
                record
                    .unwrap_or_else(|| UserRecord::new(id.as_str()))
                    .view(owner)
            })
            .collect();
        Ok(Response::new(GetPresenceResponse { presences }))
    }
}
