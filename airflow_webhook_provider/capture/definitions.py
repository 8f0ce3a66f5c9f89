"""A DAG's webhooks, where the run-end path needs them: those of its DAG file, and those of the UI.

The scheduler and the API server never import DAG files, so their listeners cannot see
the webhooks a DAG file attaches. The processes that do parse DAG files record them in
the ledger: the task runner whenever a task starts (a listener), and the DAG processor
whenever it runs a run-end callback. A DAG without webhooks in its file is recorded
too, once, as having none. Listeners read them from there (:class:`DefinitionCache`).

Webhooks defined in the Airflow UI live in the ledger already; they are read afresh for
every end, so a run that ends after a save uses what was saved. A DAG's webhooks are
its file's, then the UI's (:func:`merge`); a UI webhook whose name the file uses too is
left out, and the DAG's Webhooks tab shows it as shadowed.

A run in which no task ever started (marked failed while still queued, timed out before
its first task) is matched against the definitions an earlier run of the DAG recorded.
If no task of the DAG has run since the provider was installed, nothing was recorded:
the DAG processor's run-end callback still sends the run's messages, but a run ended by
hand gets no DAG-level callback, so only its UI-defined webhooks are sent, and the
listener logs a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_webhook_provider.core.definitions import FlowWebhook, WebhookSet
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition

if TYPE_CHECKING:
    from airflow_webhook_provider.ledger import Ledger

__all__ = ["DefinitionCache", "encode", "merge", "record_definitions", "ui_webhooks"]

log = logging.getLogger(__name__)


def encode(webhooks: Sequence[FlowWebhook]) -> tuple[str, str]:
    """Return ``(digest, JSON)`` of a DAG's webhooks, as a definition file's mapping."""
    text = json.dumps(WebhookSet(*webhooks).to_mapping(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), text


def record_definitions(
    ledger: Ledger, dag_id: str, webhooks: Sequence[FlowWebhook], *, recorded_by: str
) -> bool:
    """Record a DAG's code-defined webhooks unless the ledger has them already.

    Once recorded, this costs one read. A DAG without any is recorded empty (once), so a
    listener knows at once that only its UI-defined webhooks apply.

    :return: whether anything was written.
    """
    digest, text = encode(webhooks)
    if ledger.code_definitions_digest(dag_id) == digest:
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
            if found.digest not in self._parsed:
                self._parsed[found.digest] = tuple(
                    WebhookSet.from_mapping(json.loads(found.definitions), source=f"DAG {dag_id!r}")
                )
            webhooks = self._parsed[found.digest]
        self._read[dag_id] = (now, webhooks)
        return webhooks


def ui_webhooks(ledger: Ledger, dag_id: str) -> tuple[FlowWebhook, ...]:
    """Return a DAG's UI-defined webhooks, read from the ledger now.

    A stored definition that no longer validates (a later release tightened a rule) is
    left out, and logged: it cannot be sent as it is, and the tab shows the error.
    """
    found = []
    for stored in ledger.ui_definitions(dag_id):
        try:
            found.append(FlowWebhook.from_mapping(stored.definition))
        except InvalidWebhookDefinition as exc:
            log.error(
                "Flow webhooks: the UI-defined webhook %r of DAG %s is invalid: %s", stored.name, dag_id, exc
            )
    return tuple(found)


def merge(code: Sequence[FlowWebhook], ui: Sequence[FlowWebhook], *, dag_id: str) -> tuple[FlowWebhook, ...]:
    """Return a DAG's webhooks: its file's, then the UI's whose names the file does not use."""
    taken = {webhook.name for webhook in code}
    shadowed = [webhook.name for webhook in ui if webhook.name in taken]
    if shadowed:
        log.warning(
            "Flow webhooks: DAG %s defines %s in its file and in the UI; the file's definition is used",
            dag_id,
            ", ".join(repr(name) for name in shadowed),
        )
    return (*code, *(webhook for webhook in ui if webhook.name not in taken))
