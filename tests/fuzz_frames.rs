//! A property run of the frame handling (issue 11, point 8): arbitrary `ClientFrame`
//! sequences, valid and invalid (huge and bad ids, bad statuses, long texts, empty frames,
//! subscribe/unsubscribe storms, hello missing or twice), fed to one session on a real
//! in-process node over a real socket, checking the node's invariants:
//! - nothing panics and the node keeps serving;
//! - the session ends cleanly or with a status API.md allows for a session
//!   (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE);
//! - replies are bounded: at most one `Welcome`/`Ack`/`Snapshot`/`Error`/`HeartbeatAck` per
//!   frame, each answering a frame that was sent, none twice;
//! - a watcher of the session's user sees strictly increasing versions per user, and its
//!   final view equals what the store answers (`GetPresence`), the version aside when only
//!   the version moved (a watcher is told only of changes it can see).
//!
//! `PRESENCE_FUZZ_CASES` (default 64: a few seconds) sets the number of sequences.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use common::{hello, patience, subscribe, user_creds, TestNode};
use presence_node::client::{self, Session};
use presence_node::proto::presence_service_client::PresenceServiceClient;
use presence_node::proto::{
    client_frame, server_frame, ClientFrame, Heartbeat, Hello, Presence, ServerFrame, SetStatus,
    Subscribe, Unsubscribe,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tonic::Code;

/// Users every sequence may name besides its own (`SELF`).
const POOL: [&str; 3] = ["pool-a", "pool-b", "pool-c"];
/// Stands for the session's own user id in generated ids.
const SELF: &str = "<self>";

#[derive(Debug, Clone)]
enum Op {
    Hello {
        device: String,
        status: Option<i32>,
        text: String,
    },
    Heartbeat,
    SetStatus {
        status: i32,
        text: String,
    },
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Empty,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => "[a-z ]{1,12}",
        1 => (250usize..=260).prop_map(|n| "t".repeat(n)),
        1 => Just("bad\u{0}text".to_string()),
        1 => (1000usize..3000).prop_map(|n| "h".repeat(n)),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(POOL.to_vec()).prop_map(str::to_string),
        4 => Just(SELF.to_string()),
        1 => Just(String::new()),
        1 => (120usize..140).prop_map(|n| "i".repeat(n)),
        1 => (10_000usize..20_000).prop_map(|n| "H".repeat(n)),
        1 => Just("ctl\u{7}id".to_string()),
        1 => "[a-z0-9]{1,8}",
    ]
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        6 => prop::collection::vec(id(), 0..6),
        // Storms: at and just past the per-request limit (1,000).
        1 => (998usize..1003).prop_map(|n| (0..n).map(|i| format!("storm-{}", i % 700)).collect()),
    ]
}

fn status() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 1i32..=4, 1 => -3i32..12, 1 => any::<i32>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (id(), prop::option::of(status()), text())
            .prop_map(|(device, status, text)| Op::Hello { device, status, text }),
        3 => Just(Op::Heartbeat),
        4 => (status(), text()).prop_map(|(status, text)| Op::SetStatus { status, text }),
        4 => ids().prop_map(Op::Subscribe),
        2 => ids().prop_map(Op::Unsubscribe),
        1 => Just(Op::Empty),
    ]
}

/// A sequence; most start with a valid hello so that later frames reach their handlers.
fn sequence() -> impl Strategy<Value = (bool, Vec<Op>)> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(op(), 0..40),
    )
}

fn frames_of(user: &str, valid_hello: bool, ops: &[Op]) -> Vec<ClientFrame> {
    let own = |id: &String| {
        if id == SELF {
            user.to_string()
        } else {
            id.clone()
        }
    };
    let mut kinds = Vec::new();
    if valid_hello {
        kinds.push(Some(client_frame::Kind::Hello(hello("fuzz"))));
    }
    for op in ops {
        kinds.push(match op {
            Op::Hello {
                device,
                status,
                text,
            } => Some(client_frame::Kind::Hello(Hello {
                device: own(device),
                status: *status,
                status_text: text.clone(),
            })),
            Op::Heartbeat => Some(client_frame::Kind::Heartbeat(Heartbeat {})),
            Op::SetStatus { status, text } => Some(client_frame::Kind::SetStatus(SetStatus {
                status: *status,
                status_text: text.clone(),
            })),
            Op::Subscribe(ids) => Some(client_frame::Kind::Subscribe(Subscribe {
                user_ids: ids.iter().map(own).collect(),
            })),
            Op::Unsubscribe(ids) => Some(client_frame::Kind::Unsubscribe(Unsubscribe {
                user_ids: ids.iter().map(own).collect(),
            })),
            Op::Empty => None,
        });
    }
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| ClientFrame {
            r#ref: i as u64 + 1,
            kind,
        })
        .collect()
}

/// What a watcher saw: the latest view per user, checking versions strictly increase.
#[derive(Default)]
struct View {
    latest: HashMap<String, Presence>,
}

