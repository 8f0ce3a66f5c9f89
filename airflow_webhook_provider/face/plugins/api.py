"""The HTTP API behind the DAG's Webhooks tab, mounted at ``/flow-webhooks/api/v1`` (OpenAPI at ``openapi.json``).

Routes (``{name}`` is a webhook's name, URL-quoted)::

    GET    /dags/{dag_id}/webhooks                  every webhook: source "code" (its DAG file) or "ui"
    POST   /dags/{dag_id}/webhooks                  create a UI-defined webhook (201)
    GET    /dags/{dag_id}/webhooks/export           the DAG's webhooks as a definition file (?format=yaml|json)
    POST   /dags/{dag_id}/webhooks/import           create or update UI-defined webhooks from a definition
                                                    file (?replace=true also deletes those it does not list)
    GET    /dags/{dag_id}/webhooks/{name}           one webhook
    PATCH  /dags/{dag_id}/webhooks/{name}           change a UI-defined webhook's fields
    DELETE /dags/{dag_id}/webhooks/{name}           delete a UI-defined webhook (204)
    POST   /dags/{dag_id}/webhooks/{name}/test      send this webhook's own message with test values
    GET    /dags/{dag_id}/webhooks/{name}/history   the changes to a UI-defined webhook, newest first
    GET    /dags/{dag_id}/history                   every change to the DAG's UI-defined webhooks

Authentication and authorisation are Airflow's: a Bearer token or the UI's session
cookie; reading needs read access to the DAG, changing (and testing) edit access. A
request authenticated by the session cookie (a browser) must also pass the pages' CSRF
checks (:func:`~airflow_webhook_provider.face.plugins.common.require_same_origin`);
scripts with a Bearer token need not. A refused definition answers 422 with every
problem and its field (``{"detail": {"message": ..., "problems": [{"field", "message",
"webhook"}]}}``); a change based on an older version (``version`` in a PATCH body, or
``?version=`` on DELETE) answers 409. The changes are the catalog's
(:mod:`airflow_webhook_provider.face.catalog`), which the command line uses too.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.face.catalog import (
    DefinitionProblems,
    WebhookCatalog,
    WebhookItem,
    WebhookNotFound,
    WebhookReadOnly,
)
from airflow_webhook_provider.face.plugins.common import PAGE_HEADERS, open_pipeline, require_same_origin
from airflow_webhook_provider.ledger import DefinitionConflict, DefinitionNotFound

__all__ = ["api"]

log = logging.getLogger(__name__)

#: How long Test waits for the dispatcher's attempt before answering "queued".
TEST_WAIT_SECONDS = 40.0

_can_read = requires_access_dag("GET")
_can_edit = requires_access_dag("PUT")

api = FastAPI(
    title="Flow webhooks",
    summary="A DAG's webhooks: list, create, edit, delete, test, export and import.",
    version="1",
    docs_url=None,
    redoc_url=None,
    openapi_url="/openapi.json",
)


def require_same_origin_for_browsers(request: Request) -> None:
    """Apply the CSRF checks to a request the browser's session cookie authenticates (not to a Bearer token)."""
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        require_same_origin(request)


_change = [Depends(_can_edit), Depends(require_same_origin_for_browsers)]


def _catalog() -> WebhookCatalog:
    ledger = open_pipeline().ledger
    assert ledger is not None
    return WebhookCatalog.configured(ledger)


Catalog = Annotated[WebhookCatalog, Depends(_catalog)]


class WebhookOut(BaseModel):
    """One webhook of a DAG."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: Literal["code", "ui"] = Field(description="code: the DAG file (read-only); ui: defined here")
    definition: dict[str, Any] = Field(description="its fields, as a definition file lists them")
    version: int | None = Field(description="a UI-defined webhook's version; None for code-defined ones")
    origin: str = Field(description="where it comes from, in words")
    updated_at: float | None
    updated_by: str | None
    shadowed: bool = Field(description="a UI-defined webhook whose name the DAG file uses too (not sent)")
    error: str | None = Field(description="why a stored UI definition no longer validates")

    @classmethod
    def of(cls, item: WebhookItem) -> WebhookOut:
        """Return the API's view of a catalog item."""
        return cls(**item.as_dict())


