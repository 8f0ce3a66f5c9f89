#!/usr/bin/env bash
# Install, then run lint, type checks and the whole test suite (real Airflow components included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check airflow_webhook_provider tests dags scripts examples benchmarks
.venv/bin/ruff format --check airflow_webhook_provider tests dags scripts examples benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
