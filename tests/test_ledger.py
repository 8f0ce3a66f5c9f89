"""
The delivery ledger and redelivery, on SQLite and on the machine's PostgreSQL.

Receivers are real HTTP servers on 127.0.0.1; dispatchers run as real processes
(``flow-webhook redeliver --due``, a ``Dispatcher.run(once=True)``) where the issue is about
processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text, update

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.outcome import DeliveryResult
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.dispatcher import Dispatcher, DispatchReport
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for
from airflow_webhook_provider.ledger import Ledger, LedgerError, open_ledger
from airflow_webhook_provider.ledger.schema import deliveries, schema_info
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.conftest import SECRET, flow_webhook_connection, retry_schedule

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EVENT = JobEvent(flow_id="ledger_dag", job_id="manual__1", job_status="failed")
#: Inline quick retries: two attempts 0.01 s apart within 2 s.
QUICK = {"attempts": 2, "backoff": 0.01, "budget": 2.0}
ONCE = {"attempts": 1, "backoff": 0.01, "budget": 10.0}


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path, monkeypatch) -> Ledger:
    """A fresh ledger, reached the way users configure it: [flow_webhook] ledger_conn_id."""
    if request.param == "sqlite":
        connection = {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}
        database = None
    else:
        if not postgres_available():
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
        database = f"flow_webhook_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        connection = {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "login": "postgres",
            "schema": database,
        }
    monkeypatch.setenv("AIRFLOW_CONN_TEST_LEDGER", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID", "test_ledger")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_BACKOFF_SECONDS", "0.5")
    opened = open_ledger(config.load().ledger_conn_id)
    yield opened
    opened.engine.dispose()
    if database is not None:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def webhooks(count: int, conn_id: str = "receiver", **fields) -> list[FlowWebhook]:
    return [FlowWebhook(name=f"w{i:03d}", conn_id=conn_id, **fields) for i in range(count)]


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_webhook_provider", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=timeout,
    )


def send_inline(
    pairs: list[tuple[FlowWebhook, JobEvent]], *, attempts: int, backoff: float, budget: float
) -> list[DeliveryResult]:
    """Record (webhook, event) pairs and send them as a callback does when no dispatcher is alive.

    Like conftest's ``submit``, with the quick retries given here, but the delivery ids are
    the callbacks' own (deterministic) and the redelivery schedule and maximum age stay
    the ``[flow_webhook]`` options (the ``ledger`` fixture sets fast ones), as a callback's do.
    """
    settings = config.load()
    configured = settings.retry
    pipeline = Pipeline.from_config()
    pipeline.settings = replace(
        settings,
        retry=retry_schedule(
            attempts,
            backoff=backoff,
            budget=budget,
            redelivery_backoff_seconds=configured.redelivery_backoff_seconds,
            redelivery_max_backoff_seconds=configured.redelivery_max_backoff_seconds,
            max_age_seconds=configured.max_age_seconds,
        ),
    )
    return pipeline.submit(
        [
            message_for(webhook, event, clear_number=0, capture=CaptureSource.CALLBACK)
            for webhook, event in pairs
        ]
    )


def dispatch_due(*, time_limit_seconds: float | None = None) -> DispatchReport:
    """Send every due message in this process, as ``redeliver --due`` does."""
    dispatcher = Dispatcher(Pipeline.from_config(require_ledger=True))
    return dispatcher.run(once=True, time_limit_seconds=time_limit_seconds)


def drain(ledger: Ledger, *, timeout: float = 120) -> int:
    """Run dispatcher rounds (bounded) until nothing is pending or failed; return the rounds run."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while time.monotonic() < deadline:
        counts = ledger.counts()
        if not counts.get("pending") and not counts.get("failed"):
            return rounds
        dispatch_due(time_limit_seconds=30)
        rounds += 1
        time.sleep(0.1)
    raise AssertionError(f"still undelivered after {timeout} s: {ledger.counts()}")


