"""A jobGroups-compatible API server on 127.0.0.1, for tests.

It implements the part of the API that ``JobGroupsHook`` uses, records every request as
it arrived, and can be told to misbehave::

    POST /v4/jobGroups               201 {"id": N, "reason": "JobStarted", "sessionId": "..."}
    GET  /v4/jobGroups?limit=1       200 {"data": [...], "count": N}
    GET  /v4/jobGroups/{id}          200 {"id": N, "status": "...", "wrangledDataset": {"id": 4}, ...}
    GET  /v4/jobGroups/{id}/status   200 "Created", then "InProgress", then the terminal status

A request without ``Authorization: Bearer <token>`` gets 401; an unknown wrangled dataset
or job group gets 404.

Usage::

    with JobGroupsServer(token="tok", final_status="Failed") as server:
        server.fail_next(2)            # the next two requests answer 503
        ...call server.base_url...
        assert server.requests[0].json() == {"wrangledDataset": {"id": 4}}
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["JobGroupsServer", "RecordedRequest"]

_STATUS_PATH = re.compile(r"/v4/jobGroups/(\d+)/status")
_JOB_GROUP_PATH = re.compile(r"/v4/jobGroups/(\d+)")


@dataclass(frozen=True)
class RecordedRequest:
    """A request as it arrived.

    :param method: the HTTP method.
    :param path: the request target (path and query).
    :param headers: the headers, names as sent.
    :param body: the exact body bytes.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return a header value, case-insensitively."""
        lowered = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lowered), None)

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _JobGroup:
    id: int
    wrangled_dataset_id: int
    session_id: str
    final_status: str | None
    in_progress_reads: int
    status_reads: int = 0

    @property
    def status(self) -> str:
        if self.status_reads <= 1:
            return "Created"
        if self.status_reads <= 1 + self.in_progress_reads or self.final_status is None:
            return "InProgress"
        return self.final_status


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_seconds: float = 0.0


def _json(status: int, document: Any) -> _Answer:
    return _Answer(status, json.dumps(document).encode())


def _error(status: int, name: str, message: str) -> _Answer:
    return _json(status, {"exception": {"name": name, "message": message}})


class JobGroupsServer:
    """A threaded jobGroups API on 127.0.0.1, on a free port.

    :param token: the only access token accepted.
    :param known_datasets: the wrangled dataset ids a job can be started for; others get 404.
    :param final_status: the terminal status of the job groups started from now on
        (``Complete``, ``Failed``, ``Canceled``), or None to stay ``InProgress`` forever.
    :param in_progress_reads: how many status reads answer ``InProgress`` after ``Created``.
    """

    def __init__(
        self,
        *,
        token: str,
        known_datasets: Collection[int] = (4,),
        final_status: str | None = "Complete",
        in_progress_reads: int = 1,
    ) -> None:
        self.token = token
        self.known_datasets = set(known_datasets)
        self.final_status = final_status
        self.in_progress_reads = in_progress_reads
        self.requests: list[RecordedRequest] = []
        self._job_groups: dict[int, _JobGroup] = {}
        self._ids = itertools.count(101)
        self._scripted: list[_Answer] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The base URL, as a ``job_groups`` connection's Host holds it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a 5xx), before any other check."""
        self.answer_next(*[_error(status, "ServiceUnavailable", "try again later")] * count)

    def answer_next(self, *answers: _Answer) -> None:
        """Answer the next requests with these answers, in order, before any other check."""
        with self._lock:
            self._scripted.extend(answers)

    @staticmethod
    def raw(
        status: int, body: bytes, content_type: str = "text/html", *, delay_seconds: float = 0.0
    ) -> _Answer:
        """Return an answer with any body, sent after ``delay_seconds``, for :meth:`answer_next`."""
        return _Answer(status, body, content_type, delay_seconds)

    def finish_all(self, status: str) -> None:
        """End every job group started so far with ``status`` (for jobs started with ``final_status=None``)."""
        with self._lock:
            for job_group in self._job_groups.values():
                job_group.final_status = status

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Return the recorded requests with this method and path (query ignored)."""
        with self._lock:
            return [r for r in self.requests if r.method == method and urlsplit(r.path).path == path]

    def start(self) -> JobGroupsServer:
        """Start serving in a background thread."""
        # A short poll interval makes stop() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="job-groups-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> JobGroupsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _answer(self, request: RecordedRequest) -> _Answer:
        with self._lock:
            self.requests.append(request)
            if self._scripted:
                return self._scripted.pop(0)
            if request.header("Authorization") != f"Bearer {self.token}":
                return _error(401, "AuthenticationError", "invalid or missing access token")
            path = urlsplit(request.path).path.rstrip("/")
            if request.method == "POST" and path == "/v4/jobGroups":
                return self._start(request.body)
            if request.method == "GET" and path == "/v4/jobGroups":
                return _json(
                    200,
                    {
                        "data": [self._describe(g) for g in self._job_groups.values()][:1],
                        "count": len(self._job_groups),
                    },
                )
            if request.method == "GET" and (match := _STATUS_PATH.fullmatch(path)):
                job_group = self._job_groups.get(int(match[1]))
                if job_group is None:
                    return _error(404, "NotFoundError", f"job group {match[1]} not found")
                job_group.status_reads += 1
                return _json(200, job_group.status)
            if request.method == "GET" and (match := _JOB_GROUP_PATH.fullmatch(path)):
                job_group = self._job_groups.get(int(match[1]))
                if job_group is None:
                    return _error(404, "NotFoundError", f"job group {match[1]} not found")
                return _json(200, self._describe(job_group))
            return _error(404, "NotFoundError", f"no route for {request.method} {path}")

    def _start(self, body: bytes) -> _Answer:
        try:
            dataset_id = json.loads(body)["wrangledDataset"]["id"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "ValidationError", 'expected {"wrangledDataset": {"id": <int>}}')
        if dataset_id not in self.known_datasets:
            return _error(404, "NotFoundError", f"wrangled dataset {dataset_id} not found")
        job_group = _JobGroup(
            id=next(self._ids),
            wrangled_dataset_id=dataset_id,
            session_id=str(uuid.uuid4()),
            final_status=self.final_status,
            in_progress_reads=self.in_progress_reads,
        )
        self._job_groups[job_group.id] = job_group
        return _json(201, {"id": job_group.id, "reason": "JobStarted", "sessionId": job_group.session_id})

    @staticmethod
    def _describe(job_group: _JobGroup) -> dict[str, Any]:
        return {
            "id": job_group.id,
            "status": job_group.status,
            "wrangledDataset": {"id": job_group.wrangled_dataset_id},
            "sessionId": job_group.session_id,
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # tests read .requests instead
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = server._answer(
                    RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                )
                time.sleep(answer.delay_seconds)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 (http.server names)

        return Handler
