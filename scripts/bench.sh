#!/usr/bin/env bash
# Reproduces every number in BENCHMARKS.md: builds release binaries, runs each target of the
# benchmark suite RUNS times (default 3) on this machine, keeps every run's JSON and SVG in
# OUT (default target/bench-results/<UTC time>), and prints the medians as a Markdown table.
#
#   scripts/bench.sh                 # everything, 3 runs each (about 17 minutes on 2 cores)
#   RUNS=1 scripts/bench.sh          # one run each
#   OUT=target/bench-results/X SUMMARY_ONLY=1 scripts/bench.sh   # medians of runs kept in X
#   ONLY="churn bulk" scripts/bench.sh   # some groups only: idle100k idle15k churn storm
#                                        # storm-default-grace bulk heartbeat roundtrips
#   scripts/bench.sh peer            # the peer comparison with Mosquitto only (issue 14):
#                                    # its own 3 runs, table in target/bench/peer-<time>.md
#
# Every run starts its own node(s) and, where needed, its own redis-server on free loopback
# ports, and stops by itself. Needs redis-server (Redis 7) and python3 (for the medians).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"

if [ "${1:-}" = "peer" ]; then
  # Mosquitto and presence-node side by side, one command: presence-bench starts and stops
  # both (mosquitto from Debian's package) and alternates their order between runs.
  shift
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] \
    || { echo "mosquitto not found: apt-get install mosquitto" >&2; exit 1; }
  ulimit -n 20000 || { echo "cannot raise the open-files limit to 20000 (ulimit -Hn?)" >&2; exit 1; }
  cargo build --release --locked --features peer --bin presence-node --bin presence-bench
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  exec target/release/presence-bench peer --runs "$RUNS" "$@"
fi
OUT="${OUT:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
ONLY="${ONLY:-idle100k idle15k churn storm storm-default-grace bulk heartbeat roundtrips}"
mkdir -p "$OUT"

if [ -z "${SUMMARY_ONLY:-}" ]; then
# 100,000 sessions need more file descriptors than the usual default soft limit.
ulimit -n 20000 || { echo "cannot raise the open-files limit to 20000 (ulimit -Hn?)" >&2; exit 1; }

cargo build --release --locked --bin presence-node --bin presence-bench
BENCH=target/release/presence-bench

{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r); redis: $(redis-server --version | awk '{print $3}')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

run() { # group, then the scenario and its flags
  local group="$1"
  shift
  case " $ONLY " in *" $group "*) ;; *) return 0 ;; esac
  for i in $(seq 1 "$RUNS"); do
    echo "== $group run $i/$RUNS: presence-bench $*"
    local started=$SECONDS
    "$BENCH" "$@" --out "$OUT/$group-$i.json" --plot "$OUT/$group-$i.svg" | tee "$OUT/$group-$i.txt"
    echo "   ($((SECONDS - started)) s)"
    echo "$*" > "$OUT/$group.cmd"
  done
}

# idle: 100,000 sessions on one node over 100 connections (1,000 streams each).
run idle100k idle --sessions 100000 --connections 100 --watch 20 --hold-s 5
# idle: 15,000 sessions, one connection each.
run idle15k idle --sessions 15000 --connections 15000 --watch 20 --hold-s 5
# churn: 10,000 sessions x 20 watched, 2 nodes + Redis, 2,000 changes/s for 60 s.
run churn churn --sessions 10000 --watch 20 --graph random --nodes 2 --connections 20 --rate 2000 --duration-s 60
# storm: 50,000 sessions reconnect within 10 s; the offline grace (12 s) covers the window.
run storm storm --sessions 50000 --connections 100 --reconnect-window-s 10 --offline-grace-ms 12000 --watchers 20 --watch 500
# storm with the default grace (3 s): a window below it (2.5 s).
run storm-default-grace storm --sessions 50000 --connections 100 --reconnect-window-s 2.5 --offline-grace-ms 3000 --watchers 20 --watch 500
# bulk: GetPresence of 1,000 ids (250 online) on Redis at concurrency 8.
run bulk bulk --redis --ids 1000 --online 250 --concurrency 8 --duration-s 20
# Redis commands per heartbeat: 10,000 sessions on Redis heartbeating every second for 10 s
# (lease and resync pushed out so no periodic command falls into the window).
run heartbeat idle --redis --sessions 10000 --connections 10 --watch 20 --hold-s 10 \
  --node-arg=--heartbeat-interval-ms=1000 --node-arg=--session-ttl-ms=5000 \
  --node-arg=--node-lease-ttl-ms=600000 --node-arg=--resync-interval-ms=600000

# Redis round trips per status change: 2 nodes on Redis, with the lease renewal and the
# periodic resync pushed out of the window (they are not per change; the churn run above
# shows them amortised).
run roundtrips churn --sessions 1000 --watch 5 --nodes 2 --connections 4 --rate 500 --duration-s 10 \
  --node-arg=--node-lease-ttl-ms=600000 --node-arg=--resync-interval-ms=600000

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
fi

