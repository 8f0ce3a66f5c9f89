"""Chain another job: start a job group through the jobGroups API, optionally waiting for it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_webhook_provider import config
from airflow_webhook_provider.core.exceptions import (
    InvalidConnection,
    InvalidWebhookDefinition,
    JobGroupsAuthError,
    JobGroupsError,
    JobGroupsNotFound,
)
from airflow_webhook_provider.core.retry import RetryPolicy
from airflow_webhook_provider.hooks.job_groups import JobGroupsHook, job_group_failed, wait_timed_out
from airflow_webhook_provider.triggers.job_group import JobGroupTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["FlowWebhookOperator"]

_SECRET_ARGUMENTS = ("token", "access_token", "password", "secret")
_API_ERRORS: Mapping[str, type[JobGroupsError]] = {
    error.__name__: error for error in (JobGroupsError, JobGroupsAuthError, JobGroupsNotFound)
}


class FlowWebhookOperator(BaseOperator):
    """Start the next job: ``POST {base}/v4/jobGroups`` on a ``job_groups`` connection.

    The request body is ``{"wrangledDataset": {"id": <wrangled_dataset_id>}}``, or ``body``
    as given. The new job group's id is the task's return value (XCom). With
    ``wait_for_completion`` the task then follows ``GET {base}/v4/jobGroups/{id}/status``
    until the job group is ``Complete`` (success) or ``Failed`` / ``Canceled`` (the task
    fails with :class:`~airflow_webhook_provider.core.exceptions.JobGroupFailed`); with
    ``deferrable`` as well, the wait runs in the triggerer instead of a worker slot.

    The access token belongs in the connection's Password field, never in DAG code.

    Usage::

        start_job_b = FlowWebhookOperator(
            task_id="start_job_b",
            job_groups_conn_id="job_groups_default",
            wrangled_dataset_id=4,
            wait_for_completion=True,
            deferrable=True,
        )

    :param job_groups_conn_id: the ``job_groups`` connection (base URL and access token).
    :param wrangled_dataset_id: the recipe (wrangled dataset) whose job to run (templated).
    :param body: the full JSON request body instead of ``wrangled_dataset_id`` (templated).
    :param wait_for_completion: wait until the job group is terminal.
    :param poll_interval: seconds between two status requests while waiting.
    :param timeout: the most seconds to wait; the task fails when the job group is not
        terminal by then (the job group itself keeps running).
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param api_retry_policy: attempts, backoff and time budget for each API call (429, 5xx and
        connection errors are retried).
    """

    template_fields: Sequence[str] = ("wrangled_dataset_id", "body")
    template_fields_renderers: ClassVar[dict[str, str]] = {"body": "json"}

    def __init__(
        self,
        *,
        job_groups_conn_id: str = JobGroupsHook.default_conn_name,
        wrangled_dataset_id: int | str | None = None,
        body: dict[str, Any] | None = None,
        wait_for_completion: bool = False,
        poll_interval: float = 30.0,
        timeout: float = 24 * 60 * 60,
        deferrable: bool = config.default_deferrable(),
        api_retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        for name in _SECRET_ARGUMENTS:
            if name in kwargs:
                raise InvalidWebhookDefinition(
                    f"task {task_id!r}: argument {name!r}: a secret does not belong in DAG code; put the "
                    "access token in the Access token (Password) field of the job_groups connection "
                    "named by job_groups_conn_id",
                    webhook=task_id,
                    field=name,
                )
        if (wrangled_dataset_id is None) == (body is None):
            raise InvalidWebhookDefinition(
                f"task {task_id!r}: give exactly one of wrangled_dataset_id (e.g. 4) or body "
                '(e.g. {"wrangledDataset": {"id": 4}})',
                webhook=task_id,
                field="body" if body is not None else "wrangled_dataset_id",
            )
        if isinstance(wrangled_dataset_id, int):
            _dataset_id(wrangled_dataset_id, task_id=task_id)
        for name, value in (("poll_interval", poll_interval), ("timeout", timeout)):
            if not value > 0:
                raise InvalidWebhookDefinition(
                    f"task {task_id!r}: {name} must be a positive number of seconds, got {value!r}",
                    webhook=task_id,
                    field=name,
                )
        super().__init__(**kwargs)
        self.job_groups_conn_id = job_groups_conn_id
        self.wrangled_dataset_id = wrangled_dataset_id
        self.body = body
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.api_retry_policy = api_retry_policy or RetryPolicy()

    @cached_property
    def hook(self) -> JobGroupsHook:
        """The jobGroups API client."""
        return JobGroupsHook(self.job_groups_conn_id, retry_policy=self.api_retry_policy)

    def request_body(self) -> dict[str, Any]:
        """Return the rendered request body.

        :raises InvalidWebhookDefinition: when the rendered id is not a positive integer or
            the body is not a JSON object.
        """
        if self.body is not None:
            if not isinstance(self.body, dict):
                raise InvalidWebhookDefinition(
                    f"task {self.task_id!r}: body must render to a JSON object, got {type(self.body).__name__}",
                    webhook=self.task_id,
                    field="body",
                )
            return self.body
        return {"wrangledDataset": {"id": _dataset_id(self.wrangled_dataset_id, task_id=self.task_id)}}

    def execute(self, context: Context) -> int:
        """Start the job group and, when asked, wait for it.

        :return: the job group id.
        """
        job_group = self.hook.run_job_group(self.request_body())
        job_group_id: int = job_group["id"]
        self.log.info("Started job group %s (%s)", job_group_id, job_group.get("reason", "no reason given"))
        if not self.wait_for_completion:
            return job_group_id
        if self.deferrable:
            self.defer(
                trigger=JobGroupTrigger(
                    job_group_id=job_group_id,
                    end_time=time.time() + self.timeout,
                    job_groups_conn_id=self.job_groups_conn_id,
                    poll_interval=self.poll_interval,
                    retry_policy=dataclasses.asdict(self.api_retry_policy),
                ),
                method_name="execute_complete",
            )
        self.hook.wait_for_job_group(job_group_id, poll_interval=self.poll_interval, timeout=self.timeout)
        self.log.info("Job group %s is complete", job_group_id)
        return job_group_id

    def execute_complete(self, context: Context, event: dict[str, Any]) -> int:
        """Finish after the trigger fired: succeed on ``Complete``, fail otherwise.

        :param context: the task context.
        :param event: the :class:`~airflow_webhook_provider.triggers.job_group.JobGroupTrigger` payload.
        :return: the job group id.
        :raises JobGroupFailed: when the job group ended ``Failed`` or ``Canceled``.
        :raises JobGroupsError: when the wait timed out or the API failed.
        """
        job_group_id: int = event["job_group_id"]
        outcome = event["outcome"]
        if outcome == "complete":
            self.log.info("Job group %s is complete", job_group_id)
            return job_group_id
        if outcome == "failed":
            raise job_group_failed(job_group_id, event["status"])
        if outcome == "timeout":
            raise wait_timed_out(job_group_id, event["status"], self.timeout)
        if event.get("error") == InvalidConnection.__name__:
            raise InvalidConnection(event["message"], conn_id=self.job_groups_conn_id)
        error = _API_ERRORS.get(event.get("error", ""), JobGroupsError)
        raise error(event["message"], status_code=event.get("status_code"), url=event.get("url"))


def _dataset_id(value: object, *, task_id: str | None) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) == 0:
        raise InvalidWebhookDefinition(
            f"task {task_id!r}: wrangled_dataset_id must be a positive integer (the recipe id in the "
            f"flow's URL, ...?recipe=4), got {value!r}",
            webhook=task_id,
            field="wrangled_dataset_id",
        )
    return int(text)