class WebhookList(BaseModel):
    """A DAG's webhooks."""

    dag_id: str
    webhooks: list[WebhookOut]
    limit: int = Field(description="[flow_webhook] max_webhooks_per_flow, over code and UI webhooks together")
    file_recorded: bool = Field(description="whether the DAG file's webhooks are recorded yet")


class TestResult(BaseModel):
    """What the receiver answered to a test message."""

    delivery_id: str
    delivered: bool
    status_code: int | None
    error: str | None
    excerpt: str = Field(description="the start of the receiver's answer")
    summary: str


class ImportResult(BaseModel):
    """What an import changed."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: list[str]
    summary: str


def _refused(exc: DefinitionProblems) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        {"message": str(exc), "problems": [problem.as_dict() for problem in exc.problems]},
    )


def _translated(exc: Exception) -> HTTPException:
    if isinstance(exc, DefinitionProblems):
        return _refused(exc)
    if isinstance(exc, WebhookNotFound | DefinitionNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, WebhookReadOnly | DefinitionConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    raise exc


_CATALOG_ERRORS = (
    DefinitionProblems,
    WebhookNotFound,
    DefinitionNotFound,
    WebhookReadOnly,
    DefinitionConflict,
)


@api.get("/dags/{dag_id}/webhooks", dependencies=[Depends(_can_read)])
def list_webhooks(dag_id: str, catalog: Catalog) -> WebhookList:
    """List the DAG's webhooks: its file's (read-only), then those defined in the UI."""
    return WebhookList(
        dag_id=dag_id,
        webhooks=[WebhookOut.of(item) for item in catalog.items(dag_id)],
        limit=catalog.limits.max_webhooks_per_flow,
        file_recorded=catalog.file_recorded(dag_id),
    )


@api.post("/dags/{dag_id}/webhooks", status_code=status.HTTP_201_CREATED, dependencies=_change)
def create_webhook(
    dag_id: str,
    user: GetUserDep,
    catalog: Catalog,
    definition: Annotated[dict[str, Any], Body(description="the FlowWebhook fields")],
) -> WebhookOut:
    """Create a UI-defined webhook; runs that end from now on send it."""
    try:
        item = catalog.create(dag_id, definition, actor=user.get_name())
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None
    log.info("User %s created webhook %r of DAG %s", user.get_name(), item.name, dag_id)
    return WebhookOut.of(item)


@api.get(
    "/dags/{dag_id}/webhooks/export", dependencies=[Depends(_can_read)], response_class=PlainTextResponse
)
def export_webhooks(
    dag_id: str,
    catalog: Catalog,
    file_format: Annotated[Literal["yaml", "json"], Query(alias="format")] = "yaml",
) -> PlainTextResponse:
    """Return the DAG's webhooks, from its file and the UI, as a definition file."""
    media = "application/json" if file_format == "json" else "application/yaml"
    text = catalog.export(dag_id, file_format)
    if text is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"DAG {dag_id!r} has no webhooks to export.")
    return PlainTextResponse(
        text,
        media_type=media,
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="{dag_id}-webhooks.{file_format}"',
        },
    )


