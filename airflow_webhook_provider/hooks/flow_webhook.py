"""The ``flow_webhook`` connection type and the hook that sends through it."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_webhook_provider.delivery import (
    DeliveryResult,
    Endpoint,
    OutgoingMessage,
    RetryPolicy,
    build_message,
    shared_sender,
)
from airflow_webhook_provider.egress import DEFAULT_FORBIDDEN_NETWORKS, EgressPolicy
from airflow_webhook_provider.exceptions import FlowWebhookError, InvalidConnection
from airflow_webhook_provider.models import JobEvent
from airflow_webhook_provider.redaction import sensitive_query_values
from airflow_webhook_provider.signing import standard_key

if TYPE_CHECKING:
    import requests

    from airflow_webhook_provider.models import FlowWebhook

__all__ = ["FlowWebhookHook", "egress_policy_from_config", "retry_policy_from_config"]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_SCHEMES = ("webhook", "standard", "both")
_TEST_EVENT = JobEvent(flow_id="test", job_id="test", job_status="test")


def egress_policy_from_config() -> EgressPolicy:
    """Return the egress policy from ``[flow_webhook]`` in Airflow's config.

    :raises ValueError: naming the option, when one is malformed.
    """
    from airflow.sdk.configuration import conf

    return _parsed_policy(
        conf.get("flow_webhook", "allowed_url_regexes", fallback="") or "",
        conf.get("flow_webhook", "forbidden_networks", fallback=DEFAULT_FORBIDDEN_NETWORKS) or "",
    )


@functools.lru_cache(maxsize=8)
def _parsed_policy(allowed_url_regexes: str, forbidden_networks: str) -> EgressPolicy:
    # Every endpoint asks for the policy; the option strings rarely change, so parse once.
    return EgressPolicy.parse(allowed_url_regexes=allowed_url_regexes, forbidden_networks=forbidden_networks)


def retry_policy_from_config() -> RetryPolicy:
    """Return the inline retry policy from ``[flow_webhook]`` in Airflow's config."""
    from airflow.sdk.configuration import conf

    defaults = RetryPolicy()
    return RetryPolicy(
        max_attempts=conf.getint("flow_webhook", "retry_max_attempts", fallback=defaults.max_attempts),
        backoff_seconds=conf.getfloat(
            "flow_webhook", "retry_backoff_seconds", fallback=defaults.backoff_seconds
        ),
        budget_seconds=conf.getfloat(
            "flow_webhook", "retry_budget_seconds", fallback=defaults.budget_seconds
        ),
    )


def _as_bool(conn_id: str, key: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise InvalidConnection(
        f"connection {conn_id!r}: extra {key!r} must be true or false", conn_id=conn_id, field=key
    )


def _as_headers(conn_id: str, value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            # The text may hold a token: report where, never what.
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'headers' is not valid JSON ({exc.msg} at column {exc.colno}); "
                'write a JSON object such as {"Content-Type": "application/json"}',
                conn_id=conn_id,
                field="headers",
            ) from None
    if not isinstance(value, Mapping):
        raise InvalidConnection(
            f"connection {conn_id!r}: extra 'headers' must be a JSON object of header names to values",
            conn_id=conn_id,
            field="headers",
        )
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(header_value, str):
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'headers': header {name!r} must have a string value",
                conn_id=conn_id,
                field="headers",
            )
        if any(c in header_value or c in str(name) for c in "\r\n\x00"):
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'headers': header {name!r} has a CR, LF or NUL character; remove it",
                conn_id=conn_id,
                field="headers",
            )
        headers[str(name)] = header_value
    return headers


