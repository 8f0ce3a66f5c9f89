"""Wait for a job group in the triggerer instead of a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_webhook_provider.core.exceptions import FlowWebhookError
from airflow_webhook_provider.core.retry import RetryPolicy
from airflow_webhook_provider.hooks.job_groups import (
    COMPLETE,
    FAILED_STATUSES,
    JobGroupsHook,
    max_polls,
)

__all__ = ["JobGroupTrigger"]


class JobGroupTrigger(BaseTrigger):
    """Poll a job group's status until it is terminal, then fire one event.

    The event's payload is a dict: ``job_group_id``, ``status`` (the last job group
    status, or None), ``outcome`` (``"complete"``, ``"failed"``, ``"timeout"`` or
    ``"error"``) and ``message``; for ``"error"`` also ``error`` (the exception class
    name), ``status_code`` and ``url``. The access token is never part of the trigger's
    arguments: the trigger reads the connection when it runs.

    Usage (from an operator's ``execute``)::

        self.defer(
            trigger=JobGroupTrigger(job_group_id=7, end_time=time.time() + 3600),
            method_name="execute_complete",
        )

    :param job_group_id: the job group to follow.
    :param end_time: UNIX time in seconds after which the wait times out; absolute, so a
        triggerer restart does not extend the wait.
    :param job_groups_conn_id: the ``job_groups`` connection.
    :param poll_interval: seconds between two status requests.
    :param retry_policy: the fields of the :class:`~airflow_webhook_provider.core.retry.RetryPolicy`
        for each status request (429, 5xx and connection errors are retried); its defaults when omitted.
    """

    def __init__(
        self,
        *,
        job_group_id: int,
        end_time: float,
        job_groups_conn_id: str = JobGroupsHook.default_conn_name,
        poll_interval: float = 30.0,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.job_group_id = job_group_id
        self.end_time = end_time
        self.job_groups_conn_id = job_groups_conn_id
        self.poll_interval = poll_interval
        self.retry_policy = dict(retry_policy or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the arguments that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_group_id": self.job_group_id,
                "end_time": self.end_time,
                "job_groups_conn_id": self.job_groups_conn_id,
                "poll_interval": self.poll_interval,
                "retry_policy": self.retry_policy,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job group is terminal, the wait times out or the API fails."""
        hook = JobGroupsHook(self.job_groups_conn_id, retry_policy=RetryPolicy(**self.retry_policy))
        status: str | None = None
        try:
            for _ in range(max_polls(self.poll_interval, max(self.end_time - time.time(), 0.0))):
                status = await hook.aget_job_group_status(self.job_group_id)
                self.log.info("Job group %s is %s", self.job_group_id, status)
                if status == COMPLETE:
                    yield self._event(status, "complete", f"Job group {self.job_group_id} is {status}")
                    return
                if status in FAILED_STATUSES:
                    yield self._event(
                        status, "failed", f"Job group {self.job_group_id} ended with status {status!r}"
                    )
                    return
                remaining = self.end_time - time.time()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(self.poll_interval, remaining))
        except FlowWebhookError as exc:
            yield self._event(
                status,
                "error",
                str(exc),
                error=type(exc).__name__,
                status_code=getattr(exc, "status_code", None),
                url=getattr(exc, "url", None),
            )
            return
        yield self._event(status, "timeout", f"Job group {self.job_group_id} did not finish in time")

    def _event(self, status: str | None, outcome: str, message: str, **details: Any) -> TriggerEvent:
        return TriggerEvent(  # type: ignore[no-untyped-call]
            {
                "job_group_id": self.job_group_id,
                "status": status,
                "outcome": outcome,
                "message": message,
                **details,
            }
        )
