//! API.md semantics 6: a slow reader never makes the node buffer without bound. Pending
//! updates for the same user are coalesced to the latest; past a bound the session ends with
//! RESOURCE_EXHAUSTED.
//!
//! A real `presence-node` process (so its memory can be read from /proc) watches a watcher
//! that stopped reading while the watched user changes status 100,000 times.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{hello, patience, subscribe, user_creds};
use presence_node::client::{self, Session};
use presence_node::proto::{server_frame, ServerFrame, Status as PresenceStatus};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_stops_reading_is_coalesced_not_buffered() {
    // No rate limit on set_status, and a TTL long enough that the silent watcher is not
    // expired while the flood runs (this test is about buffering, not liveness).
    let node = NodeProc::start(&[
        "--status-rate-per-s",
        "1000000",
        "--status-rate-burst",
        "1000000",
        "--session-ttl-ms",
        "600000",
    ])
    .await;

    let (alice, _) = Session::open(
        client::connect(&node.url()).await.unwrap(),
        &user_creds("alice"),
        hello("ios"),
    )
    .await
    .unwrap();
    let (mut watcher, _) = Session::open(
        client::connect(&node.url()).await.unwrap(),
        &user_creds("watcher"),
        hello("web"),
    )
    .await
    .unwrap();
    let snapshot = subscribe(&mut watcher, &["alice"]).await;
    assert_eq!(snapshot[0].status, PresenceStatus::Online as i32);
    // From here the watcher does not read (its receiver is kept, not polled).

    let rss_before = node.rss_bytes();

    // alice pipelines 100,000 changes; a task reads her acks so her stream never stalls.
    let (mut sender, mut receiver) = alice.split();
    let last_ref = 1 + CHANGES; // the hello was ref 1
    let acks = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut errors = Vec::new();
        loop {
            match receiver.recv().await {
                Ok(Some(ServerFrame {
                    kind: Some(server_frame::Kind::Ack(ack)),
                })) => {
                    acked += 1;
                    if ack.r#ref == last_ref {
                        break;
                    }
                }
                Ok(Some(ServerFrame {
                    kind: Some(server_frame::Kind::Error(error)),
                })) => {
                    let last = error.r#ref == last_ref;
                    errors.push(error);
                    if last {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("alice's stream ended after {acked} acks"),
                Err(status) => panic!("alice's stream failed after {acked} acks: {status:?}"),
            }
        }
        (acked, errors, receiver)
    });
    let flood = Instant::now();
    for i in 0..CHANGES {
        let status = if i % 2 == 0 {
            PresenceStatus::Online
        } else {
            PresenceStatus::Away
        };
        sender
            .set_status(status, format!("n={i}"))
            .await
            .expect("alice's frame is sent");
    }
    let sent = flood.elapsed();
    let (acked, errors, _receiver) = tokio::time::timeout(patience() * 12, acks)
        .await
        .expect("alice's 100,000 changes are answered")
        .expect("alice's ack reader");
    let answered = flood.elapsed();
    println!(
        "alice: {CHANGES} set_status sent in {sent:?}, all answered after {answered:?} \
         ({acked} acks, {} errors)",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "refused changes: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert_eq!(acked, CHANGES);

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
                 of alice (of {CHANGES} changes) in {:?}",
                reading.elapsed()
            );
            assert_eq!(final_state.status, PresenceStatus::Away as i32);
            assert!(
                updates < CHANGES / 2,
                "{updates} updates for {CHANGES} changes: not coalesced"
            );
        }
        Err(status) => {
            println!(
                "outcome: the watcher's stream ended with {:?} after {updates} updates: {}",
                status.code(),
                status.message()
            );
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
    }
}
