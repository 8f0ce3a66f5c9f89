"""Build, sign and send flow webhook messages.

Building is pure: :func:`build_message` turns an endpoint, a definition and an event
into the exact request. Sending belongs to one owner of the HTTP session,
:class:`WebhookSender`, which signs every attempt afresh, retries with backoff inside a
time budget, and returns a :class:`DeliveryResult` instead of raising when the receiver
fails. This module imports nothing from Airflow.

Usage::

    endpoint = Endpoint(url="https://hooks.example.com/notify", secret="mySecret")
    message = build_message(endpoint, webhook, event)
    result = shared_sender().send(endpoint, message)
    if not result.delivered:
        ...
"""

from __future__ import annotations

import email.utils
import functools
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from airflow_webhook_provider import __version__
from airflow_webhook_provider.egress import EgressBlocked, EgressPolicy
from airflow_webhook_provider.exceptions import InvalidWebhookDefinition, TemplateError
from airflow_webhook_provider.models import METHODS_WITH_BODY
from airflow_webhook_provider.signing import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    payload_for,
    sign,
    standard_webhook_headers,
)
from airflow_webhook_provider.templating import (
    REFERENCES,
    Template,
    check_json_template,
    parse_template,
    render_mode_for,
)
from airflow_webhook_provider.transport import GuardedAdapter, attempt_context

if TYPE_CHECKING:
    from airflow_webhook_provider.models import FlowWebhook, JobEvent

__all__ = [
    "DELIVERY_ID_HEADER",
    "Attempt",
    "DeliveryResult",
    "Endpoint",
    "OutgoingMessage",
    "RetryPolicy",
    "WebhookSender",
    "build_message",
    "shared_sender",
]

log = logging.getLogger(__name__)

SignatureScheme = Literal["webhook", "standard", "both"]
_Job = TypeVar("_Job")
_Result = TypeVar("_Result")

USER_AGENT = f"airflow-webhook-provider/{__version__}"
#: Most bytes read from a response; the rest is never downloaded.
MAX_RESPONSE_BYTES = 64 * 1024
#: The longest Retry-After honoured; a receiver cannot push a delivery past its maximum age.
MAX_RETRY_AFTER_SECONDS = 7 * 24 * 3600.0
#: How much longer than its timeout one attempt may take in all, however the receiver drips.
DEADLINE_GRACE_SECONDS = 0.25
#: Most characters of a response kept in a result.
RESPONSE_EXCERPT_CHARS = 4096
_LOG_EXCERPT_CHARS = 200
#: Concurrent connections kept per receiver host; matches the most webhooks one event can fan out to.
POOL_SIZE = 50