@api.post("/dags/{dag_id}/webhooks/import", dependencies=_change)
async def import_webhooks(
    dag_id: str,
    request: Request,
    user: GetUserDep,
    catalog: Catalog,
    replace: Annotated[
        bool, Query(description="also delete the UI-defined webhooks the file does not list")
    ] = False,
) -> ImportResult:
    """Create or update UI-defined webhooks from a definition file (YAML or JSON body): all of them, or none."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the file is not UTF-8 text; save it as UTF-8"
        ) from None
    content_type = request.headers.get("content-type", "")
    file_format: Literal["yaml", "json"] | None = "json" if "json" in content_type else None
    try:
        report = catalog.import_text(
            dag_id, text, actor=user.get_name(), file_format=file_format, replace=replace
        )
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None
    log.info("User %s imported webhooks into DAG %s: %s", user.get_name(), dag_id, report.summary())
    return ImportResult(**vars(report), summary=report.summary())


@api.get("/dags/{dag_id}/webhooks/{name}", dependencies=[Depends(_can_read)])
def get_webhook(dag_id: str, name: str, catalog: Catalog) -> WebhookOut:
    """Return one webhook of the DAG."""
    try:
        return WebhookOut.of(catalog.get(dag_id, name))
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None


@api.patch("/dags/{dag_id}/webhooks/{name}", dependencies=_change)
def update_webhook(
    dag_id: str,
    name: str,
    user: GetUserDep,
    catalog: Catalog,
    changes: Annotated[
        dict[str, Any],
        Body(
            description="the fields to change (null: back to the default); version: refuse unless still at it"
        ),
    ],
) -> WebhookOut:
    """Change a UI-defined webhook; runs that end from now on use the change."""
    fields = dict(changes)
    expected = fields.pop("version", None)
    if expected is not None and not isinstance(expected, int):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "version must be the integer version the change is based on"
        )
    try:
        item = catalog.update(dag_id, name, fields, actor=user.get_name(), expected_version=expected)
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None
    log.info("User %s changed webhook %r of DAG %s (version %s)", user.get_name(), name, dag_id, item.version)
    return WebhookOut.of(item)


@api.delete("/dags/{dag_id}/webhooks/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=_change)
def delete_webhook(
    dag_id: str,
    name: str,
    user: GetUserDep,
    catalog: Catalog,
    version: Annotated[
        int | None, Query(description="refuse unless the webhook is still at this version")
    ] = None,
) -> Response:
    """Delete a UI-defined webhook; runs that end from now on do not send it."""
    try:
        catalog.delete(dag_id, name, actor=user.get_name(), expected_version=version)
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None
    log.info("User %s deleted webhook %r of DAG %s", user.get_name(), name, dag_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@api.post("/dags/{dag_id}/webhooks/{name}/test", dependencies=_change)
def test_webhook(dag_id: str, name: str, user: GetUserDep) -> TestResult:
    """Send this webhook's own message (its method, headers, query and body) with test values, signed.

    It goes through the egress policy; the dispatcher sends it when one is alive.
    """
    pipeline = open_pipeline()
    assert pipeline.ledger is not None
    try:
        webhook = WebhookCatalog.configured(pipeline.ledger).webhook(dag_id, name)
    except InvalidWebhookDefinition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except _CATALOG_ERRORS as exc:
        raise _translated(exc) from None
    report = pipeline.test(webhook=webhook, dag_id=dag_id, wait_seconds=TEST_WAIT_SECONDS)
    log.info("User %s tested webhook %r of DAG %s: %s", user.get_name(), name, dag_id, report.summary())
    return TestResult(
        delivery_id=report.delivery_id,
        delivered=report.delivered,
        status_code=report.status_code,
        error=report.error,
        excerpt=report.response_excerpt[:500],
        summary=report.summary(),
    )


@api.get("/dags/{dag_id}/webhooks/{name}/history", dependencies=[Depends(_can_read)])
def webhook_history(dag_id: str, name: str, catalog: Catalog) -> JSONResponse:
    """Return the changes to one UI-defined webhook, newest first: who, when, what changed."""
    return JSONResponse([record.as_dict() for record in catalog.history(dag_id, name)], headers=PAGE_HEADERS)


@api.get("/dags/{dag_id}/history", dependencies=[Depends(_can_read)])
def dag_history(dag_id: str, catalog: Catalog) -> JSONResponse:
    """Return every change to the DAG's UI-defined webhooks, newest first."""
    return JSONResponse([record.as_dict() for record in catalog.history(dag_id)], headers=PAGE_HEADERS)
