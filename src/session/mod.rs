//! One device's `Session` stream.
//!
//! - `admission`: admitting a new session (identity, draining, rates, cap), on any transport.
//! - `actor`: the session actor (hello, heartbeats, status, subscriptions).
//! - `end`: how a session ends, and the one routine that ends it.
//! - `outbox`: the outbound queue that is also the response stream; coalesces per user.
//! - `watch_list`: a session's watched users, compact (every idle session holds one).
//! - `table`: the node's live sessions, with the liveness deadlines the sweeper checks.
//! - `supervisor`: spawns session actors and cleans up after one that crashed.

pub mod actor;
pub mod admission;
pub mod end;
pub mod outbox;
pub mod supervisor;
pub mod table;
pub mod watch_list;

pub use actor::{Inbound, SessionArgs, SessionMsg};
