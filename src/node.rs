//! What every part of a running node shares: settings, clock, store, actors, the table of
//! live sessions, and whether the node is draining.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ractor::ActorRef;

use crate::auth::Authenticator;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::presence::{Limits, UserRecord};
use crate::registry::{RegistryMsg, SessionKey};
use crate::session::supervisor::SupervisorMsg;
use crate::session::table::SessionTable;
use crate::store::Store;

pub struct Node {
    pub config: Config,
    pub limits: Limits,
    pub node_id: String,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub registry: ActorRef<RegistryMsg>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub sessions: SessionTable,
    /// Cluster mode: the Redis store's cluster-wide operations (admin stats, forwarding).
    pub cluster: Option<Arc<crate::cluster::RedisStore>>,
    /// Set on SIGTERM: new sessions are refused and ending sessions linger.
    draining: AtomicBool,
    next_session: AtomicU64,
    /// Random per process: session ids stay unique when a node restarts with the same id
    /// (a Kubernetes container restart keeps the pod name) while Redis still has sessions
    /// of its previous run.
    incarnation: u32,
    /// Background tasks the node owns (cluster bridge), aborted when it stops.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        node_id: String,
        clock: SharedClock,
        store: Arc<dyn Store>,
        auth: Authenticator,
        registry: ActorRef<RegistryMsg>,
        supervisor: ActorRef<SupervisorMsg>,
    ) -> Self {
        Self {
            limits: config.limits(),
            config,
            node_id,
            clock,
            store,
            auth,
            registry,
            supervisor,
            sessions: SessionTable::default(),
            cluster: None,
            draining: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            incarnation: rand::random(),
            tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// A new local session key and its cluster-wide session id.
    pub fn next_session(&self) -> (SessionKey, String) {
        let key = self.next_session.fetch_add(1, Ordering::Relaxed);
        (
            key,
            format!("{}:{:08x}:{key}", self.node_id, self.incarnation),
        )
    }

    pub fn own_task(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks.lock().unwrap().push(task);
    }

    pub fn abort_tasks(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// When the last lingering session this node holds in the store ends its grace.
    pub fn store_linger_deadline(&self) -> Option<u64> {
        self.store.last_linger_deadline()
    }

    /// Ends or moves local sessions of `user_id` (only `session_id` when given). Returns how
    /// many were told.
    pub fn disconnect_local(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        reason: &str,
        reconnect: bool,
    ) -> usize {
        let actors = self.sessions.actors_of(user_id, session_id);
        for actor in &actors {
            let _ = actor.cast(crate::session::SessionMsg::Disconnect {
                reason: reason.to_owned(),
                reconnect,
            });
        }
        actors.len()
    }

    /// An admin command from another node (cluster mode): `disconnect <TAB> reconnect|end
    /// <TAB> user <TAB> session (or empty) <TAB> reason`.
    pub fn handle_control(&self, command: &str) {
        let parts: Vec<&str> = command.splitn(5, '\t').collect();
        if let ["disconnect", mode, user, session, reason] = parts.as_slice() {
            let session = (!session.is_empty()).then_some(*session);
            self.disconnect_local(user, session, reason, *mode == "reconnect");
        }
    }

    /// Hands changed records to the registry for fan-out.
    pub fn publish(&self, records: Vec<UserRecord>) {
        if !records.is_empty() {
            // Fails only when the registry is gone, i.e. the node is stopping.
            let _ = self.registry.cast(RegistryMsg::Publish(records));
        }
    }
}
