//! How a session starts and ends (API.md semantics 3 and the fatal statuses), over real
//! gRPC, with the node's clock moved by the test instead of sleeping.

mod common;

use common::*;
use futures::StreamExt;
use presence_node::client::{self, get_presence, ClientError, Session};
use presence_node::proto::presence_service_client::PresenceServiceClient;
use presence_node::proto::{client_frame, server_frame, ClientFrame, Heartbeat, Hello, Status};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A raw `Session` call: the test controls every frame.
async fn raw_call(
    node: &TestNode,
    user: &str,
) -> (
    mpsc::Sender<ClientFrame>,
    tonic::Streaming<presence_node::proto::ServerFrame>,
) {
    let (tx, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    client::attach(&user_creds(user), request.metadata_mut()).unwrap();
    let response = PresenceServiceClient::new(node.channel().await)
        .session(request)
        .await
        .expect("call accepted");
    (tx, response.into_inner())
}

async fn final_status(
    stream: &mut tonic::Streaming<presence_node::proto::ServerFrame>,
) -> tonic::Code {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!("stream did not end"),
            Ok(None) => return tonic::Code::Ok,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(status))) => return status.code(),
        }
    }
}

#[tokio::test]
async fn welcome_tells_the_session_its_terms() {
    let node = TestNode::start(&[]).await;
    let (_s, welcome) = node.session("alice", "ios").await;
    assert_eq!(welcome.user_id, "alice");
    assert_eq!(welcome.node_id, node.node.node_id);
    assert!(welcome.session_id.starts_with(&node.node.node_id));
    assert_eq!(welcome.heartbeat_interval_ms, 10_000);
    assert_eq!(welcome.session_ttl_ms, 30_000);
    assert_eq!(welcome.max_subscriptions, 10_000);
}

