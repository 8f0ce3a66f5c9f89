"""What every benchmark part shares: a private Airflow home, the lean receiver, statistics, processes.

Each part runs in its own process, started by ``run.py`` with ``BENCH_HOME`` set to a
fresh directory; :func:`init_airflow_home` must run before Airflow is imported, because
Airflow reads ``AIRFLOW_HOME`` once, on import. A long-running process a part starts
(a dispatcher) gets a process group of its own (:func:`start_process_group`), stopped
with :func:`stop_process_group`, and is told to stop if the part itself dies.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECRET = "benchmark-secret"
WEBHOOK_CONN_ID = "bench_webhook"
#: The same receiver at the connection's default max_concurrency (10 requests at once).
DEFAULT_CAP_CONN_ID = "bench_webhook_default_cap"
HTTP_CONN_ID = "bench_http"
#: One fan-out: the most webhooks one flow may have.
FAN_OUT = 50


def init_airflow_home() -> Path:
    """Point Airflow at this part's private home and ledger, before Airflow is imported.

    The ledger is the default SQLite file, ``$AIRFLOW_HOME/flow_webhooks.db``.
    """
    home = Path(os.environ.get("BENCH_HOME") or "")
    if not home.is_dir():
        raise SystemExit(
            "run the benchmarks with benchmarks/run.py, which gives each part a fresh BENCH_HOME"
        )
    (home / "dags").mkdir(exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Per-delivery INFO lines would time the terminal, not the sender.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "",
            # Every receiver is on the loopback interface; no proxy may stand in between.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    if str(REPO) not in sys.path:
        # Last, so that an installed (or PYTHONPATH) copy of the provider wins.
        sys.path.append(str(REPO))
    return home


def define_webhook_connection(conn_id: str, url: str, **extra: object) -> None:
    """Define a signed flow_webhook connection (``AIRFLOW_CONN_<ID>``), with optional extras (``timeout=2``)."""
    connection: dict[str, object] = {"conn_type": "flow_webhook", "host": url, "password": SECRET}
    if extra:
        connection["extra"] = extra
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)


def define_connections(url: str, port: int) -> None:
    """Define the receiver as flow_webhook connections and as an HTTP provider connection.

    ``WEBHOOK_CONN_ID`` allows a whole fan-out at once (``max_concurrency`` 50), so the
    benchmarks measure the provider's own machinery; ``DEFAULT_CAP_CONN_ID`` keeps the
    default limit of 10 requests in flight, which an operator raises per connection.
    """
    define_webhook_connection(WEBHOOK_CONN_ID, url, max_concurrency=FAN_OUT)
    define_webhook_connection(DEFAULT_CAP_CONN_ID, url)
    os.environ[f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
    )


@dataclass
class Receiver:
    """A running lean receiver process."""

    port: int
    process: subprocess.Popen[str]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _get(self, path: str) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, int]:
        return dict(self._get("/__stats"))

    def arrivals(self) -> dict[str, float]:
        """When each delivery id first arrived (UNIX seconds); needs ``record_arrivals``."""
        return dict(self._get("/__arrivals"))


@contextmanager
def lean_receiver(
    *,
    delay: float = 0.0,
    secret: str | None = SECRET,
    max_seconds: float = 400,
    record_arrivals: bool = False,
) -> Iterator[Receiver]:
    """Run ``lean_receiver.py`` on 127.0.0.1 for the duration of the block, then stop it."""
    command = [
        sys.executable,
        str(BENCH / "lean_receiver.py"),
        "--delay",
        str(delay),
        "--max-seconds",
        str(max_seconds),
    ]
    if secret is not None:
        command += ["--secret", secret]
    if record_arrivals:
        command.append("--record-arrivals")
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the lean receiver did not start: {line!r}")
        yield Receiver(int(line.split()[1]), process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: SIGTERM this child when the part that started it dies (killed by run.py's time bound).
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process_group(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start a long-running process in a process group of its own, its output in ``log``.

    It is sent SIGTERM if this process dies first; stop it with :func:`stop_process_group`.
    """
    with log.open("wb") as output:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop_process_group(process: subprocess.Popen[bytes], *, grace_seconds: float = 30) -> int:
    """SIGTERM a process group started by :func:`start_process_group`; SIGKILL it after the grace."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            return process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return process.wait()
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind in its group
    return process.wait(timeout=10)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, spread (min and max) and the raw values of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """The ratio of each repetition to the baseline measured beside it, summarised."""
    pairs = list(zip(numerators, denominators, strict=False))
    return summary([a / b for a, b in pairs])


class Deadline:
    """A time bound for a benchmark loop: ``check()`` raises once it has passed."""

    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.what = what

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"{self.what} ran past its time bound; the machine is too busy to measure")


def repeat_side_by_side(
    variants: dict[str, Callable[[], float]], reps: dict[str, int], deadline: Deadline
) -> dict[str, list[float]]:
    """Run each variant ``reps[name]`` times, rotating the order every round.

    Variants run interleaved, so that a noisy moment on the machine hits all of them
    rather than one.
    """
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(max(reps.values())):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            if round_number < reps[name]:
                deadline.check()
                results[name].append(variants[name]())
    return results


def write_result(part: str, data: dict[str, Any]) -> None:
    """Write a part's results where ``run.py`` reads them."""
    out = Path(os.environ["BENCH_OUT"])
    out.write_text(json.dumps({"part": part, **data}, indent=2))
