#!/usr/bin/env bash
# Install, then run the production path on Airflow's embedded SQLite default: api-server,
# scheduler, dag-processor, triggerer and the flow webhook dispatcher on 127.0.0.1, the
# example DAGs triggered, their signed webhooks delivered to a receiver on 127.0.0.1 and
# printed. Stops everything it started; --keep-running leaves it up to click through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
