//! The admin API (`presence.v1.PresenceAdminService`) against real nodes: one node, and two
//! nodes sharing a real redis-server.

mod common;

use common::redis::RedisServer;
use common::*;
use futures::StreamExt;
use presence_node::proto::presence_admin_service_client::PresenceAdminServiceClient;
use presence_node::proto::{
    server_frame, DisconnectMode, DisconnectRequest, ListSessionsRequest, Presence, PresenceChange,
    StatsRequest, Status, WatchChangesRequest,
};
use tonic::transport::Channel;

const TOKEN: &str = "s3cret-admin-token";

/// A unary request with the admin token and a deadline (`grpc-timeout`, which the client
/// enforces too).
fn authed<T>(message: T) -> tonic::Request<T> {
    let mut request = authed_stream(message);
    request.set_timeout(patience());
    request
}

/// A unary request without a token, with a deadline.
fn unauthed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(patience());
    request
}

/// The next change of a `WatchChanges` stream, within the patience.
async fn next_change(changes: &mut tonic::Streaming<PresenceChange>) -> Presence {
    tokio::time::timeout(patience(), changes.next())
        .await
        .expect("a change within the patience")
        .expect("the change stream ended")
        .expect("the change stream failed")
        .presence
        .expect("a change carries a presence")
}

/// A client of the admin API (which starts listening shortly after the node).
async fn admin(addr: &str) -> PresenceAdminServiceClient<Channel> {
    let url = format!("http://{addr}");
    let channel = eventually("the admin API to listen", || async {
        presence_node::client::connect(&url).await.ok()
    })
    .await;
    PresenceAdminServiceClient::new(channel)
}

/// A request with the admin token, for a stream (its own reads are bounded, by
/// `next_change`).
fn authed_stream<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