class TestRecording:
    def test_pending_is_written_before_the_first_attempt(self, ledger, receiver, connect):
        connect("receiver")
        seen_states: list[set[str]] = []
        receiver.respond = lambda: (seen_states.append({d.state for d in ledger.deliveries()}), Reply(200))[1]
        send_inline([(w, EVENT) for w in webhooks(3)], **QUICK)
        assert seen_states and all("pending" in states for states in seen_states)
        assert {d.state for d in ledger.deliveries()} == {"delivered"}

    def test_attempts_and_outcome(self, ledger, receiver, connect):
        connect(
            "receiver", path="/hook?token=abc123&team=data", headers='{"Authorization": "Bearer t0ps3cret"}'
        )
        receiver.script(Reply(503, body=b"busy"), Reply(200, body=b"thanks"))
        webhook = FlowWebhook(
            name="notify", conn_id="receiver", headers={"X-Team": "data"}, query={"job": "$jobId"}
        )
        (result,) = send_inline([(webhook, EVENT)], **QUICK)

        (delivery,) = ledger.deliveries()
        assert delivery.id == result.delivery_id == receiver.requests[-1].delivery_id
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 2, 200)
        assert (delivery.dag_id, delivery.run_id, delivery.webhook, delivery.event) == (
            "ledger_dag",
            "manual__1",
            "notify",
            "failure",
        )
        assert delivery.url == receiver.url("/hook?token=***&team=data&job=manual__1")
        assert delivery.headers == {"X-Team": "data", "Content-Type": "application/json"}
        assert delivery.body == receiver.requests[-1].body
        assert [
            (a.number, a.status_code, a.response_excerpt, a.source) for a in ledger.attempts(delivery.id)
        ] == [
            (1, 503, "busy", "inline"),
            (2, 200, "thanks", "inline"),
        ]

    def test_failure_schedules_redelivery_and_honours_retry_after(self, ledger, receiver, connect):
        connect("receiver")
        receiver.default = Reply(429, headers={"Retry-After": "30"})
        before = time.time()
        send_inline([(webhooks(1)[0], EVENT)], **ONCE)
        (delivery,) = ledger.deliveries()
        assert delivery.state == "failed"
        assert delivery.next_attempt_at >= before + 29
        assert delivery.claimed_by is None
        assert dispatch_due().claimed == 0  # not due yet

    def test_retry_off_is_not_redelivered(self, ledger, receiver, connect):
        connect("receiver", retry_on_failure=False)
        receiver.default = Reply(500)
        send_inline([(webhooks(1)[0], EVENT)], **QUICK)
        (delivery,) = ledger.deliveries()
        assert (delivery.state, delivery.next_attempt_at, delivery.attempts) == ("failed", None, 1)

    def test_past_max_age_is_dead_and_can_still_be_replayed(self, ledger, receiver, connect, monkeypatch):
        connect("receiver")
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_AGE_SECONDS", "0")
        receiver.default = Reply(500)
        send_inline([(webhooks(1)[0], EVENT)], **QUICK)
        (delivery,) = ledger.deliveries()
        assert delivery.state == "dead"

        receiver.default = Reply(200)
        report = Pipeline.from_config().send_now(delivery.id)
        assert report is not None and report.delivered
        first, *_, last = receiver.requests
        assert last.delivery_id == first.delivery_id == delivery.id
        assert last.body == first.body
        assert last.header("X-Webhook-Signature") != first.header("X-Webhook-Signature")
        assert last.signature_valid
        replayed = ledger.get(delivery.id)
        assert (replayed.state, replayed.attempts) == ("delivered", 3)
        assert ledger.attempts(delivery.id)[-1].source == "replay"

    def test_a_newer_schema_is_refused(self, ledger):
        with ledger.engine.begin() as conn:
            conn.execute(schema_info.update().values(version=99))
        with pytest.raises(LedgerError, match="schema version 99, newer than this release"):
            Ledger(ledger.engine).ensure_schema()


