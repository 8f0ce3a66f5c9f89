"""
Every run end is delivered, however the run ended.

Real api-server, scheduler, dag-processor and dispatcher (LocalExecutor, SQLite), a
receiver on 127.0.0.1. Each case ends a run one way and expects exactly the messages an
oracle derives from the run's final state and its tasks' final states (from the REST
API), each once and signed, within 60 s of the run's end:

1. a run marked failed through the REST API while its task runs (the UI's "Mark as failed");
2. a run marked success the same way;
3. an output task marked failed through the REST API;
4. a run that exceeds its ``dagrun_timeout``;
5. a run that fails while the DAG processor is down (killed): the run-end callbacks
   cannot run, the listeners in the scheduler capture the end;
6. that failed run cleared and run again, the DAG processor still down: a second full
   set, not a set whose upstream_failed message a late callback dropped.

When the DAG processor comes back and runs its late callbacks, nothing is sent twice.
The listener path is run again with the ledger on the machine's PostgreSQL, and with a
ledger that cannot be reached, which must not fail the scheduler or the API request.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection, postgres_database

pytestmark = pytest.mark.airflow_components

#: Airflow 3.3's API server also calls the task hooks of the task instances a run mark ends;
#: 3.2's calls only the run's, whose end reconciles those outputs.
RUN_MARK_CALLS_TASK_HOOKS = Version(airflow_version) >= Version("3.3")

DAGS = """
import datetime
import time

from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
BODY = '{"w": "$webhookName", "job": "$jobId", "status": "$jobStatus", "out": "$outputName"}'

with DAG("ends_long", schedule=None, start_date=START, catchup=False) as ends_long:
    @task
    def sleeper():
        time.sleep(600)

    sleeper()

with DAG(
    "ends_timeout", schedule=None, start_date=START, catchup=False, dagrun_timeout=datetime.timedelta(seconds=6)
) as ends_timeout:
    @task
    def slow():
        time.sleep(120)

    slow()

with DAG("ends_boom", schedule=None, start_date=START, catchup=False) as ends_boom:
    @task(retries=0)
    def boom():
        raise RuntimeError("boom")

    @task
    def after_boom():
        return 1

    @task
    def ok():
        return 1

    boom() >> after_boom()
    ok()

for dag, outputs in ((ends_long, ["sleeper"]), (ends_timeout, ["slow"])):
    FlowWebhooks(
        FlowWebhook(name="run", conn_id="receiver", on="any", body=BODY),
        FlowWebhook(name="out", conn_id="receiver", on="any", outputs=outputs, body=BODY),
    ).attach(dag)

