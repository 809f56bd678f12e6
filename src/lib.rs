//! presence-node: real-time user presence over gRPC.
//!
//! # Layout
//!
//! - `proto`: the generated `presence.v1` API (from `proto/presence/v1/presence.proto`) and
//!   the codec its clients and servers use.
//! - `presence`: pure presence logic with time passed in: records, views, versions, limits.
//! - `store`: the truth about every user (trait); `store::memory` is the embedded default,
//!   `store::linger` the index of lingering sessions both stores keep.
//! - `cluster`: cluster mode on Redis: the Redis store (writes, what the node holds,
//!   re-assert, node lease, dead-node sweep; its Lua scripts in `cluster/scripts/`) and the
//!   bridge (pub/sub, interest, resync).
//! - `session`: one device's stream: the session actor, its outbox (the coalescing response
//!   stream), the table of live sessions and the supervisor that cleans up after crashes.
//! - `registry`: the actor that knows which local sessions watch which users; fans out.
//! - `sweeper`: one task finding silent sessions and ended grace periods.
//! - `policy`: who may see whom (open, token, authorizer), the decision cache, and
//!   revalidation of watched pairs.
//! - `service`: the gRPC edge (identity, admission, errors to `tonic::Status`).
//! - `admin`: the admin API (sessions, disconnect, stats, change stream), own address.
//! - `server`: start, serve, drain on shutdown.
//! - `transport`: what the transports add under the session protocol (how a request ended)
//!   and how a listener's connections are served and bounded (`transport::connections`).
//! - `web`: the web listener for browsers: `Session` over a WebSocket (the same session actor),
//!   gRPC-Web `GetPresence`, the origin allow-list and CORS, the embedded demo page.
//! - `errors`: every gRPC status the node answers with, built in one place.
//! - `limiter`: token buckets per user, per identity and per session (opens, changes,
//!   `GetPresence` calls, frames), their memory bounded.
//! - `peers`: the other nodes of a cluster as the core sees them (stats, control commands).
//! - `node`: what all of the above share.
//! - `auth`: identity from call metadata (insecure `x-user-id` or JWT).
//! - `tls`: TLS and mTLS on every listener, the certificate re-read when its files change.
//! - `config`: settings as flags and environment variables, checked at start.
//! - `client`: the one way the CLI, benchmarks and tests speak the protocol.
//! - `clock`, `telemetry`, `metrics`: time as a value; logging; Prometheus metrics.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod limiter;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod policy;
pub mod presence;
pub mod proto;
pub mod registry;
pub mod secret;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod web;
