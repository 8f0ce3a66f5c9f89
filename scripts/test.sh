#!/usr/bin/env bash
# Install everything (the virtual environment with Airflow, and Debian's chromium and
# chromium-driver for the UI tests), then run lint, type checks and the whole test suite
# (real Airflow components included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  # A browser that a test tool downloads by itself cannot be fetched here; Debian's can.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
.venv/bin/ruff check airflow_webhook_provider tests dags scripts examples benchmarks
.venv/bin/ruff format --check airflow_webhook_provider tests dags scripts examples benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
