"""FlowWebhookNotifier attached by hand, and concurrent fan-out, under dag.test()."""

from __future__ import annotations

import json

import pytest

from airflow_webhook_provider import FlowWebhookNotifier
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.receiver import Reply

NOTIFIER_DAG = """
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhookNotifier

with DAG(
    {dag_id!r},
    schedule=None,
    on_failure_callback=FlowWebhookNotifier(
        name="dag-level",
        conn_id="receiver",
        headers={{"Content-Type": "application/json"}},
        body='{{"dag": "{{{{ dag.dag_id }}}}", "job": "$jobId", "status": "$jobStatus", "out": "$outputName"}}',
    ),
    on_success_callback=FlowWebhookNotifier(name="never", conn_id="receiver", on="failure"),
) as dag:
    @task(
        retries=0,
        on_success_callback=FlowWebhookNotifier(name="task-ok", conn_id="receiver", body="$outputName=$jobStatus"),
        on_failure_callback=FlowWebhookNotifier(name="task-bad", conn_id="receiver", body="$outputName=$jobStatus"),
    )
    def first():
        return 1

    @task(retries=0, on_failure_callback=FlowWebhookNotifier(name="t2", conn_id="receiver", body="$outputName=$jobStatus"))
    def second():
        raise RuntimeError("x")

    first() >> second()
"""


def test_dag_and_task_level_notifiers(dag_file, receiver, connect, own_ledger):
    connect("receiver")
    dag_run = dag_file(NOTIFIER_DAG.format(dag_id="notified")).dag.test()
    assert dag_run.state == "failed"

    receiver.wait_for(3, timeout=30)
    requests = receiver.wait_for(4, timeout=1)
    bodies = sorted(r.body for r in requests)
    assert len(requests) == 3
    assert b"first=success" in bodies and b"second=failed" in bodies
    (dag_message,) = [json.loads(b) for b in bodies if b.startswith(b"{")]
    assert dag_message == {"dag": "notified", "job": dag_run.run_id, "status": "failed", "out": ""}
    assert all(r.signature_valid for r in requests)
    # The notifier records through the pipeline: one delivered message per request.
    recorded = own_ledger.deliveries(limit=None)
    assert {d.id for d in recorded} == {r.delivery_id for r in requests}
    assert {d.state for d in recorded} == {"delivered"}


def test_notifier_with_failing_receiver_does_not_fail_the_task(dag_file, receiver, connect, monkeypatch):
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "1")
    connect("receiver")
    receiver.default = Reply(500)
    source = NOTIFIER_DAG.format(dag_id="notified_down").replace('raise RuntimeError("x")', "return 2")
    dag_run = dag_file(source).dag.test()
    assert dag_run.state == "success"
    assert {ti.task_id: ti.state for ti in dag_run.get_task_instances()} == {
        "first": "success",
        "second": "success",
    }
    assert len(receiver.wait_for(1, timeout=10)) == 1  # first's success notifier tried; answered 500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"body": "{{ ds }} $jobid"},
            r"'n'.*'body'.*did you mean \$jobId",
            id="unknown-reference-beside-jinja",
        ),
        pytest.param({"method": "GET", "body": "x"}, r"'n'.*'body'.*POST", id="body-with-get"),
        pytest.param({"conn_id": None}, r"'n'.*exactly one of conn_id", id="no-endpoint"),
        pytest.param({"on": "late"}, r"'n'.*'on'.*cannot report a late run.*attach\(dag\)", id="late"),
    ],
)
def test_notifier_definition_errors_at_parse_time(kwargs, message):
    with pytest.raises(InvalidWebhookDefinition, match=message):
        FlowWebhookNotifier(**{"name": "n", "conn_id": "receiver", **kwargs})


FAN_OUT_DAG = """
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG({dag_id!r}, schedule=None) as dag:
    @task
    def only():
        return 1
    only()

FlowWebhooks(*[FlowWebhook(name=f"w{{i}}", conn_id="receiver", on="success") for i in range({count})]).attach(dag)
"""


def test_all_webhooks_of_one_event_are_in_flight_together(dag_file, receiver, connect):
    """Each answer takes 0.5 s; a sequential sender would never have two requests open at once.

    The connection allows 30 requests at once; its default limit (10) is tested with the limits.
    """
    connect("receiver", max_concurrency=30)
    receiver.default = Reply(200, delay_seconds=0.5)
    dag_file(FAN_OUT_DAG.format(dag_id="fan_out", count=30)).dag.test()
    requests = receiver.wait_for(30, timeout=30)
    assert len(requests) == 30
    assert len({json.loads(r.body)["webhookName"] for r in requests}) == 30
    assert receiver.max_in_flight == 30
