"""Operator alerts: signed JSON events to ``[flow_webhook] alert_conn_id`` when endpoints go wrong.

``endpoint.disabled`` (an endpoint answered 410 Gone, or failed without a success for
``disable_after_seconds``), ``endpoint.recovered`` (it answered again after its circuit opened
or it was disabled) and ``delivery.dead`` (messages of an endpoint reached their maximum age).
Each carries the endpoint, its message counts by state, and a link to the Webhooks overview.

Alerts are messages like any other: recorded in the ledger, signed with the alert
connection's secret, retried and redelivered. They are rate-limited per kind and endpoint
(``alert_interval_seconds``), so an outage sends a handful, not thousands; the next one
says how many were held back. No alert is ever about the alert connection itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_webhook_provider.core.identity import endpoint_key, random_delivery_id
from airflow_webhook_provider.core.states import CaptureSource, Event
from airflow_webhook_provider.ledger import Built, Ledger, NewDelivery, OutcomeReport

if TYPE_CHECKING:
    from airflow_webhook_provider.config import Settings

__all__ = ["alerts_for"]

#: Delivery ids a ``delivery.dead`` alert lists (the count says how many there were).
_DEAD_IDS_LISTED = 20


def _alert(settings: Settings, kind: str, endpoint: str, body: dict[str, Any]) -> NewDelivery:
    identifier = random_delivery_id()
    payload = json.dumps({"type": kind, "id": identifier, **body}, sort_keys=True).encode("utf-8")
    return NewDelivery(
        id=identifier,
        dag_id="",
        run_id="",
        clear_number=0,
        output_name="",
        webhook=kind,
        event=str(Event.ALERT),
        job_status=kind,
        capture=CaptureSource.ALERT,
        conn_id=settings.alert_conn_id,
        target_url=None,
        endpoint=endpoint_key(settings.alert_conn_id, None),
        definition=None,
        refs={"endpoint": endpoint},
        built=Built(
            url="", query="", method="POST", headers={"Content-Type": "application/json"}, body=payload
        ),
    )


def alerts_for(report: OutcomeReport, settings: Settings, ledger: Ledger) -> list[NewDelivery]:
    """Return the alerts what was just recorded calls for (none when no alert connection is set).

    :param report: what recording outcomes changed.
    :param settings: the alert connection and interval, and ``[api] base_url`` for links.
    :param ledger: the ledger, for counts and the alerts' rate limit.
    """
    if not settings.alert_conn_id:
        return []
    own = endpoint_key(settings.alert_conn_id, None)
    subjects: list[tuple[str, str, dict[str, Any]]] = [
        ("endpoint.disabled", key, {"reason": reason}) for key, reason in report.disabled
    ]
    subjects += [("endpoint.recovered", key, {}) for key in report.recovered]
    dead: dict[str, list[str]] = defaultdict(list)
    for delivery_id, key in report.dead:
        dead[key].append(delivery_id)
    subjects += [
        ("delivery.dead", key, {"dead": len(ids), "delivery_ids": ids[:_DEAD_IDS_LISTED]})
        for key, ids in dead.items()
    ]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    base = settings.base_url.rstrip("/")
    found = []
    for kind, key, detail in subjects:
        if key == own:
            continue  # never alert about the alerts' own endpoint: an outage there cannot loop
        held_back = ledger.alert_slot(f"{kind}:{key}", interval_seconds=settings.alert_interval_seconds)
        if held_back is None:
            continue
        body = {
            "endpoint": key,
            "connection": None if key.startswith("url:") else key,
            "occurred_at": now,
            "counts": ledger.counts(endpoint=key),
            "held_back": held_back,
            "link": f"{base}/flow-webhooks/overview?conn={quote(key, safe='')}" if base else "",
            **detail,
        }
        found.append(_alert(settings, kind, key, body))
    return found
