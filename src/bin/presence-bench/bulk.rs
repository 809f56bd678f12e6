//! `bulk`: `GetPresence` of `--ids` users (1,000 by default: the per-request limit) from
//! `--concurrency` callers at once, for `--duration-s` seconds or `--requests` requests,
//! whichever comes first. Every id exists (each user was online once, so the store has its
//! record: a bulk read of ids nobody ever used would skip the store's work for them);
//! `--online` of them are held online by sessions during the run, the others are OFFLINE
//! records. Latency percentiles, throughput and, on Redis, commands per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use presence_node::client::{self, Credentials, Session};
use presence_node::proto::{Hello, Status};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::common::{self, Histograms, Output, Progress};
use crate::node_process::{Deployment, RedisDelta, Target};
use crate::report::{Latency, Report};

#[derive(Debug, Args)]
pub struct BulkArgs {
    /// Users per request.
    #[arg(long, default_value_t = 1000)]
    ids: usize,
    /// How many of them are online (held by sessions) during the run.
    #[arg(long, default_value_t = 250)]
    online: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Connections the callers share (round-robin over the nodes).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Run for this long...
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// ... or until this many requests were answered.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
}

pub async fn run(args: BulkArgs) -> Result<(), String> {
    if args.ids == 0 || args.concurrency == 0 || args.connections == 0 {
        return Err("bulk needs --ids, --concurrency and --connections of at least 1".into());
    }
    let online = args.online.min(args.ids);
    // The per-user GetPresence limit is lifted: this measures the store, not the limiter.
    let deployment = Deployment::start(
        &args.target,
        &["--get-rate-per-s", "1000000", "--get-rate-burst", "1000000"],
    )
    .await?;
    let urls: Vec<String> = deployment.nodes.iter().map(|n| n.url.clone()).collect();
    println!(
        "bulk: GetPresence of {} ids ({online} online) at concurrency {} over {} connections, \
         for {} s or {} requests; {}",
        args.ids,
        args.concurrency,
        args.connections,
        args.duration_s,
        args.requests,
        deployment.describe()
    );
    let channels = common::connect_spread(&urls, args.connections).await?;

    // Pre-populate: every id online once (with a status text, as real users have); the
    // first `online` stay online, the others sign off and remain as OFFLINE records.
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(256));
    let mut holders = Vec::new();
    let mut opening = Vec::new();
    for i in 0..args.ids {
        let channel = channels[i % channels.len()].clone();
        let gate = gate.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let hello = Hello {
                device: "bulk".into(),
                status: Some(Status::Busy as i32),
                status_text: format!("holding b{i}"),
            };
            Session::open(channel, &Credentials::User(format!("b{i}")), hello).await
        }));
    }
    let mut signed_off = Vec::new();
    for (i, task) in opening.into_iter().enumerate() {
        let (mut session, welcome) = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("pre-populating: {e}"))?;
        if i >= online {
            session.close();
            signed_off.push(session);
            continue;
        }
        holders.push(tokio::spawn(common::hold(
            session,
            common::heartbeat_interval(&welcome),
            stop_rx.clone(),
        )));
    }
    let ids: Arc<Vec<String>> = Arc::new((0..args.ids).map(|i| format!("b{i}")).collect());
    // Warm-up requests per connection, until every id is known (version > 0) and exactly
    // the held ones are online (the signed-off sessions' ends have been applied).
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    for channel in &channels {
        let who = Credentials::User("bulk-reader".into());
        loop {
            let answer = client::get_presence(channel.clone(), &who, ids.to_vec())
                .await
                .map_err(|e| format!("warm-up GetPresence: {e}"))?;
            let known = answer.iter().filter(|p| p.version > 0).count();
            let seen_online = answer
                .iter()
                .filter(|p| p.status != Status::Offline as i32)
                .count();
            if known == ids.len() && seen_online == online {
                break;
            }
            if Instant::now() > settle_deadline {
                eprintln!(
                    "warning: {known} of {} ids known, {seen_online} online (expected {online})",
                    ids.len()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(signed_off);

    let latencies = Arc::new(Histograms::new());
    let answered = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mismatches = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.duration_s.max(0.0));
    let cpu_before = deployment.cpu_seconds();
    let redis_cpu_before = deployment.redis_cpu_seconds();
    let redis_before = deployment.redis_calls();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let channel = channels[w % channels.len()].clone();
        let (ids, latencies) = (ids.clone(), latencies.clone());
        let (answered, claimed, errors, mismatches) = (
            answered.clone(),
            claimed.clone(),
            errors.clone(),
            mismatches.clone(),
        );
        let max_requests = args.requests;
        workers.push(tokio::spawn(async move {
            let who = Credentials::User(format!("bulk-reader-{w}"));
            while started.elapsed() < duration
                && claimed.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let t = Instant::now();
                match client::get_presence(channel.clone(), &who, ids.to_vec()).await {
                    Ok(answer) => {
                        latencies.record(w, t.elapsed().as_micros() as u64);
                        answered.fetch_add(1, Ordering::Relaxed);
                        let seen_online = answer
                            .iter()
                            .filter(|p| p.status != Status::Offline as i32)
                            .count();
                        if seen_online != online {
                            mismatches.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut progress = Progress::new(Duration::from_secs(1));
    while workers.iter().any(|w| !w.is_finished()) {
        progress.tick(|| {
            format!(
                "t={:.0}s  answered {}  errors {}",
                started.elapsed().as_secs_f64(),
                answered.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed)
            )
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_after = deployment.cpu_seconds();
    let redis_cpu_after = deployment.redis_cpu_seconds();
    let redis_after = deployment.redis_calls();
    for w in workers {
        let _ = w.await;
    }
    let _ = stop_tx.send(true);
    let mut holders_lost = 0u64;
    for h in holders {
        if !matches!(h.await, Ok(true)) {
            holders_lost += 1;
        }
    }
    let histogram = latencies.merged();
    let answered = answered.load(Ordering::Relaxed);
    let redis = match (redis_before, redis_after) {
        (Some(a), Some(b)) => Some(RedisDelta::between(&a, &b)),
        _ => None,
    };
    let per_request = |v: u64| v as f64 / answered.max(1) as f64;
    let errors = errors.load(Ordering::Relaxed);
    let mismatches = mismatches.load(Ordering::Relaxed);
    let report = Report {
        scenario: "bulk",
        sessions: online as u64,
        connections: args.connections as u64,
        duration_s: wall_s,
        rss_per_session_bytes: None,
        latency_ms: Latency::from_histogram(&histogram),
        expected: answered + errors,
        delivered: answered,
        errors: errors + mismatches + holders_lost,
        throughput_per_s: answered as f64 / wall_s,
        extra: vec![
            ("nodes", json!(urls.len())),
            ("redis", json!(deployment.redis_url.is_some())),
            ("ids_per_request", json!(args.ids)),
            ("online_ids", json!(online)),
            ("concurrency", json!(args.concurrency)),
            (
                "ids_per_s",
                json!(answered as f64 * args.ids as f64 / wall_s),
            ),
            ("request_errors", json!(errors)),
            ("wrong_answers", json!(mismatches)),
            ("holders_lost", json!(holders_lost)),
            (
                "node_cpu_ms_per_request",
                json!(match (cpu_before, cpu_after) {
                    (Some(a), Some(b)) => Some((b - a) * 1000.0 / answered.max(1) as f64),
                    _ => None,
                }),
            ),
            (
                "redis_cpu_ms_per_request",
                json!(match (redis_cpu_before, redis_cpu_after) {
                    (Some(a), Some(b)) => Some((b - a) * 1000.0 / answered.max(1) as f64),
                    _ => None,
                }),
            ),
            (
                "redis_commands_per_request",
                json!(redis.as_ref().map(|d| per_request(d.commands))),
            ),
            (
                "redis_per_request_by_command",
                json!(redis.as_ref().map(|d| d.per(answered))),
            ),
        ],
    };
    report.print();
    report.save(args.output.out.as_deref())?;
    crate::plot::save(
        args.output.plot.as_deref(),
        &format!(
            "bulk: GetPresence of {} ids, concurrency {}",
            args.ids, args.concurrency
        ),
        &histogram,
    )
}
