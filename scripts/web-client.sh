#!/usr/bin/env bash
# The web client's checks (clients/web): a clean install from the lockfile, the generated
# protobuf-es code and the built demo page match what is committed, the unit tests and the
# tests against a real node process, and the demo page in a headless Chromium.
# Usage: scripts/web-client.sh [path/to/presence-node]   (default: target/debug/presence-node)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${1:-$root/target/debug/presence-node}
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac # the tests run from clients/web
started=$(date +%s)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/web-client.sh: Node.js 20+ and npm are required (https://nodejs.org)" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  echo "scripts/web-client.sh: $bin not found; run cargo build --bin presence-node first" >&2
  exit 1
fi

# The browser test drives Debian's Chromium (playwright-core downloads no browser).
if [ -z "${CHROMIUM_BIN:-}" ] && ! [ -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "== installing chromium (sudo apt-get)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/web-client.sh: Chromium is required by the browser test; install it or set CHROMIUM_BIN" >&2
    exit 1
  fi
fi

cd clients/web
echo "== web client: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "== web client: generated code matches presence.proto (buf generate)"
npm run --silent generate
git diff --exit-code -- src/gen
if [ -n "$(git status --porcelain -- src/gen)" ]; then
  git status --porcelain -- src/gen
  echo "scripts/web-client.sh: buf generate made files that are not committed" >&2
  exit 1
fi
echo "== web client: committed demo page matches a fresh build (tsc + esbuild)"
npm run --silent build
git diff --exit-code -- dist
if [ -n "$(git status --porcelain -- dist)" ]; then
  git status --porcelain -- dist
  echo "scripts/web-client.sh: the build made files in dist/ that are not committed" >&2
  exit 1
fi
echo "== web client: unit tests and tests against a real node (node --test)"
PRESENCE_NODE_BIN="$bin" node --test --test-timeout=60000 lib/test/unit/*.test.js lib/test/node/*.test.js
echo "== web client: the demo page in headless Chromium (playwright-core)"
PRESENCE_NODE_BIN="$bin" node --test --test-timeout=90000 lib/test/browser/*.test.js
echo "== web client checks took $(($(date +%s) - started)) s"
