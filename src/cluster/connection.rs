//! Connections to Redis, standalone or Redis Cluster, behind one type, so the store and the
//! bridge do not care which. Commands: a small pool of multiplexed connections (standalone;
//! see `pool`: requests rotate over them, so a status write does not queue behind every
//! bulk read, and a checkout sends nothing) or the multiplexed, self-healing cluster
//! connection (one multiplexed connection per shard already: a write to one shard never
//! waits for another shard's reads, so no pool there). Events: a pub/sub connection (standalone, PUBLISH /
//! SUBSCRIBE) or RESP3 pushes from the cluster connection (sharded: SPUBLISH / SSUBSCRIBE,
//! resubscribed by the client when slots move).

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushKind, RedisFuture, Value};
use tokio::sync::mpsc;

use crate::store::StoreError;

/// A Redis that does not accept a connection within this is unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// A request without an answer within this counts as failed (a hung or partitioned Redis
/// must not stall sessions: the change is kept and written later).
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Where commands go.
pub enum Backend {
    /// A pool of multiplexed connections, made on first use and again after an error.
    Standalone(Box<super::pool::Pool>),
    Cluster(ClusterConnection),
}

/// How to reach Redis, from the settings.
#[derive(Debug, Clone)]
pub enum Target {
    Standalone(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// A Redis target plus, for `rediss://` with a private CA, the CA to trust (PEM).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub target: Target,
    pub ca_pem: Option<Vec<u8>>,
    /// Command connections to a standalone Redis (`PRESENCE_REDIS_POOL_SIZE`).
    pub pool_size: usize,
}

impl Endpoint {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            ca_pem: None,
            pool_size: super::pool::DEFAULT_POOL_SIZE,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The command that publishes a change event from inside the write script.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    /// A standalone client (TLS with the configured CA for `rediss://`).
    fn client(&self, url: &str) -> Result<redis::Client, StoreError> {
        match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        }
        .map_err(StoreError::unavailable)
    }

    fn cluster_client(
        &self,
        seeds: &[String],
        pushes: Option<mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<redis::cluster::ClusterClient, StoreError> {
        let mut builder = ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3);
        if let Some(certs) = self.certificates() {
            builder = builder.certs(certs);
        }
        if let Some(pushes) = pushes {
            builder = builder.push_sender(pushes);
        }
        builder.build().map_err(StoreError::unavailable)
    }

    /// The command backend. Standalone builds its pool lazily (no connection yet); a cluster
    /// connection needs a reachable seed.
    pub async fn backend(&self) -> Result<Backend, StoreError> {
        match &self.target {
            Target::Standalone(url) => Ok(Backend::Standalone(Box::new(super::pool::Pool::new(
                self.client(url)?,
                self.pool_size,
                CONNECT_TIMEOUT,
                RESPONSE_TIMEOUT,
            )?))),
            Target::Cluster(seeds) => self
                .cluster_client(seeds, None)?
                .get_async_connection()
                .await
                .map(Backend::Cluster)
                .map_err(StoreError::unavailable),
        }
    }

    /// A connection for events.
    pub async fn subscriber(&self) -> Result<Subscriber, StoreError> {
        match &self.target {
            Target::Standalone(url) => {
                let (sink, stream) = self
                    .client(url)?
                    .get_async_pubsub()
                    .await
                    .map_err(StoreError::unavailable)?
                    .split();
                Ok(Subscriber::Standalone(sink, stream))
            }
            Target::Cluster(seeds) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let conn = self
                    .cluster_client(seeds, Some(tx))?
                    .get_async_connection()
                    .await
                    .map_err(StoreError::unavailable)?;
                Ok(Subscriber::Cluster(conn, rx))
            }
        }
    }
}

impl Backend {
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        match self {
            Backend::Standalone(pool) => pool.conn().await.map(Conn::Standalone),
            Backend::Cluster(conn) => Ok(Conn::Cluster(conn.clone())),
        }
    }

    /// Retires the connections after an error, so the next requests get fresh ones.
    pub fn reset(&self) {
        if let Backend::Standalone(pool) = self {
            pool.reset();
        }
    }
}

