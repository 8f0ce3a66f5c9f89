"""The Webhooks overview: every DAG's deliveries and every endpoint's health, in Airflow's navigation.

Routes, served by the tab's app at ``/flow-webhooks``::

    GET  /overview?state=&dag_id=&conn=&since=[&theme=]   the page
    POST /overview/recover?state=&dag_id=&conn=&since=    make the matching undelivered messages due now
    POST /overview/endpoints/enable?conn=                 enable an endpoint; what it held is due now
    POST /overview/endpoints/disable?conn=[&reason=]      disable an endpoint; its new messages are held

Access is the Webhooks tab's, applied row by row: a delivery is listed only when the user
may read its DAG's runs, and Recover acts only on DAGs whose runs the user may edit. An
endpoint's health is shown to whoever may read a DAG with messages to it (as the tab
shows it beside a run) or may read its connection; enabling or disabling it needs edit
access to the connection (to connections in general for a ``url=`` endpoint, which has
none). The page lists what the ledger holds: DAGs, users and connections are never
looked up beyond what the auth manager needs.

The API server sends nothing from here: Recover and Enable make messages due, and the
dispatcher (or, without one, the maintenance DAG) sends them, with the endpoints'
concurrency and rate limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import (
    ConnectionDetails,
    DagAccessEntity,
    DagDetails,
)
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.models.connection import Connection
from airflow.models.dag import DagModel
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_webhook_provider.core.durations import parse_time
from airflow_webhook_provider.core.states import DeliveryState
from airflow_webhook_provider.face.plugins.common import (
    PAGE_HEADERS,
    Theme,
    open_pipeline,
    page_headers,
    require_same_origin,
)
from airflow_webhook_provider.face.plugins.page import CSRF_HEADER, CSRF_VALUE, endpoint_status
from airflow_webhook_provider.face.plugins.rendering import render
from airflow_webhook_provider.ledger import EndpointHealth, Ledger

__all__ = ["MAX_ROWS", "RECOVER_LIMIT", "router"]

log = logging.getLogger(__name__)

#: Deliveries listed on the page (those needing attention first).
MAX_ROWS = 500
#: The most messages one click on Recover makes due; the rest wait for the next click.
RECOVER_LIMIT = 10_000

StateFilter = Literal["all", "undelivered", "dead", "held", "failed", "pending", "delivered"]
UNDELIVERED = tuple(
    str(state)
    for state in (DeliveryState.DEAD, DeliveryState.HELD, DeliveryState.FAILED, DeliveryState.PENDING)
)
STATE_CHOICES: tuple[StateFilter, ...] = (
    "all",
    "undelivered",
    "dead",
    "held",
    "failed",
    "pending",
    "delivered",
)

State = Annotated[StateFilter, Query(description="which deliveries: all, undelivered, or one state")]
DagFilter = Annotated[str | None, Query(description="only this DAG")]
ConnFilter = Annotated[str | None, Query(description="only this endpoint (connection id)")]
Since = Annotated[str | None, Query(description="only messages recorded since: 6h, 2d, or an ISO 8601 time")]
Endpoint = Annotated[str, Query(min_length=1, description="the endpoint (connection id)")]

router = APIRouter()


@dataclass(frozen=True)
class DagAccess:
    """Which of the ledger's DAGs a user may read, and act on.

    :param readable: DAGs whose runs the user may read (GET).
    :param editable: DAGs whose runs the user may edit (PUT); always a subset of ``readable``.
    """

    readable: frozenset[str]
    editable: frozenset[str]

    @classmethod
    def of(cls, user: Any, dag_ids: Collection[str]) -> DagAccess:
        """Ask the auth manager about each DAG, with its team, as the tab's own check does.

        :param dag_ids: the DAGs to ask about: the ledger's, and any a request names.
        """
        manager = get_auth_manager()
        teams = DagModel.get_dag_id_to_team_name_mapping(list(dag_ids)) if dag_ids else {}

        def allowed(method: Literal["GET", "PUT"], dag_id: str) -> bool:
            return bool(
                manager.is_authorized_dag(
                    method=method,
                    access_entity=DagAccessEntity.RUN,
                    details=DagDetails(id=dag_id, team_name=teams.get(dag_id)),
                    user=user,
                )
            )

        readable = frozenset(dag_id for dag_id in dag_ids if allowed("GET", dag_id))
        return cls(readable, frozenset(dag_id for dag_id in readable if allowed("PUT", dag_id)))

    def narrowed(self, dag_id: str | None, *, editing: bool = False) -> frozenset[str]:
        """Return the DAGs a request is about: all the user may read (or edit), or just ``dag_id``.

        :raises HTTPException: 403 when the user may not read (or edit) ``dag_id``.
        """
        allowed = self.editable if editing else self.readable
        if dag_id is None:
            return allowed
        if dag_id not in allowed:
            verb = "edit" if editing else "read"
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"You may not {verb} the runs of DAG {dag_id!r}, so not its webhooks.",
            )
        return frozenset((dag_id,))


def _connection_allowed(user: Any, key: str, method: Literal["GET", "PUT"]) -> bool:
    """Whether the user may read (or edit) the connection behind an endpoint (connections at all, for ``url:``)."""
    conn_id = None if key.startswith("url:") else key
    team = Connection.get_team_name(conn_id) if conn_id is not None else None
    return bool(
        get_auth_manager().is_authorized_connection(
            method=method, details=ConnectionDetails(conn_id=conn_id, team_name=team), user=user
        )
    )


@dataclass(frozen=True)
class EndpointRow:
    """One endpoint on the page: its health, its messages of the DAGs the user may read, and what they may do."""

    health: EndpointHealth
    counts: dict[str, int]
    can_edit: bool

    @property
    def status(self) -> tuple[str, str]:
        """Return ``(tone, words)``: disabled, circuit open, recovering, failing, or healthy."""
        return endpoint_status(self.health)


def _endpoint_rows(ledger: Ledger, user: Any, access: DagAccess) -> list[EndpointRow]:
    """Return the endpoints the user may see, those needing attention first."""
    counts = ledger.counts_by_endpoint(dag_ids=access.readable)
    rows = []
    for health in ledger.endpoint_health():
        own = counts.get(health.key, {})
        if not own and not _connection_allowed(user, health.key, "GET"):
            continue
        rows.append(EndpointRow(health, own, _connection_allowed(user, health.key, "PUT")))
    order = {"disabled": 0, "circuit open": 1, "recovering": 2, "failing": 3, "healthy": 4}
    return sorted(rows, key=lambda row: (order[row.status[1]], row.health.key))


@dataclass(frozen=True)
class Filters:
    """The page's filters, as the query string gave them."""

    state: StateFilter
    dag_id: str | None
    conn: str | None
    since: str | None

    def states(self, *, recovering: bool = False) -> tuple[str, ...] | None:
        """Return the states the filter names (None: any); Recover takes only undelivered ones unless named."""
        if self.state == "all":
            return UNDELIVERED if recovering else None
        if self.state == "undelivered":
            return UNDELIVERED
        return (self.state,)

    def since_time(self) -> float | None:
        """Return ``since`` as UNIX seconds.

        :raises HTTPException: 400 saying how to write it.
        """
        if not self.since:
            return None
        try:
            return parse_time(self.since, now=time.time())
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"since: {exc}") from None

    def query(self) -> dict[str, str]:
        """Return the filters as query parameters (those set)."""
        found = {"state": self.state, "dag_id": self.dag_id, "conn": self.conn, "since": self.since}
        return {name: value for name, value in found.items() if value}


