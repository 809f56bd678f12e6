//! API.md "Invisible really looks offline": what others see of an INVISIBLE user never moves
//! while the user stays invisible (status, text, devices, since, last seen, version), through
//! every path (GetPresence, snapshots, updates, the admin change stream), on one node and
//! across two nodes on Redis (and Redis Cluster). The owner sees every change of its own.

mod common;

use common::redis::RedisServer;
use common::*;
use futures::StreamExt;
use presence_node::client::{get_presence, Session};
use presence_node::cluster::connection::{Endpoint, Target};
use presence_node::cluster::RedisStore;
use presence_node::presence::SessionEntry;
use presence_node::proto::presence_admin_service_client::PresenceAdminServiceClient;
use presence_node::proto::{server_frame, Presence, PresenceChange, Status, WatchChangesRequest};
use presence_node::store::{MemoryStore, Op, Store};
use prost::Message;
use tonic::transport::Channel;

const TOKEN: &str = "s3cret-admin-token";
const RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
/// The node's default offline grace.
const GRACE_MS: u64 = 3_000;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Admin flags for a node whose change stream the test reads at `addr`.
fn admin_args(addr: &str) -> [&str; 4] {
    ["--admin-addr", addr, "--admin-token", TOKEN]
}

/// The admin change stream of `users` (the admin API starts listening shortly after the
/// node).
async fn change_stream(addr: &str, users: &[&str]) -> tonic::Streaming<PresenceChange> {
    let url = format!("http://{addr}");
    let channel = eventually("the admin API to listen", || async {
        presence_node::client::connect(&url).await.ok()
    })
    .await;
    let mut request = tonic::Request::new(WatchChangesRequest {
        user_ids: ids(users),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    tokio::time::timeout(
        patience(),
        PresenceAdminServiceClient::<Channel>::new(channel).watch_changes(request),
    )
    .await
    .expect("the change stream within the patience")
    .expect("a change stream")
    .into_inner()
}

async fn next_change(changes: &mut tonic::Streaming<PresenceChange>) -> Presence {
    tokio::time::timeout(patience(), changes.next())
        .await
        .expect("a change within the patience")
        .expect("the stream goes on")
        .expect("a change")
        .presence
        .expect("a presence")
}

/// `GetPresence` of `user` as `viewer` on `node`.
async fn lookup(node: &TestNode, viewer: &str, user: &str) -> Presence {
    let channel = node.channel().await;
    tokio::time::timeout(
        patience(),
        get_presence(channel, &user_creds(viewer), ids(&[user])),
    )
    .await
    .expect("GetPresence within the patience")
    .expect("GetPresence answers")
    .remove(0)
}

/// Waits until alice's own view (GetPresence with her identity) satisfies `done`: the
/// sign that the node applied her last change.
async fn owner_sees(node: &TestNode, what: &str, done: impl Fn(&Presence) -> bool) -> Presence {
    eventually(what, || async {
        let own = lookup(node, "alice", "alice").await;
        done(&own).then_some(own)
    })
    .await
}

/// Carol, looking at alice from every node: a session on each (kept open, so the tests can
/// count a node's sessions) and GetPresence.
struct Others<'a> {
    nodes: Vec<&'a TestNode>,
    viewers: Vec<Session>,
}

impl<'a> Others<'a> {
    async fn on(nodes: &[&'a TestNode]) -> Self {
        let mut viewers = Vec::new();
        for node in nodes {
            viewers.push(node.session("carol", "web").await.0);
        }
        Self {
            nodes: nodes.to_vec(),
            viewers,
        }
    }

    /// Every way carol can look at alice, on every node, gives exactly `public`, byte for
    /// byte: GetPresence and the snapshot of a new subscription.
    async fn see_exactly(&mut self, public: &[u8], after: &str) {
        for (i, (node, viewer)) in self.nodes.iter().zip(&mut self.viewers).enumerate() {
            let got = lookup(node, "carol", "alice").await;
            assert_eq!(
                got.encode_to_vec(),
                public,
                "GetPresence on node {i} after {after}: {got:?}"
            );
            let snapshot = subscribe(viewer, &["alice"]).await;
            assert_eq!(
                snapshot[0].encode_to_vec(),
                public,
                "snapshot on node {i} after {after}: {snapshot:?}"
            );
            let r = viewer.unsubscribe(ids(&["alice"])).await.unwrap();
            assert_eq!(answer(viewer, r).await, Ok(()));
        }
    }
}

/// Sets alice's status on `session` (which watches alice) and returns her own view of the
/// change: the ack and the update may come in either order.
async fn set_own(session: &mut Session, status: Status, text: &str) -> Presence {
    let r = session.set_status(status, text).await.unwrap();
    let (mut acked, mut update) = (false, None);
    while !acked || update.is_none() {
        // `None` inside: the ack; `Some`: alice's update.
        let got = recv_until(
            session,
            "the ack and alice's own update",
            |kind| match kind {
                server_frame::Kind::Ack(a) if a.r#ref == r => Some(None),
                server_frame::Kind::Error(e) if e.r#ref == r => panic!("refused: {e:?}"),
                server_frame::Kind::Update(u) => u
                    .presences
                    .iter()
                    .find(|p| p.user_id == "alice")
                    .map(|p| Some(p.clone())),
                _ => None,
            },
        )
        .await;
        match got {
            None => acked = true,
            Some(p) => update = Some(p),
        }
    }
    update.unwrap()
}

/// Opens a session of alice on `device` through a connection the test can cut.
async fn alice_cuttable(node: &TestNode, device: &str) -> (Session, Cutter) {
    let (channel, cutter) = node.cuttable_channel().await;
    let (session, _) = Session::open(channel, &user_creds("alice"), hello(device))
        .await
        .expect("session opens");
    (session, cutter)
}

/// Alice is visible on node `a`, goes INVISIBLE, then does everything a user can do: text
/// changes, new sessions on other devices and nodes, a dropped connection replaced by a
/// reconnect on the other node, a dropped connection whose grace runs out, and the end of
/// every session. A watcher on node `b` (the same node when single) gets no update, and
/// everyone else sees the very bytes of the moment she became invisible. Then she comes
/// back and the watcher's version goes up.
async fn an_invisible_user_leaks_nothing(a: &TestNode, b: &TestNode, admin_of_b: &str) {
    let mut others = Others::on(&[a, b]).await;
    let mut changes = change_stream(admin_of_b, &["alice"]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "mark"]).await;

    let (mut ios, _) = a.session("alice", "ios").await;
    let online = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&online), Status::Online);
    assert_eq!(next_change(&mut changes).await, online);
    let own = subscribe(&mut ios, &["alice"]).await;
    assert_eq!(status_of(&own[0]), Status::Online);

    a.advance(100);
    // The owner sees herself, and each of her own changes, with the record's version.
    let mut owner_views = vec![set_own(&mut ios, Status::Invisible, "").await];
    assert_eq!(status_of(&owner_views[0]), Status::Invisible);
    assert_eq!(owner_views[0].devices, vec!["ios"]);
    let frozen = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&frozen), Status::Offline);
    assert!(frozen.devices.is_empty() && frozen.status_text.is_empty());
    assert_eq!(frozen.since_ms, T0 + 100);
    assert_eq!(frozen.last_seen_ms, T0 + 100);
    assert!(frozen.version > online.version);
    assert_eq!(next_change(&mut changes).await, frozen);
    let public = frozen.encode_to_vec();
    others.see_exactly(&public, "going invisible").await;

    // Text changes.
    for text in ["secret", "still secret"] {
        a.advance(10);
        let mine = set_own(&mut ios, Status::Invisible, text).await;
        assert_eq!(mine.status_text, text);
        assert_eq!(status_of(&mine), Status::Invisible);
        owner_views.push(mine);
        others.see_exactly(&public, &format!("text {text:?}")).await;
    }

    // A new session on another device, on the other node.
    let (mut web, _) = b.session("alice", "web").await;
    owner_sees(b, "alice's web session", |p| p.devices == ["ios", "web"]).await;
    others
        .see_exactly(&public, "a session on another device")
        .await;

    // A dropped connection, replaced within the grace by a reconnect on the other node.
    let (tv, cutter) = alice_cuttable(a, "tv").await;
    owner_sees(a, "alice's tv session", |p| {
        p.devices == ["ios", "tv", "web"]
    })
    .await;
    let held = a.node.sessions.len();
    cutter.cut();
    a.wait_sessions(held - 1, "the cut tv session to end").await;
    drop(tv);
    others.see_exactly(&public, "a dropped connection").await;
    let (tv_again, cutter) = alice_cuttable(b, "tv").await;
    let reconnected = lookup(b, "alice", "alice").await;
    assert_eq!(reconnected.devices, ["ios", "tv", "web"]);
    others.see_exactly(&public, "a reconnect").await;

    // That one drops too, and its grace runs out.
    let held = b.node.sessions.len();
    cutter.cut();
    b.wait_sessions(held - 1, "the second tv session to end")
        .await;
    drop(tv_again);
    b.advance(GRACE_MS + 1);
    owner_sees(b, "the tv grace to end", |p| p.devices == ["ios", "web"]).await;
    others.see_exactly(&public, "the end of a grace").await;

    // Every session ends.
    web.close();
    end_of(&mut web).await.unwrap();
    owner_sees(a, "the web session to end", |p| p.devices == ["ios"]).await;
    others
        .see_exactly(&public, "the end of the web session")
        .await;
    ios.close();
    end_of(&mut ios).await.unwrap();
    let gone = owner_sees(a, "every session to end", |p| p.devices.is_empty()).await;
    assert_eq!(status_of(&gone), Status::Offline);
    others
        .see_exactly(&public, "the end of every session")
        .await;

    // The record moved on every time, and alice saw it.
    owner_views.push(gone);
    assert!(
        owner_views.windows(2).all(|w| w[0].version < w[1].version),
        "{owner_views:?}"
    );
    assert_eq!(
        owner_views[0].version, frozen.version,
        "going invisible was seen"
    );

    // The watcher got nothing of all that: the marker's change is the next thing it gets.
    let (_mark, _) = a.session("mark", "ios").await;
    let seen = updates_until_marker(&mut watcher, "mark").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");

    // Back to visible: a new session with ONLINE in its hello. The watcher's first update
    // since the frozen one is that, with a higher version, and so is the change stream's.
    a.advance(10);
    let (_back, _) = a
        .session_with("alice", hello_with("ios", Status::Online, "back"))
        .await;
    let back = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&back), Status::Online);
    assert_eq!(back.status_text, "back");
    assert_eq!(back.devices, vec!["ios"]);
    assert!(back.version > frozen.version);
    assert!(back.version > owner_views.last().unwrap().version);
    assert_eq!(next_change(&mut changes).await, back);
    others
        .see_exactly(&back.encode_to_vec(), "coming back")
        .await;
}

