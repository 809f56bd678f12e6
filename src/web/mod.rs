//! The web listener (`PRESENCE_WEB_ADDR`): what browsers use, since they cannot open a
//! bidirectional gRPC stream (API.md, "Browsers: the web listener"). HTTP/1.1 and HTTP/2 (TLS
//! with the node's certificate when set, ALPN h2 and http/1.1), served by the same bounded
//! connection serving as the gRPC port (`transport::connections`).
//!
//! - `session`: `GET /v1/session`, the `Session` protocol over a WebSocket (the same actor).
//! - `codec`: frames as WebSocket messages (`presence.v1.proto`, `presence.v1.json`).
//! - `close`: a session's result as a WebSocket close (4000 + gRPC code).
//! - `identity`: the credential from the query or the headers.
//! - `origin`: the `Origin` allow-list (403) and CORS.
//! - `demo`: the demo page, embedded.
//!
//! gRPC-Web serves `presence.v1.PresenceService/GetPresence` only (tonic-web); the `Session`
//! call is the WebSocket.

pub mod close;
pub mod codec;
pub mod demo;
pub mod identity;
pub mod origin;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get};
use axum::Router;
use ractor::ActorCell;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tower::ServiceExt;

use crate::node::Node;
use crate::proto::presence_service_server::PresenceServiceServer;
use crate::service::PresenceApi;
use crate::transport::connections::{self, ConnectionSettings};

/// Path of the WebSocket session.
pub const SESSION_PATH: &str = "/v1/session";
/// The one gRPC(-Web) method the listener serves.
pub const GET_PRESENCE_PATH: &str = "/presence.v1.PresenceService/GetPresence";

/// What the listener's handlers share.
pub struct WebState {
    pub node: Arc<Node>,
    pub supervisor: ActorCell,
}

/// The listener's routes: the session, gRPC-Web `GetPresence`, the demo page; every request
/// passes the origin check first, allowed cross-origin ones get CORS headers.
pub fn router(node: Arc<Node>, supervisor: ActorCell, tls: bool) -> Result<Router, String> {
    let allowed = origin::AllowedOrigins::parse(&node.config.web_allowed_origins)?;
    let policy = Arc::new(origin::OriginPolicy::new(allowed, tls));
    let grpc_web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebLayer::new())
        .service(
            PresenceServiceServer::new(PresenceApi::new(node.clone(), supervisor.clone()))
                .max_decoding_message_size(node.config.max_message_bytes),
        );
    let state = Arc::new(WebState { node, supervisor });
    Ok(Router::new()
        // `any`: a WebSocket over HTTP/2 (RFC 8441) is a CONNECT, not a GET.
        .route(SESSION_PATH, any(session::upgrade))
        .route_service(GET_PRESENCE_PATH, grpc_web)
        .route("/", get(demo::index))
        .route(demo::SCRIPT_PATH, get(demo::script))
        .with_state(state)
        .layer(origin::cors())
        .layer(axum::middleware::from_fn_with_state(policy, origin::check)))
}

/// Binds `addr` and serves the web listener until `stop`; the returned task ends when every
/// connection it served has closed (upgraded WebSockets end with their sessions).
pub async fn serve(
    node: Arc<Node>,
    supervisor: ActorCell,
    addr: SocketAddr,
    tls: Option<&crate::tls::Tls>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let router = router(node.clone(), supervisor, tls.is_some())?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_millis(
            node.config.keepalive_interval_ms,
        )));
    let mut settings = ConnectionSettings::from_config(&node.config, "web");
    settings.http1 = true;
    settings.keepalive_interval = Some(Duration::from_millis(node.config.keepalive_interval_ms));
    settings.keepalive_timeout = Some(Duration::from_millis(node.config.keepalive_timeout_ms));
    settings.max_concurrent_streams = Some(node.config.max_concurrent_streams);
    // The router's responses as tonic bodies, the type the connection serving speaks.
    let service = ServiceExt::<axum::http::Request<tonic::body::Body>>::map_response(
        router,
        |response: axum::response::Response| response.map(tonic::body::Body::new),
    );
    tracing::info!(%addr, tls = tls.is_some(), "web listener serving (WebSocket sessions at {SESSION_PATH}, demo at /)");
    let tls_config = tls.map(|tls| tls.device_config(crate::tls::ALPN_H2_HTTP1));
    Ok(tokio::spawn(async move {
        match tls_config {
            Some(config) => {
                let incoming = crate::tls::incoming(incoming, config, "web");
                connections::serve_service(incoming, service, settings, stop).await
            }
            None => connections::serve_service(incoming, service, settings, stop).await,
        }
    }))
}
