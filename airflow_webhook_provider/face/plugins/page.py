"""HTML of the Webhooks tab: pure functions from ledger records to escaped markup.

Everything on the page that a DAG author or a receiver controls (webhook names, URLs,
errors, response excerpts, even the run id) goes through :func:`html.escape`. The page
shows no header values, bodies or connection fields: the ledger keeps no secrets, and
the page does not look for any. Nothing here imports Airflow or FastAPI, so the markup
is tested without a server.

One delivery is one ``<tbody>``: a summary row and a hidden row for its attempts, which
are fetched when the row is expanded, newest first, ``ATTEMPTS_PAGE_SIZE`` at a time.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

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

_ERROR_CHARS = 160
_EXCERPT_CHARS = 1000
_STATE_TONES = {
    "delivered": "success",
    "pending": "queued",
    "failed": "retry",
    "dead": "failed",
    "held": "queued",
}
#: Rows that need attention first: given up, held, failing, in flight, then delivered.
_ATTENTION = {"dead": 0, "held": 1, "failed": 2, "pending": 3, "delivered": 4}
#: How each message was captured, in words.
_CAPTURES = {
    "callback": "an Airflow callback",
    "listener": "an Airflow listener (scheduler or API server)",
    "reconciled": "run-end reconciliation of the outputs",
    "test": "a test",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(seconds: float | None, *, same_day_as: float | None = None) -> str:
    """Return a UTC time; only the time of day when it falls on the day of ``same_day_as``."""
    if seconds is None:
        return '<span class="muted">—</span>'
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    shown = "%Y-%m-%d %H:%M:%S"
    if (
        same_day_as is not None
        and datetime.fromtimestamp(same_day_as, tz=timezone.utc).date() == moment.date()
    ):
        shown = "%H:%M:%S"
    iso = moment.isoformat(timespec="seconds")
    return f'<time datetime="{iso}" title="{iso}">{moment.strftime(shown)}</time>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return '<span class="muted">—</span>'
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _clipped(text: str | None, limit: int) -> str:
    """Return ``text`` escaped, cut to ``limit`` characters; the full text is in the tooltip."""
    if not text:
        return '<span class="muted">—</span>'
    if len(text) <= limit:
        return _e(text)
    return f'<span title="{_e(text[:2000])}">{_e(text[:limit])}…</span>'


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

    def attempts(self, delivery_id: str, offset: int = 0) -> str:
        """Return the URL of one page of a delivery's attempts, newest first, from ``offset``."""
        return self._url("/run/attempts", delivery_id=delivery_id, offset=offset)

    def redeliver(self, delivery_id: str) -> str:
        """Return the URL the Redeliver button posts to."""
        return self._url("/run/redeliver", delivery_id=delivery_id)


def _state_badge(delivery: Delivery) -> str:
    tone = _STATE_TONES.get(delivery.state, "queued")
    if delivery.state == "failed" and delivery.next_attempt_at is None:
        tone = "failed"  # retry on failure is off: nothing will try again
    return f'<span class="badge {tone}">{_e(delivery.state)}</span>'


def _event(delivery: Delivery) -> str:
    """Return the event, and the state behind it when that says more (``failed``, ``upstream_failed``)."""
    if delivery.job_status in ("", delivery.event):
        return _e(delivery.event)
    return f'{_e(delivery.event)}<div class="muted small">{_e(delivery.job_status)}</div>'


def _took(delivery: Delivery) -> float | None:
    if delivery.attempts == 0:
        return None
    return (delivery.delivered_at or delivery.updated_at) - delivery.created_at


def _when_next(delivery: Delivery) -> str:
    if delivery.state == "failed" and delivery.next_attempt_at is not None:
        return f'<div class="muted small">next try {_when(delivery.next_attempt_at, same_day_as=delivery.created_at)}</div>'
    return ""


