//! `churn`: N sessions (users u0..uN-1), each watching W others, and a driver changing
//! statuses at R changes/s for D seconds, on one or more nodes.
//!
//! Every change carries its send time and a per-user sequence number in its text
//! (`t=<unix_us>;s=<seq>`): a watcher that receives it records the delivery latency and
//! the newest change it saw of that user. A change counts as delivered to a watcher when the
//! watcher saw that change or a later one of the same user (the node may coalesce pending
//! updates, never lose them). Also measured: node CPU per 1,000 deliveries (/proc) and,
//! on Redis, commands and requests per change (`INFO commandstats`).
//!
//! The changes of a user are made on that user's own session (a status belongs to the user),
//! round-robin over a shuffled order so each user changes every N/R seconds, well inside the
//! per-session rate limit; the nodes started here get a limit of 4x that rate anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use presence_node::client::{Credentials, Session};
use presence_node::proto::{server_frame, Hello, Status};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::common::{self, Histograms, Output, Progress};
use crate::node_process::{check_open_files, Deployment, RedisDelta, Target};
use crate::report::{Latency, Report};
use crate::ws::{AnyReceiver, AnySender, AnySession, Transport, WsSession};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Graph {
    /// Each session watches W users drawn uniformly.
    Random,
    /// Watched users drawn by a Zipf law (a few users are watched by almost everyone).
    Powerlaw,
}

#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Sessions (one user each).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Users each session watches.
    #[arg(long, default_value_t = 20)]
    watch: usize,
    /// Who watches whom.
    #[arg(long, value_enum, default_value = "random")]
    graph: Graph,
    /// Zipf exponent of --graph powerlaw.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Status changes per second (all users together).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// How long the driver changes statuses.
    #[arg(long, default_value_t = 60.0)]
    duration_s: f64,
    /// Connections (spread over the nodes; sessions multiplexed on them).
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Sessions over gRPC, over the web listener's WebSocket (one connection each), or both
    /// (one after the other, on fresh nodes), one report each.
    #[arg(long, value_enum, default_value = "grpc")]
    transport: Transport,
    /// Longest wait for the last updates after the driver stopped.
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// Seed of the graph and the change order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent `GetPresence` callers of `--bulk-ids` users during the run (0: none): the
    /// bulk load the status writes share Redis with.
    #[arg(long, default_value_t = 0)]
    bulk_concurrency: usize,
    /// Users per bulk read (the first N users: all exist and are online).
    #[arg(long, default_value_t = 1000)]
    bulk_ids: usize,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
}

/// What a watcher's receiving half saw.
#[derive(Debug, Default)]
struct Seen {
    /// Newest change sequence seen, per entry of the (sorted) watch list.
    newest: Vec<u32>,
    /// Refs of this session's own `set_status` frames the node acknowledged.
    acked: Vec<u64>,
    /// `Error` frames (refused changes).
    refused: u64,
    /// The stream ended before the end of the run.
    ended_early: bool,
}

/// Counters shared by the receiving tasks, for progress and the drain.
#[derive(Default)]
struct Live {
    /// Presences received that carry a change (deliveries).
    deliveries: AtomicU64,
    acks: AtomicU64,
    refused: AtomicU64,
}

/// `t=<unix_us>;s=<seq>`, `unix_us` the change's scheduled send time: a driver that falls
/// behind its schedule counts its lateness in the latency (no coordinated omission).
fn change_text(scheduled_us: u64, seq: u32) -> String {
    format!("t={scheduled_us};s={seq}")
}

fn parse_change(text: &str) -> Option<(u64, u32)> {
    let (t, s) = text.strip_prefix("t=")?.split_once(";s=")?;
    Some((t.parse().ok()?, s.parse().ok()?))
}

fn user_id(i: u32) -> String {
    format!("u{i}")
}

fn user_index(id: &str) -> Option<u32> {
    id.strip_prefix('u')?.parse().ok()
}

