//! `idle`: N sessions held open over C connections (streams multiplexed), each watching W
//! users and heartbeating at the node's interval. Measures time to establish and node RSS;
//! on Redis (`--redis`), also the Redis commands sent while the sessions only heartbeat.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use presence_node::client::{Credentials, Session};

use crate::ws::{AnySession, Transport, WsSession};
use presence_node::proto::Hello;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::node_process::{check_open_files, Deployment, RedisDelta, Target};
use crate::report::{Latency, Report};

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Sessions to hold.
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// Connections to spread them over (C = N: one connection each).
    #[arg(long, default_value_t = 10)]
    connections: u64,
    /// Users each session watches (random among the N users).
    #[arg(long, default_value_t = 20)]
    watch: usize,
    /// How long to hold the sessions once all are open.
    #[arg(long, default_value_t = 5.0)]
    hold_s: f64,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Sessions over gRPC, over the web listener's WebSocket (one connection each), or both
    /// (one after the other, a node each).
    #[arg(long, value_enum, default_value = "grpc")]
    transport: Transport,
    #[command(flatten)]
    target: Target,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the distribution of the time to establish a session here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub async fn run(args: IdleArgs) -> Result<(), String> {
    for transport in args.transport.each() {
        run_one(&args, transport).await?;
    }
    Ok(())
}

