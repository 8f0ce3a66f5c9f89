"""Per-message CPU: what each step of a delivery costs, in microseconds, against one HTTP round trip.

Every step is timed over many iterations, the steps interleaved and rotated, five
times; the figure is the median time per message (or per attempt, or per fan-out of
50, as named) with its spread. The unit of comparison is one keep-alive round trip of
a bare ``requests.Session`` to a receiver on 127.0.0.1 (its own process, no delay).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from _common import (
    FAN_OUT,
    SECRET,
    WEBHOOK_CONN_ID,
    Deadline,
    define_connections,
    init_airflow_home,
    lean_receiver,
    repeat_side_by_side,
    summary,
    write_result,
)

init_airflow_home()

import requests  # noqa: E402

from airflow_webhook_provider.callbacks import dispatch  # noqa: E402
from airflow_webhook_provider.delivery import (  # noqa: E402
    Attempt,
    DeliveryResult,
    RetryPolicy,
    build_message,
    fan_out,
    shared_sender,
)
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook, retry_policy_from_config  # noqa: E402
from airflow_webhook_provider.ledger import NewDelivery, open_ledger, schedule_from_config  # noqa: E402
from airflow_webhook_provider.models import FlowWebhook, JobEvent  # noqa: E402
from airflow_webhook_provider.signing import sign  # noqa: E402
from airflow_webhook_provider.transport import attempt_context  # noqa: E402

REPS = 5
#: What each step costs per: "message", "attempt" or "fan-out" (one event of 50 messages).
UNITS: dict[str, str] = {}


def per(
    unit: str, iterations: int, messages_each: int = 1
) -> Callable[[Callable[[], None]], Callable[[], float]]:
    """Time ``iterations`` calls of the step; return microseconds per unit."""

    def decorate(step: Callable[[], None]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for _ in range(iterations):
                step()
            return (time.perf_counter() - start) / (iterations * messages_each) * 1e6

        UNITS[step.__name__] = unit
        timed.__name__ = step.__name__
        return timed

    return decorate


def main() -> None:
    deadline = Deadline(110, "per-message CPU")
    webhook = FlowWebhook(
        name="cpu",
        conn_id=WEBHOOK_CONN_ID,
        headers={"Content-Type": "application/json"},
        body='{"text": "Job $jobId of $flowId ended: $jobStatus", "link": "$jobUrl", "id": "$deliveryId"}',
    )
    event = JobEvent(
        flow_id="bench_cpu",
        job_id="scheduled__2026-01-01T00:00:00+00:00",
        job_status="failed",
        logical_date="2026-01-01T00:00:00+00:00",
        job_url="http://127.0.0.1:8080/dags/bench_cpu/runs/scheduled__2026-01-01T00:00:00+00:00",
    )
    with lean_receiver(delay=0.0) as receiver:
        define_connections(receiver.url(), receiver.port)
        url = receiver.url()
        endpoint = FlowWebhookHook(WEBHOOK_CONN_ID).endpoint
        message = build_message(endpoint, webhook, event)
        assert message.body is not None
        body = message.body
        ledger = open_ledger()
        sender = shared_sender()
        policy = RetryPolicy()
        session = requests.Session()
        headers = dict(message.headers)

        def new_deliveries(count: int) -> list[NewDelivery]:
            return [
                NewDelivery(
                    id=str(uuid.uuid4()),
                    dag_id=event.flow_id,
                    run_id=event.job_id,
                    output_name="",
                    webhook=webhook.name,
                    event="failure",
                    job_status=event.job_status,
                    conn_id=WEBHOOK_CONN_ID,
                    target_url=None,
                    url=message.url,
                    query="",
                    method="POST",
                    headers=dict(webhook.headers),
                    body=body,
                )
                for _ in range(count)
            ]

        def write_ledger(count: int) -> None:
            rows = new_deliveries(count)
            ledger.record_pending(rows, owner="bench", lease_seconds=40)
            attempt = Attempt(1, time.time(), 0.001, 200, None, "ok")
            ledger.record_outcomes(
                [
                    (row.id, DeliveryResult(row.id, webhook.name, True, (attempt,), 0.001), True)
                    for row in rows
                ],
                source="inline",
            )

        @per("message", 2000)
        def render() -> None:
            build_message(endpoint, webhook, event)

        @per("message", 5000)
        def sign_body() -> None:
            sign(SECRET, body)

        @per("message", 20, FAN_OUT)
        def ledger_write_fanout() -> None:
            write_ledger(FAN_OUT)

        @per("message", 30)
        def ledger_write_single() -> None:
            write_ledger(1)

        @per("message", 300)
        def http_round_trip() -> None:
            session.post(url, data=body, headers=headers, timeout=30).raise_for_status()

        @per("message", 300)
        def our_send() -> None:
            assert sender.send(endpoint, message, policy).delivered

        @per("message", 30)
        def dispatch_single() -> None:
            assert dispatch([(webhook, event)])[0].delivered

        @per("fan-out", 200)
        def connection_lookup() -> None:
            assert FlowWebhookHook(WEBHOOK_CONN_ID).endpoint.url == url

        @per("fan-out", 200)
        def config_reads() -> None:
            retry_policy_from_config()
            schedule_from_config()
            open_ledger()

        @per("fan-out", 50)
        def pool_handoff() -> None:
            fan_out(lambda item: item, list(range(FAN_OUT)))

        @per("fan-out", 10)
        def new_thread_pool() -> None:
            with ThreadPoolExecutor(max_workers=FAN_OUT) as pool:
                list(pool.map(lambda item: item, range(FAN_OUT)))

        @per("attempt", 1000)
        def deadline_timer() -> None:
            with attempt_context(endpoint.egress, 30.0):
                pass

        @per("attempt", 1000)
        def proxy_settings() -> None:
            sender._environment(url, endpoint)

        @per("attempt", 1000)
        def proxy_settings_uncached() -> None:
            # For reference: the read a bare Session.post does on every request.
            session.merge_environment_settings(url, {}, True, endpoint.verify, endpoint.cert)

        steps = [
            render,
            sign_body,
            ledger_write_fanout,
            ledger_write_single,
            http_round_trip,
            our_send,
            dispatch_single,
            connection_lookup,
            config_reads,
            pool_handoff,
            new_thread_pool,
            deadline_timer,
            proxy_settings,
            proxy_settings_uncached,
        ]
        for step in steps:  # warm-up, untimed
            step()
        variants = {step.__name__: step for step in steps}
        micros = repeat_side_by_side(variants, dict.fromkeys(variants, REPS), deadline)
        session.close()

    round_trip = summary(micros["http_round_trip"])["median"]
    write_result(
        "cpu",
        {
            "microseconds": {
                name: {**summary(values), "unit": UNITS[name]} for name, values in micros.items()
            },
            "vs_http_round_trip": {
                name: summary(
                    [value / trip for value, trip in zip(values, micros["http_round_trip"], strict=True)]
                )
                for name, values in micros.items()
                if name != "http_round_trip"
            },
            "http_round_trip_median_us": round_trip,
        },
    )


if __name__ == "__main__":
    main()
