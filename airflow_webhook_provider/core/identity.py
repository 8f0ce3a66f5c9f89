"""Identities: delivery ids (the ``X-Webhook-Id`` of a message) and endpoint keys.

A message about an end is identified by what it reports, not by who noticed it first:
:func:`delivery_id` is a UUID (version 5) of the DAG, the run, the run's clear number,
the webhook, the output and the event. A callback and a listener that both see a run
fail therefore produce the same id, and the ledger keeps one message; a run that is
cleared and runs again has a new clear number, so its end is a new set of messages.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

__all__ = ["delivery_id", "endpoint_key", "output_key", "random_delivery_id"]

#: The namespace of flow webhook delivery ids (a fixed random UUID; never change it).
NAMESPACE = uuid.UUID("0f5a3c52-7d1e-4b0b-9a52-3b6a2f1c9e40")
_SEPARATOR = "\x1f"  # a control character: it cannot appear in a dag id, run id or task id


def delivery_id(*, dag_id: str, run_id: str, clear_number: int, webhook: str, output: str, event: str) -> str:
    """Return the delivery id of one message about one end.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param clear_number: the run's ``clear_number`` when it ended.
    :param webhook: the webhook's key (its name, prefixed by where it is defined).
    :param output: the output (see :func:`output_key`), or empty for a run message.
    :param event: ``success``, ``failure`` or ``late``.
    """
    key = _SEPARATOR.join((dag_id, run_id, str(clear_number), webhook, output, event))
    return str(uuid.uuid5(NAMESPACE, key))


def output_key(task_id: str, map_index: int = -1) -> str:
    """Return how an output appears in a delivery id: the task id, and the map index of a mapped task."""
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def endpoint_key(conn_id: str | None, target_url: str | None) -> str:
    """Return the key of an endpoint's health row: the connection id, or ``url:`` and the URL's origin.

    A ``url=`` webhook is keyed by scheme, host and port only: its path and query may carry a token.
    """
    if conn_id is not None:
        return conn_id
    parts = urlsplit(target_url or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"url:{parts.scheme}://{parts.hostname or ''}:{port}"


def random_delivery_id() -> str:
    """Return a new delivery id for a message that reports no end (a test message)."""
    return str(uuid.uuid4())
