//! `peer`: the same presence workload against Mosquitto and presence-node, in one run, with
//! the ratios (issue 14, point 1).
//!
//! Each run starts its own Mosquitto (see `mosquitto.rs`) and its own presence-node (release,
//! defaults, embedded store), one after the other (the order alternates between runs), and
//! for each server:
//! 1. RSS of the idle server before any connection (the baseline);
//! 2. `--idle-clients` (15,000) clients, one TCP connection each, each following
//!    `--follow` (10) users; held `--hold-s`; RSS per client = (RSS - baseline) / clients;
//! 3. the clients beyond `--users` (10,000) close; then for each `--rates` (1,000 and
//!    5,000 changes/s), `--duration-s` of changes, each from the changing user's own
//!    connection, round-robin over a shuffled order of the users: delivery latency from the
//!    scheduled send time, server CPU per delivery (/proc), updates coalesced away, lost.
//!
//! The node alone also gets the multiplexed memory figure: the same 15,000 sessions over
//! `--shared-connections` (15) connections.
//! Prints the table (medians of the runs, the zero-targets on the worst run) and saves it
//! as JSON and Markdown in `--out-dir` (target/bench).

mod mosquitto;
mod mqtt;
mod node;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::common::unix_us;
use crate::node_process::{check_open_files, cpu_seconds, rss_bytes, Deployment, Target};
use workload::{build_graph, change_text, Tally};

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Users that follow each other and change status.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Clients held for the idle-memory figure (the first --users of them go on to churn).
    #[arg(long, default_value_t = 15_000)]
    idle_clients: usize,
    /// Users each user follows.
    #[arg(long, default_value_t = 10)]
    follow: usize,
    /// Change rates (all users together), one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<f64>,
    /// Length of each rate phase.
    #[arg(long, default_value_t = 15.0)]
    duration_s: f64,
    /// How long the idle clients are held before the RSS is read.
    #[arg(long, default_value_t = 3.0)]
    hold_s: f64,
    /// Longest wait for the last deliveries after a phase's last change.
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// Connections of the node's multiplexed memory figure (0: skip it).
    #[arg(long, default_value_t = 15)]
    shared_connections: usize,
    /// Runs (each runs both servers; medians are quoted).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Clients being opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seed of the graph and the change order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra flags for the node (default: none, the node's defaults).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Where the table goes (peer-<time>.json and .md).
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
}

/// The clients of one server, as the driver uses them.
trait Fleet {
    /// Changes user `user`'s status (from its own client) with `text`.
    async fn change(&mut self, user: usize, status: usize, text: String) -> Result<(), String>;
    /// What held clients need now and then (the node's heartbeats); called every millisecond.
    async fn tick(&mut self);
    /// Closes the clients `from..to` cleanly.
    async fn close(&mut self, from: usize, to: usize);
}

