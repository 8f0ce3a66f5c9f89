"""What the dispatcher tests share: fast settings, recorded messages, dispatcher processes.

``DispatcherProcess`` runs ``python -m airflow_webhook_provider dispatcher`` in its own
process group, with this process's environment; the ``dispatchers`` fixture
(tests/conftest.py) kills every one a test started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.identity import random_delivery_id
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for
from airflow_webhook_provider.delivery.sender import WebhookSender
from airflow_webhook_provider.ledger import open_ledger

#: Heartbeats, polls and backoffs short enough for tests.
FAST = {
    "AIRFLOW__FLOW_WEBHOOK__DISPATCHER_HEARTBEAT_SECONDS": "0.5",
    "AIRFLOW__FLOW_WEBHOOK__DISPATCHER_STALE_SECONDS": "3",
    "AIRFLOW__FLOW_WEBHOOK__DISPATCHER_POLL_SECONDS": "0.1",
    "AIRFLOW__FLOW_WEBHOOK__RETRY_BACKOFF_SECONDS": "0.05",
    "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS": "0.5",
    "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_BACKOFF_SECONDS": "1",
}
EVENT = JobEvent(flow_id="dispatched", job_id="manual__1", job_status="failed")


def messages(count: int, conn_id: str = "receiver", *, prefix: str = "hook") -> list[Any]:
    """Return ``count`` messages of ``EVENT`` to ``conn_id``, each of its own webhook, as a callback records them."""
    return [
        message_for(
            FlowWebhook(name=f"{prefix}-{index}", conn_id=conn_id),
            EVENT,
            clear_number=0,
            capture=CaptureSource.CALLBACK,
            delivery_id=random_delivery_id(),
        )
        for index in range(count)
    ]


def pipeline() -> Pipeline:
    """Return a pipeline over the configured ledger."""
    return Pipeline(config.load(), open_ledger(config.load().ledger_conn_id), sender=WebhookSender())


class DispatcherProcess:
    """``python -m airflow_webhook_provider dispatcher`` in its own process group."""

    def __init__(self, log: Path, *extra: str) -> None:
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "airflow_webhook_provider", "dispatcher", *extra],
            env=os.environ.copy(),
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_alive(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            if pipeline().mode().name == "dispatcher":
                return
            time.sleep(0.2)
        raise AssertionError(f"no dispatcher heartbeat within {timeout} s:\n{self.log.read_text()}")

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._file.close()


def start(dispatchers: list[DispatcherProcess], tmp_path: Path, *extra: str) -> DispatcherProcess:
    """Start a dispatcher that the ``dispatchers`` fixture stops."""
    process = DispatcherProcess(tmp_path / f"dispatcher-{len(dispatchers)}.log", *extra)
    dispatchers.append(process)
    return process


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
