"""Throughput: signed deliveries per second to a keep-alive receiver, ledger on SQLite.

Side by side, interleaved, in one process, against a receiver (its own process, no
delay, verifying every signature) on 127.0.0.1:

- ours: ``callbacks.dispatch`` in fan-outs of 50 - render, sign, ledger pending and
  outcome rows, concurrent sends through the shared pooled session;
- a bare ``requests.Session`` loop sending the same bytes (bodies, headers and
  signatures made beforehand, outside its timing): the target's baseline;
- the same bytes from 50 threads through one pooled session: what concurrency alone
  buys on this machine, for reference.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from _common import (
    FAN_OUT,
    WEBHOOK_CONN_ID,
    Deadline,
    define_connections,
    init_airflow_home,
    lean_receiver,
    paired_ratios,
    repeat_side_by_side,
    summary,
    write_result,
)

init_airflow_home()

import requests  # noqa: E402
from workload import same_requests  # noqa: E402

from airflow_webhook_provider.callbacks import dispatch  # noqa: E402
from airflow_webhook_provider.models import FlowWebhook, JobEvent  # noqa: E402

DELIVERIES = 1000
REPS = 9


def main() -> None:
    deadline = Deadline(140, "throughput")
    definitions = [
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id=WEBHOOK_CONN_ID,
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId of $flowId ended: $jobStatus", "id": "$deliveryId"}',
        )
        for i in range(FAN_OUT)
    ]
    with lean_receiver(delay=0.0) as receiver:
        define_connections(receiver.url(), receiver.port)
        url = receiver.url()

        def events(rep: str) -> list[JobEvent]:
            return [
                JobEvent(flow_id="bench_throughput", job_id=f"{rep}-{n}", job_status="success")
                for n in range(DELIVERIES // FAN_OUT)
            ]

        def same_bytes() -> list[tuple[bytes, dict[str, str]]]:
            return [item for event in events("bare") for item in same_requests(definitions, event)]

        def ours() -> float:
            batches = [[(webhook, event) for webhook in definitions] for event in events("ours")]
            start = time.perf_counter()
            delivered = 0
            for planned in batches:
                delivered += sum(result.delivered for result in dispatch(planned))
            elapsed = time.perf_counter() - start
            assert delivered == DELIVERIES
            return DELIVERIES / elapsed

        bare_session = requests.Session()

        def bare_loop() -> float:
            messages = same_bytes()
            start = time.perf_counter()
            for body, headers in messages:
                bare_session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
            return DELIVERIES / (time.perf_counter() - start)

        threaded_session = requests.Session()
        threaded_session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=FAN_OUT))
        pool = ThreadPoolExecutor(max_workers=FAN_OUT)

        def bare_threads() -> float:
            messages = same_bytes()
            start = time.perf_counter()
            for response in pool.map(
                lambda item: threaded_session.post(url, data=item[0], headers=item[1], timeout=30), messages
            ):
                response.raise_for_status()
            return DELIVERIES / (time.perf_counter() - start)

        # Warm-up, untimed: imports, connections, the ledger's schema, the thread pools.
        dispatch([(webhook, events("warm")[0]) for webhook in definitions])
        bare_session.post(url, data=b"{}", timeout=30)
        list(pool.map(lambda _: threaded_session.post(url, data=b"{}", timeout=30), range(FAN_OUT)))
        before = receiver.stats()

        variants = {"ours": ours, "bare_loop": bare_loop, "bare_threads": bare_threads}
        rates = repeat_side_by_side(variants, dict.fromkeys(variants, REPS), deadline)
        after = receiver.stats()
        pool.shutdown()
        bare_session.close()
        threaded_session.close()

    received = after["requests"] - before["requests"]
    assert received == DELIVERIES * REPS * len(variants), received
    assert after["signed_invalid"] == before["signed_invalid"], "a signature did not verify"
    assert after["signed_valid"] - before["signed_valid"] == received
    write_result(
        "throughput",
        {
            "deliveries_per_rep": DELIVERIES,
            "per_second": {name: summary(values) for name, values in rates.items()},
            "ratios": {
                "ours_vs_bare_loop": paired_ratios(rates["ours"], rates["bare_loop"]),
                "ours_vs_bare_threads": paired_ratios(rates["ours"], rates["bare_threads"]),
            },
            "receiver_connections": after["connections"],
            "requests_verified": received,
        },
    )


if __name__ == "__main__":
    main()
