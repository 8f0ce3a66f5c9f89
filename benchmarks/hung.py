"""Hung receiver: what a receiver that accepts the connection and never answers adds to one output task.

One DAG of one task (``out``), run with ``dag.test()`` (the task, its callbacks and the
run-level callbacks, in this process, against a real Airflow metadata database), side
by side, interleaved, against the same DAG with no webhooks (the baseline). With
webhooks, one webhook selects ``out``, through a connection to a hung receiver (a
socket on 127.0.0.1 that accepts and never reads) whose ``timeout`` extra is
``TIMEOUT_SECONDS``:

- inline, circuit closed: no dispatcher alive, the endpoint never tried before; the
  output's callback sends the message itself and the attempt times out (which opens
  the circuit). Each repetition uses an endpoint of its own, so each starts closed;
- inline, circuit open: no dispatcher alive, the endpoint's circuit opened earlier;
  the callback records the message and leaves it to redelivery;
- dispatcher alive: a fresh heartbeat row (``Ledger.heartbeat``); the callback records
  the message and returns.

Alongside, the output's callback alone (``OutputEndCallback``, capture/callbacks.py,
called with a minimal context) is timed for the two cases that only record.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace, TracebackType

from _common import (
    Deadline,
    define_webhook_connection,
    init_airflow_home,
    paired_ratios,
    repeat_side_by_side,
    summary,
    write_result,
)

HOME = init_airflow_home()

from airflow_webhook_provider.capture.callbacks import OutputEndCallback, WebhookRegistry  # noqa: E402
from airflow_webhook_provider.core.definitions import FlowWebhook  # noqa: E402
from airflow_webhook_provider.core.states import Event  # noqa: E402
from airflow_webhook_provider.ledger import open_ledger  # noqa: E402

#: The connection's per-request timeout; Airflow's default for a connection is 30 s.
TIMEOUT_SECONDS = 2.0
#: Repetitions of the case that waits out a timeout, and of the others (a dag.test() is ~0.1-0.2 s).
REPS_CLOSED = 5
REPS = 11
#: Calls of the callback alone per repetition (the cases that only record).
CALLBACK_CALLS = 40
DISPATCHER = "bench-dispatcher@hung"

DAG_FILE = """
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

DAGS = {}


def one_output_dag(dag_id, conn_id=None):
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
        @task(task_id="out")
        def out():
            return 1

        out()
    if conn_id is not None:
        FlowWebhooks(FlowWebhook(name="out", conn_id=conn_id, on="any", outputs=["out"])).attach(dag)
    DAGS[dag_id] = dag


one_output_dag("bench_hung_plain")
one_output_dag("bench_hung_open", "hung_open")
one_output_dag("bench_hung_dispatcher", "hung_dispatched")
for number in range(CLOSED):
    one_output_dag(f"bench_hung_closed_{number}", f"hung_closed_{number}")
"""


class HungReceiver:
    """Accept connections on 127.0.0.1 and never read or answer them (tests/servers.py's pattern)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="hung-receiver", daemon=True)
        self.accepted = 0

    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(connection)

    def __enter__(self) -> HungReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sock in (self._socket, *self._held):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)


def migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        cwd=HOME,
        timeout=150,
    )


def load_dags(closed: int) -> dict[str, object]:
    # dag.test() serialises the DAGs of the dags folder, so the DAGs live there.
    path = HOME / "dags" / "bench_hung.py"
    path.write_text(DAG_FILE.replace("CLOSED", str(closed)))
    spec = importlib.util.spec_from_file_location("bench_hung", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.DAGS)


