"""Key rotation, Standard Webhooks mode and the replay guard, on real requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.exceptions import InvalidConnection, InvalidSignature
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.core.signing import ReplayGuard, payload_for, sign, verify_signature
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook
from airflow_webhook_provider.receiver import RecordingReceiver
from tests.conftest import flow_webhook_connection

EVENT = JobEvent(flow_id="schemes", job_id="run_7", job_status="success")
NEW, OLD = "new-key-2026", "old-key-2025"
STANDARD_NEW = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
STANDARD_OLD = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


def future(days: int = 1) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


def deliver(monkeypatch, receiver, *, secret, method="POST", **extra):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SCHEMES", flow_webhook_connection(receiver.url("/h?x=1"), secret=secret, **extra)
    )
    webhook = FlowWebhook(name="w", conn_id="schemes", method=method)
    result = FlowWebhookHook("schemes", retry=RetrySchedule(attempts=1)).deliver(webhook, EVENT)
    assert result.delivered, result.error
    (request,) = receiver.wait_for(1)
    return request


@pytest.fixture
def plain_receiver():
    with RecordingReceiver() as server:  # no secret: these tests verify signatures themselves
        yield server


class TestKeyRotation:
    def test_both_keys_sign_until_the_old_one_expires(self, monkeypatch, plain_receiver):
        request = deliver(
            monkeypatch, plain_receiver, secret=NEW, previous_secret=OLD, previous_secret_expires=future()
        )
        header = request.header("X-Webhook-Signature")
        timestamp, new_signature, old_signature = header.split(",")
        message = timestamp[2:].encode() + b"." + request.body
        assert new_signature == "sha256=" + hmac.new(NEW.encode(), message, hashlib.sha256).hexdigest()
        assert old_signature == "sha256=" + hmac.new(OLD.encode(), message, hashlib.sha256).hexdigest()
        # A receiver still on the old key, one already on the new key, and one holding both all accept it.
        for keys in (OLD, NEW, [OLD, NEW]):
            verify_signature(header, request.body, keys)
        with pytest.raises(InvalidSignature, match="mismatch"):
            verify_signature(header, request.body, "some-other-key")

    def test_after_expiry_only_the_new_key_signs(self, monkeypatch, plain_receiver):
        request = deliver(
            monkeypatch, plain_receiver, secret=NEW, previous_secret=OLD, previous_secret_expires=future(-1)
        )
        header = request.header("X-Webhook-Signature")
        assert header.count("sha256=") == 1
        verify_signature(header, request.body, NEW)
        with pytest.raises(InvalidSignature):
            verify_signature(header, request.body, OLD)

    @pytest.mark.parametrize("expires", [None, "next tuesday"], ids=["missing", "not-iso"])
    def test_previous_secret_needs_an_expiry(self, monkeypatch, expires):
        extra = {"previous_secret": OLD} | ({"previous_secret_expires": expires} if expires else {})
        monkeypatch.setenv(
            "AIRFLOW_CONN_ROT", flow_webhook_connection("http://127.0.0.1:9/", secret=NEW, **extra)
        )
        with pytest.raises(
            InvalidConnection, match="'rot': extra 'previous_secret_expires' must be an ISO 8601"
        ):
            _ = FlowWebhookHook("rot").endpoint

    def test_sign_puts_the_current_key_first(self):
        header = sign(NEW, b"body", timestamp_ms=1, previous_secrets=[OLD])
        assert header.startswith(
            "t=1,sha256=" + hmac.new(NEW.encode(), b"1.body", hashlib.sha256).hexdigest()
        )


class TestStandardWebhooks:
    @pytest.mark.parametrize("method", ["POST", "GET"])
    def test_the_standardwebhooks_library_verifies_real_requests(self, monkeypatch, plain_receiver, method):
        request = deliver(
            monkeypatch, plain_receiver, secret=STANDARD_NEW, method=method, signature_scheme="standard"
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        Webhook(STANDARD_NEW).verify(request.body, headers, json_parse=False)
        assert headers["webhook-id"] == request.delivery_id
        assert abs(int(headers["webhook-timestamp"]) - datetime.now(timezone.utc).timestamp()) < 60
        assert "x-webhook-signature" not in headers
        if method == "POST":
            assert json.loads(request.body)["jobId"] == "run_7"

    def test_both_schemes_at_once(self, monkeypatch, plain_receiver):
        request = deliver(monkeypatch, plain_receiver, secret=STANDARD_NEW, signature_scheme="both")
        Webhook(STANDARD_NEW).verify(request.body, dict(request.headers), json_parse=False)
        verify_signature(
            request.header("X-Webhook-Signature"),
            payload_for("POST", body=request.body, url=request.url),
            STANDARD_NEW,
        )

    def test_rotation_in_standard_mode(self, monkeypatch, plain_receiver):
        request = deliver(
            monkeypatch,
            plain_receiver,
            secret=STANDARD_NEW,
            signature_scheme="standard",
            previous_secret=STANDARD_OLD,
            previous_secret_expires=future(),
        )
        assert len(request.header("webhook-signature").split(" ")) == 2
        for key in (STANDARD_NEW, STANDARD_OLD):
            Webhook(key).verify(request.body, dict(request.headers), json_parse=False)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(
                request.body, dict(request.headers), json_parse=False
            )

    @pytest.mark.parametrize(
        ("secret", "message"),
        [
            pytest.param("plain-secret", "starts with whsec_", id="no-prefix"),
            pytest.param("whsec_***not base64***", "not valid base64", id="not-base64"),
            pytest.param("whsec_" + base64.b64encode(b"short").decode(), "at least 16 bytes", id="too-short"),
        ],
    )
    def test_standard_mode_needs_a_standard_secret(self, monkeypatch, secret, message):
        monkeypatch.setenv(
            "AIRFLOW_CONN_STD",
            flow_webhook_connection("http://127.0.0.1:9/", secret=secret, signature_scheme="standard"),
        )
        ok, reason = FlowWebhookHook("std").test_connection()
        assert not ok
        assert "'std': Secret key" in reason and message in reason
        assert secret not in reason


class TestReplayGuard:
    def test_a_delivery_is_accepted_once_within_the_window(self):
        guard = ReplayGuard(tolerance_seconds=300)
        header = sign("k", b"x", timestamp_ms=1_000_000)
        verify_signature(header, b"x", "k", now_ms=1_000_000, replay_guard=guard, delivery_id="d-1")
        with pytest.raises(InvalidSignature, match="replayed delivery d-1"):
            verify_signature(header, b"x", "k", now_ms=1_001_000, replay_guard=guard, delivery_id="d-1")
        verify_signature(header, b"x", "k", now_ms=1_001_000, replay_guard=guard, delivery_id="d-2")
        # Past the window the id is forgotten (and the stale timestamp alone would reject it).
        guard.accept("d-1", now_ms=1_000_000 + 301_000)

    def test_the_guard_needs_the_delivery_id(self):
        with pytest.raises(InvalidSignature, match="missing X-Webhook-Id"):
            verify_signature(sign("k", b"x"), b"x", "k", replay_guard=ReplayGuard())

    def test_a_bad_signature_is_not_remembered(self):
        guard = ReplayGuard()
        with pytest.raises(InvalidSignature, match="mismatch"):
            verify_signature(sign("other", b"x"), b"x", "k", replay_guard=guard, delivery_id="d")
        verify_signature(sign("k", b"x"), b"x", "k", replay_guard=guard, delivery_id="d")