#[tokio::test]
async fn admin_calls_need_the_token() {
    let addr = free_addr();
    let _node = TestNode::start(&["--admin-addr", &addr, "--admin-token", TOKEN]).await;
    let mut client = admin(&addr).await;
    let err = client.stats(unauthed(StatsRequest {})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = unauthed(StatsRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.stats(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert!(client.stats(authed(StatsRequest {})).await.is_ok());
}

#[tokio::test]
async fn sessions_stats_disconnect_and_changes_on_one_node() {
    let addr = free_addr();
    let node = TestNode::start(&["--admin-addr", &addr, "--admin-token", TOKEN]).await;
    let mut client = admin(&addr).await;
    let mut changes = client
        .watch_changes(authed_stream(WatchChangesRequest { user_ids: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let mut bob_changes = client
        .watch_changes(authed_stream(WatchChangesRequest {
            user_ids: ids(&["bob"]),
        }))
        .await
        .unwrap()
        .into_inner();

    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (mut alice_ios, welcome) = node.session("alice", "ios").await;
    let (mut alice_web, _) = node.session("alice", "web").await;
    let (_bob, _) = node.session("bob", "tv").await;

    // Every change, in version order, for a backend watching everyone.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(next_change(&mut changes).await);
    }
    let users: Vec<&str> = seen.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(users, vec!["wendy", "alice", "alice", "bob"]);
    assert!(seen[2].version > seen[1].version);
    assert_eq!(seen[2].devices, vec!["ios", "web"]);
    // A filtered stream sees only its users.
    let bob = next_change(&mut bob_changes).await;
    assert_eq!(bob.user_id, "bob");

    // Sessions: by user (from the store) and all of this node's.
    let listed = client
        .list_sessions(authed(ListSessionsRequest {
            user_ids: ids(&["alice", "nobody"]),
        }))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(listed.len(), 2);
    let mut devices: Vec<_> = listed[0]
        .sessions
        .iter()
        .map(|s| s.device.clone())
        .collect();
    devices.sort();
    assert_eq!(devices, vec!["ios", "web"]);
    assert!(listed[0]
        .sessions
        .iter()
        .any(|s| s.session_id == welcome.session_id));
    assert!(listed[1].sessions.is_empty());
    let here = client
        .list_sessions(authed(ListSessionsRequest { user_ids: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(here.iter().map(|u| u.sessions.len()).sum::<usize>(), 4);

    // Stats.
    let stats = client
        .stats(authed(StatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.nodes.len(), 1);
    assert_eq!(
        (stats.nodes[0].sessions, stats.nodes[0].users_online),
        (4, 3)
    );
    assert_eq!(stats.total_sessions, 4);

    // Disconnect one session with RECONNECT: the device is asked to reconnect.
    let moved = client
        .disconnect(authed(DisconnectRequest {
            user_id: "alice".into(),
            session_id: welcome.session_id.clone(),
            reason: "maintenance".into(),
            mode: DisconnectMode::Reconnect as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((moved.local_sessions, moved.forwarded_sessions), (1, 0));
    let reconnect = recv_until(&mut alice_ios, "reconnect", |k| match k {
        server_frame::Kind::Reconnect(r) => Some(r.reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reconnect, "maintenance");

    // Disconnect every session of the user with END: the calls end, the user goes OFFLINE.
    let ended = client
        .disconnect(authed(DisconnectRequest {
            user_id: "alice".into(),
            session_id: String::new(),
            reason: "banned".into(),
            mode: DisconnectMode::End as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.local_sessions, 2);
    let status = end_of(&mut alice_web).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(status.message().contains("banned"));
    let offline = recv_until(&mut watcher, "alice offline", |k| match k {
        server_frame::Kind::Update(u) => u
            .presences
            .iter()
            .find(|p| p.user_id == "alice" && p.status == Status::Offline as i32)
            .cloned(),
        _ => None,
    })
    .await;
    assert_eq!(offline.last_seen_ms, T0);
}

#[tokio::test]
async fn cluster_wide_stats_changes_and_forwarded_disconnects() {
    let redis = RedisServer::start();
    let admin_addr = free_addr();
    let lease = ["--node-lease-ttl-ms", "600"];
    let a = TestNode::start_cluster(&redis, "adm", "node-a", &lease).await;
    let mut b_args = vec!["--admin-addr", admin_addr.as_str(), "--admin-token", TOKEN];
    b_args.extend_from_slice(&lease);
    let b = TestNode::start_cluster(&redis, "adm", "node-b", &b_args).await;
    let mut client = admin(&admin_addr).await;
    let mut changes = client
        .watch_changes(authed_stream(WatchChangesRequest { user_ids: vec![] }))
        .await
        .unwrap()
        .into_inner();
    // Node b hears about everyone through a pattern subscription: wait until it is on.
    let (mut alice, _) = a.session("alice", "ios").await;
    let deadline = tokio::time::Instant::now() + patience();
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node b heard of no change on node a within the patience"
        );
        let (_probe, _) = a.session("probe", "x").await;
        let change =
            tokio::time::timeout(std::time::Duration::from_millis(500), changes.next()).await;
        if let Ok(Some(Ok(change))) = change {
            break change.presence.unwrap();
        }
    };
    assert!(first.user_id == "probe" || first.user_id == "alice");
    let r = alice.set_status(Status::Busy, "from node a").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    loop {
        let p = next_change(&mut changes).await;
        if p.user_id == "alice" && p.status_text == "from node a" {
            break;
        }
    }

    // Both nodes, with their sessions, from node b.
    let stats = eventually("both nodes in stats", || async {
        let stats = admin(&admin_addr)
            .await
            .stats(authed(StatsRequest {}))
            .await
            .ok()?
            .into_inner();
        let a_stats = stats.nodes.iter().find(|n| n.node_id == "node-a")?;
        (stats.nodes.len() == 2 && a_stats.sessions >= 1).then_some(stats)
    })
    .await;
    assert!(stats.nodes.iter().any(|n| n.node_id == "node-b"));

    // Disconnect on node b of a session node a holds: forwarded.
    let moved = client
        .disconnect(authed(DisconnectRequest {
            user_id: "alice".into(),
            session_id: String::new(),
            reason: "rebalance".into(),
            mode: DisconnectMode::Reconnect as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((moved.local_sessions, moved.forwarded_sessions), (0, 1));
    recv_until(&mut alice, "forwarded reconnect", |k| match k {
        server_frame::Kind::Reconnect(r) if r.reason == "rebalance" => Some(()),
        _ => None,
    })
    .await;
    assert!(b.node.store.is_healthy());
}
