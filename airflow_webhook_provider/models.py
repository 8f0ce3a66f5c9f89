"""Flow webhook definitions: what to send, where, and when.

A :class:`FlowWebhook` is validated when it is built, which is when the DAG file is
parsed, so a mistake shows as a DAG import error that names the webhook, the field and
the fix. This module imports nothing from Airflow.

Usage::

    from airflow_webhook_provider import FlowWebhook, FlowWebhooks

    FlowWebhooks(
        FlowWebhook(
            name="notify-slack",
            conn_id="slack_webhook",
            on="failure",
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId has completed. Status: $jobStatus."}',
        ),
        FlowWebhook(name="report-ready", conn_id="reports", on="success", outputs=["publish_report"]),
    ).attach(dag)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_webhook_provider.exceptions import InvalidWebhookDefinition, TemplateError
from airflow_webhook_provider.templating import (
    Template,
    check_json_template,
    parse_template,
    render_mode_for,
)

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = [
    "DEFAULT_MAX_WEBHOOKS_PER_FLOW",
    "Event",
    "FlowWebhook",
    "FlowWebhooks",
    "JobEvent",
    "event_for_state",
]

Event = Literal["success", "failure"]
Trigger = Literal["success", "failure", "any"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

DEFAULT_MAX_WEBHOOKS_PER_FLOW = 50
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Set by the sender on every request; a definition may not override them.
RESERVED_HEADERS = frozenset(
    {"x-webhook-signature", "x-webhook-id", "content-length", "host", "transfer-encoding"}
)
#: Credentials belong in the connection (its Headers extra is stored encrypted), never in DAG code.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_KEYS = ("secret", "secret_key", "secretKey", "password", "token")

_EVENT_BY_STATE: Mapping[str, Event] = {
    "success": "success",
    "failed": "failure",
    "upstream_failed": "failure",
}


def event_for_state(state: str | None) -> Event | None:
    """Map an Airflow run or task state to the event it triggers.

    ``success`` is a success; ``failed`` and ``upstream_failed`` are failures; any other
    state (``skipped``, ``removed``, unfinished states) triggers nothing.

    :param state: the Airflow state as a lowercase string.
    """
    return _EVENT_BY_STATE.get(str(state).lower()) if state is not None else None


class _FieldProblem(ValueError):
    """A cross-field problem, raised from a model validator, that knows which field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


@dataclass(frozen=True)
class JobEvent:
    """What happened: a DAG run, or one output task of it, ended in a state.

    :param flow_id: the DAG id.
    :param job_id: the DAG run's ``run_id``.
    :param job_status: the Airflow state of the run or output task, lowercase.
    :param output_name: the output task id, or empty for the whole run.
    :param logical_date: the run's logical date in ISO 8601, or empty.
    :param job_url: a link to the run in the Airflow UI, or empty.
    """

    flow_id: str
    job_id: str
    job_status: str
    output_name: str = ""
    logical_date: str = ""
    job_url: str = ""

    def references(self, *, webhook_name: str, delivery_id: str) -> dict[str, str]:
        """Return the value of every template reference for one message."""
        return {
            "jobId": self.job_id,
            "jobStatus": self.job_status,
            "flowId": self.flow_id,
            "outputName": self.output_name,
            "logicalDate": self.logical_date,
            "jobUrl": self.job_url,
            "webhookName": webhook_name,
            "deliveryId": delivery_id,
        }


