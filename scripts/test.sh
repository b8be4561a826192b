#!/usr/bin/env bash
# Set everything up, lint, and run the whole test suite (unit tests on tiny models, the default model where
# a test needs real pretrained behaviour, and the web UI in headless Chromium). Nothing is downloaded:
# the hub is switched off for the run, so a test that would fetch a model or data set fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium + CJK fonts for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
  else
    echo "note: /usr/bin/chromium is missing (apt-get install chromium fonts-noto-cjk); browser tests will be skipped"
  fi
fi
[ -x /usr/bin/chromium ] && export TUNESMITH_REQUIRE_BROWSER=1
echo "lint: ruff check (settings in pyproject.toml)"
.venv/bin/ruff check .
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
