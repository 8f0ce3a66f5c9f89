"""A small recording webhook receiver for demos and tests.

It listens on 127.0.0.1, records every request exactly as it arrived (method, target,
headers, body bytes), checks its signature when given the secret, and answers from a
script of responses, which lets a test make it fail, stall or ask to retry later.

Usage::

    with RecordingReceiver(secret="mySecret") as receiver:
        receiver.script(Reply(503), Reply(200))   # then 200 for everything else
        ...send to receiver.url("/hooks")...
        assert receiver.requests[-1].signature_valid
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from airflow_webhook_provider.core.exceptions import InvalidSignature
from airflow_webhook_provider.core.signing import SIGNATURE_HEADER, payload_for, verify_signature

__all__ = ["ReceivedRequest", "RecordingReceiver", "Reply"]


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops connections when 50 webhooks arrive at once.
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client gave up (a sender's timeout); report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    :param status: the HTTP status.
    :param body: the response body.
    :param headers: extra response headers (e.g. ``Retry-After``).
    :param delay_seconds: wait this long before answering (to provoke timeouts).
    :param reset: close the connection without answering.
    """

    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    reset: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it arrived.

    :param method: the HTTP method.
    :param target: the request target (path and query).
    :param url: the full URL, rebuilt from the Host header and target.
    :param headers: the headers (names as sent).
    :param body: the exact body bytes.
    :param received_at: UNIX time in seconds when the request had arrived (before any scripted delay).
    :param signature_valid: whether the signature verified, or None when no secret was set.
    :param signature_error: why it did not verify.
    :param status: the status the receiver answers, perhaps after the client gave up (None for a reset).
    """

    method: str
    target: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    signature_valid: bool | None
    signature_error: str | None
    status: int | None

    def header(self, name: str) -> str | None:
        """Return a header value, case-insensitively."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def delivery_id(self) -> str | None:
        """The ``X-Webhook-Id`` header."""
        return self.header("X-Webhook-Id")


class RecordingReceiver:
    """A threaded HTTP server on 127.0.0.1 that records what it receives.

    :param secret: verify signatures with this secret.
    :param port: the port; a free one when 0.
    :param default: the answer once the script is used up.
    :param respond: choose the answer once the script is used up, instead of ``default``
        (e.g. a random mix of failures for chaos tests).
    :param tls: serve HTTPS with this server-side SSL context.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        port: int = 0,
        default: Reply | None = None,
        respond: Callable[[], Reply] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.secret = secret
        self.default = default or Reply()
        self.respond = respond
        self.requests: list[ReceivedRequest] = []
        #: The most requests that were being handled at the same moment.
        self.max_in_flight = 0
        #: Delivery ids that arrived while a request with the same id was still being handled.
        self.concurrent_duplicates: list[str] = []
        self._in_flight = 0
        self._in_flight_ids: dict[str, int] = {}
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", port), self._handler_class())
        self.scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        """Return a URL on this receiver."""
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> RecordingReceiver:
        """Start serving in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="recording-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RecordingReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests arrived, or ``timeout`` seconds passed.

        :return: the requests received so far.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            return list(self.requests)

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            return self.respond() if self.respond is not None else self.default

    def _enter(self, delivery_id: str | None) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if delivery_id is not None:
                if self._in_flight_ids.get(delivery_id):
                    self.concurrent_duplicates.append(delivery_id)
                self._in_flight_ids[delivery_id] = self._in_flight_ids.get(delivery_id, 0) + 1

    def _leave(self, delivery_id: str | None) -> None:
        with self._lock:
            self._in_flight -= 1
            if delivery_id is not None:
                self._in_flight_ids[delivery_id] -= 1

    def _record(self, request: ReceivedRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def _verify(
        self, method: str, url: str, body: bytes, header: str | None
    ) -> tuple[bool | None, str | None]:
        if self.secret is None:
            return None, None
        try:
            verify_signature(header, payload_for(method, body=body, url=url), self.secret)
        except InvalidSignature as exc:
            return False, str(exc)
        return True, None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet: tests read .requests
                return

            def _handle(self) -> None:
                delivery_id = self.headers.get("X-Webhook-Id")
                receiver._enter(delivery_id)
                try:
                    self._answer()
                finally:
                    receiver._leave(delivery_id)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = (
                    f"{receiver.scheme}://{self.headers.get('Host', f'127.0.0.1:{receiver.port}')}{self.path}"
                )
                valid, error = receiver._verify(self.command, url, body, self.headers.get(SIGNATURE_HEADER))
                reply = receiver._next_reply()
                receiver._record(
                    ReceivedRequest(
                        method=self.command,
                        target=self.path,
                        url=url,
                        headers=dict(self.headers.items()),
                        body=body,
                        received_at=time.time(),
                        signature_valid=valid,
                        signature_error=error,
                        status=None if reply.reset else reply.status,
                    )
                )
                if reply.delay_seconds:
                    time.sleep(reply.delay_seconds)
                if reply.reset:
                    # SO_LINGER 0 makes close() send RST: the client sees a reset, not an answer.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 (http.server names)

        return Handler