class TestChaos:
    N = 200

    def test_every_message_arrives_once_deduplicated_and_signed(self, ledger, connect, monkeypatch):
        rng = random.Random(20261128)
        mix = Counter()

        def chaos() -> Reply:
            roll = rng.random()
            if roll < 0.15:
                mix["500/503"] += 1
                return Reply(rng.choice((500, 503)))
            if roll < 0.25:
                mix["429 Retry-After"] += 1
                return Reply(429, headers={"Retry-After": "1"})
            if roll < 0.35:
                mix["reset"] += 1
                return Reply(reset=True)
            if roll < 0.40:
                mix["stall"] += 1
                return Reply(200, delay_seconds=1.0)  # past the 0.3 s timeout
            mix["200"] += 1
            return Reply(200)

        with RecordingReceiver(secret=SECRET, respond=chaos) as receiver:
            monkeypatch.setenv(
                "AIRFLOW_CONN_CHAOS", flow_webhook_connection(receiver.url("/chaos"), timeout=0.3)
            )
            started = time.monotonic()
            results = send_inline([(w, EVENT) for w in webhooks(self.N, conn_id="chaos")], **QUICK)
            rounds = drain(ledger)
            elapsed = time.monotonic() - started
            requests = list(receiver.requests)

        assert len(results) == self.N
        accepted = [r for r in requests if r.status == 200]
        accepted_ids = Counter(r.delivery_id for r in accepted)
        assert set(accepted_ids) == {r.delivery_id for r in results}  # each message received at least once
        assert len(accepted_ids) == self.N  # de-duplicated by delivery id: exactly N
        assert all(r.signature_valid for r in requests), {r.signature_error for r in requests}
        assert ledger.counts() == {"delivered": self.N}
        duplicates = sum(count - 1 for count in accepted_ids.values())
        # Reported for the closing note (pytest -s shows it).
        print(
            f"\nchaos[{ledger.dialect}]: N={self.N} requests={len(requests)} fault mix={dict(mix)} "
            f"dispatcher rounds={rounds} duration={elapsed:.1f}s duplicates at receiver={duplicates}"
        )
        assert mix["500/503"] and mix["429 Retry-After"] and mix["reset"] and mix["stall"]


class TestReceiverDown:
    def test_run_finishes_and_redeliver_due_delivers_later(self, ledger, dag_file, monkeypatch):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_DOWN", flow_webhook_connection(f"http://127.0.0.1:{port}/hook", timeout=0.5)
        )
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__RETRY_BACKOFF_SECONDS", "0.05")
        module = dag_file(
            textwrap.dedent(
                """
                from airflow.sdk import DAG, task
                from airflow_webhook_provider import FlowWebhook, FlowWebhooks

                with DAG("receiver_down", schedule=None) as dag:
                    @task
                    def work():
                        return 1
                    work()

                FlowWebhooks(
                    FlowWebhook(name="run", conn_id="down", on="any"),
                    FlowWebhook(name="output", conn_id="down", on="success", outputs=["work"]),
                ).attach(dag)
                """
            )
        )
        dag_run = module.dag.test()
        assert dag_run.state == "success"
        assert {d.webhook: d.state for d in ledger.deliveries()} == {"run": "failed", "output": "failed"}

        with RecordingReceiver(secret=SECRET, port=port) as receiver:
            deadline = time.monotonic() + 60
            while ledger.counts() != {"delivered": 2} and time.monotonic() < deadline:
                done = run_cli("redeliver", "--due")
                assert done.returncode == 0, done.stderr[-2000:]
                time.sleep(0.2)
            requests = receiver.wait_for(2)
        assert ledger.counts() == {"delivered": 2}
        assert sorted(json.loads(r.body)["webhookName"] for r in requests) == ["output", "run"]
        assert all(r.signature_valid for r in requests)
        assert {r.delivery_id for r in requests} == {d.id for d in ledger.deliveries()}


CRASHING_SENDER = """
import os, signal
from airflow_webhook_provider.capture.callbacks import submit
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery import sender
from airflow_webhook_provider.delivery.pipeline import message_for

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # between the pending write (and the claim) and the send

sender.WebhookSender.send = die
submit(
    [
        message_for(
            FlowWebhook(name="doomed", conn_id="receiver"),
            JobEvent(flow_id="f", job_id="r", job_status="success"),
            clear_number=0,
            capture=CaptureSource.CALLBACK,
        )
    ]
)
"""


