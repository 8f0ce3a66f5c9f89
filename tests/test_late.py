"""``on="late"``: a run still not finished ``late_after`` after it was queued, sent from Airflow's deadline alerts.

In-process, with real parts: the definition's rules and its definition files, what
``attach`` gives the DAG (a ``DeadlineAlert`` on ``DAGRUN_QUEUED_AT`` whose ``AsyncCallback``
holds the definition), the message a passed deadline calls for, and the callback itself,
run by Airflow's own ``CallbackTrigger`` with the kwargs and context the scheduler gives it,
against a recording receiver and a hung one. The real scheduler and triggerer are in
tests/test_late_deployment.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_webhook_provider.capture import deadline
from airflow_webhook_provider.capture.attach import FlowWebhooks, find_registry
from airflow_webhook_provider.capture.deadline import LATE_CALLBACK_PATH, late_messages, on_late_run
from airflow_webhook_provider.core.definitions import FlowWebhook, WebhookSet
from airflow_webhook_provider.core.identity import delivery_id
from airflow_webhook_provider.delivery.pipeline import DeliveryMode, Pipeline
from airflow_webhook_provider.face.plugins.page import TabUrls, render_page
from tests.conftest import REPO, SECRET, flow_webhook_connection
from tests.servers import HungReceiver
from tests.test_cli import cli

DAG_ID = "nightly_load"
RUN_ID = "manual__2026-05-01T00:00:00+00:00"
QUEUED = datetime(2026, 5, 1, 0, 0, 5, tzinfo=timezone.utc)
LATE_AFTER = timedelta(seconds=15)
DEADLINE = QUEUED + LATE_AFTER


def late_webhook(**changes: Any) -> FlowWebhook:
    return FlowWebhook(
        **{"name": "still-running", "conn_id": "receiver", "on": "late", "late_after": LATE_AFTER, **changes}
    )


def context(state: str = "running", end: datetime | None = None, **run: Any) -> dict[str, Any]:
    """The context Airflow 3.3's scheduler gives the callback (``Deadline.handle_miss``): the run as JSON."""
    return {
        "dag_run": {
            "dag_run_id": RUN_ID,
            "dag_id": DAG_ID,
            "logical_date": "2026-05-01T00:00:00Z",
            "queued_at": QUEUED.isoformat().replace("+00:00", "Z"),
            "start_date": "2026-05-01T00:00:07Z",
            "end_date": end.isoformat().replace("+00:00", "Z") if end is not None else None,
            "state": state,
            **run,
        },
        "deadline": {"id": str(uuid.uuid4()), "deadline_time": DEADLINE},
    }


def kwargs_of(webhook: FlowWebhook, dag_id: str = DAG_ID) -> dict[str, Any]:
    """The callback's kwargs, as the alert ``attach`` builds holds them."""
    alert = deadline.late_alert(dag_id, webhook)
    return dict(alert.callback.kwargs)


def manual_signature_ok(header: str | None, body: bytes, secret: str) -> bool:
    """Check ``X-Webhook-Signature`` as the manual describes it, independently of the package's own code."""
    assert header is not None
    parts = dict(part.split("=", 1) for part in header.split(","))
    timestamp = parts["t"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() * 1000 - int(timestamp)) <= 300_000
    return fresh and hmac.compare_digest(parts["sha256"], expected)


