//! Starting, serving and draining a node.
//!
//! Shutdown is an injected future. When it completes the node drains: health turns
//! NOT_SERVING, new sessions are refused, every session is told to `Reconnect` (jittered),
//! and whatever is still open when the grace runs out is ended with UNAVAILABLE. The
//! transport is then stopped, and abandoned if a connection still holds it, so the node
//! exits within the grace even when clients never close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::cluster::bridge::{self, BridgeTimings};
use crate::cluster::RedisStore;
use crate::config::Config;
use crate::node::{Node, NodeParts};
use crate::peers::Peers;
use crate::proto::presence_service_server::PresenceServiceServer;
use crate::registry::{Interest, Registry};
use crate::service::PresenceApi;
use crate::session::supervisor::SessionSupervisor;
use crate::session::SessionMsg;
use crate::store::{MemoryStore, Store};
use crate::sweeper;
use crate::transport::connections::{self, ConnectionSettings};
use crate::transport::request_end::EndAware;

/// The gRPC service name of `PresenceService`, as health checks name it.
pub const SERVICE_NAME: &str = "presence.v1.PresenceService";

/// Largest message health and reflection decode (they need no identity).
pub const UNAUTHENTICATED_MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Errors that stop a node from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bad configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start actor: {0}")]
    Actor(String),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("redis: {0}")]
    Redis(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("web listener: {0}")]
    Web(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Builds a node: store, actors and sweeper. The node serves nothing until `serve`.
pub async fn start(config: Config, clock: SharedClock) -> Result<Arc<Node>, ServerError> {
    let auth = config.authenticator()?;
    if auth.is_insecure() {
        warn!("PRESENCE_AUTH=insecure: callers choose their identity with x-user-id; never expose this node");
    }
    if let Some(addr) = config.metrics_addr {
        crate::metrics::install(addr).map_err(ServerError::Metrics)?;
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    let node_id = config.resolved_node_id();
    let cluster = match &config.redis_url {
        Some(_) => {
            let store = RedisStore::new(
                config.redis_endpoint(),
                &config.key_prefix,
                &node_id,
                config.status_retention_ms,
                config.node_lease_ttl_ms,
            )
            .await
            .map_err(|e| ServerError::Redis(e.to_string()))?
            .with_max_lingering(config.max_lingering_per_user);
            Some((Arc::new(store), Arc::new(Interest::default())))
        }
        None => None,
    };
    let store: Arc<dyn Store> = match &cluster {
        Some((store, _)) => store.clone(),
        None => Arc::new(MemoryStore::new(config.status_retention_ms)),
    };
    let interest = cluster.as_ref().map(|(_, interest)| interest.clone());
    let (registry, _) = Actor::spawn(None, Registry, interest)
        .await
        .map_err(|e| ServerError::Actor(e.to_string()))?;
    let timings =
        BridgeTimings::from_lease_ttl(config.node_lease_ttl_ms, config.resync_interval_ms);
    let peers = cluster
        .as_ref()
        .map(|(store, _)| store.clone() as Arc<dyn Peers>);
    let node = Arc::new(Node::new(NodeParts {
        config,
        node_id,
        clock,
        store,
        auth,
        registry,
        peers,
    }));
    // Watched pairs are asked again when their decision expires (authorizer policy).
    node.own_task(tokio::spawn(crate::policy::revalidate::run(node.clone())));
    if let Some((store, interest)) = cluster {
        info!(node_id = %node.node_id, "cluster mode: state in Redis");
        let bridge = tokio::spawn(bridge::run(node.clone(), store, interest, timings));
        node.own_task(bridge);
    }
    Ok(node)
}

/// Serves `node` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let config = node.config.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    // Both reflection versions: v1 is the standard, and widely installed grpcurl builds
    // still ask only for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let (supervisor, _) = Actor::spawn(None, SessionSupervisor, node.clone())
        .await
        .map_err(|e| ServerError::Actor(e.to_string()))?;
    // EndAware: a client's reset must end its session abruptly (tonic calls it clean).
    let presence = EndAware(
        PresenceServiceServer::new(PresenceApi::new(node.clone(), supervisor.get_cell()))
            .max_decoding_message_size(config.max_message_bytes),
    );

    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_admin, stop_rx_admin) = tokio::sync::oneshot::channel::<()>();
    let (stop_web, stop_rx_web) = tokio::sync::oneshot::channel::<()>();
    // The builder's TCP settings only apply to listeners tonic binds itself; this one is
    // given, so set them here. Without TCP_NODELAY a reply frame written right after the
    // response headers waits for the peer's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_millis(config.keepalive_interval_ms)));
    // Set: every listener serves TLS only, one certificate re-read when its files change.
    let tls = crate::tls::Tls::from_config(&config)?;
    // Health and reflection need no identity: their messages are small.
    let routes = tonic::service::Routes::new(
        health_service.max_decoding_message_size(UNAUTHENTICATED_MAX_MESSAGE_BYTES),
    )
    .add_service(reflection_v1.max_decoding_message_size(UNAUTHENTICATED_MAX_MESSAGE_BYTES))
    .add_service(reflection_v1alpha.max_decoding_message_size(UNAUTHENTICATED_MAX_MESSAGE_BYTES))
    .add_service(presence);
    let mut settings = ConnectionSettings::from_config(&config, "grpc");
    settings.keepalive_interval = Some(Duration::from_millis(config.keepalive_interval_ms));
    settings.keepalive_timeout = Some(Duration::from_millis(config.keepalive_timeout_ms));
    settings.max_concurrent_streams = Some(config.max_concurrent_streams);
    let stop = async {
        let _ = stop_rx.await;
    };
    let mut transport = match &tls {
        Some(tls) => {
            let tls_config = tls.device_config(crate::tls::ALPN_H2);
            let incoming = crate::tls::incoming(incoming, tls_config, "grpc");
            tokio::spawn(connections::serve(incoming, routes, settings, stop))
        }
        None => tokio::spawn(connections::serve(incoming, routes, settings, stop)),
    };
    let web = match config.web_addr {
        Some(addr) => {
            let stop = async {
                let _ = stop_rx_web.await;
            };
            let served = crate::web::serve(
                node.clone(),
                supervisor.get_cell(),
                addr,
                tls.as_ref(),
                stop,
            );
            Some(served.await.map_err(ServerError::Web)?)
        }
        None => None,
    };
    let sweeper = tokio::spawn(sweeper::run(node.clone()));
    let admin = match config.admin_addr {
        Some(addr) => Some(serve_admin(node.clone(), addr, tls.as_ref(), stop_rx_admin).await?),
        None => None,
    };
    let health_follower = node
        .store
        .health_changes()
        .map(|changes| tokio::spawn(follow_store_health(node.clone(), health.clone(), changes)));
    info!(node_id = %node.node_id, addr = ?addr, tls = tls.is_some(), "presence node serving");

    tokio::select! {
        _ = shutdown => {}
        result = &mut transport => {
            sweeper.abort();
            return match result {
                Ok(()) => Ok(()),
                Err(e) => Err(ServerError::Actor(format!("transport task: {e}"))),
            };
        }
    }

    let drain_started = tokio::time::Instant::now();
    drain(&node, &health).await;
    let _ = stop_tx.send(());
    let _ = stop_admin.send(());
    let _ = stop_web.send(());
    let deadline = drain_started + Duration::from_millis(config.shutdown_grace_ms);
    if tokio::time::timeout_at(deadline, &mut transport)
        .await
        .is_err()
    {
        warn!("connections still open at the end of the shutdown grace; closing them");
        transport.abort();
    }
    if let Some(mut web) = web {
        if tokio::time::timeout_at(deadline, &mut web).await.is_err() {
            warn!("web connections still open at the end of the shutdown grace; closing them");
            web.abort();
        }
    }
    if let Some(admin) = admin {
        // Change streams never end by themselves: do not wait for them.
        admin.abort();
    }
    sweeper.abort();
    if let Some(follower) = health_follower {
        follower.abort();
    }
    // Lingering sessions of this node keep counting until their grace ends (a device may
    // be reconnecting elsewhere); then the store forgets what this node still holds.
    let now = node.now_ms();
    if let Some(last) = node.store_linger_deadline() {
        let wait = Duration::from_millis(last.saturating_sub(now));
        let _ = tokio::time::timeout_at(deadline, tokio::time::sleep(wait)).await;
        let _ = node.reap().await;
    }
    // The Redis bridge (lease renewals, re-asserts) stops before the store leaves the
    // cluster, so nothing writes back the sessions `close` removes.
    node.abort_tasks();
    node.store.close(node.now_ms()).await;
    supervisor.stop(None);
    node.registry.stop(None);
    info!("presence node stopped");
    Ok(())
}

