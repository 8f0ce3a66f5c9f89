"""Sign and verify flow webhook requests.

The header is ``X-Webhook-Signature: t=<unix ms>,sha256=<hex>``, where ``<hex>`` is the
lowercase hex HMAC-SHA256 of ``<unix ms>.<payload>`` keyed with the secret (UTF-8). The
payload is the exact body bytes for POST, PUT and PATCH, and the full request URL as
sent (query string included) for GET and DELETE.

This module imports nothing from Airflow, so a receiver can use it on its own::

    from airflow_webhook_provider.core.signing import verify_signature

    verify_signature(request.headers["X-Webhook-Signature"], request.get_data(), "mySecret")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Sequence

from airflow_webhook_provider.core.exceptions import InvalidSignature

__all__ = [
    "DELIVERY_ID_HEADER",
    "SIGNATURE_HEADER",
    "InvalidSignature",
    "ReplayGuard",
    "compute_signature",
    "payload_for",
    "sign",
    "standard_key",
    "standard_webhook_headers",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Webhook-Signature"
DELIVERY_ID_HEADER = "X-Webhook-Id"
STANDARD_SECRET_PREFIX = "whsec_"
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


def sign(
    secret: bytes | str,
    payload: bytes | str,
    *,
    timestamp_ms: int | None = None,
    previous_secrets: Sequence[bytes | str] = (),
) -> str:
    """Return the ``X-Webhook-Signature`` header value for a payload.

    During key rotation pass the old key(s) as ``previous_secrets``: the header then
    carries one ``sha256=`` per key, the current one first, and a receiver that knows
    either key accepts it.

    :param secret: the shared secret (the connection's Secret key).
    :param payload: the exact body bytes, or the full URL for GET/DELETE.
    :param timestamp_ms: the UNIX time in milliseconds; the current time when omitted.
    :param previous_secrets: keys being rotated out, still signed with until they expire.
    :return: ``t=<timestamp_ms>,sha256=<hex>[,sha256=<hex>...]``.
    """
    if not secret:
        raise ValueError("sign() needs a non-empty secret; send no signature header when there is none")
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    signatures = ",".join(
        f"sha256={compute_signature(key, timestamp_ms, payload)}"
        for key in (secret, *previous_secrets)
        if key
    )
    return f"t={timestamp_ms},{signatures}"


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
    secret: bytes | str | Sequence[bytes | str],
    *,
    tolerance_seconds: float = 300,
    now_ms: int | None = None,
    replay_guard: ReplayGuard | None = None,
    delivery_id: str | None = None,
) -> None:
    """Check an ``X-Webhook-Signature`` header against the received payload.

    The header may carry several ``sha256=`` values (during key rotation); one match is
    enough. Comparison is constant-time.

    :param header: the header value, ``t=<ms>,sha256=<hex>``.
    :param payload: the exact body bytes, or the full URL for GET/DELETE.
    :param secret: the shared secret, or several (a receiver rotating its key).
    :param tolerance_seconds: how far the timestamp may be from now, either way.
    :param now_ms: the current UNIX time in milliseconds; the clock when omitted.
    :param replay_guard: reject a ``delivery_id`` this guard has already accepted.
    :param delivery_id: the ``X-Webhook-Id`` header, required with ``replay_guard``.
    :raises InvalidSignature: when the header is missing or malformed, the timestamp is
        outside the tolerance, no signature matches, or the delivery was seen already.
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
    secrets = [secret] if isinstance(secret, bytes | str) else list(secret)
    # Compare every pair so the time taken does not reveal which one matched.
    matched = False
    for key in secrets:
        expected = compute_signature(key, timestamp, payload)
        for candidate in signatures:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature("signature mismatch: the payload or the secret differs from the sender's")
    if replay_guard is not None:
        if not delivery_id:
            raise InvalidSignature(f"missing {DELIVERY_ID_HEADER} header, needed to detect replays")
        replay_guard.accept(delivery_id, now_ms=now_ms)


class ReplayGuard:
    """Remember accepted delivery ids for the tolerance window, and refuse them a second time.

    A sender retries a delivery with the same id when it got no 2xx, so accept a delivery
    in the guard only once it was processed, or a failed first try blocks its retry::

        guard = ReplayGuard()
        verify_signature(header, body, secret, replay_guard=guard, delivery_id=headers["X-Webhook-Id"])

    Memory stays bounded: ids older than the window are forgotten.

    :param tolerance_seconds: how long an id is remembered; use the verify tolerance.
    """

    def __init__(self, tolerance_seconds: float = 300) -> None:
        self.tolerance_ms = int(tolerance_seconds * 1000)
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def accept(self, delivery_id: str, *, now_ms: int | None = None) -> None:
        """Record ``delivery_id`` as seen.

        :raises InvalidSignature: when it was seen within the window.
        """
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            for old_id, seen_at in list(self._seen.items()):
                if now_ms - seen_at > self.tolerance_ms:
                    del self._seen[old_id]
            if delivery_id in self._seen:
                raise InvalidSignature(f"replayed delivery {delivery_id[:80]}: already accepted")
            self._seen[delivery_id] = now_ms


def standard_webhook_headers(
    secret: str,
    msg_id: str,
    payload: bytes,
    *,
    timestamp_s: int | None = None,
    previous_secrets: Sequence[str] = (),
) -> dict[str, str]:
    """Return the Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

    The key is the base64 part of a ``whsec_...`` secret; the signed content is
    ``<msg_id>.<timestamp_s>.<payload>``; each key gives one ``v1,<base64>`` signature.

    :param secret: a ``whsec_`` + base64 secret.
    :param msg_id: the message id (the delivery id).
    :param payload: the exact body bytes (empty for GET/DELETE).
    :param timestamp_s: UNIX time in seconds; now when omitted.
    :param previous_secrets: keys being rotated out.
    :raises ValueError: for a secret that is not ``whsec_`` + base64.
    """
    if timestamp_s is None:
        timestamp_s = int(time.time())
    content = f"{msg_id}.{timestamp_s}.".encode() + payload
    signatures = " ".join(
        "v1,"
        + base64.b64encode(hmac.new(standard_key(key), content, hashlib.sha256).digest()).decode("ascii")
        for key in (secret, *previous_secrets)
    )
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp_s), "webhook-signature": signatures}


def standard_key(secret: str) -> bytes:
    """Decode a Standard Webhooks secret (``whsec_`` + base64) to its key bytes.

    :raises ValueError: when the secret has another form.
    """
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_ followed by base64")
    try:
        key = base64.b64decode(secret[len(STANDARD_SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("the part of the secret after whsec_ is not valid base64") from None
    if len(key) < 16:
        raise ValueError("a Standard Webhooks key should be at least 16 bytes (24 base64 characters)")
    return key
