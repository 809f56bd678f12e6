//! API.md semantics 1, 2, 4, 5 and 7 over real gRPC against one node.

mod common;

use common::*;
use presence_node::client::{get_presence, Credentials};
use presence_node::proto::{server_frame, Status};

#[tokio::test]
async fn watcher_sees_user_come_online_with_device_and_go_offline_on_clean_close() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    let snapshot = subscribe(&mut watcher, &["alice"]).await;
    assert_eq!(snapshot.len(), 1);
    assert_eq!(status_of(&snapshot[0]), Status::Offline);
    assert_eq!(snapshot[0].version, 0, "never seen user has version 0");

    let (mut alice, _) = node.session("alice", "ios").await;
    let online = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&online), Status::Online);
    assert_eq!(online.devices, vec!["ios"]);
    assert_eq!(online.since_ms, T0);
    assert_eq!(online.last_seen_ms, 0);

    node.advance(1234);
    alice.close();
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
    assert!(offline.devices.is_empty() && offline.status_text.is_empty());
    assert_eq!(offline.last_seen_ms, T0 + 1234);
    assert!(offline.version > online.version);
    assert_eq!(end_of(&mut alice).await.map_err(|s| s.code()), Ok(()));
}

#[tokio::test]
async fn status_belongs_to_the_user_on_all_devices() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (mut ios, _) = node.session("alice", "ios").await;
    let (_web, _) = node.session("alice", "web").await;
    let both = recv_until(&mut watcher, "alice on two devices", |kind| match kind {
        server_frame::Kind::Update(u) => u
            .presences
            .iter()
            .find(|p| p.user_id == "alice" && p.devices.len() == 2)
            .cloned(),
        _ => None,
    })
    .await;
    assert_eq!(both.devices, vec!["ios", "web"]);

    let r = ios.set_status(Status::Busy, "in a meeting").await.unwrap();
    assert_eq!(answer(&mut ios, r).await, Ok(()));
    let busy = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&busy), Status::Busy);
    assert_eq!(busy.status_text, "in a meeting");
    assert_eq!(busy.devices, vec!["ios", "web"]);
    // The status did not begin anew for the second device, but it did for BUSY.
    assert!(busy.since_ms >= both.since_ms);
}

#[tokio::test]
async fn chosen_status_survives_reconnect_and_hello_without_status_keeps_it() {
    let node = TestNode::start(&[]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    let r = alice.set_status(Status::Away, "brb").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    alice.close();
    end_of(&mut alice).await.unwrap();

    let (_alice, _) = node.session("alice", "web").await;
    let p = get_presence(node.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Away);
    assert_eq!(p[0].status_text, "brb");
    assert_eq!(p[0].devices, vec!["web"]);
}

#[tokio::test]
async fn hello_with_status_applies_it_before_the_session_is_visible() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (_alice, _) = node
        .session_with("alice", hello_with("ios", Status::Busy, "focus"))
        .await;
    let first = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&first), Status::Busy, "never flashes ONLINE");
    assert_eq!(first.status_text, "focus");
}

#[tokio::test]
async fn invisible_user_looks_offline_to_others_and_invisible_to_themself() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;

    // Starting invisible never shows the user online, not even for a moment.
    let (mut alice, _) = node
        .session_with("alice", hello_with("ios", Status::Invisible, "hiding"))
        .await;
    let own = subscribe(&mut alice, &["alice"]).await;
    assert_eq!(status_of(&own[0]), Status::Invisible);
    assert_eq!(own[0].devices, vec!["ios"]);
    assert_eq!(own[0].status_text, "hiding");

    // Changes an invisible user makes are not visible either.
    let r = alice
        .set_status(Status::Invisible, "still hiding")
        .await
        .unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let own_update = next_update_of(&mut alice, "alice").await;
    assert_eq!(own_update.status_text, "still hiding");

    let (_marker, _) = node.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(
        seen.iter().all(|p| p.user_id != "alice"),
        "watcher saw something of an invisible user: {seen:?}"
    );

    // GetPresence: others see OFFLINE, the user sees INVISIBLE.
    let channel = node.channel().await;
    let other = get_presence(channel.clone(), &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&other[0]), Status::Offline);
    assert!(other[0].devices.is_empty() && other[0].status_text.is_empty());
    let themself = get_presence(channel, &user_creds("alice"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&themself[0]), Status::Invisible);
    assert_eq!(themself[0].devices, vec!["ios"]);

    // Becoming visible is an update for watchers; invisibility survives reconnects.
    let r = alice.set_status(Status::Online, "").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let visible = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&visible), Status::Online);
}

#[tokio::test]
async fn invisibility_survives_reconnect() {
    let node = TestNode::start(&[]).await;
    let (mut alice, _) = node
        .session_with("alice", hello_with("ios", Status::Invisible, ""))
        .await;
    alice.close();
    end_of(&mut alice).await.unwrap();
    let (_alice, _) = node.session("alice", "ios").await;
    let p = get_presence(node.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Offline);
}

