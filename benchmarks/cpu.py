"""Per-message CPU: what each step of a delivery costs, in microseconds, against one HTTP round trip.

Every step is timed over many iterations, the steps interleaved and rotated, five
times; the figure is the median time per message (or per attempt, or per fan-out of
50, as named) with its spread. The unit of comparison is one keep-alive round trip of
a bare ``requests.Session`` to a receiver on 127.0.0.1 (its own process, no delay).

The ledger steps are those of ``Pipeline.submit``: a callback with a dispatcher alive
pays ``Ledger.record`` (and the heartbeat read); without one it also claims the messages
(``Ledger.claim_ids``) and records their outcomes (``Ledger.record_outcomes``, which
also stores each built request).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

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
from workload import new_messages, submit_inline  # noqa: E402

from airflow_webhook_provider import config  # noqa: E402
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent  # noqa: E402
from airflow_webhook_provider.core.identity import random_delivery_id  # noqa: E402
from airflow_webhook_provider.core.outcome import Attempt, DeliveryResult  # noqa: E402
from airflow_webhook_provider.core.retry import RetrySchedule  # noqa: E402
from airflow_webhook_provider.core.signing import sign  # noqa: E402
from airflow_webhook_provider.core.states import CaptureSource  # noqa: E402
from airflow_webhook_provider.delivery.endpoints import resolve_endpoint  # noqa: E402
from airflow_webhook_provider.delivery.message import build_message  # noqa: E402
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for  # noqa: E402
from airflow_webhook_provider.delivery.sender import fan_out, shared_sender  # noqa: E402
from airflow_webhook_provider.delivery.transport import attempt_context  # noqa: E402
from airflow_webhook_provider.ledger import Built, NewDelivery, Outcome, open_ledger  # noqa: E402

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
        settings = config.load()
        endpoint = resolve_endpoint(WEBHOOK_CONN_ID, settings)
        (template,) = new_messages([(webhook, event)])
        message = build_message(endpoint, webhook, template.refs, delivery_id=template.id)
        assert message.body is not None
        body = message.body
        built = Built(
            url=message.url,
            query=message.query,
            method=message.method,
            headers=message.own_headers,
            body=body,
        )
        ledger = open_ledger()
        pipeline = Pipeline(settings, ledger)
        sender = shared_sender()
        schedule = RetrySchedule()
        session = requests.Session()
        headers = dict(message.headers)

        def fresh(count: int) -> list[NewDelivery]:
            return [replace(template, id=random_delivery_id()) for _ in range(count)]

        def write_ledger(count: int) -> None:
            # What an inline submit writes: record pending, claim, record the outcomes (and the built request).
            rows = fresh(count)
            ledger.record(rows)
            claimed = ledger.claim_ids([row.id for row in rows], "bench", lease_seconds=40)
            assert len(claimed) == count
            attempt = Attempt(1, time.time(), 0.001, 200, None, "ok")
            ledger.record_outcomes(
                [
                    Outcome(
                        row.id,
                        DeliveryResult(row.id, webhook.name, True, (attempt,), 0.001),
                        retry=True,
                        built=built,
                    )
                    for row in claimed
                ],
                source="inline",
                schedule=schedule,
                sender="bench",
            )

        @per("message", 2000)
        def capture_message() -> None:
            message_for(webhook, event, clear_number=0, capture=CaptureSource.CALLBACK)

        @per("message", 2000)
        def render() -> None:
            build_message(endpoint, webhook, template.refs, delivery_id=template.id)

        @per("message", 5000)
        def sign_body() -> None:
            sign(SECRET, body)

        @per("message", 40, FAN_OUT)
        def ledger_record_fanout() -> None:
            ledger.record(fresh(FAN_OUT))

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
            assert sender.send(endpoint, message, schedule=schedule).delivered

        @per("message", 30)
        def submit_single() -> None:
            assert submit_inline([(webhook, event)])[0].delivered

        @per("fan-out", 200)
        def connection_lookup() -> None:
            assert resolve_endpoint(WEBHOOK_CONN_ID, settings).url == url

        @per("fan-out", 200)
        def config_reads() -> None:
            Pipeline.from_config()

        @per("fan-out", 200)
        def heartbeat_read() -> None:
            assert pipeline.mode().name == "inline"

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
            sender._proxy(url, endpoint)

        @per("attempt", 1000)
        def proxy_settings_uncached() -> None:
            # For reference: the environment read a bare Session.post does on every request.
            requests.utils.get_environ_proxies(url)

        steps = [
            capture_message,
            render,
            sign_body,
            ledger_record_fanout,
            ledger_write_fanout,
            ledger_write_single,
            http_round_trip,
            our_send,
            submit_single,
            connection_lookup,
            config_reads,
            heartbeat_read,
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