/// Watch lists (sorted, distinct, never oneself).
fn build_graph(args: &ChurnArgs, rng: &mut StdRng) -> Vec<Vec<u32>> {
    let n = args.sessions;
    let w = args.watch.min(n.saturating_sub(1));
    let cdf: Vec<f64> = match args.graph {
        Graph::Random => Vec::new(),
        Graph::Powerlaw => {
            let mut acc = 0.0;
            (1..=n)
                .map(|rank| {
                    acc += 1.0 / (rank as f64).powf(args.zipf_s);
                    acc
                })
                .collect()
        }
    };
    // Popularity rank -> user, so the popular users are spread over the nodes.
    let mut by_rank: Vec<u32> = (0..n as u32).collect();
    by_rank.shuffle(rng);
    (0..n as u32)
        .map(|me| {
            let mut chosen = std::collections::BTreeSet::new();
            let mut attempts = 0;
            while chosen.len() < w {
                attempts += 1;
                let candidate = if cdf.is_empty() || attempts > 50 * w {
                    rng.random_range(0..n as u32)
                } else {
                    let x = rng.random_range(0.0..cdf[n - 1]);
                    by_rank[cdf.partition_point(|c| *c < x).min(n - 1)]
                };
                if candidate != me {
                    chosen.insert(candidate);
                }
            }
            chosen.into_iter().collect()
        })
        .collect()
}

/// `--bulk-concurrency` callers reading `--bulk-ids` users in a loop, each on its own
/// connection, until the run stops.
struct BulkLoad {
    tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>,
    latencies: Arc<Histograms>,
    started: Instant,
}

impl BulkLoad {
    async fn start(
        args: &ChurnArgs,
        urls: &[String],
        stop: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let ids: Arc<Vec<String>> = Arc::new(
            (0..args.bulk_ids.min(args.sessions) as u32)
                .map(user_id)
                .collect(),
        );
        let latencies = Arc::new(Histograms::new());
        let mut tasks = Vec::new();
        for w in 0..args.bulk_concurrency {
            let channel = common::connect(&urls[w % urls.len()])
                .await
                .map_err(|e| e.to_string())?;
            let (ids, latencies, mut stop) = (ids.clone(), latencies.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let who = Credentials::User(format!("bulk-reader-{w}"));
                let (mut done, mut errors) = (0u64, 0u64);
                while !*stop.borrow_and_update() {
                    let t = Instant::now();
                    let read =
                        presence_node::client::get_presence(channel.clone(), &who, ids.to_vec());
                    let answer = tokio::select! {
                        answer = read => answer,
                        _ = stop.changed() => break,
                    };
                    match answer {
                        Ok(_) => {
                            latencies.record(w, t.elapsed().as_micros() as u64);
                            done += 1;
                        }
                        Err(_) => errors += 1,
                    }
                }
                (done, errors)
            }));
        }
        Ok(Self {
            tasks,
            latencies,
            started: Instant::now(),
        })
    }

    async fn finish(self) -> serde_json::Value {
        if self.tasks.is_empty() {
            return serde_json::Value::Null;
        }
        let wall = self.started.elapsed().as_secs_f64();
        let (mut done, mut errors) = (0u64, 0u64);
        for task in self.tasks {
            if let Ok((d, e)) = task.await {
                done += d;
                errors += e;
            }
        }
        let h = self.latencies.merged();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "requests": done,
            "errors": errors,
            "requests_per_s": done as f64 / wall,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
        })
    }
}

