//! Partitions, black box: `presence-node` processes on one real redis-server, node A reaching
//! it through a TCP proxy the test cuts and heals. The user's latest choice wins across the
//! partition (API.md "The latest choice wins, across partitions"), and one failed read does
//! not turn readiness off (API.md "Health").

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::node_process::NodeProcess;
use common::redis::RedisServer;
use common::*;
use presence_node::client::{connect, get_presence, Session};
use presence_node::proto::{server_frame, ErrorCode, Presence, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A TCP proxy to one address. Cut: every connection through it drops and new ones are
/// closed at once (the node behind it cannot reach Redis). Healed: it forwards again.
struct Proxy {
    addr: SocketAddr,
    open: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(watch::channel(true).0);
        let accepting = open.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut state = accepting.subscribe();
                if !*state.borrow_and_update() {
                    continue; // dropped: closed at once
                }
                pipes.spawn(async move {
                    let connecting = tokio::time::timeout(patience(), TcpStream::connect(target));
                    let Ok(Ok(mut outbound)) = connecting.await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|open| !*open) => {}
                    }
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        Self { addr, open, task }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node's readiness (`presence.v1.PresenceService`), or `None` if it did not answer.
async fn readiness(url: &str) -> Option<ServingStatus> {
    let channel = connect(url).await.ok()?;
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: "presence.v1.PresenceService".into(),
    });
    let status = tokio::time::timeout(patience(), check)
        .await
        .ok()?
        .ok()?
        .into_inner()
        .status;
    ServingStatus::try_from(status).ok()
}

async fn wait_readiness(node: &NodeProcess, wanted: ServingStatus, what: &str) {
    eventually(what, || async {
        (readiness(&node.url).await == Some(wanted)).then_some(())
    })
    .await;
}

async fn session(node: &NodeProcess, user: &str, device: &str) -> Session {
    let channel = connect(&node.url).await.expect("connect");
    Session::open(channel, &user_creds(user), hello(device))
        .await
        .expect("session opens")
        .0
}

