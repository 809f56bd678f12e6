//! Cluster mode: several nodes sharing one real redis-server (spawned per test, unique key
//! prefix), real gRPC clients. The cross-node scenarios run twice: on one redis-server and on
//! a real 3-master Redis Cluster.

mod common;

use common::redis::RedisServer;
use common::*;
use presence_node::client::get_presence;
use presence_node::proto::Status;

on_redis_and_redis_cluster!(a_watcher_on_node_b_sees_a_user_on_node_a);

async fn a_watcher_on_node_b_sees_a_user_on_node_a(redis: &SharedRedis) {
    let a = redis.node("t1", "node-a", &[]).await;
    let b = redis.node("t1", "node-b", &[]).await;
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

on_redis_and_redis_cluster!(a_change_right_after_a_subscribe_reaches_the_watcher);

async fn a_change_right_after_a_subscribe_reaches_the_watcher(redis: &SharedRedis) {
    // The watcher's snapshot is read before its node has subscribed to the user's channel;
    // a change made on another node in between must still reach it (not wait for the
    // periodic resync, a minute later).
    let a = redis.node("t3r", "node-a", &[]).await;
    let b = redis.node("t3r", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    for i in 0..30 {
        let user = format!("user{i}");
        let (mut session, _) = a.session(&user, "ios").await;
        // The change races the subscribe: sent while node b reads and subscribes.
        watcher.subscribe(ids(&[user.as_str()])).await.unwrap();
        let r = session.set_status(Status::Busy, "now").await.unwrap();
        assert_eq!(answer(&mut session, r).await, Ok(()));
        recv_until(&mut watcher, &format!("{user} busy"), |k| match k {
            presence_node::proto::server_frame::Kind::Update(u) => u
                .presences
                .iter()
                .find(|p| p.user_id == user && p.status_text == "now")
                .map(|_| ()),
            presence_node::proto::server_frame::Kind::Snapshot(s) => s
                .presences
                .iter()
                .find(|p| p.user_id == user && p.status_text == "now")
                .map(|_| ()),
            _ => None,
        })
        .await;
    }
}

on_redis_and_redis_cluster!(a_remote_watcher_sees_every_change_in_version_order);

async fn a_remote_watcher_sees_every_change_in_version_order(redis: &SharedRedis) {
    let a = redis.node("t2", "node-a", NO_CHANGE_LIMITS).await;
    let b = redis.node("t2", "node-b", NO_CHANGE_LIMITS).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (alice, _) = a.session("alice", "ios").await;
    let (mut tx, mut rx) = alice.split();
    const CHANGES: usize = 200;
    let reader = tokio::spawn(async move {
        let mut acks = 0;
        while acks < CHANGES {
            match tokio::time::timeout(patience(), rx.recv()).await {
                Ok(Ok(Some(f))) => {
                    if matches!(
                        f.kind,
                        Some(presence_node::proto::server_frame::Kind::Ack(_))
                    ) {
                        acks += 1;
                    }
                }
                Ok(other) => panic!("alice's stream ended after {acks} acks: {other:?}"),
                Err(_) => panic!("no frame for alice within the patience after {acks} acks"),
            }
        }
        rx
    });
    for i in 0..CHANGES {
        let status = if i % 2 == 0 {
            Status::Away
        } else {
            Status::Busy
        };
        tx.set_status(status, format!("n={i}")).await.unwrap();
    }
    let mut last_version = 0;
    let final_text = format!("n={}", CHANGES - 1);
    loop {
        let update = next_update_of(&mut watcher, "alice").await;
        assert!(update.version > last_version, "versions must increase");
        last_version = update.version;
        if update.status_text == final_text {
            break;
        }
    }
    let _rx = tokio::time::timeout(patience(), reader)
        .await
        .expect("every change acked within the patience")
        .unwrap();
}

on_redis_and_redis_cluster!(one_user_on_two_nodes_aggregates_under_concurrent_changes);

async fn one_user_on_two_nodes_aggregates_under_concurrent_changes(redis: &SharedRedis) {
    let a = redis.node("t3", "node-a", NO_CHANGE_LIMITS).await;
    let b = redis.node("t3", "node-b", NO_CHANGE_LIMITS).await;
    let (mut on_a, _) = a.session("alice", "ios").await;
    let (mut on_b, _) = b.session("alice", "web").await;
    // Both devices change the user's status at the same time, many times.
    let (ra, rb) = tokio::join!(
        async {
            let mut last = 0;
            for i in 0..50 {
                last = on_a
                    .set_status(Status::Away, format!("a{i}"))
                    .await
                    .unwrap();
            }
            answer(&mut on_a, last).await
        },
        async {
            let mut last = 0;
            for i in 0..50 {
                last = on_b
                    .set_status(Status::Busy, format!("b{i}"))
                    .await
                    .unwrap();
            }
            answer(&mut on_b, last).await
        }
    );
    assert_eq!((ra, rb), (Ok(()), Ok(())));
    // Both nodes agree, both devices are there, and the status is the last one written.
    let pa = get_presence(a.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    let pb = get_presence(b.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(pa, pb);
    assert_eq!(pa[0].devices, vec!["ios", "web"]);
    assert!(
        pa[0].status_text == "a49" || pa[0].status_text == "b49",
        "{:?}",
        pa[0]
    );
    // A watcher subscribing now on either node sees the same.
    let (mut w, _) = a.session("wendy", "web").await;
    let snap = subscribe(&mut w, &["alice"]).await;
    assert_eq!(snap[0], pa[0]);
}

#[tokio::test]
async fn heartbeats_cost_no_redis_commands_and_a_status_change_two_round_trips() {
    let redis = RedisServer::start();
    // Long lease and resync so no periodic command falls into the measurement.
    let args = [
        "--node-lease-ttl-ms",
        "600000",
        "--resync-interval-ms",
        "600000",
        // 20 changes in a row: more than one user's change burst.
        "--user-change-rate-burst",
        "100",
    ];
    let a = TestNode::start_cluster(&redis, "t4", "node-a", &args).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    let total = |calls: &std::collections::HashMap<String, u64>| -> u64 {
        calls
            .iter()
            .filter(|(k, _)| k.as_str() != "info")
            .map(|(_, v)| v)
            .sum()
    };
    let before = redis.command_calls();
    const HEARTBEATS: usize = 101;
    for _ in 0..HEARTBEATS {
        alice.heartbeat().await.unwrap();
    }
    // Read every ack (an ack names no heartbeat): after the last one, every heartbeat is
    // known to be processed.
    let mut acks = 0;
    recv_until(&mut alice, "every heartbeat ack", |k| match k {
        presence_node::proto::server_frame::Kind::HeartbeatAck(_) => {
            acks += 1;
            (acks == HEARTBEATS).then_some(())
        }
        _ => None,
    })
    .await;
    let after_heartbeats = redis.command_calls();
    assert_eq!(
        total(&after_heartbeats),
        total(&before),
        "heartbeats touched redis"
    );

    const CHANGES: u64 = 20;
    for i in 0..CHANGES {
        let status = if i % 2 == 0 {
            Status::Away
        } else {
            Status::Busy
        };
        let r = alice.set_status(status, "").await.unwrap();
        assert_eq!(answer(&mut alice, r).await, Ok(()));
    }
    let after = redis.command_calls();
    let delta =
        |name: &str| after.get(name).unwrap_or(&0) - after_heartbeats.get(name).unwrap_or(&0);
    // One read (HMGET of the record) and one compare-and-set script call per change: two
    // round trips.
    assert_eq!(delta("hmget"), CHANGES);
    assert_eq!(delta("evalsha") + delta("eval"), CHANGES);
    assert_eq!(delta("publish"), CHANGES);
    // Nothing else is sent: commands run inside the script aside, the only requests are
    // those two (no connection checks, no extra reads).
    let inside_script = ["hget", "time", "hset", "pexpire", "publish", "info"];
    let requests: u64 = after
        .keys()
        .filter(|k| !inside_script.contains(&k.as_str()))
        .map(|k| delta(k))
        .sum();
    assert_eq!(requests, 2 * CHANGES, "{after:?}");
    println!(
        "per status change: {:?}",
        after
            .iter()
            .filter(|(k, v)| **v > *after_heartbeats.get(*k).unwrap_or(&0) && k.as_str() != "info")
            .map(|(k, v)| (
                k.clone(),
                (v - after_heartbeats.get(k).unwrap_or(&0)) as f64 / CHANGES as f64
            ))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_user_hash_without_a_readable_record_is_replaced_not_stuck() {
    // A hash holding a version but no record field `r` (an older layout's `b`), or an
    // unreadable one: the next write replaces it instead of failing its compare-and-set.
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let _: () = ::redis::cmd("HSET")
        .arg("t10:{u:alice}")
        .arg("v")
        .arg("1700000000000000")
        .arg("b")
        .arg("{\"st\":3}")
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg("t10:{u:bob}")
        .arg("v")
        .arg("1700000000000001")
        .arg("r")
        .arg("1700000000000001\nnot json")
        .query(&mut conn)
        .unwrap();
    let a = TestNode::start_cluster(&redis, "t10", "node-a", &[]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    let (mut bob, _) = a.session("bob", "ios").await;
    for (user, session) in [("alice", &mut alice), ("bob", &mut bob)] {
        let r = session.set_status(Status::Busy, "here").await.unwrap();
        assert_eq!(answer(session, r).await, Ok(()), "{user}");
    }
    let p = get_presence(
        a.channel().await,
        &user_creds("carol"),
        ids(&["alice", "bob"]),
    )
    .await
    .unwrap();
    for (presence, old_version) in p.iter().zip([1700000000000000, 1700000000000001]) {
        assert_eq!(status_of(presence), Status::Busy, "{presence:?}");
        assert_eq!(presence.devices, vec!["ios"]);
        assert!(presence.version > old_version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ending_while_the_node_reasserts_its_sessions_do_not_come_back() {
    // The periodic resync re-writes every session this node holds. A session that ends
    // while it runs must stay ended: written back from a stale list, it would be a ghost
    // that the node itself keeps re-asserting.
    let redis = RedisServer::start();
    let a = TestNode::start_cluster(&redis, "t11", "node-a", &["--resync-interval-ms", "10"]).await;
    const USERS: usize = 300;
    let users: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let mut sessions = Vec::new();
    for user in &users {
        sessions.push(a.session(user, "ios").await.0);
    }
    for session in &mut sessions {
        session.close();
    }
    let channel = a.channel().await;
    let online = || async {
        let presences = get_presence(channel.clone(), &user_creds("carol"), users.clone())
            .await
            .unwrap();
        presences
            .into_iter()
            .filter(|p| status_of(p) != Status::Offline)
            .map(|p| p.user_id)
            .collect::<Vec<_>>()
    };
    eventually("every ended session to be gone", || async {
        online().await.is_empty().then_some(())
    })
    .await;
    // And they stay gone through more resyncs.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while std::time::Instant::now() < until {
        assert_eq!(online().await, Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_bulk_read_survives_a_record_holding_its_separator() {
    // Bulk reads join records with \x1e, which JSON never holds raw; a record written by
    // something else may. The read still answers every other user, and the node stays
    // healthy.
    let redis = RedisServer::start();
    let a = TestNode::start_cluster(&redis, "t13", "node-a", &[]).await;
    let (_alice, _) = a.session("alice", "ios").await;
    let mut conn = redis.connection();
    let _: () = ::redis::cmd("HSET")
        .arg("t13:{u:mallory}")
        .arg("v")
        .arg("5")
        .arg("r")
        .arg("5\n{\"st\":2,\"tx\":\"a\x1eb\",\"s\":[{\"id\":\"z:1\",\"d\":\"web\",\"n\":\"z\",\"at\":1}]}")
        .query(&mut conn)
        .unwrap();
    let p = get_presence(
        a.channel().await,
        &user_creds("carol"),
        ids(&["alice", "mallory", "nobody"]),
    )
    .await
    .unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(status_of(&p[0]), Status::Online);
    assert_eq!(p[0].devices, vec!["ios"]);
    assert_eq!(p[1].user_id, "mallory");
    // Not JSON (a raw control character in a string): unreadable, so unknown.
    assert_eq!(status_of(&p[1]), Status::Offline);
    assert_eq!(status_of(&p[2]), Status::Offline);
    assert!(a.node.store.as_ref().is_healthy());
}

#[tokio::test]
async fn a_node_restarted_with_the_same_id_removes_the_sessions_of_its_previous_run() {
    // A Kubernetes container restart keeps the pod name, so the node comes back with the
    // same id and renews the same lease: no other node sweeps it. Its previous run's
    // sessions must still go, at its first connect (not after the lease: it is an hour).
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--key-prefix",
        "t14",
        "--node-id",
        "node-a",
        "--node-lease-ttl-ms",
        "3600000",
    ];
    let first = common::node_process::NodeProcess::start(&args).await;
    let b = TestNode::start_cluster(&redis, "t14", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let channel = presence_node::client::connect(&first.url).await.unwrap();
    let (_alice, _) =
        presence_node::client::Session::open(channel, &user_creds("alice"), hello("ios"))
            .await
            .unwrap();
    assert_eq!(
        status_of(&next_update_of(&mut watcher, "alice").await),
        Status::Online
    );

    first.kill();
    let _second = common::node_process::NodeProcess::start(&args).await;
    let offline = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&offline), Status::Offline);
    let p = get_presence(b.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&p[0]), Status::Offline);
    assert!(p[0].devices.is_empty());
}

#[tokio::test]
async fn a_session_end_that_redis_lost_is_repaired_by_the_periodic_resync() {
    // The end of alice's only session on this node was acknowledged, then lost (a failover
    // that dropped the last write): Redis shows her online under this node, which holds
    // nothing of her. The periodic resync finds her through the node's index.
    let redis = RedisServer::start();
    let a =
        TestNode::start_cluster(&redis, "t15", "node-a", &["--resync-interval-ms", "100"]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    let mut conn = redis.connection();
    let online: String = ::redis::cmd("HGET")
        .arg("t15:{u:alice}")
        .arg("r")
        .query(&mut conn)
        .unwrap();
    alice.close();
    let channel = a.channel().await;
    let status = || async {
        let p = get_presence(channel.clone(), &user_creds("carol"), ids(&["alice"]))
            .await
            .unwrap();
        status_of(&p[0])
    };
    eventually("alice offline", || async {
        (status().await == Status::Offline).then_some(())
    })
    .await;
    // Put the online record back, with a version above the current one, as a lost write
    // would leave it.
    let current: u64 = ::redis::cmd("HGET")
        .arg("t15:{u:alice}")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let body = online.split_once('\n').unwrap().1;
    let _: () = ::redis::cmd("HSET")
        .arg("t15:{u:alice}")
        .arg("v")
        .arg(current + 1)
        .arg("r")
        .arg(format!("{}\n{body}", current + 1))
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("SADD")
        .arg("{t15:nodes}:idx:node-a")
        .arg("alice")
        .query(&mut conn)
        .unwrap();
    assert_eq!(status().await, Status::Online);
    eventually("the ghost to be removed", || async {
        (status().await == Status::Offline).then_some(())
    })
    .await;
    // And the index entry is gone too.
    eventually("alice out of the node's index", || async {
        let member: bool = ::redis::cmd("SISMEMBER")
            .arg("{t15:nodes}:idx:node-a")
            .arg("alice")
            .query(&mut redis.connection())
            .unwrap();
        (!member).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_keeps_losing_its_compare_and_set_keeps_the_node_healthy() {
    // Something keeps changing alice's version while her status is set, so every
    // compare-and-set attempt fails. Redis is fine: the node must stay healthy (not flap
    // readiness for everyone), keep the change and write it once the writes calm down.
    let redis = RedisServer::start();
    let a =
        TestNode::start_cluster(&redis, "t16", "node-a", &["--resync-interval-ms", "100"]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writes = std::sync::Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, writes) = (stop.clone(), writes.clone());
            let mut conn = redis.connection();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut pipe = ::redis::pipe();
                    for _ in 0..20 {
                        pipe.cmd("HINCRBY")
                            .arg("t16:{u:alice}")
                            .arg("v")
                            .arg(1)
                            .ignore();
                    }
                    let _: () = pipe.query(&mut conn).unwrap();
                    writes.fetch_add(20, Ordering::Relaxed);
                }
            })
        })
        .collect();
    eventually("the competing writers to be going", || async {
        (writes.load(Ordering::Relaxed) > 2_000).then_some(())
    })
    .await;
    let before = writes.load(Ordering::Relaxed);
    let r = alice.set_status(Status::Busy, "contended").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    // The change is taken (acked) before it is written: the scenario is the competing
    // writes going on after it, against the node's attempts to write it. Let them.
    eventually("competing writes after the change was taken", || async {
        (writes.load(Ordering::Relaxed) >= before + 200).then_some(())
    })
    .await;
    let during = writes.load(Ordering::Relaxed) - before;
    assert!(
        a.node.store.as_ref().is_healthy(),
        "a hot user made the node unhealthy"
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    println!("competing version bumps while the status was set: {during}");
    let channel = a.channel().await;
    eventually("alice's status to reach redis", || async {
        let p = get_presence(channel.clone(), &user_creds("carol"), ids(&["alice"]))
            .await
            .ok()?;
        (status_of(&p[0]) == Status::Busy && p[0].status_text == "contended").then_some(())
    })
    .await;
    // In Redis itself, not only in the node's view.
    let stored: String = ::redis::cmd("HGET")
        .arg("t16:{u:alice}")
        .arg("r")
        .query(&mut redis.connection())
        .unwrap();
    assert!(stored.contains("contended"), "{stored}");
    assert!(a.node.store.as_ref().is_healthy());
}

#[tokio::test]
async fn a_lost_session_write_is_repaired_by_the_periodic_resync() {
    // Redis keeps the user's record but lost this node's session in it (a failover that
    // dropped the last write): the periodic resync writes it back.
    let redis = RedisServer::start();
    let a =
        TestNode::start_cluster(&redis, "t12", "node-a", &["--resync-interval-ms", "100"]).await;
    let (_alice, _) = a.session("alice", "ios").await;
    let (_bob, _) = a.session("bob", "web").await;
    let mut conn = redis.connection();
    let stored: String = ::redis::cmd("HGET")
        .arg("t12:{u:alice}")
        .arg("r")
        .query(&mut conn)
        .unwrap();
    let version: u64 = stored.split_once('\n').unwrap().0.parse().unwrap();
    let lost = format!("{}\n{{\"st\":2,\"s\":[]}}", version + 1);
    let _: () = ::redis::cmd("HSET")
        .arg("t12:{u:alice}")
        .arg("v")
        .arg(version + 1)
        .arg("r")
        .arg(&lost)
        .query(&mut conn)
        .unwrap();
    let channel = a.channel().await;
    eventually("alice's session to be written back", || async {
        let p = get_presence(
            channel.clone(),
            &user_creds("carol"),
            ids(&["alice", "bob"]),
        )
        .await
        .ok()?;
        (status_of(&p[0]) == Status::Online
            && p[0].devices == vec!["ios"]
            && p[0].version > version + 1)
            .then_some(())
    })
    .await;
    let p = get_presence(channel, &user_creds("carol"), ids(&["bob"]))
        .await
        .unwrap();
    assert_eq!(p[0].devices, vec!["web"]);
}

#[tokio::test]
async fn redis_restarted_empty_is_rebuilt_and_changes_flow_again() {
    let mut redis = RedisServer::start();
    let args = ["--node-lease-ttl-ms", "900"];
    let a = TestNode::start_cluster(&redis, "t5", "node-a", &args).await;
    let b = TestNode::start_cluster(&redis, "t5", "node-b", &args).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    let r = alice.set_status(Status::Busy, "deep work").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;

    redis.restart_empty();
    // Within seconds, with no client reconnecting, Redis holds the truth again.
    let started = std::time::Instant::now();
    eventually("alice's record to be rebuilt in redis", || async {
        let p = get_presence(b.channel().await, &user_creds("bob"), ids(&["alice"]))
            .await
            .ok()?;
        (status_of(&p[0]) == Status::Busy
            && p[0].status_text == "deep work"
            && p[0].devices == vec!["ios"])
        .then_some(())
    })
    .await;
    println!(
        "rebuilt {} ms after the restart",
        started.elapsed().as_millis()
    );
    // Later changes flow to the remote watcher.
    eventually("both nodes healthy again", || async {
        (a.node.store.as_ref().is_healthy() && b.node.store.as_ref().is_healthy()).then_some(())
    })
    .await;
    let r = alice.set_status(Status::Away, "back soon").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    recv_until(&mut watcher, "alice away after the restart", |k| match k {
        presence_node::proto::server_frame::Kind::Update(u) => u
            .presences
            .iter()
            .find(|p| p.user_id == "alice" && p.status_text == "back soon")
            .map(|_| ()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_keeps_sessions_and_the_change_made_meanwhile_arrives() {
    let mut redis = RedisServer::start();
    let a = TestNode::start_cluster(&redis, "t6", "node-a", &[]).await;
    let b = TestNode::start_cluster(&redis, "t6", "node-b", &[]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (mut local_watcher, _) = a.session("lou", "web").await;
    subscribe(&mut local_watcher, &["alice"]).await;

    let health = |node: &TestNode| {
        let url = node.url();
        async move {
            let channel = presence_node::client::connect(&url).await.ok()?;
            let status = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "presence.v1.PresenceService".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            Some(status)
        }
    };
    const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    const NOT_SERVING: i32 =
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(health(&a).await, Some(SERVING));

    redis.kill();
    eventually("node a to notice the outage", || async {
        (!a.node.store.as_ref().is_healthy()).then_some(())
    })
    .await;
    // Not ready while Redis is away (the load balancer stops sending new devices).
    eventually("health NOT_SERVING during the outage", || async {
        (health(&a).await == Some(NOT_SERVING)).then_some(())
    })
    .await;
    // During the outage: the change is accepted and local watchers see it at once.
    let r = alice
        .set_status(Status::Busy, "during outage")
        .await
        .unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let local = next_update_of(&mut local_watcher, "alice").await;
    assert_eq!(local.status_text, "during outage");
    let outage = std::time::Duration::from_secs(10);
    tokio::time::sleep(outage).await; // the outage itself is the scenario, not a synchronisation
    redis.restart_empty();
    // Sessions survived, and the change reaches the remote watcher.
    let remote = recv_until(
        &mut watcher,
        "the change made during the outage",
        |k| match k {
            presence_node::proto::server_frame::Kind::Update(u) => u
                .presences
                .iter()
                .find(|p| p.user_id == "alice" && p.status_text == "during outage")
                .cloned(),
            _ => None,
        },
    )
    .await;
    assert_eq!(status_of(&remote), Status::Busy);
    assert_eq!(a.node.sessions.len(), 2);
    assert_eq!(b.node.sessions.len(), 1);
    eventually("health SERVING again", || async {
        (health(&a).await == Some(SERVING)).then_some(())
    })
    .await;
    let r = alice.heartbeat().await.unwrap();
    assert!(r > 0);
}

#[tokio::test]
async fn updates_missed_while_the_pubsub_connection_was_killed_are_repaired() {
    let redis = RedisServer::start();
    let a = TestNode::start_cluster(&redis, "t7", "node-a", &[]).await;
    let b = TestNode::start_cluster(&redis, "t7", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    next_update_of(&mut watcher, "alice").await;

    let _: () = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.connection())
        .unwrap();
    let r = alice.set_status(Status::Away, "missed?").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let repaired = recv_until(
        &mut watcher,
        "the update published while disconnected",
        |k| match k {
            presence_node::proto::server_frame::Kind::Update(u) => u
                .presences
                .iter()
                .find(|p| p.user_id == "alice" && p.status_text == "missed?")
                .cloned(),
            _ => None,
        },
    )
    .await;
    assert_eq!(status_of(&repaired), Status::Away);
}

on_redis_and_redis_cluster!(sigterm_on_one_node_and_reconnect_to_another_shows_no_flap);

async fn sigterm_on_one_node_and_reconnect_to_another_shows_no_flap(redis: &SharedRedis) {
    let a = redis
        .node("t8", "node-a", &["--shutdown-grace-ms", "10000"])
        .await;
    let b = redis.node("t8", "node-b", &[]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice", "marker"]).await;
    let (mut alice, _) = a.session("alice", "ios").await;
    next_update_of(&mut watcher, "alice").await;

    let a_clock = a.clock.clone();
    let draining = tokio::spawn(a.shutdown());
    let retry = recv_until(&mut alice, "reconnect", |k| match k {
        presence_node::proto::server_frame::Kind::Reconnect(r) => Some(r.retry_after_ms),
        _ => None,
    })
    .await;
    // The device leaves node a and comes back on node b after the advised delay.
    alice.close();
    tokio::time::sleep(std::time::Duration::from_millis(retry)).await; // the device's own wait
    let (mut alice_on_b, welcome) = b.session("alice", "ios").await;
    assert_eq!(welcome.node_id, "node-b");
    // Both clocks past the offline grace of the session left on node a (node a reaps its
    // lingering sessions, by its clock, as it stops; it waits at most the grace, in real
    // time, from alice's close, and the advised delay is at most half of it): whatever
    // the end of the grace does, it has done by the time node a has stopped.
    let past_grace = OFFLINE_GRACE_MS + 1_000;
    a_clock.advance(past_grace);
    b.advance(past_grace);
    tokio::time::timeout(patience(), draining)
        .await
        .unwrap()
        .unwrap();
    let (_marker, _) = b.session("marker", "web").await;
    let seen = updates_until_marker(&mut watcher, "marker").await;
    assert!(
        seen.iter().all(|p| p.user_id != "alice"),
        "the handoff flapped: {seen:?}"
    );
    // A marker on alice's own channel, so on the path of any update of hers whatever
    // node published it (and, with a higher version, after it): up to it, the watcher saw
    // no other update of alice.
    let r = alice_on_b.set_status(Status::Busy, "marker").await.unwrap();
    assert_eq!(answer(&mut alice_on_b, r).await, Ok(()));
    let mut of_alice = Vec::new();
    recv_until(&mut watcher, "alice's own marker", |k| match k {
        presence_node::proto::server_frame::Kind::Update(u) => {
            of_alice.extend(u.presences.iter().filter(|p| p.user_id == "alice").cloned());
            of_alice
                .iter()
                .any(|p| p.status_text == "marker")
                .then_some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        of_alice.len(),
        1,
        "the handoff flapped (updates of alice before her marker): {of_alice:?}"
    );
    assert_eq!(status_of(&of_alice[0]), Status::Busy);
    assert_eq!(of_alice[0].devices, vec!["ios"]);
}

/// The node's default `--offline-grace-ms`.
const OFFLINE_GRACE_MS: u64 = 3_000;

#[tokio::test]
async fn sigkill_of_a_node_makes_its_users_offline_within_the_bound_and_leaves_no_keys() {
    let redis = RedisServer::start();
    const LEASE_MS: u64 = 2_000;
    let lease = LEASE_MS.to_string();
    let url = redis.url();
    let a = common::node_process::NodeProcess::start(&[
        "--redis-url",
        &url,
        "--key-prefix",
        "t9",
        "--node-id",
        "node-a",
        "--node-lease-ttl-ms",
        &lease,
    ])
    .await;
    let b = TestNode::start_cluster(&redis, "t9", "node-b", &["--node-lease-ttl-ms", &lease]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let channel = presence_node::client::connect(&a.url).await.unwrap();
    let (_alice, _) =
        presence_node::client::Session::open(channel, &user_creds("alice"), hello("ios"))
            .await
            .unwrap();
    next_update_of(&mut watcher, "alice").await;

    let killed = std::time::Instant::now();
    a.kill();
    let offline = next_update_of(&mut watcher, "alice").await;
    let took = killed.elapsed();
    assert_eq!(status_of(&offline), Status::Offline);
    // Documented bound: lease TTL (last renewal up to a third of it earlier) plus one sweep
    // period (half the lease TTL), plus a little processing.
    let bound = std::time::Duration::from_millis(LEASE_MS + LEASE_MS / 2 + 1_000);
    println!(
        "ghost bound: OFFLINE {} ms after SIGKILL (bound {} ms)",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(took <= bound, "took {took:?}, bound {bound:?}");

    // Nothing of the dead node is left in Redis.
    let mut conn = redis.connection();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*node-a*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "keys of the dead node remain: {keys:?}");
    let leased: Option<f64> = ::redis::cmd("ZSCORE")
        .arg("{t9:nodes}:leases")
        .arg("node-a")
        .query(&mut conn)
        .unwrap();
    assert_eq!(leased, None);
    let body: String = ::redis::cmd("HGET")
        .arg("t9:{u:alice}")
        .arg("r")
        .query(&mut conn)
        .unwrap();
    assert!(!body.contains("node-a"), "{body}");
}

#[tokio::test]
async fn nodes_reach_redis_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let ca = common::redis::tls_fixture("ca.pem");
    let ca = ca.to_str().unwrap();
    let a = TestNode::start_cluster(&redis, "tls", "node-a", &["--redis-ca-file", ca]).await;
    let b = TestNode::start_cluster(&redis, "tls", "node-b", &["--redis-ca-file", ca]).await;
    let (mut watcher, _) = b.session("wendy", "web").await;
    subscribe(&mut watcher, &["alice"]).await;
    let (_alice, _) = a.session("alice", "ios").await;
    let online = next_update_of(&mut watcher, "alice").await;
    assert_eq!(status_of(&online), Status::Online);
}