#[tokio::test]
async fn an_invisible_user_leaks_nothing_on_one_node() {
    let admin = free_addr();
    let node = TestNode::start(&admin_args(&admin)).await;
    an_invisible_user_leaks_nothing(&node, &node, &admin).await;
}

on_redis_and_redis_cluster!(an_invisible_user_leaks_nothing_across_two_nodes);

async fn an_invisible_user_leaks_nothing_across_two_nodes(redis: &SharedRedis) {
    let admin = free_addr();
    let a = redis.node("inv1", "node-a", &[]).await;
    let b = redis.node("inv1", "node-b", &admin_args(&admin)).await;
    an_invisible_user_leaks_nothing(&a, &b, &admin).await;
}

/// Alice never visible: she starts INVISIBLE, changes her text, opens and ends sessions on
/// both nodes. Others see her exactly as an id the node has never seen.
async fn never_visible_looks_never_seen(a: &TestNode, b: &TestNode) {
    let mut others = Others::on(&[a, b]).await;
    let offline = |user: &str| {
        Presence {
            user_id: user.into(),
            status: Status::Offline as i32,
            ..Presence::default()
        }
        .encode_to_vec()
    };
    let never_seen = offline("alice");
    let unknown = lookup(a, "carol", "nobody").await;
    assert_eq!(unknown.encode_to_vec(), offline("nobody"));
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "mark"]).await;

    let (mut ios, _) = a
        .session_with("alice", hello_with("ios", Status::Invisible, "shh"))
        .await;
    let own = owner_sees(a, "alice's session", |p| p.devices == ["ios"]).await;
    assert_eq!(status_of(&own), Status::Invisible);
    assert_eq!(own.status_text, "shh");
    others.see_exactly(&never_seen, "an invisible hello").await;

    let r = ios.set_status(Status::Invisible, "hush").await.unwrap();
    assert_eq!(answer(&mut ios, r).await, Ok(()));
    others.see_exactly(&never_seen, "a text change").await;

    let (mut web, _) = b.session("alice", "web").await;
    owner_sees(b, "alice's web session", |p| p.devices == ["ios", "web"]).await;
    others.see_exactly(&never_seen, "a second session").await;
    for session in [&mut web, &mut ios] {
        session.close();
        end_of(session).await.unwrap();
    }
    let gone = owner_sees(a, "every session to end", |p| p.devices.is_empty()).await;
    assert!(gone.version > own.version, "the record moved on");
    others
        .see_exactly(&never_seen, "the end of every session")
        .await;

    let (_mark, _) = a.session("mark", "ios").await;
    let seen = updates_until_marker(&mut watcher, "mark").await;
    assert!(seen.iter().all(|p| p.user_id != "alice"), "{seen:?}");
}