def render_delivery(delivery: Delivery, *, urls: TabUrls, can_redeliver: bool) -> str:
    """Return one delivery as a ``<tbody>``: its summary row and its (collapsed) attempts row.

    :param delivery: the ledger's record.
    :param urls: the tab's URLs for the delivery's run.
    :param can_redeliver: whether the user may redeliver (edit access to the DAG).
    """
    row_id = f"d-{_e(delivery.id)}"
    status = str(delivery.last_status) if delivery.last_status is not None else '<span class="muted">—</span>'
    button = (
        f'<button type="button" class="btn" data-redeliver="{_e(urls.redeliver(delivery.id))}">Redeliver</button>'
        if can_redeliver
        else '<button type="button" class="btn" disabled title="Redeliver needs edit access to this DAG">'
        "Redeliver</button>"
    )
    output = _e(delivery.output_name) if delivery.output_name else '<span class="muted">(run)</span>'
    return (
        f'<tbody class="delivery" id="{row_id}">'
        '<tr class="summary">'
        f'<td><button type="button" class="toggle" aria-expanded="false" aria-controls="{row_id}-attempts" '
        f'data-attempts="{_e(urls.attempts(delivery.id))}" title="Show attempts">'
        '<span aria-hidden="true">▸</span><span class="sr">Show attempts</span></button></td>'
        f'<td class="name" title="delivery {_e(delivery.id)}">{_e(delivery.webhook)}</td>'
        f"<td>{_event(delivery)}</td>"
        f"<td>{output}</td>"
        f'<td class="small" title="{_e(_CAPTURES.get(delivery.capture, delivery.capture))}">{_e(delivery.capture)}</td>'
        f'<td class="url mono"><span class="method">{_e(delivery.method)}</span> '
        f'<span title="{_e(delivery.url)}">{_e(delivery.url)}</span></td>'
        f"<td>{_state_badge(delivery)}{_when_next(delivery)}</td>"
        f'<td class="num attempts">{delivery.attempts}</td>'
        f'<td class="num">{status}</td>'
        f'<td class="num">{_duration(_took(delivery))}</td>'
        f"<td>{_when(delivery.delivered_at or delivery.updated_at)}</td>"
        f'<td class="error">{_clipped(delivery.last_error, _ERROR_CHARS)}</td>'
        f"<td>{button}</td>"
        "</tr>"
        f'<tr class="attempts-row" id="{row_id}-attempts" hidden><td></td><td colspan="12">'
        f'<p class="muted small">Delivery <span class="mono">{_e(delivery.id)}</span> '
        f"(the X-Webhook-Id header of every attempt), created {_when(delivery.created_at)} UTC</p>"
        '<div class="attempts-cell" aria-live="polite"></div></td></tr>'
        "</tbody>"
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
    if total == 0:
        return '<p class="muted">No attempt yet: the message waits for its first send.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="num">{attempt.number}</td>'
        f"<td>{_when(attempt.started_at, same_day_as=same_day_as)}</td>"
        f'<td class="num">{_duration(attempt.duration_seconds)}</td>'
        f'<td class="num">{attempt.status_code if attempt.status_code is not None else "—"}</td>'
        f'<td class="error">{_clipped(attempt.error, _ERROR_CHARS)}</td>'
        f"<td>{_pre(attempt.response_excerpt)}</td>"
        f"<td>{_e(attempt.source)}</td>"
        "</tr>"
        for attempt in attempts
    )
    shown = offset + len(attempts)
    more = (
        f'<button type="button" class="btn" data-more="{_e(more_url)}">'
        f"Show older attempts ({total - shown} more)</button>"
        if more_url is not None
        else ""
    )
    table = (
        f'<table class="attempts"><thead><tr><th class="num">#</th><th>Started (UTC)</th>'
        '<th class="num">Duration</th><th class="num">HTTP</th><th>Error</th><th>Response</th>'
        "<th>Source</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    caption = f'<p class="muted small">Attempts {total - shown + 1} to {total - offset} of {total}, newest first</p>'
    return f'<div class="attempts-page">{caption}{table}{more}</div>'


def _pre(text: str) -> str:
    if not text:
        return '<span class="muted">—</span>'
    clipped = text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"
    return f'<pre class="excerpt">{_e(clipped)}</pre>'


def render_summary(deliveries: Sequence[Delivery], *, truncated: bool) -> str:
    """Return the count of a run's deliveries, in all and per state.

    :param deliveries: the run's deliveries (as many as shown).
    :param truncated: whether the run has more deliveries than shown.
    """
    counts = Counter(delivery.state for delivery in deliveries)
    parts = [f"<strong>{len(deliveries)}{'+' if truncated else ''}</strong> deliveries"]
    parts += [
        f'<span class="badge {_STATE_TONES[state]}">{counts[state]} {state}</span>'
        for state in ("delivered", "failed", "pending", "held", "dead")
        if counts[state]
    ]
    return " ".join(parts)


def render_mode(mode: DeliveryMode) -> str:
    """Return who sends new messages right now: the dispatcher, or the callbacks inline."""
    tone = "success" if mode.name == "dispatcher" else "retry"
    return f'<span class="badge {tone}">{_e(mode.name)}</span> <span class="muted small">{_e(mode.describe())}</span>'


def render_endpoints(endpoints: Sequence[EndpointHealth]) -> str:
    """Return the health of the run's endpoints that are failing or whose circuit is open (empty when all are well)."""
    troubled = [e for e in endpoints if e.circuit == "open" or e.consecutive_failures]
    if not troubled:
        return ""
    items = []
    for endpoint in troubled:
        if endpoint.circuit == "open":
            state = (
                f'<span class="badge failed">circuit open</span> since {_when(endpoint.opened_at)} '
                f"({_e(endpoint.opened_reason or '')}); next probe {_when(endpoint.next_probe_at)}"
            )
        else:
            state = f'<span class="badge retry">{endpoint.consecutive_failures} failure(s) in a row</span>'
        items.append(
            f'<li><span class="mono">{_e(endpoint.key)}</span>: {state}; last success '
            f"{_when(endpoint.last_success_at)}</li>"
        )
    return f'<ul class="endpoints small">{"".join(items)}</ul>'


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
    nonce: str,
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
    :param nonce: the Content-Security-Policy nonce of the inline style and script.
    :param theme: force light or dark; otherwise follow the Airflow UI around the page, or the system.
    """
    theme_attr = f' data-theme="{theme}"' if theme else ""
    if deliveries:
        ordered = sorted(deliveries, key=lambda d: (_ATTENTION.get(d.state, 2), d.webhook, d.output_name))
        body = "".join(render_delivery(d, urls=urls, can_redeliver=can_redeliver) for d in ordered)
        table = (
            '<table class="deliveries"><thead><tr><th><span class="sr">Expand</span></th>'
            "<th>Webhook</th><th>Event</th><th>Output</th>"
            '<th title="How the end was seen: callback, listener or reconciled">Captured by</th>'
            "<th>URL</th><th>State</th>"
            '<th class="num">Attempts</th><th class="num" title="The HTTP status of the last attempt">HTTP</th>'
            '<th class="num" title="From the first record to the last outcome">Took</th>'
            "<th>Last activity (UTC)</th><th>Last error</th><th></th></tr></thead>"
            f"{body}</table>"
        )
    else:
        table = (
            '<p class="empty">No webhook deliveries recorded for this run. A delivery appears when the run, '
            "or one of its outputs, ends in a state a webhook of this DAG listens for.</p>"
        )
    note = (
        f'<p class="muted small">Showing the newest {MAX_DELIVERIES}. '
        f"List them all with <code>flow-webhook deliveries list --dag {_e(dag_id)} --run {_e(run_id)}</code>.</p>"
        if truncated
        else ""
    )
    return (
        f'<!DOCTYPE html><html lang="en"{theme_attr}><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Webhooks · {_e(dag_id)} · {_e(run_id)}</title>"
        f'<style nonce="{_e(nonce)}">{_CSS}</style></head><body>'
        f'<header><h1>Webhooks</h1><p class="muted small">{_e(dag_id)} · <span class="mono">{_e(run_id)}</span></p>'
        f'<p class="summary-line">{render_summary(deliveries, truncated=truncated)}</p>'
        f'<p class="mode small">Delivery: {render_mode(mode)}</p>{render_endpoints(endpoints)}'
        '<p id="notice" class="notice" role="status" aria-live="polite" hidden></p></header>'
        f"<main>{note}{table}</main>"
        f'<script nonce="{_e(nonce)}" data-csrf-header="{_e(CSRF_HEADER)}" data-csrf-value="{_e(CSRF_VALUE)}">'
        f"{_JS}</script></body></html>"
    )


_CSS = """
/* Colours are the Airflow 3 UI's own (light and dark), so the tab blends into the page around it. */
:root { color-scheme: light; --bg: #ffffff; --fg: oklch(0.23185 0.0323 266.44); --muted: oklch(0.55 0.02 260);
  --border: oklch(0.915 0.01 253); --subtle: oklch(0.955 0.006 253); --error: oklch(0.5 0.19 27); }
:root[data-theme="dark"] { color-scheme: dark; --bg: oklch(0.23185 0.0323 266.44); --fg: oklch(0.985 0.004 253);
  --muted: oklch(0.72 0.02 255); --border: oklch(0.28 0.035 251); --subtle: oklch(0.18 0.03 251);
  --error: oklch(0.75 0.15 25); }
@media (prefers-color-scheme: dark) { :root:not([data-theme="light"]) { color-scheme: dark;
  --bg: oklch(0.23185 0.0323 266.44); --fg: oklch(0.985 0.004 253); --muted: oklch(0.72 0.02 255);
  --border: oklch(0.28 0.035 251); --subtle: oklch(0.18 0.03 251); --error: oklch(0.75 0.15 25); } }
* { box-sizing: border-box; }
body { margin: 0; padding: 12px 16px; background: var(--bg); color: var(--fg); font: 14px/1.45 Inter,
  -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; }
h1 { font-size: 18px; margin: 0 0 2px; font-weight: 600; }
header p { margin: 2px 0; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.mono, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.summary-line { margin: 8px 0 !important; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px; border-bottom: 1px solid var(--border); }
table.deliveries > thead th { position: sticky; top: 0; background: var(--subtle); font-weight: 600;
  white-space: nowrap; z-index: 1; }
tbody.delivery:hover > tr.summary { background: var(--subtle); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-weight: 500; min-width: 7rem; max-width: 16rem; overflow-wrap: anywhere; }
td.url { max-width: 12rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td.error { min-width: 6rem; max-width: 18rem; overflow-wrap: anywhere; color: var(--error); }
td time { white-space: nowrap; }
.method { font-weight: 600; }
.badge { display: inline-block; padding: 0 8px; border-radius: 9999px; font-size: 12px; font-weight: 500;
  line-height: 20px; white-space: nowrap; color: #ffffff; }
.badge.success { background: oklch(0.47 0.2 149); }
.badge.failed { background: oklch(0.53 0.21 27); }
.badge.retry { background: oklch(0.6 0.16 70); }
.badge.queued { background: oklch(0.55 0.02 260); }
button { font: inherit; color: inherit; scroll-margin-top: 48px; } /* clear of the sticky header */
.toggle { background: none; border: 0; cursor: pointer; padding: 0 4px; color: var(--muted); }
.toggle[aria-expanded="true"] span[aria-hidden] { display: inline-block; transform: rotate(90deg); }
.btn { background: var(--bg); border: 1px solid var(--border); border-radius: 6px; padding: 2px 10px;
  font-size: 12px; cursor: pointer; white-space: nowrap; }
.btn:hover:not(:disabled) { background: var(--subtle); }
.btn:disabled { opacity: .5; cursor: not-allowed; }
tr.attempts-row > td { background: var(--subtle); }
table.attempts { margin: 4px 0 8px; background: var(--bg); border: 1px solid var(--border); }
table.attempts th { font-size: 12px; font-weight: 600; }
pre.excerpt { margin: 0; max-height: 8rem; max-width: 32rem; overflow: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.notice { padding: 6px 10px; border-radius: 6px; background: var(--subtle); border: 1px solid var(--border); }
.notice.bad { color: var(--error); }
.empty { padding: 24px 0; color: var(--muted); }
ul.endpoints { margin: 4px 0; padding-left: 18px; }
"""

_JS = """
(function () {
  "use strict";
  const script = document.currentScript;
  const csrf = {[script.dataset.csrfHeader]: script.dataset.csrfValue};
  const root = document.documentElement;
  const notice = document.getElementById("notice");

  // Inside the Airflow UI (a same-origin iframe) follow its light/dark mode, unless ?theme= fixed one.
  if (!root.hasAttribute("data-theme")) {
    const follow = function () {
      try {
        const outer = window.parent.document.documentElement;
        if (outer === root) return;
        const mode = outer.classList.contains("dark") ? "dark" : outer.classList.contains("light") ? "light" : "";
        if (mode) root.setAttribute("data-theme", mode); else root.removeAttribute("data-theme");
      } catch (error) { /* not framed by the Airflow UI: prefers-color-scheme decides */ }
    };
    follow();
    try {
      new MutationObserver(follow).observe(window.parent.document.documentElement,
        {attributes: true, attributeFilter: ["class", "style"]});
    } catch (error) { /* see above */ }
  }

  function tell(text, bad) {
    notice.textContent = text;
    notice.classList.toggle("bad", Boolean(bad));
    notice.hidden = false;
  }

  async function fetchText(url, options) {
    const response = await fetch(url, Object.assign({credentials: "same-origin"}, options));
    const text = await response.text();
    if (!response.ok) {
      let detail = text;
      try { detail = JSON.parse(text).detail || text; } catch (error) { /* not JSON */ }
      throw new Error(response.status + ": " + detail);
    }
    return text;
  }

  async function toggle(button) {
    const row = document.getElementById(button.getAttribute("aria-controls"));
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    row.hidden = !open;
    const cell = row.querySelector(".attempts-cell");
    if (open && !cell.dataset.loaded) {
      cell.textContent = "Loading attempts…";
      try {
        cell.innerHTML = await fetchText(button.dataset.attempts);
        cell.dataset.loaded = "1";
      } catch (error) {
        cell.textContent = "Could not load the attempts: " + error.message;
      }
    }
  }

  async function more(button) {
    button.disabled = true;
    try {
      button.parentElement.insertAdjacentHTML("afterend", await fetchText(button.dataset.more));
      button.remove();
    } catch (error) {
      button.disabled = false;
      tell("Could not load older attempts: " + error.message, true);
    }
  }

  async function redeliver(button) {
    const body = button.closest("tbody.delivery");
    button.disabled = true;
    button.textContent = "Sending…";
    try {
      const answer = JSON.parse(await fetchText(button.dataset.redeliver, {method: "POST", headers: csrf}));
      body.insertAdjacentHTML("afterend", answer.html);
      body.remove();
      document.querySelector(".summary-line").innerHTML = answer.summary_html;
      tell(answer.webhook + ": " + answer.summary, !answer.delivered);
    } catch (error) {
      button.disabled = false;
      button.textContent = "Redeliver";
      tell("Redeliver failed: " + error.message, true);
    }
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button");
    if (!target || target.disabled) return;
    if (target.dataset.attempts) toggle(target);
    else if (target.dataset.more) more(target);
    else if (target.dataset.redeliver) redeliver(target);
  });
})();
"""
