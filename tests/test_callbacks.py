"""
Trigger rules end to end under ``dag.test()``: a real Airflow (SQLite), a real receiver.

One DAG run produces every final task state at once — ``ok`` succeeds, ``bad`` fails,
``after_bad`` is upstream_failed, ``skipper`` is skipped — and the DAG carries a webhook
for every combination of ``on`` and ``outputs``. An oracle written independently of the
package says which messages must arrive; the receiver must get exactly those.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition

pytestmark = pytest.mark.usefixtures("fast_retries")

TRIGGERS = ("success", "failure", "any")
FAILING_RUN_OUTPUTS = {
    "none": None,
    "ok": ["ok"],
    "bad": ["bad"],
    "after_bad": ["after_bad"],
    "skipper": ["skipper"],
    "all": ["ok", "bad", "after_bad", "skipper"],
}
SUCCEEDING_RUN_OUTPUTS = {"none": None, "ok": ["ok"], "skipper": ["skipper"], "both": ["ok", "skipper"]}

DAG_SOURCE = """
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG({dag_id!r}, schedule=None, catchup=False) as dag:
    @task
    def ok():
        return 1

    @task
    def skipper():
        raise AirflowSkipException("nothing to do")

    ok()
    skipper()
    if {failing!r}:
        @task(retries=0)
        def bad():
            raise RuntimeError("boom")

        @task
        def after_bad():
            return 2

        bad() >> after_bad()

WEBHOOKS = FlowWebhooks(
    *[
        FlowWebhook(
            name=f"{{on}}-{{key}}",
            conn_id="receiver",
            on=on,
            outputs=outputs,
            headers={{"Content-Type": "application/json"}},
            body='{{"w": "$webhookName", "job": "$jobId", "status": "$jobStatus", "out": "$outputName"}}',
        )
        for on in {triggers!r}
        for key, outputs in {outputs!r}.items()
    ]
)
WEBHOOKS.attach(dag)
"""

# The oracle: what each final state means, from the table, not from the package.
MATCHES = {
    "success": {"success"},
    "failed": {"failure"},
    "upstream_failed": {"failure"},
    "skipped": set(),
}


def expected_messages(run_state, task_states, outputs_by_key):
    expected = Counter()
    for on, (key, outputs) in itertools.product(TRIGGERS, outputs_by_key.items()):
        wants = {"success", "failure"} if on == "any" else {on}
        if outputs is None:
            if MATCHES[run_state] & wants:
                expected[(f"{on}-{key}", run_state, "")] += 1
        else:
            for task_id in outputs:
                if MATCHES[task_states[task_id]] & wants:
                    expected[(f"{on}-{key}", task_states[task_id], task_id)] += 1
    return expected


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_BUDGET_SECONDS", "5")


def received(receiver, count):
    """Wait for ``count`` messages, then a little longer to catch any extra one."""
    receiver.wait_for(count, timeout=30)
    receiver.wait_for(count + 1, timeout=1.0)
    return receiver.requests


def run_states(dag_run):
    return dag_run.state, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


class TestTriggerMatrix:
    @pytest.mark.parametrize(
        ("failing", "outputs_by_key", "run_state"),
        [
            pytest.param(True, FAILING_RUN_OUTPUTS, "failed", id="failed-run"),
            pytest.param(False, SUCCEEDING_RUN_OUTPUTS, "success", id="successful-run"),
        ],
    )
    def test_exactly_the_expected_messages(
        self, dag_file, receiver, connect, own_ledger, failing, outputs_by_key, run_state
    ):
        connect("receiver")
        module = dag_file(
            DAG_SOURCE.format(
                dag_id=f"matrix_{run_state}", failing=failing, triggers=TRIGGERS, outputs=outputs_by_key
            )
        )
        dag_run = module.dag.test()

        state, task_states = run_states(dag_run)
        assert state == run_state
        if failing:
            assert task_states == {
                "ok": "success",
                "skipper": "skipped",
                "bad": "failed",
                "after_bad": "upstream_failed",
            }
        else:
            assert task_states == {"ok": "success", "skipper": "skipped"}
        expected = expected_messages(run_state, task_states, outputs_by_key)

        requests = received(receiver, sum(expected.values()))
        bodies = [json.loads(r.body) for r in requests]
        got = Counter((b["w"], b["status"], b["out"]) for b in bodies)
        assert got == expected
        assert {b["job"] for b in bodies} == {dag_run.run_id}
        assert all(r.signature_valid for r in requests), [r.signature_error for r in requests]
        assert len({r.delivery_id for r in requests}) == len(requests)
        # The ledger holds one message per delivery, each delivered once.
        recorded = own_ledger.deliveries(limit=None)
        assert {d.id for d in recorded} == {r.delivery_id for r in requests}
        assert {(d.state, d.attempts) for d in recorded} == {("delivered", 1)}


SIMPLE_DAG = """
from pathlib import Path
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

