//! Cluster mode: several nodes sharing one real redis-server (spawned per test, unique key
//! prefix), real gRPC clients.

mod common;

use common::redis::RedisServer;
use common::*;
use presence_node::client::get_presence;
use presence_node::proto::Status;

#[tokio::test]
async fn a_watcher_on_node_b_sees_a_user_on_node_a() {
    let redis = RedisServer::start();
    let a = TestNode::start_cluster(&redis, "t1", "node-a", &[]).await;
    let b = TestNode::start_cluster(&redis, "t1", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    let snapshot = subscribe(&mut watcher, &["alice"]).await;
    assert_eq!(status_of(&snapshot[0]), Status::Offline);

    let (mut alice, _) = a.session("alice", "ios").await;
    let online = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&online), Status::Online);
    assert_eq!(online.devices, vec!["ios"]);

    let r = alice.set_status(Status::Busy, "meeting").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let busy = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&busy), Status::Busy);
    assert!(busy.version > online.version);

    alice.close();
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
    assert!(offline.version > busy.version);

    let p = get_presence(b.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(p[0].version, offline.version);
}
