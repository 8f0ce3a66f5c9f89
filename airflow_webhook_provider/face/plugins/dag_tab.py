"""The DAG's Webhooks tab: the DAG's webhooks from its file and from the UI, and the form that manages them.

Route, served by the tab's app at ``/flow-webhooks``::

    GET /dag?dag_id=[&theme=light|dark]    the page

The page lists every webhook of the DAG (its file's, read-only, with where they come
from; then the UI's, editable), each with its trigger, outputs, method, connection, last
delivery and its endpoint's health, and the recent changes. Everything it changes goes
through the HTTP API (:mod:`.api`): the form posts JSON there with ``static/dag.js``, shows
each refused field's problem beside the field, and Test shows the receiver's answer. So
the page, the command line and scripts share one set of rules (:mod:`..catalog`).

Reading needs read access to the DAG; the form, Delete, Test and Import appear only for
users who may edit it (the API checks again on every change).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any, get_args
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.models.connection import Connection
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from airflow_webhook_provider.core.definitions import Method, Trigger
from airflow_webhook_provider.face.catalog import WebhookCatalog, WebhookItem
from airflow_webhook_provider.face.plugins.common import PAGE_HEADERS, Theme, open_pipeline
from airflow_webhook_provider.face.plugins.page import CSRF_HEADER, CSRF_VALUE, endpoint_status
from airflow_webhook_provider.face.plugins.rendering import render
from airflow_webhook_provider.ledger import Delivery, EndpointHealth

__all__ = ["HISTORY_ROWS", "WebhookRow", "router"]

log = logging.getLogger(__name__)

#: Changes listed under the webhooks (all of them: the API's ``/history``).
HISTORY_ROWS = 20
#: Connections offered in the form's list (any other id may still be typed).
MAX_CONNECTIONS = 500

DagId = Annotated[str, Query(min_length=1, description="the DAG")]

router = APIRouter()

_can_read = requires_access_dag("GET")
_can_edit = requires_access_dag("PUT")


@dataclass(frozen=True)
class WebhookRow:
    """One webhook on the page: its definition, its last message and its endpoint's health."""

    item: WebhookItem
    last: Delivery | None
    health: EndpointHealth | None

    @property
    def trigger(self) -> str:
        """Return the end it listens for, in words."""
        on = str(self.item.definition.get("on", "any"))
        if on == "late":
            return f"late: not finished {self.item.definition.get('late_after')} after queued"
        return {"any": "success or failure"}.get(on, on)

    @property
    def outputs(self) -> str:
        """Return what it reports on: the run, or the chosen output tasks."""
        outputs = self.item.definition.get("outputs")
        return ", ".join(outputs) if outputs else "the run"

    @property
    def method(self) -> str:
        """Return its HTTP method, or where the default comes from."""
        method = self.item.definition.get("method")
        if method:
            return str(method)
        return "connection's (POST)" if self.item.definition.get("conn_id") else "POST"

    @property
    def target(self) -> str:
        """Return its connection id, or its URL."""
        return str(self.item.definition.get("conn_id") or self.item.definition.get("url") or "")

    @property
    def status(self) -> tuple[str, str]:
        """Return the endpoint's health as ``(tone, words)``; unknown before its first message."""
        return endpoint_status(self.health) if self.health is not None else ("queued", "no messages yet")

    @property
    def definition_json(self) -> str:
        """Return its fields as JSON, for the form to edit."""
        return json.dumps(self.item.definition, sort_keys=True)


def _task_ids(dag_id: str) -> list[str]:
    """Return the DAG's task ids as the DAG processor serialised them (none when it has not yet)."""
    try:
        dag = SerializedDagModel.get_dag(dag_id)
    except Exception as exc:  # a DAG whose serialisation cannot be read still shows its webhooks
        log.warning("Cannot read the tasks of DAG %s: %s", dag_id, exc)
        return []
    return sorted(dag.task_ids) if dag is not None else []


def _connections(used: set[str]) -> list[str]:
    """Return the ids of the metadata database's flow_webhook connections, and those the DAG uses."""
    with create_session() as session:
        stored = session.scalars(
            select(Connection.conn_id)
            .where(Connection.conn_type == "flow_webhook")
            .order_by(Connection.conn_id)
            .limit(MAX_CONNECTIONS)
        ).all()
    return sorted(set(stored) | used)


def _endpoint_key(item: WebhookItem, last: Delivery | None) -> str:
    """Return the ledger's key of the endpoint a webhook sends to: its connection, else its last message's."""
    return str(item.definition.get("conn_id") or "") or (last.endpoint if last is not None else "")


def _may_edit(request: Request, user: Any) -> bool:
    try:
        _can_edit(request, user)
    except HTTPException:
        return False
    return True


@router.get("/dag", response_class=HTMLResponse, dependencies=[Depends(_can_read)])
def dag_page(request: Request, user: GetUserDep, dag_id: DagId, theme: Theme | None = None) -> HTMLResponse:
    """Return the Webhooks tab of one DAG."""
    pipeline = open_pipeline()
    ledger = pipeline.ledger
    assert ledger is not None  # open_pipeline() requires a ledger
    catalog = WebhookCatalog.configured(ledger)
    items = catalog.items(dag_id)
    latest = ledger.latest_by_webhook(dag_id)
    keys = {item.name: _endpoint_key(item, latest.get(item.name)) for item in items}
    health = {record.key: record for record in ledger.endpoint_health(sorted(set(keys.values()) - {""}))}
    rows = [WebhookRow(item, latest.get(item.name), health.get(keys[item.name])) for item in items]
    base = str(request.scope.get("root_path", ""))
    page = render(
        "dag.html",
        theme=theme,
        static_base=f"{base}/static",
        csrf_header=CSRF_HEADER,
        csrf_value=CSRF_VALUE,
        dag_id=dag_id,
        api=f"{base}/api/v1/dags/{quote(dag_id, safe='')}",
        run_url=lambda run_id: f"{base}/run?dag_id={quote(dag_id, safe='')}&run_id={quote(run_id, safe='')}",
        mode=pipeline.mode(),
        code_rows=[row for row in rows if row.item.source == "code"],
        ui_rows=[row for row in rows if row.item.source == "ui"],
        file_recorded=catalog.file_recorded(dag_id),
        limit=catalog.limits.max_webhooks_per_flow,
        count=len({row.item.name for row in rows if not row.item.shadowed}),
        can_edit=_may_edit(request, user),
        connections=_connections(
            {str(item.definition["conn_id"]) for item in items if item.definition.get("conn_id")}
        ),
        task_ids=_task_ids(dag_id),
        triggers=get_args(Trigger),
        methods=get_args(Method),
        history=catalog.history(dag_id)[:HISTORY_ROWS],
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)