async fn presence_on(node: &NodeProcess, user: &str) -> Option<Presence> {
    let channel = connect(&node.url).await.ok()?;
    let creds = user_creds("bob");
    let asked = get_presence(channel, &creds, ids(&[user]));
    tokio::time::timeout(patience(), asked)
        .await
        .ok()?
        .ok()?
        .pop()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a watcher saw of alice, in order (snapshot first).
#[derive(Default)]
struct Seen(Vec<Presence>);

impl Seen {
    /// Reads updates until `done` holds for one of their entries, keeping alice's.
    async fn until(
        &mut self,
        watcher: &mut Session,
        what: &str,
        mut done: impl FnMut(&Presence) -> bool,
    ) {
        recv_until(watcher, what, |kind| {
            let server_frame::Kind::Update(update) = kind else {
                return None;
            };
            let mut finished = false;
            for p in &update.presences {
                if p.user_id == "alice" {
                    self.0.push(p.clone());
                }
                finished |= done(p);
            }
            finished.then_some(())
        })
        .await;
    }

    fn last(&self) -> &Presence {
        self.0.last().expect("saw alice")
    }

    /// Versions strictly increase; once the latest choice shows, nothing else does; it
    /// shows last.
    fn check(&self, who: &str, latest: &(Status, &str)) {
        for pair in self.0.windows(2) {
            assert!(
                pair[1].version > pair[0].version,
                "{who}: versions went {} then {}: {:?}",
                pair[0].version,
                pair[1].version,
                self.0
            );
        }
        let is_latest = |p: &Presence| (status_of(p), p.status_text.as_str()) == *latest;
        if let Some(first) = self.0.iter().position(is_latest) {
            assert!(
                self.0[first..].iter().all(is_latest),
                "{who} saw alice's earlier choice again after the later one: {:?}",
                self.0
            );
        }
        assert!(
            is_latest(self.last()),
            "{who} ends on {latest:?}: {:?}",
            self.0
        );
    }
}

const AWAY_ON_A: (Status, &str) = (Status::Away, "on a");
const BUSY_ON_B: (Status, &str) = (Status::Busy, "on b");

#[tokio::test]
async fn a_choice_made_on_a_cut_off_node_does_not_win_over_a_later_one_made_elsewhere() {
    partition_scenario("part1", false).await;
}

#[tokio::test]
async fn a_choice_made_on_a_cut_off_node_wins_over_an_earlier_one_made_elsewhere() {
    partition_scenario("part3", true).await;
}

/// Node A (alice on ios) is cut off from Redis, node B (alice on web) is not; alice chooses
/// AWAY through A and BUSY through B, B's first when `cut_off_node_last`. After the heal,
/// every node and every watcher ends on the later choice.
async fn partition_scenario(prefix: &str, cut_off_node_last: bool) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let (direct, proxied) = (redis.url(), proxy.url());
    let node = |url: &str, id: &str| {
        let args: Vec<String> = ["--redis-url", url, "--key-prefix", prefix, "--node-id", id]
            .iter()
            .map(|s| s.to_string())
            .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            NodeProcess::start(&args).await
        }
    };
    let a = node(&proxied, "node-a").await;
    let b = node(&direct, "node-b").await;
    wait_readiness(&a, ServingStatus::Serving, "node a ready").await;
    wait_readiness(&b, ServingStatus::Serving, "node b ready").await;

    let mut alice_a = session(&a, "alice", "ios").await;
    let mut alice_b = session(&b, "alice", "web").await;
    let mut mark = session(&a, "mark", "desk").await;
    let mut watchers = Vec::new();
    for (node, user, name) in [
        (&a, "wendy", "wendy on node a"),
        (&b, "walt", "walt on node b"),
    ] {
        let mut watcher = session(node, user, "web").await;
        let snapshot = subscribe(&mut watcher, &["alice", "mark"]).await;
        let mut seen = Seen::default();
        seen.0.push(snapshot[0].clone());
        if snapshot[0].devices.len() < 2 {
            seen.until(&mut watcher, "alice on both devices", |p| {
                p.user_id == "alice" && p.devices.len() == 2
            })
            .await;
        }
        watchers.push((name, watcher, seen));
    }

    // Node A is cut off from Redis; node B is not.
    proxy.cut();
    wait_readiness(
        &a,
        ServingStatus::NotServing,
        "node a not ready while cut off",
    )
    .await;
    assert_eq!(readiness(&b.url).await, Some(ServingStatus::Serving));

    let mut acked = false;
    let mut chose_at = 0;
    for on_a in [!cut_off_node_last, cut_off_node_last] {
        // Each choice later than the one before by the wall clock, to the millisecond.
        eventually("the clock to move on", || async {
            (now_ms() > chose_at).then_some(())
        })
        .await;
        if on_a {
            // Through node A: acknowledged (kept until Redis is back, shown to node A's
            // watchers) or refused as unavailable.
            let r = alice_a.set_status(AWAY_ON_A.0, AWAY_ON_A.1).await.unwrap();
            acked = match answer(&mut alice_a, r).await {
                Ok(()) => true,
                Err(code) => {
                    assert_eq!(code, ErrorCode::Unavailable as i32);
                    false
                }
            };
            println!(
                "AWAY on the cut-off node: {}",
                if acked { "acknowledged" } else { "refused" }
            );
            if acked {
                let (_, watcher, seen) = &mut watchers[0];
                seen.until(watcher, "node a's watcher sees AWAY", |p| {
                    p.user_id == "alice" && status_of(p) == Status::Away
                })
                .await;
                // Built on the latest record node A knew: alice's web session is there.
                assert_eq!(seen.last().devices, vec!["ios", "web"], "{:?}", seen.0);
            }
        } else {
            let r = alice_b.set_status(BUSY_ON_B.0, BUSY_ON_B.1).await.unwrap();
            assert_eq!(answer(&mut alice_b, r).await, Ok(()));
            let (_, watcher, seen) = &mut watchers[1];
            seen.until(watcher, "node b's watcher sees BUSY", |p| {
                p.user_id == "alice" && status_of(p) == Status::Busy
            })
            .await;
        }
        chose_at = now_ms();
    }
    let latest = if cut_off_node_last && acked {
        AWAY_ON_A
    } else {
        BUSY_ON_B
    };

    // Healed: node A reconnects, re-asserts what it holds and is ready again.
    proxy.heal();
    wait_readiness(&a, ServingStatus::Serving, "node a ready again").await;
    // A change after node A's re-assert: every watcher has everything before it.
    let r = mark.set_status(Status::Busy, "after heal").await.unwrap();
    assert_eq!(answer(&mut mark, r).await, Ok(()));
    for (name, watcher, seen) in &mut watchers {
        seen.until(watcher, &format!("{name}: the marker"), |p| {
            p.user_id == "mark" && p.status_text == "after heal"
        })
        .await;
    }
    // Every watcher ends on the later choice, with versions increasing all along and the
    // earlier choice never after it...
    for (name, _, seen) in &watchers {
        seen.check(name, &latest);
    }
    // ...and so does every node.
    for node in [&a, &b] {
        let p = eventually("both nodes answer the later choice", || async {
            presence_on(node, "alice")
                .await
                .filter(|p| (status_of(p), p.status_text.as_str()) == latest)
        })
        .await;
        assert_eq!(p.devices, vec!["ios", "web"]);
    }
    // Sessions survived the partition on both nodes.
    let r = alice_a.heartbeat().await.unwrap();
    recv_until(&mut alice_a, "heartbeat ack", |k| {
        matches!(k, server_frame::Kind::HeartbeatAck(_)).then_some(r)
    })
    .await;
}

