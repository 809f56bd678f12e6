//! Spawns session actors and cleans up after one that crashed, so a panicking session
//! never takes the node down nor leaves a ghost: its store entry lingers for the grace
//! (the device will likely reconnect), its watches are dropped and its stream ends.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, warn};

use super::actor::{SessionActor, SessionArgs, SessionMsg};
use crate::node::Node;
use crate::registry::{RegistryMsg, SessionKey};
use crate::store::Op;

pub enum SupervisorMsg {
    /// Starts a session actor linked to the supervisor.
    Spawn(
        Box<SessionArgs>,
        RpcReplyPort<Result<ActorRef<SessionMsg>, String>>,
    ),
}

pub struct SessionSupervisor;

#[derive(Default)]
pub struct SupervisorState {
    /// Which session each child actor serves, to clean up after a crash.
    children: HashMap<ActorId, (SessionKey, Arc<Node>)>,
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        _args: (),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn(args, reply) => {
                let key = args.key;
                let node = args.node.clone();
                let spawned =
                    Actor::spawn_linked(None, SessionActor, *args, myself.get_cell()).await;
                let result = match spawned {
                    Ok((actor, _)) => {
                        state.children.insert(actor.get_id(), (key, node));
                        Ok(actor)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden so that a child's exit never stops the supervisor (the default does).
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                error!(actor = %cell.get_id(), error = %err, "session actor crashed");
                if let Some((key, node)) = state.children.remove(&cell.get_id()) {
                    clean_up_crashed(&node, key).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Does what the crashed actor could not: the first to take the table slot cleans up.
async fn clean_up_crashed(node: &Node, key: SessionKey) {
    let Some(slot) = node.sessions.remove(key) else {
        return;
    };
    let now = node.now_ms();
    let op = Op::End {
        user_id: slot.user_id.clone(),
        session_id: slot.session_id.clone(),
        linger_until_ms: Some(now + node.config.offline_grace_ms),
    };
    match node.store.apply_one(op, now).await {
        Ok(changed) => node.publish(changed.into_iter().collect()),
        Err(e) => warn!(session = %slot.session_id, error = %e, "could not end a crashed session"),
    }
    let watched = slot.outbox.watched_ids();
    if !watched.is_empty() {
        let _ = node.registry.cast(RegistryMsg::Unwatch {
            session: key,
            user_ids: watched,
        });
    }
    slot.outbox
        .close(Err(tonic::Status::internal("session failed; reconnect")));
}
