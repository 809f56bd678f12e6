//! Who may see whom (API.md "Who may see whom") against a real `WatchAuthorizer` over gRPC
//! (`common::authorizer`): ALLOW, DENY and HIDE in snapshots, updates and GetPresence; the
//! viewer never asked about itself; fail closed; the decision cache and its collapsing of
//! concurrent questions; revocation by expiry and by `InvalidateDecisions` (one node, and
//! two nodes on a real redis-server); the `presence:read` scope; the `token` policy; the
//! bearer token.

mod common;

use std::time::{Duration, Instant};

use common::authorizer::TestAuthorizer;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use presence_node::client::{self, Credentials, Session};
use presence_node::proto::presence_admin_service_client::PresenceAdminServiceClient;
use presence_node::proto::presence_service_client::PresenceServiceClient;
use presence_node::proto::{
    server_frame, Decision, ErrorCode, GetPresenceRequest, GetPresenceResponse,
    InvalidateDecisionsRequest, Presence, PresenceUpdate, Snapshot, Status,
};
use prost::Message;

const SECRET: &str = "watch-policy-test-secret-5c1d9e";
const AUTHORIZER_TOKEN: &str = "authz-token-9f2e";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A node asking `authorizer`, with `extra` flags.
async fn node_with(authorizer: &TestAuthorizer, extra: &[&str]) -> TestNode {
    let url = authorizer.url();
    let mut args = vec![
        "--watch-policy",
        "authorizer",
        "--authorizer-url",
        url.as_str(),
    ];
    for (flag, default) in [
        ("--authorizer-timeout-ms", "300"),
        ("--authorizer-cache-ms", "5000"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    TestNode::start(&args).await
}

/// Subscribes; the snapshot, or the error code refusing the frame.
async fn try_subscribe(session: &mut Session, users: &[&str]) -> Result<Snapshot, i32> {
    let reference = session.subscribe(ids(users)).await.unwrap();
    recv_until(session, "snapshot or error", |kind| match kind {
        server_frame::Kind::Snapshot(s) if s.r#ref == reference => Some(Ok(s.clone())),
        server_frame::Kind::Error(e) if e.r#ref == reference => Some(Err(e.code)),
        _ => None,
    })
    .await
}

async fn snapshot(session: &mut Session, users: &[&str]) -> Snapshot {
    try_subscribe(session, users)
        .await
        .unwrap_or_else(|code| panic!("subscribe refused with code {code}"))
}

async fn get(
    node: &TestNode,
    creds: &Credentials,
    users: &[&str],
) -> Result<GetPresenceResponse, tonic::Status> {
    let mut request = tonic::Request::new(GetPresenceRequest {
        user_ids: ids(users),
    });
    client::attach(creds, request.metadata_mut()).unwrap();
    PresenceServiceClient::new(node.channel().await)
        .get_presence(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn set_status(session: &mut Session, status: Status, text: &str) {
    let reference = session.set_status(status, text).await.unwrap();
    answer(session, reference).await.expect("status set");
}

/// `p` as it would look for `as_user`: HIDE must equal a never-seen id byte for byte.
fn renamed(p: &Presence, as_user: &str) -> Vec<u8> {
    let mut p = p.clone();
    p.user_id = as_user.to_owned();
    p.encode_to_vec()
}

/// Nothing but OFFLINE and version 0.
fn assert_blank(p: &Presence) {
    let blank = Presence {
        user_id: p.user_id.clone(),
        status: Status::Offline as i32,
        ..Presence::default()
    };
    assert_eq!(p, &blank);
}

/// The next update frame that mentions `user`.
async fn next_update_frame_of(session: &mut Session, user: &str) -> PresenceUpdate {
    recv_until(
        session,
        &format!("an update frame of {user}"),
        |kind| match kind {
            server_frame::Kind::Update(u) if u.presences.iter().any(|p| p.user_id == user) => {
                Some(u.clone())
            }
            _ => None,
        },
    )
    .await
}

#[tokio::test]
async fn allow_deny_and_hide_in_snapshots_updates_and_get_presence() {
    let authorizer = TestAuthorizer::start().await;
    authorizer.set("bob", "dave", Decision::Deny);
    authorizer.set("bob", "mallory", Decision::Hide);
    let node = node_with(&authorizer, &[]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    let (mut dave, _) = node.session("dave", "ios").await;
    let (mut mallory, _) = node.session("mallory", "ios").await;
    let (mut bob, _) = node.session("bob", "web").await;

    let snap = snapshot(&mut bob, &["alice", "dave", "mallory", "never-seen"]).await;
    let by = |u: &str| {
        snap.presences
            .iter()
            .find(|p| p.user_id == u)
            .unwrap()
            .clone()
    };
    assert_eq!(snap.presences.len(), 4);
    assert_eq!(status_of(&by("alice")), Status::Online);
    assert_blank(&by("dave"));
    assert_eq!(snap.denied_user_ids, ids(&["dave"]));
    assert_eq!(
        renamed(&by("mallory"), "x"),
        renamed(&by("never-seen"), "x"),
        "a hidden user looks exactly like a never-seen one"
    );

    // Updates: only alice's reach bob (alice changes last, as the marker).
    set_status(&mut dave, Status::Busy, "dave busy").await;
    set_status(&mut mallory, Status::Busy, "mallory busy").await;
    set_status(&mut alice, Status::Away, "lunch").await;
    let seen = updates_until_marker(&mut bob, "alice").await;
    assert!(seen.iter().all(|p| p.user_id == "alice"), "{seen:?}");

    // GetPresence answers the same way.
    let response = get(
        &node,
        &user_creds("bob"),
        &["dave", "mallory", "alice", "never-seen"],
    )
    .await
    .unwrap();
    assert_eq!(response.denied_user_ids, ids(&["dave"]));
    assert_blank(&response.presences[0]);
    assert_eq!(
        renamed(&response.presences[1], "x"),
        renamed(&response.presences[3], "x")
    );
    assert_eq!(response.presences[2].status_text, "lunch");
    // The response for a hidden id is the same bytes as for an unknown one.
    let hidden = get(&node, &user_creds("bob"), &["mallory"]).await.unwrap();
    let unknown = get(&node, &user_creds("bob"), &["zed-unknown"])
        .await
        .unwrap();
    let mut hidden_bytes = hidden.clone();
    hidden_bytes.presences[0].user_id = "zed-unknown".into();
    assert_eq!(hidden_bytes.encode_to_vec(), unknown.encode_to_vec());
}

#[tokio::test]
async fn the_viewer_itself_is_never_asked() {
    let authorizer = TestAuthorizer::start().await;
    authorizer.set_default(Decision::Deny);
    let node = node_with(&authorizer, &[]).await;
    let (mut bob, _) = node.session("bob", "web").await;
    let snap = snapshot(&mut bob, &["bob", "alice"]).await;
    assert_eq!(
        status_of(&snap.presences[0]),
        Status::Online,
        "bob sees himself"
    );
    assert_eq!(snap.denied_user_ids, ids(&["alice"]));
    let own = get(&node, &user_creds("bob"), &["bob"]).await.unwrap();
    assert_eq!(status_of(&own.presences[0]), Status::Online);
    let calls = authorizer.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].viewer_id, "bob");
    assert_eq!(calls[0].user_ids, ids(&["alice"]));
}

#[tokio::test]
async fn the_bearer_token_is_sent_to_the_authorizer() {
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &["--authorizer-token", AUTHORIZER_TOKEN]).await;
    get(&node, &user_creds("bob"), &["alice"]).await.unwrap();
    let calls = authorizer.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {AUTHORIZER_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn a_down_authorizer_fails_closed_and_cached_decisions_go_on_serving() {
    let mut authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &[]).await;
    let (mut bob, _) = node.session("bob", "web").await;
    snapshot(&mut bob, &["alice"]).await;
    authorizer.stop().await;

    // Cached: still served.
    let (mut bob2, _) = node.session("bob", "ios").await;
    let cached = snapshot(&mut bob2, &["alice"]).await;
    assert!(cached.denied_user_ids.is_empty());
    assert!(get(&node, &user_creds("bob"), &["alice"]).await.is_ok());
    // Not cached: refused whole, the session goes on.
    let code = try_subscribe(&mut bob2, &["alice", "carol"])
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::Unavailable as i32);
    heartbeat_acked(&mut bob2).await;
    let err = get(&node, &user_creds("bob"), &["carol"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_slow_or_erring_or_miscounting_authorizer_fails_closed() {
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &[]).await;
    let (mut bob, _) = node.session("bob", "web").await;
    let cases: [(&str, &dyn Fn(bool)); 3] = [
        ("slow", &|on| {
            authorizer.set_delay(if on {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            })
        }),
        ("error", &|on| authorizer.set_failing(on)),
        ("wrong count", &|on| authorizer.set_wrong_count(on)),
    ];
    for (i, (what, switch)) in cases.iter().enumerate() {
        switch(true);
        let user = format!("user-{i}");
        let code = try_subscribe(&mut bob, &[user.as_str(), "other"]).await;
        assert_eq!(code.unwrap_err(), ErrorCode::Unavailable as i32, "{what}");
        let err = get(&node, &user_creds("bob"), &[user.as_str()])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{what}");
        switch(false);
        // Nothing failed was cached: it works once the authorizer does.
        snapshot(&mut bob, &[user.as_str()]).await;
    }
}

#[tokio::test]
async fn a_second_subscribe_within_the_ttl_asks_nothing() {
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &[]).await;
    let (mut bob, _) = node.session("bob", "web").await;
    snapshot(&mut bob, &["alice", "carol"]).await;
    assert_eq!(authorizer.call_count(), 1);
    let (mut bob2, _) = node.session("bob", "ios").await;
    snapshot(&mut bob2, &["alice", "carol"]).await;
    get(&node, &user_creds("bob"), &["carol"]).await.unwrap();
    assert_eq!(authorizer.call_count(), 1, "answered from the cache");
    // A new id costs one call with only that id.
    snapshot(&mut bob2, &["alice", "dave"]).await;
    let calls = authorizer.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].user_ids, ids(&["dave"]));
}

#[tokio::test]
async fn a_decision_turned_deny_on_expiry_is_revoked_with_a_last_offline_update() {
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &[]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    set_status(&mut alice, Status::Busy, "meeting").await;
    let (mut carol, _) = node.session("carol", "ios").await;
    let (mut bob, _) = node.session("bob", "web").await;
    let snap = snapshot(&mut bob, &["alice", "carol"]).await;
    let last_seen_version = snap.presences[0].version;
    assert_eq!(snap.presences[0].status_text, "meeting");

    authorizer.set("bob", "alice", Decision::Deny);
    node.advance(4_000);
    heartbeat_acked(&mut bob).await;
    assert_eq!(authorizer.call_count(), 1, "not expired yet: nothing asked");
    node.advance(2_000);
    let update = next_update_frame_of(&mut bob, "alice").await;
    let last = update
        .presences
        .iter()
        .find(|p| p.user_id == "alice")
        .unwrap();
    assert_eq!(status_of(last), Status::Offline);
    assert!(last.status_text.is_empty() && last.devices.is_empty() && last.last_seen_ms == 0);
    assert!(last.version > last_seen_version);
    assert_eq!(update.denied_user_ids, ids(&["alice"]));
    // carol was asked again too (still allowed); alice's changes no longer reach bob.
    set_status(&mut alice, Status::Away, "gone").await;
    set_status(&mut carol, Status::Away, "marker").await;
    let seen = updates_until_marker(&mut bob, "carol").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");
    // A later subscribe starts afresh (and is answered from the fresh decision).
    let again = snapshot(&mut bob, &["alice"]).await;
    assert_eq!(again.denied_user_ids, ids(&["alice"]));
}

#[tokio::test]
async fn invalidate_decisions_revokes_at_once_and_hide_is_not_listed() {
    let authorizer = TestAuthorizer::start().await;
    let admin_addr = free_addr();
    let node = node_with(&authorizer, &["--admin-addr", &admin_addr]).await;
    let (_alice, _) = node.session("alice", "ios").await;
    let (mut bob, _) = node.session("bob", "web").await;
    let snap = snapshot(&mut bob, &["alice"]).await;
    assert_eq!(status_of(&snap.presences[0]), Status::Online);

    authorizer.set("bob", "alice", Decision::Hide);
    let mut admin = admin_client(&admin_addr).await;
    let answer = admin
        .invalidate_decisions(InvalidateDecisionsRequest {
            viewer_ids: vec![],
            user_ids: ids(&["alice"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.local_dropped, 1);
    let update = next_update_frame_of(&mut bob, "alice").await;
    assert_eq!(status_of(&update.presences[0]), Status::Offline);
    assert!(update.presences[0].version > snap.presences[0].version);
    assert!(update.denied_user_ids.is_empty(), "HIDE is never listed");
    assert_eq!(authorizer.call_count(), 2);
}

async fn admin_client(addr: &str) -> PresenceAdminServiceClient<tonic::transport::Channel> {
    let url = format!("http://{addr}");
    let channel = eventually("the admin API to listen", || async {
        client::connect(&url).await.ok()
    })
    .await;
    PresenceAdminServiceClient::new(channel)
}

on_redis_and_redis_cluster!(invalidate_decisions_reaches_a_watcher_on_another_node);

async fn invalidate_decisions_reaches_a_watcher_on_another_node(redis: &SharedRedis) {
    let authorizer = TestAuthorizer::start().await;
    let url = authorizer.url();
    let admin_addr = free_addr();
    let policy = [
        "--watch-policy",
        "authorizer",
        "--authorizer-url",
        url.as_str(),
        "--authorizer-cache-ms",
        "600000",
    ];
    let mut a_args = policy.to_vec();
    a_args.extend(["--admin-addr", admin_addr.as_str()]);
    let node_a = redis.node("watchpolicy", "node-a", &a_args).await;
    let node_b = redis.node("watchpolicy", "node-b", &policy).await;
    let (_alice, _) = node_a.session("alice", "ios").await;
    let (mut bob, _) = node_b.session("bob", "web").await;
    let snap = snapshot(&mut bob, &["alice"]).await;
    assert!(snap.denied_user_ids.is_empty());

    authorizer.set("bob", "alice", Decision::Deny);
    let mut admin = admin_client(&admin_addr).await;
    let answer = admin
        .invalidate_decisions(InvalidateDecisionsRequest {
            viewer_ids: ids(&["bob"]),
            user_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.forwarded_nodes, 1, "sent to node-b");
    let update = next_update_frame_of(&mut bob, "alice").await;
    assert_eq!(status_of(&update.presences[0]), Status::Offline);
    assert!(update.presences[0].version > snap.presences[0].version);
    assert_eq!(update.denied_user_ids, ids(&["alice"]));
}

fn jwt(sub: &str, extra: serde_json::Value) -> Credentials {
    let mut claims = serde_json::json!({"sub": sub, "exp": T0 / 1000 + 3600});
    if let (Some(map), serde_json::Value::Object(more)) = (claims.as_object_mut(), extra) {
        map.extend(more);
    }
    Credentials::Token(
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn the_presence_read_scope_is_not_subject_to_the_policy() {
    let authorizer = TestAuthorizer::start().await;
    authorizer.set_default(Decision::Deny);
    let node = node_with(&authorizer, &["--auth", "jwt", "--jwt-secret", SECRET]).await;
    let alice = jwt("alice", serde_json::json!({}));
    let (_alice, _) = Session::open(node.channel().await, &alice, hello("ios"))
        .await
        .unwrap();
    let backend = jwt(
        "backend",
        serde_json::json!({"scope": "openid presence:read"}),
    );
    let seen = get(&node, &backend, &["alice"]).await.unwrap();
    assert_eq!(status_of(&seen.presences[0]), Status::Online);
    assert!(seen.denied_user_ids.is_empty());
    let (mut watching, _) = Session::open(node.channel().await, &backend, hello("svc"))
        .await
        .unwrap();
    let snap = snapshot(&mut watching, &["alice"]).await;
    assert_eq!(status_of(&snap.presences[0]), Status::Online);
    assert_eq!(
        authorizer.call_count(),
        0,
        "never asked for a presence:read caller"
    );
    // Without the scope the same call is denied.
    let plain = jwt("backend2", serde_json::json!({"scope": "openid"}));
    let denied = get(&node, &plain, &["alice"]).await.unwrap();
    assert_eq!(denied.denied_user_ids, ids(&["alice"]));
}

#[tokio::test]
async fn the_token_policy_reads_the_presence_watch_claim() {
    let node = TestNode::start(&[
        "--auth",
        "jwt",
        "--jwt-secret",
        SECRET,
        "--watch-policy",
        "token",
    ])
    .await;
    let alice = jwt("alice", serde_json::json!({}));
    let (_alice, _) = Session::open(node.channel().await, &alice, hello("ios"))
        .await
        .unwrap();
    let bob = jwt("bob", serde_json::json!({"presence_watch": ["alice"]}));
    let (mut session, _) = Session::open(node.channel().await, &bob, hello("web"))
        .await
        .unwrap();
    let snap = snapshot(&mut session, &["alice", "carol", "bob"]).await;
    assert_eq!(status_of(&snap.presences[0]), Status::Online);
    assert_blank(&snap.presences[1]);
    assert_eq!(status_of(&snap.presences[2]), Status::Online, "self");
    assert_eq!(snap.denied_user_ids, ids(&["carol"]));
    let nobody = jwt("eve", serde_json::json!({}));
    let got = get(&node, &nobody, &["alice"]).await.unwrap();
    assert_eq!(got.denied_user_ids, ids(&["alice"]));
}

/// 2,000 sessions (100 viewers with 20 devices each, multiplexed over 8 connections)
/// subscribe at once to the same 20 users through an authorizer that takes 50 ms: the
/// concurrent identical questions collapse, so the authorizer is asked about once per
/// viewer, not once per session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_costs_about_one_call_per_viewer() {
    const VIEWERS: usize = 100;
    const DEVICES: usize = 20;
    let authorizer = TestAuthorizer::start().await;
    authorizer.set_delay(Duration::from_millis(50));
    let node = node_with(
        &authorizer,
        &[
            "--authorizer-timeout-ms",
            "20000",
            "--max-sessions-per-user",
            "32",
        ],
    )
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("star-{i}")).collect();
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(node.channel().await);
    }
    let mut sessions = Vec::new();
    for v in 0..VIEWERS {
        for d in 0..DEVICES {
            let channel = channels[(v * DEVICES + d) % channels.len()].clone();
            let (session, _) = Session::open(
                channel,
                &user_creds(&format!("viewer-{v}")),
                hello(&format!("dev-{d}")),
            )
            .await
            .expect("session opens");
            sessions.push(session);
        }
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut session in sessions {
        let users = users.clone();
        tasks.spawn(async move {
            let reference = session.subscribe(users).await.unwrap();
            recv_until(&mut session, "snapshot", |kind| match kind {
                server_frame::Kind::Snapshot(s) if s.r#ref == reference => Some(s.presences.len()),
                server_frame::Kind::Error(e) if e.r#ref == reference => {
                    panic!("refused: {e:?}")
                }
                _ => None,
            })
            .await;
            session
        });
    }
    let mut done = Vec::new();
    while let Some(session) = tasks.join_next().await {
        done.push(session.unwrap());
    }
    let calls = authorizer.call_count();
    println!(
        "storm: {} sessions of {VIEWERS} viewers subscribed to 20 users in {:?}: {calls} CheckWatch calls ({:.3} per session)",
        done.len(),
        started.elapsed(),
        calls as f64 / done.len() as f64
    );
    assert_eq!(done.len(), VIEWERS * DEVICES);
    assert!(calls >= VIEWERS, "each viewer asked at least once: {calls}");
    assert!(calls <= 2 * VIEWERS, "{calls} calls for {VIEWERS} viewers");
}

/// Prints the subscribe latency the authorizer adds (cache cold and warm) next to the `open`
/// policy, over real gRPC on 127.0.0.1; asserts only that warm is not slower than cold by
/// design (it asks nothing).
#[tokio::test]
async fn subscribe_latency_with_the_authorizer_cold_and_warm() {
    const ROUNDS: usize = 200;
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(
        &authorizer,
        &[
            "--subscribe-rate-per-s",
            "100000",
            "--subscribe-rate-burst",
            "100000",
        ],
    )
    .await;
    let open = TestNode::start(&[
        "--subscribe-rate-per-s",
        "100000",
        "--subscribe-rate-burst",
        "100000",
    ])
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("u-{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();

    async fn timed(session: &mut Session, users: &[&str], rounds: usize) -> Vec<Duration> {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            snapshot(session, users).await;
            times.push(started.elapsed());
            let reference = session.unsubscribe(ids(users)).await.unwrap();
            answer(session, reference).await.unwrap();
        }
        times
    }
    fn summary(mut times: Vec<Duration>) -> (Duration, Duration) {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    }

    let (mut baseline, _) = open.session("viewer", "web").await;
    let open_times = summary(timed(&mut baseline, &refs, ROUNDS).await);
    // Cold: a new viewer each time, so every subscribe asks the authorizer.
    let mut cold = Vec::with_capacity(ROUNDS / 4);
    for i in 0..ROUNDS / 4 {
        let (mut s, _) = node.session(&format!("cold-{i}"), "web").await;
        cold.extend(timed(&mut s, &refs, 1).await);
    }
    let cold_calls = authorizer.call_count();
    let (mut warm_session, _) = node.session("cold-0", "ios").await;
    let warm = timed(&mut warm_session, &refs, ROUNDS).await;
    assert_eq!(
        authorizer.call_count(),
        cold_calls,
        "warm subscribes ask nothing"
    );
    let (cold_p50, cold_p99) = summary(cold);
    let (warm_p50, warm_p99) = summary(warm);
    println!(
        "subscribe of 20 ids: open p50 {:?} p99 {:?}; authorizer cold p50 {:?} p99 {:?}; warm p50 {:?} p99 {:?}",
        open_times.0, open_times.1, cold_p50, cold_p99, warm_p50, warm_p99
    );
    assert_eq!(cold_calls, ROUNDS / 4);
}

/// The example authorizer of the README (examples/friends_authorizer.rs), compiled into
/// this test.
#[allow(dead_code)]
#[path = "../examples/friends_authorizer.rs"]
mod friends_authorizer;

#[tokio::test]
async fn the_example_authorizer_friends_see_each_other_and_strangers_do_not() {
    let dir =
        std::env::temp_dir().join(format!("friends-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("friends.txt");
    std::fs::write(&file, "friends alice bob\nhide alice mallory\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(friends_authorizer::serve(
        listener,
        friends_authorizer::FriendsAuthorizer {
            file: file.clone(),
            token: Some(AUTHORIZER_TOKEN.into()),
        },
    ));
    let admin_addr = free_addr();
    let node = TestNode::start(&[
        "--watch-policy",
        "authorizer",
        "--authorizer-url",
        &url,
        "--authorizer-token",
        AUTHORIZER_TOKEN,
        "--admin-addr",
        &admin_addr,
    ])
    .await;
    let (mut alice, _) = node.session("alice", "laptop").await;
    set_status(&mut alice, Status::Busy, "in a meeting").await;
    let (mut bob, _) = node.session("bob", "web").await;
    let (mut carol, _) = node.session("carol", "web").await;
    let (mut mallory, _) = node.session("mallory", "web").await;
    let friend = snapshot(&mut bob, &["alice"]).await;
    assert_eq!(status_of(&friend.presences[0]), Status::Busy);
    let stranger = snapshot(&mut carol, &["alice"]).await;
    assert_blank(&stranger.presences[0]);
    assert_eq!(stranger.denied_user_ids, ids(&["alice"]));
    // Hidden: blank like a never-seen id, and not listed.
    let blocked = snapshot(&mut mallory, &["alice"]).await;
    assert!(blocked.denied_user_ids.is_empty());
    assert_blank(&blocked.presences[0]);

    // Unfriended: the file changes, the backend tells the node, bob sees alice go.
    std::fs::write(&file, "hide alice mallory\n").unwrap();
    admin_client(&admin_addr)
        .await
        .invalidate_decisions(InvalidateDecisionsRequest {
            viewer_ids: ids(&["bob"]),
            user_ids: vec![],
        })
        .await
        .unwrap();
    let gone = next_update_frame_of(&mut bob, "alice").await;
    assert_eq!(status_of(&gone.presences[0]), Status::Offline);
    assert_eq!(gone.denied_user_ids, ids(&["alice"]));
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn bad_watch_policy_settings_stop_the_node_with_exit_code_64() {
    let cases: [(&[&str], &str); 3] = [
        (&["--watch-policy", "authorizer"], "PRESENCE_AUTHORIZER_URL"),
        (
            &[
                "--watch-policy",
                "authorizer",
                "--authorizer-url",
                "ftp://x:1",
            ],
            "PRESENCE_AUTHORIZER_URL",
        ),
        (&["--watch-policy", "token"], "PRESENCE_WATCH_POLICY"),
    ];
    for (args, setting) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_presence-node"))
            .args(args)
            .env_remove("PRESENCE_WATCH_POLICY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
    }
}

/// GET /metrics over plain HTTP/1.0.
async fn scrape(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    tokio::time::timeout(patience(), stream.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    body.starts_with("HTTP/1.").then_some(body)
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn authorizer_calls_cache_and_decisions_are_in_the_metrics() {
    let authorizer = TestAuthorizer::start().await;
    authorizer.set("bob", "dave", Decision::Deny);
    authorizer.set("bob", "mallory", Decision::Hide);
    let metrics_addr = free_addr();
    let url = authorizer.url();
    let node = common::node_process::NodeProcess::start(&[
        "--metrics-addr",
        &metrics_addr,
        "--watch-policy",
        "authorizer",
        "--authorizer-url",
        &url,
    ])
    .await;
    let channel = client::connect(&node.url).await.unwrap();
    let (mut bob, _) = Session::open(channel.clone(), &user_creds("bob"), hello("web"))
        .await
        .unwrap();
    snapshot(&mut bob, &["alice", "dave", "mallory"]).await;
    let (mut bob2, _) = Session::open(channel, &user_creds("bob"), hello("ios"))
        .await
        .unwrap();
    snapshot(&mut bob2, &["alice"]).await;
    let expected = [
        ("presence_authorizer_calls_total{result=\"ok\"}", 1.0),
        ("presence_watch_decision_cache_total{result=\"miss\"}", 3.0),
        ("presence_watch_decision_cache_total{result=\"hit\"}", 1.0),
        ("presence_watch_decisions_total{decision=\"allow\"}", 2.0),
        ("presence_watch_decisions_total{decision=\"deny\"}", 1.0),
        ("presence_watch_decisions_total{decision=\"hide\"}", 1.0),
        ("presence_authorizer_call_seconds_count", 1.0),
    ];
    // Fails (times out) unless every series has exactly its value.
    eventually("the decision metrics", || async {
        let body = scrape(&metrics_addr).await?;
        expected
            .iter()
            .all(|(series, value)| sample(&body, series) == Some(*value))
            .then_some(())
    })
    .await;
}

/// Revalidation that cannot reach the authorizer keeps what the sessions watch (an outage
/// must not blank every watch list) and asks again a second later (node time).
#[tokio::test]
async fn a_failed_revalidation_keeps_watching_and_retries() {
    let authorizer = TestAuthorizer::start().await;
    let node = node_with(&authorizer, &[]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    let (mut bob, _) = node.session("bob", "web").await;
    snapshot(&mut bob, &["alice"]).await;
    authorizer.set_failing(true);
    node.advance(6_000);
    eventually("a failed re-ask", || async {
        (authorizer.call_count() >= 2).then_some(())
    })
    .await;
    set_status(&mut alice, Status::Away, "still seen").await;
    assert_eq!(
        next_update_of(&mut bob, "alice").await.status_text,
        "still seen"
    );

    authorizer.set_failing(false);
    authorizer.set("bob", "alice", Decision::Deny);
    node.advance(1_000);
    let update = next_update_frame_of(&mut bob, "alice").await;
    assert_eq!(status_of(&update.presences[0]), Status::Offline);
    assert_eq!(update.denied_user_ids, ids(&["alice"]));
}
