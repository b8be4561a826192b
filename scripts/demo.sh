#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded defaults: train a 李白 role adapter on the
# bundled RoleBench data with the default model, evaluate it against the base, show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tunesmith demo "$@"
