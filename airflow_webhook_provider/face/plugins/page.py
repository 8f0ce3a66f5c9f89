"""HTML of the Webhooks tab: pure functions from ledger records to markup, rendered from templates.

Each function renders one template of ``templates/`` (:mod:`.rendering`): the page is
``run.html``, which includes the partials the other functions render alone, so the row and
the summary line that Redeliver swaps in are the page's own. Everything on the page that a
DAG author or a receiver controls (webhook names, URLs, errors, response excerpts, even the
run id) is escaped. The page shows no header values, bodies or connection fields: the
ledger keeps no secrets, and the page does not look for any. It has no inline script or
style: it links ``static/webhooks.css`` and ``static/run.js``. Nothing here imports Airflow
or FastAPI, so the markup is tested without a server.

One delivery is one ``<tbody>``: a summary row and a hidden row for its attempts, which
are fetched when the row is expanded, newest first, ``ATTEMPTS_PAGE_SIZE`` at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

from airflow_webhook_provider.face.plugins.rendering import render

if TYPE_CHECKING:
    from airflow_webhook_provider.delivery.pipeline import DeliveryMode
    from airflow_webhook_provider.ledger import AttemptRecord, Delivery, EndpointHealth

__all__ = [
    "ATTEMPTS_PAGE_SIZE",
    "CSRF_HEADER",
    "CSRF_VALUE",
    "MAX_DELIVERIES",
    "TabUrls",
    "Theme",
    "endpoint_status",
    "render_attempts",
    "render_delivery",
    "render_endpoints",
    "render_mode",
    "render_page",
    "render_summary",
]

Theme = Literal["light", "dark"]

#: Attempts shown per click on a delivery; older ones load on demand.
ATTEMPTS_PAGE_SIZE = 20
#: Deliveries shown for one run (50 webhooks, each with several outputs, fit).
MAX_DELIVERIES = 500
#: The header every state-changing request must carry (a cross-site form cannot set it).
CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "flow-webhooks-tab"

#: Rows that need attention first: given up, held, failing, in flight, then delivered.
_ATTENTION = {"dead": 0, "held": 1, "failed": 2, "pending": 3, "delivered": 4}
#: How each message was captured, in words.
_CAPTURES = {
    "callback": "an Airflow callback",
    "listener": "an Airflow listener (scheduler or API server)",
    "reconciled": "run-end reconciliation of the outputs",
    "test": "a test",
}


def endpoint_status(health: EndpointHealth) -> tuple[str, str]:
    """Return an endpoint's health as ``(badge tone, words)``: disabled, circuit open, recovering, failing, or healthy."""
    if health.disabled_at is not None:
        return "failed", "disabled"
    if health.circuit == "open":
        return "failed", "circuit open"
    if health.circuit == "half_open" or health.recovering:
        return "retry", "recovering"
    if health.consecutive_failures:
        return "retry", "failing"
    return "success", "healthy"


@dataclass(frozen=True)
class TabUrls:
    """Build the tab's own URLs for one run.

    :param base: the path the tab's app is mounted at, e.g. ``/flow-webhooks``.
    :param dag_id: the DAG.
    :param run_id: the run.
    """

    base: str
    dag_id: str
    run_id: str

    def _url(self, path: str, **query: str | int) -> str:
        return f"{self.base}{path}?" + urlencode({"dag_id": self.dag_id, "run_id": self.run_id, **query})

    @property
    def static(self) -> str:
        """Return where the app serves the pages' stylesheet and scripts (``static/``)."""
        return f"{self.base}/static"

    def attempts(self, delivery_id: str, offset: int = 0) -> str:
        """Return the URL of one page of a delivery's attempts, newest first, from ``offset``."""
        return self._url("/run/attempts", delivery_id=delivery_id, offset=offset)

    def redeliver(self, delivery_id: str) -> str:
        """Return the URL the Redeliver button posts to."""
        return self._url("/run/redeliver", delivery_id=delivery_id)


def _troubled(endpoints: Sequence[EndpointHealth]) -> list[EndpointHealth]:
    return [e for e in endpoints if e.circuit == "open" or e.consecutive_failures]


def render_delivery(delivery: Delivery, *, urls: TabUrls, can_redeliver: bool) -> str:
    """Return one delivery as a ``<tbody>``: its summary row and its (collapsed) attempts row.

    :param delivery: the ledger's record.
    :param urls: the tab's URLs for the delivery's run.
    :param can_redeliver: whether the user may redeliver (edit access to the DAG).
    """
    return render(
        "_delivery.html", delivery=delivery, urls=urls, can_redeliver=can_redeliver, captures=_CAPTURES
    )


def render_attempts(
    attempts: Sequence[AttemptRecord],
    *,
    total: int,
    offset: int,
    more_url: str | None,
    same_day_as: float | None = None,
) -> str:
    """Return one page of a delivery's attempts as an HTML fragment.

    :param attempts: the attempts of this page, newest first.
    :param total: how many attempts the delivery has.
    :param offset: how many newer attempts came before this page.
    :param more_url: where the next (older) page is, or None on the last page.
    :param same_day_as: show only the time of day for attempts on this moment's day (the delivery's creation).
    """
    return render(
        "_attempts.html",
        attempts=attempts,
        total=total,
        offset=offset,
        more_url=more_url,
        same_day_as=same_day_as,
    )


def render_summary(deliveries: Sequence[Delivery], *, truncated: bool) -> str:
    """Return the count of a run's deliveries, in all and per state.

    :param deliveries: the run's deliveries (as many as shown).
    :param truncated: whether the run has more deliveries than shown.
    """
    return render("_summary.html", deliveries=deliveries, truncated=truncated)


def render_mode(mode: DeliveryMode) -> str:
    """Return who sends new messages right now: the dispatcher, or the callbacks inline."""
    return render("_mode.html", mode=mode)


def render_endpoints(endpoints: Sequence[EndpointHealth]) -> str:
    """Return the health of the run's endpoints that are failing or whose circuit is open (empty when all are well)."""
    return render("_endpoints.html", troubled=_troubled(endpoints))


def render_page(
    *,
    mode: DeliveryMode,
    endpoints: Sequence[EndpointHealth],
    dag_id: str,
    run_id: str,
    deliveries: Sequence[Delivery],
    urls: TabUrls,
    can_redeliver: bool,
    truncated: bool,
    theme: Theme | None = None,
) -> str:
    """Return the whole tab for one run.

    :param mode: who sends new messages (dispatcher or inline).
    :param endpoints: the health of the endpoints the run's deliveries go to.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param deliveries: the run's deliveries; shown dead, failed and pending first, then by webhook name.
    :param urls: the tab's URLs for this run.
    :param can_redeliver: whether the user may redeliver.
    :param truncated: whether the run has more deliveries than shown.
    :param theme: force light or dark; otherwise follow the Airflow UI around the page, or the system.
    """
    return render(
        "run.html",
        theme=theme,
        static_base=urls.static,
        dag_id=dag_id,
        run_id=run_id,
        deliveries=sorted(deliveries, key=lambda d: (_ATTENTION.get(d.state, 2), d.webhook, d.output_name)),
        truncated=truncated,
        max_deliveries=MAX_DELIVERIES,
        mode=mode,
        troubled=_troubled(endpoints),
        urls=urls,
        can_redeliver=can_redeliver,
        captures=_CAPTURES,
        csrf_header=CSRF_HEADER,
        csrf_value=CSRF_VALUE,
    )
