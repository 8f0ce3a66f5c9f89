"""
Shared fixtures: a private Airflow home with a migrated SQLite database, real receivers.

Airflow reads AIRFLOW_HOME when it is first imported, so it is set here, before any test
module imports Airflow. Every test session gets its own home, removed at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
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
