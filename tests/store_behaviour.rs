//! One behaviour suite for every store: the embedded memory store, the Redis store on a real
//! redis-server, and the Redis store on a real 3-master Redis Cluster.

mod common;

use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use presence_node::cluster::connection::{Endpoint, Target};
use presence_node::cluster::RedisStore;
use presence_node::presence::{RecordError, SessionEntry};
use presence_node::proto::{Presence, Status};
use presence_node::store::{MemoryStore, Op, Store, StoreError};

const T0: u64 = 1_800_000_000_000;
const RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
const NODE: &str = "n1";

fn session(id: &str, device: &str) -> SessionEntry {
    SessionEntry {
        session_id: id.into(),
        device: device.into(),
        node_id: NODE.into(),
        connected_at_ms: T0,
        linger_until_ms: None,
    }
}

fn open(user: &str, id: &str, device: &str) -> Op {
    Op::Open {
        user_id: user.into(),
        session: session(id, device),
        initial: None,
        max_live_sessions: 2,
    }
}

fn end(user: &str, id: &str, linger_until_ms: Option<u64>) -> Op {
    Op::End {
        user_id: user.into(),
        session_id: id.into(),
        linger_until_ms,
        max_lingering: 16,
    }
}

async fn behaves_like_a_store(store: &dyn Store) {
    let user = "alice";
    let mut last_version = 0;
    let mut changed = |record: Option<presence_node::presence::UserRecord>| {
        let record = record.expect("a change");
        assert!(record.version > last_version, "versions strictly increase");
        last_version = record.version;
        record
    };

    // Unknown users are unknown.
    assert_eq!(store.get(&[user.into()], T0).await.unwrap(), vec![None]);

    // Opening sessions.
    let r = changed(store.apply(open(user, "s1", "ios"), T0).await.unwrap());
    assert_eq!(r.view(false).status, Status::Online as i32);
    let r = changed(store.apply(open(user, "s2", "web"), T0 + 1).await.unwrap());
    assert_eq!(r.view(false).devices, vec!["ios", "web"]);
    // The per-user cap.
    let err = store
        .apply(open(user, "s3", "tv"), T0 + 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Record(RecordError::TooManySessions { .. })),
        "{err:?}"
    );

    // Status: another is a change; the same again in the same millisecond is none; later,
    // it is a change of the record (the latest choice, with its time) that no viewer sees.
    let busy = Op::SetStatus {
        user_id: user.into(),
        status: Status::Busy,
        text: "focus".into(),
    };
    let r = changed(store.apply(busy.clone(), T0 + 3).await.unwrap());
    assert_eq!(r.view(false).status_text, "focus");
    assert_eq!(store.apply(busy.clone(), T0 + 3).await.unwrap(), None);
    let again = changed(store.apply(busy, T0 + 4).await.unwrap());
    assert_eq!((again.chosen_at_ms, r.chosen_at_ms), (T0 + 4, T0 + 3));
    assert!(again.version > r.version);
    assert_eq!(
        Presence {
            version: r.version,
            ..again.view(false)
        },
        r.view(false)
    );
    let r = again;

    // What `get` returns is what the last write returned.
    let got = store
        .get(&[user.into(), "nobody".into()], T0 + 5)
        .await
        .unwrap();
    assert_eq!(got[0].as_ref(), Some(&r));
    assert_eq!(got[1], None);

    // A clean end removes at once; an abrupt one lingers until the grace, then reap removes it.
    let r = changed(store.apply(end(user, "s2", None), T0 + 6).await.unwrap());
    assert_eq!(r.view(false).devices, vec!["ios"]);
    let r = changed(
        store
            .apply(end(user, "s1", Some(T0 + 3_000)), T0 + 7)
            .await
            .unwrap(),
    );
    assert_eq!(
        r.view(false).status,
        Status::Busy as i32,
        "still counted during the grace"
    );
    assert!(store.reap(T0 + 2_999).await.unwrap().is_empty());
    let reaped = store.reap(T0 + 3_000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    let r = changed(Some(reaped[0].clone()));
    assert_eq!(r.view(false).status, Status::Offline as i32);
    assert_eq!(r.view(false).last_seen_ms, T0 + 3_000);
    // The chosen status outlives the sessions.
    let r = changed(store.apply(open(user, "s4", "ios"), T0 + 8).await.unwrap());
    assert_eq!(r.view(false).status, Status::Busy as i32);

    // A reconnect of the same device within the grace replaces the lingering session.
    changed(
        store
            .apply(end(user, "s4", Some(T0 + 10_000)), T0 + 9)
            .await
            .unwrap(),
    );
    let r = changed(store.apply(open(user, "s5", "ios"), T0 + 10).await.unwrap());
    assert_eq!(r.sessions.len(), 1);
    assert!(
        store.reap(T0 + 20_000).await.unwrap().is_empty(),
        "nothing left to expire"
    );

    // A dead node's sessions all go.
    let sweep = Op::RemoveNode {
        user_id: user.into(),
        node_id: NODE.into(),
    };
    let r = changed(store.apply(sweep, T0 + 11).await.unwrap());
    assert!(r.sessions.is_empty());
    let again = Op::RemoveNode {
        user_id: user.into(),
        node_id: NODE.into(),
    };
    assert_eq!(store.apply(again, T0 + 12).await.unwrap(), None);
}

#[tokio::test]
async fn the_memory_store() {
    behaves_like_a_store(&MemoryStore::new(RETENTION_MS)).await;
}

#[tokio::test]
async fn the_redis_store() {
    let redis = RedisServer::start();
    let store = RedisStore::new(
        Endpoint::new(Target::Standalone(redis.url())),
        "sb",
        NODE,
        RETENTION_MS,
        10_000,
    )
    .await
    .unwrap();
    behaves_like_a_store(&store).await;
}

#[tokio::test]
async fn the_redis_store_on_redis_cluster() {
    let cluster = RedisCluster::start();
    let seeds = cluster.urls().split(',').map(String::from).collect();
    let store = RedisStore::new(
        Endpoint::new(Target::Cluster(seeds)),
        "sb",
        NODE,
        RETENTION_MS,
        10_000,
    )
    .await
    .unwrap();
    behaves_like_a_store(&store).await;
}
