//! Seconds-long smoke runs of every `presence-bench` scenario (tiny N, short D), so the tool
//! keeps working: each must exit 0 and write JSON with the common fields. No timing
//! thresholds here: the numbers are judged in BENCHMARKS.md, not in tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The longest a smoke run may take (each takes a few seconds).
const PATIENCE: Duration = Duration::from_secs(180);

/// Runs `presence-bench` with `args` plus `--out` and `--plot` into a fresh directory and
/// returns the JSON it wrote. The bench starts its own node(s) (and redis-server where asked)
/// from the binaries next to it.
fn run_bench(name: &str, args: &[&str]) -> serde_json::Value {
    // Tests run in parallel, several per scenario: one directory per run.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("bench-smoke-{name}-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.json");
    let plot = dir.join("plot.svg");
    let mut command = Command::new(env!("CARGO_BIN_EXE_presence-bench"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    let started = Instant::now();
    let mut child = command
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--plot")
        .arg(&plot)
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("run presence-bench");
    // Bounded: a hung benchmark fails the test instead of stalling CI.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "presence-bench {args:?} failed ({status:?}) after {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains("latency_ms"), "no table printed:\n{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("--out written"))
            .expect("--out is JSON");
    let svg = std::fs::read_to_string(&plot).expect("--plot written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
    check_common_fields(&json, name);
    json
}

fn check_common_fields(json: &serde_json::Value, scenario: &str) {
    assert_eq!(json["scenario"], scenario, "{json}");
    for field in ["sessions", "connections", "expected", "delivered", "errors"] {
        assert!(
            json[field].is_u64(),
            "{field} missing or not a count: {json}"
        );
    }
    for field in ["duration_s", "throughput_per_s"] {
        assert!(json[field].is_number(), "{field} missing: {json}");
    }
    // A number, or null where it does not apply (bulk holds no sessions to weigh).
    let rss = json
        .as_object()
        .unwrap()
        .get("rss_per_session_bytes")
        .expect("rss_per_session_bytes missing");
    assert!(rss.is_number() || rss.is_null(), "{json}");
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            json["latency_ms"][field].is_number(),
            "latency_ms.{field} missing: {json}"
        );
    }
}

#[test]
fn idle_smoke() {
    let json = run_bench(
        "idle",
        &[
            "idle",
            "--sessions",
            "40",
            "--connections",
            "4",
            "--watch",
            "3",
            "--hold-s",
            "0.5",
        ],
    );
    assert_eq!(json["sessions"], 40);
    assert_eq!(json["errors"], 0);
}

#[test]
fn churn_smoke_embedded() {
    let json = run_bench(
        "churn",
        &[
            "churn",
            "--sessions",
            "60",
            "--watch",
            "4",
            "--rate",
            "60",
            "--duration-s",
            "1.5",
            "--connections",
            "3",
        ],
    );
    assert_eq!(json["sessions"], 60);
    assert!(
        json["extra"]["changes_sent"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert!(json["expected"].as_u64().unwrap() > 0, "{json}");
    assert_delivered_all(&json);
}

#[test]
fn websocket_idle_and_churn_smoke() {
    let idle = run_bench(
        "idle",
        &[
            "idle",
            "--transport",
            "ws",
            "--sessions",
            "30",
            "--watch",
            "3",
            "--hold-s",
            "0.5",
        ],
    );
    assert_eq!(idle["sessions"], 30);
    assert_eq!(idle["errors"], 0);
    assert_eq!(idle["extra"]["transport"], "ws");
    let churn = run_bench(
        "churn",
        &[
            "churn",
            "--transport",
            "ws",
            "--sessions",
            "40",
            "--watch",
            "4",
            "--rate",
            "40",
            "--duration-s",
            "1.5",
        ],
    );
    assert_eq!(churn["extra"]["transport"], "ws");
    assert_delivered_all(&churn);
}

/// A churn run lost no change (each was delivered, or coalesced into a later one that was)
/// and had no error.
fn assert_delivered_all(json: &serde_json::Value) {
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["extra"]["lost"], 0, "{json}");
    assert_eq!(json["delivered"], json["expected"], "{json}");
}

#[test]
fn churn_smoke_two_nodes_on_redis() {
    let json = run_bench(
        "churn",
        &[
            "churn",
            "--sessions",
            "60",
            "--watch",
            "4",
            "--graph",
            "powerlaw",
            "--rate",
            "60",
            "--duration-s",
            "1.5",
            "--connections",
            "4",
            "--nodes",
            "2",
        ],
    );
    assert_eq!(json["extra"]["nodes"], 2);
    assert_eq!(json["extra"]["redis"], true);
    assert!(
        json["extra"]["redis_commands_per_change"].is_number(),
        "{json}"
    );
    assert!(json["expected"].as_u64().unwrap() > 0, "{json}");
    assert_delivered_all(&json);
}

#[test]
fn storm_smoke() {
    let json = run_bench(
        "storm",
        &[
            "storm",
            "--sessions",
            "60",
            "--connections",
            "3",
            "--reconnect-window-s",
            "0.3",
            "--offline-grace-ms",
            "1000",
            "--watchers",
            "2",
            "--watch",
            "20",
        ],
    );
    assert_eq!(json["sessions"], 60);
    assert!(json["extra"]["flaps"].is_u64(), "{json}");
    // Every session reconnected within the grace: no flap, none lost, no error.
    assert_eq!(json["extra"]["flaps"], 0, "{json}");
    assert_eq!(json["extra"]["sessions_lost"], 0, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["delivered"], 60, "{json}");
}

#[test]
fn bulk_smoke_embedded() {
    let json = run_bench(
        "bulk",
        &[
            "bulk",
            "--ids",
            "200",
            "--online",
            "20",
            "--concurrency",
            "2",
            "--duration-s",
            "1",
            "--requests",
            "200",
        ],
    );
    assert!(json["delivered"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["extra"]["wrong_answers"], 0, "{json}");
}

#[test]
fn bulk_smoke_on_redis() {
    let json = run_bench(
        "bulk",
        &[
            "bulk",
            "--redis",
            "--ids",
            "200",
            "--online",
            "20",
            "--concurrency",
            "2",
            "--duration-s",
            "1",
            "--requests",
            "100",
        ],
    );
    assert_eq!(json["extra"]["redis"], true);
    assert!(json["delivered"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["extra"]["wrong_answers"], 0, "{json}");
}

#[test]
fn hot_smoke() {
    let json = run_bench(
        "hot",
        &[
            "hot",
            "--watchers",
            "300",
            "--connections",
            "3",
            "--hot-rate",
            "5",
            "--others",
            "20",
            "--other-watch",
            "3",
            "--other-rate",
            "20",
            "--other-connections",
            "2",
            "--duration-s",
            "1",
        ],
    );
    assert_eq!(json["errors"], 0, "{json}");
    let hot = &json["extra"]["with_hot_user"];
    assert!(hot["hot_changes"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(hot["hot_changes_never_reaching_all"], 0, "{json}");
    assert!(
        json["extra"]["others_alone"]["other_deliveries"]
            .as_u64()
            .unwrap()
            > 0,
        "{json}"
    );
}

#[test]
fn churn_smoke_with_bulk_load_on_a_redis_pool() {
    let json = run_bench(
        "churn",
        &[
            "churn",
            "--redis",
            "--sessions",
            "100",
            "--watch",
            "3",
            "--connections",
            "2",
            "--rate",
            "50",
            "--duration-s",
            "1",
            "--bulk-concurrency",
            "2",
            "--bulk-ids",
            "100",
            "--node-arg=--redis-pool-size=2",
        ],
    );
    assert_eq!(json["extra"]["lost"], 0, "{json}");
    let bulk = &json["extra"]["bulk"];
    assert!(bulk["requests"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(bulk["errors"], 0, "{json}");
}
