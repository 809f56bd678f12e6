//! Cluster mode: many nodes sharing Redis.
//!
//! - `keys`: every Redis key and channel name (one place, with the prefix and hash tags).
//! - `codec`: how a user record and a change event are stored and sent.
//! - `connection`: standalone Redis or Redis Cluster behind one type (commands and events).
//! - `store`: the Redis store (the `Store` trait): compare-and-set writes through a script
//!   that also assigns the version and publishes the change. Inside it, `held` (what this
//!   node holds and the changes it keeps while Redis is unreachable: pure), `reassert`
//!   (writing that again after Redis lost or missed writes) and `lease` (node leases and
//!   stats, dead-node sweep).
//! - `scripts/*.lua`: the Lua scripts the store runs in Redis, each with a header saying what
//!   it takes and returns.
//! - `bridge`: the task that owns the pub/sub connection: follows the registry's interest,
//!   turns events into fan-out, renews the lease, sweeps dead nodes, resyncs on reconnect.

pub mod bridge;
pub mod codec;
pub mod connection;
pub mod keys;
mod peers;
pub mod pool;
pub mod store;

pub use store::RedisStore;
