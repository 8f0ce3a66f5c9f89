"""
Endpoint health and operations, with real dispatcher processes, a real ledger (SQLite and
the machine's PostgreSQL) and real receivers on 127.0.0.1:

- per-connection limits: a backlog drains with no more requests in flight at the receiver
  than the connection's ``max_concurrency``, over every dispatcher; ``rate_limit_per_minute``;
- auto-disable on 410 Gone: a signed ``endpoint.disabled`` alert, the next message held and
  never sent, then sent after ``endpoints enable`` (and an ``endpoint.recovered`` alert);
- ``recover --dry-run`` counts exactly what ``recover`` sends; ``purge`` removes exactly the
  rows past the age; ``doctor`` fails for CeleryExecutor on the SQLite ledger;
- metrics reach a real StatsD listener (UDP on 127.0.0.1) while a DAG delivers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from airflow_webhook_provider.core.signing import verify_signature
from airflow_webhook_provider.ledger import open_ledger
from airflow_webhook_provider.ledger.schema import deliveries
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.conftest import SECRET, flow_webhook_connection, ledger_connection
from tests.dispatching import messages, pipeline, start, wait_until


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_webhook_provider", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


class TestLimits:
    def drain(self, tmp_path, dispatchers, monkeypatch, *, count, cap, processes=1):
        with RecordingReceiver(secret=SECRET, default=Reply(200, delay_seconds=0.02)) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_CAPPED", flow_webhook_connection(receiver.url("/capped"), max_concurrency=cap)
            )
            ledger = open_ledger()
            # A sender reads the connection's limits and records them before the backlog is claimed.
            ledger.note_limits("capped", max_concurrency=cap, rate_per_minute=None)
            recorded = messages(count, "capped", prefix=f"cap{cap}")
            ledger.record(recorded)
            started = time.monotonic()
            for _ in range(processes):
                start(dispatchers, tmp_path)
            wait_until(lambda: ledger.counts().get("delivered", 0) == count, 180, "the backlog to drain")
            took = time.monotonic() - started
            assert {r.delivery_id for r in receiver.requests} == {m.id for m in recorded}
            return took, receiver.max_in_flight

    @pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
    def test_a_backlog_drains_within_max_concurrency_over_every_dispatcher(
        self, kind, tmp_path, dispatchers, monkeypatch, fast
    ):
        with ledger_connection(kind, tmp_path) as connection:
            monkeypatch.setenv("AIRFLOW_CONN_OPS_LEDGER", json.dumps(connection))
            monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID", "ops_ledger")
            processes = 2 if kind == "postgresql" else 1
            took, peak = self.drain(tmp_path, dispatchers, monkeypatch, count=600, cap=5, processes=processes)
            open_ledger().engine.dispose()
        print(
            f"\n600 messages, max_concurrency 5, {processes} dispatcher(s) ({kind}): {took:.1f} s, peak {peak} in flight"
        )
        assert peak <= 5

    def test_without_a_tight_cap_the_same_backlog_drains_wider_and_faster(
        self, tmp_path, dispatchers, monkeypatch, fast
    ):
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__DISPATCHER_CONCURRENCY", "16")
        took, peak = self.drain(tmp_path, dispatchers, monkeypatch, count=600, cap=1000)
        print(
            f"\n600 messages, no tight cap (max_concurrency 1000, 16 workers): {took:.1f} s, peak {peak} in flight"
        )
        assert peak > 5

    def test_rate_limit_per_minute(self, tmp_path, dispatchers, monkeypatch, fast, receiver):
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLOW", flow_webhook_connection(receiver.url("/slow"), rate_limit_per_minute=120)
        )
        ledger = open_ledger()
        ledger.note_limits("slow", max_concurrency=10, rate_per_minute=120)
        recorded = messages(20, "slow", prefix="rate")
        ledger.record(recorded)
        start(dispatchers, tmp_path)
        wait_until(lambda: len(receiver.requests) >= 20, 60, "the rate-limited messages")
        arrivals = sorted(r.received_at for r in receiver.requests)
        # A burst of 10 (five seconds' worth at 2/s), then 2 a second.
        assert arrivals[-1] - arrivals[0] >= (20 - 10) / 2 * 0.8
        for index in range(10, 20):
            assert arrivals[index] - arrivals[0] >= (index - 10) / 2 * 0.8


class TestAutoDisable:
    def test_410_disables_alerts_holds_and_enable_sends_what_was_held(
        self, tmp_path, dispatchers, monkeypatch, fast
    ):
        with RecordingReceiver(secret=SECRET) as gone, RecordingReceiver(secret="alert-secret") as ops:
            monkeypatch.setenv("AIRFLOW_CONN_GONE", flow_webhook_connection(gone.url("/gone")))
            monkeypatch.setenv(
                "AIRFLOW_CONN_OPS", flow_webhook_connection(ops.url("/alerts"), secret="alert-secret")
            )
            monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__ALERT_CONN_ID", "ops")
            monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
            gone.script(Reply(410, body=b"this hook was deleted"))
            dispatcher = start(dispatchers, tmp_path)
            dispatcher.wait_alive()
            (first,) = messages(1, "gone", prefix="first")
            assert pipeline().submit([first]) == []  # the dispatcher sends
            (alert,) = ops.wait_for(1, timeout=30)
            ledger = open_ledger()
            (health,) = ledger.endpoint_health(["gone"])
            assert health.disabled_at is not None and "410 Gone" in health.disabled_reason

            body = json.loads(alert.body)
            assert body["type"] == "endpoint.disabled"
            assert body["endpoint"] == "gone" and body["connection"] == "gone"
            assert "410 Gone" in body["reason"]
            assert body["counts"] == {"held": 1}  # the message that met the 410 waits too
            assert body["link"] == "http://127.0.0.1:8080/flow-webhooks/overview?conn=gone"
            assert alert.signature_valid
            verify_signature(alert.header("X-Webhook-Signature"), alert.body, "alert-secret")

            # The next run's message is held: recorded, never sent, never dead.
            (second,) = messages(1, "gone", prefix="second")
            pipeline().submit([second])
            time.sleep(3)
            assert len(gone.requests) == 1
            assert ledger.get(second.id).state == "held"

            done = cli("endpoints", "enable", "gone")
            assert done.returncode == 0, done.stderr
            assert "2 held messages due now" in done.stdout
            wait_until(lambda: len(gone.requests) >= 3, 30, "the held messages")
            assert {r.delivery_id for r in gone.requests[1:]} == {first.id, second.id}
            assert all(r.signature_valid for r in gone.requests)
            wait_until(lambda: len(ops.requests) >= 2, 30, "the recovered alert")
            assert json.loads(ops.requests[1].body)["type"] == "endpoint.recovered"
            assert {ledger.get(m.id).state for m in (first, second)} == {"delivered"}

    def test_alerts_are_rate_limited_and_never_about_the_alert_connection(self, monkeypatch, fast):
        with (
            RecordingReceiver(secret=SECRET, default=Reply(410)) as gone,
            RecordingReceiver(secret=SECRET, default=Reply(410)) as ops,
        ):
            monkeypatch.setenv("AIRFLOW_CONN_GONE", flow_webhook_connection(gone.url("/gone")))
            monkeypatch.setenv("AIRFLOW_CONN_OPS", flow_webhook_connection(ops.url("/alerts")))
            monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__ALERT_CONN_ID", "ops")
            monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "1")
            ledger = open_ledger()
            for round_ in range(5):
                ledger.enable_endpoint("gone")  # disabled again by the next 410: one alert in all
                pipeline().submit(messages(1, "gone", prefix=f"r{round_}"))
            # The alert itself is recorded; send it (its receiver answers 410 too: no alert about that).
            from airflow_webhook_provider.delivery.dispatcher import Dispatcher

            Dispatcher(pipeline()).run(once=True, time_limit_seconds=5)
            alerts = [row for row in ledger.deliveries(limit=None) if row.capture == "alert"]
            assert [row.webhook for row in alerts] == ["endpoint.disabled"]
            assert len(ops.requests) == 1
            (health,) = ledger.endpoint_health(["ops"])
            assert health.disabled_at is not None  # the alert endpoint answered 410, and raised no alert


class TestRecoverAndPurge:
    def _age(self, ledger, ids, *, seconds, state=None):
        values: dict[str, Any] = {"created_at": time.time() - seconds, "updated_at": time.time() - seconds}
        if state is not None:
            values["state"] = state
        with ledger.engine.begin() as connection:
            connection.execute(update(deliveries).where(deliveries.c.id.in_(ids)).values(values))

    def test_recover_dry_run_counts_exactly_what_recover_sends(self, receiver, connect, monkeypatch, fast):
        connect("receiver")
        ledger = open_ledger()
        old, recent_failed, recent_dead, recent_held, recent_delivered = (
            messages(n, "receiver", prefix=p)
            for n, p in ((3, "old"), (4, "failed"), (2, "dead"), (2, "held"), (3, "done"))
        )
        for batch in (old, recent_failed, recent_dead, recent_held, recent_delivered):
            ledger.record(batch)
        self._age(ledger, [m.id for m in old], seconds=3 * 86400, state="failed")
        self._age(ledger, [m.id for m in recent_failed], seconds=3600, state="failed")
        self._age(ledger, [m.id for m in recent_dead], seconds=3600, state="dead")
        self._age(ledger, [m.id for m in recent_held], seconds=3600, state="held")
        self._age(ledger, [m.id for m in recent_delivered], seconds=3600, state="delivered")

        dry = cli("recover", "--since", "6h", "--dry-run", "-o", "json")
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["count"] == 8  # failed, dead and held of the last 6 h; not the old ones, not delivered
        assert len(planned["sample"]) == 5

        done = cli("recover", "--since", "6h", "-o", "json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["count"] == report["sent"] == report["delivered"] == planned["count"]
        sent = {r.delivery_id for r in receiver.requests}
        assert sent == {m.id for m in recent_failed + recent_dead + recent_held}
        assert all(r.signature_valid for r in receiver.requests)
        only_dead = json.loads(
            cli("recover", "--since", "4d", "--state", "failed", "--dry-run", "-o", "json").stdout
        )
        assert only_dead["count"] == 3  # the old failed ones; the recent ones are delivered now

    def test_purge_removes_exactly_the_rows_past_the_age(self, monkeypatch, fast):
        ledger = open_ledger()
        old_delivered, new_delivered, old_dead, old_held = (
            messages(n, "receiver", prefix=p) for n, p in ((5, "od"), (3, "nd"), (2, "dead"), (2, "held"))
        )
        for batch in (old_delivered, new_delivered, old_dead, old_held):
            ledger.record(batch)
        self._age(ledger, [m.id for m in old_delivered], seconds=40 * 86400, state="delivered")
        self._age(ledger, [m.id for m in new_delivered], seconds=5 * 86400, state="delivered")
        self._age(ledger, [m.id for m in old_dead], seconds=40 * 86400, state="dead")
        self._age(ledger, [m.id for m in old_held], seconds=40 * 86400, state="held")

        dry = json.loads(cli("purge", "--older-than", "30d", "--dry-run", "-o", "json").stdout)
        assert dry["count"] == 5
        done = cli("purge", "--older-than", "30d")
        assert done.returncode == 0 and done.stdout.startswith("5 messages purged"), done.stdout
        left = {row.id for row in ledger.deliveries(limit=None)}
        assert left == {m.id for m in new_delivered + old_dead + old_held}
        assert (
            json.loads(cli("purge", "--older-than", "30d", "--state", "dead", "-o", "json").stdout)["count"]
            == 2
        )
        assert {row.id for row in ledger.deliveries(limit=None)} == {m.id for m in new_delivered + old_held}

    def test_retention_purges_delivered_rows_from_the_dispatcher(self, monkeypatch, fast):
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETENTION_DAYS", "30")
        ledger = open_ledger()
        old, kept = messages(4, "receiver", prefix="old"), messages(2, "receiver", prefix="kept")
        ledger.record(old + kept)
        self._age(ledger, [m.id for m in old], seconds=31 * 86400, state="delivered")
        self._age(ledger, [m.id for m in kept], seconds=31 * 86400, state="dead")
        from airflow_webhook_provider.delivery.dispatcher import Dispatcher

        Dispatcher(pipeline()).run(once=True, time_limit_seconds=1)
        assert {row.id for row in ledger.deliveries(limit=None)} == {m.id for m in kept}


class TestDoctor:
    def test_celery_on_the_sqlite_default_is_a_problem_with_its_fix(self):
        done = cli("doctor", "-o", "json", env={"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"})
        assert done.returncode == 1, done.stdout + done.stderr
        checks = {check["check"]: check for check in json.loads(done.stdout)}
        assert checks["executor"]["status"] == "problem"
        assert "SQLite" in checks["executor"]["detail"]
        assert "ledger_conn_id" in checks["executor"]["fix"] and "postgres" in checks["executor"]["fix"]

    def test_local_executor_passes(self, receiver, connect):
        connect("receiver")
        done = cli("doctor", "--conn", "receiver", env={"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "problem" not in done.stdout.split("\n", 2)[-1]
        assert "0 problems" in done.stderr
        assert receiver.wait_for(1)[0].signature_valid  # --conn sent a test message

    def test_no_triggerer_is_a_warning_about_late_webhooks(self, airflow_db):
        done = cli("doctor", "-o", "json")
        (check,) = [c for c in json.loads(done.stdout) if c["check"] == "triggerer"]
        assert check["status"] == "warning" and "late webhooks" in check["detail"]
        assert check["fix"] == "run `airflow triggerer` beside the scheduler"

    def test_a_missing_connection_is_a_problem(self, monkeypatch):
        done = cli("doctor", "--conn", "nowhere", "-o", "json")
        assert done.returncode == 1
        (check,) = [c for c in json.loads(done.stdout) if c["check"] == "connection nowhere"]
        assert check["status"] == "problem" and check["fix"] == "create or correct the connection"


class StatsdListener:
    """A StatsD server on 127.0.0.1 (UDP) that keeps every line it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except OSError:
                continue
            self.lines += data.decode().splitlines()

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()

    def names(self) -> set[str]:
        return {line.split(":", 1)[0] for line in self.lines}


