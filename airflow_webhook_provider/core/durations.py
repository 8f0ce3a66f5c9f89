"""Read the durations and times operators type: ``90m``, ``6h``, ``2d``, ``1w``, or an ISO 8601 time."""

from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["parse_duration", "parse_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Return a duration such as ``30d`` or ``90m`` in seconds.

    :raises ValueError: saying how to write one.
    """
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit: 90m, 6h, 2d, 1w (or 30s)")
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


def parse_time(text: str, *, now: float) -> float:
    """Return a point in time as UNIX seconds: a duration ago (``6h``), or an ISO 8601 time (UTC unless it says).

    :raises ValueError: saying how to write one.
    """
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90m, 6h, 2d) nor an ISO 8601 time (2026-11-30T08:00, UTC by default)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
