//! API.md semantics 6: a slow reader never makes the node buffer without bound. Pending
//! updates for the same user are coalesced to the latest; past a bound the session ends with
//! RESOURCE_EXHAUSTED.
//!
//! A real `presence-node` process (so its memory can be read from /proc) serves a watcher
//! that stopped reading while the watched user changes status 100,000 times.

mod common;

use std::error::Error as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{hello, next_update_of, patience, subscribe, user_creds};
use presence_node::client::{self, Session};
use presence_node::proto::{
    server_frame, Error as ErrorFrame, ServerFrame, Status as PresenceStatus,
};
use tonic::Code;

const NODE_BIN: &str = env!("CARGO_BIN_EXE_presence-node");
const CHANGES: u64 = 100_000;
const MAX_GROWTH_BYTES: u64 = 32 * 1024 * 1024;

/// A `presence-node` process on a free port, output captured (printed if the test fails),
/// killed on drop.
struct NodeProc {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
}

fn capture(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>, tag: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            let mut out = into.lock().unwrap();
            out.push_str(tag);
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl NodeProc {
    async fn start(args: &[&str]) -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut command = Command::new(NODE_BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PRESENCE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("--listen-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("presence-node starts");
        let output = Arc::new(Mutex::new(String::new()));
        capture(child.stdout.take().unwrap(), output.clone(), "[out] ");
        capture(child.stderr.take().unwrap(), output.clone(), "[err] ");
        let mut node = Self {
            child,
            port,
            output,
        };
        let deadline = Instant::now() + patience();
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("presence-node exited before serving: {status}");
            }
            if client::connect(&node.url()).await.is_ok() {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "presence-node did not accept connections within the patience"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resident set size of the node, from /proc/<pid>/status.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a VmRSS line in kB");
        kib * 1024
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- presence-node (pid {}) output -----\n{}-----",
                self.child.id(),
                self.output.lock().unwrap()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// No rate limit on set_status, and a TTL long enough that a silent watcher is not expired
/// while a flood runs (these tests are about buffering, not liveness).
const NODE_ARGS: &[&str] = &[
    "--status-rate-per-s",
    "1000000",
    "--status-rate-burst",
    "1000000",
    "--session-ttl-ms",
    "600000",
];

async fn open(node: &NodeProc, user: &str, device: &str) -> Session {
    let channel = client::connect(&node.url()).await.unwrap();
    Session::open(channel, &user_creds(user), hello(device))
        .await
        .unwrap()
        .0
}

/// How a flood of set_status frames went.
struct Flood {
    acked: u64,
    errors: Vec<ErrorFrame>,
    /// `None`: every frame was answered; else how the stream ended early.
    ended: Option<Result<(), tonic::Status>>,
    took: Duration,
    /// The session, still open: ending it would change the user's presence.
    session: Session,
}

/// Sends `changes` set_status frames (alternating ONLINE/AWAY with text `n=<i>`) on
/// `session`, pipelined (never waiting for an answer), while a task reads the answers.
async fn flood(session: Session, changes: u64) -> Flood {
    let started = Instant::now();
    let (mut sender, mut receiver) = session.split();
    let last_ref = 1 + changes; // the hello was ref 1
    let answers = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut errors = Vec::new();
        let ended = loop {
            let reference = match receiver.recv().await {
                Ok(Some(ServerFrame {
                    kind: Some(server_frame::Kind::Ack(ack)),
                })) => {
                    acked += 1;
                    ack.r#ref
                }
                Ok(Some(ServerFrame {
                    kind: Some(server_frame::Kind::Error(error)),
                })) => {
                    let reference = error.r#ref;
                    errors.push(error);
                    reference
                }
                Ok(Some(_)) => continue,
                Ok(None) => break Some(Ok(())),
                Err(status) => break Some(Err(status)),
            };
            if reference == last_ref {
                break None;
            }
        };
        (acked, errors, ended, receiver)
    });
    for i in 0..changes {
        let status = if i % 2 == 0 {
            PresenceStatus::Online
        } else {
            PresenceStatus::Away
        };
        if sender.set_status(status, format!("n={i}")).await.is_err() {
            break; // the call ended; the reader tells how
        }
    }
    let (acked, errors, ended, receiver) = tokio::time::timeout(patience() * 12, answers)
        .await
        .expect("the flood is answered (or ends) within 12 x the patience")
        .expect("the answer reader");
    Flood {
        acked,
        errors,
        ended,
        took: started.elapsed(),
        session: Session::unsplit(sender, receiver),
    }
}

fn assert_all_answered(flood: &Flood, changes: u64) {
    println!(
        "flood: {changes} set_status, {} acks, {} errors in {:?}; ended early: {:?}",
        flood.acked,
        flood.errors.len(),
        flood.took,
        flood.ended
    );
    assert!(
        flood.ended.is_none(),
        "the sender's own stream ended after {} acks: {:?}",
        flood.acked,
        flood.ended
    );
    assert!(
        flood.errors.is_empty(),
        "refused changes: {:?}",
        &flood.errors[..flood.errors.len().min(5)]
    );
    assert_eq!(flood.acked, changes);
}

/// The watcher stops reading while alice changes 100,000 times; the node's memory stays
/// bounded, and when the watcher reads again it gets alice's final state after far fewer
/// updates (or the node ended its session with RESOURCE_EXHAUSTED). `stream_window`: the
/// watcher connection's HTTP/2 stream window (None: the client library's default).
async fn watcher_stops_reading(stream_window: Option<u32>) {
    let node = NodeProc::start(NODE_ARGS).await;
    let alice = open(&node, "alice", "ios").await;
    let mut endpoint = client::parse_server(&node.url()).unwrap();
    if let Some(window) = stream_window {
        endpoint = endpoint.initial_stream_window_size(window);
    }
    let (mut watcher, _) = Session::open(
        endpoint.connect().await.expect("connect"),
        &user_creds("watcher"),
        hello("web"),
    )
    .await
    .unwrap();
    let snapshot = subscribe(&mut watcher, &["alice"]).await;
    assert_eq!(snapshot[0].status, PresenceStatus::Online as i32);
    // From here the watcher does not read (its receiver is kept, not polled).

    let rss_before = node.rss_bytes();
    // alice pipelines her changes; a task reads her acks so her own stream never stalls.
    let flood = flood(alice, CHANGES).await;
    assert_all_answered(&flood, CHANGES);
    // alice stays connected: her session ending would change her state.
    let mut alice = flood.session;
    let rss_after = node.rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "node VmRSS: before {:.1} MiB, after {:.1} MiB, growth {:.1} MiB (limit {:.0} MiB)",
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        mib(MAX_GROWTH_BYTES)
    );
    assert!(
        growth < MAX_GROWTH_BYTES,
        "the node grew by {:.1} MiB while a watcher did not read",
        mib(growth)
    );

    // The watcher reads again: it catches up to alice's final state, without having been
    // sent every intermediate one.
    let final_text = format!("n={}", CHANGES - 1);
    let reading = Instant::now();
    let deadline = tokio::time::Instant::now() + patience();
    let mut updates = 0u64;
    let mut last_version = snapshot[0].version;
    let outcome = loop {
        let frame = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the watcher did not reach {final_text} within the patience \
                     ({updates} updates of alice read, last version {last_version})"
                )
            });
        match frame {
            Ok(Some(ServerFrame {
                kind: Some(server_frame::Kind::Update(update)),
            })) => {
                let mut done = None;
                for p in update.presences.iter().filter(|p| p.user_id == "alice") {
                    updates += 1;
                    assert!(
                        p.version > last_version,
                        "versions must strictly increase: {} after {last_version}",
                        p.version
                    );
                    last_version = p.version;
                    if p.status_text == final_text {
                        done = Some(p.clone());
                    }
                }
                if let Some(p) = done {
                    break Ok(p);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watcher's stream ended cleanly after {updates} updates"),
            Err(status) => break Err(status),
        }
    };
    match outcome {
        Ok(final_state) => {
            println!(
                "outcome: coalesced; the watcher reached {final_text} after {updates} updates \
                 of alice (for {CHANGES} changes) in {:?}",
                reading.elapsed()
            );
            assert_eq!(final_state.status, PresenceStatus::Away as i32);
            assert!(
                updates < CHANGES / 2,
                "{updates} updates for {CHANGES} changes: not coalesced"
            );
            // Caught up, the watcher follows live changes again.
            alice.close();
            let offline = next_update_of(&mut watcher, "alice").await;
            assert_eq!(
                offline.status,
                PresenceStatus::Offline as i32,
                "{offline:?}"
            );
            assert!(offline.version > final_state.version);
        }
        Err(status) => {
            println!("outcome: the watcher's stream ended after {updates} updates: {status:?}");
            // Only the node ending the session (a gRPC status in the trailers) is the
            // contract's RESOURCE_EXHAUSTED; a transport error carries its cause as source
            // (e.g. the client's HTTP/2 library closing the connection) and is not.
            assert!(
                status.source().is_none(),
                "the watcher's connection was torn down by the transport, not ended by the \
                 node, after {updates} updates: {status:?}"
            );
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
    }
    drop(alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_stops_reading_is_coalesced_not_buffered() {
    watcher_stops_reading(None).await;
}

/// The same with a 64 KiB stream window on the watcher's connection (a constrained client):
/// the stalled stream blocks the node after ~1,400 updates instead of ~38,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_with_a_small_window_that_stops_reading_is_coalesced_not_buffered() {
    watcher_stops_reading(Some(64 * 1024)).await;
}

/// A client that pipelines its frames and reads every reply as it comes is not a slow
/// consumer: the node must not end its session with RESOURCE_EXHAUSTED (at worst it stops
/// reading the client's frames until its replies have gone out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelining_client_that_reads_every_reply_is_not_a_slow_consumer() {
    let node = NodeProc::start(NODE_ARGS).await;
    let alice = open(&node, "alice", "ios").await;
    let flood = flood(alice, CHANGES).await;
    assert_all_answered(&flood, CHANGES);
}