impl View {
    fn see(&mut self, presences: &[Presence]) {
        for p in presences {
            if let Some(before) = self.latest.get(&p.user_id) {
                assert!(
                    p.version > before.version || (p.version == before.version && p == before),
                    "the watcher's versions of {} went from {} to {}",
                    p.user_id,
                    before.version,
                    p.version
                );
            }
            self.latest.insert(p.user_id.clone(), p.clone());
        }
    }
}

/// Feeds one sequence to a fresh user's session; checks the invariants.
async fn run_case(node: &TestNode, case: u64, valid_hello: bool, ops: &[Op]) {
    let user = format!("fz-{case}");
    let watched: Vec<String> = std::iter::once(user.clone())
        .chain(POOL.iter().map(|s| s.to_string()))
        .collect();
    let watched_refs: Vec<&str> = watched.iter().map(String::as_str).collect();
    let (mut watcher, _) = node.session(&format!("fw-{case}"), "web").await;
    let mut view = View::default();
    view.see(&subscribe(&mut watcher, &watched_refs).await);

    let frames = frames_of(&user, valid_hello, ops);
    let sent: HashSet<u64> = frames.iter().map(|f| f.r#ref).collect();
    let mut request = tonic::Request::new(futures::stream::iter(frames.clone()));
    client::attach(&user_creds(&user), request.metadata_mut()).unwrap();
    let channel = node.channel().await;
    let outcome = tokio::time::timeout(patience(), async {
        let mut replies: Vec<u64> = Vec::new();
        let mut inbound = match PresenceServiceClient::new(channel).session(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (replies, Err(status)),
        };
        loop {
            match inbound.message().await {
                Ok(Some(ServerFrame { kind: Some(kind) })) => match kind {
                    server_frame::Kind::Welcome(_) => replies.push(1),
                    server_frame::Kind::Ack(a) => replies.push(a.r#ref),
                    server_frame::Kind::Snapshot(s) => replies.push(s.r#ref),
                    server_frame::Kind::Error(e) => replies.push(e.r#ref),
                    server_frame::Kind::HeartbeatAck(_) => replies.push(0),
                    _ => {}
                },
                Ok(Some(ServerFrame { kind: None })) => panic!("a frame without a kind"),
                Ok(None) => return (replies, Ok(())),
                Err(status) => return (replies, Err(status)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("case {case}: the session did not end within the patience"));
    let (replies, end) = outcome;

    if let Err(status) = &end {
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted | Code::Unavailable
            ),
            "case {case}: the session ended with a status API.md does not allow: {status:?}"
        );
    }
    assert!(
        replies.len() <= frames.len(),
        "case {case}: {} replies to {} frames",
        replies.len(),
        frames.len()
    );
    let mut answered = HashSet::new();
    for r in replies.iter().filter(|r| **r != 0) {
        assert!(
            sent.contains(r),
            "case {case}: a reply to ref {r}, never sent"
        );
        assert!(answered.insert(*r), "case {case}: ref {r} answered twice");
    }

    // The user's record is final now (the session ended; the clock does not move): the
    // watcher's view of it converges to what the store says, with increasing versions.
    let channel = node.channel().await;
    let expected = tokio::time::timeout(
        patience(),
        client::get_presence(
            channel,
            &user_creds(&format!("fw-{case}")),
            vec![user.clone()],
        ),
    )
    .await
    .expect("GetPresence within the patience")
    .expect("GetPresence")
    .remove(0);
    // A watcher is told only when its view changed (API.md semantics 4): the store's version
    // may be ahead of the watcher's when only the version moved.
    let same_view = |seen: Option<&Presence>| {
        seen.is_some_and(|p| {
            p.version <= expected.version
                && Presence {
                    version: expected.version,
                    ..p.clone()
                } == expected
        })
    };
    let deadline = tokio::time::Instant::now() + patience();
    while !same_view(view.latest.get(&user)) {
        let frame = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "case {case}: the watcher's view of {user} {:?} never became the store's \
                     {expected:?}",
                    view.latest.get(&user)
                )
            })
            .expect("the watcher's stream stays open")
            .expect("the watcher's stream stays open");
        if let Some(server_frame::Kind::Update(u)) = frame.kind {
            view.see(&u.presences);
        }
    }
    watcher.close();
}

#[test]
fn arbitrary_frame_sequences_keep_the_node_s_invariants() {
    let cases: u32 = std::env::var("PRESENCE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = runtime.block_on(TestNode::start(&[
        // Room for every case's sessions; rates left at their defaults (refusals are
        // frames like any other).
        "--max-subscriptions",
        "10000",
    ]));
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        // Shrinking reruns cases against the same node; keep it short.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let next_case = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let result = runner.run(&sequence(), |(valid_hello, ops)| {
        let case = next_case.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(run_case(&node, case, valid_hello, &ops));
        Ok(())
    });
    println!(
        "fuzz: {} sequences run in {:?}",
        next_case.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The node still serves a normal session after all of it.
    runtime.block_on(async {
        let channel = node.channel().await;
        let (mut s, _) = tokio::time::timeout(
            patience(),
            Session::open(channel, &user_creds("after-fuzz"), hello("web")),
        )
        .await
        .expect("opens within the patience")
        .expect("opens");
        s.close();
    });
}
