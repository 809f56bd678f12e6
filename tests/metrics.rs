//! The Prometheus endpoint, scraped over HTTP from a real node process, follows a scripted
//! scenario.

mod common;

use common::node_process::NodeProcess;
use common::redis::RedisServer;
use common::*;
use presence_node::client::{self, Session};
use presence_node::proto::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET /metrics over plain HTTP/1.0.
async fn scrape(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.starts_with("HTTP/1.").then_some(body)
}

/// The value of one sample (`name{labels}` exactly as exported), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_follow_a_scripted_scenario() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let node = NodeProcess::start(&[
        "--metrics-addr",
        &addr,
        "--status-rate-burst",
        "5",
        "--status-rate-per-s",
        "1",
    ])
    .await;
    let channel = client::connect(&node.url).await.unwrap();
    let (mut watcher, _) = Session::open(channel.clone(), &user_creds("wendy"), hello("web"))
        .await
        .unwrap();
    subscribe(&mut watcher, &["alice"]).await;
    let (mut alice, _) = Session::open(channel.clone(), &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    next_update_of(&mut watcher, "alice").await;
    // 5 accepted changes (the burst), then 3 refused by the rate limit.
    let mut answers = Vec::new();
    for i in 0..8 {
        let status = if i % 2 == 0 {
            Status::Away
        } else {
            Status::Busy
        };
        let r = alice.set_status(status, format!("n={i}")).await.unwrap();
        answers.push(answer(&mut alice, r).await);
    }
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    recv_until(&mut watcher, "alice's last accepted change", |k| match k {
        presence_node::proto::server_frame::Kind::Update(u) => u
            .presences
            .iter()
            .find(|p| p.status_text == format!("n={}", accepted - 1))
            .map(|_| ()),
        _ => None,
    })
    .await;
    alice.close();
    end_of(&mut alice).await.unwrap();

    let m = eventually("metrics to show the scenario", || async {
        let m = scrape(port).await?;
        (sample(&m, "presence_sessions_closed_total{reason=\"clean\"}") == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(&m, "presence_sessions"),
        Some(1.0),
        "the watcher is left"
    );
    assert_eq!(sample(&m, "presence_users_online"), Some(1.0));
    assert_eq!(sample(&m, "presence_sessions_opened_total"), Some(2.0));
    assert_eq!(
        sample(&m, "presence_frames_received_total{kind=\"set_status\"}"),
        Some(8.0)
    );
    assert_eq!(
        sample(&m, "presence_frames_received_total{kind=\"hello\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "presence_rate_limited_total{frame=\"set_status\"}"),
        Some((8 - accepted) as f64)
    );
    let delivered = sample(&m, "presence_updates_delivered_total").unwrap();
    assert!(
        delivered >= 2.0,
        "online + at least the last change: {delivered}"
    );
    assert!(sample(&m, "presence_fanout_seconds_count").unwrap() >= 1.0 + accepted as f64);
    assert!(
        m.contains("process_resident_memory_bytes"),
        "process metrics are exported"
    );
}

#[tokio::test]
async fn redis_metrics_in_cluster_mode() {
    let redis = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = redis.url();
    let node = NodeProcess::start(&[
        "--metrics-addr",
        &addr,
        "--redis-url",
        &url,
        "--key-prefix",
        "m",
    ])
    .await;
    let channel = client::connect(&node.url).await.unwrap();
    let (mut alice, _) = Session::open(channel, &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    let r = alice.set_status(Status::Busy, "").await.unwrap();
    assert_eq!(answer(&mut alice, r).await, Ok(()));
    let m = eventually("redis metrics", || async {
        let m = scrape(port).await?;
        (sample(&m, "presence_redis_up") == Some(1.0)).then_some(m)
    })
    .await;
    assert!(sample(&m, "presence_redis_request_seconds_count{op=\"write\"}").unwrap() >= 2.0);
    assert!(sample(&m, "presence_resyncs_total{reason=\"connect\"}").unwrap() >= 1.0);
}
