"""The Jinja2 environment of the provider's pages, and the filters their templates share.

Templates live in ``templates/`` (a layout, ``base.html``, that pages extend, and partials
whose names start with ``_``); the stylesheet and scripts they link to live in ``static/``
(:data:`STATIC_DIR`), which the tab's app serves at ``/static``.

Autoescape is on, and every value a template prints is escaped with :func:`html.escape`
(``finalize``), so what DAG authors and receivers control (webhook names, URLs, errors,
response excerpts, run ids) is text, never markup. Filters that return markup build it
from escaped values only. An undefined name is an error, not an empty string.

The markup has no white space between elements (a cell's text and a summary line's spaces
are their own), so a template line that starts with ``{#- #}`` continues the line before it.

Filters:

* ``when``: a UTC ``<time>`` element; only the time of day when it falls on the day of ``same_day_as``;
* ``duration``: seconds in ms, s or min;
* ``clipped``: text cut to ``limit`` characters, the whole of it (up to 2000) in the tooltip;
* ``excerpt``: a receiver's answer in a ``<pre>``, cut to 1000 characters;
* ``tone``: the badge class of a delivery state.

A missing value (``None``, or empty text for ``clipped`` and ``excerpt``) shows as a muted dash.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

__all__ = ["STATIC_DIR", "environment", "render"]

#: The stylesheet and scripts of the pages (served at ``<app>/static``).
STATIC_DIR = Path(__file__).with_name("static")

#: The characters of an error shown in a table cell.
_ERROR_CHARS = 160
#: The characters of a receiver's answer shown under an attempt.
_EXCERPT_CHARS = 1000
_TOOLTIP_CHARS = 2000
_STATE_TONES = {
    "delivered": "success",
    "pending": "queued",
    "failed": "retry",
    "dead": "failed",
    "held": "queued",
}
_MISSING = Markup('<span class="muted">—</span>')


def _escaped(value: object) -> str:
    return html.escape(str(value), quote=True)


def _finalize(value: object) -> object:
    """Escape what a template prints the way :func:`html.escape` does (``&quot;``, ``&#x27;``)."""
    if hasattr(value, "__html__"):
        return value
    return Markup(_escaped(value))


def when(seconds: float | None, same_day_as: float | None = None) -> Markup:
    """Return a UTC time; only the time of day when it falls on the day of ``same_day_as``."""
    if seconds is None:
        return _MISSING
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    shown = "%Y-%m-%d %H:%M:%S"
    if (
        same_day_as is not None
        and datetime.fromtimestamp(same_day_as, tz=timezone.utc).date() == moment.date()
    ):
        shown = "%H:%M:%S"
    iso = moment.isoformat(timespec="seconds")
    return Markup(f'<time datetime="{iso}" title="{iso}">{moment.strftime(shown)}</time>')


def duration(seconds: float | None) -> Markup:
    """Return a duration in milliseconds, seconds or minutes."""
    if seconds is None:
        return _MISSING
    if seconds < 1:
        return Markup(f"{seconds * 1000:.0f} ms")
    if seconds < 120:
        return Markup(f"{seconds:.2f} s")
    return Markup(f"{seconds / 60:.1f} min")


def clipped(text: str | None, limit: int = _ERROR_CHARS) -> Markup:
    """Return ``text`` escaped, cut to ``limit`` characters; the full text is in the tooltip."""
    if not text:
        return _MISSING
    if len(text) <= limit:
        return Markup(_escaped(text))
    return Markup(f'<span title="{_escaped(text[:_TOOLTIP_CHARS])}">{_escaped(text[:limit])}…</span>')


def excerpt(text: str | None, limit: int = _EXCERPT_CHARS) -> Markup:
    """Return a receiver's answer, escaped and cut to ``limit`` characters, as preformatted text."""
    if not text:
        return _MISSING
    shown = text if len(text) <= limit else text[:limit] + "…"
    return Markup(f'<pre class="excerpt">{_escaped(shown)}</pre>')


def tone(state: str, retrying: bool = True) -> str:
    """Return the badge class of a delivery state; a failed delivery that nothing will retry is ``failed``."""
    if state == "failed" and not retrying:
        return "failed"
    return _STATE_TONES.get(state, "queued")


@cache
def environment() -> Environment:
    """Return the pages' Jinja2 environment, with the filters registered (created once)."""
    env = Environment(
        loader=PackageLoader("airflow_webhook_provider.face.plugins", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(when=when, duration=duration, clipped=clipped, excerpt=excerpt, tone=tone)
    return env


def render(template_name: str, **context: Any) -> str:
    """Return a template of ``templates/`` rendered with ``context``.

    :param template_name: the template's file name, e.g. ``run.html``.
    :param context: the names the template uses; every one of them must be given.
    :return: the markup.
    :raises jinja2.UndefinedError: when the template uses a name that ``context`` lacks.
    """
    return environment().get_template(template_name).render(**context)
