//! Prometheus metrics: names in one place, the exporter (`PRESENCE_METRICS_ADDR`, scraped at
//! `/metrics`), and process metrics (CPU, memory, file descriptors). Recording uses the
//! `metrics` crate's macros at the call sites; with no exporter installed they cost almost
//! nothing.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Live sessions on this node (gauge).
pub const SESSIONS: &str = "presence_sessions";
/// Distinct users with a session on this node (gauge).
pub const USERS_ONLINE: &str = "presence_users_online";
/// Sessions that said hello (counter).
pub const SESSIONS_OPENED: &str = "presence_sessions_opened_total";
/// Sessions admitted (an actor started), by `transport`: grpc, websocket (counter).
pub const SESSIONS_ADMITTED: &str = "presence_sessions_admitted_total";
/// Sessions ended, by `reason` (counter).
pub const SESSIONS_CLOSED: &str = "presence_sessions_closed_total";
/// Client frames received, by `kind` (counter).
pub const FRAMES_RECEIVED: &str = "presence_frames_received_total";
/// Frames refused by the rate limits, by `frame` (counter).
pub const RATE_LIMITED: &str = "presence_rate_limited_total";
/// Presence entries sent in updates (counter).
pub const UPDATES_DELIVERED: &str = "presence_updates_delivered_total";
/// Pending updates replaced by a newer one before sending (counter).
pub const UPDATES_COALESCED: &str = "presence_updates_coalesced_total";
/// Changed records replaced by a newer one of the same user before the registry fanned them
/// out (`registry::FanoutInput`) (counter).
pub const FANOUT_COALESCED: &str = "presence_fanout_coalesced_total";
/// Changes of a user past its change rate held back for fan-out, to go out later coalesced
/// (`registry::FanoutInput`) (counter).
pub const FANOUT_HELD: &str = "presence_fanout_held_total";
/// Updates not sent, by `reason`: `stale` (older than what the watcher has), `unchanged`
/// (nothing the watcher can see changed) (counter).
pub const UPDATES_DROPPED: &str = "presence_updates_dropped_total";
/// Time to hand one change to all local watchers (histogram, seconds).
pub const FANOUT_SECONDS: &str = "presence_fanout_seconds";
/// Replies waiting in a session's outbound queue when one more is queued (histogram).
pub const OUTBOX_DEPTH: &str = "presence_outbox_depth";
/// Redis requests by `op` (histogram, seconds).
pub const REDIS_SECONDS: &str = "presence_redis_request_seconds";
/// Failed Redis requests by `op` (counter).
pub const REDIS_ERRORS: &str = "presence_redis_errors_total";
/// 1 while Redis is reachable (gauge; cluster mode).
pub const REDIS_UP: &str = "presence_redis_up";
/// Resyncs with Redis by `reason` (counter).
pub const RESYNCS: &str = "presence_resyncs_total";
/// Dead nodes swept by this node (counter).
pub const DEAD_NODE_SWEEPS: &str = "presence_dead_node_sweeps_total";
/// Users whose sessions were removed by dead-node sweeps (counter).
pub const SWEPT_USERS: &str = "presence_swept_users_total";
/// What one caller tried to make the node spend past a bound, by `reason` (API.md "What one
/// caller can consume is bounded"; docs/operations.md has the table of bounds) (counter).
pub const REFUSED: &str = "presence_refused_total";
/// Mass abrupt disconnects that switched abrupt ends to the storm grace (counter).
pub const STORMS: &str = "presence_storms_total";
/// TLS handshakes that failed, by `listener` and `reason`: `error`, `timeout`, `plaintext`
/// (HTTP without TLS: answered with "use https://"), `closed` (the peer closed before the
/// handshake ended: TCP checks, scanners) (counter).
pub const TLS_HANDSHAKE_FAILURES: &str = "presence_tls_handshake_failures_total";
/// Changed certificate files read, by `result`: `loaded` (served from now on), `refused`
/// (not a consistent pair: the previous certificate stays) (counter).
pub const TLS_RELOADS: &str = "presence_tls_reloads_total";
/// `CheckWatch` calls to the authorizer by `result`: ok, timeout, error, wrong_count
/// (counter).
pub const AUTHORIZER_CALLS: &str = "presence_authorizer_calls_total";
/// Duration of one `CheckWatch` call, failed ones included (histogram, seconds).
pub const AUTHORIZER_SECONDS: &str = "presence_authorizer_call_seconds";
/// Watch decisions looked up in the cache, by `result`: hit, miss (asked), collapsed
/// (answered by a call another request made) (counter).
pub const DECISION_CACHE: &str = "presence_watch_decision_cache_total";
/// Watch decisions applied, by `decision`: allow, deny, hide (counter).
pub const WATCH_DECISIONS: &str = "presence_watch_decisions_total";
/// Watched users revoked because their decision turned to deny or hide (counter).
pub const WATCH_REVOKED: &str = "presence_watch_revoked_total";