def _previous_secret(conn_id: str, extra: dict[str, Any]) -> str | None:
    """Return the key being rotated out, until its expiry; None after it or without one."""
    secret = extra.get("previous_secret") or None
    if secret is None:
        return None
    expires = extra.get("previous_secret_expires")
    try:
        when = datetime.fromisoformat(str(expires))
    except ValueError:
        raise InvalidConnection(
            f"connection {conn_id!r}: extra 'previous_secret_expires' must be an ISO 8601 time such as "
            "2026-12-31T00:00:00+00:00, so the old key stops being used",
            conn_id=conn_id,
            field="previous_secret_expires",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return str(secret) if datetime.now(timezone.utc) < when else None


def _mask(*secrets: str | None) -> None:
    """Register values with Airflow's secrets masker, so no log line can show them."""
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        if secret:
            mask_secret(secret)


class FlowWebhookHook(BaseHook):
    """Send flow webhooks to the receiver described by a ``flow_webhook`` connection.

    The connection's Host is the full URL, its Password the secret key that signs each
    request; extras ``method``, ``headers`` (JSON object), ``validate_ssl``, ``ca_bundle``,
    ``client_cert``, ``client_key``, ``retry_on_failure`` and ``timeout`` set the transport.
    The secret and every header value are registered with Airflow's secrets masker.

    Usage::

        hook = FlowWebhookHook(flow_webhook_conn_id="slack_webhook")
        result = hook.deliver(webhook, JobEvent(flow_id="etl", job_id=run_id, job_status="failed"))
        ok, message = hook.test_connection()

    :param flow_webhook_conn_id: the connection id.
    :param retry_policy: inline retry limits; from ``[flow_webhook]`` config when omitted.
    """

    conn_name_attr = "flow_webhook_conn_id"
    default_conn_name = "flow_webhook_default"
    conn_type = "flow_webhook"
    hook_name = "Flow Webhook"

    def __init__(
        self,
        flow_webhook_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.flow_webhook_conn_id = flow_webhook_conn_id
        self._retry_policy = retry_policy

    @cached_property
    def endpoint(self) -> Endpoint:
        """The receiver's transport settings, read from the connection.

        :raises InvalidConnection: naming the connection, the field and the fix.
        """
        conn_id = self.flow_webhook_conn_id
        conn = self.get_connection(conn_id)
        url = (conn.host or "").strip()
        if "://" not in url:
            raise InvalidConnection(
                f"connection {conn_id!r}: URL (Host) must be a full http:// or https:// URL, "
                f"got {url[:80]!r}",
                conn_id=conn_id,
                field="host",
            )
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidConnection(
                f"connection {conn_id!r}: URL (Host) must use http:// or https://",
                conn_id=conn_id,
                field="host",
            )
        extra = conn.extra_dejson
        method = str(extra.get("method") or "POST").upper()
        if method not in _METHODS:
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'method' must be one of {', '.join(_METHODS)}",
                conn_id=conn_id,
                field="method",
            )
        timeout_value = extra.get("timeout")
        try:
            timeout = 30.0 if timeout_value in (None, "") else float(timeout_value)
        except (TypeError, ValueError):
            timeout = -1.0
        if not 0 < timeout <= 600:
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'timeout' must be a number of seconds between 0 and 600",
                conn_id=conn_id,
                field="timeout",
            )
        headers = _as_headers(conn_id, extra.get("headers"))
        previous_secret = _previous_secret(conn_id, extra)
        scheme = str(extra.get("signature_scheme") or "webhook")
        if scheme not in _SCHEMES:
            raise InvalidConnection(
                f"connection {conn_id!r}: extra 'signature_scheme' must be one of {', '.join(_SCHEMES)}",
                conn_id=conn_id,
                field="signature_scheme",
            )
        if scheme != "webhook" and conn.password:
            for label, key in (("Secret key", conn.password), ("previous_secret", previous_secret)):
                try:
                    if key:
                        standard_key(key)
                except ValueError as exc:
                    raise InvalidConnection(
                        f"connection {conn_id!r}: {label}: {exc} (signature_scheme {scheme!r})",
                        conn_id=conn_id,
                        field="password" if label == "Secret key" else "previous_secret",
                    ) from None
        _mask(conn.password, previous_secret, *headers.values(), *sensitive_query_values(url))
        return Endpoint(
            url=url,
            method=method,
            headers=headers,
            secret=conn.password or None,
            validate_ssl=_as_bool(conn_id, "validate_ssl", extra.get("validate_ssl"), True),
            ca_bundle=extra.get("ca_bundle") or None,
            retry_on_failure=_as_bool(conn_id, "retry_on_failure", extra.get("retry_on_failure"), True),
            timeout=timeout,
            name=conn_id,
            egress=egress_policy_from_config(),
            client_cert=extra.get("client_cert") or None,
            client_key=extra.get("client_key") or None,
            previous_secret=previous_secret,
            signature_scheme=scheme,  # type: ignore[arg-type]  # checked against _SCHEMES above
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        """Inline retry limits."""
        if self._retry_policy is None:
            self._retry_policy = retry_policy_from_config()
        return self._retry_policy

    def get_conn(self) -> requests.Session:
        """Return the pooled HTTP session shared by every webhook in this process."""
        return shared_sender().session

    def build(
        self, webhook: FlowWebhook | None, event: JobEvent, *, delivery_id: str | None = None
    ) -> OutgoingMessage:
        """Build the message for an event without sending it.

        :param webhook: the definition, or None for the test message.
        :param event: what happened.
        :param delivery_id: the delivery id; a new one when omitted.
        """
        return build_message(self.endpoint, webhook, event, delivery_id=delivery_id)

    def send(self, message: OutgoingMessage) -> DeliveryResult:
        """Sign and send a built message, retrying as the connection allows.

        :param message: the message from :meth:`build`.
        :return: the outcome; a failing receiver does not raise.
        """
        return shared_sender().send(self.endpoint, message, self.retry_policy)

    def deliver(
        self, webhook: FlowWebhook | None, event: JobEvent, *, delivery_id: str | None = None
    ) -> DeliveryResult:
        """Build, sign and send one message.

        :param webhook: the definition, or None for the test message.
        :param event: what happened.
        :param delivery_id: the delivery id; a new one when omitted.
        :return: the outcome; a failing receiver does not raise.
        :raises FlowWebhookError: when the connection or definition cannot make a message.
        """
        return self.send(self.build(webhook, event, delivery_id=delivery_id))

    def test_connection(self) -> tuple[bool, str]:
        """Send one signed test message (``$jobId`` and ``$jobStatus`` are ``test``), without retries.

        :return: ``(True, message)`` when the receiver answered 2xx, else ``(False, reason)``.
        """
        try:
            endpoint = self.endpoint
            message = build_message(endpoint, None, _TEST_EVENT)
        except FlowWebhookError as exc:
            return False, str(exc)
        single = RetryPolicy(max_attempts=1, budget_seconds=endpoint.timeout)
        result = shared_sender().send(endpoint, message, single)
        signed = "signed" if endpoint.secret else "unsigned (no secret key)"
        attempt = result.attempts[-1]
        if result.delivered:
            return True, (
                f"Receiver answered HTTP {attempt.status_code} in {attempt.duration_seconds * 1000:.0f} ms "
                f"to a {signed} {message.method} test message"
            )
        if attempt.status_code is not None:
            excerpt = attempt.response_excerpt[:120].strip()
            return False, f"Receiver answered HTTP {attempt.status_code}" + (
                f": {excerpt}" if excerpt else ""
            )
        return False, f"Could not reach the receiver: {attempt.error}"
