"""Sign and verify flow webhook requests.

The header is ``X-Webhook-Signature: t=<unix ms>,sha256=<hex>``, where ``<hex>`` is the
lowercase hex HMAC-SHA256 of ``<unix ms>.<payload>`` keyed with the secret (UTF-8). The
payload is the exact body bytes for POST, PUT and PATCH, and the full request URL as
sent (query string included) for GET and DELETE.

This module imports nothing from Airflow, so a receiver can use it on its own::

    from airflow_webhook_provider.signing import verify_signature

    verify_signature(request.headers["X-Webhook-Signature"], request.get_data(), "mySecret")
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from airflow_webhook_provider.exceptions import InvalidSignature

__all__ = [
    "SIGNATURE_HEADER",
    "InvalidSignature",
    "compute_signature",
    "payload_for",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Webhook-Signature"
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def payload_for(method: str, *, body: bytes | None, url: str) -> bytes:
    """Return the bytes that are signed for a request.

    :param method: the HTTP method.
    :param body: the exact request body (used for POST, PUT and PATCH).
    :param url: the full request URL as sent (used for GET and DELETE).
    :return: the payload to pass to :func:`sign` or :func:`verify_signature`.
    """
    if method.upper() in _METHODS_WITH_BODY:
        return body or b""
    return url.encode("utf-8")


def compute_signature(secret: bytes | str, timestamp_ms: int, payload: bytes | str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``<timestamp_ms>.<payload>``.

    :param secret: the shared secret.
    :param timestamp_ms: the UNIX time in milliseconds carried in the header.
    :param payload: the signed payload (see :func:`payload_for`).
    """
    message = str(timestamp_ms).encode("ascii") + b"." + _as_bytes(payload)
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: bytes | str, payload: bytes | str, *, timestamp_ms: int | None = None) -> str:
    """Return the ``X-Webhook-Signature`` header value for a payload.

    :param secret: the shared secret (the connection's Secret key).
    :param payload: the exact body bytes, or the full URL for GET/DELETE.
    :param timestamp_ms: the UNIX time in milliseconds; the current time when omitted.
    :return: ``t=<timestamp_ms>,sha256=<hex>``.
    """
    if not secret:
        raise ValueError("sign() needs a non-empty secret; send no signature header when there is none")
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    return f"t={timestamp_ms},sha256={compute_signature(secret, timestamp_ms, payload)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise InvalidSignature(f"malformed signature header: part {part.strip()[:40]!r} is not key=value")
        if key == "t":
            if timestamp is not None:
                raise InvalidSignature("malformed signature header: more than one t= timestamp")
            if not (value.isascii() and value.isdigit()) or len(value) > 16:
                raise InvalidSignature("malformed signature header: t= must be UNIX time in milliseconds")
            timestamp = int(value)
        elif key == "sha256":
            if not _HEX_SHA256.fullmatch(value):
                raise InvalidSignature("malformed signature header: sha256= must be 64 hex digits")
            signatures.append(value.lower())
    if timestamp is None:
        raise InvalidSignature("malformed signature header: no t= timestamp")
    if not signatures:
        raise InvalidSignature("malformed signature header: no sha256= signature")
    return timestamp, signatures


def verify_signature(
    header: str | bytes | None,
    payload: bytes | str,
    secret: bytes | str,
    *,
    tolerance_seconds: float = 300,
    now_ms: int | None = None,
) -> None:
    """Check an ``X-Webhook-Signature`` header against the received payload.

    The header may carry several ``sha256=`` values (during key rotation); one match is
    enough. Comparison is constant-time.

    :param header: the header value, ``t=<ms>,sha256=<hex>``.
    :param payload: the exact body bytes, or the full URL for GET/DELETE.
    :param secret: the shared secret.
    :param tolerance_seconds: how far the timestamp may be from now, either way.
    :param now_ms: the current UNIX time in milliseconds; the clock when omitted.
    :raises InvalidSignature: when the header is missing or malformed, the timestamp is
        outside the tolerance, or no signature matches.
    """
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidSignature("malformed signature header: not ASCII") from None
    timestamp, signatures = _parse_header(header)
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    skew_seconds = (now_ms - timestamp) / 1000
    if skew_seconds > tolerance_seconds:
        raise InvalidSignature(
            f"stale signature: timestamp is {skew_seconds:.0f} s old (tolerance {tolerance_seconds:g} s)"
        )
    if -skew_seconds > tolerance_seconds:
        raise InvalidSignature(
            f"signature timestamp is {-skew_seconds:.0f} s in the future (tolerance {tolerance_seconds:g} s)"
        )
    expected = compute_signature(secret, timestamp, payload)
    # Compare against every candidate so the time taken does not reveal which one matched.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature("signature mismatch: the payload or the secret differs from the sender's")
