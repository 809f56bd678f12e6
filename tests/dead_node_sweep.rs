//! Sweeping dead nodes on a real redis-server: what one pass returns and the metrics it
//! records. Its own test binary, because it installs the process-wide metrics recorder.

mod common;

use common::redis::RedisServer;
use common::{patience, T0};
use metrics_exporter_prometheus::PrometheusBuilder;
use presence_node::cluster::connection::{Endpoint, Target};
use presence_node::cluster::RedisStore;
use presence_node::metrics::{DEAD_NODE_SWEEPS, SWEPT_USERS};
use presence_node::presence::SessionEntry;
use presence_node::store::{Op, Store};

const RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;

fn open(user: &str, node_id: &str) -> Op {
    Op::Open {
        user_id: user.into(),
        session: SessionEntry {
            session_id: format!("{node_id}:{user}"),
            device: "ios".into(),
            node_id: node_id.into(),
            connected_at_ms: T0,
            linger_until_ms: None,
        },
        initial: None,
        max_live_sessions: 2,
    }
}

/// The value of a metric without labels in Prometheus's text format.
fn sample(rendered: &str, name: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(patience(), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {:?}", patience()))
}

#[tokio::test]
async fn two_dead_nodes_swept_in_one_pass_are_counted_apart() {
    let metrics = PrometheusBuilder::new().install_recorder().unwrap();
    let redis = RedisServer::start();
    let endpoint = || Endpoint::new(Target::Standalone(redis.url()));

    // Two nodes with different numbers of users; a lease TTL of 0 ends each lease as it is
    // taken, as if the node died right after.
    for (node, users) in [("dead1", &["alice"][..]), ("dead2", &["bob", "carol"][..])] {
        let store = within(
            "connect",
            RedisStore::new(endpoint(), "sw", node, RETENTION_MS, 0),
        )
        .await
        .unwrap();
        for user in users {
            let opened = within("open", store.apply(open(user, node), T0)).await;
            assert!(opened.unwrap().is_some(), "{user} opened on {node}");
        }
        within("lease", store.renew_lease(users.len(), users.len()))
            .await
            .unwrap();
    }

    let sweeper = within(
        "connect",
        RedisStore::new(endpoint(), "sw", "live", RETENTION_MS, 10_000),
    )
    .await
    .unwrap();
    let changed = within("sweep", sweeper.sweep_dead_nodes(T0 + 1))
        .await
        .unwrap();

    let mut users: Vec<&str> = changed.iter().map(|r| r.user_id.as_str()).collect();
    users.sort();
    assert_eq!(
        users,
        vec!["alice", "bob", "carol"],
        "both swept in one pass"
    );
    assert!(changed.iter().all(|r| r.sessions.is_empty()));

    let rendered = metrics.render();
    assert_eq!(sample(&rendered, DEAD_NODE_SWEEPS), Some(2.0), "{rendered}");
    assert_eq!(
        sample(&rendered, SWEPT_USERS),
        Some(3.0),
        "each swept user counted once: {rendered}"
    );

    // Nothing left to sweep: the nodes are forgotten.
    let again = within("sweep", sweeper.sweep_dead_nodes(T0 + 2))
        .await
        .unwrap();
    assert!(again.is_empty());
}
