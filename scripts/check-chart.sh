#!/usr/bin/env bash
# Offline checks of the Helm chart in helm/presence-node: helm lint, render with every
# tests/chart/values-*.yaml, strict validation against the Kubernetes 1.30 schemas, and the
# invariants the node relies on (tests/chart/test_chart.py). Needs python3 with pip (or venv)
# and PyPI; no cluster, no helm binary, no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/chart-venv
REQUIREMENTS=tests/chart/requirements.txt

die() { echo "scripts/check-chart.sh: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); helm-python-sdk needs 3.10 or newer"
PIP_HINT="helm-python-sdk has wheels for Linux x86_64/aarch64 with glibc >= 2.28 only; see $REQUIREMENTS"

# The venv is reused while the requirements are unchanged; a stamp records what was installed.
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== chart: installing $(grep -Ev '^(#|$)' "$REQUIREMENTS" | tr '\n' ' ')into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
      || die "pip install -r $REQUIREMENTS failed (see above). $PIP_HINT"
  else
    # Debian's python3 without python3-venv has no ensurepip: install into a plain directory
    # instead (--target does not install into the system Python, so PEP 668's externally-managed
    # marker does not stop it).
    rm -rf "$VENV"
    python3 -m pip --version >/dev/null 2>&1 \
      || die "neither 'python3 -m venv' nor 'python3 -m pip' works (Debian: apt-get install python3-venv)"
    echo "   (python3 -m venv unavailable: using pip install --target $VENV/site-packages)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$VENV/site-packages" \
      -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed (see above). $PIP_HINT"
  fi
  echo "$want" > "$stamp"
fi

if [ -x "$VENV/bin/python" ]; then
  python="$VENV/bin/python"
else
  python=python3
  export PYTHONPATH="$PWD/$VENV/site-packages${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== chart: tests/chart/test_chart.py"
exec "$python" tests/chart/test_chart.py