class TestCrashSafety:
    def test_killed_sender_leaves_a_pending_row_that_redelivery_sends(
        self, ledger, receiver, connect, tmp_path
    ):
        connect("receiver")
        script = tmp_path / "crash.py"
        script.write_text(CRASHING_SENDER)
        # No dispatcher is alive, so the callback path records the message, claims it and sends it inline.
        env = os.environ | {
            "AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS": "1",
            "AIRFLOW__FLOW_WEBHOOK__RETRY_BUDGET_SECONDS": "1",
        }
        done = subprocess.run([sys.executable, str(script)], env=env, timeout=120, capture_output=True)
        assert done.returncode == -signal.SIGKILL

        (delivery,) = ledger.deliveries()
        assert delivery.state == "pending" and delivery.attempts == 0
        assert delivery.built_at is None  # built at its first send, which never happened
        assert delivery.claimed_by is not None and delivery.claimed_until is not None
        assert receiver.requests == []
        assert dispatch_due().claimed == 0  # the dead sender's lease still holds it

        time.sleep(max(0.0, delivery.claimed_until - time.time()) + 0.2)
        assert dispatch_due().delivered == 1
        (request,) = receiver.wait_for(1)
        assert request.delivery_id == delivery.id and request.signature_valid
        assert ledger.get(delivery.id).state == "delivered"


class TestConcurrentDispatchers:
    N = 300

    def test_two_processes_claim_disjoint_sets(self, ledger, monkeypatch):
        with RecordingReceiver(secret=SECRET, default=Reply(200, delay_seconds=0.01)) as receiver:
            monkeypatch.setenv("AIRFLOW_CONN_RECEIVER", flow_webhook_connection(receiver.url("/hook")))
            ledger.record(
                [
                    message_for(w, EVENT, clear_number=0, capture=CaptureSource.CALLBACK)
                    for w in webhooks(self.N)
                ]
            )
            assert ledger.counts() == {"pending": self.N}
            assert ledger.count_due() == self.N

            env = os.environ.copy()
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "airflow_webhook_provider", "redeliver", "--due"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outputs = []
            try:
                for process in processes:
                    out, err = process.communicate(timeout=180)
                    outputs.append((process.returncode, out, err))
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
            requests = list(receiver.requests)

        assert all(code == 0 for code, _, _ in outputs), outputs
        received = Counter(r.delivery_id for r in requests)
        assert len(received) == self.N
        assert max(received.values()) == 1, "a delivery was sent twice"
        assert ledger.counts() == {"delivered": self.N}
        assert {d.attempts for d in ledger.deliveries(limit=None)} == {1}
        claimed = [int(out.split()[0]) for _, out, _ in outputs]
        assert sum(claimed) == self.N
        print(f"\ndispatchers[{ledger.dialect}]: claimed {claimed} of {self.N}, duplicates 0")


class TestNoSecrets:
    def test_ledger_dump_holds_neither_secret_nor_header_values(self, ledger, receiver, connect):
        connect(
            "receiver", headers='{"Authorization": "Bearer hdr-value-7f3a", "X-Api-Key": "key-value-91c2"}'
        )
        receiver.script(Reply(500), Reply(200))
        send_inline([(w, EVENT) for w in webhooks(3)], **QUICK)
        dump = []
        tables = (
            "flow_webhook_deliveries",
            "flow_webhook_attempts",
            "flow_webhook_endpoints",
            "flow_webhook_dispatchers",
            "flow_webhook_schema",
        )
        with ledger.engine.connect() as conn:
            for table in tables:
                for row in conn.execute(text(f"SELECT * FROM {table}")):
                    dump.append(repr(tuple(row)))
        text_dump = "\n".join(dump)
        assert "flow_webhook_deliveries" and len(dump) > 3
        for secret in (SECRET, "hdr-value-7f3a", "key-value-91c2", "Bearer"):
            assert secret not in text_dump
            assert secret.encode() not in text_dump.encode()


