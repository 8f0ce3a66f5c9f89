"""Build the exact request of a message: pure code, no network.

:func:`build_message` renders a definition's body and query for one event and merges
its headers over the endpoint's; :func:`assemble` puts a message back together from
what the ledger stored, with the connection as it is now. Signing happens per attempt,
in the sender.

Usage::

    message = build_message(endpoint, webhook, references, delivery_id=row.id)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

from airflow_webhook_provider import __version__
from airflow_webhook_provider.core.definitions import METHODS_WITH_BODY
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition, TemplateError
from airflow_webhook_provider.core.templating import (
    REFERENCES,
    Template,
    check_json_template,
    parse_template,
    render_mode_for,
)

if TYPE_CHECKING:
    from airflow_webhook_provider.core.definitions import FlowWebhook
    from airflow_webhook_provider.delivery.endpoints import Endpoint

__all__ = [
    "DEFAULT_BODY_TEMPLATE",
    "USER_AGENT",
    "OutgoingMessage",
    "assemble",
    "build_message",
    "with_query",
]

USER_AGENT = f"airflow-webhook-provider/{__version__}"

#: The body sent when a definition has none: every reference, as one JSON object.
DEFAULT_BODY_TEMPLATE = "{" + ", ".join(f'"{name}": "${name}"' for name in REFERENCES) + "}"


@dataclass(frozen=True)
class OutgoingMessage:
    """One message, ready to sign and send; identical on every attempt.

    :param delivery_id: the stable id sent as ``X-Webhook-Id``.
    :param webhook_name: the definition's name (for logs).
    :param method: the HTTP method.
    :param url: the URL, query included.
    :param headers: the headers, without signature and delivery id.
    :param body: the exact body bytes, or None.
    :param query: the query string appended to the endpoint's URL (to rebuild the URL later).
    :param own_headers: the headers that did not come from the connection (to send the
        message again without storing the connection's header values).
    """

    delivery_id: str
    webhook_name: str
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)
    query: str = ""
    own_headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def _merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def with_query(url: str, query: str) -> str:
    """Append an encoded query string to a URL that may already have one."""
    if not query:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def assemble(
    endpoint: Endpoint,
    *,
    delivery_id: str,
    webhook_name: str,
    method: str,
    own_headers: Mapping[str, str],
    body: bytes | None,
    query: str = "",
) -> OutgoingMessage:
    """Put a message together from its own parts and the endpoint's current settings.

    Used for first sends and for later attempts alike, so both send the same bytes with
    the connection's headers as they are now.
    """
    return OutgoingMessage(
        delivery_id=delivery_id,
        webhook_name=webhook_name,
        method=method,
        url=with_query(endpoint.url, query),
        headers=_merge_headers({"User-Agent": USER_AGENT}, endpoint.headers, own_headers),
        body=body,
        query=query,
        own_headers=dict(own_headers),
    )


def build_message(
    endpoint: Endpoint,
    webhook: FlowWebhook | None,
    references: Mapping[str, str],
    *,
    delivery_id: str,
) -> OutgoingMessage:
    """Build the exact request of one message.

    Without a definition (a test message), or with a definition without a body, the body
    is a JSON object holding every reference.

    :param endpoint: the receiver.
    :param webhook: the definition, or None for a test message.
    :param references: the value of every reference (``jobId``, ``deliveryId``, ...).
    :param delivery_id: the delivery id.
    :return: the message, the same on every attempt.
    :raises InvalidWebhookDefinition: when the definition and the connection disagree
        (a body with a GET/DELETE connection method, a JSON Content-Type on a non-JSON body).
    """
    name = webhook.name if webhook is not None else "test"
    method = ((webhook.method if webhook is not None else None) or endpoint.method or "POST").upper()
    own_headers = dict(webhook.headers) if webhook is not None else {}
    template = webhook.body_template if webhook is not None else None

    body: bytes | None = None
    if method in METHODS_WITH_BODY:
        if template is None:
            template = _default_body_template()
        content_type = _header(own_headers, "Content-Type") or _header(endpoint.headers, "Content-Type")
        if content_type is None:
            content_type = _infer_content_type(template)
            own_headers["Content-Type"] = content_type
        mode = render_mode_for(content_type)
        if mode == "json" and template.source != DEFAULT_BODY_TEMPLATE:
            try:
                _check_json_once(template)
            except TemplateError as exc:
                raise InvalidWebhookDefinition(
                    f"flow webhook {name!r}: field 'body': {exc} (Content-Type {content_type!r} comes from "
                    f"connection {endpoint.name!r})",
                    webhook=name,
                    field="body",
                ) from None
        body = template.render(references, mode=mode).encode("utf-8")
    elif webhook is not None and webhook.body is not None:
        raise InvalidWebhookDefinition(
            f"flow webhook {name!r}: field 'body': connection {endpoint.name!r} sends {method}, which "
            'carries no body; set method="POST" on the webhook or remove its body',
            webhook=name,
            field="body",
        )

    query = urlencode(
        [
            (key, template_.render(references, mode="text"))
            for key, template_ in (webhook.query_templates.items() if webhook is not None else ())
        ]
    )
    return assemble(
        endpoint,
        delivery_id=delivery_id,
        webhook_name=name,
        method=method,
        own_headers=own_headers,
        body=body,
        query=query,
    )


@functools.lru_cache(maxsize=1024)
def _check_json_once(template: Template) -> None:
    # Every message of a webhook has the same template: check it once (a failure is not cached).
    check_json_template(template)


@functools.cache
def _default_body_template() -> Template:
    return parse_template(DEFAULT_BODY_TEMPLATE)


def _infer_content_type(template: Template) -> str:
    try:
        check_json_template(template)
    except TemplateError:
        return "text/plain; charset=utf-8"
    return "application/json"
