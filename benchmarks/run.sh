#!/usr/bin/env bash
# Install what only the benchmarks need (the HTTP provider as a baseline, matplotlib for the
# chart) into .venv, then run every benchmark side by side; writes benchmarks/results.{md,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
.venv/bin/python -m pip install --quiet -r benchmarks/requirements.txt
exec .venv/bin/python benchmarks/run.py "$@"
