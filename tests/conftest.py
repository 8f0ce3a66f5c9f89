"""
Shared fixtures: a private Airflow home with a migrated SQLite database, real receivers.

Airflow reads AIRFLOW_HOME when it is first imported, so it is set here, before any test
module imports Airflow. Every test session gets its own home, removed at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="flow-webhook-airflow-home-"))
_DAGS = _HOME / "dags"
_DAGS.mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)

from airflow_webhook_provider.receiver import RecordingReceiver  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECRET = "test-secret-ÄÖ-🔑"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the session's private AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    return _HOME


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    """A recording receiver on 127.0.0.1 that verifies signatures with SECRET."""
    with RecordingReceiver(secret=SECRET) as server:
        yield server


def flow_webhook_connection(url: str, *, secret: str | None = SECRET, **extra: Any) -> str:
    """Return a ``flow_webhook`` connection in Airflow's JSON form, for an AIRFLOW_CONN_ variable."""
    connection: dict[str, Any] = {"conn_type": "flow_webhook", "host": url}
    if secret is not None:
        connection["password"] = secret
    if extra:
        connection["extra"] = {k: v for k, v in extra.items()}
    return json.dumps(connection)


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch, receiver: RecordingReceiver):
    """Define a flow_webhook connection to the receiver: ``connect("conn_id", path="/x", **extra)``."""

    def define(
        conn_id: str = "receiver", *, path: str = "/hook", secret: str | None = SECRET, **extra: Any
    ) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            flow_webhook_connection(receiver.url(path), secret=secret, **extra),
        )
        return conn_id

    return define


@pytest.fixture
def dag_file(airflow_db: Path):
    """
    Write a DAG file into the dags folder and import it: ``dag_file(source) -> module``.

    ``dag.test()`` serialises the DAGs of the dags folder, so a DAG must live there. The
    files are removed after the test so later tests parse only their own.
    """
    written: list[Path] = []

    def write(source: str) -> Any:
        name = f"dag_{uuid.uuid4().hex[:12]}"
        path = _DAGS / f"{name}.py"
        path.write_text(source)
        written.append(path)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield write
    for path in written:
        path.unlink(missing_ok=True)


def retry_schedule(attempts: int = 1, *, backoff: float = 0.01, budget: float = 10.0, **slow: float) -> Any:
    """A RetrySchedule for tests: ``attempts`` quick attempts ``backoff`` apart within ``budget`` seconds."""
    from airflow_webhook_provider.core.retry import RetrySchedule

    return RetrySchedule(attempts=attempts, backoff_seconds=backoff, budget_seconds=budget, **slow)


def submit(pairs: Any, *, attempts: int = 1, backoff: float = 0.01, budget: float = 10.0) -> list[Any]:
    """Record (webhook, event) pairs and send them as a callback does without a dispatcher; return the results.

    Each message gets a random delivery id, so the same pair may be sent by several tests.
    """
    from dataclasses import replace

    from airflow_webhook_provider import config
    from airflow_webhook_provider.core.identity import random_delivery_id
    from airflow_webhook_provider.core.states import CaptureSource
    from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for

    pipeline = Pipeline.from_config()
    pipeline.settings = replace(config.load(), retry=retry_schedule(attempts, backoff=backoff, budget=budget))
    messages = [
        message_for(
            webhook, event, clear_number=0, capture=CaptureSource.CALLBACK, delivery_id=random_delivery_id()
        )
        for webhook, event in pairs
    ]
    return pipeline.submit(messages)


POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_database() -> Iterator[dict[str, Any]]:
    """A fresh database on the machine's PostgreSQL, as an Airflow ``postgres`` connection; dropped afterwards."""
    from sqlalchemy import create_engine, text

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
    except OSError:
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    database = f"flow_webhook_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        yield {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "login": "postgres",
            "schema": database,
        }
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def ledger_connection(kind: str, directory: Path) -> Iterator[dict[str, Any]]:
    """A fresh ledger database of ``kind`` (``sqlite`` or ``postgresql``), as an Airflow connection."""
    if kind == "sqlite":
        yield {"conn_type": "sqlite", "host": str(directory / f"ledger-{uuid.uuid4().hex[:8]}.db")}
    else:
        with postgres_database() as connection:
            yield connection


@pytest.fixture(autouse=True)
def own_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Give every test a ledger of its own, so no message or endpoint health (an open circuit) carries over.

    ``[flow_webhook] ledger_conn_id`` points at a SQLite file in the test's ``tmp_path``, for this
    process and the processes it starts; the file is created on first use. Tests that need
    another ledger (PostgreSQL) set their own connection over it.
    """
    connection = {"conn_type": "sqlite", "host": str(tmp_path / "flow_webhooks.db")}
    monkeypatch.setenv("AIRFLOW_CONN_FLOW_WEBHOOK_TEST_LEDGER", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID", "flow_webhook_test_ledger")
    opened: list[Any] = []

    class _Lazy:
        def __getattr__(self, name: str) -> Any:
            from airflow_webhook_provider.ledger import open_ledger

            if not opened:
                opened.append(open_ledger())
            return getattr(opened[0], name)

    yield _Lazy()
    for ledger in opened:
        ledger.engine.dispose()


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short heartbeats, polls and backoffs (tests.dispatching.FAST) in this process and its children."""
    from tests.dispatching import FAST

    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def dispatchers() -> Iterator[list[Any]]:
    """The dispatcher processes a test starts (tests.dispatching.start), killed when it ends."""
    started: list[Any] = []
    yield started
    for process in started:
        process.kill()