/// One connection's worth of commands.
pub enum Conn {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Sharded (un)subscriptions must name channels of one slot: one request per channel, many
/// in flight on the multiplexed cluster connection.
async fn per_channel<F, Fut>(
    conn: &ClusterConnection,
    channels: &[String],
    op: F,
) -> Result<(), StoreError>
where
    F: Fn(ClusterConnection, String) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(channels.iter().cloned())
        .map(|channel| op(conn.clone(), channel))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
        .map_err(StoreError::unavailable)
}

/// What the bridge hears from Redis.
pub enum Event {
    /// A change event on a channel.
    Message { channel: String, payload: Vec<u8> },
    /// The connection (or one cluster node's) dropped: events may have been missed.
    Gap,
    /// Redis Cluster moved a slot away and dropped our subscription to this channel.
    Dropped(String),
}

/// The event connection.
pub enum Subscriber {
    Standalone(redis::aio::PubSubSink, redis::aio::PubSubStream),
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<redis::PushInfo>),
}

impl Subscriber {
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<(), StoreError> {
        match self {
            Subscriber::Standalone(sink, _) => sink
                .subscribe(channels)
                .await
                .map_err(StoreError::unavailable),
            Subscriber::Cluster(conn, _) => {
                per_channel(
                    conn,
                    channels,
                    |mut c, ch| async move { c.ssubscribe(ch).await },
                )
                .await
            }
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), StoreError> {
        match self {
            Subscriber::Standalone(sink, _) => sink
                .unsubscribe(channels)
                .await
                .map_err(StoreError::unavailable),
            Subscriber::Cluster(conn, _) => {
                per_channel(conn, channels, |mut c, ch| async move {
                    c.sunsubscribe(ch).await
                })
                .await
            }
        }
    }

    /// Subscribes to a channel pattern (one Redis only: Redis Cluster has no sharded
    /// pattern subscription).
    pub async fn psubscribe(&mut self, pattern: &str) -> Result<(), StoreError> {
        match self {
            Subscriber::Standalone(sink, _) => sink
                .psubscribe(pattern)
                .await
                .map_err(StoreError::unavailable),
            Subscriber::Cluster(..) => Err(StoreError::Unavailable(
                "pattern subscriptions are not available on Redis Cluster".into(),
            )),
        }
    }

    pub async fn punsubscribe(&mut self, pattern: &str) -> Result<(), StoreError> {
        match self {
            Subscriber::Standalone(sink, _) => sink
                .punsubscribe(pattern)
                .await
                .map_err(StoreError::unavailable),
            Subscriber::Cluster(..) => Ok(()),
        }
    }

    /// The next event; `None` when the connection is gone for good.
    pub async fn next(&mut self) -> Option<Event> {
        use futures::StreamExt;
        match self {
            Subscriber::Standalone(_, stream) => {
                let msg = stream.next().await?;
                Some(Event::Message {
                    channel: msg.get_channel_name().to_owned(),
                    payload: msg.get_payload_bytes().to_vec(),
                })
            }
            Subscriber::Cluster(_, pushes) => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        let mut data = push.data.into_iter();
                        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                            continue;
                        };
                        let (Ok(channel), Ok(payload)) = (
                            redis::from_redis_value::<String>(channel),
                            redis::from_redis_value::<Vec<u8>>(payload),
                        ) else {
                            continue;
                        };
                        return Some(Event::Message { channel, payload });
                    }
                    // A node dropped: events may be missed.
                    PushKind::Disconnection => return Some(Event::Gap),
                    // Also sent when a slot moved away: the caller decides whether it
                    // asked for it.
                    PushKind::SUnsubscribe => {
                        let channel = push
                            .data
                            .into_iter()
                            .next()
                            .and_then(|c| redis::from_redis_value::<String>(c).ok());
                        match channel {
                            Some(channel) => return Some(Event::Dropped(channel)),
                            None => return Some(Event::Gap),
                        }
                    }
                    _ => continue,
                }
            },
        }
    }
}
