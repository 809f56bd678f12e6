//! Cluster mode on a real 3-master Redis Cluster (sharded pub/sub), including a slot
//! migration while watchers are connected.

mod common;

use common::redis_cluster::RedisCluster;
use common::*;
use presence_node::client::get_presence;
use presence_node::proto::{server_frame, Status};

#[tokio::test]
async fn cross_node_presence_and_a_slot_migration_with_watchers_connected() {
    let cluster = RedisCluster::start();
    // 20 changes in a row: more than one user's change burst.
    let burst = ["--user-change-rate-burst", "100"];
    let a = TestNode::start_on_redis_cluster(&cluster, "c1", "node-a", &burst).await;
    let b = TestNode::start_on_redis_cluster(&cluster, "c1", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "bob", "carol"]).await;

    // Users spread over slots of different masters.
    let mut sessions = Vec::new();
    for user in ["alice", "bob", "carol"] {
        sessions.push(a.session(user, "ios").await.0);
        let p = next_update_of(&mut watcher, user).await;
        assert_eq!(status_of(&p), Status::Online);
    }
    // Versions in order across nodes.
    let alice = &mut sessions[0];
    let mut last = 0;
    for i in 0..20 {
        let r = alice
            .set_status(Status::Away, format!("n={i}"))
            .await
            .unwrap();
        assert_eq!(answer(alice, r).await, Ok(()));
    }
    loop {
        let p = next_update_of(&mut watcher, "alice").await;
        assert!(p.version > last);
        last = p.version;
        if p.status_text == "n=19" {
            break;
        }
    }

    // Move alice's slot to another master while everyone stays connected.
    let slot = cluster.slot_of("c1:{u:alice}");
    let from = cluster.owner_of(slot);
    let to = *cluster.ports.iter().find(|p| **p != from).unwrap();
    cluster.migrate_slot(slot, to);
    assert_eq!(cluster.owner_of(slot), to);

    // Later changes still reach the remote watcher, in order.
    let r = alice
        .set_status(Status::Busy, "after migration")
        .await
        .unwrap();
    assert_eq!(answer(alice, r).await, Ok(()));
    let moved = recv_until(
        &mut watcher,
        "alice's change after the migration",
        |k| match k {
            server_frame::Kind::Update(u) => u
                .presences
                .iter()
                .find(|p| p.user_id == "alice" && p.status_text == "after migration")
                .cloned(),
            _ => None,
        },
    )
    .await;
    assert!(moved.version > last);
    let p = get_presence(
        b.channel().await,
        &user_creds("zed"),
        ids(&["alice", "bob", "carol"]),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&p[0]), Status::Busy);
    assert!(p[1..].iter().all(|p| status_of(p) == Status::Online));

    // Clean close still reaches the remote watcher through the new owner.
    sessions[0].close();
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
}
