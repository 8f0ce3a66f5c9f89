"""Send ``late`` messages, from Airflow's deadline alerts: a run still not finished ``late_after`` after it was queued.

:meth:`FlowWebhooks.attach <airflow_webhook_provider.capture.attach.FlowWebhooks.attach>` gives
the DAG one ``DeadlineAlert`` per ``on="late"`` webhook (:func:`late_alert`): reference
``DeadlineReference.DAGRUN_QUEUED_AT``, interval ``late_after``, and an ``AsyncCallback`` to
:func:`on_late_run` whose kwargs hold the webhook's definition (the triggerer, where the
callback runs, never parses DAG files). What Airflow 3.3 does with it:

- it creates the run's deadline when it creates the run (``queued_at + late_after``), moves it
  when the run is cleared before the deadline, and never re-arms a deadline that has passed;
- it deletes the deadline when the run *succeeds* in time; a run that fails in time, or is
  marked failed or success by hand, keeps it;
- once the deadline has passed, the scheduler queues the callback, with a context holding the
  run as it was then (``dag_run``, serialised as the REST API does) and the deadline, and the
  triggerer runs it.

So the callback first asks whether the run ended before its deadline (then it sends
nothing), and otherwise records one message with ``$jobStatus`` ``late``, through the
pipeline like every other: ``pending`` in the ledger, sent by the dispatcher, or inline here
with the quick retries when no dispatcher is alive. That work is synchronous (the ledger,
the network), so it runs on threads of this module's own, bounded by the retry budget: the
triggerer's event loop never waits on it. The callback never raises; what it did is its
return value, which Airflow keeps as the callback's output.

Delivery id: ``(dag, run, clear number, webhook, no output, late)``. Airflow 3.3's deadline
context does not carry the run's ``clear_number``, and a run's deadline fires at most once,
so the clear number in a late message's id (and its ledger row) is always 0. A triggerer that
dies while running the callback runs it again elsewhere, with the same id: one message.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.context import job_url
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.core.states import CaptureSource, Event

if TYPE_CHECKING:
    from airflow.sdk.definitions.deadline import DeadlineAlert

    from airflow_webhook_provider.ledger import NewDelivery

__all__ = ["LATE_CALLBACK_PATH", "late_alert", "late_messages", "on_late_run", "webhook_of"]

log = logging.getLogger(__name__)

#: Where Airflow imports the callback from, as stored in serialized DAGs and deadlines: never rename it.
LATE_CALLBACK_PATH = f"{__name__}.on_late_run"
#: How much longer than the retry budget the callback waits for its thread.
_MARGIN_SECONDS = 10.0
_FINISHED = frozenset({"success", "failed"})


def late_alert(dag_id: str, webhook: FlowWebhook) -> DeadlineAlert:
    """Return the deadline alert that sends ``webhook`` (``on="late"``) for the runs of ``dag_id``.

    Two alerts built from equal definitions are equal, so attaching twice adds one.
    """
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    if webhook.late_after is None:
        raise ValueError(f"flow webhook {webhook.name!r} has no late_after")
    callback = AsyncCallback(
        LATE_CALLBACK_PATH,
        kwargs={"dag_id": dag_id, "webhook": webhook.model_dump(mode="json", exclude_defaults=True)},
    )
    named: dict[str, str] = {}
    # Airflow 3.3 shows an alert's name in its UI; Airflow 3.2's alerts have none.
    if "name" in inspect.signature(DeadlineAlert).parameters:
        named["name"] = f"flow webhook {webhook.name}"
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=webhook.late_after, callback=callback, **named
    )


def webhook_of(alert: Any) -> FlowWebhook | None:
    """Return the webhook a deadline alert sends, or None when it is not one of :func:`late_alert`'s."""
    callback = getattr(alert, "callback", None)
    if getattr(callback, "path", None) != LATE_CALLBACK_PATH:
        return None
    kwargs: Mapping[str, Any] = getattr(callback, "kwargs", None) or {}
    return FlowWebhook.from_mapping(kwargs["webhook"])


