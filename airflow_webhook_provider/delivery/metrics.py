"""Flow webhook metrics, through Airflow's ``Stats`` (StatsD or OpenTelemetry, as ``[metrics]`` says).

- ``flow_webhook.delivered``, ``flow_webhook.failed``, ``flow_webhook.dead``: counters, per outcome;
- ``flow_webhook.latency``: a timer, from the end a message reports to its delivery;
- ``flow_webhook.backlog`` and ``flow_webhook.oldest_pending_seconds``: gauges the dispatcher sets
  with every heartbeat, over the ledger (messages not delivered yet: pending, failed, held).

Each is tagged ``connection=<endpoint>`` (backends without tags drop the tag); the backlog
gauges are also sent untagged, for the whole ledger. Metrics never fail a send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_webhook_provider.ledger import Outcome, OutcomeReport

__all__ = ["emit_backlog", "emit_outcomes", "initialize"]

log = logging.getLogger(__name__)
_initialized = False


def initialize() -> None:
    """Start the metrics backend ``[metrics]`` configures, in a process Airflow did not start one in (the dispatcher)."""
    global _initialized
    if _initialized:
        return
    try:
        from airflow.sdk.observability import stats
        from airflow.sdk.observability.metrics import stats_utils

        from airflow_webhook_provider import config

        stats.initialize(
            factory=stats_utils.get_stats_factory(), export_legacy_names=config.legacy_metric_names()
        )
        _initialized = True
    except Exception as exc:
        log.warning("Flow webhook metrics are off: the metrics backend did not start (%s)", exc)


def emit_outcomes(outcomes: Sequence[Outcome], report: OutcomeReport) -> None:
    """Count the outcomes of one batch, and time each delivered message from its end to now."""
    try:
        from airflow.sdk.observability import stats

        now = time.time()
        for outcome in outcomes:
            state = report.states.get(outcome.delivery_id)
            row = outcome.row
            tags = {"connection": row.endpoint if row is not None else ""}
            if state == "delivered":
                stats.incr("flow_webhook.delivered", tags=tags)
                if row is not None and row.event_at:
                    stats.timing(
                        "flow_webhook.latency", timedelta(seconds=max(0.0, now - row.event_at)), tags=tags
                    )
            elif state == "dead":
                stats.incr("flow_webhook.dead", tags=tags)
            elif state is not None:
                stats.incr("flow_webhook.failed", tags=tags)
    except Exception as exc:
        log.debug("Flow webhook metrics not sent: %s", exc)


def emit_backlog(backlog: Iterable[tuple[str, int, float]]) -> None:
    """Set the backlog gauges, per endpoint and for the whole ledger."""
    try:
        from airflow.sdk.observability import stats

        total, oldest = 0, 0.0
        for key, count, age in backlog:
            stats.gauge("flow_webhook.backlog", count, tags={"connection": key})
            stats.gauge("flow_webhook.oldest_pending_seconds", age, tags={"connection": key})
            total += count
            oldest = max(oldest, age)
        stats.gauge("flow_webhook.backlog", total)
        stats.gauge("flow_webhook.oldest_pending_seconds", oldest)
    except Exception as exc:
        log.debug("Flow webhook metrics not sent: %s", exc)
