"""
The egress policy holds behind a proxy.

With ``HTTP_PROXY``/``HTTPS_PROXY`` in the environment, or ``[flow_webhook] proxy`` set,
the connection goes to the proxy, so checking the address the connection reaches would
check the proxy, not the target. The target is therefore resolved and checked against
``forbidden_networks`` (and ``allowed_url_regexes``) before the request is handed over; a
refused one is recorded failed and the proxy (a real one on 127.0.0.1) receives nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.egress import EgressPolicy
from airflow_webhook_provider.core.identity import random_delivery_id
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for
from airflow_webhook_provider.delivery.sender import WebhookSender
from airflow_webhook_provider.ledger import open_ledger
from tests.conftest import SECRET, flow_webhook_connection
from tests.servers import ForwardProxy

EVENT = JobEvent(flow_id="proxied", job_id="manual__1", job_status="success")
FORBIDDEN = "169.254.0.0/16, 10.0.0.0/8"


def _pipeline(tmp_path: Path, *, proxy: str = "") -> Pipeline:
    settings = replace(
        config.load(),
        egress=EgressPolicy.parse(forbidden_networks=FORBIDDEN),
        proxy=proxy,
        retry=replace(config.load().retry, attempts=1),
    )
    ledger = open_ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    # A sender of its own: the process-wide one has read the environment's proxies already.
    return Pipeline(settings, ledger, sender=WebhookSender())


def _send(pipeline: Pipeline, conn_id: str) -> str:
    message = message_for(
        FlowWebhook(name="hook", conn_id=conn_id),
        EVENT,
        clear_number=0,
        capture=CaptureSource.CALLBACK,
        delivery_id=random_delivery_id(),
    )
    pipeline.send(message)
    return message.id


@pytest.fixture(params=["environment", "config"])
def proxied(request, monkeypatch, tmp_path):
    """A proxy the sender must use, from HTTP(S)_PROXY or from [flow_webhook] proxy."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with ForwardProxy() as proxy:
        if request.param == "environment":
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            yield proxy, _pipeline(tmp_path)
        else:
            yield proxy, _pipeline(tmp_path, proxy=proxy.url)


@pytest.mark.parametrize(
    "target", ["http://10.1.2.3/hook", "https://10.1.2.3/hook", "http://169.254.169.254/latest"]
)
def test_a_forbidden_target_never_reaches_the_proxy(proxied, monkeypatch, target):
    proxy, pipeline = proxied
    monkeypatch.setenv("AIRFLOW_CONN_INTERNAL", flow_webhook_connection(target))

    delivery_id = _send(pipeline, "internal")

    assert proxy.requests == []
    row = pipeline.ledger.get(delivery_id)
    assert row.state == "failed"
    assert row.next_attempt_at is None  # refused: trying again cannot help
    assert (
        "forbidden network 10.0.0.0/8" in row.last_error
        or "forbidden network 169.254.0.0/16" in row.last_error
    )


def test_an_allowed_target_goes_through_the_proxy(proxied, receiver, monkeypatch):
    proxy, pipeline = proxied
    monkeypatch.setenv("AIRFLOW_CONN_ALLOWED", flow_webhook_connection(receiver.url("/via-proxy")))

    delivery_id = _send(pipeline, "allowed")

    assert [r.target for r in proxy.requests] == [receiver.url("/via-proxy")]
    (request,) = receiver.wait_for(1)
    assert request.signature_valid
    assert request.delivery_id == delivery_id
    assert pipeline.ledger.get(delivery_id).state == "delivered"


def test_a_name_that_does_not_resolve_is_refused_before_the_proxy(proxied, monkeypatch):
    proxy, pipeline = proxied
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", flow_webhook_connection("http://no-such-host.invalid/hook"))

    delivery_id = _send(pipeline, "nowhere")

    assert proxy.requests == []
    assert "does not resolve here" in pipeline.ledger.get(delivery_id).last_error


def test_without_a_proxy_the_same_target_is_refused_too(tmp_path, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_INTERNAL", flow_webhook_connection("http://10.1.2.3/hook", secret=SECRET)
    )
    pipeline = _pipeline(tmp_path)

    row = pipeline.ledger.get(_send(pipeline, "internal"))

    assert row.state == "failed"
    assert "inside forbidden network 10.0.0.0/8" in row.last_error
    assert json.loads(json.dumps(row.as_dict()))["attempts"] == 1
