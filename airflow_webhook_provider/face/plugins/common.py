"""What the provider's pages share in the API server: the ledger, response headers, CSRF checks, static files.

Every page (the run's Webhooks tab, the overview) answers with :data:`PAGE_HEADERS`: a
Content-Security-Policy that runs only scripts and styles the API server itself serves
(the pages have no inline code; their stylesheet and scripts are the package files that
``/static`` serves, without authentication, with ``X-Content-Type-Options: nosniff``) and
lets only the Airflow UI frame them (``frame-ancestors 'self'``).

Every state-changing route depends on :func:`require_same_origin`: it requires the
``X-Requested-With: flow-webhooks-tab`` header, which a cross-site form cannot set and a
cross-origin script cannot send without a CORS preflight; an ``Origin`` other than the API
server's own; and a ``Sec-Fetch-Site`` other than ``same-origin``. (The session cookie is
``SameSite=Lax``, which still lets a page on another port of the same host post with it:
that is what these checks stop.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from airflow_webhook_provider import config
from airflow_webhook_provider.core.exceptions import FlowWebhookError
from airflow_webhook_provider.delivery.pipeline import Pipeline
from airflow_webhook_provider.face.plugins.page import CSRF_HEADER, CSRF_VALUE, Theme

__all__ = [
    "PAGE_HEADERS",
    "StaticFilesNoSniff",
    "Theme",
    "open_pipeline",
    "page_headers",
    "require_same_origin",
]


def page_headers(*, forms: bool = False) -> dict[str, str]:
    """Return the headers of a page or an answer of the app.

    :param forms: let the page submit its own GET forms (the overview's filters); no page posts forms.
    """
    form_action = "'self'" if forms else "'none'"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
            f"frame-ancestors 'self'; base-uri 'none'; form-action {form_action}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


#: The headers of every page and answer without forms.
PAGE_HEADERS = page_headers()


class StaticFilesNoSniff(StaticFiles):
    """Starlette's static files, sent with ``X-Content-Type-Options: nosniff`` (Starlette adds no such header)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """Return the file at ``path`` (or Starlette's answer: not modified, not found)."""
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def open_pipeline() -> Pipeline:
    """Return the delivery pipeline, with its ledger.

    :raises HTTPException: 503 when the ledger cannot be opened, saying why.
    """
    try:
        return Pipeline.from_config(require_ledger=True)
    except FlowWebhookError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _is_own_origin(origin: str, request: Request) -> bool:
    """Whether ``origin`` is the API server itself: as the browser reached it, or as ``[api] base_url`` names it."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if parts.netloc == request.headers.get("host"):
        return True
    base = urlsplit(config.base_url())
    return bool(base.netloc) and (parts.scheme, parts.netloc) == (base.scheme, base.netloc)


def require_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a page of another site could have sent.

    :raises HTTPException: 403 when the request lacks the pages' header, or comes from another origin.
    """
    if request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Refused: the request lacks the header {CSRF_HEADER}: {CSRF_VALUE}, which the Webhooks pages "
            "send and a form on another site cannot.",
        )
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Refused: the browser marked this request {fetch_site} (Sec-Fetch-Site); act from the "
            "Webhooks pages of the Airflow UI.",
        )
    origin = request.headers.get("origin")
    if origin is not None and not _is_own_origin(origin, request):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Refused: the request comes from {origin}, not from this Airflow API server.",
        )
