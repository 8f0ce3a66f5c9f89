"""Redact what may carry credentials from URLs before they are stored or shown.

Pure; imports nothing from Airflow.
"""

from __future__ import annotations

import functools
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SENSITIVE_QUERY_KEYS", "redact_url", "sensitive_query_values"]

#: Query parameters whose values never reach the ledger or the UI.
SENSITIVE_QUERY_KEYS = (
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "sig",
    "signature",
    "auth",
    "code",
    "credential",
)


@functools.lru_cache(maxsize=1024)
def redact_url(url: str) -> str:
    """Return ``url`` without user info, and with the values of sensitive query parameters masked.

    :param url: a full URL.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    query = [
        (key, "***" if any(word in key.lower() for word in SENSITIVE_QUERY_KEYS) else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def sensitive_query_values(url: str) -> list[str]:
    """Return the values of query parameters that look like credentials (``?token=...``)."""
    return [
        value
        for key, value in parse_qsl(urlsplit(url).query)
        if any(word in key.lower() for word in SENSITIVE_QUERY_KEYS)
    ]