async fn run_one(args: &IdleArgs, transport: Transport) -> Result<(), String> {
    let ws = transport == Transport::Ws;
    if ws && !args.target.servers.is_empty() {
        return Err(
            "--transport ws starts its node (with --web-addr); --server is gRPC only".into(),
        );
    }
    if ws && args.target.tls {
        return Err("--transport ws runs without --tls".into());
    }
    let web_addr = format!("127.0.0.1:{}", crate::node_process::free_port()?);
    // A WebSocket is one TCP connection per session.
    let connections = if ws { args.sessions } else { args.connections };
    let streams_per_connection = args.sessions.div_ceil(args.connections.max(1));
    let max_streams = (streams_per_connection + 16).to_string();
    if args.target.nodes > 1 || args.target.servers.len() > 1 {
        return Err("idle drives one node (--nodes 1, at most one --server)".into());
    }
    check_open_files(connections);
    let mut defaults = vec!["--max-concurrent-streams", max_streams.as_str()];
    if ws {
        defaults.extend(["--web-addr", web_addr.as_str()]);
    }
    let deployment = Deployment::start(&args.target, &defaults).await?;
    let node = &deployment.nodes[0];
    // The connections (TCP, and the TLS handshake with --tls) come first, apart from the
    // sessions: their time and memory are reported on their own.
    // The baseline: the idle node before any connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_empty = node.rss_bytes();
    let connecting = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..if ws { 0 } else { args.connections } {
        channels.push(
            crate::common::connect(&node.url)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let connect_s = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = node.rss_bytes();
    let rss_per_connection = match (rss_empty, rss_before) {
        // WebSocket connections open with their sessions: counted in the per-session RSS.
        _ if ws => None,
        (Some(empty), Some(before)) => {
            Some(before.saturating_sub(empty) as f64 / connections.max(1) as f64)
        }
        _ => None,
    };
    println!(
        "idle ({}): {} sessions over {} connections, watching {} each; node RSS before {:.1} MiB",
        transport.label(),
        args.sessions,
        connections,
        args.watch,
        rss_before.unwrap_or(0) as f64 / 1048576.0
    );

    let errors = Arc::new(AtomicU64::new(0));
    let heartbeats = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let channel = (!ws).then(|| channels[(i % args.connections) as usize].clone());
        let web_addr = web_addr.clone();
        let (task_errors, task_opened, lat_tx) = (errors.clone(), opened.clone(), lat_tx.clone());
        let task_heartbeats = heartbeats.clone();
        let mut stop = stop_rx.clone();
        let watch: Vec<String> = (0..args.watch)
            .map(|_| format!("u{}", rand::random_range(0..args.sessions)))
            .collect();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let hello = Hello {
                device: "bench".into(),
                status: None,
                status_text: String::new(),
            };
            let user = Credentials::User(format!("u{i}"));
            let opened_session = match channel {
                Some(channel) => Session::open(channel, &user, hello)
                    .await
                    .map(|(s, w)| (AnySession::Grpc(s), w))
                    .map_err(|e| e.to_string()),
                None => WsSession::open(&web_addr, &user, hello)
                    .await
                    .map(|(s, w)| (AnySession::Ws(s), w)),
            };
            let (mut session, welcome) = match opened_session {
                Ok(s) => s,
                Err(_) => {
                    task_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            if !watch.is_empty() && session.subscribe(watch).await.is_err() {
                task_errors.fetch_add(1, Ordering::Relaxed);
            }
            let _ = lat_tx.send(t.elapsed().as_micros() as u64);
            task_opened.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            let interval = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
            // Jittered first beat, as a fleet of real devices would.
            let mut next =
                tokio::time::Instant::now() + interval.mul_f64(rand::random_range(0.0..1.0));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {
                        if session.heartbeat().await.is_err() {
                            task_errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        task_heartbeats.fetch_add(1, Ordering::Relaxed);
                        next += interval;
                    }
                    frame = session.recv() => {
                        if !matches!(frame, Ok(Some(_))) {
                            task_errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    _ = stop.changed() => {
                        session.close().await;
                        return;
                    }
                }
            }
        }));
        if i % 10_000 == 9_999 {
            println!(
                "  started {} sessions, {} open",
                i + 1,
                opened.load(Ordering::Relaxed)
            );
        }
    }
    drop(lat_tx);
    while opened.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < args.sessions {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let establish_s = started.elapsed().as_secs_f64();
    while let Ok(us) = lat_rx.try_recv() {
        let _ = histogram.record(us);
    }
    println!(
        "  all open in {establish_s:.2} s; holding {:.1} s",
        args.hold_s
    );
    let cpu_before_hold = node.cpu_seconds();
    let redis_cpu_before_hold = deployment.redis_cpu_seconds();
    let redis_before_hold = deployment.redis_calls();
    let heartbeats_before_hold = heartbeats.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.hold_s)).await;
    let rss_after = node.rss_bytes();
    let hold_heartbeats = heartbeats.load(Ordering::Relaxed) - heartbeats_before_hold;
    // Redis while merely holding the sessions: what heartbeats cost there (periodic lease
    // renewals and resyncs fall in too; see BENCHMARKS.md).
    let redis_hold = match (redis_before_hold, deployment.redis_calls()) {
        (Some(before), Some(after)) => Some(RedisDelta::between(&before, &after)),
        _ => None,
    };
    // Node CPU while merely holding the sessions (heartbeats, sweeps): the idle cost.
    let hold_cpu_s = match (cpu_before_hold, node.cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let redis_hold_cpu_s = match (redis_cpu_before_hold, deployment.redis_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let open = opened.load(Ordering::Relaxed);
    // Per session from the idle node before any connection: what a client costs, its
    // connection included (with C < N, the connections' share is spread over the sessions;
    // `rss_per_connection_bytes` tells it apart).
    let per_session = match (rss_empty, rss_after) {
        (Some(empty), Some(after)) if open > 0 => {
            Some(after.saturating_sub(empty) as f64 / open as f64)
        }
        _ => None,
    };
    let report = Report {
        scenario: "idle",
        sessions: open,
        connections,
        duration_s: establish_s,
        rss_per_session_bytes: per_session,
        latency_ms: Latency::from_histogram(&histogram),
        expected: args.sessions,
        delivered: open,
        errors: errors.load(Ordering::Relaxed),
        throughput_per_s: open as f64 / establish_s,
        extra: vec![
            ("watch_per_session", json!(args.watch)),
            ("transport", json!(transport.label())),
            ("tls", json!(args.target.tls)),
            ("connect_s", json!(connect_s)),
            (
                "connections_per_s",
                json!(connections as f64 / connect_s.max(1e-9)),
            ),
            ("rss_per_connection_bytes", json!(rss_per_connection)),
            ("rss_empty_bytes", json!(rss_empty)),
            ("rss_before_bytes", json!(rss_before)),
            ("rss_after_bytes", json!(rss_after)),
            ("node_cpu_s_while_holding", json!(hold_cpu_s)),
            ("redis_cpu_s_while_holding", json!(redis_hold_cpu_s)),
            ("hold_s", json!(args.hold_s)),
            ("heartbeats_while_holding", json!(hold_heartbeats)),
            (
                "redis_commands_while_holding",
                json!(redis_hold.as_ref().map(|d| d.commands)),
            ),
            (
                "redis_commands_per_heartbeat",
                json!(redis_hold
                    .as_ref()
                    .map(|d| d.commands as f64 / hold_heartbeats.max(1) as f64)),
            ),
            (
                "redis_commands_while_holding_by_command",
                json!(redis_hold.as_ref().map(|d| d.per(1))),
            ),
        ],
    };
    report.print();
    let per_transport = |path: &Option<PathBuf>| match (path, args.transport) {
        (Some(path), Transport::Both) => Some(path.with_extension(format!(
            "{}.{}",
            transport.label(),
            path.extension().and_then(|e| e.to_str()).unwrap_or("out")
        ))),
        (path, _) => path.clone(),
    };
    report.save(per_transport(&args.out).as_deref())?;
    crate::plot::save(
        per_transport(&args.plot).as_deref(),
        "idle: time to open a session (hello, welcome, subscribe)",
        &histogram,
    )
}