#[tokio::test]
async fn a_call_without_identity_is_unauthenticated() {
    let node = TestNode::start(&[]).await;
    let (_tx, rx) = mpsc::channel::<ClientFrame>(1);
    let err = PresenceServiceClient::new(node.channel().await)
        .session(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // An identity that breaks the user id rules is no identity either.
    let err = Session::open(
        node.channel().await,
        &user_creds(&"x".repeat(129)),
        hello("ios"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated));
}

#[tokio::test]
async fn the_first_frame_must_be_hello() {
    let node = TestNode::start(&[]).await;
    let (tx, mut stream) = raw_call(&node, "alice").await;
    tx.send(ClientFrame {
        r#ref: 1,
        kind: Some(client_frame::Kind::Heartbeat(Heartbeat {})),
    })
    .await
    .unwrap();
    assert_eq!(
        final_status(&mut stream).await,
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn an_empty_first_frame_ends_the_call_too() {
    // Empty frames before hello would otherwise keep a session that never said hello open
    // (each frame counts as liveness), outside the per-user session cap.
    let node = TestNode::start(&[]).await;
    let (tx, mut stream) = raw_call(&node, "alice").await;
    tx.send(ClientFrame {
        r#ref: 1,
        kind: None,
    })
    .await
    .unwrap();
    assert_eq!(
        final_status(&mut stream).await,
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn a_malformed_hello_ends_the_call_with_invalid_argument() {
    let node = TestNode::start(&[]).await;
    for hello in [
        Hello {
            device: String::new(),
            ..hello("x")
        },
        hello_with("ios", Status::Offline, ""),
        hello_with("ios", Status::Online, &"t".repeat(257)),
    ] {
        let err = Session::open(node.channel().await, &user_creds("alice"), hello)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    }
}

#[tokio::test]
async fn no_hello_within_the_hello_timeout_is_deadline_exceeded() {
    let node = TestNode::start(&["--hello-timeout-ms", "5000"]).await;
    let (_tx, mut stream) = raw_call(&node, "alice").await;
    node.wait_sessions(1, "the session to be registered").await;
    node.advance(5001);
    assert_eq!(
        final_status(&mut stream).await,
        tonic::Code::DeadlineExceeded
    );
}

#[tokio::test]
async fn frames_after_hello_that_make_no_sense_get_an_error_and_the_session_goes_on() {
    let node = TestNode::start(&[]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    let again = s
        .send(client_frame::Kind::Hello(hello("ios")))
        .await
        .unwrap();
    assert!(answer(&mut s, again).await.is_err());
    let r = s.heartbeat().await.unwrap();
    let ack = recv_until(&mut s, "heartbeat ack", |k| match k {
        server_frame::Kind::HeartbeatAck(a) => Some(a.server_time_ms),
        _ => None,
    })
    .await;
    assert_eq!(ack, T0);
    assert!(r > again);
}

#[tokio::test]
async fn heartbeats_keep_a_session_alive_and_silence_expires_it_at_once() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (mut alice, welcome) = node.session("alice", "ios").await;
    next_update_of(&mut watcher, "alice").await;
    // 4 x 20 s = 80 s of node time, well past the 30 s TTL, with a heartbeat every 20 s.
    for _ in 0..4 {
        node.advance(20_000);
        heartbeat_acked(&mut alice).await;
        heartbeat_acked(&mut watcher).await;
    }
    assert_eq!(node.node.sessions.len(), 2, "still alive");
    // Now alice is silent (the watcher is not): past the TTL her stream ends with
    // DEADLINE_EXCEEDED ...
    node.advance(20_000);
    heartbeat_acked(&mut watcher).await;
    node.advance(welcome.session_ttl_ms - 20_000 + 1);
    let end = end_of(&mut alice).await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded);
    // ... and the user is OFFLINE at once: no grace, the TTL already waited.
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
}

#[tokio::test]
async fn an_abrupt_end_lingers_for_the_grace_then_goes_offline() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    let (channel, cutter) = node.cuttable_channel().await;
    let (_alice, _) = Session::open(channel, &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    next_update_of(&mut watcher, "alice").await;

    // The connection drops without a clean close (a killed app, a lost network).
    cutter.cut();
    node.wait_sessions(1, "the reset to end the session").await;
    // Still counted during the grace: no update yet.
    let (_marker, _) = node.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");
    let p = get_presence(node.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Online);
    assert_eq!(p[0].devices, vec!["ios"]);

    node.advance(3000);
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
    assert_eq!(offline.last_seen_ms, T0 + 3000);
}

#[tokio::test]
async fn a_quick_reconnect_of_the_same_device_is_invisible_to_watchers() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    let (channel, cutter) = node.cuttable_channel().await;
    let (_alice, _) = Session::open(channel, &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    let online = next_update_of(&mut watcher, "alice").await;

    cutter.cut();
    node.wait_sessions(1, "the reset to end the session").await;
    node.advance(2000);
    let (_alice_again, _) = node.session("alice", "ios").await;
    // Well past the first session's grace.
    node.advance(10_000);
    let (_marker, _) = node.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(
        seen.iter().all(|p| p.user_id != "alice"),
        "reconnect flapped: {seen:?}"
    );
    let p = get_presence(node.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Online);
    assert_eq!(p[0].since_ms, online.since_ms);
}

#[tokio::test]
async fn sessions_over_the_per_user_cap_are_refused_with_resource_exhausted() {
    let node = TestNode::start(&["--max-sessions-per-user", "2"]).await;
    let _a = node.session("alice", "d1").await;
    let _b = node.session("alice", "d2").await;
    let err = Session::open(node.channel().await, &user_creds("alice"), hello("d3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(s) if s.code() == tonic::Code::ResourceExhausted),
        "{err}"
    );
    // Another user is not affected.
    let _bob = node.session("bob", "d1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_multiplex_one_connection() {
    let node = TestNode::start(&[]).await;
    let channel = node.channel().await;
    let mut sessions = Vec::new();
    for i in 0..200 {
        let (s, _) = Session::open(channel.clone(), &user_creds(&format!("u{i}")), hello("web"))
            .await
            .unwrap();
        sessions.push(s);
    }
    assert_eq!(node.node.sessions.len(), 200);
    let p = get_presence(channel, &user_creds("bob"), ids(&["u0", "u199"]))
        .await
        .unwrap();
    assert!(p.iter().all(|p| status_of(p) == Status::Online));
}

#[tokio::test]
async fn drain_tells_sessions_to_reconnect_and_refuses_new_ones() {
    let node = TestNode::start(&["--shutdown-grace-ms", "60000"]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    let channel = node.channel().await;
    let inner = node.node.clone();
    let stopping = tokio::spawn(node.shutdown());
    let retry = recv_until(&mut alice, "reconnect", |k| match k {
        server_frame::Kind::Reconnect(r) => Some(r.retry_after_ms),
        _ => None,
    })
    .await;
    assert!(
        retry <= 1500,
        "retry_after_ms {retry} within half the offline grace"
    );
    assert!(inner.is_draining());
    let err = Session::open(channel, &user_creds("bob"), hello("ios"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
    // The device leaves; the drain then completes without waiting for the grace.
    alice.close();
    tokio::time::timeout(patience(), stopping)
        .await
        .expect("drain completes once sessions left")
        .unwrap();
}

#[tokio::test]
async fn a_session_past_the_max_age_is_asked_to_reconnect_without_a_flap() {
    let node = TestNode::start(&["--max-session-age-ms", "60000"]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    next_update_of(&mut watcher, "alice").await;
    // Keep both alive past the age with heartbeats (TTL 30 s).
    for _ in 0..2 {
        node.advance(25_000);
        heartbeat_acked(&mut alice).await;
        heartbeat_acked(&mut watcher).await;
    }
    node.advance(10_001);
    let reconnect = recv_until(&mut alice, "reconnect", |k| match k {
        server_frame::Kind::Reconnect(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert!(reconnect.reason.contains("rebalance"), "{reconnect:?}");
    assert!(reconnect.retry_after_ms <= 1_500);
    // The device moves: it closes its stream cleanly and opens a new one, which replaces the
    // old session without any visible change.
    alice.close();
    end_of(&mut alice).await.unwrap();
    let (_alice_again, _) = node.session("alice", "ios").await;
    let (_marker, _) = node.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");
}

#[tokio::test]
async fn sessions_over_the_node_cap_are_refused_with_a_retry_hint() {
    let node = TestNode::start(&["--max-sessions", "2"]).await;
    let _a = node.session("a", "ios").await;
    let _b = node.session("b", "ios").await;
    let err = Session::open(node.channel().await, &user_creds("c"), hello("ios"))
        .await
        .unwrap_err();
    let ClientError::Refused(status) = err else {
        panic!("refused with a status, got {err}")
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry hint");
    assert!((1_000..=5_000).contains(&pushback));
}
