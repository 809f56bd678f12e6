//! `presence.v1.PresenceAdminService`: sessions, disconnects, stats and a change stream for
//! operators and backends. Served only on its own address (`PRESENCE_ADMIN_ADDR`), and
//! guarded by `PRESENCE_ADMIN_TOKEN` when set. See docs/admin-api.md.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::errors;
use crate::node::Node;
use crate::peers::ControlCommand;
use crate::proto::presence_admin_service_server::PresenceAdminService;
use crate::proto::{
    DisconnectMode, DisconnectRequest, DisconnectResponse, InvalidateDecisionsRequest,
    InvalidateDecisionsResponse, ListSessionsRequest, ListSessionsResponse, NodeStats,
    PresenceChange, SessionInfo, StatsRequest, StatsResponse, UserSessions, WatchChangesRequest,
};
use crate::registry::{ChangeWatcher, RegistryMsg};

/// Changes a `WatchChanges` stream may have queued before it is ended as too slow.
const CHANGE_QUEUE: usize = 4096;

pub struct AdminApi {
    node: Arc<Node>,
    token: Option<String>,
    next_watch: AtomicU64,
}

impl AdminApi {
    pub fn new(node: Arc<Node>, token: Option<String>) -> Self {
        Self {
            node,
            token,
            next_watch: AtomicU64::new(1),
        }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .unwrap_or_default();
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(errors::admin::token_required())
        }
    }

    fn check_ids(&self, ids: &[String]) -> Result<(), Status> {
        self.node
            .limits
            .check_lookup_ids(ids)
            .map_err(errors::invalid_argument)
    }

    async fn records(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<crate::presence::UserRecord>>, Status> {
        self.node
            .store
            .get(ids, self.node.now_ms())
            .await
            .map_err(|e| errors::store(&e))
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<PresenceChange, Status>> + Send>>;

#[tonic::async_trait]
impl PresenceAdminService for AdminApi {
    type WatchChangesStream = ChangeStream;

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        self.authorize(&request)?;
        let mut ids = request.into_inner().user_ids;
        let only_here = ids.is_empty();
        if only_here {
            let users: HashSet<String> = self
                .node
                .sessions
                .list()
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            ids = users.into_iter().collect();
            ids.sort();
        }
        self.check_ids(&ids)
            .or_else(|e| if only_here { Ok(()) } else { Err(e) })?;
        let mut users = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.node.limits.max_ids_per_request.max(1)) {
            for (id, record) in chunk.iter().zip(self.records(chunk).await?) {
                let sessions = record
                    .map(|r| r.sessions)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| !only_here || s.node_id == self.node.node_id)
                    .map(|s| SessionInfo {
                        session_id: s.session_id,
                        node_id: s.node_id,
                        device: s.device,
                        connected_at_ms: s.connected_at_ms,
                        lingering_until_ms: s.linger_until_ms.unwrap_or(0),
                    })
                    .collect();
                users.push(UserSessions {
                    user_id: id.clone(),
                    sessions,
                });
            }
        }
        Ok(Response::new(ListSessionsResponse { users }))
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        self.check_ids(std::slice::from_ref(&req.user_id))?;
        let reconnect = match DisconnectMode::try_from(req.mode) {
            Ok(DisconnectMode::Reconnect) => true,
            Ok(DisconnectMode::End) => false,
            _ => return Err(errors::admin::bad_disconnect_mode()),
        };
        let session = (!req.session_id.is_empty()).then_some(req.session_id.as_str());
        let reason = if req.reason.is_empty() {
            "disconnected by an operator".to_owned()
        } else {
            req.reason.chars().take(256).collect()
        };
        let local = self
            .node
            .disconnect_local(&req.user_id, session, &reason, reconnect);
        // Sessions held by other nodes (cluster mode): one command per node.
        let mut forwarded = 0;
        if let Some(peers) = &self.node.peers {
            let record = self.records(std::slice::from_ref(&req.user_id)).await?;
            let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
            for s in record.into_iter().flatten().flat_map(|r| r.sessions) {
                if s.node_id != self.node.node_id
                    && s.is_live()
                    && session.is_none_or(|id| id == s.session_id)
                {
                    *per_node.entry(s.node_id).or_default() += 1;
                }
            }
            let command = ControlCommand::Disconnect {
                user_id: req.user_id.clone(),
                session_id: session.map(str::to_owned),
                reason,
                reconnect,
            };
            for (node, count) in per_node {
                peers
                    .send(&node, &command)
                    .await
                    .map_err(|e| errors::store(&e))?;
                forwarded += count;
            }
        }
        Ok(Response::new(DisconnectResponse {
            local_sessions: local as u32,
            forwarded_sessions: forwarded,
        }))
    }

    async fn invalidate_decisions(
        &self,
        request: Request<InvalidateDecisionsRequest>,
    ) -> Result<Response<InvalidateDecisionsResponse>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        self.check_ids(&req.viewer_ids)?;
        self.check_ids(&req.user_ids)?;
        let local_dropped = self.node.policy.invalidate(&req.viewer_ids, &req.user_ids) as u64;
        // Every other node with a lease drops its own (each node caches for itself).
        let mut forwarded_nodes = 0;
        if let Some(peers) = &self.node.peers {
            let command = ControlCommand::InvalidateDecisions {
                viewer_ids: req.viewer_ids,
                user_ids: req.user_ids,
            };
            let nodes = peers.stats().await.map_err(|e| errors::store(&e))?;
            for peer in nodes.iter().filter(|p| p.node_id != self.node.node_id) {
                peers
                    .send(&peer.node_id, &command)
                    .await
                    .map_err(|e| errors::store(&e))?;
                forwarded_nodes += 1;
            }
        }
        Ok(Response::new(InvalidateDecisionsResponse {
            local_dropped,
            forwarded_nodes,
        }))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        self.authorize(&request)?;
        let nodes = match &self.node.peers {
            Some(peers) => peers
                .stats()
                .await
                .map_err(|e| errors::store(&e))?
                .into_iter()
                .map(|peer| {
                    // This node's own numbers are fresher than its last lease renewal.
                    let own = peer.node_id == self.node.node_id;
                    NodeStats {
                        sessions: if own {
                            self.node.sessions.len() as u64
                        } else {
                            peer.sessions
                        },
                        users_online: if own {
                            self.node.sessions.users() as u64
                        } else {
                            peer.users_online
                        },
                        node_id: peer.node_id,
                        lease_expires_ms: peer.lease_expires_ms,
                    }
                })
                .collect(),
            None => vec![NodeStats {
                node_id: self.node.node_id.clone(),
                sessions: self.node.sessions.len() as u64,
                users_online: self.node.sessions.users() as u64,
                lease_expires_ms: 0,
            }],
        };
        let total_sessions = nodes.iter().map(|n| n.sessions).sum();
        Ok(Response::new(StatsResponse {
            node_id: self.node.node_id.clone(),
            nodes,
            total_sessions,
        }))
    }

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        self.authorize(&request)?;
        let ids = request.into_inner().user_ids;
        self.check_ids(&ids)?;
        if ids.is_empty() {
            if let Some(peers) = &self.node.peers {
                if !peers.can_watch_everyone() {
                    return Err(errors::admin::cannot_watch_everyone());
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(CHANGE_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let watcher = ChangeWatcher {
            id,
            users: (!ids.is_empty()).then(|| ids.into_iter().collect()),
            tx,
            overflowed: overflowed.clone(),
        };
        let registered = self
            .node
            .registry
            .call(|reply| RegistryMsg::WatchChanges(watcher, reply), None)
            .await;
        if !matches!(registered, Ok(ractor::rpc::CallResult::Success(()))) {
            return Err(errors::stopping());
        }
        let guard = Unregister {
            registry: self.node.registry.clone(),
            id,
        };
        let node_id = self.node.node_id.clone();
        let changes = futures::stream::unfold(
            (rx, overflowed, guard, node_id, false),
            |(mut rx, overflowed, guard, node_id, done)| async move {
                if done {
                    return None;
                }
                match rx.recv().await {
                    Some(presence) => {
                        let change = PresenceChange {
                            presence: Some(presence),
                            node_id: node_id.clone(),
                        };
                        Some((Ok(change), (rx, overflowed, guard, node_id, false)))
                    }
                    None if overflowed.load(Ordering::SeqCst) => Some((
                        Err(errors::admin::change_stream_behind()),
                        (rx, overflowed, guard, node_id, true),
                    )),
                    None => None,
                }
            },
        );
        Ok(Response::new(Box::pin(changes)))
    }
}

/// Removes a change stream from the registry when the backend goes away.
struct Unregister {
    registry: ractor::ActorRef<RegistryMsg>,
    id: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        let _ = self.registry.cast(RegistryMsg::UnwatchChanges(self.id));
    }
}