#: The body sent when a definition has none: every reference, as one JSON object.
DEFAULT_BODY_TEMPLATE = "{" + ", ".join(f'"{name}": "${name}"' for name in REFERENCES) + "}"


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
    :param egress: the administrator's egress policy; everything is allowed when omitted.
    :param client_cert: a client certificate file (PEM) for mutual TLS.
    :param client_key: the client certificate's key file, if not inside ``client_cert``.
    :param previous_secret: a key being rotated out; requests carry a signature for it too.
    :param signature_scheme: ``webhook`` (``X-Webhook-Signature``), ``standard`` (Standard
        Webhooks headers; the secret is ``whsec_`` + base64) or ``both``.
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
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    client_cert: str | None = None
    client_key: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    signature_scheme: SignatureScheme = "webhook"

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


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try inline before leaving a message to redelivery.

    :param max_attempts: most attempts, the first included.
    :param backoff_seconds: the first wait; each later wait doubles, with jitter.
    :param max_backoff_seconds: the longest single wait.
    :param budget_seconds: the most time all attempts and waits may take together.
    """

    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    budget_seconds: float = 30.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait after ``attempt`` (1-based): exponential, with jitter in [50 %, 100 %]."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return ceiling * (rng or random).uniform(0.5, 1.0)


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
    :param own_headers: the headers that did not come from the connection (to replay the
        message without storing the connection's header values).
    """

    delivery_id: str
    webhook_name: str
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)
    query: str = ""
    own_headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Attempt:
    """One try at sending a message.

    :param number: 1 for the first attempt.
    :param started_at: UNIX time in seconds.
    :param duration_seconds: how long the attempt took.
    :param status_code: the HTTP status, or None when no response came.
    :param error: the error class and a short message, or None after a response.
    :param response_excerpt: the start of the response body.
    """

    number: int
    started_at: float
    duration_seconds: float
    status_code: int | None
    error: str | None = None
    response_excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        """True for a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one message.

    :param delivery_id: the message's delivery id.
    :param webhook_name: the definition's name.
    :param delivered: True when the receiver answered 2xx.
    :param attempts: every attempt, in order.
    :param duration_seconds: the time from the first attempt to the end, waits included.
    :param retry_after_seconds: the receiver's last ``Retry-After``, if any.
    :param retryable: False when trying again cannot help (the egress policy forbids it).
    """

    delivery_id: str
    webhook_name: str
    delivered: bool
    attempts: tuple[Attempt, ...]
    duration_seconds: float
    retry_after_seconds: float | None = None
    retryable: bool = True

    @property
    def status_code(self) -> int | None:
        """The HTTP status of the last attempt."""
        return self.attempts[-1].status_code if self.attempts else None

    @property
    def error(self) -> str | None:
        """The last attempt's error, or its HTTP status when it was not 2xx."""
        if not self.attempts or self.delivered:
            return None
        last = self.attempts[-1]
        return last.error or f"HTTP {last.status_code}"

    def summary(self) -> str:
        """One line for logs and the Test button."""
        outcome = "delivered" if self.delivered else "not delivered"
        last = f"HTTP {self.status_code}" if self.status_code is not None else (self.error or "no attempt")
        return f"{outcome}: {last} after {len(self.attempts)} attempt(s) in {self.duration_seconds:.2f} s"


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

    Used for first sends and for replays from the ledger alike, so both send the same
    bytes with the connection's headers as they are now.
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
    event: JobEvent,
    *,
    delivery_id: str | None = None,
) -> OutgoingMessage:
    """Build the exact request for one event.

    Without a definition (the Test button), or with a definition without a body, the body
    is a JSON object holding every reference.

    :param endpoint: the receiver.
    :param webhook: the definition, or None for a test message.
    :param event: what happened.
    :param delivery_id: the delivery id; a new UUID when omitted.
    :return: the message, the same on every attempt.
    :raises InvalidWebhookDefinition: when the definition and the connection disagree
        (a body with a GET/DELETE connection method, a JSON Content-Type on a non-JSON body).
    """
    delivery_id = delivery_id or str(uuid.uuid4())
    name = webhook.name if webhook is not None else "test"
    method = ((webhook.method if webhook is not None else None) or endpoint.method or "POST").upper()
    own_headers = dict(webhook.headers) if webhook is not None else {}
    values = event.references(webhook_name=name, delivery_id=delivery_id)
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
                check_json_template(template)
            except TemplateError as exc:
                raise InvalidWebhookDefinition(
                    f"flow webhook {name!r}: field 'body': {exc} (Content-Type {content_type!r} comes from "
                    f"connection {endpoint.name!r})",
                    webhook=name,
                    field="body",
                ) from None
        body = template.render(values, mode=mode).encode("utf-8")
    elif webhook is not None and webhook.body is not None:
        raise InvalidWebhookDefinition(
            f"flow webhook {name!r}: field 'body': connection {endpoint.name!r} sends {method}, which "
            'carries no body; set method="POST" on the webhook or remove its body',
            webhook=name,
            field="body",
        )

    query = urlencode(
        [
            (key, template_.render(values, mode="text"))
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


@functools.cache
def _default_body_template() -> Template:
    return parse_template(DEFAULT_BODY_TEMPLATE)


def _infer_content_type(template: Template) -> str:
    try:
        check_json_template(template)
    except TemplateError:
        return "text/plain; charset=utf-8"
    return "application/json"


def _retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Read ``Retry-After`` (seconds or an HTTP date), capped at a week; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_SECONDS)


_QUERY_STRING = re.compile(r"\?[^\s'\")]*")


def _describe_error(exc: BaseException) -> str:
    """Describe a transport error without the request's path or query, which may carry a token.

    requests wraps urllib3's ``MaxRetryError`` ("... with url: /path?query"); its
    ``reason`` names only host, port and what went wrong.
    """
    wrapped = exc.args[0] if exc.args else None
    reason = getattr(wrapped, "reason", None)
    text = str(reason if reason is not None else exc)
    text = _QUERY_STRING.sub("?***", text.splitlines()[0] if text else "")
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


class WebhookSender:
    """Send messages through one pooled ``requests.Session``, signing every attempt.

    Usage::

        sender = WebhookSender()
        result = sender.send(endpoint, message, RetryPolicy(max_attempts=3))

    :param session: the session to use; a pooled one is made when omitted.
    :param sleep: how to wait between attempts (tests may pass a fake).
    :param clock: a monotonic clock.
    """

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session or _pooled_session()
        self._sleep = sleep
        self._clock = clock
        self._environments: dict[tuple[str, str, object, object], dict[str, Any]] = {}

    def _environment(self, url: str, endpoint: Endpoint) -> dict[str, Any]:
        """Return proxies, verify and cert for a receiver, reading the environment once per receiver."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, endpoint.verify, endpoint.cert)
        settings = self._environments.get(key)
        if settings is None:
            verify = endpoint.verify
            if verify is True:
                verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            settings = {
                "proxies": requests.utils.get_environ_proxies(url),
                "verify": verify,
                "cert": endpoint.cert,
            }
            if len(self._environments) > 256:
                self._environments.clear()
            self._environments[key] = settings
        return settings

    def send(
        self, endpoint: Endpoint, message: OutgoingMessage, policy: RetryPolicy | None = None
    ) -> DeliveryResult:
        """Send a message, retrying as the endpoint and policy allow.

        :param endpoint: the receiver's transport settings.
        :param message: the message.
        :param policy: retry limits; defaults to :class:`RetryPolicy`.
        :return: the outcome; receiver failures never raise.
        """
        policy = policy or RetryPolicy()
        max_attempts = max(1, policy.max_attempts) if endpoint.retry_on_failure else 1
        start = self._clock()
        attempts: list[Attempt] = []
        retry_after: float | None = None
        retryable = True
        for number in range(1, max_attempts + 1):
            remaining = policy.budget_seconds - (self._clock() - start)
            attempt, retry_after, retryable = self._attempt(
                endpoint, message, number, timeout=min(endpoint.timeout, remaining)
            )
            attempts.append(attempt)
            if attempt.succeeded or not retryable or number == max_attempts:
                break
            wait = max(policy.backoff(number), retry_after or 0.0)
            if (self._clock() - start) + wait >= policy.budget_seconds:
                break
            self._sleep(wait)
        result = DeliveryResult(
            delivery_id=message.delivery_id,
            webhook_name=message.webhook_name,
            delivered=attempts[-1].succeeded,
            attempts=tuple(attempts),
            duration_seconds=self._clock() - start,
            retry_after_seconds=retry_after,
            retryable=retryable,
        )
        level = logging.INFO if result.delivered else logging.WARNING
        log.log(
            level,
            "Flow webhook %s (delivery %s) to %s %s",
            message.webhook_name,
            message.delivery_id,
            endpoint.name,
            result.summary(),
        )
        if not result.delivered and attempts[-1].response_excerpt:
            log.warning("Last response began: %s", attempts[-1].response_excerpt[:_LOG_EXCERPT_CHARS])
        return result

    def _attempt(
        self, endpoint: Endpoint, message: OutgoingMessage, number: int, *, timeout: float
    ) -> tuple[Attempt, float | None, bool]:
        """Make one attempt; return it, the receiver's Retry-After, and whether trying again can help."""
        started_at = time.time()
        began = self._clock()
        try:
            endpoint.egress.check_url(message.url)
        except EgressBlocked as exc:
            return Attempt(number, started_at, 0.0, None, error=f"EgressBlocked: {exc}"), None, False
        request = requests.Request(
            message.method, message.url, headers=dict(message.headers), data=message.body
        )
        prepared = self.session.prepare_request(request)
        prepared.headers[DELIVERY_ID_HEADER] = message.delivery_id
        if endpoint.secret:
            body = prepared.body if isinstance(prepared.body, bytes) else None
            previous = (endpoint.previous_secret,) if endpoint.previous_secret else ()
            if endpoint.signature_scheme in ("webhook", "both"):
                payload = payload_for(message.method, body=body, url=prepared.url or message.url)
                prepared.headers[SIGNATURE_HEADER] = sign(endpoint.secret, payload, previous_secrets=previous)
            if endpoint.signature_scheme in ("standard", "both"):
                prepared.headers.update(
                    standard_webhook_headers(
                        endpoint.secret, message.delivery_id, body or b"", previous_secrets=previous
                    )
                )
        settings = self._environment(prepared.url or message.url, endpoint)
        timeout = max(timeout, 0.001)
        # A silent receiver trips the read timeout first; the deadline stops one that drips.
        deadline = timeout + DEADLINE_GRACE_SECONDS
        with attempt_context(endpoint.egress, deadline) as context:
            try:
                response = self.session.send(
                    prepared,
                    timeout=timeout,
                    allow_redirects=False,
                    verify=settings["verify"],
                    proxies=settings["proxies"],
                    cert=settings["cert"],
                    stream=True,
                )
            except EgressBlocked as exc:
                return (
                    Attempt(number, started_at, self._clock() - began, None, error=f"EgressBlocked: {exc}"),
                    None,
                    False,
                )
            except requests.RequestException as exc:
                error = (
                    f"DeadlineExceeded: no complete answer within {deadline:.1f} s"
                    if context.deadline_hit
                    else _describe_error(exc)
                )
                return Attempt(number, started_at, self._clock() - began, None, error=error), None, True
            try:
                raw = response.raw.read(MAX_RESPONSE_BYTES, decode_content=True) or b""
            except Exception as exc:  # a receiver that answers and then breaks or stalls the stream
                raw = b""
                log.debug("Reading the response failed: %s", _describe_error(exc))
            finally:
                context.finish()  # before the connection returns to the pool
                response.close()
        excerpt = raw[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"), now=time.time())
        attempt = Attempt(number, started_at, self._clock() - began, response.status_code, None, excerpt)
        return attempt, retry_after, True


def _pooled_session() -> requests.Session:
    session = requests.Session()
    # Environment settings are read once per receiver (see WebhookSender._environment), and
    # ~/.netrc credentials must never be sent to a webhook receiver.
    session.trust_env = False
    adapter = GuardedAdapter(pool_connections=16, pool_maxsize=POOL_SIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_shared: WebhookSender | None = None
_pool: ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()


def shared_sender() -> WebhookSender:
    """Return the process-wide sender, so every webhook reuses one connection pool."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WebhookSender()
        return _shared


def fan_out(send: Callable[[_Job], _Result], jobs: Sequence[_Job]) -> list[_Result]:
    """Run ``send`` on every job at once (up to :data:`POOL_SIZE`), in order, on the process's pool.

    The pool's threads outlive one event, so a fan-out does not pay for starting 50 threads.
    """
    global _pool
    if len(jobs) <= 1:
        return [send(job) for job in jobs]
    with _shared_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="flow-webhook")
        pool = _pool
    return list(pool.map(send, jobs))


def _forget_after_fork() -> None:
    # A forked child has neither the parent's pool threads nor a right to its sockets.
    global _shared, _pool, _shared_lock
    _shared, _pool, _shared_lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