class TestCommandLine:
    def test_deliveries_list_json_is_clean_json_on_stdout(self, ledger, receiver, connect):
        connect("receiver")
        receiver.script(Reply(500), Reply(500))
        send_inline([(w, EVENT) for w in webhooks(2)], **ONCE)
        done = run_cli("deliveries", "list", "-o", "json")
        assert done.returncode == 0, done.stderr[-2000:]
        listing = json.loads(done.stdout)
        assert {(d["webhook"], d["state"], d["attempts"]) for d in listing} == {
            ("w000", "failed", 1),
            ("w001", "failed", 1),
        }
        assert {d["id"] for d in listing} == {d.id for d in ledger.deliveries()}

    def test_redeliver_by_id(self, ledger, receiver, connect):
        connect("receiver")
        receiver.script(Reply(500))
        (result,) = send_inline([(webhooks(1)[0], EVENT)], **ONCE)
        done = run_cli("redeliver", result.delivery_id)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith(f"{result.delivery_id}: delivered: HTTP 200")
        assert ledger.get(result.delivery_id).state == "delivered"

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            pytest.param(("redeliver",), 2, "give either a delivery ID or --due", id="neither"),
            pytest.param(("redeliver", "x", "--due"), 2, "give either a delivery ID or --due", id="both"),
            pytest.param(("redeliver", "no-such-id"), 1, "no delivery with id no-such-id", id="unknown-id"),
            pytest.param(("deliveries", "list", "--state", "lost"), 2, "invalid choice", id="bad-state"),
        ],
    )
    def test_errors(self, ledger, args, code, message):
        done = run_cli(*args)
        assert done.returncode == code
        assert message in done.stderr
        assert "Traceback" not in done.stderr


class TestSelections:
    """The queries behind the overview page and ``recover``: by DAGs, states, time and endpoint."""

    @staticmethod
    def _record(ledger: Ledger) -> dict[str, str]:
        """Record one message per (DAG, state) and return ``{"dag/state": delivery id}``."""
        ids = {}
        for dag in ("alpha", "beta"):
            for state in ("delivered", "pending", "failed", "held", "dead"):
                message = message_for(
                    FlowWebhook(name=f"{dag}-{state}", conn_id=f"conn_{state}"),
                    replace(EVENT, flow_id=dag),
                    clear_number=0,
                    capture=CaptureSource.CALLBACK,
                    delivery_id=str(uuid.uuid4()),
                )
                ledger.record([message])
                ids[f"{dag}/{state}"] = message.id
        with ledger.engine.begin() as connection:
            for key, delivery_id in ids.items():
                connection.execute(
                    update(deliveries)
                    .where(deliveries.c.id == delivery_id)
                    .values(
                        state=key.split("/")[1],
                        created_at=time.time() - (3600 if key.startswith("alpha") else 60),
                    )
                )
        return ids

    def test_attention_first_puts_dead_then_held_on_top_within_the_dags_asked_for(self, ledger):
        ids = self._record(ledger)
        rows = ledger.deliveries(dag_ids={"alpha"}, attention_first=True)
        assert [row.state for row in rows] == ["dead", "held", "failed", "pending", "delivered"]
        assert {row.id for row in rows} == {
            ids[f"alpha/{s}"] for s in ("dead", "held", "failed", "pending", "delivered")
        }
        # Within one state, newest first; over both DAGs, beta's (newer) row of each state leads.
        both = ledger.deliveries(attention_first=True)
        assert [row.dag_id for row in both[:2]] == ["beta", "alpha"]
        assert ledger.deliveries(dag_ids=set()) == []

    def test_states_since_and_endpoint_narrow_listings_and_recover_alike(self, ledger):
        ids = self._record(ledger)
        recent = time.time() - 600
        listed = ledger.deliveries(states=["dead", "held"], since=recent)
        assert {row.id for row in listed} == {ids["beta/dead"], ids["beta/held"]}
        assert set(ledger.select_ids(states=["dead", "held"], since=recent)) == {row.id for row in listed}
        assert ledger.select_ids(dag_ids={"alpha"}, states=["dead"], endpoint="conn_dead") == [
            ids["alpha/dead"]
        ]
        assert ledger.select_ids(dag_ids={"alpha"}, states=["dead"], endpoint="conn_held") == []

    def test_counts_per_state_and_per_endpoint_only_for_the_dags_given(self, ledger):
        self._record(ledger)
        assert ledger.dag_ids() == ["alpha", "beta"]
        assert ledger.counts(dag_ids={"beta"}) == {
            s: 1 for s in ("delivered", "pending", "failed", "held", "dead")
        }
        assert ledger.counts(endpoint="conn_dead") == {"dead": 2}
        assert ledger.counts_by_endpoint(dag_ids={"alpha"}) == {
            f"conn_{s}": {s: 1} for s in ("delivered", "pending", "failed", "held", "dead")
        }
