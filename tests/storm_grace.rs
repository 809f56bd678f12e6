//! Mass abrupt disconnects (`presence::storm`): when many sessions of a node end abruptly at
//! once, they linger for the storm grace, so devices reconnecting after the normal grace show
//! no flap; a single dropped device still goes OFFLINE after the normal grace. Abrupt ends are
//! a real connection cut (a TCP proxy the test cuts); time is the node's manual clock, and each
//! sweep pass is run by the test.

mod common;

use common::{eventually, hello, user_creds, TestNode};
use presence_node::client::{self, Session};
use presence_node::proto::Status;

const STORM_ARGS: &[&str] = &[
    "--offline-grace-ms",
    "3000",
    "--storm-threshold",
    "5",
    "--storm-window-ms",
    "1000",
    "--storm-grace-ms",
    "30000",
];

async fn statuses(node: &TestNode, users: &[String]) -> Vec<Status> {
    let channel = node.channel().await;
    client::get_presence(channel, &user_creds("viewer"), users.to_vec())
        .await
        .expect("lookup")
        .iter()
        .map(|p| Status::try_from(p.status).unwrap())
        .collect()
}

/// Opens one session per user on one connection, then cuts the connection under them all.
async fn drop_all(node: &TestNode, users: &[String]) {
    let (channel, cutter) = node.cuttable_channel().await;
    let mut sessions = Vec::new();
    for user in users {
        let (session, _) = Session::open(channel.clone(), &user_creds(user), hello("phone"))
            .await
            .expect("open");
        sessions.push(session);
    }
    assert!(statuses(node, users)
        .await
        .iter()
        .all(|s| *s == Status::Online));
    cutter.cut();
    eventually("the node saw every session end", || async {
        node.node.sessions.is_empty().then_some(())
    })
    .await;
    drop(sessions);
}

/// Every user's record holds a session lingering until at least `until`.
async fn lingering_until_at_least(node: &TestNode, users: &[String], until: u64) -> bool {
    let records = node
        .node
        .store
        .get(users, node.node.now_ms())
        .await
        .unwrap();
    records.iter().all(|r| {
        r.as_ref().is_some_and(|r| {
            r.sessions
                .iter()
                .any(|s| s.linger_until_ms.is_some_and(|u| u >= until))
        })
    })
}

#[tokio::test]
async fn a_mass_abrupt_disconnect_lingers_for_the_storm_grace() {
    let node = TestNode::start(STORM_ARGS).await;
    let users: Vec<String> = (0..20).map(|i| format!("storm-{i}")).collect();
    let t0 = node.node.now_ms();
    drop_all(&node, &users).await;
    // The first drops (before the threshold was reached) are extended in the background.
    eventually("every drop lingers for the storm grace", || async {
        lingering_until_at_least(&node, &users, t0 + 30_000)
            .await
            .then_some(())
    })
    .await;

    // Past the normal grace: still online (a device reconnecting now shows nothing).
    node.clock.advance(3_500);
    presence_node::sweeper::sweep(&node.node).await;
    assert!(statuses(&node, &users)
        .await
        .iter()
        .all(|s| *s == Status::Online));

    // Past the storm grace: gone.
    node.clock.advance(27_000);
    presence_node::sweeper::sweep(&node.node).await;
    assert!(statuses(&node, &users)
        .await
        .iter()
        .all(|s| *s == Status::Offline));
}

#[tokio::test]
async fn a_single_drop_still_goes_offline_after_the_normal_grace() {
    let node = TestNode::start(STORM_ARGS).await;
    let users = vec!["single".to_owned()];
    drop_all(&node, &users).await;
    node.clock.advance(2_900);
    presence_node::sweeper::sweep(&node.node).await;
    assert_eq!(statuses(&node, &users).await, vec![Status::Online]);
    node.clock.advance(200);
    presence_node::sweeper::sweep(&node.node).await;
    assert_eq!(statuses(&node, &users).await, vec![Status::Offline]);
}