def _asked_about(ledger: Ledger, filters: Filters) -> set[str]:
    """Return the DAGs whose access matters to a request: the ledger's, and the one the filters name."""
    return {*ledger.dag_ids(), *([filters.dag_id] if filters.dag_id else [])}


def _filters(state: StateFilter, dag_id: str | None, conn: str | None, since: str | None) -> Filters:
    return Filters(state, dag_id or None, conn or None, (since or "").strip() or None)


def _distinct(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


@router.get("/overview", response_class=HTMLResponse)
def overview_page(
    request: Request,
    user: GetUserDep,
    state: State = "all",
    dag_id: DagFilter = None,
    conn: ConnFilter = None,
    since: Since = None,
    theme: Theme | None = None,
) -> HTMLResponse:
    """Return the overview: endpoints and their health, then deliveries, those needing attention first."""
    filters = _filters(state, dag_id, conn, since)
    pipeline = open_pipeline()
    ledger = pipeline.ledger
    assert ledger is not None
    access = DagAccess.of(user, _asked_about(ledger, filters))
    dags = access.narrowed(filters.dag_id)
    problem = None
    try:
        since_time = filters.since_time()
    except HTTPException as exc:
        problem, since_time = str(exc.detail), None
    rows = ledger.deliveries(
        dag_ids=dags,
        states=filters.states(),
        endpoint=filters.conn,
        since=since_time,
        attention_first=True,
        limit=MAX_ROWS + 1,
    )
    endpoints = _endpoint_rows(ledger, user, access)
    recoverable = (
        len(
            ledger.select_ids(
                dag_ids=access.editable & dags,
                states=filters.states(recovering=True) or UNDELIVERED,
                endpoint=filters.conn,
                since=since_time,
                limit=RECOVER_LIMIT + 1,
            )
        )
        if access.editable & dags
        else 0
    )
    base = str(request.scope.get("root_path", ""))
    page = render(
        "overview.html",
        theme=theme,
        static_base=f"{base}/static",
        base=base,
        mode=pipeline.mode(),
        counts=ledger.counts(dag_ids=access.readable),
        endpoints=endpoints,
        deliveries=rows[:MAX_ROWS],
        truncated=len(rows) > MAX_ROWS,
        max_rows=MAX_ROWS,
        filters=filters,
        state_choices=STATE_CHOICES,
        dag_choices=sorted(access.readable),
        conn_choices=_distinct(row.health.key for row in endpoints),
        recover_url=f"{base}/overview/recover?{urlencode(filters.query())}",
        recoverable=recoverable,
        recover_limit=RECOVER_LIMIT,
        may_recover=bool(access.editable & dags),
        problem=problem,
        csrf_header=CSRF_HEADER,
        csrf_value=CSRF_VALUE,
    )
    return HTMLResponse(page, headers=page_headers(forms=True))


@router.post("/overview/recover", dependencies=[Depends(require_same_origin)])
def recover(
    user: GetUserDep,
    state: State = "all",
    dag_id: DagFilter = None,
    conn: ConnFilter = None,
    since: Since = None,
) -> JSONResponse:
    """Make the undelivered messages the filters match, of the DAGs the user may edit, due now (same ids)."""
    filters = _filters(state, dag_id, conn, since)
    pipeline = open_pipeline()
    ledger = pipeline.ledger
    assert ledger is not None
    access = DagAccess.of(user, _asked_about(ledger, filters))
    dags = access.narrowed(filters.dag_id, editing=True)
    if not dags:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Recover needs edit access to the runs of at least one DAG listed here.",
        )
    ids = ledger.select_ids(
        dag_ids=dags,
        states=filters.states(recovering=True) or UNDELIVERED,
        endpoint=filters.conn,
        since=filters.since_time(),
        limit=RECOVER_LIMIT + 1,
    )
    due = ledger.force_many(ids[:RECOVER_LIMIT])
    mode = pipeline.mode()
    log.info(
        "User %s recovered %d message(s) in the Webhooks overview (%s)", user.get_name(), due, filters.query()
    )
    sender = (
        "the dispatcher sends them now"
        if mode.name == "dispatcher"
        else "no dispatcher runs, so the maintenance DAG (or `airflow flow-webhooks dispatcher --once`) sends them"
    )
    more = (
        f"; {len(ids) - RECOVER_LIMIT}+ more match, click again for them" if len(ids) > RECOVER_LIMIT else ""
    )
    return JSONResponse(
        {
            "count": due,
            "more": len(ids) > RECOVER_LIMIT,
            "message": f"{due} message(s) due again: {sender}{more}.",
        },
        headers=PAGE_HEADERS,
    )


