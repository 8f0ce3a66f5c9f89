"""Send messages: the one owner of the HTTP connections.

:class:`WebhookSender` signs every attempt afresh, keeps the delivery id, checks the
egress policy (also behind a proxy, before the request is handed to it), bounds every
attempt in time, and returns a :class:`~airflow_webhook_provider.core.outcome.DeliveryResult`
instead of raising when the receiver fails. It sends with urllib3 over pooled keep-alive
connections (``delivery.transport``): requests' session machinery costs more CPU per
request than the whole rest of a delivery, and a dispatcher sends thousands a second.

Usage::

    result = shared_sender().send(endpoint, message, schedule=RetrySchedule())   # quick retries inline
    result = shared_sender().send(endpoint, message)                              # one attempt
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from urllib3 import Timeout
from urllib3 import exceptions as urllib3_exceptions

from airflow_webhook_provider.core.definitions import METHODS_WITH_BODY
from airflow_webhook_provider.core.egress import EgressBlocked, EgressPolicy
from airflow_webhook_provider.core.outcome import Attempt, DeliveryResult
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.core.signing import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    payload_for,
    sign,
    standard_webhook_headers,
)
from airflow_webhook_provider.delivery.endpoints import Endpoint
from airflow_webhook_provider.delivery.message import OutgoingMessage
from airflow_webhook_provider.delivery.transport import TLS, Pools, attempt_context

__all__ = ["POOL_SIZE", "WebhookSender", "fan_out", "normalized_url", "shared_sender"]

log = logging.getLogger(__name__)

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")

#: Most bytes read from a response; the rest is never downloaded.
MAX_RESPONSE_BYTES = 64 * 1024
#: The longest Retry-After honoured; a receiver cannot push a message past its maximum age.
MAX_RETRY_AFTER_SECONDS = 7 * 24 * 3600.0
#: How much longer than its timeout one attempt may take in all, however the receiver drips.
DEADLINE_GRACE_SECONDS = 0.25
#: Most characters of a response kept in a result.
RESPONSE_EXCERPT_CHARS = 4096
_LOG_EXCERPT_CHARS = 200
#: Concurrent connections kept per receiver host; matches the most webhooks one event can fan out to.
POOL_SIZE = 50


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
#: What a transport error is called in results: stable names, whatever the HTTP library calls it.
_ERROR_NAMES: tuple[tuple[type[BaseException], str], ...] = (
    (urllib3_exceptions.SSLError, "SSLError"),
    (urllib3_exceptions.ProxyError, "ProxyError"),
    (urllib3_exceptions.NewConnectionError, "ConnectionError"),
    (urllib3_exceptions.ConnectTimeoutError, "ConnectTimeout"),
    (urllib3_exceptions.ReadTimeoutError, "ReadTimeout"),
    (urllib3_exceptions.ProtocolError, "ConnectionError"),
    (ConnectionError, "ConnectionError"),
)


def _describe_error(exc: BaseException) -> str:
    """Describe a transport error without the request's path or query, which may carry a token."""
    name = next((label for kind, label in _ERROR_NAMES if isinstance(exc, kind)), type(exc).__name__)
    text = str(exc)
    text = _QUERY_STRING.sub("?***", text.splitlines()[0] if text else "")
    return f"{name}: {text[:200]}" if text else name


def _is_timeout(exc: BaseException) -> bool:
    # urllib3 makes "connection refused" a kind of connect timeout; it is not one.
    return isinstance(exc, urllib3_exceptions.TimeoutError) and not isinstance(
        exc, urllib3_exceptions.NewConnectionError
    )