/// Waits for `tasks` until `patience` has passed, then aborts the rest.
async fn join_by(tasks: Vec<JoinHandle<()>>, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Holds the fleet for `d`, ticking.
async fn hold(fleet: &mut impl Fleet, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        fleet.tick().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One rate phase on one server.
#[allow(clippy::too_many_arguments)]
async fn drive(
    fleet: &mut impl Fleet,
    tally: &Tally,
    args: &PeerArgs,
    phase: usize,
    rate: f64,
    seq: &mut [u32],
    order: &[usize],
    server_pid: u32,
) -> Value {
    let users = args.users;
    let from = seq.to_vec();
    let changes = (rate * args.duration_s) as u64;
    let cpu_before = cpu_seconds(server_pid);
    let bench_cpu_before = cpu_seconds(std::process::id());
    let failures_before = tally.failures.load(Ordering::Relaxed);
    let schedule = crate::common::Schedule::start(rate);
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut max_behind_ms = 0f64;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < changes {
        ticker.tick().await;
        let due = schedule.due().min(changes);
        while sent < due {
            let user = order[(sent as usize) % users];
            seq[user] += 1;
            // The change's scheduled time, not the time it got out of the driver.
            let scheduled_us = schedule.scheduled_us(sent);
            max_behind_ms = max_behind_ms.max(unix_us().saturating_sub(scheduled_us) as f64 / 1e3);
            let text = change_text(scheduled_us, seq[user], phase);
            if fleet.change(user, seq[user] as usize, text).await.is_err() {
                send_errors += 1;
            }
            sent += 1;
        }
        fleet.tick().await;
    }
    let driven_s = schedule.elapsed().as_secs_f64();
    // Drain: until no delivery for 1 s, at most --drain-s.
    let deliveries = &tally.phases[phase].deliveries;
    let drain_started = Instant::now();
    let mut last = (deliveries.load(Ordering::Relaxed), Instant::now());
    while drain_started.elapsed().as_secs_f64() < args.drain_s {
        hold(fleet, Duration::from_millis(100)).await;
        let now = deliveries.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    let cpu_s = match (cpu_before, cpu_seconds(server_pid)) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let bench_cpu_s = match (bench_cpu_before, cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let received = deliveries.load(Ordering::Relaxed);
    let (expected, covered) = tally.coverage(users, &from, seq);
    let histogram = tally.phases[phase].latencies.merged();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "rate_target_per_s": rate,
        "changes": sent,
        "rate_achieved_per_s": sent as f64 / driven_s,
        "driver_max_behind_ms": max_behind_ms,
        "send_errors": send_errors,
        "client_failures": tally.failures.load(Ordering::Relaxed) - failures_before,
        "expected": expected,
        "received": received,
        "lost": expected - covered,
        "coalesced_pct": 100.0 * covered.saturating_sub(received) as f64 / expected.max(1) as f64,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_delivery": cpu_s * 1e6 / received.max(1) as f64,
        "server_cpu_cores": cpu_s / (driven_s + drain_started.elapsed().as_secs_f64()),
        "bench_cpu_s": bench_cpu_s,
    })
}

/// Steps 1-3 of the module doc on one server whose clients `open` makes.
async fn measure<F: Fleet>(
    name: &str,
    args: &PeerArgs,
    server_pid: u32,
    open: impl std::future::Future<Output = Result<(F, Arc<Tally>), String>>,
) -> Result<Value, String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_bytes(server_pid).ok_or("cannot read the server's RSS")?;
    let opening = Instant::now();
    let (mut fleet, tally) = open.await?;
    let open_s = opening.elapsed().as_secs_f64();
    println!(
        "  {name}: {} clients open in {open_s:.1} s; holding {} s",
        args.idle_clients, args.hold_s
    );
    hold(&mut fleet, Duration::from_secs_f64(args.hold_s)).await;
    let rss = rss_bytes(server_pid).ok_or("cannot read the server's RSS")?;
    let per_client = rss.saturating_sub(baseline) as f64 / args.idle_clients as f64;
    fleet.close(args.users, args.idle_clients).await;
    hold(&mut fleet, Duration::from_secs(1)).await;
    let mut order: Vec<usize> = (0..args.users).collect();
    order.shuffle(&mut StdRng::seed_from_u64(args.seed));
    let mut seq = vec![0u32; args.users];
    let mut phases = Vec::new();
    for (i, rate) in args.rates.iter().enumerate() {
        let phase = drive(
            &mut fleet,
            &tally,
            args,
            i + 1,
            *rate,
            &mut seq,
            &order,
            server_pid,
        )
        .await;
        println!(
            "  {name} at {rate}/s: p50 {:.2} ms, p99 {:.2} ms, {:.1} us CPU per delivery, \
             {:.2} % coalesced, lost {}",
            phase["p50_ms"].as_f64().unwrap_or(f64::NAN),
            phase["p99_ms"].as_f64().unwrap_or(f64::NAN),
            phase["server_cpu_us_per_delivery"]
                .as_f64()
                .unwrap_or(f64::NAN),
            phase["coalesced_pct"].as_f64().unwrap_or(f64::NAN),
            phase["lost"]
        );
        phases.push(phase);
        hold(&mut fleet, Duration::from_secs(1)).await;
    }
    fleet.close(0, args.users).await;
    Ok(json!({
        "rss_baseline_bytes": baseline,
        "rss_with_clients_bytes": rss,
        "rss_per_idle_client_bytes": per_client,
        "open_s": open_s,
        "failures": tally.failures.load(Ordering::Relaxed),
        "phases": phases,
    }))
}

fn node_target(args: &PeerArgs) -> Target {
    Target {
        servers: Vec::new(),
        node_pids: Vec::new(),
        node_args: args.node_args.clone(),
        nodes: 1,
        redis: false,
        redis_url: None,
        tls: false,
        ca_file: None,
    }
}

async fn run_mosquitto(args: &PeerArgs, graph: &[Vec<u32>]) -> Result<Value, String> {
    let broker = mosquitto::Mosquitto::start().await?;
    let tally = Arc::new(Tally::new(graph.to_vec(), args.follow, args.rates.len()));
    let open = async {
        let fleet = mqtt::MqttFleet::open(broker.port, tally.clone(), args.concurrency).await?;
        Ok((fleet, tally.clone()))
    };
    measure("mosquitto", args, broker.pid, open).await
}

async fn run_node(args: &PeerArgs, graph: &[Vec<u32>]) -> Result<Value, String> {
    let deployment = Deployment::start(&node_target(args), &[]).await?;
    let node = &deployment.nodes[0];
    let pid = node.pid.ok_or("no node pid")?;
    let tally = Arc::new(Tally::new(graph.to_vec(), args.follow, args.rates.len()));
    let open = async {
        let fleet = node::NodeFleet::open(&node.url, None, tally.clone(), args.concurrency).await?;
        Ok((fleet, tally.clone()))
    };
    measure("presence-node", args, pid, open).await
}

/// The node's multiplexed memory figure: the idle clients' sessions over a few connections.
async fn run_node_shared(args: &PeerArgs, graph: &[Vec<u32>]) -> Result<Value, String> {
    let deployment = Deployment::start(&node_target(args), &[]).await?;
    let node = &deployment.nodes[0];
    let pid = node.pid.ok_or("no node pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_bytes(pid).ok_or("cannot read the node's RSS")?;
    let tally = Arc::new(Tally::new(graph.to_vec(), args.follow, 0));
    let mut fleet = node::NodeFleet::open(
        &node.url,
        Some(args.shared_connections),
        tally.clone(),
        args.concurrency,
    )
    .await?;
    hold(&mut fleet, Duration::from_secs_f64(args.hold_s)).await;
    let rss = rss_bytes(pid).ok_or("cannot read the node's RSS")?;
    fleet.close(0, graph.len()).await;
    let per_session = rss.saturating_sub(baseline) as f64 / graph.len() as f64;
    println!(
        "  presence-node, {} sessions over {} connections: {per_session:.0} B per session",
        graph.len(),
        args.shared_connections
    );
    Ok(json!({
        "rss_baseline_bytes": baseline,
        "rss_with_sessions_bytes": rss,
        "rss_per_idle_session_bytes": per_session,
        "failures": tally.failures.load(Ordering::Relaxed),
    }))
}

pub async fn run(args: PeerArgs) -> Result<(), String> {
    if args.users < 2 || args.idle_clients < args.users || args.follow == 0 {
        return Err("peer needs --users >= 2, --idle-clients >= --users, --follow >= 1".into());
    }
    if args.rates.iter().any(|r| *r <= 0.0) || args.duration_s <= 0.0 || args.runs == 0 {
        return Err("--rates, --duration-s and --runs must be positive".into());
    }
    check_open_files(args.idle_clients as u64 + 256);
    let graph = build_graph(args.idle_clients, args.users, args.follow, args.seed);
    let mut runs = Vec::new();
    for r in 0..args.runs {
        println!(
            "peer run {}/{}: {} users x {} followed, {} idle clients, rates {:?}/s for {} s each",
            r + 1,
            args.runs,
            args.users,
            args.follow,
            args.idle_clients,
            args.rates,
            args.duration_s
        );
        // Alternate which server goes first, so neither always gets the quieter machine.
        let (mosquitto, node) = if r % 2 == 0 {
            let m = run_mosquitto(&args, &graph).await?;
            (m, run_node(&args, &graph).await?)
        } else {
            let n = run_node(&args, &graph).await?;
            (run_mosquitto(&args, &graph).await?, n)
        };
        let shared = match args.shared_connections {
            0 => Value::Null,
            _ => run_node_shared(&args, &graph).await?,
        };
        runs.push(json!({"mosquitto": mosquitto, "node": node, "node_shared": shared}));
    }
    let table = table::render(&args, &runs);
    println!("\n{table}");
    table::save(&args, &runs, &table)
}

mod table;
