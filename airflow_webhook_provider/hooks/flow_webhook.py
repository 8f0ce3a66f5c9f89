"""The ``flow_webhook`` connection type and its hook: the transport entry point."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import check_limits
from airflow_webhook_provider.core.exceptions import FlowWebhookError
from airflow_webhook_provider.core.identity import random_delivery_id
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.endpoints import endpoint_from_connection
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for
from airflow_webhook_provider.delivery.sender import shared_sender

if TYPE_CHECKING:
    from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
    from airflow_webhook_provider.core.outcome import DeliveryResult
    from airflow_webhook_provider.core.retry import RetrySchedule
    from airflow_webhook_provider.delivery.endpoints import Endpoint
    from airflow_webhook_provider.delivery.transport import Pools

__all__ = ["FlowWebhookHook"]


class FlowWebhookHook(BaseHook):
    """Send flow webhooks to the receiver described by a ``flow_webhook`` connection.

    The connection's Host is the full URL, its Password the secret key that signs each
    request; the extras (see :class:`~airflow_webhook_provider.delivery.endpoints.ConnectionExtras`)
    set the method, headers, TLS, retries and timeout. The secret and every header value
    are registered with Airflow's secrets masker.

    Every message goes through the delivery pipeline, so it is recorded in the ledger and
    redelivered if the receiver misses it. In callbacks, let ``FlowWebhooks(...).attach(dag)``
    or :class:`~airflow_webhook_provider.notifications.flow_webhook.FlowWebhookNotifier`
    record messages (a dispatcher then sends them); :meth:`deliver` is for a task that
    wants to send one now and see the answer.

    Usage::

        hook = FlowWebhookHook(flow_webhook_conn_id="slack_webhook")
        result = hook.deliver(webhook, JobEvent(flow_id="etl", job_id=run_id, job_status="failed"))
        ok, message = hook.test_connection()

    :param flow_webhook_conn_id: the connection id.
    :param retry: quick-retry limits for :meth:`deliver`; ``[flow_webhook]`` config when omitted.
    """

    conn_name_attr = "flow_webhook_conn_id"
    default_conn_name = "flow_webhook_default"
    conn_type = "flow_webhook"
    hook_name = "Flow Webhook"

    def __init__(
        self, flow_webhook_conn_id: str = default_conn_name, *, retry: RetrySchedule | None = None
    ) -> None:
        super().__init__()
        self.flow_webhook_conn_id = flow_webhook_conn_id
        self._retry = retry

    @cached_property
    def _pipeline(self) -> Pipeline:
        pipeline = Pipeline.from_config()
        if self._retry is not None:
            pipeline.settings = replace(pipeline.settings, retry=self._retry)
        return pipeline

    @cached_property
    def endpoint(self) -> Endpoint:
        """The receiver's transport settings, read from the connection.

        :raises InvalidConnection: naming the connection, the field and the fix.
        """
        return endpoint_from_connection(self.get_connection(self.flow_webhook_conn_id), config.load())

    def get_conn(self) -> Pools:
        """Return the pooled HTTP connections shared by every webhook in this process."""
        return shared_sender().pools

    def deliver(
        self, webhook: FlowWebhook, event: JobEvent, *, delivery_id: str | None = None
    ) -> DeliveryResult:
        """Record one message through this connection and send it now, with quick retries.

        :param webhook: the definition (sent through this connection whatever its ``conn_id``).
        :param event: what happened.
        :param delivery_id: the delivery id; a new one when omitted.
        :return: the outcome; a failing receiver does not raise.
        :raises FlowWebhookError: when the connection or definition cannot make a message.
        """
        check_limits(
            [webhook], self._pipeline.settings.limits, where=f"connection {self.flow_webhook_conn_id!r}"
        )
        message = message_for(
            webhook.model_copy(update={"conn_id": self.flow_webhook_conn_id, "url": None}),
            event,
            clear_number=0,
            capture=CaptureSource.CALLBACK,
            delivery_id=delivery_id or random_delivery_id(),
        )
        return self._pipeline.send(message)

    def test_connection(self) -> tuple[bool, str]:
        """Send one signed test message (``$jobId`` and ``$jobStatus`` are ``test``), without retries.

        The message is recorded in the ledger like any other and sent by the dispatcher when
        one is alive; its answer is reported either way.

        :return: ``(True, message)`` when the receiver answered 2xx, else ``(False, reason)``.
        """
        try:
            endpoint = self.endpoint
            report = self._pipeline.test(self.flow_webhook_conn_id, wait_seconds=endpoint.timeout + 10)
        except FlowWebhookError as exc:
            return False, str(exc)
        signed = "signed" if endpoint.secret else "unsigned (no secret key)"
        if report.delivered:
            took = (
                f" in {report.duration_seconds * 1000:.0f} ms" if report.duration_seconds is not None else ""
            )
            return True, (
                f"Receiver answered HTTP {report.status_code}{took} to a {signed} test message "
                f"(sent by the {report.sent_by}, delivery {report.delivery_id})"
            )
        if report.sent_by == "queued":
            return False, f"The dispatcher did not send the test message within {endpoint.timeout + 10:.0f} s"
        if report.status_code is not None:
            excerpt = report.response_excerpt[:120].strip()
            return False, f"Receiver answered HTTP {report.status_code}" + (f": {excerpt}" if excerpt else "")
        return False, f"Could not reach the receiver: {report.error}"
