//! A small pool of multiplexed Redis connections (standalone Redis), with `deadpool`.
//!
//! Why a pool at all, when one multiplexed connection carries any number of concurrent
//! requests: head-of-line blocking. Redis answers a connection's requests in order, so on
//! one connection a status write waits for every 1,000-key bulk read pipelined before it;
//! over a few connections it waits only for those on its own (Redis serves its clients in
//! turn). Why not deadpool-redis's stock manager: it PINGs on every checkout, a round trip
//! per status change. Here `recycle` sends nothing: a connection found broken by a request
//! is retired through a generation number (`reset`), and the next checkout of it makes a
//! fresh one.
//!
//! A checkout is not exclusive: it clones the connection handle (a multiplexed connection
//! is made to be shared) and gives the object back at once, so consecutive requests rotate
//! over the pool's connections (FIFO) and a request never waits for a free connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;

use crate::store::StoreError;

/// Connections a node keeps to a standalone Redis unless configured otherwise.
pub const DEFAULT_POOL_SIZE: usize = 2;

/// A pooled connection and the generation it was made in.
pub struct Pooled {
    conn: MultiplexedConnection,
    generation: u64,
}

/// Makes multiplexed connections; recycles them without a round trip.
pub struct Manager {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    /// Bumped by `reset`: connections of an older generation are replaced on checkout.
    generation: AtomicU64,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Pooled, redis::RedisError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Pooled { conn, generation })
    }

    async fn recycle(&self, obj: &mut Pooled, _: &Metrics) -> RecycleResult<redis::RedisError> {
        if obj.generation < self.generation.load(Ordering::SeqCst) {
            return Err(RecycleError::message("retired after an error"));
        }
        Ok(())
    }
}

/// The pool of one standalone Redis.
pub struct Pool {
    pool: managed::Pool<Manager>,
    size: usize,
}

impl Pool {
    /// A pool of up to `size` (at least 1) connections to `client`, made on first use.
    pub fn new(
        client: redis::Client,
        size: usize,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let size = size.max(1);
        let manager = Manager {
            client,
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            generation: AtomicU64::new(0),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size)
            .queue_mode(managed::QueueMode::Fifo)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .wait_timeout(Some(connect_timeout))
            .build()
            .map_err(StoreError::unavailable)?;
        Ok(Self { pool, size })
    }

    /// A connection handle for one request (or a read-modify-write).
    pub async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        // Checkouts hand their object back at once, so the pool would never grow past one
        // connection by itself: fill it to its size first (once, and after connections
        // were retired), holding all the objects together.
        // Without waiting for a slot: two requests filling at once must not block each other.
        if self.pool.status().size < self.size {
            let no_wait = managed::Timeouts {
                wait: Some(Duration::ZERO),
                ..self.pool.timeouts()
            };
            let mut held = Vec::with_capacity(self.size);
            while held.len() < self.size {
                match self.pool.timeout_get(&no_wait).await {
                    Ok(object) => held.push(object),
                    Err(managed::PoolError::Timeout(managed::TimeoutType::Wait)) => break,
                    Err(e) => return Err(pool_error(e)),
                }
            }
        }
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(object.conn.clone())
    }

    /// Retires every connection (one failed): each is replaced on its next checkout.
    pub fn reset(&self) {
        self.pool
            .manager()
            .generation
            .fetch_add(1, Ordering::SeqCst);
    }
}

fn pool_error(e: managed::PoolError<redis::RedisError>) -> StoreError {
    match e {
        managed::PoolError::Backend(e) => StoreError::unavailable(e),
        other => StoreError::unavailable(other),
    }
}
