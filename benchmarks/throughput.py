"""Throughput: signed deliveries per second to a keep-alive receiver, ledger on SQLite.

Side by side, interleaved, in one process, against a receiver (its own process, no
delay, verifying every signature) on 127.0.0.1:

- inline: ``Pipeline.submit`` in fan-outs of 50 with no dispatcher alive, as a callback
  sends them - capture (delivery ids, references), ledger pending rows, the heartbeat
  read, claims, render and sign, concurrent sends through the shared pooled session,
  outcome rows;
- dispatcher: ``DISPATCHED`` messages recorded ``pending`` beforehand (outside the
  timing, as callbacks left them), then ``Dispatcher(pipeline).run(once=True)`` drains
  them: claims of due rows, build and sign on its worker threads
  (``[flow_webhook] dispatcher_concurrency``, 16), outcomes recorded in batches; to a
  connection allowing 50 requests at once, and (``dispatcher_default_cap``) to one at the
  default ``max_concurrency`` of 10, where each endpoint's claims wait for its slots;
- a bare ``requests.Session`` loop sending the same bytes (bodies, headers and
  signatures made beforehand, outside its timing): the baseline of both;
- the same bytes from 50 threads through one pooled session: what concurrency alone
  buys on this machine, for reference.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from _common import (
    DEFAULT_CAP_CONN_ID,
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
from workload import new_messages, same_requests, submit_inline  # noqa: E402

from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent  # noqa: E402
from airflow_webhook_provider.delivery.dispatcher import Dispatcher  # noqa: E402
from airflow_webhook_provider.delivery.pipeline import Pipeline  # noqa: E402
from airflow_webhook_provider.ledger import open_ledger  # noqa: E402

#: Messages per repetition of the inline and 50-thread variants (20 fan-outs of 50).
DELIVERIES = 1000
#: Messages per repetition that the dispatcher drains, and the bare loop sends.
DISPATCHED = 2000
REPS = 7


def main() -> None:
    deadline = Deadline(170, "throughput")
    definitions = [
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id=WEBHOOK_CONN_ID,
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId of $flowId ended: $jobStatus", "id": "$deliveryId"}',
        )
        for i in range(FAN_OUT)
    ]
    default_cap = [
        definition.model_copy(update={"conn_id": DEFAULT_CAP_CONN_ID}) for definition in definitions
    ]
    with lean_receiver(delay=0.0) as receiver:
        define_connections(receiver.url(), receiver.port)
        url = receiver.url()
        ledger = open_ledger()

        def events(rep: str, count: int) -> list[JobEvent]:
            return [
                JobEvent(flow_id="bench_throughput", job_id=f"{rep}-{n}", job_status="success")
                for n in range(count // FAN_OUT)
            ]

        def same_bytes(count: int) -> list[tuple[bytes, dict[str, str]]]:
            return [item for event in events("bare", count) for item in same_requests(definitions, event)]

        def inline() -> float:
            batches = [
                [(webhook, event) for webhook in definitions] for event in events("inline", DELIVERIES)
            ]
            start = time.perf_counter()
            delivered = 0
            for planned in batches:
                delivered += sum(result.delivered for result in submit_inline(planned))
            elapsed = time.perf_counter() - start
            assert delivered == DELIVERIES
            return DELIVERIES / elapsed

        def drain(webhooks: list[FlowWebhook], rep: str) -> float:
            # Recorded as callbacks leave them for a live dispatcher; not timed.
            ledger.record(
                new_messages((webhook, event) for event in events(rep, DISPATCHED) for webhook in webhooks)
            )
            assert ledger.count_due() == DISPATCHED
            start = time.perf_counter()
            report = Dispatcher(Pipeline.from_config()).run(once=True)
            elapsed = time.perf_counter() - start
            assert report.delivered == DISPATCHED, report.summary()
            return DISPATCHED / elapsed

        def dispatcher() -> float:
            return drain(definitions, "dispatched")

        def dispatcher_default_cap() -> float:
            return drain(default_cap, "dispatched-default-cap")

        bare_session = requests.Session()

        def bare_loop() -> float:
            messages = same_bytes(DISPATCHED)
            start = time.perf_counter()
            for body, headers in messages:
                bare_session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
            return DISPATCHED / (time.perf_counter() - start)

        threaded_session = requests.Session()
        threaded_session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=FAN_OUT))
        pool = ThreadPoolExecutor(max_workers=FAN_OUT)

        def bare_threads() -> float:
            messages = same_bytes(DELIVERIES)
            start = time.perf_counter()
            for response in pool.map(
                lambda item: threaded_session.post(url, data=item[0], headers=item[1], timeout=30), messages
            ):
                response.raise_for_status()
            return DELIVERIES / (time.perf_counter() - start)

        # Warm-up, untimed: imports, connections, the ledger's schema, the thread pools.
        submit_inline([(webhook, events("warm", FAN_OUT)[0]) for webhook in definitions])
        ledger.record(
            new_messages((webhook, events("warm-dispatched", FAN_OUT)[0]) for webhook in definitions)
        )
        Dispatcher(Pipeline.from_config()).run(once=True)
        bare_session.post(url, data=b"{}", timeout=30)
        list(pool.map(lambda _: threaded_session.post(url, data=b"{}", timeout=30), range(FAN_OUT)))
        before = receiver.stats()

        variants = {
            "inline": inline,
            "dispatcher": dispatcher,
            "dispatcher_default_cap": dispatcher_default_cap,
            "bare_loop": bare_loop,
            "bare_threads": bare_threads,
        }
        rates = repeat_side_by_side(variants, dict.fromkeys(variants, REPS), deadline)
        after = receiver.stats()
        pool.shutdown()
        bare_session.close()
        threaded_session.close()

    sent = REPS * (2 * DELIVERIES + 3 * DISPATCHED)
    received = after["requests"] - before["requests"]
    assert received == sent, (received, sent)
    assert after["signed_invalid"] == before["signed_invalid"], "a signature did not verify"
    assert after["signed_valid"] - before["signed_valid"] == received
    write_result(
        "throughput",
        {
            "deliveries_per_rep": {
                "inline": DELIVERIES,
                "dispatcher": DISPATCHED,
                "dispatcher_default_cap": DISPATCHED,
                "bare_loop": DISPATCHED,
                "bare_threads": DELIVERIES,
            },
            "per_second": {name: summary(values) for name, values in rates.items()},
            "ratios": {
                "inline_vs_bare_loop": paired_ratios(rates["inline"], rates["bare_loop"]),
                "inline_vs_bare_threads": paired_ratios(rates["inline"], rates["bare_threads"]),
                "dispatcher_vs_bare_loop": paired_ratios(rates["dispatcher"], rates["bare_loop"]),
                "dispatcher_default_cap_vs_bare_loop": paired_ratios(
                    rates["dispatcher_default_cap"], rates["bare_loop"]
                ),
                "dispatcher_vs_bare_threads": paired_ratios(rates["dispatcher"], rates["bare_threads"]),
            },
            "receiver_connections": after["connections"],
            "requests_verified": received,
        },
    )


if __name__ == "__main__":
    main()