FlowWebhooks(
    FlowWebhook(name="run", conn_id="receiver", on="any", body=BODY),
    FlowWebhook(name="out-fail", conn_id="receiver", on="failure", outputs=["boom", "after_boom"], body=BODY),
    FlowWebhook(name="out-any", conn_id="receiver", on="any", outputs=["boom", "after_boom", "ok"], body=BODY),
).attach(ends_boom)
"""

#: The oracle, from the issue's table, not from the package: webhook -> (on, outputs).
WEBHOOKS = {
    "ends_long": {"run": ("any", None), "out": ("any", ["sleeper"])},
    "ends_timeout": {"run": ("any", None), "out": ("any", ["slow"])},
    "ends_boom": {
        "run": ("any", None),
        "out-fail": ("failure", ["boom", "after_boom"]),
        "out-any": ("any", ["boom", "after_boom", "ok"]),
    },
}
EVENTS = {"success": "success", "failed": "failure", "upstream_failed": "failure"}


def expected(
    dag_id: str, run_id: str, run_state: str, task_states: dict[str, Any]
) -> Counter[tuple[str, ...]]:
    found: Counter[tuple[str, ...]] = Counter()
    for name, (on, outputs) in WEBHOOKS[dag_id].items():
        for output, state in [("", run_state)] if outputs is None else [(t, task_states[t]) for t in outputs]:
            event = EVENTS.get(state or "")
            if event is not None and on in ("any", event):
                found[(run_id, name, state, output)] += 1
    return found


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Case:
    """One way of ending runs, against one deployment and receiver."""

    def __init__(self, airflow: AirflowDeployment, receiver: RecordingReceiver) -> None:
        self.airflow = airflow
        self.receiver = receiver
        self.expected: Counter[tuple[str, ...]] = Counter()
        self.ends: dict[str, float] = {}

    def wait_running(self, dag_id: str, run_id: str, task_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.airflow.task_states(dag_id, run_id).get(task_id) != "running":
            assert time.monotonic() < deadline, f"{task_id} of {run_id} never started"
            time.sleep(0.5)

    def ended(self, dag_id: str, run_id: str) -> Counter[tuple[str, ...]]:
        """Add what this ended run must send to the expectation, and wait until it arrived."""
        run = self.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
        assert run["state"] in ("success", "failed"), run
        self.ends[run_id] = _seconds(run["end_date"])
        wanted = expected(dag_id, run_id, run["state"], self.airflow.task_states(dag_id, run_id))
        self.expected += wanted
        self.receiver.wait_for(sum(self.expected.values()), timeout=60)
        return wanted

    def mark_run(self, dag_id: str, state: str) -> str:
        run_id = self.airflow.trigger(dag_id)
        self.wait_running(dag_id, run_id, "sleeper")
        patched = self.airflow.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})
        assert patched.status_code == 200, patched.text
        return run_id

    def received(self) -> Counter[tuple[str, ...]]:
        return Counter(
            (b["job"], b["w"], b["status"], b["out"])
            for b in (json.loads(r.body) for r in self.receiver.requests)
        )

    def check(self) -> None:
        assert self.received() == self.expected
        assert all(r.signature_valid for r in self.receiver.requests)
        assert len({r.delivery_id for r in self.receiver.requests}) == len(self.receiver.requests)
        for request in self.receiver.requests:
            run_id = json.loads(request.body)["job"]
            assert request.received_at - self.ends[run_id] < 60, (
                run_id,
                request.received_at - self.ends[run_id],
            )


def _deployment(tmp_path: Path, receiver: RecordingReceiver, **extra: str) -> AirflowDeployment:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ends.py").write_text(DAGS)
    env = {"AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/hook")), **extra}
    return AirflowDeployment(tmp_path, dags, extra_env=env)


def _captures(airflow: AirflowDeployment) -> Counter[tuple[str, str]]:
    listing = json.loads(airflow.provider_cli("deliveries", "list", "--limit", "1000", "-o", "json").stdout)
    return Counter((row["dag_id"], row["capture"]) for row in listing)


def test_every_run_end_is_delivered_exactly_once_however_the_run_ended(tmp_path: Path) -> None:
    with RecordingReceiver(secret=SECRET) as receiver, _deployment(tmp_path, receiver) as airflow:
        airflow.start("api-server", "scheduler", "dag-processor", "dispatcher")
        for dag_id in WEBHOOKS:
            airflow.wait_for_dag(dag_id, timeout=240)
        case = Case(airflow, receiver)
        table = []

        run_id = case.mark_run("ends_long", "failed")
        table.append(("run marked failed (REST) while its task runs", case.ended("ends_long", run_id)))
        run_id = case.mark_run("ends_long", "success")
        table.append(("run marked success (REST) while its task runs", case.ended("ends_long", run_id)))

        run_id = airflow.trigger("ends_long")
        case.wait_running("ends_long", run_id, "sleeper")
        patched = airflow.api(
            "PATCH",
            f"/api/v2/dags/ends_long/dagRuns/{run_id}/taskInstances/sleeper",
            json={"new_state": "failed"},
        )
        assert patched.status_code == 200, patched.text
        assert airflow.wait_for_run("ends_long", run_id, timeout=120) == "failed"
        table.append(("output task marked failed (REST)", case.ended("ends_long", run_id)))

        run_id = airflow.trigger("ends_timeout")
        assert airflow.wait_for_run("ends_timeout", run_id, timeout=120) == "failed"
        table.append(("dagrun_timeout", case.ended("ends_timeout", run_id)))

        airflow.kill("dag-processor")
        run_id = airflow.trigger("ends_boom")
        assert airflow.wait_for_run("ends_boom", run_id, timeout=120) == "failed"
        table.append(("DAG processor down when the run fails", case.ended("ends_boom", run_id)))

        cleared = airflow.api(
            "POST", f"/api/v2/dags/ends_boom/dagRuns/{run_id}/clear", json={"dry_run": False}
        )
        assert cleared.status_code == 200, cleared.text
        deadline = time.monotonic() + 120
        while not (
            airflow.run_state("ends_boom", run_id) == "failed"
            and airflow.task_states("ends_boom", run_id)["boom"] == "failed"
        ):
            assert time.monotonic() < deadline, "the cleared run did not end again"
            time.sleep(1)
        before = sum(case.expected.values())
        table.append(
            ("failed run cleared and run again, DAG processor down", case.ended("ends_boom", run_id))
        )
        assert sum(case.expected.values()) == before + 6
        case.check()  # while the DAG processor is still down

        # The DAG processor comes back and runs the run-end callbacks it missed: nothing twice.
        airflow.start("dag-processor")
        time.sleep(40)
        case.check()
        captures = _captures(airflow)

    print("\n| how the run or output ended | messages (each once, signed) |\n|---|---|")
    for how, messages in table:
        print(
            f"| {how} | {sum(messages.values())}: "
            + ", ".join(f"{w} {s} {o}".strip() for _, w, s, o in sorted(messages))
            + " |"
        )
    print(f"captured by: {dict(captures)}")


@pytest.mark.parametrize("ledger", ["postgresql"])
def test_the_listener_path_on_a_postgres_ledger(tmp_path: Path, ledger: str) -> None:
    with postgres_database() as connection, RecordingReceiver(secret=SECRET) as receiver:
        extra = {
            "AIRFLOW_CONN_SHARED_LEDGER": json.dumps(connection),
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "shared_ledger",
        }
        with _deployment(tmp_path, receiver, **extra) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor", "dispatcher")
            airflow.wait_for_dag("ends_long", timeout=240)
            airflow.wait_for_dag("ends_boom", timeout=240)
            case = Case(airflow, receiver)
            case.ended("ends_long", case.mark_run("ends_long", "failed"))
            airflow.kill("dag-processor")
            run_id = airflow.trigger("ends_boom")
            assert airflow.wait_for_run("ends_boom", run_id, timeout=120) == "failed"
            case.ended("ends_boom", run_id)
            case.check()
            captures = _captures(airflow)
    # Both from the API server that marked the run.
    from_api_server = {"listener": 2} if RUN_MARK_CALLS_TASK_HOOKS else {"listener": 1, "reconciled": 1}
    marked = {capture: n for (dag_id, capture), n in captures.items() if dag_id == "ends_long"}
    assert marked == from_api_server
    assert captures[("ends_boom", "listener")] >= 1  # the run message, from the scheduler


def test_an_unreachable_ledger_fails_neither_the_scheduler_nor_the_request(tmp_path: Path) -> None:
    unreachable = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 1,
        "login": "postgres",
        "schema": "x",
    }
    with RecordingReceiver(secret=SECRET) as receiver:
        extra = {
            "AIRFLOW_CONN_GONE_LEDGER": json.dumps(unreachable),
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "gone_ledger",
        }
        with _deployment(tmp_path, receiver, **extra) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor")
            airflow.wait_for_dag("ends_long", timeout=240)
            airflow.wait_for_dag("ends_boom", timeout=240)
            case = Case(airflow, receiver)
            run_id = case.mark_run("ends_long", "failed")  # the PATCH answered 200
            assert airflow.run_state("ends_long", run_id) == "failed"
            # The scheduler goes on scheduling (a component that died would fail this wait).
            second = airflow.trigger("ends_boom")
            assert airflow.wait_for_run("ends_boom", second, timeout=180) == "failed"
            # Callbacks that cannot record still send, without a record: nothing is lost.
            receiver.wait_for(1, timeout=60)
            time.sleep(5)
            api_log = airflow.log_tail("api-server", n=5000)
            scheduler_log = airflow.log_tail("scheduler", n=5000)
    sent = {(b["job"], b["w"]) for b in (json.loads(r.body) for r in receiver.requests)}
    assert (second, "run") in sent
    # Each listener failed in its writer thread, logged, and left its caller alone.
    assert f"recording RunEnd(dag_id='ends_long', run_id='{run_id}'" in api_log
    assert f"recording RunEnd(dag_id='ends_boom', run_id='{second}'" in scheduler_log
