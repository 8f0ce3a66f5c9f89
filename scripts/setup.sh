#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install the provider with its
# test tools. Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The suite runs on the newest 3.3 release; the 3.2 floor has its own venv (scripts/floor.sh).
.venv/bin/python -m pip install --quiet -e ".[test]" "apache-airflow>=3.3,<3.4"