/// The drain: health NOT_SERVING, new sessions refused, every session told to `Reconnect`
/// (jittered), and whatever is still open near the end of the grace ended with UNAVAILABLE.
/// Returns when no session is left or the grace (less a margin to stop the transport) ran
/// out.
async fn drain(node: &Node, health: &tonic_health::server::HealthReporter) {
    let config = &node.config;
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let deadline = tokio::time::Instant::now() + grace;
    // Kept back from the grace to end the last streams and stop the transport.
    let margin = (grace / 4).min(Duration::from_millis(1000));
    node.start_draining();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let actors = node.sessions.actors();
    info!(
        sessions = actors.len(),
        grace_ms = config.shutdown_grace_ms,
        "draining"
    );
    // Reconnects spread over half the offline grace, so devices come back (elsewhere)
    // before their lingering sessions expire: watchers see no OFFLINE.
    let spread = (config.offline_grace_ms / 2).max(1);
    for actor in actors {
        let retry_after_ms = rand::random_range(0..=spread);
        let _ = actor.cast(SessionMsg::Drain { retry_after_ms });
    }
    let drained = tokio::time::timeout_at(deadline - margin, node.sessions.wait_empty()).await;
    if drained.is_err() {
        let left = node.sessions.actors();
        warn!(
            sessions = left.len(),
            "shutdown grace ran out; ending the remaining sessions with UNAVAILABLE"
        );
        for actor in left {
            let _ = actor.cast(SessionMsg::Shutdown);
        }
        let _ = tokio::time::timeout_at(deadline - margin / 2, node.sessions.wait_empty()).await;
    }
}