if command -v python3 >/dev/null 2>&1; then
  python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, statistics, sys

out = sys.argv[1]
def runs(group):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{group}-[0-9]*.json")))]

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def get(run, path):
    v = run
    for key in path.split("."):
        v = v.get(key) if isinstance(v, dict) else None
    return v

# (group, target, metric path, how to show, limit, "max"/"zero")
rows = [
    ("idle100k", "idle 100k sessions / 100 conns: RSS per session", "rss_per_session_bytes", "{:.0f} B", 16 * 1024, "max"),
    ("idle100k", "idle 100k: errors", "errors", "{:.0f}", 0, "zero"),
    ("idle15k", "idle 15k sessions / 15k conns: RSS per session", "rss_per_session_bytes", "{:.0f} B", 36 * 1024, "max"),
    ("idle15k", "idle 15k: errors", "errors", "{:.0f}", 0, "zero"),
    ("churn", "churn: lost deliveries", "extra.lost", "{:.0f}", 0, "zero"),
    ("churn", "churn: p50 delivery latency", "latency_ms.p50", "{:.2f} ms", 3, "max"),
    ("churn", "churn: p99 delivery latency", "latency_ms.p99", "{:.2f} ms", 20, "max"),
    ("churn", "churn: p99.9 / max (no target)", "latency_ms.p999", "{:.2f} ms", None, None),
    ("churn", "churn: node CPU s per 1,000 deliveries (no target)", "extra.node_cpu_s_per_1000_deliveries", "{:.4f}", None, None),
    ("churn", "churn: achieved change rate (no target)", "extra.change_rate_achieved_per_s", "{:.0f}/s", None, None),
    ("churn", "churn: Redis CPU s per 1,000 deliveries, next to the nodes' (no target)", "extra.redis_cpu_s_per_1000_deliveries", "{:.4f}", None, None),
    ("churn", "churn: Redis requests per change, periodic resync included (no target)", "extra.redis_requests_per_change", "{:.3f}", None, None),
    ("churn", "churn: Redis commands per change, script internals included (no target)", "extra.redis_commands_per_change", "{:.3f}", None, None),
    ("storm", "storm 50k, window 10 s, grace 12 s: errors", "errors", "{:.0f}", 0, "zero"),
    ("storm", "storm 50k, window 10 s: p99 time to welcome", "latency_ms.p99", "{:.1f} ms", 2000, "max"),
    ("storm", "storm 50k, window 10 s: flaps", "extra.flaps", "{:.0f}", 0, "zero"),
    ("storm-default-grace", "storm 50k, window 2.5 s, grace 3 s: errors", "errors", "{:.0f}", 0, "zero"),
    ("storm-default-grace", "storm 50k, window 2.5 s: p99 time to welcome", "latency_ms.p99", "{:.1f} ms", 2000, "max"),
    ("storm-default-grace", "storm 50k, window 2.5 s: flaps", "extra.flaps", "{:.0f}", 0, "zero"),
    ("bulk", "bulk 1,000 ids on Redis, concurrency 8: p99", "latency_ms.p99", "{:.2f} ms", 10, "max"),
    ("bulk", "bulk: p50 (no target)", "latency_ms.p50", "{:.2f} ms", None, None),
    ("bulk", "bulk: requests/s (no target)", "throughput_per_s", "{:.0f}", None, None),
    ("heartbeat", "Redis: commands per heartbeat", "extra.redis_commands_per_heartbeat", "{:.5f}", 0, "zero"),
    ("roundtrips", "Redis: requests (round trips) per status change", "extra.redis_requests_per_change", "{:.3f}", 2, "max"),
]
print("| target | runs | median | each run | limit | met |")
print("| --- | --- | --- | --- | --- | --- |")
for group, name, path, fmt, limit, kind in rows:
    rs = runs(group)
    if not rs:
        continue
    values = [get(r, path) for r in rs]
    m = med(values)
    shown = fmt.format(m) if m is not None else "n/a"
    each = ", ".join(fmt.format(v) if v is not None else "n/a" for v in values)
    if kind is None:
        met, lim = "", ""
    else:
        lim = ("<= " + fmt.format(limit)) if kind == "max" else "0 (worst run)"
        # Zero-targets (loss, errors, flaps) are judged on the worst run, not the median.
        worst = max((v for v in values if v is not None), default=None)
        ok = m is not None and (m <= limit if kind == "max" else worst == 0)
        if kind == "zero" and worst is not None:
            shown = fmt.format(worst) + " (worst)
        met = "yes" if ok else "**no**"
    print(f"| {name} | {len(rs)} | {shown} | {each} | {lim} | {met} |")
PY
else
  echo "python3 not found: medians not computed; the runs are in $OUT" >&2
fi
echo "results in $OUT"
