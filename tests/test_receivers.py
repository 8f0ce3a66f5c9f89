"""The example receivers in examples/receivers, run as real processes, verify real requests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.delivery.message import build_message
from airflow_webhook_provider.delivery.sender import WebhookSender
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook
from tests.conftest import REPO, flow_webhook_connection

EXAMPLES = REPO / "examples" / "receivers"
SECRET = "receiver-example-secret"
EVENT = JobEvent(flow_id="interop", job_id="run_42", job_status="success")
ONCE = RetrySchedule(attempts=1)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def deliver(monkeypatch, url: str, *, secret: str = SECRET, method: str = "POST"):
    monkeypatch.setenv("AIRFLOW_CONN_INTEROP", flow_webhook_connection(url, secret=secret))
    return FlowWebhookHook("interop", retry=ONCE).deliver(
        FlowWebhook(name="interop", conn_id="interop", method=method, query={"job": "$jobId"}), EVENT
    )


@pytest.fixture
def node_receiver():
    node = shutil.which("node")
    assert node, "Node.js is part of this machine kind; the JavaScript receiver needs it"
    process = subprocess.Popen(
        [node, str(EXAMPLES / "node_receiver.js")],
        env={**os.environ, "WEBHOOK_SECRET": SECRET, "PORT": "0"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = json.loads(process.stdout.readline())["listening"]
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_node_crypto_receiver_accepts_our_signatures(monkeypatch, node_receiver, method):
    url, process = node_receiver
    result = deliver(monkeypatch, f"{url}/hooks?team=data", method=method)
    assert result.delivered, result.error
    line = json.loads(process.stdout.readline())
    assert line == {"id": result.delivery_id, "valid": True, "problem": None}


def test_node_receiver_rejects_a_wrong_key(monkeypatch, node_receiver):
    url, process = node_receiver
    result = deliver(monkeypatch, f"{url}/hooks", secret="not-the-receivers-key")
    assert result.status_code == 401
    assert json.loads(process.stdout.readline())["problem"] == "signature mismatch"


@pytest.fixture
def fastapi_receiver():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_receiver:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=EXAMPLES,
        env={**os.environ, "WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{url}/docs", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError("the FastAPI receiver did not start within 60 s")
        yield url
    finally:
        stop(process)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_fastapi_receiver_accepts_our_signatures(monkeypatch, fastapi_receiver, method):
    result = deliver(monkeypatch, f"{fastapi_receiver}/hooks", method=method)
    assert result.delivered, result.error
    assert json.loads(result.attempts[0].response_excerpt) == {"status": "accepted"}


def test_fastapi_receiver_refuses_a_replay_and_a_wrong_key(monkeypatch, fastapi_receiver):
    first = deliver(monkeypatch, f"{fastapi_receiver}/hooks")
    assert first.delivered
    # The same signed request again, byte for byte: the replay guard refuses it.
    monkeypatch.setenv(
        "AIRFLOW_CONN_INTEROP", flow_webhook_connection(f"{fastapi_receiver}/hooks", secret=SECRET)
    )
    endpoint = FlowWebhookHook("interop", retry=ONCE).endpoint
    references = EVENT.references(webhook_name="interop", delivery_id=first.delivery_id)
    message = build_message(
        endpoint, FlowWebhook(name="interop", conn_id="interop"), references, delivery_id=first.delivery_id
    )
    replay = WebhookSender().send(endpoint, message, schedule=ONCE)
    assert replay.status_code == 401
    assert "replayed delivery" in replay.attempts[0].response_excerpt
    assert deliver(monkeypatch, f"{fastapi_receiver}/hooks", secret="wrong").status_code == 401