#[tokio::test]
async fn one_failed_read_does_not_turn_readiness_off() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A long lease: its renewal (every third of it) would turn readiness back on, so a
    // wrongly lost readiness shows for a long time.
    let a = NodeProcess::start(&[
        "--redis-url",
        &url,
        "--key-prefix",
        "part2",
        "--node-id",
        "node-a",
        "--node-lease-ttl-ms",
        "600000",
    ])
    .await;
    wait_readiness(&a, ServingStatus::Serving, "node a ready").await;
    // Something else wrote a non-hash where a user's record goes: reading it fails.
    let _: () = ::redis::cmd("SET")
        .arg("part2:{u:broken}")
        .arg("not a hash")
        .query(&mut redis.connection())
        .unwrap();

    let channel = connect(&a.url).await.unwrap();
    let creds = user_creds("bob");
    let read = get_presence(channel, &creds, ids(&["broken"]));
    let failed = tokio::time::timeout(patience(), read)
        .await
        .expect("an answer");
    assert!(failed.is_err(), "the read fails: {failed:?}");
    // A subscribe whose snapshot read fails.
    let mut watcher = session(&a, "wendy", "web").await;
    let r = watcher.subscribe(ids(&["broken"])).await.unwrap();
    recv_until(&mut watcher, "the subscribe's answer", |k| match k {
        server_frame::Kind::Error(e) if e.r#ref == r => Some(()),
        server_frame::Kind::Snapshot(s) if s.r#ref == r => Some(()),
        _ => None,
    })
    .await;

    // Still ready, and still serving reads and writes for everyone else.
    let mut alice = session(&a, "alice", "ios").await;
    let r = alice.set_status(Status::Busy, "").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let p = presence_on(&a, "alice").await.expect("alice readable");
    assert_eq!(status_of(&p), Status::Busy);
    // Readiness is checked repeatedly for a while: a wrongly lost readiness would only come
    // back at the next lease renewal (200 s away).
    let watched_until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut checks = 0;
    while tokio::time::Instant::now() < watched_until {
        assert_eq!(
            readiness(&a.url).await,
            Some(ServingStatus::Serving),
            "readiness after {checks} checks:\n{}",
            a.proc.stderr()
        );
        checks += 1;
    }
    assert!(checks > 1);
}