#[tokio::test]
async fn last_seen_is_zero_while_online_and_set_when_going_invisible() {
    let node = TestNode::start(&[]).await;
    let (mut alice, _) = node.session("alice", "ios").await;
    let channel = node.channel().await;
    let p = get_presence(channel.clone(), &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(p[0].last_seen_ms, 0);
    node.advance(5000);
    let r = alice.set_status(Status::Invisible, "").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let p = get_presence(channel, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Offline);
    assert_eq!(p[0].last_seen_ms, T0 + 5000);
}

#[tokio::test]
async fn no_update_when_nothing_visible_changed() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    let (mut alice, _) = node.session("alice", "ios").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    // Same status again: no change at all.
    let r = alice.set_status(Status::Online, "").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    // A second session on a device label already listed: the view is the same.
    let (_alice2, _) = node.session("alice", "ios").await;
    let (_marker, _) = node.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(
        seen.iter().all(|p| p.user_id != "alice"),
        "unexpected updates: {seen:?}"
    );
}

#[tokio::test]
async fn versions_strictly_increase_and_snapshot_has_no_gap_under_concurrent_changes() {
    let node = TestNode::start(common::NO_CHANGE_LIMITS).await;
    let (alice, _) = node.session("alice", "ios").await;
    let (mut alice_tx, mut alice_rx) = alice.split();
    // alice changes until the watcher has its snapshot, then AFTER more changes and a last
    // one: the snapshot always falls in the middle of the changes, and updates follow it.
    const AFTER: usize = 100;
    const MOST: usize = 100_000;
    let final_text = "final".to_string();
    let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = tokio::spawn({
        let (subscribed, final_text) = (subscribed.clone(), final_text.clone());
        async move {
            let mut after = None;
            let mut i = 0;
            loop {
                let text = match after {
                    Some(0) => final_text.clone(),
                    _ => format!("n={i}"),
                };
                let status = if i % 2 == 0 {
                    Status::Away
                } else {
                    Status::Busy
                };
                alice_tx.set_status(status, text.clone()).await.unwrap();
                i += 1;
                if text == final_text {
                    return (alice_tx, i);
                }
                assert!(i < MOST, "the watcher never subscribed");
                after = match after {
                    Some(left) => Some(left - 1),
                    None => subscribed
                        .load(std::sync::atomic::Ordering::SeqCst)
                        .then_some(AFTER),
                };
            }
        }
    });
    let drain_acks = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(patience(), alice_rx.recv()).await {
                Ok(Ok(Some(_))) => {}
                other => panic!("alice's stream ended: {other:?}"),
            }
        }
    });
    // Subscribe while the changes are under way.
    let (mut watcher, _) = node.session("wendy", "web").await;
    let snapshot = subscribe(&mut watcher, &["alice"]).await;
    subscribed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut last = snapshot[0].clone();
    assert_ne!(last.status_text, final_text, "the snapshot came last");
    let mut updates = 0;
    while last.status_text != final_text {
        let update = next_update_of(&mut watcher, "alice").await;
        assert!(
            update.version > last.version,
            "version went from {} to {}",
            last.version,
            update.version
        );
        last = update;
        updates += 1;
    }
    assert!(updates > 0, "no update after the snapshot was checked");
    let (_alice_tx, sent) = tokio::time::timeout(patience(), changer)
        .await
        .expect("the changes were sent within the patience")
        .unwrap();
    println!("{sent} changes, {updates} updates after the snapshot");
    drain_acks.abort();
}

#[tokio::test]
async fn get_presence_answers_in_request_order_with_unknown_users_offline() {
    let node = TestNode::start(&[]).await;
    let (_alice, _) = node.session("alice", "ios").await;
    let p = get_presence(
        node.channel().await,
        &user_creds("bob"),
        ids(&["zed", "alice", "zed"]),
    )
    .await
    .unwrap();
    let users: Vec<_> = p.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(users, vec!["zed", "alice", "zed"]);
    assert_eq!(status_of(&p[0]), Status::Offline);
    assert_eq!(p[0].version, 0);
    assert_eq!(status_of(&p[1]), Status::Online);
}

#[tokio::test]
async fn get_presence_needs_an_identity() {
    let node = TestNode::start(&[]).await;
    let mut client = presence_node::proto::presence_service_client::PresenceServiceClient::new(
        node.channel().await,
    );
    let err = client
        .get_presence(presence_node::proto::GetPresenceRequest {
            user_ids: ids(&["alice"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A token in insecure mode is not an identity either.
    let err = get_presence(
        node.channel().await,
        &Credentials::Token("abc".into()),
        ids(&["alice"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated));
}

#[tokio::test]
async fn unsubscribe_stops_updates() {
    let node = TestNode::start(&[]).await;
    let (mut watcher, _) = node.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    let r = watcher.unsubscribe(ids(&["alice"])).await.unwrap();
    assert_eq!(answer(&mut watcher, r).await, Ok(()));
    let (_alice, _) = node.session("alice", "ios").await;
    let (_marker, _) = node.session("marker", "ios").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");
}
