"""A lean keep-alive HTTP/1.1 receiver on 127.0.0.1, run as its own process by the benchmarks.

It answers every request with ``200 ok`` after ``--delay`` seconds, verifies
``X-Webhook-Signature`` when given ``--secret``, keeps nothing but counters (so 10,000
deliveries cost it no memory), and answers ``GET /__stats`` with those counters as JSON.
With ``--record-arrivals`` it also notes when each ``X-Webhook-Id`` first arrived (UNIX
seconds, taken as the whole request has been read) and answers ``GET /__arrivals`` with them.
Running in its own process keeps its CPU off the sender's interpreter; a benchmark then
measures the sender, not the receiver.

It prints ``PORT <n>`` once listening, and stops when its standard input closes (its
parent ended) or after ``--max-seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

from airflow_webhook_provider.core.exceptions import InvalidSignature
from airflow_webhook_provider.core.signing import verify_signature

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Stats:
    def __init__(self, record_arrivals: bool) -> None:
        self.requests = 0
        self.signed_valid = 0
        self.signed_invalid = 0
        self.connections = 0
        self.arrivals: dict[str, float] | None = {} if record_arrivals else None

    def as_json(self) -> bytes:
        return json.dumps({key: value for key, value in vars(self).items() if key != "arrivals"}).encode()


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


class _Connection(asyncio.Protocol):
    def __init__(self, stats: _Stats, delay: float, secret: str | None) -> None:
        self.stats = stats
        self.delay = delay
        self.secret = secret
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = int(_header(head, b"content-length") or 0)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith((b"GET /__stats ", b"GET /__arrivals ")):
            if head.startswith(b"GET /__stats "):
                payload = self.stats.as_json()
            else:
                payload = json.dumps(self.stats.arrivals or {}).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(payload), payload)
            )
            return
        self.stats.requests += 1
        if self.stats.arrivals is not None:
            delivery_id = _header(head, b"x-webhook-id")
            if delivery_id is not None:
                self.stats.arrivals.setdefault(delivery_id.decode(), time.time())
        if self.secret is not None:
            header = _header(head, b"x-webhook-signature")
            try:
                verify_signature(header.decode() if header else None, body, self.secret)
                self.stats.signed_valid += 1
            except InvalidSignature:
                self.stats.signed_invalid += 1
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self._write_if_open, _OK)
        else:
            self.transport.write(_OK)

    def _write_if_open(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def _serve(delay: float, secret: str | None, max_seconds: float, record_arrivals: bool) -> None:
    loop = asyncio.get_running_loop()
    stats = _Stats(record_arrivals)
    server = await loop.create_server(
        lambda: _Connection(stats, delay, secret), host="127.0.0.1", port=0, backlog=512
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stdin_closed = loop.create_future()

    def _on_stdin() -> None:
        if not sys.stdin.buffer.read1(1024) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), _on_stdin)
    try:
        await asyncio.wait_for(stdin_closed, timeout=max_seconds)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(sys.stdin.fileno())
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--secret", default=None, help="verify X-Webhook-Signature with this secret")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long at the latest")
    parser.add_argument(
        "--record-arrivals",
        action="store_true",
        help="note each X-Webhook-Id's arrival time (GET /__arrivals)",
    )
    args = parser.parse_args()
    asyncio.run(_serve(args.delay, args.secret, args.max_seconds, args.record_arrivals))


if __name__ == "__main__":
    main()
