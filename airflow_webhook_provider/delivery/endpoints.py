"""Where a message goes: the ``flow_webhook`` connection, parsed into an :class:`Endpoint`.

The connection's Host is the full URL and its Password the secret key; every other
setting is an extra, described once by :class:`ConnectionExtras`. The same model parses
a connection and gives the connection form its fields (``conn-fields`` in the provider
info), so the form and the parser cannot drift apart.

Usage::

    endpoint = resolve_endpoint("slack_webhook", settings)   # reads the Airflow connection
    endpoint.key                                              # "slack_webhook": its health row
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_webhook_provider.core.egress import EgressPolicy
from airflow_webhook_provider.core.exceptions import InvalidConnection
from airflow_webhook_provider.core.identity import endpoint_key
from airflow_webhook_provider.core.redaction import sensitive_query_values
from airflow_webhook_provider.core.signing import standard_key

if TYPE_CHECKING:
    from airflow_webhook_provider.config import Settings

__all__ = [
    "ConnectionExtras",
    "Endpoint",
    "connection_problem",
    "endpoint_from_connection",
    "resolve_endpoint",
    "url_endpoint",
]

SignatureScheme = Literal["webhook", "standard", "both"]
Method = Literal["POST", "PUT", "PATCH", "GET", "DELETE"]
_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _extra(label: str, schema: dict[str, Any], description: str, **field: Any) -> Any:
    """Return the field of a connection extra, with its form label, help text and form schema."""
    return Field(title=label, description=description, json_schema_extra={"form_schema": schema}, **field)


class ConnectionExtras(BaseModel):
    """The extras of a ``flow_webhook`` connection: transport settings of one receiver.

    Each field's title and description are the connection form's label and help text.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    method: Method = _extra(
        "Method",
        {
            "type": ["string", "null"],
            "default": "POST",
            "enum": ["POST", "PUT", "PATCH", "GET", "DELETE"],
        },
        "HTTP method. A body is sent only with POST, PUT or PATCH.",
        default="POST",
    )
    headers: dict[str, str] = _extra(
        "Headers",
        {"type": ["string", "null"]},
        'JSON object of HTTP headers, e.g. {"Content-Type": "application/json", '
        '"Authorization": "Bearer <token>"}. Values are never logged.',
        default_factory=dict,
    )
    validate_ssl: bool = _extra(
        "Validate SSL certificate",
        {"type": ["boolean", "null"], "default": True},
        "Verify the receiver's HTTPS certificate. Turn off only for a receiver with an expired or "
        "self-signed certificate.",
        default=True,
    )
    ca_bundle: str | None = _extra(
        "CA bundle path",
        {"type": ["string", "null"]},
        "Optional path to a PEM CA bundle to verify the receiver against, instead of the system's "
        "trusted CAs.",
        default=None,
    )
    client_cert: str | None = _extra(
        "Client certificate path",
        {"type": ["string", "null"]},
        "Optional PEM client certificate for receivers that require mutual TLS.",
        default=None,
    )
    client_key: str | None = _extra(
        "Client key path",
        {"type": ["string", "null"]},
        "The client certificate's private key, if not in the certificate file.",
        default=None,
    )
    signature_scheme: SignatureScheme = _extra(
        "Signature scheme",
        {"type": ["string", "null"], "default": "webhook", "enum": ["webhook", "standard", "both"]},
        "webhook: X-Webhook-Signature. standard: Standard Webhooks headers (webhook-id, "
        "webhook-timestamp, webhook-signature); the secret key is whsec_ + base64. both: all of them.",
        default="webhook",
    )
    previous_secret: str | None = _extra(
        "Previous secret key",
        {"type": ["string", "null"], "format": "password"},
        "During key rotation: the old key; requests carry a signature for it too until Previous "
        "secret expires.",
        default=None,
        repr=False,
    )
    previous_secret_expires: datetime | None = _extra(
        "Previous secret expires",
        {"type": ["string", "null"]},
        "ISO 8601 time after which the previous key is no longer used, e.g. 2026-12-31T00:00:00+00:00.",
        default=None,
    )
    retry_on_failure: bool = _extra(
        "Retry on failure",
        {"type": ["boolean", "null"], "default": True},
        "Retry when the receiver answers outside 200-299, refuses the connection or times out.",
        default=True,
    )
    max_concurrency: int = _extra(
        "Most requests at once",
        {"type": ["integer", "null"], "default": 10, "minimum": 1, "maximum": 1000},
        "The most requests every sender of the ledger together has in flight to this receiver.",
        default=10,
    )
    rate_limit_per_minute: int | None = _extra(
        "Rate limit per minute",
        {"type": ["integer", "null"], "minimum": 1},
        "Optional: the most requests per minute to this receiver, over every sender of the ledger.",
        default=None,
    )
    timeout: float = _extra(
        "Timeout seconds",
        {"type": ["number", "null"], "default": 30},
        "Per-request timeout in seconds.",
        default=30.0,
    )

    @field_validator("ca_bundle", "client_cert", "client_key", "previous_secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # The form stores a field it never filled in as null or "".
        return None if value == "" else value

    @field_validator("method", mode="before")
    @classmethod
    def _check_method(cls, value: Any) -> Any:
        if value is None or value == "":
            return "POST"
        method = str(value).upper()
        if method not in _METHODS:
            raise ValueError(f"must be one of {', '.join(_METHODS)}")
        return method

    @field_validator("signature_scheme", mode="before")
    @classmethod
    def _check_scheme(cls, value: Any) -> Any:
        if value is None or value == "":
            return "webhook"
        if value not in ("webhook", "standard", "both"):
            raise ValueError("must be one of webhook, standard, both")
        return value

    @field_validator("validate_ssl", "retry_on_failure", mode="before")
    @classmethod
    def _check_bool(cls, value: Any) -> Any:
        if value is None or value == "":
            return True
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("must be true or false")

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: Any) -> Any:
        if value is None or value == "":
            return 30.0
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not 0 < seconds <= 600:
            raise ValueError("must be a number of seconds between 0 and 600")
        return seconds

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _check_concurrency(cls, value: Any) -> Any:
        if value is None or value == "":
            return 10
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if not 1 <= count <= 1000 or float(value) != count:
            raise ValueError("must be a whole number of requests from 1 to 1000")
        return count

    @field_validator("rate_limit_per_minute", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            rate = int(value)
        except (TypeError, ValueError):
            rate = 0
        if rate < 1 or float(value) != rate:
            raise ValueError(
                "must be a whole number of requests per minute, at least 1; leave it empty for no limit"
            )
        return rate

    @field_validator("headers", mode="before")
    @classmethod
    def _check_headers(cls, value: Any) -> Any:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                # The text may hold a token: report where, never what.
                raise ValueError(
                    f"is not valid JSON ({exc.msg} at column {exc.colno}); write a JSON object such as "
                    '{"Content-Type": "application/json"}'
                ) from None
        if not isinstance(value, Mapping):
            raise ValueError("must be a JSON object of header names to values")
        for name, header_value in value.items():
            if not isinstance(header_value, str):
                raise ValueError(
                    f"has header {str(name)[:60]!r} without a string value; give it a string value"
                )
            if any(c in header_value or c in str(name) for c in "\r\n\x00"):
                raise ValueError(f"has header {str(name)[:60]!r} with a CR, LF or NUL character; remove it")
        return {str(name): header_value for name, header_value in value.items()}

    @field_validator("previous_secret_expires", mode="before")
    @classmethod
    def _check_expiry(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(
                "must be an ISO 8601 time such as 2026-12-31T00:00:00+00:00, so the old key stops being used"
            ) from None
        return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)

    @model_validator(mode="after")
    def _rotation_needs_expiry(self) -> ConnectionExtras:
        if self.previous_secret and self.previous_secret_expires is None:
            raise _ExtraProblem(
                "previous_secret_expires",
                "must be an ISO 8601 time such as 2026-12-31T00:00:00+00:00, so the old key stops being used",
            )
        return self

    @classmethod
    def parse(cls, conn_id: str, extra: Mapping[str, Any]) -> ConnectionExtras:
        """Parse a connection's extras.

        :raises InvalidConnection: naming the connection, the extra and the fix, never its value.
        """
        try:
            return cls.model_validate(dict(extra))
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            cause = (error.get("ctx") or {}).get("error")
            key = (
                cause.field
                if isinstance(cause, _ExtraProblem)
                else str(error["loc"][0] if error["loc"] else "extra")
            )
            message = str(cause) if cause is not None else error["msg"]
        raise InvalidConnection(
            f"connection {conn_id!r}: extra {key!r} {message}", conn_id=conn_id, field=key
        )

    @classmethod
    def conn_fields(cls) -> dict[str, Any]:
        """Return the connection form's fields (``conn-fields`` of the provider info)."""
        fields: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            assert isinstance(extra, dict)
            fields[name] = {
                "label": info.title,
                "schema": extra["form_schema"],
                "description": info.description,
            }
        return fields

    def active_previous_secret(self, now: datetime | None = None) -> str | None:
        """Return the key being rotated out until it expires, then None."""
        if not self.previous_secret or self.previous_secret_expires is None:
            return None
        return (
            self.previous_secret
            if (now or datetime.now(timezone.utc)) < self.previous_secret_expires
            else None
        )


class _ExtraProblem(ValueError):
    """A problem found across extras, raised with the extra to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: the transport settings of one receiver.

    :param url: the full http(s) URL.
    :param method: the default HTTP method when a definition does not set one.
    :param headers: headers sent with every message (definition headers override them).
    :param secret: the key that signs each request; no signature header without it.
    :param validate_ssl: verify the receiver's TLS certificate.
    :param ca_bundle: a CA bundle file to verify against instead of the system store.
    :param retry_on_failure: retry non-2xx answers, connection errors and timeouts.
    :param timeout: the per-request timeout in seconds; also the whole-request deadline.
    :param name: what logs call the endpoint (a connection id, or "url").
    :param key: the endpoint's health key (see :func:`endpoint_key`).
    :param egress: the administrator's egress policy; everything is allowed when omitted.
    :param proxy: an explicit proxy URL (``[flow_webhook] proxy``); empty: the environment decides.
    :param client_cert: a client certificate file (PEM) for mutual TLS.
    :param client_key: the client certificate's key file, if not inside ``client_cert``.
    :param previous_secret: a key being rotated out; requests carry a signature for it too.
    :param signature_scheme: ``webhook`` (``X-Webhook-Signature``), ``standard`` (Standard
        Webhooks headers; the secret is ``whsec_`` + base64) or ``both``.
    :param max_concurrency: the most requests every sender of the ledger together has in flight.
    :param rate_limit_per_minute: the most requests per minute over every sender, or None.
    """

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret: str | None = field(default=None, repr=False)
    validate_ssl: bool = True
    ca_bundle: str | None = None
    retry_on_failure: bool = True
    timeout: float = 30.0
    name: str = "url"
    key: str = ""
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    proxy: str = ""
    client_cert: str | None = None
    client_key: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    signature_scheme: SignatureScheme = "webhook"
    max_concurrency: int = 10
    rate_limit_per_minute: int | None = None

    @property
    def cert(self) -> str | tuple[str, str] | None:
        """The ``cert`` argument for requests."""
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return self.client_cert

    @property
    def verify(self) -> bool | str:
        """The ``verify`` argument for requests."""
        if not self.validate_ssl:
            return False
        return self.ca_bundle or True


def _check_url(conn_id: str, url: str) -> None:
    if "://" not in url:
        raise InvalidConnection(
            f"connection {conn_id!r}: URL (Host) must be a full http:// or https:// URL, got {url[:80]!r}",
            conn_id=conn_id,
            field="host",
        )
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidConnection(
            f"connection {conn_id!r}: URL (Host) must use http:// or https://", conn_id=conn_id, field="host"
        )


def _mask(*secrets: str | None) -> None:
    """Register values with Airflow's secrets masker, so no log line can show them."""
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        if secret:
            mask_secret(secret)


def endpoint_from_connection(conn: Any, settings: Settings) -> Endpoint:
    """Build the endpoint of a ``flow_webhook`` connection, masking its secrets in Airflow's logs.

    :param conn: an Airflow connection (``conn_id``, ``host``, ``password``, ``extra_dejson``).
    :param settings: the egress policy and proxy to send under.
    :raises InvalidConnection: naming the connection, the field and the fix.
    """
    conn_id = str(conn.conn_id)
    url = (conn.host or "").strip()
    _check_url(conn_id, url)
    extras = ConnectionExtras.parse(conn_id, conn.extra_dejson)
    previous_secret = extras.active_previous_secret()
    if extras.signature_scheme != "webhook" and conn.password:
        for label, key in (("Secret key", conn.password), ("previous_secret", previous_secret)):
            try:
                if key:
                    standard_key(key)
            except ValueError as exc:
                raise InvalidConnection(
                    f"connection {conn_id!r}: {label}: {exc} (signature_scheme {extras.signature_scheme!r})",
                    conn_id=conn_id,
                    field="password" if label == "Secret key" else "previous_secret",
                ) from None
    _mask(conn.password, previous_secret, *extras.headers.values(), *sensitive_query_values(url))
    return Endpoint(
        url=url,
        method=extras.method,
        headers=extras.headers,
        secret=conn.password or None,
        validate_ssl=extras.validate_ssl,
        ca_bundle=extras.ca_bundle,
        retry_on_failure=extras.retry_on_failure,
        timeout=extras.timeout,
        name=conn_id,
        key=endpoint_key(conn_id, None),
        egress=settings.egress,
        proxy=settings.proxy,
        client_cert=extras.client_cert,
        client_key=extras.client_key,
        previous_secret=previous_secret,
        signature_scheme=extras.signature_scheme,
        max_concurrency=extras.max_concurrency,
        rate_limit_per_minute=extras.rate_limit_per_minute,
    )


def resolve_endpoint(conn_id: str, settings: Settings) -> Endpoint:
    """Read a ``flow_webhook`` connection from Airflow (its secrets backends included) into an endpoint.

    :raises InvalidConnection: when the connection is wrong.
    :raises AirflowNotFoundException: when there is no such connection.
    """
    from airflow.sdk import BaseHook

    return endpoint_from_connection(BaseHook.get_connection(conn_id), settings)


def url_endpoint(url: str, settings: Settings) -> Endpoint:
    """Return the endpoint of a ``url=`` webhook: unsigned, with the default transport settings."""
    return Endpoint(
        url=url, name="url", key=endpoint_key(None, url), egress=settings.egress, proxy=settings.proxy
    )


def connection_problem(conn_id: str, settings: Settings) -> str | None:
    """Return what is wrong with a ``flow_webhook`` connection (missing, another type, misconfigured), or None.

    The answer names the connection and the fix, never a secret.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return f"there is no connection {conn_id!r}; create a Flow Webhook connection of that id in Admin → Connections"
    if conn.conn_type != "flow_webhook":
        return f"connection {conn_id!r} is of type {conn.conn_type!r}; pick a Flow Webhook (flow_webhook) connection"
    try:
        endpoint_from_connection(conn, settings)
    except InvalidConnection as exc:
        return str(exc)
    return None
