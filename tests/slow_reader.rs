//! API.md semantics 6: a slow reader never makes the node buffer without bound. Pending
//! updates for the same user are coalesced to the latest; past a bound the session ends with
//! RESOURCE_EXHAUSTED.
//!
//! A real `presence-node` process (so its memory can be read from /proc) serves a watcher
//! that stopped reading while the watched user changes status 100,000 times.

mod common;

use std::error::Error as _;
use std::time::{Duration, Instant};

use common::node_process::NodeProcess;
use common::{hello, next_update_of, patience, subscribe, user_creds};
use presence_node::client::{self, Session};
use presence_node::proto::{
    server_frame, Error as ErrorFrame, PresenceUpdate, ServerFrame, Status as PresenceStatus,
};
use prost::Message as _;
use tonic::Code;

const CHANGES: u64 = 100_000;
/// Padding of each change's text (the limit is 256 bytes), so that every undelivered frame
/// weighs enough for an unbounded queue of them to stand far above the node's memory noise.
const TEXT_PADDING: usize = 200;
/// At most this many of the changes may reach a watcher that stopped reading: coalescing
/// leaves it the latest state, plus what its transport held (windows, socket buffers) when it
/// stopped.
const MAX_UPDATES_READ: u64 = CHANGES / 10;
/// The node may grow by at most this fraction of what an unbounded queue of the undelivered
/// frames would take (counted at their encoded size, the least any queue could hold them in).
const MAX_GROWTH_OF_UNBOUNDED: f64 = 0.25;
/// And never more than this, whatever the frames weigh.
const MAX_GROWTH_BYTES: u64 = 32 * 1024 * 1024;

/// The text of change `i`: `n=<i>` and the padding.
fn text_of(i: u64) -> String {
    format!("n={i} {}", ".".repeat(TEXT_PADDING))
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
    "--user-change-rate-per-s",
    "1000000",
    "--user-change-rate-burst",
    "1000000",
    "--frame-rate-per-s",
    "1000000",
    "--frame-rate-burst",
    "1000000",
    "--session-ttl-ms",
    "600000",
];

async fn open(node: &NodeProcess, user: &str, device: &str) -> Session {
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

/// Sends `changes` set_status frames (alternating ONLINE/AWAY with `text_of(i)`) on
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
        if sender.set_status(status, text_of(i)).await.is_err() {
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
    let node = NodeProcess::start(NODE_ARGS).await;
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

    // A flood by an unwatched user first, so the memory the node takes for taking in a flood
    // (buffers, allocator caches) is in the baseline, and the growth is the watcher's.
    let warm_up = flood(open(&node, "warm-up", "ios").await, CHANGES / 5).await;
    assert_all_answered(&warm_up, CHANGES / 5);
    let rss_before = node.rss_bytes();
    // alice pipelines her changes; a task reads her acks so her own stream never stalls.
    let flood = flood(alice, CHANGES).await;
    assert_all_answered(&flood, CHANGES);
    // alice stays connected: her session ending would change her state.
    let mut alice = flood.session;
    let rss_after = node.rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    // Judged once the watcher has read (below): how many frames it never got decides what
    // an unbounded queue of them would weigh.

    // The watcher reads again: it catches up to alice's final state, without having been
    // sent every intermediate one.
    let final_text = text_of(CHANGES - 1);
    let reading = Instant::now();
    let deadline = tokio::time::Instant::now() + patience();
    let mut updates = 0u64;
    let mut last_version = snapshot[0].version;
    let outcome = loop {
        let frame = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the watcher did not reach n={} within the patience \
                     ({updates} updates of alice read, last version {last_version})",
                    CHANGES - 1
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
    // Coalesced to the latest: whether the watcher caught up or was ended, it was sent a
    // small part of the changes (an unbounded queue would deliver every one of them).
    let outcome_name = if outcome.is_ok() {
        "caught up"
    } else {
        "ended"
    };
    println!(
        "outcome: {outcome_name} after {updates} updates of alice read (for {CHANGES} changes, \
         at most {MAX_UPDATES_READ} allowed) in {:?}",
        reading.elapsed()
    );
    assert!(
        updates <= MAX_UPDATES_READ,
        "{updates} updates for {CHANGES} changes: not coalesced to the latest"
    );
    // The memory an unbounded queue of the frames the watcher never got would take, at the
    // encoded size of one such frame (in memory, as structs, they would weigh more).
    let undelivered = CHANGES - updates;
    let mut frame_presence = snapshot[0].clone();
    frame_presence.status = PresenceStatus::Away as i32;
    frame_presence.status_text = final_text.clone();
    frame_presence.version = last_version;
    let frame_bytes = ServerFrame {
        kind: Some(server_frame::Kind::Update(PresenceUpdate {
            presences: vec![frame_presence],
            ..Default::default()
        })),
    }
    .encoded_len() as u64;
    let unbounded = undelivered * frame_bytes;
    let limit = ((unbounded as f64 * MAX_GROWTH_OF_UNBOUNDED) as u64).min(MAX_GROWTH_BYTES);
    println!(
        "node VmRSS: before {:.1} MiB, after {:.1} MiB, growth {:.1} MiB; an unbounded queue \
         of the {undelivered} undelivered frames ({frame_bytes} B each) would take {:.1} MiB; \
         limit {:.1} MiB",
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        mib(unbounded),
        mib(limit)
    );
    assert!(
        growth < limit,
        "the node grew by {:.1} MiB while a watcher did not read: not far below the {:.1} MiB \
         an unbounded queue of the undelivered frames would take",
        mib(growth),
        mib(unbounded)
    );
    match outcome {
        Ok(final_state) => {
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
    let node = NodeProcess::start(NODE_ARGS).await;
    let alice = open(&node, "alice", "ios").await;
    let flood = flood(alice, CHANGES).await;
    assert_all_answered(&flood, CHANGES);
}
