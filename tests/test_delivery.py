"""Delivery through FlowWebhookHook to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.exceptions import InvalidConnection, InvalidWebhookDefinition
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.delivery.endpoints import Endpoint
from airflow_webhook_provider.delivery.message import build_message
from airflow_webhook_provider.delivery.sender import WebhookSender
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook
from airflow_webhook_provider.receiver import ReceivedRequest, Reply
from tests.conftest import SECRET

EVENT = JobEvent(
    flow_id="etl",
    job_id="manual__2026-11-28T10:00:00+00:00",
    job_status="failed",
    output_name="publish",
    logical_date="2026-11-28T10:00:00+00:00",
    job_url="http://127.0.0.1:8080/dags/etl/runs/x",
)
FAST = RetrySchedule(attempts=5, backoff_seconds=0.05, budget_seconds=10)


def independent_signature(secret: str, request: ReceivedRequest) -> tuple[str, str]:
    """Recompute the signature from what arrived, with hmac directly (not the package's signing module)."""
    header = request.header("X-Webhook-Signature")
    assert header is not None, "request carried no signature header"
    parts = dict(part.split("=", 1) for part in header.split(","))
    signed = request.body if request.method in ("POST", "PUT", "PATCH") else request.url.encode()
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + signed, hashlib.sha256).hexdigest()
    return parts["sha256"], expected


class TestSignedRequests:
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
    def test_body_methods_sign_the_exact_body_bytes(self, receiver, connect, method):
        conn_id = connect()
        webhook = FlowWebhook(
            name="notify",
            conn_id=conn_id,
            method=method,
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId ended: $jobStatus ✓", "out": "$outputName", "raw": $flowId}',
        )
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(webhook, EVENT)

        assert result.delivered
        (request,) = receiver.wait_for(1)
        assert request.method == method
        assert (
            request.body
            == (
                '{"text": "Job manual__2026-11-28T10:00:00+00:00 ended: failed ✓", "out": "publish", "raw": "etl"}'
            ).encode()
        )
        got, expected = independent_signature(SECRET, request)
        assert got == expected
        assert request.signature_valid
        assert request.delivery_id == result.delivery_id

    @pytest.mark.parametrize("method", ["GET", "DELETE"])
    def test_url_methods_sign_the_full_url_with_query(self, receiver, connect, method):
        conn_id = connect(path="/ping?source=airflow&x=a%20b")
        webhook = FlowWebhook(
            name="ping", conn_id=conn_id, method=method, query={"job": "$jobId", "s": "$jobStatus"}
        )
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(webhook, EVENT)

        assert result.delivered
        (request,) = receiver.wait_for(1)
        assert request.method == method
        assert request.body == b""
        assert request.target == (
            "/ping?source=airflow&x=a%20b&job=manual__2026-11-28T10%3A00%3A00%2B00%3A00&s=failed"
        )
        got, expected = independent_signature(SECRET, request)
        assert got == expected

    def test_no_secret_sends_no_signature_header(self, receiver, connect):
        conn_id = connect(secret=None)
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        assert result.delivered
        (request,) = receiver.wait_for(1)
        assert request.header("X-Webhook-Signature") is None
        assert request.delivery_id == result.delivery_id

    def test_default_body_holds_every_reference_as_json(self, receiver, connect):
        conn_id = connect()
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        (request,) = receiver.wait_for(1)
        import json

        assert request.header("Content-Type") == "application/json"
        assert json.loads(request.body) == {
            "jobId": EVENT.job_id,
            "jobStatus": "failed",
            "flowId": "etl",
            "outputName": "publish",
            "logicalDate": EVENT.logical_date,
            "jobUrl": EVENT.job_url,
            "webhookName": "n",
            "deliveryId": result.delivery_id,
        }

    def test_definition_headers_override_connection_headers_case_insensitively(self, receiver, connect):
        conn_id = connect(
            headers='{"X-Team": "data", "content-type": "text/plain", "Authorization": "Bearer tok"}'
        )
        webhook = FlowWebhook(
            name="n",
            conn_id=conn_id,
            headers={"Content-Type": "application/json", "X-Extra": "1"},
            body='{"a": 1}',
        )
        FlowWebhookHook(conn_id, retry=FAST).deliver(webhook, EVENT)
        (request,) = receiver.wait_for(1)
        assert request.header("Content-Type") == "application/json"
        assert request.header("X-Team") == "data"
        assert request.header("X-Extra") == "1"
        assert request.header("Authorization") == "Bearer tok"
        assert request.header("User-Agent").startswith("airflow-webhook-provider/")

    def test_connection_method_is_the_default(self, receiver, connect):
        conn_id = connect(method="put")
        FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        assert receiver.wait_for(1)[0].method == "PUT"

    def test_body_with_a_get_connection_is_refused_with_the_fix(self, connect):
        conn_id = connect(method="GET")
        hook = FlowWebhookHook(conn_id, retry=FAST)
        with pytest.raises(InvalidWebhookDefinition, match=r"'n'.*'body'.*method=\"POST\""):
            hook.deliver(FlowWebhook(name="n", conn_id=conn_id, body="x"), EVENT)


