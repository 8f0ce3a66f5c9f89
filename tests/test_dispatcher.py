"""
The dispatcher: ``airflow flow-webhooks dispatcher`` as a real process, over a real ledger
(SQLite, and the machine's PostgreSQL), sending to real receivers on 127.0.0.1.

- While a dispatcher's heartbeat is fresh, a callback only records its messages, and the
  dispatcher makes the first attempt within a second.
- Without one, callbacks send inline.
- The circuit breaker: one timeout opens it; inline senders then leave the endpoint to
  the dispatcher, which probes it until it answers, then drains what waited.
- Two dispatchers share a PostgreSQL ledger without sending a message twice at once, and
  a SIGTERM loses nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_webhook_provider.delivery.dispatcher import Dispatcher
from airflow_webhook_provider.ledger import Ledger, open_ledger
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.conftest import SECRET, flow_webhook_connection, ledger_connection
from tests.dispatching import FAST, messages, pipeline, start, wait_until
from tests.servers import HungReceiver


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request, tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """Airflow settings for a fresh ledger, in this process and for dispatcher processes."""
    with ledger_connection(request.param, tmp_path) as connection:
        env = {
            **FAST,
            "AIRFLOW_CONN_DISPATCH_LEDGER": json.dumps(connection),
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "dispatch_ledger",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env
        for ledger in _opened(env):
            ledger.engine.dispose()


def _opened(env: dict[str, str]) -> list[Ledger]:
    return [open_ledger("dispatch_ledger")]


def test_callbacks_only_record_and_the_dispatcher_sends_within_a_second(
    deployment, receiver, connect, dispatchers, tmp_path
):
    connect("receiver")
    dispatcher = start(dispatchers, tmp_path)
    dispatcher.wait_alive()
    sent: list[Any] = []
    for batch in range(10):
        batch_messages = messages(5, prefix=f"b{batch}")
        assert pipeline().submit(batch_messages) == []  # recorded only: the dispatcher sends
        sent += batch_messages
        time.sleep(0.2)
    receiver.wait_for(len(sent), timeout=30)

    ledger = open_ledger("dispatch_ledger")
    rows = {row.id: row for row in ledger.get_many([m.id for m in sent])}
    arrived = {r.delivery_id: r.received_at for r in receiver.requests}
    latencies = [arrived[message.id] - rows[message.id].created_at for message in sent]
    print(
        f"\nfirst-attempt latency over {len(latencies)} messages ({ledger.dialect}): "
        f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    assert max(latencies) < 1.0
    assert all(r.signature_valid for r in receiver.requests)
    assert Counter(r.delivery_id for r in receiver.requests) == Counter(m.id for m in sent)
    assert {row.state for row in rows.values()} == {"delivered"}
    assert {a.source for m in sent for a in ledger.attempts(m.id)} == {"dispatcher"}

    assert dispatcher.terminate() == 0
    assert pipeline().mode().name == "inline"  # a stopped dispatcher is not counted
    (result,) = pipeline().submit(messages(1, prefix="after"))
    assert result.delivered  # sent by the "callback" itself


def test_the_circuit_opens_on_a_timeout_and_the_dispatcher_probes_until_the_endpoint_is_back(
    deployment, monkeypatch, tmp_path
):
    with HungReceiver() as hung:
        port = hung.port
        monkeypatch.setenv("AIRFLOW_CONN_FLAKY", flow_webhook_connection(hung.url("/hook"), timeout=1))
        first = messages(1, "flaky", prefix="first")
        (result,) = pipeline().submit(first)
        assert not result.delivered
        assert result.timed_out
        ledger = open_ledger("dispatch_ledger")
        (health,) = ledger.endpoint_health(["flaky"])
        assert health.circuit == "open"
        assert "timed out" in health.opened_reason

        # Inline senders leave the endpoint alone now: no attempt, no wait on the receiver.
        later = messages(5, "flaky", prefix="later")
        started = time.monotonic()
        assert pipeline().submit(later) == []
        assert time.monotonic() - started < 0.5
        assert hung.accepted == 1
        assert {row.attempts for row in ledger.get_many([m.id for m in later])} == {0}

    # A healthy receiver takes the port; the dispatcher's probe finds it and drains the rest.
    with RecordingReceiver(secret=SECRET, port=port) as healthy:
        report = Dispatcher(pipeline()).run(once=True, time_limit_seconds=1)
        assert report.claimed <= 1  # while the circuit is open: one probe, when it is due
        wait_until(
            lambda: (Dispatcher(pipeline()).run(once=True, time_limit_seconds=2), len(healthy.requests) >= 6)[
                1
            ],
            timeout=30,
            what="the probe and the drain",
        )
        assert {r.delivery_id for r in healthy.requests} == {m.id for m in first + later}
        assert all(r.signature_valid for r in healthy.requests)
    (health,) = ledger.endpoint_health(["flaky"])
    assert health.circuit == "closed"
    assert health.consecutive_failures == 0
    assert {row.state for row in ledger.get_many([m.id for m in first + later])} == {"delivered"}


def test_consecutive_failures_open_the_circuit_at_the_threshold(deployment, receiver, connect, monkeypatch):
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__CIRCUIT_FAILURE_THRESHOLD", "3")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "1")
    connect("receiver")
    receiver.script(Reply(503), Reply(503), Reply(503))
    ledger = open_ledger("dispatch_ledger")
    for index in range(2):
        pipeline().submit(messages(1, prefix=f"fail{index}"))
        assert ledger.endpoint_health(["receiver"])[0].circuit == "closed"
    pipeline().submit(messages(1, prefix="fail2"))
    (health,) = ledger.endpoint_health(["receiver"])
    assert health.circuit == "open"
    assert health.consecutive_failures == 3
    assert "3 consecutive failures" in health.opened_reason
    pipeline().submit(messages(1, prefix="held-back"))
    assert len(receiver.requests) == 3


def test_sigterm_lets_the_request_in_flight_finish(deployment, receiver, connect, dispatchers, tmp_path):
    connect("receiver")
    receiver.script(Reply(200, delay_seconds=2.0))
    dispatcher = start(dispatchers, tmp_path)
    dispatcher.wait_alive()
    (message,) = messages(1, prefix="slow")
    pipeline().submit([message])
    receiver.wait_for(1, timeout=10)
    started = time.monotonic()
    assert dispatcher.terminate() == 0
    took = time.monotonic() - started
    assert 1.0 < took < 10, took  # it waited for the answer, then exited
    row = open_ledger("dispatch_ledger").get(message.id)
    assert row.state == "delivered"
    assert "stopped: 1 message(s)" in dispatcher.log.read_text()


def test_once_drains_what_is_due_and_exits(deployment, receiver, connect, tmp_path):
    connect("receiver")
    recorded = messages(20, prefix="due")
    open_ledger("dispatch_ledger").record(recorded)
    done = subprocess.run(
        [sys.executable, "-m", "airflow_webhook_provider", "dispatcher", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("20 message(s)")
    assert "20 delivered" in done.stdout
    assert {r.delivery_id for r in receiver.wait_for(20)} == {m.id for m in recorded}


def test_two_dispatchers_share_a_postgres_ledger_and_a_sigterm_loses_nothing(
    tmp_path, monkeypatch, dispatchers
):
    total = 600
    with (
        ledger_connection("postgresql", tmp_path) as connection,
        RecordingReceiver(secret=SECRET, default=Reply(200, delay_seconds=0.005)) as receiver,
    ):
        for key, value in {
            **FAST,
            "AIRFLOW_CONN_DISPATCH_LEDGER": json.dumps(connection),
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "dispatch_ledger",
            "AIRFLOW__FLOW_WEBHOOK__DISPATCHER_CONCURRENCY": "8",
            "AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/hook")),
        }.items():
            monkeypatch.setenv(key, value)
        first, _ = start(dispatchers, tmp_path), start(dispatchers, tmp_path)
        first.wait_alive()
        ledger = open_ledger("dispatch_ledger")
        wait_until(lambda: len(ledger.dispatchers(alive_within=3)) == 2, 60, "both dispatchers")
        recorded = messages(total, prefix="shared")
        ledger.record(recorded)

        wait_until(lambda: len(receiver.requests) >= total // 4, 60, "a quarter of the messages")
        stopped = threading.Thread(target=first.terminate)
        stopped.start()
        wait_until(lambda: ledger.counts().get("delivered", 0) == total, 120, "every message delivered")
        stopped.join(timeout=60)
        assert first.process.returncode == 0

        received = Counter(r.delivery_id for r in receiver.requests)
        senders = Counter(a.sender for m in recorded for a in ledger.attempts(m.id))
        ledger.engine.dispose()
    print(f"\n{total} messages; attempts by sender: {dict(senders)}; max in flight {receiver.max_in_flight}")
    assert set(received) == {m.id for m in recorded}
    assert receiver.concurrent_duplicates == []  # never the same message twice at once
    assert sum(received.values()) == total  # and here, never twice at all
    assert len(senders) == 2 and min(senders.values()) > 0  # both did part of the work
    assert all(r.signature_valid for r in receiver.requests)
