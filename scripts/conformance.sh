#!/usr/bin/env bash
# Conformance of the node's wire behaviour with a gRPC client that is not ours: Google's
# C-core through Python grpcio, against a real node process (tests/conformance/). Builds a venv
# under target/ (reused while the requirements are unchanged), generates the Python stubs
# from proto/ and runs pytest. Needs python3 with venv (or pip) and PyPI. Usage:
#   scripts/conformance.sh [NODE_BINARY] [pytest args...]   (default: target/debug/presence-node)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/conformance-venv
STUBS=target/conformance-stubs
REQUIREMENTS=tests/conformance/requirements.txt
NODE_BIN=${1:-target/debug/presence-node}
shift || true

die() { echo "scripts/conformance.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-venv)"
[ -x "$NODE_BIN" ] || die "$NODE_BIN not found: build it first (cargo build --bin presence-node)"

stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== conformance: installing $(grep -Ev '^(#|$)' "$REQUIREMENTS" | tr '\n' ' ')into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
    || die "pip install -r $REQUIREMENTS failed (see above)"
  echo "$want" > "$stamp"
fi

rm -rf "$STUBS" && mkdir -p "$STUBS"
"$VENV/bin/python" -m grpc_tools.protoc -Iproto --python_out="$STUBS" --grpc_python_out="$STUBS" \
  proto/presence/v1/presence.proto proto/presence/v1/admin.proto

export CONFORMANCE_STUBS="$PWD/$STUBS"
export PRESENCE_NODE_BIN="$PWD/$NODE_BIN"
# -p no:cacheprovider: nothing written into the source tree.
export GRPC_VERBOSITY=${GRPC_VERBOSITY:-ERROR}
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/conformance "$@"
