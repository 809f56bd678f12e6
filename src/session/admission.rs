//! Admitting a new session, whatever carries it (a gRPC `Session` call, a WebSocket): the
//! caller's identity, then draining, the per-user open rate and the node's session cap, then
//! the actor. Both transports go through here, so a session is admitted by the same rules.

use std::sync::Arc;

use ractor::{Actor, ActorCell};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::actor::{Inbound, SessionActor};
use super::outbox::Outbox;
use super::SessionArgs;
use crate::auth::Identity;
use crate::errors;
use crate::node::Node;

/// The transport a session arrived on (the `transport` label of the admitted metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    WebSocket,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::WebSocket => "websocket",
        }
    }
}

/// The caller's identity from its metadata (headers), checked once when the call starts.
pub fn identify(node: &Node, metadata: &MetadataMap) -> Result<Identity, Status> {
    let identity = node
        .auth
        .authenticate(metadata, node.now_ms())
        .map_err(errors::unauthenticated)?;
    node.limits
        .check_user_id(&identity.user_id)
        .map_err(errors::unauthenticated)?;
    Ok(identity)
}

/// Admits a session of `identity` reading `inbound`; its replies are the returned outbox,
/// which ends with the session's result. Refusals are the statuses the gRPC call answers.
pub async fn open(
    node: &Arc<Node>,
    supervisor: &ActorCell,
    identity: Identity,
    inbound: Inbound,
    transport: Transport,
) -> Result<Arc<Outbox>, Status> {
    if node.is_draining() {
        return Err(errors::draining());
    }
    // New sessions per user on this node, counted at admission: before an actor, a reader
    // task or a table slot is spent on the stream.
    if let Err(wait) = node.rates.open(&identity.user_id) {
        metrics::counter!(crate::metrics::REFUSED, "reason" => "session_open_rate").increment(1);
        return Err(errors::rate_limited("session opens", wait));
    }
    if let Some(max) = node.config.max_sessions {
        if node.sessions.len() >= max {
            return Err(errors::node_at_capacity(max));
        }
    }
    let outbox = Outbox::bounded(
        identity.user_id.clone(),
        node.config.max_unread_frames,
        node.config.max_unread_bytes,
    );
    let (key, session_id) = node.next_session();
    let args = SessionArgs {
        node: node.clone(),
        key,
        session_id,
        identity,
        outbox: outbox.clone(),
        inbound,
    };
    match Actor::spawn_linked(None, SessionActor, args, supervisor.clone()).await {
        Ok(_) => {
            metrics::counter!(crate::metrics::SESSIONS_ADMITTED, "transport" => transport.label())
                .increment(1);
            Ok(outbox)
        }
        Err(e) => Err(errors::cannot_start_session(e)),
    }
}