/// Opens session `i`, subscribes to its watch list and waits for the snapshots.
async fn open_watcher(
    to: Endpoint,
    i: u32,
    watched: &[u32],
) -> Result<(AnySender, AnyReceiver, Duration), String> {
    let hello = Hello {
        device: "bench".into(),
        status: Some(Status::Online as i32),
        status_text: String::new(),
    };
    let user = Credentials::User(user_id(i));
    let (mut session, welcome) = match to {
        Endpoint::Grpc(channel) => Session::open(channel, &user, hello)
            .await
            .map(|(s, w)| (AnySession::Grpc(s), w))
            .map_err(|e| e.to_string())?,
        Endpoint::Ws(addr) => WsSession::open(&addr, &user, hello)
            .await
            .map(|(s, w)| (AnySession::Ws(s), w))?,
    };
    let mut waiting = Vec::new();
    for chunk in watched.chunks(1000) {
        let ids = chunk.iter().map(|u| user_id(*u)).collect();
        let subscribe = presence_node::proto::Subscribe { user_ids: ids };
        waiting.push(
            session
                .send(presence_node::proto::client_frame::Kind::Subscribe(
                    subscribe,
                ))
                .await?,
        );
    }
    while !waiting.is_empty() {
        match session.recv().await {
            Ok(Some(frame)) => match frame.kind {
                Some(server_frame::Kind::Snapshot(s)) => waiting.retain(|r| *r != s.r#ref),
                Some(server_frame::Kind::Error(e)) => {
                    return Err(format!("subscribe refused: {}", e.message))
                }
                _ => {}
            },
            Ok(None) => return Err("session ended before its snapshot".into()),
            Err(e) => return Err(e),
        }
    }
    let interval = common::heartbeat_interval(&welcome);
    let (sender, receiver) = session.split();
    Ok((sender, receiver, interval))
}

/// Where a session connects: a gRPC channel, or the web listener's address.
enum Endpoint {
    Grpc(tonic::transport::Channel),
    Ws(String),
}

/// The receiving half of a watcher until `stop`.
async fn receive(
    index: usize,
    mut receiver: AnyReceiver,
    watched: Vec<u32>,
    latencies: Arc<Histograms>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen {
        newest: vec![0; watched.len()],
        ..Seen::default()
    };
    loop {
        if *stop.borrow() {
            return seen;
        }
        let frame = tokio::select! {
            frame = receiver.recv() => frame,
            _ = stop.changed() => continue,
        };
        let kind = match frame {
            Ok(Some(frame)) => frame.kind,
            _ => {
                seen.ended_early = !*stop.borrow();
                return seen;
            }
        };
        match kind {
            Some(server_frame::Kind::Update(update)) => {
                let now = common::unix_us();
                for p in update.presences {
                    let Some((sent_us, seq)) = parse_change(&p.status_text) else {
                        continue;
                    };
                    let Some(user) = user_index(&p.user_id) else {
                        continue;
                    };
                    if let Ok(pos) = watched.binary_search(&user) {
                        seen.newest[pos] = seen.newest[pos].max(seq);
                    }
                    latencies.record(index, now.saturating_sub(sent_us));
                    live.deliveries.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(server_frame::Kind::Ack(ack)) => {
                seen.acked.push(ack.r#ref);
                live.acks.fetch_add(1, Ordering::Relaxed);
            }
            Some(server_frame::Kind::Error(_)) => {
                seen.refused += 1;
                live.refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

pub async fn run(args: ChurnArgs) -> Result<(), String> {
    for transport in args.transport.each() {
        run_one(&args, transport).await?;
    }
    Ok(())
}

async fn run_one(args: &ChurnArgs, transport: Transport) -> Result<(), String> {
    let ws = transport == Transport::Ws;
    if ws && (!args.target.servers.is_empty() || args.target.tls || args.target.nodes > 1) {
        return Err(
            "--transport ws starts one node itself (no --server, --tls or --nodes > 1)".into(),
        );
    }
    let web_addr = format!("127.0.0.1:{}", crate::node_process::free_port()?);
    if args.sessions < 2 || args.watch == 0 {
        return Err("churn needs at least 2 sessions and --watch of at least 1".into());
    }
    if args.rate <= 0.0 || args.duration_s <= 0.0 {
        return Err("--rate and --duration-s must be positive".into());
    }
    let n = args.sessions;
    let nodes_wanted = if args.target.servers.is_empty() {
        args.target.nodes.max(1)
    } else {
        args.target.servers.len()
    };
    // Whole connections per node, at least one each.
    let per_node = args.connections.div_ceil(nodes_wanted).max(1);
    let connections = per_node * nodes_wanted;
    // A WebSocket is one TCP connection per session (both ends in this machine's fds).
    check_open_files(if ws {
        n as u64 * 2 + 64
    } else {
        connections as u64 * 2 + 64
    });
    let per_user_rate = args.rate / n as f64;
    let rate_limit = (per_user_rate * 4.0).ceil().max(20.0) as u64;
    let streams = (n.div_ceil(connections) + 16).to_string();
    let (rate_s, burst_s) = (rate_limit.to_string(), (rate_limit * 2).to_string());
    let mut defaults = vec![
        "--max-concurrent-streams",
        streams.as_str(),
        "--status-rate-per-s",
        rate_s.as_str(),
        "--status-rate-burst",
        burst_s.as_str(),
        // The bulk readers are not to be rate-limited (a bulk load, not an abuse test).
        "--get-rate-per-s",
        "1000000",
        "--get-rate-burst",
        "1000000",
    ];
    if ws {
        defaults.extend(["--web-addr", web_addr.as_str()]);
    }
    let deployment = Deployment::start(&args.target, &defaults).await?;
    let urls: Vec<String> = deployment.nodes.iter().map(|n| n.url.clone()).collect();
    let k = urls.len();
    println!(
        "churn ({}): {n} sessions x {} watched ({:?} graph), {} changes/s for {} s, {} connections; {}",
        transport.label(),
        args.watch,
        args.graph,
        args.rate,
        args.duration_s,
        if ws { n } else { connections },
        deployment.describe()
    );
    if per_user_rate > 20.0 {
        eprintln!(
            "warning: each user changes {per_user_rate:.1} times/s; a node's default limit is 20/s \
             (nodes started here get --status-rate-per-s {rate_limit})"
        );
    }
    // The memory baseline: the idle node(s) before any connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = deployment.rss_bytes();
    // Channel c goes to node c % k.
    let channels = if ws {
        Vec::new()
    } else {
        common::connect_spread(&urls, connections).await?
    };

    let mut rng = StdRng::seed_from_u64(args.seed);
    let graph = build_graph(args, &mut rng);
    let mut watcher_count = vec![0u32; n];
    for list in &graph {
        for u in list {
            watcher_count[*u as usize] += 1;
        }
    }

    // Open every session (user i on node i % k), subscribed, snapshot received.
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut opening = Vec::with_capacity(n);
    for (i, watched) in graph.iter().enumerate() {
        let to = if ws {
            Endpoint::Ws(web_addr.clone())
        } else {
            Endpoint::Grpc(channels[((i / k) % per_node) * k + i % k].clone())
        };
        let watched = watched.clone();
        let gate = gate.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            open_watcher(to, i as u32, &watched).await
        }));
    }
    let latencies = Arc::new(Histograms::new());
    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders: Vec<AnySender> = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    let mut heartbeat_every = Duration::from_secs(10);
    let mut progress = Progress::new(Duration::from_secs(2));
    for (i, task) in opening.into_iter().enumerate() {
        let (sender, receiver, interval) = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("session u{i} could not be set up: {e}"))?;
        heartbeat_every = interval;
        senders.push(sender);
        receivers.push(tokio::spawn(receive(
            i,
            receiver,
            graph[i].clone(),
            latencies.clone(),
            live.clone(),
            stop_rx.clone(),
        )));
        progress.tick(|| format!("{} sessions open", i + 1));
    }
    // Every session heartbeats once now, in case the setup took long.
    for sender in &mut senders {
        sender.heartbeat().await?;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    println!("  {n} sessions open and subscribed in {setup_s:.2} s; settling");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_setup = deployment.rss_bytes();

    // Drive.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    let mut seq = vec![0u32; n];
    // (user, ref, seq) of every change sent.
    let mut sent: Vec<(u32, u64, u32)> = Vec::new();
    let mut send_errors = 0u64;
    let mut heartbeats = 0u64;
    let bulk = BulkLoad::start(args, &urls, stop_rx.clone()).await?;
    let cpu_before = deployment.cpu_seconds();
    let bench_cpu_before = crate::node_process::cpu_seconds(std::process::id());
    let redis_cpu_before = deployment.redis_cpu_seconds();
    let redis_before = deployment.redis_calls();
    let deliveries_before = live.deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let schedule = common::Schedule::start(args.rate);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let heartbeat_rate = n as f64 / heartbeat_every.as_secs_f64();
    let statuses = [Status::Online, Status::Away, Status::Busy];
    let mut progress = Progress::new(Duration::from_secs(1));
    let mut draining_since: Option<Instant> = None;
    let mut last_deliveries = (0u64, Instant::now());
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed < args.duration_s {
            let due = schedule.due().min((args.duration_s * args.rate) as u64);
            while (sent.len() as u64 + send_errors) < due {
                let pos = sent.len() + send_errors as usize;
                let user = order[pos % n] as usize;
                seq[user] += 1;
                let status = statuses[seq[user] as usize % statuses.len()];
                let scheduled_us = schedule.scheduled_us(pos as u64);
                match senders[user]
                    .set_status(status, change_text(scheduled_us, seq[user]))
                    .await
                {
                    Ok(r) => sent.push((user as u32, r, seq[user])),
                    Err(_) => send_errors += 1,
                }
            }
        } else if draining_since.is_none() {
            draining_since = Some(Instant::now());
            println!("  driver done: {} changes sent; draining", sent.len());
        }
        let due_heartbeats = (elapsed * heartbeat_rate) as u64;
        while heartbeats < due_heartbeats {
            let _ = senders[(heartbeats % n as u64) as usize].heartbeat().await;
            heartbeats += 1;
        }
        let deliveries = live.deliveries.load(Ordering::Relaxed);
        if deliveries != last_deliveries.0 {
            last_deliveries = (deliveries, Instant::now());
        }
        if let Some(since) = draining_since {
            let answered = live.acks.load(Ordering::Relaxed) + live.refused.load(Ordering::Relaxed);
            let quiet = last_deliveries.1.elapsed() >= Duration::from_secs(1);
            if (answered >= sent.len() as u64 && quiet)
                || since.elapsed().as_secs_f64() >= args.drain_s
            {
                break;
            }
        }
        progress.tick(|| {
            format!(
                "t={elapsed:.0}s  changes {}  acks {}  deliveries {}  p99 so far {:.2} ms",
                sent.len(),
                live.acks.load(Ordering::Relaxed),
                deliveries - deliveries_before,
                latencies.merged().value_at_quantile(0.99) as f64 / 1000.0
            )
        });
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_after = deployment.cpu_seconds();
    let bench_cpu_after = crate::node_process::cpu_seconds(std::process::id());
    let redis_cpu_after = deployment.redis_cpu_seconds();
    let redis_after = deployment.redis_calls();
    let _ = stop_tx.send(true);
    let bulk = bulk.finish().await;
    let mut seen_all = Vec::with_capacity(n);
    for task in receivers {
        seen_all.push(task.await.map_err(|e| e.to_string())?);
    }
    drop(senders);

    // Which changes were applied (acknowledged), per user, in order.
    let mut owner_acks: Vec<std::collections::HashSet<u64>> = seen_all
        .iter_mut()
        .map(|s| std::mem::take(&mut s.acked).into_iter().collect())
        .collect();
    let mut applied: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (user, r, s) in &sent {
        if owner_acks[*user as usize].remove(r) {
            applied[*user as usize].push(*s);
        }
    }
    let changes_applied: u64 = applied.iter().map(|a| a.len() as u64).sum();
    let (mut expected, mut delivered) = (0u64, 0u64);
    for (w, seen) in seen_all.iter().enumerate() {
        for (pos, user) in graph[w].iter().enumerate() {
            let changes = &applied[*user as usize];
            expected += changes.len() as u64;
            delivered += changes.partition_point(|s| *s <= seen.newest[pos]) as u64;
        }
    }
    let refused: u64 = seen_all.iter().map(|s| s.refused).sum();
    let ended_early = seen_all.iter().filter(|s| s.ended_early).count() as u64;
    let deliveries = live.deliveries.load(Ordering::Relaxed) - deliveries_before;
    let histogram = latencies.merged();
    let node_cpu_s = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let redis = match (redis_before, redis_after) {
        (Some(a), Some(b)) => Some(RedisDelta::between(&a, &b)),
        _ => None,
    };
    let per_change = |v: u64| v as f64 / changes_applied.max(1) as f64;
    let rss_per_session = match (rss_before, rss_after_setup) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / n as f64),
        _ => None,
    };
    let report = Report {
        scenario: "churn",
        sessions: n as u64,
        connections: if ws { n as u64 } else { connections as u64 },
        duration_s: args.duration_s,
        rss_per_session_bytes: rss_per_session,
        latency_ms: Latency::from_histogram(&histogram),
        expected,
        delivered,
        errors: send_errors + refused + ended_early,
        throughput_per_s: deliveries as f64 / wall_s,
        extra: vec![
            ("nodes", json!(k)),
            ("redis", json!(deployment.redis_url.is_some())),
            ("graph", json!(format!("{:?}", args.graph).to_lowercase())),
            ("transport", json!(transport.label())),
            ("watch_per_session", json!(args.watch)),
            (
                "max_watchers_of_one_user",
                json!(watcher_count.iter().max().copied().unwrap_or(0)),
            ),
            ("rate_target_per_s", json!(args.rate)),
            ("changes_sent", json!(sent.len())),
            ("changes_applied", json!(changes_applied)),
            (
                "change_rate_achieved_per_s",
                json!(sent.len() as f64 / args.duration_s),
            ),
            ("lost", json!(expected - delivered)),
            (
                "loss_ratio",
                json!((expected - delivered) as f64 / expected.max(1) as f64),
            ),
            ("deliveries_received", json!(deliveries)),
            ("setup_s", json!(setup_s)),
            ("bulk", bulk),
            ("wall_s_with_drain", json!(wall_s)),
            ("send_errors", json!(send_errors)),
            ("refused_changes", json!(refused)),
            ("sessions_ended_early", json!(ended_early)),
            ("node_cpu_s", json!(node_cpu_s)),
            (
                "node_cpu_s_per_1000_deliveries",
                json!(node_cpu_s.map(|c| c * 1000.0 / deliveries.max(1) as f64)),
            ),
            (
                "redis_cpu_s_per_1000_deliveries",
                json!(match (redis_cpu_before, redis_cpu_after) {
                    (Some(a), Some(b)) => Some((b - a) * 1000.0 / deliveries.max(1) as f64),
                    _ => None,
                }),
            ),
            (
                "bench_cpu_s",
                json!(match (bench_cpu_before, bench_cpu_after) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                }),
            ),
            (
                "redis_cpu_s",
                json!(match (redis_cpu_before, redis_cpu_after) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                }),
            ),
            (
                "redis_commands_per_change",
                json!(redis.as_ref().map(|d| per_change(d.commands))),
            ),
            (
                "redis_requests_per_change",
                json!(redis.as_ref().map(|d| per_change(d.requests))),
            ),
            (
                "redis_per_change_by_command",
                json!(redis.as_ref().map(|d| d.per(changes_applied))),
            ),
        ],
    };
    report.print();
    let per_transport = |path: &Option<std::path::PathBuf>| match (path, args.transport) {
        (Some(path), Transport::Both) => Some(path.with_extension(format!(
            "{}.{}",
            transport.label(),
            path.extension().and_then(|e| e.to_str()).unwrap_or("out")
        ))),
        (path, _) => path.clone(),
    };
    report.save(per_transport(&args.output.out).as_deref())?;
    crate::plot::save(
        per_transport(&args.output.plot).as_deref(),
        &format!(
            "churn: delivery latency, {n} sessions x {} watched, {} changes/s, {k} node(s)",
            args.watch, args.rate
        ),
        &histogram,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_text_round_trips() {
        let text = change_text(1_700_000_000_000_000, 42);
        let (t, s) = parse_change(&text).unwrap();
        assert_eq!(s, 42);
        assert_eq!(t, 1_700_000_000_000_000);
        assert_eq!(parse_change(""), None);
        assert_eq!(parse_change("t=1"), None);
        assert_eq!(user_index("u17"), Some(17));
        assert_eq!(user_index("x17"), None);
    }
}