def _endpoint_to_change(ledger: Ledger, user: Any, key: str) -> None:
    """Check that an endpoint exists and the user may edit its connection.

    :raises HTTPException: 404 for an unknown endpoint, 403 without edit access.
    """
    if not ledger.endpoint_health([key]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No endpoint {key!r} in the ledger.")
    if not _connection_allowed(user, key, "PUT"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"Enabling or disabling {key!r} needs edit access to its connection."
        )


@router.post("/overview/endpoints/enable", dependencies=[Depends(require_same_origin)])
def enable_endpoint(user: GetUserDep, conn: Endpoint) -> JSONResponse:
    """Enable an endpoint: its circuit closes and what it held is due now."""
    ledger = open_pipeline().ledger
    assert ledger is not None
    _endpoint_to_change(ledger, user, conn)
    released = ledger.enable_endpoint(conn)
    log.info(
        "User %s enabled endpoint %s in the Webhooks overview (%d held released)",
        user.get_name(),
        conn,
        released,
    )
    return JSONResponse(
        {
            "endpoint": conn,
            "released": released,
            "message": f"{conn}: enabled; {released} held message(s) due now.",
        },
        headers=PAGE_HEADERS,
    )


@router.post("/overview/endpoints/disable", dependencies=[Depends(require_same_origin)])
def disable_endpoint(
    user: GetUserDep, conn: Endpoint, reason: Annotated[str, Query(max_length=200)] = ""
) -> JSONResponse:
    """Disable an endpoint: its new messages, and those waiting for it, are held."""
    ledger = open_pipeline().ledger
    assert ledger is not None
    _endpoint_to_change(ledger, user, conn)
    why = reason.strip() or f"disabled by {user.get_name()} in the Webhooks overview"
    held = ledger.disable_endpoint(conn, why)
    log.info("User %s disabled endpoint %s in the Webhooks overview (%d held)", user.get_name(), conn, held)
    return JSONResponse(
        {"endpoint": conn, "held": held, "message": f"{conn}: disabled; {held} message(s) held."},
        headers=PAGE_HEADERS,
    )
