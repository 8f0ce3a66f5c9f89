"""DAG-parse cost: what importing the provider and attaching 50 webhooks adds to a DAG file.

Each measurement is a fresh interpreter (as a DAG file's imports are paid once per
parsing process), alternating:

- baseline: ``import airflow.sdk`` and build a DAG of 20 chained tasks;
- ours: the same, then ``from airflow_webhook_provider import FlowWebhook, FlowWebhooks``
  and 50 webhooks attached (run webhooks and output webhooks).

The primary ratio is taken inside each "ours" interpreter: its total over its own
baseline part (``import airflow.sdk`` + DAG), which cancels the start-up noise between
interpreters; the ratio of separate interpreters is kept as a cross-check.

The ours run also counts socket connects and database engines/connections made while
the provider is imported and attached (there must be none), and lists the notable
modules the provider pulled in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import Deadline, init_airflow_home, paired_ratios, summary, write_result

REPS = 7

_PROGRAM = r"""
import json, sys, time
start = time.perf_counter()
import airflow.sdk
from airflow.sdk import DAG, task

with DAG("parse_bench", schedule=None) as dag:
    previous = None
    for number in range(20):
        @task(task_id=f"step_{number:02d}")
        def step():
            return None
        current = step()
        if previous is not None:
            previous >> current
        previous = current
built = time.perf_counter()
result = {"baseline_seconds": built - start, "tasks": len(dag.task_dict)}

if WITH_WEBHOOKS:
    import socket, sqlite3
    import sqlalchemy
    import sqlalchemy.engine
    calls = {"socket_connect": 0, "sqlite3_connect": 0, "create_engine": 0, "engine_connect": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return wrapper

    socket.socket.connect = counting("socket_connect", socket.socket.connect)
    socket.socket.connect_ex = counting("socket_connect", socket.socket.connect_ex)
    sqlite3.connect = counting("sqlite3_connect", sqlite3.connect)
    sqlalchemy.create_engine = counting("create_engine", sqlalchemy.create_engine)
    sqlalchemy.engine.create_engine = sqlalchemy.create_engine
    sqlalchemy.engine.Engine.connect = counting("engine_connect", sqlalchemy.engine.Engine.connect)
    before = set(sys.modules)
    mark = time.perf_counter()

    from airflow_webhook_provider import FlowWebhook, FlowWebhooks

    imported = time.perf_counter()
    webhooks = FlowWebhooks(*[
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id="bench_webhook",
            on=("success", "failure", "any")[i % 3],
            outputs=[f"step_{i % 20:02d}"] if i % 5 == 0 else None,
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId of $flowId ended: $jobStatus", "n": %d}' % i,
        )
        for i in range(50)
    ])
    webhooks.attach(dag)
    attached = time.perf_counter()
    new = sorted(set(sys.modules) - before)
    notable = ("requests", "urllib3", "airflow_webhook_provider.delivery", "airflow_webhook_provider.delivery.pipeline",
               "airflow_webhook_provider.delivery.sender", "airflow_webhook_provider.delivery.transport",
               "airflow_webhook_provider.delivery.dispatcher", "airflow_webhook_provider.ledger",
               "airflow_webhook_provider.ledger.store")
    result.update(
        import_seconds=imported - mark,
        attach_seconds=attached - imported,
        total_seconds=attached - start,
        calls=calls,
        new_modules=len(new),
        provider_modules=[m for m in new if m.startswith("airflow_webhook_provider")],
        notable_modules=[m for m in notable if m in new],
        dag_callbacks=len(dag.on_success_callback or []) + len(dag.on_failure_callback or []),
    )
else:
    result["total_seconds"] = built - start
print("RESULT " + json.dumps(result))
"""


def measure(with_webhooks: bool) -> dict[str, object]:
    program = _PROGRAM.replace("WITH_WEBHOOKS", repr(with_webhooks))
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        # Not the repository: its copy of the provider would shadow the installed one.
        cwd=os.environ["BENCH_HOME"],
        check=True,
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def main() -> None:
    init_airflow_home()
    deadline = Deadline(140, "DAG-parse cost")
    measure(False)  # the first interpreter start pays for cold disk caches; not counted
    baseline: list[float] = []
    ours: list[float] = []
    runs: list[dict[str, object]] = []
    for rep in range(REPS):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for with_webhooks in order:
            deadline.check()
            run = measure(with_webhooks)
            if with_webhooks:
                ours.append(float(run["total_seconds"]))  # type: ignore[arg-type]
                runs.append(run)
            else:
                baseline.append(float(run["total_seconds"]))  # type: ignore[arg-type]
    last = runs[-1]
    write_result(
        "parse_cost",
        {
            "seconds": {
                "baseline": summary(baseline),
                "ours": summary(ours),
                "ours_import": summary([float(r["import_seconds"]) for r in runs]),  # type: ignore[arg-type]
                "ours_attach": summary([float(r["attach_seconds"]) for r in runs]),  # type: ignore[arg-type]
                "ours_baseline_part": summary([float(r["baseline_seconds"]) for r in runs]),  # type: ignore[arg-type]
            },
            "ratios": {
                # In one interpreter: (import airflow.sdk + DAG + provider + attach) / (import airflow.sdk + DAG).
                # Free of the noise between interpreters, which on a shared machine is larger than the provider.
                "ours_vs_baseline_same_process": summary(
                    [float(r["total_seconds"]) / float(r["baseline_seconds"]) for r in runs]  # type: ignore[arg-type]
                ),
                "ours_vs_baseline_separate_processes": paired_ratios(ours, baseline),
            },
            "calls_during_import_and_attach": last["calls"],
            "provider_modules": last["provider_modules"],
            "notable_modules": last["notable_modules"],
            "new_modules": last["new_modules"],
            "dag_callbacks": last["dag_callbacks"],
        },
    )


if __name__ == "__main__":
    main()
