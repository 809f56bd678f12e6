//! Test harness: a real node on 127.0.0.1:0 in this process (with a manual clock, so
//! time-based behaviour is driven, not slept), real gRPC clients over real sockets, and
//! `eventually`-style polling with a deadline instead of sleeps.
#![allow(dead_code)]

pub mod authorizer;
pub mod node_process;
pub mod redis;
pub mod redis_cluster;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use presence_node::client::{self, Credentials, Session};
use presence_node::clock::ManualClock;
use presence_node::config::Config;
use presence_node::node::Node;
use presence_node::proto::{server_frame, Hello, Presence, ServerFrame, Status, Welcome};
use presence_node::server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A fixed start time, so versions and times are reproducible.
pub const T0: u64 = 1_800_000_000_000;

/// How long to wait for something that should happen; raise on a slow machine.
pub fn patience() -> Duration {
    let ms = std::env::var("PRESENCE_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

pub struct TestNode {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    pub clock: ManualClock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    /// A node with default settings plus `args` (flags), a manual clock at T0, and a fast
    /// sweeper so that moving the clock takes effect quickly.
    pub async fn start(args: &[&str]) -> Self {
        let mut all = vec!["presence-node", "--sweep-interval-ms", "10"];
        all.extend_from_slice(args);
        let config = Config::from_args(all).expect("test config");
        if std::env::var_os("PRESENCE_TEST_LOG").is_some() {
            presence_node::telemetry::init(config.log_format);
        }
        let clock = ManualClock::new(T0);
        let node = server::start(config, Arc::new(clock.clone()))
            .await
            .expect("node starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = node.clone();
        let task = tokio::spawn(async move {
            server::serve(serving, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("node serves");
        });
        Self {
            addr,
            node,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new connection.
    pub async fn channel(&self) -> Channel {
        client::connect(&self.url()).await.expect("connect")
    }

    /// A session of `user` on `device` on its own connection.
    pub async fn session(&self, user: &str, device: &str) -> (Session, Welcome) {
        self.session_with(user, hello(device)).await
    }

    pub async fn session_with(&self, user: &str, hello: Hello) -> (Session, Welcome) {
        Session::open(self.channel().await, &user_creds(user), hello)
            .await
            .expect("session opens")
    }

    /// A cluster-mode node on `redis` with key prefix `prefix` (unique per test).
    pub async fn start_cluster(
        redis: &redis::RedisServer,
        prefix: &str,
        node_id: &str,
        args: &[&str],
    ) -> Self {
        Self::start_on_redis(&redis.url(), prefix, node_id, args).await
    }

    /// A node on a real Redis Cluster.
    pub async fn start_on_redis_cluster(
        cluster: &redis_cluster::RedisCluster,
        prefix: &str,
        node_id: &str,
        args: &[&str],
    ) -> Self {
        let mut all = vec!["--redis-mode", "cluster"];
        all.extend_from_slice(args);
        Self::start_on_redis(&cluster.urls(), prefix, node_id, &all).await
    }

    async fn start_on_redis(url: &str, prefix: &str, node_id: &str, args: &[&str]) -> Self {
        let mut all = vec![
            "--redis-url",
            url,
            "--key-prefix",
            prefix,
            "--node-id",
            node_id,
        ];
        all.extend_from_slice(args);
        let node = Self::start(&all).await;
        eventually("the node to reach redis", || async {
            presence_node::store::Store::is_healthy(node.node.store.as_ref()).then_some(())
        })
        .await;
        node
    }

    /// A connection through a local TCP proxy that the test can cut, as a network failure
    /// or a killed client would: the node sees the connection drop, not a clean close.
    pub async fn cuttable_channel(&self) -> (Channel, Cutter) {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let target = self.addr;
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = proxy.accept().await else {
                    return;
                };
                pipes.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let channel = client::connect(&format!("http://{proxy_addr}"))
            .await
            .expect("connect through proxy");
        (channel, Cutter { task })
    }

    /// Waits until the node holds exactly `n` sessions.
    pub async fn wait_sessions(&self, n: usize, what: &str) {
        eventually(what, || async {
            (self.node.sessions.len() == n).then_some(())
        })
        .await;
    }

    /// Moves the node's clock and lets the sweeper act on it.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    /// Drains the node and waits until it stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(patience() * 3, task).await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The Redis a cluster-mode test runs on: one redis-server or a 3-master Redis Cluster.
pub enum SharedRedis {
    Single(redis::RedisServer),
    Cluster(redis_cluster::RedisCluster),
}

impl SharedRedis {
    pub fn single() -> Self {
        SharedRedis::Single(redis::RedisServer::start())
    }

    pub fn cluster() -> Self {
        SharedRedis::Cluster(redis_cluster::RedisCluster::start())
    }

    /// A node on this Redis.
    pub async fn node(&self, prefix: &str, node_id: &str, args: &[&str]) -> TestNode {
        match self {
            SharedRedis::Single(redis) => {
                TestNode::start_cluster(redis, prefix, node_id, args).await
            }
            SharedRedis::Cluster(cluster) => {
                TestNode::start_on_redis_cluster(cluster, prefix, node_id, args).await
            }
        }
    }
}

/// Runs a cluster-mode scenario `async fn name(redis: &SharedRedis)` twice: on one
/// redis-server and on a real 3-master Redis Cluster.
#[macro_export]
macro_rules! on_redis_and_redis_cluster {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn on_redis() {
                super::$scenario(&super::common::SharedRedis::single()).await;
            }

            #[tokio::test]
            async fn on_redis_cluster() {
                super::$scenario(&super::common::SharedRedis::cluster()).await;
            }
        }
    };
}

/// Cuts a proxied connection (both sockets close at once) when told or dropped.
pub struct Cutter {
    task: JoinHandle<()>,
}

impl Cutter {
    pub fn cut(self) {}
}

impl Drop for Cutter {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every pipe.
        self.task.abort();
    }
}

/// Node flags that lift the per-session status rate, the per-user change rate and the frame
/// rate, for tests that send many changes on purpose (the limits have tests of their own:
/// `limits.rs`, `abuse_user.rs`).
pub const NO_CHANGE_LIMITS: &[&str] = &[
    "--status-rate-per-s",
    "100000",
    "--status-rate-burst",
    "100000",
    "--user-change-rate-per-s",
    "100000",
    "--user-change-rate-burst",
    "100000",
    "--frame-rate-per-s",
    "100000",
    "--frame-rate-burst",
    "100000",
];

pub fn user_creds(user: &str) -> Credentials {
    Credentials::User(user.to_string())
}

pub fn hello(device: &str) -> Hello {
    Hello {
        device: device.into(),
        status: None,
        status_text: String::new(),
    }
}

pub fn hello_with(device: &str, status: Status, text: &str) -> Hello {
    Hello {
        device: device.into(),
        status: Some(status as i32),
        status_text: text.into(),
    }
}

pub fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Polls `check` until it returns `Some`, or panics after the patience.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(patience(), check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for: {what}"))
}

/// Polls `check` until it returns `Some` (that value) or `within` has passed (`None`).
/// Each check is bounded by the time left: a check that hangs counts as not yet.
pub async fn eventually_within<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some(value)) = tokio::time::timeout_at(deadline, check()).await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A port of 127.0.0.1 that was free a moment ago (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The next frame, within the patience.
pub async fn next_frame(session: &mut Session) -> Result<Option<ServerFrame>, tonic::Status> {
    tokio::time::timeout(patience(), session.recv())
        .await
        .expect("a frame within the patience")
}

/// Reads frames until one matches `pick`, within the patience; skips heartbeat acks and
/// frames `pick` declines.
pub async fn recv_until<T>(
    session: &mut Session,
    what: &str,
    mut pick: impl FnMut(&server_frame::Kind) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        let frame = tokio::time::timeout_at(deadline, session.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        match frame {
            Ok(Some(ServerFrame { kind: Some(kind) })) => {
                if let Some(value) = pick(&kind) {
                    return value;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended while waiting for {what}"),
            Err(status) => panic!("stream failed while waiting for {what}: {status:?}"),
        }
    }
}

/// Sends a heartbeat and waits for its ack (so the node has taken it before the test moves
/// the clock again).
pub async fn heartbeat_acked(session: &mut Session) {
    session.heartbeat().await.unwrap();
    recv_until(session, "heartbeat ack", |k| {
        matches!(k, server_frame::Kind::HeartbeatAck(_)).then_some(())
    })
    .await;
}

/// Subscribes and returns the snapshot.
pub async fn subscribe(session: &mut Session, users: &[&str]) -> Vec<Presence> {
    let reference = session.subscribe(ids(users)).await.unwrap();
    recv_until(session, "snapshot", |kind| match kind {
        server_frame::Kind::Snapshot(s) if s.r#ref == reference => Some(s.presences.clone()),
        server_frame::Kind::Error(e) if e.r#ref == reference => panic!("subscribe refused: {e:?}"),
        _ => None,
    })
    .await
}

/// The next update entry for `user`.
pub async fn next_update_of(session: &mut Session, user: &str) -> Presence {
    recv_until(
        session,
        &format!("an update of {user}"),
        |kind| match kind {
            server_frame::Kind::Update(u) => {
                u.presences.iter().find(|p| p.user_id == user).cloned()
            }
            _ => None,
        },
    )
    .await
}

/// Every update entry until (and including) the first one of `marker`: used to prove that
/// nothing was sent for another user before the marker's change.
pub async fn updates_until_marker(session: &mut Session, marker: &str) -> Vec<Presence> {
    let mut seen = Vec::new();
    recv_until(session, &format!("an update of marker {marker}"), |kind| {
        if let server_frame::Kind::Update(u) = kind {
            for p in &u.presences {
                seen.push(p.clone());
                if p.user_id == marker {
                    return Some(());
                }
            }
        }
        None
    })
    .await;
    seen
}

/// Waits for the `Ack` or `Error` answering `reference`; returns the error code if any.
pub async fn answer(session: &mut Session, reference: u64) -> Result<(), i32> {
    recv_until(
        session,
        &format!("answer to ref {reference}"),
        |kind| match kind {
            server_frame::Kind::Ack(a) if a.r#ref == reference => Some(Ok(())),
            server_frame::Kind::Error(e) if e.r#ref == reference => Some(Err(e.code)),
            _ => None,
        },
    )
    .await
}

/// Reads until the stream ends; returns the final status (Ok for a clean end).
pub async fn end_of(session: &mut Session) -> Result<(), tonic::Status> {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        match tokio::time::timeout_at(deadline, session.recv()).await {
            Err(_) => panic!("stream did not end within the patience"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => return Err(status),
        }
    }
}

pub fn status_of(p: &Presence) -> Status {
    Status::try_from(p.status).expect("known status")
}
