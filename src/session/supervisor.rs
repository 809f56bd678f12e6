//! Supervises session actors and cleans up after one that crashed, so a panicking session
//! never takes the node down nor leaves a ghost: its store entry lingers for the grace
//! (the device will likely reconnect), its watches are dropped and its stream ends.
//!
//! Sessions are spawned linked to it directly by the service (not through its mailbox, which
//! would make every session start wait in one queue); on a crash it finds the session by
//! its actor id in the session table.

use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::error;

use super::end::{close_session, Linger};
use crate::errors;
use crate::node::Node;

/// Spawned by `server::serve` for the node it serves; it has no messages of its own, only
/// supervision events.
pub struct SessionSupervisor;

impl Actor for SessionSupervisor {
    type Msg = ();
    type State = Arc<Node>;
    type Arguments = Arc<Node>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        node: Arc<Node>,
    ) -> Result<Arc<Node>, ActorProcessingErr> {
        Ok(node)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        node: &mut Arc<Node>,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden so that a child's exit never stops the supervisor (the default does).
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            error!(actor = %cell.get_id(), error = %err, "session actor crashed");
            clean_up_crashed(node, cell.get_id()).await;
        }
        Ok(())
    }
}

/// Does what the crashed actor could not: the first to take the table slot cleans up. The
/// session lingers like any abrupt end (the device will likely reconnect).
async fn clean_up_crashed(node: &Arc<Node>, actor: ActorId) {
    let Some(key) = node.sessions.key_of_actor(actor) else {
        return;
    };
    let Some(slot) = node.sessions.remove(key) else {
        return;
    };
    close_session(
        node,
        key,
        slot,
        true,
        Linger::Abrupt,
        Err(errors::session::crashed()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::client::{self, Credentials, Session};
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::proto::{Hello, Status};
    use crate::server;
    use crate::session::SessionMsg;

    async fn presence_of(url: &str, user: &str) -> Status {
        let channel = client::connect(url).await.unwrap();
        let p = client::get_presence(channel, &Credentials::User("bob".into()), vec![user.into()])
            .await
            .unwrap();
        Status::try_from(p[0].status).unwrap()
    }

    #[tokio::test]
    async fn a_crashing_session_is_cleaned_up_and_the_node_goes_on() {
        let config = Config::from_args(["presence-node", "--sweep-interval-ms", "10"]).unwrap();
        let clock = ManualClock::new(1_800_000_000_000);
        let node = server::start(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = tokio::spawn(server::serve(
            node.clone(),
            listener,
            std::future::pending(),
        ));
        let hello = |device: &str| Hello {
            device: device.into(),
            status: None,
            status_text: String::new(),
        };
        let channel = client::connect(&url).await.unwrap();
        let alice = Credentials::User("alice".into());
        let (mut session, _) = Session::open(channel.clone(), &alice, hello("ios"))
            .await
            .unwrap();
        session.subscribe(vec!["carol".into()]).await.unwrap();

        for actor in node.sessions.actors() {
            actor.cast(SessionMsg::Crash).unwrap();
        }
        // The device's stream ends with an error it can act on (reconnect).
        let end = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), session.recv())
                .await
                .expect("stream ends")
            {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        let code = end.expect_err("stream fails").code();
        assert!(
            matches!(code, tonic::Code::Internal | tonic::Code::Unavailable),
            "{code:?}"
        );
        assert!(node.sessions.is_empty());
        // Nothing left in the registry, and the session lingers like any abrupt end.
        let (users, _) = node
            .registry
            .call(crate::registry::RegistryMsg::Count, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(users, 0);
        assert_eq!(presence_of(&url, "alice").await, Status::Online);
        clock.advance(3_000);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while presence_of(&url, "alice").await != Status::Offline {
            assert!(
                tokio::time::Instant::now() < deadline,
                "alice never went offline"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The node still serves.
        let (_again, welcome) = Session::open(channel, &alice, hello("ios")).await.unwrap();
        assert_eq!(welcome.user_id, "alice");
        serving.abort();
    }
}
