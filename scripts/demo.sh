#!/usr/bin/env bash
# Install, then run the example DAGs with `airflow dags test` on a fresh SQLite Airflow,
# delivering signed webhooks to a receiver on 127.0.0.1 and printing what it got.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