def check_target_addresses(policy: EgressPolicy, url: str) -> None:
    """Resolve a URL's host here and check every address, as the proxy would reach it.

    Behind a proxy the connection goes to the proxy, so the target is checked before the
    request is handed over. A name that cannot be resolved here cannot be checked, and is refused.

    :raises EgressBlocked: naming the host and the rule.
    """
    if not policy.forbidden_networks:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, 0, socket.SOCK_STREAM)
    except socket.gaierror:
        raise EgressBlocked(
            f"{host} does not resolve here, so it cannot be checked against [flow_webhook] "
            "forbidden_networks before it goes to the proxy; make it resolvable, or clear forbidden_networks "
            "and restrict targets with allowed_url_regexes"
        ) from None
    for *_, sockaddr in infos:
        policy.check_address(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), host=host)


@functools.lru_cache(maxsize=1024)
def normalized_url(url: str) -> str:
    """Return the URL exactly as it goes on the wire: the host in IDNA, the path percent-encoded.

    GET and DELETE are signed over it, so it is computed once, before signing and sending.
    """
    prepared = requests.models.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url or url


class WebhookSender:
    """Send messages through pooled keep-alive connections, signing every attempt.

    :param pools: the connection pools; a fresh set when omitted.
    :param sleep: how to wait between attempts (tests may pass a fake).
    :param clock: a monotonic clock.
    """

    def __init__(
        self,
        pools: Pools | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pools = pools or Pools(maxsize=POOL_SIZE)
        self._sleep = sleep
        self._clock = clock
        self._proxies: dict[tuple[str, str, str], str | None] = {}

    def _proxy(self, url: str, endpoint: Endpoint) -> str | None:
        """Return the proxy a URL goes through: ``[flow_webhook] proxy``, else the environment's (once per host)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, endpoint.proxy)
        if key not in self._proxies:
            if len(self._proxies) > 256:
                self._proxies.clear()
            proxy = endpoint.proxy or requests.utils.get_environ_proxies(url).get(parts.scheme)
            self._proxies[key] = proxy or None
        return self._proxies[key]

    def send(
        self, endpoint: Endpoint, message: OutgoingMessage, *, schedule: RetrySchedule | None = None
    ) -> DeliveryResult:
        """Send a message: one attempt, or quick retries within ``schedule``'s budget.

        :param endpoint: the receiver's transport settings.
        :param message: the message.
        :param schedule: retry in place (quick attempts and waits, within its budget) when
            given and the endpoint retries on failure; one attempt otherwise.
        :return: the outcome; receiver failures never raise.
        """
        retry_in_place = schedule is not None and endpoint.retry_on_failure
        start = self._clock()
        attempts: list[Attempt] = []
        retry_after: float | None = None
        retryable = True
        while True:
            remaining = (schedule.budget_seconds if schedule else endpoint.timeout) - (self._clock() - start)
            attempt, retry_after, retryable = self._attempt(
                endpoint, message, len(attempts) + 1, timeout=min(endpoint.timeout, remaining)
            )
            attempts.append(attempt)
            # A timeout opens the endpoint's circuit at once: trying again in place would hold
            # the caller another timeout for a receiver that is not answering.
            if attempt.succeeded or not retryable or not retry_in_place or attempt.timed_out:
                break
            assert schedule is not None
            wait = schedule.quick_wait(
                attempts_made=len(attempts), elapsed=self._clock() - start, retry_after=retry_after
            )
            if wait is None:
                break
            self._sleep(wait)
        last = attempts[-1]
        result = DeliveryResult(
            delivery_id=message.delivery_id,
            webhook_name=message.webhook_name,
            delivered=last.succeeded,
            attempts=tuple(attempts),
            duration_seconds=self._clock() - start,
            retry_after_seconds=retry_after,
            retryable=retryable,
            receiver_failed=retryable and not last.succeeded,
        )
        level = logging.INFO if result.delivered else logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "Flow webhook %s (delivery %s) to %s %s",
                message.webhook_name,
                message.delivery_id,
                endpoint.name,
                result.summary(),
            )
        if not result.delivered and last.response_excerpt:
            log.warning("Last response began: %s", last.response_excerpt[:_LOG_EXCERPT_CHARS])
        return result

    @staticmethod
    def _signed_headers(endpoint: Endpoint, message: OutgoingMessage, url: str) -> dict[str, str]:
        headers = dict(message.headers)
        headers[DELIVERY_ID_HEADER] = message.delivery_id
        if endpoint.secret:
            previous = (endpoint.previous_secret,) if endpoint.previous_secret else ()
            if endpoint.signature_scheme in ("webhook", "both"):
                payload = payload_for(message.method, body=message.body, url=url)
                headers[SIGNATURE_HEADER] = sign(endpoint.secret, payload, previous_secrets=previous)
            if endpoint.signature_scheme in ("standard", "both"):
                headers.update(
                    standard_webhook_headers(
                        endpoint.secret, message.delivery_id, message.body or b"", previous_secrets=previous
                    )
                )
        return headers

    def _attempt(
        self, endpoint: Endpoint, message: OutgoingMessage, number: int, *, timeout: float
    ) -> tuple[Attempt, float | None, bool]:
        """Make one attempt; return it, the receiver's Retry-After, and whether trying again can help."""
        started_at = time.time()
        began = self._clock()

        def failed(error: str, *, retryable: bool, timed_out: bool = False) -> tuple[Attempt, None, bool]:
            attempt = Attempt(
                number, started_at, self._clock() - began, None, error=error, timed_out=timed_out
            )
            return attempt, None, retryable

        url = normalized_url(message.url)
        proxy = self._proxy(url, endpoint)
        try:
            endpoint.egress.check_url(url)
            if proxy:
                check_target_addresses(endpoint.egress, url)
        except EgressBlocked as exc:
            return failed(f"EgressBlocked: {exc}", retryable=False)
        headers = self._signed_headers(endpoint, message, url)
        body = message.body if message.method in METHODS_WITH_BODY else None
        manager = self.pools.manager(TLS(endpoint.verify, endpoint.cert), proxy)
        timeout = max(timeout, 0.001)
        # A silent receiver trips the read timeout first; the deadline stops one that drips.
        deadline = timeout + DEADLINE_GRACE_SECONDS
        # Behind a proxy the connection goes to the proxy, which the administrator chose; the
        # target itself was checked above.
        with attempt_context(endpoint.egress, deadline, check_addresses=not proxy) as context:
            try:
                response = manager.urlopen(
                    message.method,
                    url,
                    body=body,
                    headers=headers,
                    timeout=Timeout(connect=timeout, read=timeout),
                    retries=False,
                    redirect=False,
                    preload_content=False,
                )
            except EgressBlocked as exc:
                return failed(f"EgressBlocked: {exc}", retryable=False)
            except (urllib3_exceptions.HTTPError, OSError) as exc:
                if context.deadline_hit:
                    return failed(
                        f"DeadlineExceeded: no complete answer within {deadline:.1f} s",
                        retryable=True,
                        timed_out=True,
                    )
                return failed(_describe_error(exc), retryable=True, timed_out=_is_timeout(exc))
            reusable = False
            try:
                raw = response.read(MAX_RESPONSE_BYTES, decode_content=True) or b""
                reusable = response.length_remaining == 0
            except Exception as exc:  # a receiver that answers and then breaks or stalls the stream
                raw = b""
                log.debug("Reading the response failed: %s", _describe_error(exc))
            finally:
                context.finish()  # before the connection returns to the pool
                if not reusable:
                    response.close()  # the rest is not read: the connection cannot carry another request
                response.release_conn()
        excerpt = raw[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"), now=time.time())
        attempt = Attempt(number, started_at, self._clock() - began, response.status, None, excerpt)
        return attempt, retry_after, True


_shared: WebhookSender | None = None
_pool: ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()


def shared_sender() -> WebhookSender:
    """Return the process-wide sender, so every webhook reuses one set of connection pools."""
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
