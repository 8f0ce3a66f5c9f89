"""The provider's plugin: the listeners that capture every end, the Webhooks tabs of a DAG and a run, the overview.

``FlowWebhooksPlugin`` registers the listeners of :mod:`airflow_webhook_provider.capture.listeners`
(the capture path that sees runs ended by hand, in the scheduler and the API server), and
contributes two things to Airflow's UI plugins:

* a web app mounted in the API server at ``/flow-webhooks`` (``fastapi_apps``), which
  renders the run's deliveries from the ledger and replays one on request (see
  ``airflow_webhook_provider.face.plugins.app`` for its routes and access control);
* an external view with ``destination: "dag_run"``, which the Airflow UI shows as a
  **Webhooks** tab on every DAG run page, in a same-origin iframe whose URL is ``href``
  with ``{DAG_ID}`` and ``{RUN_ID}`` filled in; the UI session cookie authenticates it;
* an external view with ``destination: "dag"``, a **Webhooks** tab on every DAG's page: the
  DAG's webhooks, from its file and from the UI, and the form that creates, edits, tests,
  imports and exports them (``/flow-webhooks/dag``, over the HTTP API at ``/flow-webhooks/api/v1``);
* an external view with ``destination: "nav"``, a top-level **Webhooks** entry of the UI's
  navigation that opens the overview of every DAG (``/flow-webhooks/overview``).

Airflow loads plugins in every component, task processes included, but only the API
server serves the app; so this module imports neither FastAPI nor Airflow's API code,
and the app is imported on its first request.

Usage: nothing to do. Installing the provider registers the plugin (entry point
``airflow.plugins``, and ``plugins`` in the provider info); then every DAG run page has
the tab.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk.plugins_manager import AirflowPlugin

from airflow_webhook_provider import config
from airflow_webhook_provider.capture import listeners as capture_listeners

__all__ = ["URL_PREFIX", "FlowWebhooksPlugin", "WebhooksTabApp"]

#: Where the tab's app is mounted in the API server.
URL_PREFIX = "/flow-webhooks"

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class WebhooksTabApp:
    """An ASGI app that hands every request to the tab's FastAPI app, imported on first use."""

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve one request (or lifespan event) with ``airflow_webhook_provider.face.plugins.app.app``."""
        from airflow_webhook_provider.face.plugins.app import app

        await app(scope, receive, send)


def _api_root_path() -> str:
    """Return the path part of ``[api] base_url`` without its trailing slash (usually empty)."""
    return urlsplit(config.base_url()).path.rstrip("/")


class FlowWebhooksPlugin(AirflowPlugin):
    """The provider's plugin: the Webhooks tab and overview, and the listeners that capture every run end."""

    # Airflow reads these class attributes (declared on AirflowPlugin as plain lists).
    name = "flow_webhooks"
    listeners = [capture_listeners]  # noqa: RUF012
    fastapi_apps = [  # noqa: RUF012
        {"app": WebhooksTabApp(), "url_prefix": URL_PREFIX, "name": "Flow webhooks"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Webhooks",
            "href": f"{_api_root_path()}{URL_PREFIX}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "webhooks",
        },
        {
            "name": "Webhooks",
            "href": f"{_api_root_path()}{URL_PREFIX}/dag?dag_id={{DAG_ID}}",
            "destination": "dag",
            "url_route": "dag-webhooks",
        },
        {
            "name": "Webhooks",
            "href": f"{_api_root_path()}{URL_PREFIX}/overview",
            "destination": "nav",
            "url_route": "webhooks-overview",
            "nav_top_level": True,
            "icon": f"{_api_root_path()}{URL_PREFIX}/static/webhooks.svg",
            "icon_dark_mode": f"{_api_root_path()}{URL_PREFIX}/static/webhooks-dark.svg",
        },
    ]
