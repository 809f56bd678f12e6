#!/usr/bin/env bash
# Every check CI runs, in one command for a fresh machine: formatting, lints, all tests
# (unit and integration, against real nodes over real sockets, each under a timeout) and
# that benchmarks build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The cluster-mode tests start their own redis-server processes (on free ports).
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing redis-server (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "== installing redis-server (sudo apt-get)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "scripts/test.sh: redis-server (Redis 7) is required by the tests; install it (e.g. apt-get install redis-server, brew install redis)" >&2
    exit 1
  fi
fi

# The tests run under cargo-nextest: one process per test, each under the timeout of
# .config/nextest.toml, no retries.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest (cargo install --locked)"
  cargo install --locked cargo-nextest
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo nextest run (unit and integration tests, per-test timeout)"
cargo nextest run --locked --workspace --profile "${NEXTEST_PROFILE:-ci}"
echo "== cargo test --doc (nextest does not run doctests)"
cargo test --locked --doc
echo "== conformance: the wire behaviour seen from grpcio (Google's C-core), not our client"
bash scripts/conformance.sh target/debug/presence-node
echo "== web client: TypeScript client, its tests against a real node, the demo page in Chromium"
bash scripts/web-client.sh target/debug/presence-node
echo "== cargo test --benches --no-run (the criterion benchmarks still build, in the test profile)"
cargo test --locked --benches --no-run
echo "== helm chart (offline: lint, render, Kubernetes 1.30 schemas)"
bash scripts/check-chart.sh
