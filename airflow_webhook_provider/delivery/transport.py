"""The HTTP transport under the sender: guarded connections and a whole-request deadline.

Every new connection resolves the host itself, checks each resolved address against the
egress policy, and connects to exactly the address it checked, so nothing can resolve
differently between the check and the connect. Every attempt also runs under a deadline
that closes its socket when it passes: a receiver that drips its answer a byte at a time
cannot hold a delivery longer than the timeout, which per-read timeouts alone allow.

The attempt's policy and deadline travel in a thread-local context, because urllib3
opens and uses connections in the thread that sends.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import certifi
from urllib3 import PoolManager, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from airflow_webhook_provider.core.egress import EgressPolicy

__all__ = ["TLS", "AttemptContext", "Pools", "attempt_context"]

_local = threading.local()
_OPEN = EgressPolicy()


class AttemptContext:
    """The policy and deadline of the attempt running in this thread.

    :param policy: the egress policy every new connection is checked against.
    :param deadline_seconds: how long the whole attempt may take.
    :param check_addresses: check the address each connection resolves to; off when the
        connection goes to a proxy (whose target the sender checked before).
    """

    def __init__(
        self, policy: EgressPolicy, deadline_seconds: float, *, check_addresses: bool = True
    ) -> None:
        self.policy = policy
        self.check_addresses = check_addresses
        self.deadline_seconds = deadline_seconds
        self.deadline_at = time.monotonic() + deadline_seconds
        self.deadline_hit = False
        self.finished = False
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def watch(self, connection: HTTPConnection) -> None:
        """Close ``connection`` if it is still in use when the deadline passes."""
        self._connections.append(connection)

    def finish(self) -> None:
        """End the attempt; call before its connection goes back to the pool for others to use."""
        with self._lock:
            self.finished = True
            self._connections = []

    def expire(self) -> None:
        """Shut the attempt's sockets down: every blocked read or write in it fails at once."""
        with self._lock:
            if self.finished:
                return
            self.deadline_hit = True
            for connection in self._connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    with suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


#: Heap size at which finished attempts are swept out in one pass.
_COMPACT_AT = 1024


class _Watchdog:
    """One thread that expires every overdue attempt of the process (a thread per attempt costs more)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, AttemptContext]] = []
        self._wake = threading.Condition()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, context: AttemptContext) -> None:
        with self._wake:
            if len(self._heap) >= _COMPACT_AT:
                # Finished attempts leave the heap only from its top; drop them in bulk.
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (context.deadline_at, next(self._counter), context))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="flow-webhook-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is context:
                # Only an earlier deadline moves the watchdog's wake-up; waking it for every
                # attempt costs a thread switch per request.
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    _, _, context = heapq.heappop(self._heap)
                    context.expire()
                timeout = self._heap[0][0] - now if self._heap else None
                self._wake.wait(timeout)


_watchdog = _Watchdog()


def _reset_after_fork() -> None:
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_reset_after_fork)


@contextmanager
def attempt_context(
    policy: EgressPolicy, deadline_seconds: float, *, check_addresses: bool = True
) -> Iterator[AttemptContext]:
    """Run one attempt in this thread under ``policy`` and a whole-request deadline."""
    context = AttemptContext(policy, deadline_seconds, check_addresses=check_addresses)
    previous = getattr(_local, "context", None)
    _local.context = context
    _watchdog.add(context)
    try:
        yield context
    finally:
        context.finish()
        _local.context = previous


def _current() -> AttemptContext | None:
    return getattr(_local, "context", None)


class _GuardedConnectionMixin:
    """Resolve, check every address, then connect to the checked address."""

    _dns_host: str
    port: int
    host: str
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        context = _current()
        policy = context.policy if context is not None and context.check_addresses else _OPEN
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            policy.check_address(address, host=self.host)
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.timeout is not _DEFAULT_TIMEOUT:
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
                return sock
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> Any:
        context = _current()
        if context is not None:
            context.watch(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS = {"http": _GuardedHTTPConnectionPool, "https": _GuardedHTTPSConnectionPool}


@dataclass(frozen=True)
class TLS:
    """How to check the receiver's certificate, and which certificate to show it.

    :param verify: True (the system's trust store, or ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``,
        or certifi's), a CA bundle path, or False (no check).
    :param cert: a client certificate file, or a (certificate, key) pair, for mutual TLS.
    """

    verify: bool | str = True
    cert: str | tuple[str, str] | None = None

    def pool_options(self) -> dict[str, Any]:
        """Return the urllib3 pool manager's TLS keyword arguments."""
        options: dict[str, Any] = {}
        if self.verify is False:
            options.update(cert_reqs="CERT_NONE", assert_hostname=False)
        else:
            bundle = self.verify if isinstance(self.verify, str) else None
            bundle = bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            options.update(cert_reqs="CERT_REQUIRED", ca_certs=bundle or certifi.where())
        if isinstance(self.cert, tuple):
            options.update(cert_file=self.cert[0], key_file=self.cert[1])
        elif self.cert:
            options.update(cert_file=self.cert)
        return options


class Pools:
    """urllib3 pool managers whose connections obey the attempt's egress policy and deadline.

    One manager per TLS setting and proxy (a proxy gets a ``ProxyManager``, whose
    connections to the proxy are guarded too, so the deadline holds there as well).

    :param maxsize: connections kept per receiver host.
    :param num_pools: receiver hosts kept per manager.
    """

    def __init__(self, *, maxsize: int, num_pools: int = 16) -> None:
        self.maxsize = maxsize
        self.num_pools = num_pools
        self._managers: dict[tuple[TLS, str | None], PoolManager] = {}
        self._lock = threading.Lock()

    def manager(self, tls: TLS, proxy: str | None) -> PoolManager:
        """Return the pool manager for a TLS setting and proxy (made on first use)."""
        key = (tls, proxy)
        manager = self._managers.get(key)
        if manager is None:
            with self._lock:
                manager = self._managers.get(key)
                if manager is None:
                    options: dict[str, Any] = {
                        "num_pools": self.num_pools,
                        "maxsize": self.maxsize,
                        "retries": False,
                    }
                    options.update(tls.pool_options())
                    manager = ProxyManager(proxy, **options) if proxy else PoolManager(**options)
                    manager.pool_classes_by_scheme = dict(_GUARDED_POOLS)
                    self._managers[key] = manager
        return manager

    def clear(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()
