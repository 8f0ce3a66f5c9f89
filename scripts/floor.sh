#!/usr/bin/env bash
# Test the provider on its declared floor: create (or bring up to date) .venv-floor with the
# latest Airflow 3.2 release, pinned by constraints/airflow-3.2.txt, and run the tests that
# exercise Airflow itself. Hermetic from .venv; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-floor
constraints=constraints/airflow-3.2.txt
# What the installed venv depends on; an unchanged digest skips pip entirely.
digest=$(cat "$constraints" pyproject.toml "$0" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ "$(cat "$venv/.floor-digest" 2>/dev/null)" != "$digest" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # The provider with PostgreSQL support (the ledger's), and pytest: the other tools of the test
  # extra (linters, a browser driver, Celery, the signing and fuzzing libraries) serve tests
  # that do not run here.
  "$venv/bin/python" -m pip install --quiet -c "$constraints" -e ".[postgres]" "pytest>=8"
  echo "$digest" >"$venv/.floor-digest"
fi
"$venv/bin/python" -c 'import airflow, sys; print(f"floor: Airflow {airflow.__version__}, Python {sys.version.split()[0]}")'
# The provider as Airflow's providers manager sees it; callbacks and the notifier under
# dag.test(); late runs through Airflow's deadline alerts (in process); the operator and its
# trigger; the ledger; the dispatcher; run ends and listeners; and real api-server, scheduler,
# dag-processor and triggerer deployments. The ledger's and the dispatcher's PostgreSQL variants
# are left to the 3.3 suite (that storage does not depend on Airflow); the listener path runs on
# PostgreSQL here too.
exec "$venv/bin/python" -m pytest -p no:cacheprovider -k "not postgresql or test_run_ends" \
  tests/test_provider.py tests/test_callbacks.py tests/test_notifier.py tests/test_late.py \
  tests/test_job_groups.py tests/test_ledger.py tests/test_dispatcher.py tests/test_run_ends.py \
  tests/test_real_deployment.py "$@"