/// Serves the admin API on its own address until `stop`.
async fn serve_admin(
    node: Arc<Node>,
    addr: std::net::SocketAddr,
    tls: Option<&crate::tls::Tls>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let token = node
        .config
        .admin_token
        .as_ref()
        .map(|t| t.expose().to_owned());
    if token.is_none() {
        warn!(%addr, "PRESENCE_ADMIN_TOKEN is not set: the admin API is open to anyone who reaches {addr}");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Admin(format!("cannot listen on {addr}: {e}")))?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let settings = ConnectionSettings::from_config(&node.config, "admin");
    let service = crate::proto::presence_admin_service_server::PresenceAdminServiceServer::new(
        crate::admin::AdminApi::new(node, token),
    );
    info!(%addr, tls = tls.is_some(), "admin API serving");
    let routes = tonic::service::Routes::new(service);
    let stop = async {
        let _ = stop.await;
    };
    let tls_config = tls.map(|tls| tls.admin_config());
    Ok(tokio::spawn(async move {
        match tls_config {
            Some(tls_config) => {
                let incoming = crate::tls::incoming(incoming, tls_config, "admin");
                connections::serve(incoming, routes, settings, stop).await
            }
            None => connections::serve(incoming, routes, settings, stop).await,
        }
    }))
}

/// Keeps the service's readiness in step with the store (cluster mode: Redis reachable).
async fn follow_store_health(
    node: Arc<Node>,
    health: tonic_health::server::HealthReporter,
    mut changes: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let healthy = *changes.borrow_and_update();
        if !node.is_draining() {
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            // Readiness only: the overall service "" is the process (liveness), and a Redis
            // outage must never make a liveness probe restart the pods.
            health.set_service_status(SERVICE_NAME, status).await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// `start` then `serve`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let node = start(config, clock).await?;
    serve(node, listener, shutdown).await
}
