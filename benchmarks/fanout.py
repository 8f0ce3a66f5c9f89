"""Fan-out: one event, 50 webhooks, a receiver that answers after 100 ms.

Side by side, interleaved, in one process:

- ours: ``Pipeline.from_config().submit(messages)`` with no dispatcher alive, as a
  DAG-level callback runs it (``capture.callbacks.submit``): the 50 messages recorded
  ``pending``, the dispatcher heartbeat read, the messages claimed, built and sent at
  once through the shared pooled session, their outcomes recorded in one batch;
- ``HttpNotifier`` (apache-airflow-providers-http), one per webhook, called one after
  another as Airflow calls a list of callbacks;
- ``HttpHook.run`` in a loop;
- a plain ``requests.Session`` loop;
- a hand-written ``requests`` fan-out on 50 threads (no ledger, no retries): the floor
  a concurrent client reaches on this machine;
- one request alone: one receiver latency, the target's unit.

The baselines send the same 50 requests: the same bodies and headers, the signature
computed beforehand (outside their timing).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from _common import (
    FAN_OUT,
    HTTP_CONN_ID,
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
from airflow.providers.http.hooks.http import HttpHook  # noqa: E402
from airflow.providers.http.notifications.http import HttpNotifier  # noqa: E402
from airflow.sdk import DAG  # noqa: E402
from workload import EVENT, same_requests, submit_inline, webhooks  # noqa: E402

RECEIVER_DELAY = 0.1
REPS_FAST = 7
#: The sequential baselines take 50 receiver latencies (~5 s) each time.
REPS_SEQUENTIAL = 3


def main() -> None:
    deadline = Deadline(240, "fan-out")
    definitions = webhooks()
    planned = [(webhook, EVENT) for webhook in definitions]
    with lean_receiver(delay=RECEIVER_DELAY) as receiver:
        define_connections(receiver.url(), receiver.port)
        url = receiver.url()
        dag = DAG("bench_fanout", schedule=None)

        def ours() -> float:
            start = time.perf_counter()
            results = submit_inline(planned)
            elapsed = time.perf_counter() - start
            assert len(results) == FAN_OUT and all(r.delivered for r in results), [
                r.summary() for r in results
            ]
            return elapsed

        def http_notifier() -> float:
            requests_ = same_requests(definitions)
            notifiers = [
                HttpNotifier(http_conn_id=HTTP_CONN_ID, endpoint="/hook", data=body.decode(), headers=headers)
                for body, headers in requests_
            ]
            start = time.perf_counter()
            for notifier in notifiers:
                notifier({"dag": dag, "run_id": EVENT.job_id})
            return time.perf_counter() - start

        def http_hook_loop() -> float:
            requests_ = same_requests(definitions)
            hook = HttpHook(method="POST", http_conn_id=HTTP_CONN_ID)
            start = time.perf_counter()
            for body, headers in requests_:
                hook.run(endpoint="/hook", data=body, headers=headers)
            return time.perf_counter() - start

        def requests_loop() -> float:
            requests_ = same_requests(definitions)
            start = time.perf_counter()
            with requests.Session() as session:
                for body, headers in requests_:
                    session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
            return time.perf_counter() - start

        def requests_threads() -> float:
            requests_ = same_requests(definitions)
            start = time.perf_counter()
            with requests.Session() as session:
                session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=FAN_OUT))
                with ThreadPoolExecutor(max_workers=FAN_OUT) as pool:
                    for response in pool.map(
                        lambda item: session.post(url, data=item[0], headers=item[1], timeout=30), requests_
                    ):
                        response.raise_for_status()
            return time.perf_counter() - start

        latency_session = requests.Session()
        single_body, single_headers = same_requests(definitions[:1])[0]

        def one_request() -> float:
            start = time.perf_counter()
            latency_session.post(url, data=single_body, headers=single_headers, timeout=30).raise_for_status()
            return time.perf_counter() - start

        # Warm every path once (imports, connection lookups, the ledger's schema), untimed.
        submit_inline(planned)
        one_request()
        before = receiver.stats()
        variants = {
            "ours": ours,
            "requests_threads": requests_threads,
            "one_request": one_request,
            "requests_loop": requests_loop,
            "http_hook_loop": http_hook_loop,
            "http_notifier": http_notifier,
        }
        reps = {name: REPS_FAST for name in variants}
        reps.update(
            requests_loop=REPS_SEQUENTIAL, http_hook_loop=REPS_SEQUENTIAL, http_notifier=REPS_SEQUENTIAL
        )
        timings = repeat_side_by_side(variants, reps, deadline)
        after = receiver.stats()
        latency_session.close()

    sent = sum(len(values) * (1 if name == "one_request" else FAN_OUT) for name, values in timings.items())
    received = after["requests"] - before["requests"]
    assert received == sent, f"the receiver got {received} requests, {sent} were sent"
    assert after["signed_invalid"] == before["signed_invalid"], "a signature did not verify"
    assert after["signed_valid"] - before["signed_valid"] == received
    write_result(
        "fanout",
        {
            "receiver_delay_seconds": RECEIVER_DELAY,
            "webhooks": FAN_OUT,
            "seconds": {name: summary(values) for name, values in timings.items()},
            "ratios": {
                "ours_vs_receiver_latency": paired_ratios(timings["ours"], timings["one_request"]),
                **{
                    f"ours_vs_{name}": paired_ratios(timings["ours"], timings[name])
                    for name in ("http_notifier", "http_hook_loop", "requests_loop", "requests_threads")
                },
            },
            "requests_verified": received,
        },
    )


if __name__ == "__main__":
    main()
