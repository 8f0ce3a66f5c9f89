"""First-attempt latency under a running dispatcher: from the message's record to its arrival.

``python -m airflow_webhook_provider dispatcher`` runs as its own process (its own
process group, stopped at the end) with the default ``[flow_webhook]`` options, over
this part's SQLite ledger (no ``NOTIFY`` there: an idle dispatcher polls every
``dispatcher_poll_seconds``, 0.25 s). This process records ``MESSAGES`` messages, one
at a time, spaced at random over ``SPREAD_SECONDS``, the way output callbacks record
them (``Pipeline.submit``, which only records while the dispatcher's heartbeat is
fresh). The receiver (its own process, on 127.0.0.1) notes when each delivery id
arrived; the latency is that arrival time minus the row's ``created_at``.

The figure is a distribution (p50, p90, p99, max), not a ratio; the bound is 1 s.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

from _common import (
    WEBHOOK_CONN_ID,
    Deadline,
    define_connections,
    init_airflow_home,
    lean_receiver,
    percentile,
    start_process_group,
    stop_process_group,
    write_result,
)

HOME = init_airflow_home()

from workload import new_messages  # noqa: E402

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent  # noqa: E402
from airflow_webhook_provider.delivery.pipeline import Pipeline  # noqa: E402
from airflow_webhook_provider.ledger import open_ledger  # noqa: E402

MESSAGES = 200
SPREAD_SECONDS = 20.0
BOUND_SECONDS = 1.0


def main() -> None:
    deadline = Deadline(100, "latency")
    rng = random.Random(20260101)
    webhook = FlowWebhook(
        name="latency",
        conn_id=WEBHOOK_CONN_ID,
        on="any",
        outputs=["out"],
        headers={"Content-Type": "application/json"},
        body='{"text": "Output $outputName of $jobId ended: $jobStatus", "id": "$deliveryId"}',
    )
    ledger = open_ledger()  # made here, before the dispatcher opens it
    with lean_receiver(delay=0.0, record_arrivals=True) as receiver:
        define_connections(receiver.url(), receiver.port)
        dispatcher = start_process_group(
            [sys.executable, "-m", "airflow_webhook_provider", "dispatcher"],
            env=os.environ,
            # Not the repository: its copy of the provider would shadow the installed one.
            cwd=HOME,
            log=HOME / "dispatcher.log",
        )
        try:
            pipeline = Pipeline.from_config()
            while pipeline.mode().name != "dispatcher":
                deadline.check()
                if dispatcher.poll() is not None:
                    raise RuntimeError(
                        f"the dispatcher exited ({dispatcher.returncode}):\n"
                        + (HOME / "dispatcher.log").read_text()[-3000:]
                    )
                time.sleep(0.1)
            started = time.monotonic()
            sent: list[str] = []
            for number in range(MESSAGES):
                deadline.check()
                event = JobEvent(
                    flow_id="bench_latency",
                    job_id=f"manual__{number}",
                    job_status="success",
                    output_name="out",
                )
                messages = new_messages([(webhook, event)])
                assert Pipeline.from_config().submit(messages) == []  # recorded only
                sent.append(messages[0].id)
                # Uniform gaps averaging SPREAD_SECONDS / MESSAGES, out of step with the poll interval.
                target = started + SPREAD_SECONDS * (number + rng.random()) / MESSAGES
                time.sleep(max(0.0, target - time.monotonic()))
            ours = set(sent)
            arrivals: dict[str, float] = {}
            while len(arrivals) < MESSAGES:
                deadline.check()
                time.sleep(0.2)
                arrivals = {key: value for key, value in receiver.arrivals().items() if key in ours}
            spread = time.monotonic() - started
        finally:
            exit_code = stop_process_group(dispatcher)
        stats = receiver.stats()

    rows = {row.id: row for row in ledger.get_many(sent)}
    latencies = [arrivals[key] - rows[key].created_at for key in sent]
    attempts = [ledger.attempts(key) for key in sent]
    assert all(len(made) == 1 and made[0].source == "dispatcher" for made in attempts)
    assert {row.state for row in ledger.get_many(sent)} == {"delivered"}
    assert stats["signed_invalid"] == 0 and stats["requests"] == MESSAGES
    write_result(
        "latency",
        {
            "messages": MESSAGES,
            "spread_seconds": round(spread, 1),
            "bound_seconds": BOUND_SECONDS,
            "poll_seconds": pipeline.settings.dispatcher_poll_seconds,
            "seconds": {
                "p50": percentile(latencies, 0.50),
                "p90": percentile(latencies, 0.90),
                "p99": percentile(latencies, 0.99),
                "max": max(latencies),
                "min": min(latencies),
                "mean": statistics.fmean(latencies),
            },
            "over_bound": sum(latency > BOUND_SECONDS for latency in latencies),
            "latencies": sorted(latencies),
            "dispatcher_exit_code": exit_code,
        },
    )


if __name__ == "__main__":
    main()
