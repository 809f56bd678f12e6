//! What every part of a running node shares: settings, clock, store, actors, the table of
//! live sessions, and whether the node is draining.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ractor::ActorRef;

use crate::auth::Authenticator;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::peers::{ControlCommand, Peers};
use crate::presence::storm::StormGuard;
use crate::presence::{Limits, UserRecord};
use crate::registry::{FanoutInput, RegistryMsg, Released, SessionKey};
use crate::session::table::SessionTable;
use crate::store::{Op, Store, StoreError};

pub struct Node {
    pub config: Config,
    pub limits: Limits,
    pub node_id: String,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub registry: ActorRef<RegistryMsg>,
    pub sessions: SessionTable,
    /// Cluster mode: the other nodes (admin stats, forwarded disconnects).
    pub peers: Option<Arc<dyn Peers>>,
    /// Mass abrupt disconnects get a longer grace (`presence::storm`).
    pub storm: std::sync::Mutex<StormGuard>,
    /// Who may see whom (PRESENCE_WATCH_POLICY).
    pub policy: crate::policy::Policy,
    /// Changed records waiting for the registry, coalesced per user (`publish`).
    pub fanout: Arc<FanoutInput>,
    /// Session opens and changes per user, `GetPresence` calls per identity.
    pub rates: Arc<crate::limiter::UserRates>,
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
    /// A node of `parts`; it serves nothing until `server::serve`.
    pub fn new(parts: NodeParts) -> Self {
        let NodeParts {
            config,
            node_id,
            clock,
            store,
            auth,
            registry,
            peers,
        } = parts;
        let fanout = Arc::new(FanoutInput::default());
        // Cast before anything can publish: the registry reads its input from then on.
        let _ = registry.cast(RegistryMsg::Attach(fanout.clone()));
        Self {
            fanout,
            policy: crate::policy::Policy::from_config(&config),
            limits: config.limits(),
            rates: Arc::new(crate::limiter::UserRates::new(&config)),
            storm: std::sync::Mutex::new(StormGuard::new(config.storm_rule())),
            config,
            node_id,
            clock,
            store,
            auth,
            registry,
            sessions: SessionTable::default(),
            peers,
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

    /// A command from another node (cluster mode), in its wire form; anything else is
    /// ignored.
    pub fn handle_control(&self, wire: &str) {
        match ControlCommand::decode(wire) {
            Some(ControlCommand::Disconnect {
                user_id,
                session_id,
                reason,
                reconnect,
            }) => {
                self.disconnect_local(&user_id, session_id.as_deref(), &reason, reconnect);
            }
            Some(ControlCommand::InvalidateDecisions {
                viewer_ids,
                user_ids,
            }) => {
                self.policy.invalidate(&viewer_ids, &user_ids);
            }
            None => tracing::debug!(command = wire, "unknown control command ignored"),
        }
    }

    /// Applies one write to the store and hands the changed record to the registry for
    /// fan-out: the one way the node changes a record.
    pub async fn write(&self, op: Op) -> Result<(), StoreError> {
        let changed = self.store.apply(op, self.now_ms()).await?;
        self.publish(changed.into_iter().collect());
        Ok(())
    }

    /// Periodic upkeep of the store (ended graces, retention), changes fanned out.
    pub async fn reap(&self) -> Result<(), StoreError> {
        let changed = self.store.reap(self.now_ms()).await?;
        self.publish(changed);
        Ok(())
    }

    /// Hands changed records to the registry for fan-out, coalesced per user: one hot user
    /// holds one pending record and the registry's mailbox at most one `Drain`, however
    /// fast it changes (watchers need the latest view, not every intermediate one). A user
    /// past its change rate (opens and ends are never refused, and other nodes' changes
    /// arrive here too) is held back and fanned out later, coalesced: never lost.
    pub fn publish(&self, records: Vec<UserRecord>) {
        if records.is_empty() {
            return;
        }
        let rates = &self.rates;
        let offered = self.fanout.offer(records, &|user| rates.deliver(user));
        if offered.drain {
            // Fails only when the registry is gone, i.e. the node is stopping.
            let _ = self.registry.cast(RegistryMsg::Drain);
        }
        for (user_id, wait) in offered.held {
            tokio::spawn(release_held(
                self.fanout.clone(),
                self.rates.clone(),
                self.registry.clone(),
                user_id,
                wait,
            ));
        }
    }
}

/// Fans out `user_id`'s held change once its rate allows (one task per held user).
async fn release_held(
    fanout: Arc<FanoutInput>,
    rates: Arc<crate::limiter::UserRates>,
    registry: ActorRef<RegistryMsg>,
    user_id: String,
    mut wait: std::time::Duration,
) {
    loop {
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
        match fanout.release(&user_id, &|user| rates.deliver(user)) {
            Released::Pending(drain) => {
                if drain {
                    let _ = registry.cast(RegistryMsg::Drain);
                }
                return;
            }
            Released::Wait(again) => wait = again,
            Released::Nothing => return,
        }
    }
}

/// What a node is made of (`Node::new`).
pub struct NodeParts {
    pub config: Config,
    pub node_id: String,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub registry: ActorRef<RegistryMsg>,
    pub peers: Option<Arc<dyn Peers>>,
}
