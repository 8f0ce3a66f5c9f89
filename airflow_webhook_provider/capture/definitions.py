"""A DAG's code-defined webhooks, where the run-end path needs them.

The scheduler and the API server never import DAG files, so their listeners cannot see
the webhooks a DAG file attaches. The processes that do parse DAG files record them in
the ledger: the task runner whenever a task starts (a listener), and the DAG processor
whenever it runs a run-end callback. Listeners read them from there (:class:`DefinitionCache`).

A run in which no task ever started (marked failed while still queued, timed out before
its first task) is matched against the definitions an earlier run of the DAG recorded.
If no task of the DAG has run since the provider was installed, nothing was recorded:
the DAG processor's run-end callback still sends the run's messages, but a run ended by
hand gets no DAG-level callback, so it sends none, and the listener logs a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_webhook_provider.core.definitions import FlowWebhook, WebhookSet

if TYPE_CHECKING:
    from airflow_webhook_provider.ledger import Ledger

__all__ = ["DefinitionCache", "encode", "record_definitions"]

log = logging.getLogger(__name__)


def encode(webhooks: Sequence[FlowWebhook]) -> tuple[str, str]:
    """Return ``(digest, JSON)`` of a DAG's webhooks, as a definition file's mapping."""
    text = json.dumps(WebhookSet(*webhooks).to_mapping(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), text


def record_definitions(
    ledger: Ledger, dag_id: str, webhooks: Sequence[FlowWebhook], *, recorded_by: str
) -> bool:
    """Record a DAG's code-defined webhooks unless the ledger has them already.

    A DAG that has no webhooks and never had any costs one read and writes nothing; one
    whose webhooks were all removed is recorded empty, so listeners stop sending them.

    :return: whether anything was written.
    """
    digest, text = encode(webhooks)
    known = ledger.code_definitions_digest(dag_id)
    if known == digest or (known is None and not webhooks):
        return False
    ledger.record_code_definitions(dag_id, digest=digest, definitions=text, recorded_by=recorded_by)
    return True


class DefinitionCache:
    """The code-defined webhooks of each DAG, read from the ledger at most every ``ttl_seconds``.

    :param ledger: the ledger.
    :param ttl_seconds: how long a DAG's definitions are used before they are read again.
    """

    def __init__(self, ledger: Ledger, *, ttl_seconds: float = 5.0) -> None:
        self.ledger = ledger
        self.ttl_seconds = ttl_seconds
        self._read: dict[str, tuple[float, tuple[FlowWebhook, ...] | None]] = {}
        self._parsed: dict[str, tuple[FlowWebhook, ...]] = {}

    def get(self, dag_id: str, *, fresh: bool = False) -> tuple[FlowWebhook, ...] | None:
        """Return a DAG's code-defined webhooks, or None when none were ever recorded.

        :param fresh: read the ledger now, whatever was read less than ``ttl_seconds`` ago.
        """
        now = time.monotonic()
        entry = self._read.get(dag_id)
        if entry is not None and now - entry[0] < self.ttl_seconds and not fresh:
            return entry[1]
        found = self.ledger.code_definitions(dag_id)
        webhooks: tuple[FlowWebhook, ...] | None = None
        if found is not None:
            digest, text = found
            if digest not in self._parsed:
                self._parsed[digest] = tuple(
                    WebhookSet.from_mapping(json.loads(text), source=f"DAG {dag_id!r}")
                )
            webhooks = self._parsed[digest]
        self._read[dag_id] = (now, webhooks)
        return webhooks
