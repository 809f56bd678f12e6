//! `hot`: one user watched by very many sessions changes status often (a celebrity, a
//! company-wide account), while other users go on with their own changes.
//!
//! `--watchers` (100,000) sessions, multiplexed over `--connections`, watch the hot user
//! `hot`, who changes `--hot-rate` (10) times a second from its own connection. Meanwhile
//! `--others` users (own sessions over `--other-connections`) each watching `--other-watch`
//! of the others change at `--other-rate`/s in total. Two phases of `--duration-s`: the
//! others alone, then the others with the hot user. Measured: per hot change, the time from
//! its scheduled send until the *last* watcher has it (saw it or a later change); every hot
//! delivery's latency; the others' delivery latency in both phases; node CPU per delivery.
//! Every change text is `t=<scheduled unix us>;s=<seq>` (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use presence_node::client::{Credentials, Session};
use presence_node::proto::{server_frame, Hello, Status};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::common::{self, Histograms, Output, Progress};
use crate::node_process::{check_open_files, Deployment, Target};
use crate::report::{Latency, Report};

#[derive(Debug, Args)]
pub struct HotArgs {
    /// Sessions watching the hot user.
    #[arg(long, default_value_t = 100_000)]
    watchers: usize,
    /// Connections the watchers are multiplexed over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// The hot user's changes per second.
    #[arg(long, default_value_t = 10.0)]
    hot_rate: f64,
    /// Other users (one session each), changing meanwhile.
    #[arg(long, default_value_t = 2_000)]
    others: usize,
    /// Users each other user watches (among the others).
    #[arg(long, default_value_t = 10)]
    other_watch: usize,
    /// The other users' changes per second (all together).
    #[arg(long, default_value_t = 200.0)]
    other_rate: f64,
    /// Connections of the other users.
    #[arg(long, default_value_t = 20)]
    other_connections: usize,
    /// Length of each phase (others alone; others and the hot user).
    #[arg(long, default_value_t = 20.0)]
    duration_s: f64,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
}

const HOT: &str = "hot";

fn parse(text: &str) -> Option<(u64, u32)> {
    let (t, s) = text.strip_prefix("t=")?.split_once(";s=")?;
    Some((t.parse().ok()?, s.parse().ok()?))
}

/// What the receivers record.
struct Shared {
    /// Per hot change (by seq): when the last watcher got it (unix us), and its schedule.
    last_arrival_us: Vec<AtomicU64>,
    hot_latencies: Histograms,
    hot_deliveries: AtomicU64,
    /// The others' latencies: [alone, with the hot user].
    other_latencies: [Histograms; 2],
    other_deliveries: AtomicU64,
    /// 0 or 1: which of `other_latencies` the others' deliveries go to.
    phase: AtomicU64,
    failures: AtomicU64,
    /// Watchers whose subscription is in place / that could not open.
    opened: AtomicU64,
    open_errors: AtomicU64,
}

