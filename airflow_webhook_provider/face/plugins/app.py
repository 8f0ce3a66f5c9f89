"""The web app behind the Webhooks tab, mounted in Airflow's API server at ``/flow-webhooks``.

Routes (``dag_id`` and ``run_id`` travel in the query string, so a run id survives
whatever characters it holds)::

    GET  /run?dag_id=&run_id=[&theme=light|dark]              the tab: the run's deliveries
    GET  /run/attempts?dag_id=&run_id=&delivery_id=&offset=   one delivery's attempts (HTML fragment)
    POST /run/redeliver?dag_id=&run_id=&delivery_id=          replay one delivery now

Authentication and authorisation are Airflow's own (``airflow.api_fastapi.core_api.security``):
a Bearer token or the UI's ``_token`` session cookie identifies the user (none: 401), and
the auth manager decides per DAG: reading needs ``GET`` on the DAG's runs, redelivering
``PUT`` (edit) on them (refused: 403). A delivery is only reachable through the run it
belongs to, so access to one DAG never reaches another DAG's deliveries.

The overview (:mod:`.overview`) adds ``/overview`` and its actions, the DAG's tab
(:mod:`.dag_tab`) ``/dag``, and the HTTP API (:mod:`.api`) ``/api/v1``; ``/static`` serves the
pages' stylesheet and scripts. Redeliver changes state, so it is POST only and refuses what
another site could send (403), and every page carries a strict Content-Security-Policy:
see :mod:`.common`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_webhook_provider.delivery.pipeline import Pipeline
from airflow_webhook_provider.face.plugins import dag_tab, overview
from airflow_webhook_provider.face.plugins.api import api
from airflow_webhook_provider.face.plugins.common import (
    PAGE_HEADERS,
    StaticFilesNoSniff,
    open_pipeline,
    require_same_origin,
)
from airflow_webhook_provider.face.plugins.page import (
    ATTEMPTS_PAGE_SIZE,
    MAX_DELIVERIES,
    TabUrls,
    Theme,
    render_attempts,
    render_delivery,
    render_page,
    render_summary,
)
from airflow_webhook_provider.face.plugins.rendering import STATIC_DIR
from airflow_webhook_provider.ledger import Delivery, Ledger, LedgerError

__all__ = ["app"]

log = logging.getLogger(__name__)

#: How long Redeliver waits for the dispatcher's attempt before answering "queued".
REDELIVER_WAIT_SECONDS = 35.0

_can_read = requires_access_dag("GET", DagAccessEntity.RUN)
_can_edit = requires_access_dag("PUT", DagAccessEntity.RUN)

DagId = Annotated[str, Query(min_length=1, description="the DAG")]
RunId = Annotated[str, Query(min_length=1, description="the DAG run")]
DeliveryId = Annotated[str, Query(min_length=1, description="the delivery")]

app = FastAPI(title="Flow webhooks tab", docs_url=None, redoc_url=None, openapi_url=None)


app.mount("/static", StaticFilesNoSniff(directory=STATIC_DIR), name="static")
app.include_router(overview.router)
app.include_router(dag_tab.router)
app.mount("/api/v1", api)


def _ledger(pipeline: Pipeline) -> Ledger:
    assert pipeline.ledger is not None  # open_pipeline() requires a ledger
    return pipeline.ledger


def _delivery_of_run(ledger: Ledger, delivery_id: str, dag_id: str, run_id: str) -> Delivery:
    delivery = ledger.get(delivery_id)
    if delivery is None or (delivery.dag_id, delivery.run_id) != (dag_id, run_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"No delivery {delivery_id} for run {run_id} of DAG {dag_id}."
        )
    return delivery


def _urls(request: Request, dag_id: str, run_id: str) -> TabUrls:
    # Starlette puts the mount path (and any outer root path) into root_path.
    return TabUrls(base=str(request.scope.get("root_path", "")), dag_id=dag_id, run_id=run_id)


def _may_redeliver(request: Request, user: Any) -> bool:
    try:
        _can_edit(request, user)
    except HTTPException:
        return False
    return True


@app.get("/run", response_class=HTMLResponse, dependencies=[Depends(_can_read)])
def run_page(
    request: Request, user: GetUserDep, dag_id: DagId, run_id: RunId, theme: Theme | None = None
) -> HTMLResponse:
    """Return the Webhooks tab of one DAG run."""
    pipeline = open_pipeline()
    ledger = _ledger(pipeline)
    rows = ledger.deliveries(dag_id=dag_id, run_id=run_id, limit=MAX_DELIVERIES + 1)
    page = render_page(
        mode=pipeline.mode(),
        endpoints=ledger.endpoint_health(sorted({row.endpoint for row in rows})),
        dag_id=dag_id,
        run_id=run_id,
        deliveries=rows[:MAX_DELIVERIES],
        urls=_urls(request, dag_id, run_id),
        can_redeliver=_may_redeliver(request, user),
        truncated=len(rows) > MAX_DELIVERIES,
        theme=theme,
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)


@app.get("/run/attempts", response_class=HTMLResponse, dependencies=[Depends(_can_read)])
def attempts_page(
    request: Request,
    dag_id: DagId,
    run_id: RunId,
    delivery_id: DeliveryId,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Return one page of a delivery's attempts, newest first."""
    ledger = _ledger(open_pipeline())
    delivery = _delivery_of_run(ledger, delivery_id, dag_id, run_id)
    newest_first = ledger.attempts(delivery_id)[::-1]
    end = offset + ATTEMPTS_PAGE_SIZE
    more = _urls(request, dag_id, run_id).attempts(delivery_id, end) if end < len(newest_first) else None
    fragment = render_attempts(
        newest_first[offset:end],
        total=len(newest_first),
        offset=offset,
        more_url=more,
        same_day_as=delivery.created_at,
    )
    return HTMLResponse(fragment, headers=PAGE_HEADERS)


@app.post("/run/redeliver", dependencies=[Depends(_can_edit), Depends(require_same_origin)])
def redeliver(
    request: Request, user: GetUserDep, dag_id: DagId, run_id: RunId, delivery_id: DeliveryId
) -> JSONResponse:
    """Send one delivery again now (same delivery id, fresh signature) and return its new row.

    With a dispatcher alive, the dispatcher sends it and this waits for its answer; the API
    server sends it itself only when no dispatcher runs.
    """
    pipeline = open_pipeline()
    ledger = _ledger(pipeline)
    _delivery_of_run(ledger, delivery_id, dag_id, run_id)
    try:
        result = pipeline.send_now(delivery_id, wait_seconds=REDELIVER_WAIT_SECONDS)
    except LedgerError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    delivery = ledger.get(delivery_id)
    run = ledger.deliveries(dag_id=dag_id, run_id=run_id, limit=MAX_DELIVERIES + 1)
    if result is None or delivery is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Delivery {delivery_id} disappeared from the ledger.")
    log.info(
        "User %s redelivered %s (%s) of %s/%s: %s",
        user.get_name(),
        delivery_id,
        delivery.webhook,
        dag_id,
        run_id,
        result.summary(),
    )
    return JSONResponse(
        {
            "delivery_id": delivery_id,
            "webhook": delivery.webhook,
            "delivered": result.delivered,
            "summary": result.summary(),
            "state": delivery.state,
            "attempts": delivery.attempts,
            "html": render_delivery(delivery, urls=_urls(request, dag_id, run_id), can_redeliver=True),
            "summary_html": render_summary(run[:MAX_DELIVERIES], truncated=len(run) > MAX_DELIVERIES),
        },
        headers=PAGE_HEADERS,
    )