class TestDefinition:
    @pytest.mark.parametrize(
        "late_after",
        [
            pytest.param(timedelta(minutes=90), id="timedelta"),
            pytest.param(5400, id="seconds"),
            pytest.param(5400.0, id="seconds-float"),
            pytest.param("PT1H30M", id="iso-8601"),
        ],
    )
    def test_late_after_is_a_timedelta_seconds_or_an_iso_8601_duration(self, late_after: Any) -> None:
        assert late_webhook(late_after=late_after).late_after == timedelta(minutes=90)

    def test_a_definition_file_round_trips_with_an_iso_8601_duration(self, tmp_path: Path) -> None:
        path = tmp_path / "webhooks.yaml"
        path.write_text(
            "webhooks:\n  - name: still-running\n    conn_id: receiver\n    on: late\n    late_after: 900\n"
        )
        (webhook,) = FlowWebhooks.from_file(path)
        assert webhook == late_webhook(late_after=timedelta(minutes=15))
        dumped = WebhookSet(webhook).dump()
        assert "late_after: PT15M" in dumped
        assert list(WebhookSet.from_text(dumped)) == [webhook]

    @pytest.fixture
    def schema(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(
            json.loads((REPO / "schemas" / "flow-webhooks.schema.json").read_text())
        )

    @pytest.mark.parametrize("late_after", ["PT15M", 900], ids=["iso-8601", "seconds"])
    def test_the_published_schema_accepts_a_late_webhook(
        self, schema, late_after: Any, tmp_path: Path
    ) -> None:
        document = {"webhooks": [{"name": "l", "conn_id": "c", "on": "late", "late_after": late_after}]}
        assert not list(schema.iter_errors(document))
        path = tmp_path / "late.json"
        path.write_text(json.dumps(document))
        assert cli("validate", path)[0] == 0

    @pytest.mark.parametrize(
        "webhook",
        [
            pytest.param({"on": "late"}, id="late-without-late-after"),
            pytest.param({"on": "success", "late_after": 60}, id="late-after-without-late"),
            pytest.param({"late_after": 60}, id="late-after-with-the-default-on"),
            pytest.param({"on": "late", "late_after": 0}, id="late-after-zero"),
            pytest.param({"on": "late", "late_after": 60, "outputs": ["load"]}, id="late-with-outputs"),
        ],
    )
    def test_the_schema_and_validate_refuse_what_the_model_refuses(
        self, schema, webhook, tmp_path: Path
    ) -> None:
        document = {"webhooks": [{"name": "l", "conn_id": "c", **webhook}]}
        assert list(schema.iter_errors(document))
        path = tmp_path / "late.json"
        path.write_text(json.dumps(document))
        code, _, err = cli("validate", path)
        assert code == 1
        assert "webhooks[0]: flow webhook 'l'" in err


async def page_someone(**kwargs: Any) -> None:
    """A deadline alert's callback of the DAG author's own."""


def _dag(**kwargs: Any) -> Any:
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    with DAG(f"late_{uuid.uuid4().hex[:8]}", schedule=None, **kwargs) as dag:
        BaseOperator(task_id="load")
    return dag


class TestAttach:
    def test_a_late_webhook_becomes_a_deadline_alert_on_the_run_s_queued_time(self) -> None:
        from airflow.sdk import AsyncCallback, DeadlineReference

        webhook = late_webhook()
        dag = FlowWebhooks(webhook).attach(_dag())
        (alert,) = dag.deadline
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
        assert alert.interval == LATE_AFTER
        assert isinstance(alert.callback, AsyncCallback)
        assert (
            alert.callback.path
            == LATE_CALLBACK_PATH
            == "airflow_webhook_provider.capture.deadline.on_late_run"
        )
        assert alert.callback.kwargs == {
            "dag_id": dag.dag_id,
            "webhook": {"name": "still-running", "conn_id": "receiver", "on": "late", "late_after": "PT15S"},
        }
        if hasattr(alert, "name"):  # Airflow 3.3 (3.2's alerts have no name)
            assert alert.name == "flow webhook still-running"
        # A late webhook needs no run-end callback of its own.
        assert not dag.on_success_callback and not dag.on_failure_callback

    def test_attaching_again_adds_nothing_and_the_author_s_alerts_stay(self) -> None:
        from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

        own = DeadlineAlert(
            reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
            interval=timedelta(hours=6),
            callback=AsyncCallback(page_someone),
        )
        dag = _dag(deadline=own)
        webhooks = FlowWebhooks(late_webhook(), late_webhook(name="very-late", late_after=timedelta(hours=1)))
        webhooks.attach(dag)
        webhooks.attach(dag)
        assert [alert.interval for alert in dag.deadline] == [
            timedelta(hours=6),
            LATE_AFTER,
            timedelta(hours=1),
        ]

    def test_a_dag_with_only_late_webhooks_finds_them_for_the_listeners_and_export(self) -> None:
        dag = FlowWebhooks(late_webhook()).attach(_dag())
        registry = find_registry(dag)
        assert registry is not None
        assert registry.webhooks == (late_webhook(),)
        # A name taken by a different definition is refused on the next attach, as for any webhook.
        with pytest.raises(ValueError, match="already has a different webhook of that name"):
            FlowWebhooks(late_webhook(late_after=timedelta(hours=3))).attach(dag)

    def test_next_to_end_webhooks_the_registry_holds_both(self) -> None:
        ended = FlowWebhook(name="failed", conn_id="receiver", on="failure")
        dag = FlowWebhooks(ended, late_webhook()).attach(_dag())
        registry = find_registry(dag)
        assert registry is not None and registry.webhooks == (ended, late_webhook())
        assert len(dag.deadline) == 1

    def test_the_dag_serialises_with_the_alert_the_triggerer_needs(self) -> None:
        from airflow.serialization.serialized_objects import DagSerialization

        dag = FlowWebhooks(late_webhook()).attach(_dag())
        (encoded,) = DagSerialization.to_dict(dag)["dag"]["deadline"]
        assert encoded["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}
        interval = encoded["interval"]  # seconds; Airflow 3.3 wraps them in its serde envelope
        assert (interval["__data__"] if isinstance(interval, dict) else interval) == 15.0
        callback = encoded["callback"]["__data__"]
        assert callback["path"] == LATE_CALLBACK_PATH
        assert FlowWebhook.from_mapping(callback["kwargs"]["webhook"]) == late_webhook()


class TestLateMessages:
    def _messages(
        self, ctx: dict[str, Any] | None, webhook: FlowWebhook | None = None
    ) -> tuple[list[Any], str]:
        return late_messages(
            dag_id=DAG_ID,
            webhook=kwargs_of(webhook or late_webhook())["webhook"],
            context=ctx,
            base_url="http://airflow.example",
        )

    def test_a_run_still_running_at_its_deadline_gets_one_late_message(self) -> None:
        (message,), why = self._messages(context("running"))
        assert why == f"run {RUN_ID} of DAG {DAG_ID} is late (running)"
        assert message.id == delivery_id(
            dag_id=DAG_ID,
            run_id=RUN_ID,
            clear_number=0,
            webhook="code:still-running",
            output="",
            event="late",
        )
        assert (message.event, message.job_status, message.output_name, message.capture) == (
            "late",
            "late",
            "",
            "callback",
        )
        assert message.event_at == DEADLINE.timestamp()
        assert message.refs == {
            "jobId": RUN_ID,
            "jobStatus": "late",
            "flowId": DAG_ID,
            "outputName": "",
            "logicalDate": "2026-05-01T00:00:00+00:00",
            "jobUrl": f"http://airflow.example/dags/{DAG_ID}/runs/manual__2026-05-01T00%3A00%3A00%2B00%3A00",
            "webhookName": "still-running",
            "deliveryId": message.id,
        }

    def test_the_same_deadline_seen_twice_is_the_same_message(self) -> None:
        assert self._messages(context("queued"))[0][0].id == self._messages(context("running"))[0][0].id

    @pytest.mark.parametrize("state", ["success", "failed"])
    def test_a_run_that_ended_in_time_gets_none(self, state: str) -> None:
        # Airflow deletes the deadline of a run that succeeds in time, but runs the callback of one
        # that failed in time (or was marked by hand): the end decides.
        messages, why = self._messages(context(state, end=DEADLINE - timedelta(seconds=1)))
        assert messages == []
        assert why == f"run {RUN_ID} of DAG {DAG_ID} ended {state} in time; no late message"

    def test_a_run_that_ended_after_its_deadline_was_late(self) -> None:
        messages, _ = self._messages(context("success", end=DEADLINE + timedelta(seconds=2)))
        assert [m.job_status for m in messages] == ["late"]

    @pytest.mark.parametrize("ctx", [None, {}, {"dag_run": {}}], ids=["none", "empty", "no-run"])
    def test_without_a_run_in_the_context_nothing_is_sent(self, ctx: Any) -> None:
        messages, why = self._messages(ctx)
        assert messages == [] and "names no run" in why

    def test_the_body_renders_late(self, receiver, connect) -> None:
        connect("receiver")
        webhook = late_webhook(
            headers={"Content-Type": "application/json"}, body='{"text": "$flowId run $jobId is $jobStatus"}'
        )
        (message,), _ = self._messages(context(), webhook)
        (result,) = Pipeline.from_config().submit([message])
        assert result.delivered
        (request,) = receiver.requests
        assert json.loads(request.body) == {"text": f"{DAG_ID} run {RUN_ID} is late"}


def run_callback(webhook: FlowWebhook, ctx: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Run the callback as the triggerer does: Airflow's CallbackTrigger with the alert's kwargs and the context."""
    from airflow.triggers.callback import CallbackTrigger

    trigger = CallbackTrigger(
        callback_path=LATE_CALLBACK_PATH, callback_kwargs={**kwargs_of(webhook), "context": ctx}
    )

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(events())


class TestCallback:
    def test_without_a_dispatcher_it_sends_one_signed_late_message_inline(
        self, receiver, connect, own_ledger
    ) -> None:
        connect("receiver")
        events = run_callback(late_webhook(), context())
        assert [event["state"] for event in events] == ["running", "success"]
        (request,) = receiver.requests
        body = json.loads(request.body)
        assert (body["jobStatus"], body["jobId"], body["flowId"]) == ("late", RUN_ID, DAG_ID)
        assert manual_signature_ok(request.header("X-Webhook-Signature"), request.body, SECRET)
        (row,) = own_ledger.deliveries(dag_id=DAG_ID, run_id=RUN_ID)
        assert (row.id, row.event, row.state) == (request.delivery_id, "late", "delivered")
        assert events[-1]["body"].endswith(f"delivery {row.id}, delivered inline (HTTP 200)")

    def test_run_twice_it_is_still_one_message(self, receiver, connect, own_ledger) -> None:
        connect("receiver")
        run_callback(late_webhook(), context())
        run_callback(late_webhook(), context())  # a triggerer took the callback over
        assert len(receiver.requests) == 1
        assert len(own_ledger.deliveries(dag_id=DAG_ID)) == 1

    def test_with_a_dispatcher_alive_it_only_records(self, receiver, connect, own_ledger) -> None:
        connect("receiver")
        own_ledger.heartbeat("dispatcher@test:1")
        events = run_callback(late_webhook(), context())
        assert events[-1]["body"].endswith("recorded for the dispatcher")
        (row,) = own_ledger.deliveries(dag_id=DAG_ID)
        assert (row.event, row.state) == ("late", "pending")
        assert receiver.requests == []

    def test_a_run_that_ended_in_time_records_nothing(self, receiver, connect, own_ledger) -> None:
        connect("receiver")
        events = run_callback(late_webhook(), context("failed", end=DEADLINE - timedelta(seconds=3)))
        assert events[-1] == {
            "state": "success",
            "body": f"run {RUN_ID} of DAG {DAG_ID} ended failed in time; no late message",
        }
        assert own_ledger.deliveries(dag_id=DAG_ID) == []
        assert receiver.requests == []

    def test_a_definition_that_no_longer_validates_is_reported_not_raised(self, own_ledger) -> None:
        from airflow.triggers.callback import CallbackTrigger

        broken = {"dag_id": DAG_ID, "webhook": {"name": "still-running", "conn_id": "receiver", "on": "late"}}
        trigger = CallbackTrigger(
            callback_path=LATE_CALLBACK_PATH, callback_kwargs={**broken, "context": context()}
        )

        async def events() -> list[dict[str, Any]]:
            return [event.payload async for event in trigger.run()]

        last = asyncio.run(events())[-1]
        assert last["state"] == "success"
        assert "its definition no longer validates" in last["body"] and "late_after" in last["body"]
        assert own_ledger.deliveries(dag_id=DAG_ID) == []

    @staticmethod
    def _callback_and_loop_ticks(webhook: FlowWebhook) -> tuple[str, int, float]:
        """Run the callback on an event loop that also ticks every 50 ms; return what it said, the ticks, the time."""

        async def run() -> tuple[str, int, float]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.05)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            started = time.monotonic()
            said = await on_late_run(**kwargs_of(webhook), context=context())
            took = time.monotonic() - started
            ticker.cancel()
            return said, ticks, took

        return asyncio.run(run())

    def test_a_hung_receiver_costs_the_retry_budget_and_never_holds_the_event_loop(
        self, monkeypatch, own_ledger
    ) -> None:
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_BUDGET_SECONDS", "1")
        with HungReceiver() as hung:
            monkeypatch.setenv("AIRFLOW_CONN_RECEIVER", flow_webhook_connection(hung.url("/late")))
            said, ticks, took = self._callback_and_loop_ticks(late_webhook())
        assert "not delivered inline yet (ReadTimeout" in said and "redelivery retries it" in said
        assert took < 2.0
        assert ticks >= 0.6 * took / 0.05  # the loop kept running while the request hung
        (row,) = own_ledger.deliveries(dag_id=DAG_ID)
        assert (row.event, row.state) == ("late", "failed")  # recorded: redelivery sends it later

    def test_whatever_holds_the_work_the_callback_returns_in_time(self, monkeypatch) -> None:
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_BUDGET_SECONDS", "1")
        monkeypatch.setattr(deadline, "_MARGIN_SECONDS", 0.5)
        monkeypatch.setattr(deadline, "_record_and_send", lambda *args: time.sleep(3))  # a ledger that hangs
        said, ticks, took = self._callback_and_loop_ticks(late_webhook())
        deadline._threads().shutdown(wait=True)
        assert "still sending after 1.5 s" in said
        assert 1.4 < took < 2.5
        assert ticks >= 0.6 * took / 0.05

    def test_a_late_message_is_redelivered_with_its_id_and_a_fresh_signature(
        self, receiver, connect, own_ledger
    ) -> None:
        connect("receiver")
        run_callback(late_webhook(), context())
        (first,) = receiver.requests
        time.sleep(0.01)
        report = Pipeline.from_config().send_now(first.delivery_id)
        assert report is not None and report.delivered
        first, again = receiver.requests
        assert again.delivery_id == first.delivery_id and again.body == first.body
        assert again.header("X-Webhook-Signature") != first.header("X-Webhook-Signature")
        assert manual_signature_ok(again.header("X-Webhook-Signature"), again.body, SECRET)

    def test_the_run_s_webhooks_tab_and_the_cli_list_it(self, receiver, connect, own_ledger) -> None:
        connect("receiver")
        run_callback(late_webhook(), context())
        rows = own_ledger.deliveries(dag_id=DAG_ID, run_id=RUN_ID)  # what the tab's route reads
        page = render_page(
            mode=DeliveryMode(dispatchers=(), stale_seconds=30.0),
            endpoints=[],
            dag_id=DAG_ID,
            run_id=RUN_ID,
            deliveries=rows,
            urls=TabUrls(base="/flow-webhooks", dag_id=DAG_ID, run_id=RUN_ID),
            can_redeliver=True,
            truncated=False,
        )
        assert rows[0].id in page and "<td>late" in page and "still-running" in page
        code, out, _ = cli("deliveries", "list", "--event", "late", "-o", "json")
        assert code == 0 and [row["id"] for row in json.loads(out)] == [rows[0].id]
        assert json.loads(cli("deliveries", "list", "--event", "success", "-o", "json")[1]) == []


@pytest.fixture(autouse=True)
def _fresh_threads() -> Iterator[None]:
    yield
    deadline._threads.cache_clear()
