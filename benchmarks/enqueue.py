"""Enqueue: what a callback costs per message while a dispatcher is alive, against sending from the callback.

Side by side, interleaved, in one process, with a fresh dispatcher heartbeat in the
SQLite ledger (``Ledger.heartbeat``; no dispatcher runs, so nothing is sent):

- ours: the output's callback (``OutputEndCallback``, capture/callbacks.py) as the task
  runner calls it when the task ends, with a minimal context: it reads the
  configuration, builds the messages of the webhooks that select the task, records them
  ``pending`` (``Pipeline.submit``: ``Ledger.record`` and the heartbeat read) and
  returns;
- baseline: ``HttpNotifier`` (apache-airflow-providers-http) called as Airflow calls a
  callback (templates rendered, then ``notify``), one per message, sending the same
  bytes to a healthy receiver on 127.0.0.1 that answers at once (its own process): what
  a hand-rolled notifier does inside the callback. A receiver further away adds its
  latency to every one of these calls, and nothing to ours.

Per message, for a task selected by 1 webhook and by a fan-out of 50.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

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

from airflow.providers.http.notifications.http import HttpNotifier  # noqa: E402
from airflow.sdk import DAG  # noqa: E402
from workload import EVENT, same_requests, webhooks  # noqa: E402

from airflow_webhook_provider.capture.callbacks import OutputEndCallback, WebhookRegistry  # noqa: E402
from airflow_webhook_provider.core.states import Event  # noqa: E402
from airflow_webhook_provider.delivery.pipeline import Pipeline  # noqa: E402
from airflow_webhook_provider.ledger import open_ledger  # noqa: E402

DISPATCHER = "bench-dispatcher@enqueue"
REPS = 7
#: Callback calls per repetition: (ours, baseline), for 1 webhook and for 50.
CALLS = {1: (200, 60), FAN_OUT: (20, 3)}


def main() -> None:
    deadline = Deadline(80, "enqueue")
    ledger = open_ledger()
    with lean_receiver(delay=0.0) as receiver:
        define_connections(receiver.url(), receiver.port)
        dag = DAG("bench_enqueue", schedule=None)
        counter = iter(range(10**9))

        def context() -> dict[str, object]:
            return {
                "ti": SimpleNamespace(task_id="out"),
                "run_id": f"manual__enqueue_{next(counter)}",
                "dag_run": SimpleNamespace(clear_number=0, logical_date=None),
                "dag": dag,
            }

        def ours(count: int) -> float:
            registry = WebhookRegistry("bench_enqueue")
            registry.add(webhooks(count, outputs=["out"]))
            callback = OutputEndCallback(registry, Event.SUCCESS)
            calls = CALLS[count][0]
            contexts = [context() for _ in range(calls)]
            ledger.heartbeat(DISPATCHER)  # fresh for the whole repetition
            start = time.perf_counter()
            for each in contexts:
                callback(each)  # type: ignore[arg-type]
            return (time.perf_counter() - start) / (calls * count)

        def notifier(count: int) -> float:
            notifiers = [
                HttpNotifier(http_conn_id=HTTP_CONN_ID, endpoint="/hook", data=body.decode(), headers=headers)
                for body, headers in same_requests(webhooks(count), EVENT)
            ]
            calls = CALLS[count][1]
            contexts = [context() for _ in range(calls)]
            start = time.perf_counter()
            for each in contexts:
                for one in notifiers:
                    one(each)
            return (time.perf_counter() - start) / (calls * count)

        variants = {
            "ours_1": lambda: ours(1),
            "notifier_1": lambda: notifier(1),
            f"ours_{FAN_OUT}": lambda: ours(FAN_OUT),
            f"notifier_{FAN_OUT}": lambda: notifier(FAN_OUT),
        }
        for variant in variants.values():  # warm-up, untimed
            variant()
        before_requests = receiver.stats()["requests"]
        before_rows = sum(ledger.counts().values())
        assert Pipeline.from_config().mode().name == "dispatcher"
        seconds = repeat_side_by_side(variants, dict.fromkeys(variants, REPS), deadline)
        ledger.stop_dispatcher(DISPATCHER)
        stats = receiver.stats()

    recorded = sum(ledger.counts().values()) - before_rows
    expected_recorded = REPS * sum(count * calls for count, (calls, _) in CALLS.items())
    assert recorded == expected_recorded, (recorded, expected_recorded)
    sent = REPS * sum(count * calls for count, (_, calls) in CALLS.items())
    assert stats["requests"] - before_requests == sent, "ours sent a request, or a notifier did not"
    assert stats["signed_invalid"] == 0
    write_result(
        "enqueue",
        {
            "fan_outs": list(CALLS),
            "seconds_per_message": {name: summary(values) for name, values in seconds.items()},
            "ratios": {
                f"ours_vs_notifier_{count}": paired_ratios(
                    seconds[f"ours_{count}"], seconds[f"notifier_{count}"]
                )
                for count in CALLS
            },
            "messages_recorded": recorded,
            "notifier_requests": sent,
        },
    )


if __name__ == "__main__":
    main()
