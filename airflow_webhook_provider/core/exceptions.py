"""Exceptions raised by airflow-webhook-provider.

Every error the package raises derives from :class:`FlowWebhookError`, so callers can
catch the whole family with one ``except``::

    FlowWebhookError
    ├── InvalidWebhookDefinition (also ValueError)   a FlowWebhook / FlowWebhooks is wrong
    ├── InvalidConnection (also ValueError)          a flow_webhook / job_groups connection is wrong
    ├── TemplateError (also ValueError)              a body or query template cannot be used
    ├── InvalidSignature (also ValueError)           a received signature does not verify
    └── JobGroupsError                               the jobGroups API refused or failed a request
        ├── JobGroupsAuthError                       the access token was rejected (401/403)
        ├── JobGroupsNotFound                        unknown wrangled dataset or job group (404)
        └── JobGroupFailed                           the job group ended Failed or Canceled

Receiver failures while delivering a webhook are not exceptions: delivery returns a
result that says what happened, because a failing receiver must never fail a task.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "FlowWebhookError",
    "InvalidConnection",
    "InvalidSignature",
    "InvalidWebhookDefinition",
    "JobGroupFailed",
    "JobGroupsAuthError",
    "JobGroupsError",
    "JobGroupsNotFound",
    "TemplateError",
]


class FlowWebhookError(Exception):
    """Base class of every error raised by airflow-webhook-provider."""


class InvalidWebhookDefinition(FlowWebhookError, ValueError):
    """A flow webhook definition is invalid.

    :param message: what is wrong and how to fix it.
    :param webhook: the name of the webhook, when known.
    :param field: the (first) field that is wrong, when known.
    :param problems: every ``(field, what is wrong and the fix)`` found, for a form to show
        each beside its field; one problem of ``field`` when not given.
    """

    def __init__(
        self,
        message: str,
        *,
        webhook: str | None = None,
        field: str | None = None,
        problems: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.webhook = webhook
        self.field = field
        self.problems: tuple[tuple[str, str], ...] = (
            tuple(problems) if problems is not None else ((field or "definition", message),)
        )


class InvalidConnection(FlowWebhookError, ValueError):
    """An Airflow connection used by the provider is misconfigured.

    :param message: what is wrong and how to fix it.
    :param conn_id: the connection id.
    :param field: the connection field or extra key that is wrong, when known.
    """

    def __init__(self, message: str, *, conn_id: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.conn_id = conn_id
        self.field = field


class TemplateError(FlowWebhookError, ValueError):
    """A template (body or query value) uses a reference that does not exist or is malformed.

    :param message: what is wrong and how to fix it.
    :param position: the 0-based character offset in the template, when known.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class InvalidSignature(FlowWebhookError, ValueError):
    """A webhook signature header is malformed, stale, or does not match the payload."""


class JobGroupsError(FlowWebhookError):
    """The jobGroups API refused or failed a request.

    :param message: what failed and what to do.
    :param status_code: the HTTP status code, when a response was received.
    :param url: the URL that was requested.
    """

    def __init__(self, message: str, *, status_code: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url


class JobGroupsAuthError(JobGroupsError):
    """The jobGroups API rejected the access token (HTTP 401 or 403)."""


class JobGroupsNotFound(JobGroupsError):
    """The jobGroups API does not know the wrangled dataset or job group (HTTP 404)."""


class JobGroupFailed(JobGroupsError):
    """A job group reached a terminal status other than ``Complete``."""