def main() -> None:
    deadline = Deadline(110, "hung receiver")
    migrate()
    ledger = open_ledger()
    with HungReceiver() as hung:
        for conn_id in (
            "hung_open",
            "hung_dispatched",
            *(f"hung_closed_{n}" for n in range(REPS_CLOSED + 1)),
        ):
            define_webhook_connection(conn_id, hung.url(), timeout=TIMEOUT_SECONDS)
        dags = load_dags(closed=REPS_CLOSED + 1)
        closed = iter(range(REPS_CLOSED + 1))

        def run(dag_id: str) -> float:
            start = time.perf_counter()
            dag_run = dags[dag_id].test()  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - start
            assert str(dag_run.state) in ("success", "DagRunState.SUCCESS"), (dag_id, dag_run.state)
            return elapsed

        @contextlib.contextmanager
        def dispatcher_alive() -> Iterator[None]:
            ledger.heartbeat(DISPATCHER)
            try:
                yield
            finally:
                ledger.stop_dispatcher(DISPATCHER)

        def plain() -> float:
            return run("bench_hung_plain")

        def inline_closed() -> float:
            return run(f"bench_hung_closed_{next(closed)}")

        def inline_open() -> float:
            return run("bench_hung_open")

        def dispatcher() -> float:
            with dispatcher_alive():
                return run("bench_hung_dispatcher")

        # Warm-up, untimed: parsing the dags folder, the ledger's schema; opens hung_open's circuit.
        plain()
        inline_closed()
        inline_open()
        dispatcher()
        (health,) = ledger.endpoint_health(["hung_open"])
        assert health.circuit == "open", health
        accepted_before = hung.accepted

        variants = {
            "plain": plain,
            "inline_closed": inline_closed,
            "inline_open": inline_open,
            "dispatcher": dispatcher,
        }
        reps = {**dict.fromkeys(variants, REPS), "inline_closed": REPS_CLOSED}
        seconds = repeat_side_by_side(variants, reps, deadline)
        accepted = hung.accepted - accepted_before
        assert accepted == REPS_CLOSED, (
            f"{accepted} connections to the hung receiver; one per closed circuit expected"
        )

        # The callback alone, as the task runner calls it when ``out`` ends.
        def callback_seconds(conn_id: str, tag: str) -> float:
            registry = WebhookRegistry(f"bench_hung_{tag}")
            registry.add([FlowWebhook(name="out", conn_id=conn_id, on="any", outputs=["out"])])
            callback = OutputEndCallback(registry, Event.SUCCESS)
            contexts = [
                {
                    "ti": SimpleNamespace(task_id="out"),
                    "run_id": f"manual__{tag}_{time.time_ns()}_{n}",
                    "dag_run": SimpleNamespace(clear_number=0, logical_date=None),
                }
                for n in range(CALLBACK_CALLS)
            ]
            start = time.perf_counter()
            for context in contexts:
                callback(context)  # type: ignore[arg-type]
            return (time.perf_counter() - start) / CALLBACK_CALLS

        def callback_open() -> float:
            return callback_seconds("hung_open", "callback_open")

        def callback_dispatcher() -> float:
            with dispatcher_alive():
                return callback_seconds("hung_dispatched", "callback_dispatcher")

        callback_open()  # warm-up
        callbacks = repeat_side_by_side(
            {"inline_open": callback_open, "dispatcher": callback_dispatcher},
            {"inline_open": REPS, "dispatcher": REPS},
            deadline,
        )
        assert hung.accepted - accepted_before == accepted, (
            "an open circuit or a dispatcher let a request out"
        )

    states = ledger.counts()
    write_result(
        "hung",
        {
            "timeout_seconds": TIMEOUT_SECONDS,
            "seconds": {name: summary(values) for name, values in seconds.items()},
            "added_seconds": {
                name: summary([a - b for a, b in zip(seconds[name], seconds["plain"], strict=False)])
                for name in ("inline_closed", "inline_open", "dispatcher")
            },
            "ratios": {
                f"{name}_vs_plain": paired_ratios(seconds[name], seconds["plain"])
                for name in ("inline_closed", "inline_open", "dispatcher")
            },
            "callback_seconds": {name: summary(values) for name, values in callbacks.items()},
            "connections_to_hung_receiver": accepted,
            "ledger_states": states,
        },
    )


if __name__ == "__main__":
    main()