class TestRetries:
    def test_503_503_200_is_three_attempts_with_one_delivery_id_and_fresh_signatures(self, receiver, connect):
        conn_id = connect()
        receiver.script(Reply(503), Reply(503))
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)

        assert result.delivered
        assert [a.status_code for a in result.attempts] == [503, 503, 200]
        requests_ = receiver.wait_for(3)
        assert len(requests_) == 3
        assert {r.delivery_id for r in requests_} == {result.delivery_id}
        assert len({r.body for r in requests_}) == 1
        for request in requests_:
            got, expected = independent_signature(SECRET, request)
            assert got == expected
        timestamps = [int(r.header("X-Webhook-Signature").split(",")[0][2:]) for r in requests_]
        assert timestamps == sorted(timestamps) and len(set(timestamps)) == 3

    def test_retry_after_is_honoured(self, receiver, connect):
        conn_id = connect()
        receiver.script(Reply(429, headers={"Retry-After": "1"}))
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        first, second = receiver.wait_for(2)
        assert result.delivered
        # The policy's own backoff is at most 0.05 s here; only Retry-After explains the wait.
        assert second.received_at - first.received_at >= 0.95

    def test_timeout_and_connection_reset_are_retried(self, receiver, connect):
        from airflow_webhook_provider.delivery.pipeline import Pipeline
        from airflow_webhook_provider.ledger import open_ledger

        conn_id = connect(timeout=0.3)
        receiver.script(Reply(200, delay_seconds=1.0), Reply(reset=True))
        first = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        # A timeout ends the quick retries in place (it opens the endpoint's circuit); the
        # ledger keeps the message for redelivery.
        assert not first.delivered and first.timed_out
        assert len(first.attempts) == 1
        assert "Timeout" in (first.attempts[0].error or "")
        ledger = open_ledger()
        row = ledger.get(first.delivery_id)
        assert row.state == "failed" and row.next_attempt_at is not None

        # Redelivery, one attempt a round as the dispatcher probes an open circuit: the reset, then 200.
        # (Claimed by id, as a probe is: its next attempt time is the schedule's, in the future.)
        pipeline = Pipeline.from_config()
        results = []
        for _ in range(2):
            claimed = ledger.claim(first.delivery_id, "test-redelivery", lease_seconds=30)
            assert claimed is not None
            ((_, result),) = pipeline.deliver([claimed], source="dispatcher")
            results.append(result)
        assert results[0].attempts[0].status_code is None and results[0].attempts[0].error
        assert not results[0].attempts[0].timed_out
        assert results[1].delivered and results[1].status_code == 200

        row = ledger.get(first.delivery_id)
        assert (row.state, row.attempts, row.last_status) == ("delivered", 3, 200)
        attempts = ledger.attempts(first.delivery_id)
        assert [a.status_code for a in attempts] == [None, None, 200]
        assert "Timeout" in (attempts[0].error or "") and attempts[1].error
        requests_ = receiver.wait_for(3)
        assert len(requests_) == 3
        assert {r.delivery_id for r in requests_} == {first.delivery_id}
        assert len({r.body for r in requests_}) == 1

    def test_retry_off_makes_one_attempt(self, receiver, connect):
        conn_id = connect(retry_on_failure=False)
        receiver.script(Reply(500, body=b"down for maintenance"))
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        assert not result.delivered
        assert len(result.attempts) == 1
        assert result.attempts[0].response_excerpt == "down for maintenance"
        assert len(receiver.wait_for(2, timeout=0.5)) == 1

    def test_redirects_are_not_followed(self, receiver, connect):
        conn_id = connect(retry_on_failure=False)
        receiver.script(Reply(302, headers={"Location": receiver.url("/elsewhere")}))
        result = FlowWebhookHook(conn_id, retry=FAST).deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
        assert not result.delivered and result.status_code == 302
        assert [r.target for r in receiver.wait_for(2, timeout=0.5)] == ["/hook"]

    def test_unreachable_receiver_is_a_result_not_an_exception(self, monkeypatch):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_DOWN", f'{{"conn_type": "flow_webhook", "host": "http://127.0.0.1:{port}/"}}'
        )
        result = FlowWebhookHook("down", retry=FAST).deliver(FlowWebhook(name="n", conn_id="down"), EVENT)
        assert not result.delivered
        assert len(result.attempts) == 5
        assert all("ConnectionError" in (a.error or "") for a in result.attempts)

    def test_budget_bounds_total_time(self):
        """A receiver that always fails: attempts stop once the next wait would pass the budget."""
        now = [0.0]

        class AlwaysDown:
            """Connection pools whose every request fails, after the timeout, as a silent receiver's would."""

            def manager(self, tls, proxy):
                return self

            def urlopen(self, method, url, **kwargs):
                from urllib3.exceptions import ProtocolError

                # Each attempt hangs until its timeout (at most 2 s), as a silent receiver would.
                now[0] += min(2.0, kwargs["timeout"].read_timeout)
                raise ProtocolError("refused")

        sender = WebhookSender(
            AlwaysDown(), sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0]
        )
        endpoint = Endpoint(url="http://127.0.0.1:9/")
        schedule = RetrySchedule(attempts=100, backoff_seconds=1, budget_seconds=15)
        references = EVENT.references(webhook_name="test", delivery_id="budget-1")
        message = build_message(endpoint, None, references, delivery_id="budget-1")
        result = sender.send(endpoint, message, schedule=schedule)
        assert not result.delivered
        assert result.duration_seconds <= 15
        assert 3 <= len(result.attempts) < 100


