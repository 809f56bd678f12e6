//! `storm`: N sessions over C connections drop at once (their connections are killed, as a
//! lost network or a restarted load balancer would) and every session reconnects the same
//! device label at a moment drawn uniformly within T seconds, on new connections. Watcher
//! sessions on connections of their own (which stay up) watch a sample of the storm users.
//!
//! Measured: time to welcome of the reconnects (from the moment a session starts
//! reconnecting, the new connection's handshake included for the first session on it),
//! errors, and flaps: a watcher seeing a watched user go OFFLINE at any point of the storm
//! (observed until T + the offline grace + 1.5 s after the drop). The node keeps an abruptly
//! ended session for its offline grace (3 s by default) and a reconnect of the same device
//! within it replaces the lingering session invisibly, so zero flaps needs T below the grace:
//! run with `--reconnect-window-s` under `--offline-grace-ms` (which is passed to the nodes
//! started here; for a --server, give the grace it runs with).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use presence_node::client::{self, Credentials, Session};
use presence_node::proto::{server_frame, Hello, Status};
use rand::seq::index::sample;
use serde_json::json;
use tokio::sync::{watch, OnceCell, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::common::{self, CuttableProxy, Histograms, Output, Progress};
use crate::node_process::{check_open_files, Deployment, Target};
use crate::report::{Latency, Report};

#[derive(Debug, Args)]
pub struct StormArgs {
    /// Sessions that drop and reconnect (users s0..sN-1).
    #[arg(long, default_value_t = 50_000)]
    sessions: usize,
    /// Connections they share before the drop (and after it: as many new ones).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Every session reconnects at a uniformly random moment within this window after the
    /// drop. Keep it below the offline grace for zero flaps.
    #[arg(long, default_value_t = 2.5)]
    reconnect_window_s: f64,
    /// The nodes' offline grace: passed to nodes started here; for --server, say what it is.
    #[arg(long, default_value_t = 3000)]
    offline_grace_ms: u64,
    /// Watcher sessions (on their own connections, which stay up).
    #[arg(long, default_value_t = 20)]
    watchers: usize,
    /// Connections of the watchers.
    #[arg(long, default_value_t = 2)]
    watcher_connections: usize,
    /// Storm users each watcher watches (a random sample).
    #[arg(long, default_value_t = 500)]
    watch: usize,
    /// Sessions being opened at once before the drop.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    setup_errors: AtomicU64,
    reconnected: AtomicU64,
    reconnect_errors: AtomicU64,
    /// Sessions whose stream ended on its own (before the drop, or after the reconnect).
    lost: AtomicU64,
    /// Microseconds after the drop of the last welcome.
    last_welcome_us: AtomicU64,
    flaps: AtomicU64,
    /// Milliseconds after the drop of the first and last flap (+1, 0: none).
    first_flap_ms: AtomicU64,
    last_flap_ms: AtomicU64,
}

/// What the storm tasks share.
struct Shared {
    counters: Counters,
    welcomes: Histograms,
    /// Set (to the drop instant) once the connections were killed.
    cut: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
    /// Stops the watchers (before the storm sessions, whose ends they must not see).
    stop_watchers: watch::Receiver<bool>,
    /// The new connections, made by the first session that needs each.
    new_channels: Vec<OnceCell<Channel>>,
    new_urls: Vec<String>,
    window: Duration,
    /// Set just before the connections are killed: streams ending now are the drop.
    cutting: AtomicBool,
    first_error: Mutex<Option<String>>,
}

fn hello() -> Hello {
    Hello {
        device: "storm".into(),
        status: Some(Status::Online as i32),
        status_text: String::new(),
    }
}

fn note_error(shared: &Shared, error: String) {
    let mut first = shared.first_error.lock().unwrap_or_else(|e| e.into_inner());
    if first.is_none() {
        *first = Some(error);
    }
}

/// One storm session: open through the proxy, hold until the drop, reconnect directly at a
/// random moment of the window, hold until the end.
async fn storm_session(i: usize, channel: Channel, gate: Arc<Semaphore>, shared: Arc<Shared>) {
    let user = Credentials::User(format!("s{i}"));
    let permit = gate.acquire_owned().await.expect("semaphore");
    let (mut session, welcome) = match Session::open(channel, &user, hello()).await {
        Ok(s) => s,
        Err(e) => {
            shared.counters.setup_errors.fetch_add(1, Ordering::Relaxed);
            note_error(&shared, format!("setup: {e}"));
            return;
        }
    };
    drop(permit);
    shared.counters.opened.fetch_add(1, Ordering::Relaxed);
    let interval = common::heartbeat_interval(&welcome);
    let mut cut = shared.cut.clone();
    let mut next = Instant::now() + interval.mul_f64(rand::random_range(0.0..1.0));
    let dropped_at = loop {
        if let Some(at) = *cut.borrow() {
            break at;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let _ = session.heartbeat().await;
                next += interval;
            }
            frame = session.recv() => {
                if !matches!(frame, Ok(Some(_))) {
                    if !shared.cutting.load(Ordering::SeqCst) {
                        shared.counters.lost.fetch_add(1, Ordering::Relaxed);
                        note_error(&shared, format!("s{i} ended before the drop: {frame:?}"));
                    }
                    // Wait for the drop (the stream is gone either way).
                    let _ = cut.wait_for(Option::is_some).await;
                }
            }
            _ = cut.changed() => {}
        }
    };
    // The connection is dead already: nothing of this reaches the node.
    drop(session);
    let at = dropped_at + shared.window.mul_f64(rand::random_range(0.0..1.0));
    tokio::time::sleep_until(at).await;
    // Timed from the scheduled reconnect moment, not from when this task got to run.
    let slot = i % shared.new_channels.len();
    let channel = shared.new_channels[slot]
        .get_or_try_init(|| crate::common::connect(&shared.new_urls[slot]))
        .await;
    let opened = match channel {
        Ok(channel) => Session::open(channel.clone(), &user, hello()).await,
        Err(e) => Err(e),
    };
    let (session, welcome) = match opened {
        Ok(s) => s,
        Err(e) => {
            shared
                .counters
                .reconnect_errors
                .fetch_add(1, Ordering::Relaxed);
            note_error(&shared, format!("reconnect: {e}"));
            return;
        }
    };
    shared.welcomes.record(i, at.elapsed().as_micros() as u64);
    shared.counters.reconnected.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .last_welcome_us
        .fetch_max(dropped_at.elapsed().as_micros() as u64, Ordering::Relaxed);
    if !common::hold(
        session,
        common::heartbeat_interval(&welcome),
        shared.stop.clone(),
    )
    .await
    {
        shared.counters.lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one watcher saw.
#[derive(Default)]
struct Watched {
    not_online_at_start: u64,
    updates_during_storm: u64,
    flapped: HashSet<String>,
    ended_early: bool,
}

/// A watcher: subscribes to `users`, then counts OFFLINE updates once the drop happened.
async fn watcher(
    j: usize,
    channel: Channel,
    users: Vec<String>,
    shared: Arc<Shared>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Watched {
    let mut seen = Watched::default();
    let hello = Hello {
        device: "watch".into(),
        status: None,
        status_text: String::new(),
    };
    let opened = Session::open(channel, &Credentials::User(format!("w{j}")), hello).await;
    let (mut session, welcome) = match opened {
        Ok(s) => s,
        Err(e) => {
            note_error(&shared, format!("watcher: {e}"));
            seen.ended_early = true;
            return seen;
        }
    };
    let mut waiting = Vec::new();
    for chunk in users.chunks(1000) {
        match session.subscribe(chunk.to_vec()).await {
            Ok(r) => waiting.push(r),
            Err(_) => {
                seen.ended_early = true;
                return seen;
            }
        }
    }
    let interval = common::heartbeat_interval(&welcome);
    let mut next = Instant::now() + interval.mul_f64(rand::random_range(0.0..1.0));
    let mut stop = shared.stop_watchers.clone();
    let mut ready = Some(ready);
    loop {
        if *stop.borrow() {
            return seen;
        }
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let _ = session.heartbeat().await;
                next += interval;
                continue;
            }
            _ = stop.changed() => continue,
            frame = session.recv() => frame,
        };
        let kind = match frame {
            Ok(Some(frame)) => frame.kind,
            _ => {
                seen.ended_early = !*stop.borrow();
                return seen;
            }
        };
        match kind {
            Some(server_frame::Kind::Snapshot(snapshot)) => {
                seen.not_online_at_start += snapshot
                    .presences
                    .iter()
                    .filter(|p| p.status != Status::Online as i32)
                    .count() as u64;
                waiting.retain(|r| *r != snapshot.r#ref);
                if waiting.is_empty() {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
            }
            Some(server_frame::Kind::Update(update)) if shared.cut.borrow().is_some() => {
                for p in update.presences {
                    seen.updates_during_storm += 1;
                    if p.status == Status::Offline as i32 {
                        shared.counters.flaps.fetch_add(1, Ordering::Relaxed);
                        if let Some(at) = *shared.cut.borrow() {
                            let ms = at.elapsed().as_millis() as u64 + 1;
                            let c = &shared.counters;
                            let _ = c.first_flap_ms.compare_exchange(
                                0,
                                ms,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                            c.last_flap_ms.fetch_max(ms, Ordering::Relaxed);
                        }
                        seen.flapped.insert(p.user_id);
                    }
                }
            }
            _ => {}
        }
    }
}

pub async fn run(args: StormArgs) -> Result<(), String> {
    if args.sessions == 0 || args.connections == 0 || args.watcher_connections == 0 {
        return Err("storm needs sessions, connections and watcher connections".into());
    }
    let grace_s = args.offline_grace_ms as f64 / 1000.0;
    if args.reconnect_window_s >= grace_s {
        eprintln!(
            "warning: the reconnect window ({} s) is not below the offline grace ({grace_s} s): \
             sessions reconnecting after the grace flap OFFLINE/ONLINE by design",
            args.reconnect_window_s
        );
    }
    check_open_files(args.connections as u64 * 4 + args.watcher_connections as u64 + 64);
    let streams = (args.sessions.div_ceil(args.connections) + 16).to_string();
    let grace = args.offline_grace_ms.to_string();
    let deployment = Deployment::start(
        &args.target,
        &[
            "--max-concurrent-streams",
            &streams,
            "--offline-grace-ms",
            &grace,
        ],
    )
    .await?;
    let urls: Vec<String> = deployment.nodes.iter().map(|n| n.url.clone()).collect();
    println!(
        "storm: {} sessions over {} connections drop and reconnect within {} s (grace {grace_s} s); \
         {} watchers x {} watched; {}",
        args.sessions,
        args.connections,
        args.reconnect_window_s,
        args.watchers,
        args.watch,
        deployment.describe()
    );
    let mut proxies = Vec::new();
    for url in &urls {
        proxies.push(CuttableProxy::start(url).await?);
    }
    let proxy_urls: Vec<String> = proxies.iter().map(|p| p.url.clone()).collect();
    let storm_channels = common::connect_spread(&proxy_urls, args.connections).await?;
    let watcher_channels = common::connect_spread(&urls, args.watcher_connections).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = deployment.rss_bytes();

    let (cut_tx, cut_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_watchers_tx, stop_watchers_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        welcomes: Histograms::new(),
        cut: cut_rx,
        stop: stop_rx,
        stop_watchers: stop_watchers_rx,
        new_channels: (0..args.connections).map(|_| OnceCell::new()).collect(),
        new_urls: (0..args.connections)
            .map(|c| urls[c % urls.len()].clone())
            .collect(),
        window: Duration::from_secs_f64(args.reconnect_window_s.max(0.0)),
        cutting: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });

    // Phase 1: every storm session open (through the proxies).
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let channel = storm_channels[i % args.connections].clone();
        tasks.push(tokio::spawn(storm_session(
            i,
            channel,
            gate.clone(),
            shared.clone(),
        )));
    }
    let mut progress = Progress::new(Duration::from_secs(2));
    let c = &shared.counters;
    loop {
        let done = c.opened.load(Ordering::Relaxed) + c.setup_errors.load(Ordering::Relaxed);
        if done >= args.sessions as u64 {
            break;
        }
        progress.tick(|| format!("{done} sessions open"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    println!(
        "  {} sessions open in {setup_s:.2} s ({} errors); watchers subscribing",
        c.opened.load(Ordering::Relaxed),
        c.setup_errors.load(Ordering::Relaxed)
    );

    // Watchers, on their own connections, each on a random sample of the storm users.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.watchers.max(1));
    let mut watcher_tasks = Vec::new();
    let sample_size = args.watch.min(args.sessions);
    for j in 0..args.watchers {
        let users: Vec<String> = sample(&mut rand::rng(), args.sessions, sample_size)
            .into_iter()
            .map(|u| format!("s{u}"))
            .collect();
        watcher_tasks.push(tokio::spawn(watcher(
            j,
            watcher_channels[j % watcher_channels.len()].clone(),
            users,
            shared.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = 0;
    while ready < args.watchers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_held = deployment.rss_bytes();

    // Phase 2: the drop.
    let cpu_before = deployment.cpu_seconds();
    let redis_cpu_before = deployment.redis_cpu_seconds();
    shared.cutting.store(true, Ordering::SeqCst);
    let dropped_at = Instant::now();
    for proxy in &proxies {
        proxy.cut().await;
    }
    let _ = cut_tx.send(Some(dropped_at));
    println!(
        "  dropped {} sessions; reconnecting within {} s",
        c.opened.load(Ordering::Relaxed),
        args.reconnect_window_s
    );
    let opened = c.opened.load(Ordering::Relaxed);
    let reconnect_deadline = dropped_at
        + shared.window
        + client::CONNECT_TIMEOUT
        + client::WELCOME_TIMEOUT
        + Duration::from_secs(1);
    let mut progress = Progress::new(Duration::from_secs(1));
    loop {
        let done =
            c.reconnected.load(Ordering::Relaxed) + c.reconnect_errors.load(Ordering::Relaxed);
        if done >= opened || Instant::now() > reconnect_deadline {
            break;
        }
        progress.tick(|| {
            format!(
                "t={:.1}s  reconnected {}  errors {}  flaps {}",
                dropped_at.elapsed().as_secs_f64(),
                c.reconnected.load(Ordering::Relaxed),
                c.reconnect_errors.load(Ordering::Relaxed),
                c.flaps.load(Ordering::Relaxed)
            )
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnect_s = dropped_at.elapsed().as_secs_f64();
    // Watch for OFFLINE until every lingering session's grace is over.
    let observe_until = dropped_at
        + Duration::from_secs_f64(reconnect_s.max(args.reconnect_window_s) + grace_s + 1.5);
    println!(
        "  reconnects done after {reconnect_s:.2} s; watching for flaps for {:.1} s more",
        (observe_until - Instant::now()).as_secs_f64()
    );
    tokio::time::sleep_until(observe_until).await;
    let storm_s = dropped_at.elapsed().as_secs_f64();
    let cpu_after = deployment.cpu_seconds();
    let redis_cpu_after = deployment.redis_cpu_seconds();
    let rss_after = deployment.rss_bytes();
    let _ = stop_watchers_tx.send(true);
    let mut watched = Vec::new();
    for task in watcher_tasks {
        watched.push(task.await.map_err(|e| e.to_string())?);
    }
    // What the node says now of the users a watcher saw go OFFLINE (every storm session
    // reconnected or failed by now): online means the OFFLINE was a flap, offline a lost
    // session.
    let mut flapped_ids: Vec<String> = watched
        .iter()
        .flat_map(|w| w.flapped.iter().cloned())
        .collect();
    flapped_ids.sort();
    flapped_ids.dedup();
    flapped_ids.truncate(1000);
    let flapped_now_online = if flapped_ids.is_empty() {
        Some(0)
    } else {
        match client::get_presence(
            watcher_channels[0].clone(),
            &Credentials::User("storm-check".into()),
            flapped_ids.clone(),
        )
        .await
        {
            Ok(presences) => Some(
                presences
                    .iter()
                    .filter(|p| p.status == Status::Online as i32)
                    .count(),
            ),
            Err(_) => None,
        }
    };
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let histogram = shared.welcomes.merged();
    let reconnected = c.reconnected.load(Ordering::Relaxed);
    let reconnect_errors = c.reconnect_errors.load(Ordering::Relaxed);
    let setup_errors = c.setup_errors.load(Ordering::Relaxed);
    let lost = c.lost.load(Ordering::Relaxed);
    let flapped: HashSet<&String> = watched.iter().flat_map(|w| w.flapped.iter()).collect();
    let last_welcome_s = c.last_welcome_us.load(Ordering::Relaxed) as f64 / 1e6;
    let report = Report {
        scenario: "storm",
        sessions: args.sessions as u64,
        connections: args.connections as u64,
        duration_s: last_welcome_s,
        rss_per_session_bytes: match (rss_before, rss_held) {
            (Some(a), Some(b)) if opened > 0 => Some(b.saturating_sub(a) as f64 / opened as f64),
            _ => None,
        },
        latency_ms: Latency::from_histogram(&histogram),
        expected: opened,
        delivered: reconnected,
        errors: reconnect_errors + setup_errors + lost,
        throughput_per_s: reconnected as f64 / last_welcome_s.max(1e-9),
        extra: vec![
            ("nodes", json!(urls.len())),
            ("redis", json!(deployment.redis_url.is_some())),
            ("reconnect_window_s", json!(args.reconnect_window_s)),
            ("offline_grace_ms", json!(args.offline_grace_ms)),
            (
                "time_to_welcome_p50_ms",
                json!(histogram.value_at_quantile(0.5) as f64 / 1000.0),
            ),
            (
                "time_to_welcome_p99_ms",
                json!(histogram.value_at_quantile(0.99) as f64 / 1000.0),
            ),
            ("flaps", json!(c.flaps.load(Ordering::Relaxed))),
            ("flapped_users", json!(flapped.len())),
            ("flapped_users_online_at_end", json!(flapped_now_online)),
            (
                "flapped_user_examples",
                json!(flapped_ids.iter().take(5).collect::<Vec<_>>()),
            ),
            (
                "first_flap_ms_after_drop",
                json!(c.first_flap_ms.load(Ordering::Relaxed).checked_sub(1)),
            ),
            (
                "last_flap_ms_after_drop",
                json!(c.last_flap_ms.load(Ordering::Relaxed).checked_sub(1)),
            ),
            ("watchers", json!(args.watchers)),
            ("watchers_ready", json!(ready)),
            ("watched_per_watcher", json!(sample_size)),
            (
                "watched_not_online_before_drop",
                json!(watched.iter().map(|w| w.not_online_at_start).sum::<u64>()),
            ),
            (
                "watcher_updates_during_storm",
                json!(watched.iter().map(|w| w.updates_during_storm).sum::<u64>()),
            ),
            (
                "watchers_ended_early",
                json!(watched.iter().filter(|w| w.ended_early).count()),
            ),
            ("setup_s", json!(setup_s)),
            ("setup_errors", json!(setup_errors)),
            ("reconnect_errors", json!(reconnect_errors)),
            ("sessions_lost", json!(lost)),
            ("observed_s_after_drop", json!(storm_s)),
            (
                "node_cpu_s_during_storm",
                json!(match (cpu_before, cpu_after) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                }),
            ),
            (
                "redis_cpu_s_during_storm",
                json!(match (redis_cpu_before, redis_cpu_after) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                }),
            ),
            ("rss_after_storm_bytes", json!(rss_after)),
            (
                "first_error",
                json!(shared
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()),
            ),
        ],
    };
    report.print();
    report.save(args.output.out.as_deref())?;
    crate::plot::save(
        args.output.plot.as_deref(),
        &format!(
            "storm: time to welcome, {} sessions reconnecting within {} s",
            args.sessions, args.reconnect_window_s
        ),
        &histogram,
    )
}
