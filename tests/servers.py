"""Servers on 127.0.0.1 that a receiver alone cannot play: one that never answers, and a forward proxy."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit


class HungReceiver:
    """Accept connections on 127.0.0.1 and never answer (a receiver stuck in an outage).

    :param port: the port; a free one when 0.
    """

    def __init__(self, port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(512)
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hung-receiver", daemon=True)
        #: How many connections it accepted.
        self.accepted = 0

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(connection)  # never read, never answered

    def __enter__(self) -> HungReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every held connection, freeing the port."""
        self._stopped.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would leave it listening.
        for sock in (self._socket, *self._held):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str  # the absolute URL (or host:port for CONNECT)


class ForwardProxy:
    """A forward HTTP proxy on 127.0.0.1 that records every request and relays plain HTTP ones.

    CONNECT (HTTPS) requests are recorded and refused with 502: the tests only need to see
    whether a request reached the proxy at all.
    """

    def __init__(self) -> None:
        self.requests: list[ProxiedRequest] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_CONNECT(self) -> None:
                proxy.requests.append(ProxiedRequest("CONNECT", self.path))
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _relay(self) -> None:
                proxy.requests.append(ProxiedRequest(self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                target = urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=10)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("proxy-connection", "connection")
                }
                path = target.path + (f"?{target.query}" if target.query else "")
                try:
                    upstream.request(self.command, path or "/", body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    status = answer.status
                except OSError:
                    status, payload = 502, b"upstream unreachable"
                finally:
                    upstream.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="forward-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