class FlowWebhook(_Definition):
    """One flow webhook: an HTTP message sent when a job or an output ends in a matching state.

    :param name: a name unique within the DAG, shown in logs, the ledger and the UI.
    :param conn_id: a ``flow_webhook`` connection holding the URL, secret key, headers and
        transport settings. Exactly one of ``conn_id`` and ``url`` is required.
    :param url: a plain http(s) URL, for an unsigned webhook without a connection.
    :param on: ``"success"``, ``"failure"`` or ``"any"``.
    :param outputs: None for one message per finished DAG run, or the task ids of the
        outputs whose own end triggers a message each.
    :param method: GET, POST, PUT, PATCH or DELETE; default POST (or the connection's method
        when ``conn_id`` is set and ``method`` is not given).
    :param headers: HTTP headers, merged over the connection's (credentials belong in the
        connection).
    :param body: the body template (POST, PUT and PATCH only), with references such as
        ``$jobId`` and ``$jobStatus``; ``$$`` is a literal ``$``.
    :param query: query parameters appended to the URL; values are templates.
    """

    name: str = Field(max_length=200)
    conn_id: str | None = Field(default=None, min_length=1, max_length=250)
    url: str | None = Field(default=None, max_length=2048)
    on: Trigger = "any"
    outputs: tuple[str, ...] | None = None
    method: Method | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    query: dict[str, str] = Field(default_factory=dict)

    _body_template: Template | None = PrivateAttr(default=None)
    _query_templates: dict[str, Template] = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = _definition_error(exc, data)
        else:
            return
        # Raised outside the except block so that the pydantic error, whose text holds
        # the input (a refused secret included), is not even kept as __context__.
        raise error

    @model_validator(mode="before")
    @classmethod
    def _refuse_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in _SECRET_KEYS:
                if key in data:
                    raise _FieldProblem(
                        key,
                        "a secret does not belong in DAG code; put it in the Secret key (password) of "
                        "the flow_webhook connection named by conn_id",
                    )
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank; give the webhook a short unique name")
        if _FORBIDDEN_VALUE_CHARS.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _normalise_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_http_url(value)
        return value

    @field_validator("outputs", mode="before")
    @classmethod
    def _check_outputs(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ValueError(
                'must be a list of task ids, e.g. outputs=["publish"]; use None for the whole run'
            )
        outputs = tuple(value)
        if not outputs:
            raise ValueError("must name at least one task; use None for one message per finished run")
        if any(not isinstance(task_id, str) or not task_id for task_id in outputs):
            raise ValueError("every output must be a non-empty task id string")
        duplicates = sorted({t for t in outputs if outputs.count(t) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once; name each output once")
        return outputs

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name[:60]!r} is not a valid HTTP token; use letters, digits and - only"
                )
            lowered = name.lower()
            if lowered in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the sender on every request; remove it")
            if lowered in CREDENTIAL_HEADERS:
                raise ValueError(
                    f"header {name} carries a credential, which does not belong in DAG code; put it in "
                    "the Headers extra of the flow_webhook connection"
                )
            if _FORBIDDEN_VALUE_CHARS.search(header_value):
                raise ValueError(
                    f"header {name} has a control character (CR, LF or NUL) in its value; remove it"
                )
        return value

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            if not key:
                raise ValueError("query parameter names must not be empty")
            try:
                parse_template(template)
            except TemplateError as exc:
                raise ValueError(f"parameter {key}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> FlowWebhook:
        if (self.conn_id is None) == (self.url is None):
            raise _FieldProblem(
                "conn_id",
                "set exactly one of conn_id (a flow_webhook connection, for signed webhooks) and url "
                "(a plain URL, unsigned)",
            )
        if self.body is not None and self.method in {"GET", "DELETE"}:
            raise _FieldProblem(
                "body",
                f"a body is sent only with POST, PUT or PATCH, not {self.method}; remove body or set "
                'method="POST"',
            )
        if self.body is not None:
            try:
                template = parse_template(self.body)
                if render_mode_for(self.declared_content_type) == "json":
                    check_json_template(template)
            except TemplateError as exc:
                raise _FieldProblem("body", str(exc)) from None
            self._body_template = template
        self._query_templates = {key: parse_template(value) for key, value in self.query.items()}
        return self

    @property
    def declared_content_type(self) -> str | None:
        """The Content-Type this definition sets, if any."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return None

    @property
    def body_template(self) -> Template | None:
        """The parsed body template."""
        return self._body_template

    @property
    def query_templates(self) -> Mapping[str, Template]:
        """The parsed query value templates."""
        return self._query_templates

    def fires_on(self, state: str | None) -> bool:
        """Tell whether a run or output ending in ``state`` triggers this webhook.

        :param state: the Airflow state, e.g. ``success``, ``failed``, ``upstream_failed``.
        """
        event = event_for_state(state)
        return event is not None and self.on in (event, "any")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FlowWebhook:
        """Build a definition from a mapping, e.g. one item of a definition file.

        :raises InvalidWebhookDefinition: naming the webhook, the field and the fix.
        """
        if not isinstance(data, Mapping):
            raise InvalidWebhookDefinition("each webhook must be a mapping of field names to values")
        return cls(**data)


def _check_http_url(value: str) -> None:
    if _FORBIDDEN_VALUE_CHARS.search(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"scheme {parts.scheme or '(none)'!r} is not allowed; use an http:// or https:// URL"
        )
    if not parts.hostname:
        raise ValueError("has no host; use a full URL such as https://hooks.example.com/notify")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not carry credentials (user:password@); use a flow_webhook connection with a Headers extra"
        )


_FIELD_ORDER = tuple(FlowWebhook.model_fields)


def _definition_error(exc: ValidationError, data: Mapping[str, Any]) -> InvalidWebhookDefinition:
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else None
    label = f"flow webhook {name!r}" if name else "flow webhook (unnamed)"
    problems: list[str] = []
    first_field: str | None = None
    for error in exc.errors(include_url=False, include_input=False):
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldProblem):
            field = cause.field
        else:
            field = ".".join(str(part) for part in error["loc"]) or "definition"
        if error["type"] == "extra_forbidden":
            message = f"unknown field; the fields are {', '.join(_FIELD_ORDER)}"
        elif error["type"] == "missing":
            message = "is required"
        else:
            message = str(cause) if cause is not None else error["msg"]
        first_field = first_field or field
        problems.append(f"field {field!r}: {message}")
    return InvalidWebhookDefinition(f"{label}: {'; '.join(problems)}", webhook=name, field=first_field)


def max_webhooks_per_flow() -> int:
    """Return ``[flow_webhook] max_webhooks_per_flow`` from Airflow's config (default 50)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # used outside Airflow, e.g. by a receiver validating a file
        return DEFAULT_MAX_WEBHOOKS_PER_FLOW
    return int(conf.getint("flow_webhook", "max_webhooks_per_flow", fallback=DEFAULT_MAX_WEBHOOKS_PER_FLOW))


class FlowWebhooks:
    """The webhooks of one flow (DAG): unique names, at most ``max_webhooks_per_flow``.

    Usage::

        FlowWebhooks(
            FlowWebhook(name="on-fail", conn_id="alerts", on="failure"),
        ).attach(dag)

    :param webhooks: the definitions.
    :raises InvalidWebhookDefinition: for a duplicate name or too many webhooks.
    """

    def __init__(self, *webhooks: FlowWebhook) -> None:
        for webhook in webhooks:
            if not isinstance(webhook, FlowWebhook):
                raise InvalidWebhookDefinition(
                    f"FlowWebhooks takes FlowWebhook definitions, got {type(webhook).__name__}"
                )
        _check_unique(webhooks)
        self._webhooks = tuple(webhooks)
        check_limit(len(self._webhooks), where="FlowWebhooks")

    def __iter__(self) -> Iterator[FlowWebhook]:
        return iter(self._webhooks)

    def __len__(self) -> int:
        return len(self._webhooks)

    def __repr__(self) -> str:
        return f"FlowWebhooks({', '.join(repr(w.name) for w in self._webhooks)})"

    def attach(self, dag: DAG) -> DAG:
        """Wire every webhook to the DAG and return the DAG.

        Webhooks without ``outputs`` become DAG-level success/failure callbacks; webhooks
        with ``outputs`` become task-level callbacks on those tasks, plus a DAG-level check
        for outputs that never ran (``upstream_failed``). Callbacks the author set are kept.
        Attaching the same definitions again adds nothing.

        :param dag: the DAG.
        :return: the same DAG.
        :raises InvalidWebhookDefinition: for an output that is not a task of the DAG, a name
            used twice with different definitions, or too many webhooks.
        """
        from airflow_webhook_provider.callbacks import attach_webhooks

        attach_webhooks(dag, self._webhooks)
        return dag


def _check_unique(webhooks: Iterable[FlowWebhook]) -> None:
    seen: set[str] = set()
    for webhook in webhooks:
        if webhook.name in seen:
            raise InvalidWebhookDefinition(
                f"flow webhook {webhook.name!r}: field 'name': is used by two webhooks of this flow; "
                "give each webhook a unique name",
                webhook=webhook.name,
                field="name",
            )
        seen.add(webhook.name)


def check_limit(count: int, *, where: str) -> None:
    """Refuse more webhooks than ``[flow_webhook] max_webhooks_per_flow`` allows.

    :param count: the number of webhooks of one flow.
    :param where: the flow, for the message.
    :raises InvalidWebhookDefinition: when ``count`` is over the limit.
    """
    limit = max_webhooks_per_flow()
    if count > limit:
        raise InvalidWebhookDefinition(
            f"{where} defines {count} flow webhooks, more than the {limit} allowed per flow; remove some, "
            "or ask an administrator to raise [flow_webhook] max_webhooks_per_flow",
            field="webhooks",
        )