#[tokio::test]
async fn a_user_never_visible_looks_never_seen_on_one_node() {
    let node = TestNode::start(&[]).await;
    never_visible_looks_never_seen(&node, &node).await;
}

on_redis_and_redis_cluster!(a_user_never_visible_looks_never_seen_across_two_nodes);

async fn a_user_never_visible_looks_never_seen_across_two_nodes(redis: &SharedRedis) {
    let a = redis.node("inv2", "node-a", &[]).await;
    let b = redis.node("inv2", "node-b", &[]).await;
    never_visible_looks_never_seen(&a, &b).await;
}

/// The stores keep the public version: the memory store, and Redis, whose write script
/// assigns the version after the body is made (the body's absent `pv` stands for it).
async fn a_store_keeps_the_public_view(store: &dyn Store) -> u64 {
    let session = |id: &str, device: &str| SessionEntry {
        session_id: id.into(),
        device: device.into(),
        node_id: "n1".into(),
        connected_at_ms: T0,
        linger_until_ms: None,
    };
    let open = |id: &str, device: &str| Op::Open {
        user_id: "alice".into(),
        session: session(id, device),
        initial: None,
        max_live_sessions: 16,
    };
    let status = |status: Status, text: &str| Op::SetStatus {
        user_id: "alice".into(),
        status,
        text: text.into(),
    };
    let apply = |op: Op, now: u64| async move {
        store
            .apply(op, now)
            .await
            .expect("the store writes")
            .expect("a change")
    };
    let online = apply(open("s1", "ios"), T0).await;
    assert!(online.public_changed());
    let invisible = apply(status(Status::Invisible, ""), T0 + 1).await;
    assert!(invisible.public_changed(), "going invisible is seen");
    let frozen = invisible.public_view();
    assert_eq!(frozen.version, invisible.version);
    assert!(frozen.version > online.version);
    let mut last = invisible.version;
    for (i, op) in [
        status(Status::Invisible, "shh"),
        open("s2", "web"),
        Op::End {
            user_id: "alice".into(),
            session_id: "s2".into(),
            linger_until_ms: None,
            max_lingering: 16,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let changed = apply(op, T0 + 2 + i as u64).await;
        assert!(!changed.public_changed(), "change {i}: {changed:?}");
        assert!(changed.version > last, "the record's version moves on");
        last = changed.version;
        assert_eq!(changed.public_view(), frozen, "change {i}");
        let read = store.get(&ids(&["alice"]), T0 + 10).await.unwrap();
        let read = read[0].as_ref().expect("alice is known");
        assert_eq!(read.public_view(), frozen, "read after change {i}");
        assert_eq!(read.owner_view().version, last);
    }
    let back = apply(status(Status::Online, ""), T0 + 20).await;
    assert_eq!(back.public_view().version, back.version);
    assert!(back.version > last);
    frozen.version
}

#[tokio::test]
async fn the_memory_store_keeps_the_public_view() {
    a_store_keeps_the_public_view(&MemoryStore::new(RETENTION_MS)).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_public_view_as_pv() {
    let redis = RedisServer::start();
    let store = RedisStore::new(
        Endpoint::new(Target::Standalone(redis.url())),
        "inv3",
        "n1",
        RETENTION_MS,
        10_000,
    )
    .await
    .unwrap();
    let frozen = a_store_keeps_the_public_view(&store).await;
    // Back to visible: the stored body holds no `pv` (what others see changed at `v`).
    let stored: String = ::redis::cmd("HGET")
        .arg("inv3:{u:alice}")
        .arg("r")
        .query(&mut redis.connection())
        .unwrap();
    assert!(!stored.contains("\"pv\""), "{stored}");
    // An invisible change stores the frozen version beside the record's own.
    let changed = store
        .apply(
            Op::SetStatus {
                user_id: "alice".into(),
                status: Status::Invisible,
                text: String::new(),
            },
            T0 + 30,
        )
        .await
        .unwrap()
        .unwrap();
    let frozen_again = changed.version;
    assert!(frozen_again > frozen);
    store
        .apply(
            Op::SetStatus {
                user_id: "alice".into(),
                status: Status::Invisible,
                text: "again".into(),
            },
            T0 + 31,
        )
        .await
        .unwrap()
        .unwrap();
    let stored: String = ::redis::cmd("HGET")
        .arg("inv3:{u:alice}")
        .arg("r")
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        stored.contains(&format!("\"pv\":{frozen_again}")),
        "{stored}"
    );
}