/// A held session: heartbeats and records what it receives until `stop`.
async fn hold(
    index: usize,
    mut session: Session,
    interval: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random_range(0.0..1.0));
    let mut newest_hot = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                if session.heartbeat().await.is_err() {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                next += interval;
            }
            frame = session.recv() => {
                let Ok(Some(frame)) = frame else {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let Some(server_frame::Kind::Update(update)) = frame.kind else { continue };
                let now = common::unix_us();
                for p in &update.presences {
                    let Some((scheduled, seq)) = parse(&p.status_text) else { continue };
                    if p.user_id == HOT {
                        shared.hot_latencies.record(index, now.saturating_sub(scheduled));
                        shared.hot_deliveries.fetch_add(1, Ordering::Relaxed);
                        // Seeing change `seq` covers the earlier ones it superseded.
                        for s in newest_hot + 1..=seq {
                            if let Some(slot) = shared.last_arrival_us.get(s as usize) {
                                slot.fetch_max(now, Ordering::Relaxed);
                            }
                        }
                        newest_hot = newest_hot.max(seq);
                    } else {
                        let phase = shared.phase.load(Ordering::Relaxed) as usize;
                        shared.other_latencies[phase.min(1)]
                            .record(index, now.saturating_sub(scheduled));
                        shared.other_deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn open(
    channel: tonic::transport::Channel,
    user: String,
    watch: Vec<String>,
) -> Result<(Session, Duration), String> {
    let hello = Hello {
        device: "bench".into(),
        status: Some(Status::Online as i32),
        status_text: String::new(),
    };
    let setup = async {
        let (mut session, welcome) = Session::open(channel, &Credentials::User(user), hello)
            .await
            .map_err(|e| e.to_string())?;
        if !watch.is_empty() {
            let r = session.subscribe(watch).await.map_err(|e| e.to_string())?;
            loop {
                match session.recv().await {
                    Ok(Some(f)) => match f.kind {
                        Some(server_frame::Kind::Snapshot(s)) if s.r#ref == r => break,
                        Some(server_frame::Kind::Error(e)) => return Err(e.message),
                        _ => {}
                    },
                    Ok(None) => return Err("ended before its snapshot".into()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok((session, common::heartbeat_interval(&welcome)))
    };
    tokio::time::timeout(Duration::from_secs(60), setup)
        .await
        .map_err(|_| "no snapshot within 60 s".to_string())?
}

pub async fn run(args: HotArgs) -> Result<(), String> {
    if args.watchers == 0 || args.others < 2 || args.hot_rate <= 0.0 || args.duration_s <= 0.0 {
        return Err("hot needs --watchers >= 1, --others >= 2, positive rates and duration".into());
    }
    if args.target.nodes > 1 || args.target.servers.len() > 1 {
        return Err("hot drives one node".into());
    }
    check_open_files((args.connections + args.other_connections) as u64 + 64);
    let streams = (args.watchers.div_ceil(args.connections.max(1)) + 16).max(1024);
    let hot_limit = (args.hot_rate * 2.0).ceil().max(20.0) as u64;
    let (streams, limit, burst) = (
        streams.to_string(),
        hot_limit.to_string(),
        (hot_limit * 2).to_string(),
    );
    let deployment = Deployment::start(
        &args.target,
        &[
            "--max-concurrent-streams",
            &streams,
            // The hot user changes faster than a user may by default.
            "--status-rate-per-s",
            &limit,
            "--status-rate-burst",
            &burst,
            "--user-change-rate-per-s",
            &limit,
            "--user-change-rate-burst",
            &burst,
        ],
    )
    .await?;
    let node = &deployment.nodes[0];
    let changes = (args.hot_rate * args.duration_s).ceil() as usize;
    let shared = Arc::new(Shared {
        last_arrival_us: (0..=changes).map(|_| AtomicU64::new(0)).collect(),
        hot_latencies: Histograms::new(),
        hot_deliveries: AtomicU64::new(0),
        other_latencies: [Histograms::new(), Histograms::new()],
        other_deliveries: AtomicU64::new(0),
        phase: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        opened: AtomicU64::new(0),
        open_errors: AtomicU64::new(0),
    });
    println!(
        "hot: {} watchers of one user over {} connections, {} changes/s; {} other users x {} \
         watched at {}/s; {}",
        args.watchers,
        args.connections,
        args.hot_rate,
        args.others,
        args.other_watch,
        args.other_rate,
        deployment.describe()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(256));
    let setup_started = Instant::now();

    // The watchers of the hot user.
    let channels =
        common::connect_spread(std::slice::from_ref(&node.url), args.connections).await?;
    let mut watcher_tasks = Vec::new();
    let mut progress = Progress::new(Duration::from_secs(2));
    for i in 0..args.watchers {
        let channel = channels[i % channels.len()].clone();
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        watcher_tasks.push(tokio::spawn(async move {
            let opened = open(channel, format!("w{i}"), vec![HOT.to_string()]).await;
            drop(permit);
            match opened {
                Ok((session, interval)) => {
                    shared.opened.fetch_add(1, Ordering::Relaxed);
                    hold(i, session, interval, shared, stop).await;
                    Ok(())
                }
                Err(e) => {
                    shared.open_errors.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        }));
        progress.tick(|| format!("{} watchers opening", i + 1));
    }
    let open_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done =
            shared.opened.load(Ordering::Relaxed) + shared.open_errors.load(Ordering::Relaxed);
        if done >= args.watchers as u64 {
            break;
        }
        if Instant::now() > open_deadline {
            return Err(format!(
                "only {done} of {} watchers opened in 300 s",
                args.watchers
            ));
        }
        progress.tick(|| format!("{done} watchers open"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_errors = shared.open_errors.load(Ordering::Relaxed);
    if open_errors > 0 {
        return Err(format!("{open_errors} watchers could not open"));
    }
    // Then the hot user on its own connection, and the others (their heartbeats go through
    // the driver, which starts right after: opened last, none can expire in between).
    let hot_channel = common::connect(&node.url)
        .await
        .map_err(|e| e.to_string())?;
    let (hot_session, _) = open(hot_channel, HOT.into(), Vec::new()).await?;
    let (mut hot_sender, mut hot_receiver) = hot_session.split();
    let hot_drain =
        tokio::spawn(async move { while let Ok(Some(_)) = hot_receiver.recv().await {} });

    // The others, each watching `other_watch` of the others; their senders are kept.
    let other_channels = common::connect_spread(
        std::slice::from_ref(&node.url),
        args.other_connections.max(1),
    )
    .await?;
    let mut opening = Vec::new();
    for i in 0..args.others {
        let mut watch: Vec<String> = Vec::new();
        while watch.len() < args.other_watch.min(args.others - 1) {
            let u = rand::rng().random_range(0..args.others);
            let id = format!("o{u}");
            if u != i && !watch.contains(&id) {
                watch.push(id);
            }
        }
        let channel = other_channels[i % other_channels.len()].clone();
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        opening.push(tokio::spawn(async move {
            let opened = open(channel, format!("o{i}"), watch).await;
            drop(permit);
            opened
        }));
    }
    let mut other_senders = Vec::new();
    let mut held = Vec::new();
    for (i, task) in opening.into_iter().enumerate() {
        let (session, _) = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("other user o{i}: {e}"))?;
        let (sender, receiver) = session.split();
        other_senders.push(sender);
        // The other users' heartbeats go through the driver below; their receivers here.
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        held.push(tokio::spawn(async move {
            let mut receiver = receiver;
            loop {
                let frame = tokio::select! {
                    f = receiver.recv() => f,
                    _ = stop.changed() => return,
                };
                let Ok(Some(frame)) = frame else {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if let Some(server_frame::Kind::Update(u)) = frame.kind {
                    let now = common::unix_us();
                    for p in &u.presences {
                        if let Some((scheduled, _)) = parse(&p.status_text) {
                            let phase = shared.phase.load(Ordering::Relaxed) as usize;
                            shared.other_latencies[phase.min(1)]
                                .record(i, now.saturating_sub(scheduled));
                            shared.other_deliveries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }

    let setup_s = setup_started.elapsed().as_secs_f64();
    println!(
        "  {} watchers and {} others open in {setup_s:.1} s",
        args.watchers, args.others
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 0: the others alone; phase 1: with the hot user.
    let heartbeat_every = Duration::from_secs(10);
    let mut other_seq = 0u64;
    let mut beats = 0u64;
    let driver_started = Instant::now();
    let mut results = Vec::new();
    let mut order: Vec<usize> = (0..args.others).collect();
    order.shuffle(&mut rand::rng());
    for phase in 0..2u64 {
        shared.phase.store(phase, Ordering::Relaxed);
        let cpu_before = node.cpu_seconds();
        let (hot_before, other_before) = (
            shared.hot_deliveries.load(Ordering::Relaxed),
            shared.other_deliveries.load(Ordering::Relaxed),
        );
        let other_schedule = common::Schedule::start(args.other_rate);
        let hot_schedule = common::Schedule::start(args.hot_rate);
        let mut hot_sent = 0usize;
        let mut other_sent = 0u64;
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while other_schedule.elapsed().as_secs_f64() < args.duration_s {
            ticker.tick().await;
            let due = other_schedule.due();
            while other_sent < due {
                let user = order[(other_seq as usize) % args.others];
                other_seq += 1;
                let scheduled = other_schedule.scheduled_us(other_sent);
                let _ = other_senders[user]
                    .set_status(Status::Away, format!("t={scheduled};s={other_seq}"))
                    .await;
                other_sent += 1;
            }
            if phase == 1 {
                let due = (hot_schedule.due() as usize).min(changes);
                while hot_sent < due {
                    let seq = hot_sent + 1;
                    let scheduled = hot_schedule.scheduled_us(hot_sent as u64);
                    shared.last_arrival_us[seq].store(0, Ordering::Relaxed);
                    let status = if seq % 2 == 0 {
                        Status::Away
                    } else {
                        Status::Busy
                    };
                    let _ = hot_sender
                        .set_status(status, format!("t={scheduled};s={seq}"))
                        .await;
                    hot_sent += 1;
                }
            }
            let due = (driver_started.elapsed().as_secs_f64() * args.others as f64
                / heartbeat_every.as_secs_f64()) as u64;
            while beats < due {
                let _ = other_senders[(beats % args.others as u64) as usize]
                    .heartbeat()
                    .await;
                if beats % args.others as u64 == 0 {
                    let _ = hot_sender.heartbeat().await;
                }
                beats += 1;
            }
        }
        // Settle: deliveries quiet for 1 s, at most 10 s.
        let settle = Instant::now();
        let mut last = (0u64, Instant::now());
        while settle.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let d = shared.hot_deliveries.load(Ordering::Relaxed)
                + shared.other_deliveries.load(Ordering::Relaxed);
            if d != last.0 {
                last = (d, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        let cpu = match (cpu_before, node.cpu_seconds()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let hot_d = shared.hot_deliveries.load(Ordering::Relaxed) - hot_before;
        let other_d = shared.other_deliveries.load(Ordering::Relaxed) - other_before;
        let others = Latency::from_histogram(&shared.other_latencies[phase as usize].merged());
        let mut phase_json = json!({
            "other_changes": other_sent,
            "other_deliveries": other_d,
            "other_p50_ms": others.p50,
            "other_p99_ms": others.p99,
            "other_max_ms": others.max,
            "node_cpu_s": cpu,
            "node_cpu_us_per_delivery": cpu.map(|c| c * 1e6 / (hot_d + other_d).max(1) as f64),
        });
        if phase == 1 {
            let mut last_watcher = common::new_histogram();
            let mut missing = 0u64;
            for seq in 1..=hot_sent {
                let arrival = shared.last_arrival_us[seq].load(Ordering::Relaxed);
                let scheduled = hot_schedule.scheduled_us((seq - 1) as u64);
                if arrival == 0 {
                    missing += 1;
                } else {
                    let _ = last_watcher.record(arrival.saturating_sub(scheduled).max(1));
                }
            }
            let every = Latency::from_histogram(&shared.hot_latencies.merged());
            let lw = Latency::from_histogram(&last_watcher);
            phase_json["hot_changes"] = json!(hot_sent);
            phase_json["hot_deliveries"] = json!(hot_d);
            phase_json["hot_deliveries_expected"] = json!(hot_sent * args.watchers);
            phase_json["hot_coalesced_pct"] =
                json!(100.0 * (1.0 - hot_d as f64 / (hot_sent * args.watchers).max(1) as f64));
            phase_json["hot_changes_never_reaching_all"] = json!(missing);
            phase_json["last_watcher_p50_ms"] = json!(lw.p50);
            phase_json["last_watcher_p99_ms"] = json!(lw.p99);
            phase_json["last_watcher_max_ms"] = json!(lw.max);
            phase_json["hot_delivery_p50_ms"] = json!(every.p50);
            phase_json["hot_delivery_p99_ms"] = json!(every.p99);
            println!(
                "  with the hot user: last watcher p50 {:.1} ms, p99 {:.1} ms; every delivery \
                 p50 {:.1} ms, p99 {:.1} ms; others p50 {:.2} ms, p99 {:.2} ms",
                lw.p50, lw.p99, every.p50, every.p99, others.p50, others.p99
            );
        } else {
            println!(
                "  others alone: p50 {:.2} ms, p99 {:.2} ms",
                others.p50, others.p99
            );
        }
        results.push(phase_json);
    }
    let _ = stop_tx.send(true);
    let mut errors = shared.failures.load(Ordering::Relaxed);
    for task in watcher_tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    for task in held {
        let _ = task.await;
    }
    hot_drain.abort();
    let hot = &results[1];
    let report = Report {
        scenario: "hot",
        sessions: (args.watchers + args.others + 1) as u64,
        connections: (args.connections + args.other_connections + 1) as u64,
        duration_s: args.duration_s,
        rss_per_session_bytes: None,
        latency_ms: Latency {
            p50: hot["last_watcher_p50_ms"].as_f64().unwrap_or(0.0),
            p99: hot["last_watcher_p99_ms"].as_f64().unwrap_or(0.0),
            p999: hot["last_watcher_max_ms"].as_f64().unwrap_or(0.0),
            max: hot["last_watcher_max_ms"].as_f64().unwrap_or(0.0),
        },
        expected: hot["hot_deliveries_expected"].as_u64().unwrap_or(0),
        delivered: hot["hot_deliveries"].as_u64().unwrap_or(0),
        errors,
        throughput_per_s: 0.0,
        extra: vec![
            ("setup_s", json!(setup_s)),
            ("others_alone", results[0].clone()),
            ("with_hot_user", results[1].clone()),
        ],
    };
    report.print();
    report.save(args.output.out.as_deref())?;
    crate::plot::save(
        args.output.plot.as_deref(),
        &format!(
            "hot: delivery latency to {} watchers of one user, {} changes/s",
            args.watchers, args.hot_rate
        ),
        &shared.hot_latencies.merged(),
    )
}
