"""The ``job_groups`` connection type and a client for the jobGroups API.

The API starts a job for a wrangled dataset (``POST /v4/jobGroups``) and reports the
status of the job group it created (``GET /v4/jobGroups/{id}/status``). Reading a
response is pure (:func:`read_response`), so the synchronous client (``requests``, in
workers) and the asynchronous one (``httpx``, in the triggerer) judge answers the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import requests
from airflow.sdk import BaseHook

from airflow_webhook_provider.core.exceptions import (
    InvalidConnection,
    JobGroupFailed,
    JobGroupsAuthError,
    JobGroupsError,
    JobGroupsNotFound,
)
from airflow_webhook_provider.core.retry import RetryPolicy
from airflow_webhook_provider.delivery.message import USER_AGENT

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = [
    "COMPLETE",
    "FAILED_STATUSES",
    "ApiSettings",
    "JobGroupsHook",
    "excerpt",
    "job_group_failed",
    "max_polls",
    "read_response",
    "wait_timed_out",
]

#: The status of a job group that finished successfully.
COMPLETE: Final = "Complete"
#: The statuses of a job group that finished without success.
FAILED_STATUSES: Final = frozenset({"Failed", "Canceled"})
#: The longest excerpt of a response (or error text) quoted in an error message.
EXCERPT_CHARS: Final = 200
#: Answers worth another attempt: the server is overloaded or failed, not the request.
RETRYABLE_STATUS_CODES: Final = frozenset({429, 500, 502, 503, 504})
_DEFAULT_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class ApiSettings:
    """Where the jobGroups API is and how to reach it, read from a ``job_groups`` connection.

    :param conn_id: the connection id (named in error messages).
    :param base_url: scheme, host and port, without a trailing slash.
    :param token: the access token, sent as ``Authorization: Bearer <token>``; never printed.
    :param validate_ssl: verify the server's TLS certificate.
    :param timeout: the per-request timeout in seconds.
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    validate_ssl: bool = True
    timeout: float = _DEFAULT_TIMEOUT

    @classmethod
    def from_connection(cls, conn: Connection) -> ApiSettings:
        """Read and check a ``job_groups`` connection.

        :param conn: the Airflow connection.
        :raises InvalidConnection: naming the connection, the field and the fix.
        """
        conn_id = conn.conn_id
        base_url = (conn.host or "").strip().rstrip("/")
        if not base_url.lower().startswith(("http://", "https://")):
            raise InvalidConnection(
                f"connection {conn_id!r}: Base URL (Host) must start with http:// or https://, "
                f"e.g. http://www.example.com:3005; got {base_url[:80]!r}",
                conn_id=conn_id,
                field="host",
            )
        parts = urlsplit(base_url)
        if conn.port and parts.port is None:
            base_url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
        if not conn.password:
            raise InvalidConnection(
                f"connection {conn_id!r}: the access token is missing; put it in the Access token "
                "(Password) field of the connection",
                conn_id=conn_id,
                field="password",
            )
        extra = conn.extra_dejson
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            token=conn.password,
            validate_ssl=_as_bool(conn_id, "validate_ssl", extra.get("validate_ssl"), default=True),
            timeout=_as_timeout(conn_id, extra.get("timeout")),
        )

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request carries."""
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def url(self, path: str) -> str:
        """Return the full URL of an API path such as ``/v4/jobGroups``."""
        return f"{self.base_url}{path}"


def _as_bool(conn_id: str, key: str, value: Any, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidConnection(
        f"connection {conn_id!r}: extra {key!r} must be true or false", conn_id=conn_id, field=key
    )


def _as_timeout(conn_id: str, value: Any) -> float:
    try:
        timeout = _DEFAULT_TIMEOUT if value in (None, "") else float(value)
    except (TypeError, ValueError):
        timeout = -1.0
    if not 0 < timeout <= 600:
        raise InvalidConnection(
            f"connection {conn_id!r}: extra 'timeout' must be a number of seconds between 0 and 600",
            conn_id=conn_id,
            field="timeout",
        )
    return timeout


def excerpt(text: str, *, secret: str | None = None) -> str:
    """Return a one-line quotable start of ``text``, at most 200 characters, ``secret`` masked.

    :param text: a response body or error text.
    :param secret: a value that must not appear (the access token).
    """
    if secret:
        text = text.replace(secret, "***")
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


def read_response(settings: ApiSettings, status_code: int, text: str, url: str, *, not_found: str) -> Any:
    """Judge one answer of the jobGroups API and return its JSON document.

    :param settings: the connection settings (for messages and to mask the token).
    :param status_code: the HTTP status.
    :param text: the response body.
    :param url: the requested URL.
    :param not_found: what a 404 means here, e.g. ``"job group 7"``.
    :raises JobGroupsAuthError: on 401 or 403.
    :raises JobGroupsNotFound: on 404.
    :raises JobGroupsError: on any other non-2xx answer or a body that is not JSON.
    """
    if status_code in (401, 403):
        raise JobGroupsAuthError(
            f"The jobGroups API at {url} rejected the access token (HTTP {status_code}); put a valid "
            f"token in the Access token (Password) field of connection {settings.conn_id!r}",
            status_code=status_code,
            url=url,
        )
    if status_code == 404:
        raise JobGroupsNotFound(
            f"The jobGroups API at {url} does not know {not_found} (HTTP 404)",
            status_code=status_code,
            url=url,
        )
    quoted = excerpt(text, secret=settings.token)
    if not 200 <= status_code < 300:
        raise JobGroupsError(
            f"The jobGroups API at {url} answered HTTP {status_code}: {quoted!r}",
            status_code=status_code,
            url=url,
        )
    try:
        return json.loads(text)
    except ValueError:
        raise JobGroupsError(
            f"The jobGroups API at {url} answered HTTP {status_code} with a body that is not JSON: {quoted!r}",
            status_code=status_code,
            url=url,
        ) from None


def _job_group_from(settings: ApiSettings, document: Any, text: str, url: str) -> dict[str, Any]:
    if isinstance(document, dict) and type(document.get("id")) is int:
        return document
    raise JobGroupsError(
        f"The jobGroups API at {url} answered without a job group id: {excerpt(text, secret=settings.token)!r}",
        url=url,
    )


def _status_from(settings: ApiSettings, document: Any, text: str, url: str) -> str:
    if isinstance(document, str) and document:
        return document
    raise JobGroupsError(
        f"The jobGroups API at {url} answered with something that is not a status: "
        f"{excerpt(text, secret=settings.token)!r}",
        url=url,
    )


def job_group_failed(job_group_id: int, status: str, *, url: str | None = None) -> JobGroupFailed:
    """Return the error for a job group that ended ``Failed`` or ``Canceled``.

    :param job_group_id: the job group.
    :param status: its terminal status.
    :param url: the status URL that reported it.
    """
    return JobGroupFailed(f"Job group {job_group_id} ended with status {status!r}", url=url)


def _wrangled_dataset(body: Mapping[str, Any]) -> str:
    dataset = body.get("wrangledDataset")
    if isinstance(dataset, Mapping) and "id" in dataset:
        return f"wrangled dataset {dataset['id']!r}"
    return "the wrangled dataset in the request body"


class JobGroupsHook(BaseHook):
    """Start job groups through the jobGroups API and follow their status.

    The ``job_groups`` connection's Host is the base URL including its scheme (e.g.
    ``http://www.example.com:3005``) and its Password the access token, sent as
    ``Authorization: Bearer <token>``; extras ``validate_ssl`` (default true) and
    ``timeout`` (seconds, default 30) set the transport. Answers 429 and 5xx, and
    connection errors, are retried with exponential backoff inside ``retry_policy``'s
    attempt and time budget. A ``POST`` that timed out while waiting for the answer is
    not retried, since the server may already have started the job.

    Usage::

        hook = JobGroupsHook(job_groups_conn_id="job_groups_default")
        job_group = hook.run_job_group({"wrangledDataset": {"id": 4}})
        status = hook.get_job_group_status(job_group["id"])

    :param job_groups_conn_id: the connection id.
    :param retry_policy: attempts, backoff and time budget for one API call.
    """

    conn_name_attr = "job_groups_conn_id"
    default_conn_name = "job_groups_default"
    conn_type = "job_groups"
    hook_name = "Job Groups API"

    def __init__(
        self,
        job_groups_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.job_groups_conn_id = job_groups_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._settings: ApiSettings | None = None

    @property
    def settings(self) -> ApiSettings:
        """The connection settings, read on first use.

        :raises InvalidConnection: naming the connection, the field and the fix.
        """
        if self._settings is None:
            self._settings = ApiSettings.from_connection(self.get_connection(self.job_groups_conn_id))
        return self._settings

    async def asettings(self) -> ApiSettings:
        """Return the connection settings, read on first use without blocking the event loop.

        :raises InvalidConnection: naming the connection, the field and the fix.
        """
        if self._settings is None:
            conn = await self.aget_connection(self.job_groups_conn_id)
            self._settings = ApiSettings.from_connection(conn)
        return self._settings

    @cached_property
    def session(self) -> requests.Session:
        """The HTTP session that sends every synchronous request of this hook."""
        session = requests.Session()
        session.headers.update(self.settings.headers)
        session.verify = self.settings.validate_ssl
        return session

    def get_conn(self) -> requests.Session:
        """Return the HTTP session."""
        return self.session

    def run_job_group(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Start a job group with ``POST /v4/jobGroups``.

        :param body: the JSON request body, e.g. ``{"wrangledDataset": {"id": 4}}``.
        :return: the API's answer, whose ``id`` is the new job group's id.
        :raises JobGroupsError: or a subclass, when the API refuses or fails the request.
        """
        url = self.settings.url("/v4/jobGroups")
        response = self._send("POST", url, json_body=body)
        document = read_response(
            self.settings, response.status_code, response.text, url, not_found=_wrangled_dataset(body)
        )
        return _job_group_from(self.settings, document, response.text, url)

    def get_job_group_status(self, job_group_id: int) -> str:
        """Return a job group's status, e.g. ``Created``, ``InProgress``, ``Complete``, ``Failed``.

        :param job_group_id: the job group.
        :raises JobGroupsError: or a subclass, when the API refuses or fails the request.
        """
        url = self.settings.url(f"/v4/jobGroups/{job_group_id}/status")
        response = self._send("GET", url)
        document = read_response(
            self.settings, response.status_code, response.text, url, not_found=f"job group {job_group_id}"
        )
        return _status_from(self.settings, document, response.text, url)

    def get_job_group(self, job_group_id: int) -> dict[str, Any]:
        """Return a job group as the API describes it (``GET /v4/jobGroups/{id}``).

        :param job_group_id: the job group.
        :raises JobGroupsError: or a subclass, when the API refuses or fails the request.
        """
        url = self.settings.url(f"/v4/jobGroups/{job_group_id}")
        response = self._send("GET", url)
        document = read_response(
            self.settings, response.status_code, response.text, url, not_found=f"job group {job_group_id}"
        )
        return _job_group_from(self.settings, document, response.text, url)

    def wait_for_job_group(self, job_group_id: int, *, poll_interval: float, timeout: float) -> str:
        """Poll a job group's status until it is terminal.

        :param job_group_id: the job group.
        :param poll_interval: seconds between two status requests.
        :param timeout: the most seconds to wait.
        :return: ``Complete``.
        :raises JobGroupFailed: when the job group ends ``Failed`` or ``Canceled``.
        :raises JobGroupsError: when it is not terminal after ``timeout`` seconds, or the API fails.
        """
        deadline = time.monotonic() + timeout
        status = None
        for _ in range(max_polls(poll_interval, timeout)):
            status = self.get_job_group_status(job_group_id)
            self.log.info("Job group %s is %s", job_group_id, status)
            if status == COMPLETE:
                return status
            if status in FAILED_STATUSES:
                raise job_group_failed(job_group_id, status, url=self._status_url(job_group_id))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(poll_interval, remaining))
        raise wait_timed_out(job_group_id, status, timeout, url=self._status_url(job_group_id))

    async def aget_job_group_status(self, job_group_id: int) -> str:
        """Return a job group's status without blocking the event loop.

        :param job_group_id: the job group.
        :raises JobGroupsError: or a subclass, when the API refuses or fails the request.
        """
        settings = await self.asettings()
        url = settings.url(f"/v4/jobGroups/{job_group_id}/status")
        async with httpx.AsyncClient(headers=settings.headers, verify=settings.validate_ssl) as client:
            response = await self._asend(client, url)
        document = read_response(
            settings, response.status_code, response.text, url, not_found=f"job group {job_group_id}"
        )
        return _status_from(settings, document, response.text, url)

    def test_connection(self) -> tuple[bool, str]:
        """Ask the API for one job group (``GET /v4/jobGroups?limit=1``), without retries.

        :return: ``(True, message)`` when the API accepted the token, else ``(False, reason)``.
        """
        try:
            url = self.settings.url("/v4/jobGroups?limit=1")
            response = self._send("GET", url, policy=RetryPolicy(max_attempts=1))
            read_response(self.settings, response.status_code, response.text, url, not_found="job groups")
        except (InvalidConnection, JobGroupsError) as exc:
            return False, str(exc)
        return True, f"The jobGroups API at {self.settings.base_url} accepted the access token"

    def _status_url(self, job_group_id: int) -> str:
        return self.settings.url(f"/v4/jobGroups/{job_group_id}/status")

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        policy: RetryPolicy | None = None,
    ) -> requests.Response:
        policy = policy or self.retry_policy
        headers = {"Content-Type": "application/json"} if json_body is not None else None
        # A POST whose answer timed out may have started a job: retrying could start a second one.
        retryable: tuple[type[requests.RequestException], ...] = (
            (requests.ConnectionError,) if method == "POST" else (requests.ConnectionError, requests.Timeout)
        )
        start = time.monotonic()
        for attempt in range(1, max(1, policy.max_attempts) + 1):
            remaining = policy.budget_seconds - (time.monotonic() - start)
            try:
                response = self.session.request(
                    method,
                    url,
                    json=json_body,
                    headers=headers,
                    timeout=max(min(self.settings.timeout, remaining), 0.001),
                    allow_redirects=False,
                )
            except retryable as exc:
                last: requests.Response | Exception = exc
            except requests.Timeout as exc:
                raise JobGroupsError(
                    f"The jobGroups API at {url} did not answer within {self.settings.timeout:g} s; the job "
                    "group may have started anyway, so look in the platform before running the task again",
                    url=url,
                ) from exc
            except requests.RequestException as exc:
                raise self._unreachable(url, exc) from exc
            else:
                if response.status_code not in RETRYABLE_STATUS_CODES:
                    return response
                last = response
            wait = policy.backoff(attempt)
            if not self._may_retry(policy, attempt, time.monotonic() - start + wait, method, url, last):
                break
            time.sleep(wait)
        if isinstance(last, requests.Response):
            return last
        raise self._unreachable(url, last) from last

    async def _asend(self, client: httpx.AsyncClient, url: str) -> httpx.Response:
        settings = await self.asettings()
        policy = self.retry_policy
        loop = asyncio.get_running_loop()
        start = loop.time()
        for attempt in range(1, max(1, policy.max_attempts) + 1):
            remaining = policy.budget_seconds - (loop.time() - start)
            try:
                response = await client.get(url, timeout=max(min(settings.timeout, remaining), 0.001))
            except httpx.TransportError as exc:
                last: httpx.Response | Exception = exc
            except httpx.HTTPError as exc:
                raise self._unreachable(url, exc) from exc
            else:
                if response.status_code not in RETRYABLE_STATUS_CODES:
                    return response
                last = response
            wait = policy.backoff(attempt)
            if not self._may_retry(policy, attempt, loop.time() - start + wait, "GET", url, last):
                break
            await asyncio.sleep(wait)
        if isinstance(last, httpx.Response):
            return last
        raise self._unreachable(url, last) from last

    def _may_retry(
        self,
        policy: RetryPolicy,
        attempt: int,
        elapsed_after_wait: float,
        method: str,
        url: str,
        last: requests.Response | httpx.Response | Exception,
    ) -> bool:
        reason = type(last).__name__ if isinstance(last, Exception) else f"HTTP {last.status_code}"
        if attempt >= policy.max_attempts or elapsed_after_wait >= policy.budget_seconds:
            self.log.warning("%s %s failed (%s) on attempt %d; giving up", method, url, reason, attempt)
            return False
        self.log.warning(
            "%s %s failed (%s) on attempt %d of %d; retrying",
            method,
            url,
            reason,
            attempt,
            policy.max_attempts,
        )
        return True

    def _unreachable(self, url: str, exc: Exception) -> JobGroupsError:
        token = self._settings.token if self._settings else None
        return JobGroupsError(
            f"Could not reach the jobGroups API at {url}: {type(exc).__name__}: {excerpt(str(exc), secret=token)}",
            url=url,
        )


def max_polls(poll_interval: float, timeout: float) -> int:
    """Return the most status requests a wait of ``timeout`` seconds can make.

    :param poll_interval: seconds between two status requests.
    :param timeout: the most seconds to wait.
    """
    return int(timeout // poll_interval) + 2


def wait_timed_out(
    job_group_id: int, status: str | None, timeout: float, *, url: str | None = None
) -> JobGroupsError:
    """Return the error for a job group that is not terminal after the wait.

    :param job_group_id: the job group.
    :param status: its last known status.
    :param timeout: how long the wait lasted, in seconds.
    :param url: the status URL.
    """
    return JobGroupsError(
        f"Job group {job_group_id} did not finish within {timeout:g} s (last status {status!r}); "
        "raise the operator's timeout, or look at the job in the platform",
        url=url,
    )
