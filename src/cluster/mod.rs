//! Cluster mode: many nodes sharing Redis.
//!
//! - `keys`: every Redis key and channel name (one place, with the prefix and hash tags).
//! - `codec`: how a user record and a change event are stored and sent.
//! - `connection`: standalone Redis or Redis Cluster behind one type (commands and events).
//! - `store`: the Redis store (the `Store` trait): compare-and-set writes through a script
//!   that also assigns the version and publishes the change; node lease and dead-node sweep;
//!   what this node holds, to re-assert after Redis lost or missed writes.
//! - `bridge`: the task that owns the pub/sub connection: follows the registry's interest,
//!   turns events into fan-out, renews the lease, sweeps dead nodes, resyncs on reconnect.

pub mod bridge;
pub mod codec;
pub mod connection;
pub mod keys;
mod peers;
pub mod store;

pub use store::RedisStore;