def _moment(value: Any) -> datetime | None:
    """Read a time of the callback's context: a datetime, or ISO 8601 text (``Z`` included)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return _moment(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def late_messages(
    *, dag_id: str, webhook: Mapping[str, Any], context: Mapping[str, Any] | None, base_url: str
) -> tuple[list[NewDelivery], str]:
    """Return the message a passed deadline calls for (none when the run ended in time), and why.

    :param dag_id: the DAG, as the alert names it.
    :param webhook: the webhook's definition, as the alert holds it.
    :param context: the callback's context: ``dag_run`` (the run when the deadline was found
        passed) and ``deadline`` (its ``deadline_time``).
    :param base_url: ``[api] base_url``, for ``$jobUrl``.
    :raises InvalidWebhookDefinition: when the definition no longer validates.
    """
    from airflow_webhook_provider.delivery.pipeline import message_for

    definition = FlowWebhook.from_mapping(webhook)
    run = dict((context or {}).get("dag_run") or {})
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "")
    if not run_id:
        return [], f"flow webhook {definition.name!r}: the deadline's context names no run; nothing sent"
    deadline_at = _moment(((context or {}).get("deadline") or {}).get("deadline_time"))
    state = str(run.get("state") or "").lower()
    ended_at = _moment(run.get("end_date"))
    if state in _FINISHED and (ended_at is None or deadline_at is None or ended_at <= deadline_at):
        return [], f"run {run_id} of DAG {dag_id} ended {state} in time; no late message"
    logical_date = _moment(run.get("logical_date"))
    event = JobEvent(
        flow_id=dag_id,
        job_id=run_id,
        job_status=str(Event.LATE),
        logical_date=logical_date.isoformat() if logical_date is not None else "",
        job_url=job_url(base_url, dag_id, run_id),
    )
    message = message_for(
        definition,
        event,
        clear_number=0,
        capture=CaptureSource.CALLBACK,
        event_at=deadline_at.timestamp() if deadline_at is not None else None,
    )
    return [message], f"run {run_id} of DAG {dag_id} is late ({state or 'not started'})"


def _record_and_send(dag_id: str, webhook: Mapping[str, Any], context: Mapping[str, Any] | None) -> str:
    from airflow_webhook_provider.delivery.pipeline import Pipeline

    pipeline = Pipeline.from_config()
    messages, what = late_messages(
        dag_id=dag_id, webhook=webhook, context=context, base_url=pipeline.settings.base_url
    )
    if not messages:
        log.info("Flow webhooks: %s", what)
        return what
    results = pipeline.submit(messages)
    (message,) = messages
    if not results:
        outcome = "recorded for the dispatcher"
    elif results[0].delivered:
        outcome = f"delivered inline (HTTP {results[0].status_code})"
    else:
        outcome = (
            f"not delivered inline yet ({results[0].error or results[0].status_code}); redelivery retries it"
        )
    summary = f"{what}: flow webhook {message.webhook!r}, delivery {message.id}, {outcome}"
    log.info("Flow webhooks: %s", summary)
    return summary


@functools.cache
def _threads() -> ThreadPoolExecutor:
    # Its own threads: a slow receiver must not hold the threads the triggerer's other work uses.
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="flow-webhook-late")


async def on_late_run(*, dag_id: str, webhook: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    """Record (and, without a dispatcher, send) the late message of a run whose deadline passed.

    The ``AsyncCallback`` of :func:`late_alert`'s deadline alerts; the triggerer runs it. It
    never raises, and returns within the retry budget (plus a margin) whatever the receiver does.

    :param dag_id: the DAG.
    :param webhook: the webhook's definition (the alert's kwargs).
    :param context: what Airflow passes: the run (``dag_run``) and the ``deadline``.
    :return: what it did, kept by Airflow as the callback's output.
    """
    name = webhook.get("name") if isinstance(webhook, Mapping) else None
    try:
        timeout = config.load().retry.budget_seconds + _MARGIN_SECONDS
        work = asyncio.get_running_loop().run_in_executor(
            _threads(), _record_and_send, dag_id, webhook, context
        )
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        message = (
            f"flow webhook {name!r} of DAG {dag_id}: still sending after {timeout:g} s; "
            "it goes on in the background, and redelivery sends whatever it recorded"
        )
    except InvalidWebhookDefinition as exc:
        message = f"flow webhook {name!r} of DAG {dag_id}: its definition no longer validates: {exc}"
    except Exception as exc:
        # Nothing a webhook does may fail Airflow's callback machinery.
        message = (
            f"flow webhook {name!r} of DAG {dag_id}: the late message failed: {type(exc).__name__}: {exc}"
        )
    log.error("Flow webhooks: %s", message)
    return message