def test_metrics_reach_statsd_while_a_dag_delivers(airflow_db, tmp_path, dispatchers, monkeypatch, fast):
    dag_id = "metrics_dag"
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (dags / f"{dag_id}.py").write_text(
        "import datetime\n"
        "from airflow.sdk import DAG, task\n"
        "from airflow_webhook_provider import FlowWebhook, FlowWebhooks\n"
        f"with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:\n"
        "    @task\n"
        "    def work():\n"
        "        return 1\n"
        "    work()\n"
        "FlowWebhooks(FlowWebhook(name='ok', conn_id='ok_hook'), FlowWebhook(name='bad', conn_id='bad_hook')).attach(dag)\n"
    )
    try:
        with (
            StatsdListener() as statsd,
            RecordingReceiver(secret=SECRET) as ok,
            RecordingReceiver(secret=SECRET, default=Reply(500)) as bad,
        ):
            for key, value in {
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
                "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
                # The failing receiver's messages are dead after a second.
                "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_AGE_SECONDS": "1",
                "AIRFLOW_CONN_OK_HOOK": flow_webhook_connection(ok.url("/ok")),
                "AIRFLOW_CONN_BAD_HOOK": flow_webhook_connection(bad.url("/bad")),
            }.items():
                monkeypatch.setenv(key, value)
            start(dispatchers, tmp_path).wait_alive()
            run = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", dag_id],
                capture_output=True,
                text=True,
                timeout=300,
                env=os.environ.copy(),
            )
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
            wanted = {
                "airflow.flow_webhook.delivered",
                "airflow.flow_webhook.failed",
                "airflow.flow_webhook.dead",
                "airflow.flow_webhook.latency",
                "airflow.flow_webhook.backlog",
                "airflow.flow_webhook.oldest_pending_seconds",
            }
            wait_until(lambda: wanted <= statsd.names(), 60, f"the metrics {wanted - statsd.names()}")
            lines = list(statsd.lines)
    finally:
        (dags / f"{dag_id}.py").unlink(missing_ok=True)
    assert any(line.startswith("airflow.flow_webhook.delivered:1|c") for line in lines)
    assert any(line.startswith("airflow.flow_webhook.latency:") and line.endswith("|ms") for line in lines)
    assert any(line.startswith("airflow.flow_webhook.backlog:") and "|g" in line for line in lines)