/// Starts the exporter on `addr` and the process-metrics collector. Call once per process,
/// inside the runtime.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(OUTBOX_DEPTH.into()),
                &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
        })
        .and_then(|b| b.install())
        .map_err(|e| format!("cannot start the metrics endpoint on {addr}: {e}"))?;
    describe();
    let collector = metrics_process::Collector::default();
    collector.describe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            collector.collect();
        }
    });
    Ok(())
}

fn describe() {
    describe_gauge!(SESSIONS, "Live sessions on this node");
    describe_gauge!(USERS_ONLINE, "Distinct users with a session on this node");
    describe_counter!(SESSIONS_OPENED, "Sessions that said hello");
    describe_counter!(
        SESSIONS_ADMITTED,
        "Sessions admitted (an actor started), by transport"
    );
    describe_counter!(SESSIONS_CLOSED, "Sessions ended, by reason");
    describe_counter!(FRAMES_RECEIVED, "Client frames received, by kind");
    describe_counter!(
        RATE_LIMITED,
        "Frames refused by the per-session rate limits"
    );
    describe_counter!(UPDATES_DELIVERED, "Presence entries sent to watchers");
    describe_counter!(UPDATES_COALESCED, "Pending updates replaced by a newer one");
    describe_counter!(
        FANOUT_COALESCED,
        "Changed records replaced by a newer one before fan-out"
    );
    describe_counter!(
        FANOUT_HELD,
        "Changes of a user past its change rate held back, fanned out later coalesced"
    );
    describe_counter!(
        UPDATES_DROPPED,
        "Updates not sent (stale, or nothing visible changed)"
    );
    describe_histogram!(
        FANOUT_SECONDS,
        Unit::Seconds,
        "Time to hand one change to all local watchers"
    );
    describe_histogram!(OUTBOX_DEPTH, "Replies queued in a session's outbound queue");
    describe_histogram!(REDIS_SECONDS, Unit::Seconds, "Redis requests, by op");
    describe_counter!(REDIS_ERRORS, "Failed Redis requests, by op");
    describe_gauge!(REDIS_UP, "1 while Redis is reachable");
    describe_counter!(RESYNCS, "Resyncs with Redis, by reason");
    describe_counter!(DEAD_NODE_SWEEPS, "Dead nodes swept by this node");
    describe_counter!(
        SWEPT_USERS,
        "Users whose sessions were removed by dead-node sweeps"
    );
    describe_counter!(
        REFUSED,
        "Requests, frames or connections refused past a bound, by reason"
    );
    describe_counter!(
        STORMS,
        "Mass abrupt disconnects that switched abrupt ends to the storm grace"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed, by listener and reason"
    );
    describe_counter!(TLS_RELOADS, "Changed TLS certificate files read, by result");
    describe_counter!(
        AUTHORIZER_CALLS,
        "CheckWatch calls to the authorizer, by result"
    );
    describe_histogram!(
        AUTHORIZER_SECONDS,
        Unit::Seconds,
        "Duration of one CheckWatch call"
    );
    describe_counter!(
        DECISION_CACHE,
        "Watch decision lookups, by result (hit, miss, collapsed)"
    );
    describe_counter!(WATCH_DECISIONS, "Watch decisions applied, by decision");
    describe_counter!(WATCH_REVOKED, "Watched users revoked by a changed decision");
}
