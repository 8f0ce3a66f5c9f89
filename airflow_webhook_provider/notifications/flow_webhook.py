"""A notifier for attaching one flow webhook by hand, at DAG or task level."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.callbacks import submit
from airflow_webhook_provider.capture.context import (
    clear_number_of,
    end_time_of,
    job_url,
    logical_date_of,
    state_name,
)
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent, check_limits
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition, TemplateError
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.core.templating import parse_template

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context

__all__ = ["FlowWebhookNotifier"]

log = logging.getLogger(__name__)

_JINJA_MARKERS = ("{{", "{%")


class FlowWebhookNotifier(BaseNotifier):
    """Send one flow webhook from a DAG-level or task-level callback.

    Use :class:`~airflow_webhook_provider.core.definitions.FlowWebhooks` to attach many webhooks with
    trigger rules; use this notifier to attach one where you choose::

        DAG(..., on_failure_callback=FlowWebhookNotifier(
            name="page-on-call",
            conn_id="pager",
            body='{"text": "Job $jobId of {{ dag.dag_id }} ended: $jobStatus"}',
        ))

    Jinja (``{{ ... }}``) renders first, then ``$references``. The message is recorded in
    the ledger and sent like every other (by the dispatcher when one is alive); a failing
    receiver never fails the task or run.

    :param name: the webhook's name, shown in logs.
    :param conn_id: a ``flow_webhook`` connection (signed); or give ``url``.
    :param url: a plain http(s) URL (unsigned). (templated)
    :param on: ``"success"``, ``"failure"`` or ``"any"`` (default): which ends send.
    :param method: the HTTP method; the connection's, else POST, when omitted.
    :param headers: extra headers, over the connection's. (templated)
    :param body: the body template. (templated)
    :param query: query parameters; values are templates. (templated)
    """

    template_fields = ("url", "headers", "body", "query")

    def __init__(
        self,
        *,
        name: str = "flow-webhook",
        conn_id: str | None = None,
        url: str | None = None,
        on: str = "any",
        method: str | None = None,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        query: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.conn_id = conn_id
        self.url = url
        self.on = on
        self.method = method
        self.headers = headers or {}
        self.body = body
        self.query = query or {}
        self._check_definition()

    def _definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "conn_id": self.conn_id,
            "url": self.url,
            "on": self.on,
            "method": self.method,
            "headers": self.headers,
            "body": self.body,
            "query": self.query,
        }

    def _check_definition(self) -> None:
        """Validate at parse time whatever Jinja does not change."""
        if self.on == "late":
            raise InvalidWebhookDefinition(
                f"flow webhook {self.name!r}: field 'on': a notifier runs when a run or task ends, so it "
                'cannot report a late run; use FlowWebhook(on="late", late_after=...) with '
                "FlowWebhooks(...).attach(dag), which adds a deadline alert to the DAG",
                webhook=self.name,
                field="on",
            )
        definition = self._definition()
        if any(marker in (self.body or "") for marker in _JINJA_MARKERS):
            # The JSON check must wait for Jinja; the $references can be checked now.
            try:
                parse_template(self.body or "")
            except TemplateError as exc:
                raise InvalidWebhookDefinition(
                    f"flow webhook {self.name!r}: field 'body': {exc}", webhook=self.name, field="body"
                ) from None
            definition["body"] = "null"  # valid as JSON and as text; keeps the method check
        if any(marker in (self.url or "") for marker in _JINJA_MARKERS):
            definition["url"] = "http://rendered.later/"
        check_limits([FlowWebhook(**definition)], config.limits(), where=f"notifier {self.name!r}")

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Render the templated fields; also when the context holds a serialized DAG."""
        if jinja_env is None and not hasattr(context.get("dag"), "get_template_env"):
            # Under dag.test() Airflow runs DAG-level callbacks with the serialized DAG,
            # which has no Jinja environment; a plain sandboxed one renders the same.
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

    def notify(self, context: Context) -> None:
        """Send the webhook if the state that called it matches ``on``."""
        try:
            webhook = FlowWebhook(**self._definition())
            if "reason" in context:  # DAG-level callbacks carry the reason the run ended
                state = "success" if context["reason"] == "success" else "failed"
                output_name = ""
            else:
                state = state_name(context["ti"].state)
                output_name = context["ti"].task_id
            if not webhook.fires_on(state):
                log.info(
                    "Flow webhook %s skipped: state %s does not match on=%s", webhook.name, state, webhook.on
                )
                return
            from airflow_webhook_provider.delivery.pipeline import message_for

            dag_id = context["dag"].dag_id
            run_id = str(context["run_id"])
            event = JobEvent(
                flow_id=dag_id,
                job_id=run_id,
                job_status=state,
                output_name=output_name,
                logical_date=logical_date_of(context),
                job_url=job_url(config.load().base_url, dag_id, run_id),
            )
            ended_at = end_time_of(context.get("dag_run")) if not output_name else time.time()
            submit(
                [
                    message_for(
                        webhook,
                        event,
                        clear_number=clear_number_of(context),
                        capture=CaptureSource.CALLBACK,
                        origin="notifier",
                        event_at=ended_at,
                    )
                ]
            )
        except Exception as exc:
            log.error("Flow webhook %s was not sent: %s: %s", self.name, type(exc).__name__, exc)