MARKS = Path({marks!r})

def authors_callback(context):
    with MARKS.open("a") as f:
        f.write("author\\n")

with DAG({dag_id!r}, schedule=None, on_failure_callback=authors_callback) as dag:
    @task(retries=0)
    def work():
        {work_body}

    @task
    def after():
        return 1

    work() >> after()

WEBHOOKS = FlowWebhooks(
    FlowWebhook(name="run", conn_id="receiver", on="any"),
    FlowWebhook(name="work", conn_id="receiver", on="any", outputs=["work"]),
)
WEBHOOKS.attach(dag)
{extra}
"""


class TestAttach:
    def test_attach_twice_does_not_double_send_and_keeps_authors_callbacks(
        self, dag_file, receiver, connect, tmp_path
    ):
        connect("receiver")
        marks = tmp_path / "marks"
        module = dag_file(
            SIMPLE_DAG.format(
                marks=str(marks),
                dag_id="attach_twice",
                work_body='raise RuntimeError("x")',
                extra="WEBHOOKS.attach(dag)",
            )
        )
        module.dag.test()
        requests = received(receiver, 2)
        assert sorted(json.loads(r.body)["webhookName"] for r in requests) == ["run", "work"]
        assert marks.read_text() == "author\n"

    def test_unknown_output_is_refused_naming_the_task(self, dag_file, connect):
        with pytest.raises(
            InvalidWebhookDefinition, match=r"'typo'.*'outputs'.*'wrok' is not a task of DAG 'bad_output'"
        ):
            dag_file(
                SIMPLE_DAG.format(
                    marks="/dev/null",
                    dag_id="bad_output",
                    work_body="return 1",
                    extra='FlowWebhooks(FlowWebhook(name="typo", conn_id="receiver", outputs=["wrok"])).attach(dag)',
                )
            )

    def test_same_name_with_another_definition_is_refused(self, dag_file):
        with pytest.raises(InvalidWebhookDefinition, match=r"'run'.*already has a different webhook"):
            dag_file(
                SIMPLE_DAG.format(
                    marks="/dev/null",
                    dag_id="dup_name",
                    work_body="return 1",
                    extra='FlowWebhooks(FlowWebhook(name="run", conn_id="other")).attach(dag)',
                )
            )

    def test_limit_counts_every_attach(self, dag_file, monkeypatch):
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__MAX_WEBHOOKS_PER_FLOW", "3")
        extra = (
            'FlowWebhooks(FlowWebhook(name="a", conn_id="r"), FlowWebhook(name="b", conn_id="r")).attach(dag)'
        )
        with pytest.raises(InvalidWebhookDefinition, match=r"4 flow webhooks, more than the 3 allowed"):
            dag_file(
                SIMPLE_DAG.format(marks="/dev/null", dag_id="too_many", work_body="return 1", extra=extra)
            )

    def test_a_bad_definition_is_a_dag_import_error(self, airflow_db, tmp_path):
        from airflow.dag_processing.dagbag import DagBag

        (tmp_path / "broken.py").write_text(
            "from airflow.sdk import DAG\n"
            "from airflow_webhook_provider import FlowWebhook, FlowWebhooks\n"
            "with DAG('broken', schedule=None) as dag:\n"
            "    pass\n"
            "FlowWebhooks(FlowWebhook(name='ping', conn_id='r', method='GET', body='x')).attach(dag)\n"
        )
        bag = DagBag(dag_folder=str(tmp_path))
        (error,) = bag.import_errors.values()
        assert "flow webhook 'ping': field 'body': a body is sent only with POST, PUT or PATCH" in error
        assert "broken" not in bag.dags


class TestNeverHurtTheRun:
    @pytest.mark.parametrize(
        "reply",
        [
            pytest.param({"status": 500}, id="http-500"),
            pytest.param({"status": 200, "delay_seconds": 3}, id="timeout"),
            pytest.param({"reset": True}, id="connection-reset"),
        ],
    )
    @pytest.mark.parametrize(
        "work_body", ['raise RuntimeError("x")', "return 1"], ids=["failing", "succeeding"]
    )
    def test_failing_receiver_leaves_states_unchanged(
        self, dag_file, receiver, connect, reply, work_body, tmp_path
    ):
        from airflow_webhook_provider.receiver import Reply

        source = SIMPLE_DAG.format(
            marks=str(tmp_path / "m"), dag_id="harmless", work_body=work_body, extra=""
        )
        baseline = source.replace("WEBHOOKS.attach(dag)", "").replace("'harmless'", "'harmless_baseline'")
        expected = run_states(dag_file(baseline).dag.test())

        connect("receiver", timeout=0.5)
        receiver.default = Reply(**reply)
        got = run_states(dag_file(source).dag.test())

        assert got == expected
        assert receiver.requests, "the webhooks were attempted"