class TestTestButton:
    def test_success(self, receiver, connect):
        ok, message = FlowWebhookHook(connect()).test_connection()
        assert ok, message
        assert "HTTP 200" in message
        (request,) = receiver.wait_for(1)
        assert request.signature_valid
        import json

        body = json.loads(request.body)
        assert body["jobId"] == "test" and body["jobStatus"] == "test"

    def test_receiver_error(self, receiver, connect):
        receiver.script(Reply(500, body=b"nope"))
        ok, message = FlowWebhookHook(connect()).test_connection()
        assert not ok
        assert message == "Receiver answered HTTP 500: nope"
        assert len(receiver.wait_for(2, timeout=0.5)) == 1  # the Test button does not retry

    def test_bad_url(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_BAD", '{"conn_type": "flow_webhook", "host": "hooks.example.com"}')
        ok, message = FlowWebhookHook("bad").test_connection()
        assert not ok
        assert "'bad'" in message and "http://" in message

    @staticmethod
    def run_cli(conn_id):
        env = {**os.environ, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
        return subprocess.run(
            [sys.executable, "-m", "airflow", "connections", "test", conn_id],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    def test_airflow_connections_test_cli(self, receiver, connect, airflow_db):
        done = self.run_cli(connect("cli_receiver"))
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Connection success!" in done.stdout
        (request,) = receiver.wait_for(1)
        assert request.signature_valid
        assert SECRET not in done.stdout + done.stderr

    def test_airflow_connections_test_cli_reports_the_failure(self, receiver, connect, airflow_db):
        receiver.script(Reply(503, body=b"maintenance"))
        done = self.run_cli(connect("cli_receiver"))
        assert done.returncode == 1
        assert "Connection failed!" in done.stdout
        assert "Receiver answered HTTP 503: maintenance" in done.stdout


class TestConnectionErrors:
    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            pytest.param({"headers": "{not json"}, "headers", id="headers-not-json"),
            pytest.param({"headers": '["a"]'}, "headers", id="headers-not-object"),
            pytest.param({"headers": '{"X-A": "a\\r\\nb"}'}, "headers", id="headers-crlf"),
            pytest.param({"method": "TRACE"}, "method", id="method"),
            pytest.param({"timeout": "-1"}, "timeout", id="timeout-negative"),
            pytest.param({"timeout": "soon"}, "timeout", id="timeout-not-number"),
            pytest.param({"validate_ssl": "maybe"}, "validate_ssl", id="validate-ssl"),
        ],
    )
    def test_bad_extras_name_connection_and_field(self, connect, extra, field):
        conn_id = connect("badextra", **extra)
        with pytest.raises(InvalidConnection) as info:
            _ = FlowWebhookHook(conn_id).endpoint
        assert info.value.field == field
        assert "'badextra'" in str(info.value) and field in str(info.value)

    def test_header_values_and_secret_never_logged(self, receiver, connect, caplog):
        conn_id = connect(headers='{"Authorization": "Bearer super-private-token"}', timeout=0.2)
        receiver.script(Reply(500, body=b"x" * 10_000), Reply(200, delay_seconds=1))
        with caplog.at_level(logging.DEBUG):
            hook = FlowWebhookHook(conn_id, retry=RetrySchedule(attempts=2, backoff_seconds=0.01))
            hook.deliver(FlowWebhook(name="n", conn_id=conn_id), EVENT)
            hook.test_connection()
        text = caplog.text
        assert "super-private-token" not in text
        assert SECRET not in text
        assert "x" * 201 not in text  # at most a short excerpt of a response body


def test_receiver_rebuilds_the_url_it_was_sent(receiver):
    """The receiver's URL reconstruction is what GET signatures are checked against."""
    import requests

    requests.get(receiver.url("/a?b=c%20d"), timeout=5)
    (request,) = receiver.wait_for(1)
    assert urlsplit(request.url).path == "/a" and urlsplit(request.url).query == "b=c%20d"
    assert request.url == receiver.url("/a?b=c%20d")
    assert time.time() - request.received_at < 60
