"""Flow webhook definitions: what to send, where, and when.

A :class:`FlowWebhook` is validated when it is built, which is when the DAG file is
parsed, so a mistake shows as a DAG import error that names the webhook, the field and
the fix. A :class:`WebhookSet` is the webhooks of one flow, read from and written to
definition files; :class:`~airflow_webhook_provider.capture.attach.FlowWebhooks` adds
``attach(dag)`` to it. The limits an administrator sets (:class:`Limits`) come in as
arguments: this module imports nothing from Airflow.

Usage::

    webhook = FlowWebhook(name="report-ready", conn_id="reports", on="success", outputs=["publish_report"])
    late = FlowWebhook(name="nightly-late", conn_id="alerts", on="late", late_after=timedelta(hours=2))
    webhooks = WebhookSet.from_file("webhooks.yaml", limits=Limits(max_webhooks_per_flow=50))
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition, TemplateError
from airflow_webhook_provider.core.states import Event
from airflow_webhook_provider.core.templating import (
    Template,
    check_json_template,
    parse_template,
    render_mode_for,
)

__all__ = [
    "DEFINITION_FILE_VERSION",
    "FileFormat",
    "FlowWebhook",
    "JobEvent",
    "Limits",
    "WebhookSet",
    "check_limits",
    "definition_file_schema",
    "event_for_state",
    "parse_definition_text",
]

#: The ends a webhook can listen for (and all a webhook defined in the UI may choose).
Trigger = Literal["success", "failure", "any"]
#: What sends a message: an end, or ``late``, a run still not finished ``late_after`` after it was
#: queued (a deadline alert on the DAG, which only a DAG file can add).
On = Literal[Trigger, "late"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
FileFormat = Literal["yaml", "json"]

#: The ``version`` of the definition files this release reads and writes.
DEFINITION_FILE_VERSION = 1
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
    "success": Event.SUCCESS,
    "failed": Event.FAILURE,
    "upstream_failed": Event.FAILURE,
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
class Limits:
    """What an administrator allows per flow (``[flow_webhook]`` options, read by the config module).

    :param max_webhooks_per_flow: the most webhooks one DAG may define.
    :param max_body_bytes: the largest body template, in bytes.
    """

    max_webhooks_per_flow: int = 50
    max_body_bytes: int = 1024 * 1024


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
    :param on: ``"success"``, ``"failure"`` or ``"any"`` (an end); or ``"late"``: one message
        when a run is still not finished ``late_after`` after it was queued.
    :param late_after: with ``on="late"`` only (and required there): how long after a run is
        queued it counts as late; a positive :class:`~datetime.timedelta` (in a definition
        file, an ISO 8601 duration such as ``PT2H``, or a number of seconds).
    :param outputs: None for one message per finished DAG run, or the task ids of the
        outputs whose own end triggers a message each (not with ``on="late"``).
    :param method: GET, POST, PUT, PATCH or DELETE; default POST (or the connection's method
        when ``conn_id`` is set and ``method`` is not given).
    :param headers: HTTP headers, merged over the connection's (credentials belong in the
        connection).
    :param body: the body template (POST, PUT and PATCH only), with references such as
        ``$jobId`` and ``$jobStatus``; ``$$`` is a literal ``$``.
    :param query: query parameters appended to the URL; values are templates.
    """

    # The descriptions and schema extras document the fields in the published JSON Schema
    # of definition files; validation is the validators' job.
    name: str = Field(max_length=200, description="A name unique within the DAG, shown in logs and the UI.")
    conn_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=250,
        description="A flow_webhook connection (URL, secret key, headers); exactly one of conn_id and url.",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="A plain http(s) URL for an unsigned webhook; exactly one of conn_id and url.",
    )
    on: On = Field(
        default="any",
        description="The end state that sends a message, or late: a run still not finished late_after "
        "after it was queued.",
    )
    late_after: timedelta | None = Field(
        default=None,
        description="Only with on: late, and required there: how long after a run is queued it counts "
        "as late; an ISO 8601 duration (PT2H) or a number of seconds.",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "duration"},
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "null"},
            ]
        },
    )
    outputs: tuple[str, ...] | None = Field(
        default=None,
        description="Task ids whose own end sends a message each; null for one message per finished run.",
        json_schema_extra={"minItems": 1, "uniqueItems": True},
    )
    method: Method | None = Field(
        default=None, description="The HTTP method; default: the connection's, else POST."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers merged over the connection's; credentials belong in the connection.",
    )
    body: str | None = Field(
        default=None,
        description="The body template (POST, PUT, PATCH only), with references such as $jobId; $$ is a $.",
    )
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters appended to the URL; values are templates."
    )

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

    @field_validator("late_after", mode="wrap")
    @classmethod
    def _check_late_after(cls, value: Any, parse: ValidatorFunctionWrapHandler) -> timedelta | None:
        fix = "e.g. late_after=timedelta(hours=2) (in a definition file: PT2H, or 7200 seconds)"
        if isinstance(value, bool):
            raise ValueError(f"must be a duration, not {value}; {fix}")
        try:
            parsed: timedelta | None = parse(value)
        except ValidationError:
            raise ValueError(f"{str(value)[:60]!r} is not a duration; {fix}") from None
        if parsed is not None and parsed <= timedelta(0):
            raise ValueError(f"must be a positive duration; {fix}")
        return parsed

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
        if self.on == "late":
            if self.late_after is None:
                raise _FieldProblem(
                    "late_after",
                    'is required with on="late": say how long after a run is queued it counts as late, '
                    "e.g. late_after=timedelta(hours=2) (in a definition file: PT2H, or 7200 seconds)",
                )
            if self.outputs is not None:
                raise _FieldProblem(
                    "outputs",
                    'a late message is about the whole run; remove outputs, or use on="success", '
                    '"failure" or "any" for messages about output tasks',
                )
        elif self.late_after is not None:
            raise _FieldProblem(
                "late_after",
                f'applies only to on="late", not on="{self.on}"; remove late_after, or set on="late"',
            )
        for field, text in (
            ("body", self.body or ""),
            ("url", self.url or ""),
            *_texts(self.headers, "headers"),
        ):
            _check_text(field, text)
        for field, text in _texts(self.query, "query"):
            _check_text(field, text)
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

        A ``late`` webhook fires on no end: its deadline alert sends it (see
        :mod:`airflow_webhook_provider.capture.deadline`).

        :param state: the Airflow state, e.g. ``success``, ``failed``, ``upstream_failed``.
        """
        event = event_for_state(state)
        return event is not None and self.on in (event.value, "any")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FlowWebhook:
        """Build a definition from a mapping, e.g. one item of a definition file.

        :raises InvalidWebhookDefinition: naming the webhook, the field and the fix.
        """
        if not isinstance(data, Mapping):
            raise InvalidWebhookDefinition("each webhook must be a mapping of field names to values")
        return cls(**data)


def _texts(mapping: Mapping[str, str], field: str) -> list[tuple[str, str]]:
    return [(field, text) for pair in mapping.items() for text in pair]


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
    _check_host(parts.hostname)
    try:
        parts.port  # noqa: B018  # urlsplit checks the port only when asked
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None


def _check_host(host: str) -> None:
    if host.startswith("[") or ":" in host:
        return  # an IPv6 literal; urlsplit has checked the brackets
    too_long = ValueError("host name is too long (at most 253 characters, 63 per label)")
    if len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        raise too_long
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(
            f"host {host[:60]!r} is not a valid internationalised domain name; check the spelling"
        ) from None
    if len(ascii_host) > 253 or any(len(label) > 63 for label in ascii_host.split(".")):
        raise too_long


_FIELD_ORDER = tuple(FlowWebhook.model_fields)


def _definition_error(exc: ValidationError, data: Mapping[str, Any]) -> InvalidWebhookDefinition:
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else None
    label = f"flow webhook {name!r}" if name else "flow webhook (unnamed)"
    problems: list[tuple[str, str]] = []
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
        problems.append((field, message))
    text = "; ".join(f"field {field!r}: {message}" for field, message in problems)
    return InvalidWebhookDefinition(
        f"{label}: {text}", webhook=name, field=problems[0][0] if problems else None, problems=problems
    )


def _check_text(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _FieldProblem(
            field,
            f"has a character at position {exc.start} that is not valid UTF-8 (a lone surrogate); remove it",
        ) from None


class WebhookSet:
    """The webhooks of one flow (DAG), with unique names; read from and written to definition files.

    Usage::

        webhooks = WebhookSet(FlowWebhook(name="on-fail", conn_id="alerts", on="failure"))
        check_limits(webhooks, Limits(), where="DAG 'etl'")
        text = webhooks.dump("yaml")

    :param webhooks: the definitions.
    :raises InvalidWebhookDefinition: for a duplicate name.
    """

    def __init__(self, *webhooks: FlowWebhook) -> None:
        for webhook in webhooks:
            if not isinstance(webhook, FlowWebhook):
                raise InvalidWebhookDefinition(
                    f"{type(self).__name__} takes FlowWebhook definitions, got {type(webhook).__name__}"
                )
        _check_unique(webhooks)
        self._webhooks = tuple(webhooks)

    def __iter__(self) -> Iterator[FlowWebhook]:
        return iter(self._webhooks)

    def __len__(self) -> int:
        return len(self._webhooks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(w.name) for w in self._webhooks)})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, limits: Limits | None = None) -> Self:
        """Load the definitions of a YAML or JSON definition file, checked as the constructor checks them.

        The file is a mapping with a ``webhooks`` list, whose items have the fields of
        :class:`FlowWebhook`, and optionally ``version: 1``. A ``.json`` file is read as
        JSON, a ``.yaml`` or ``.yml`` file as YAML, any other by its first character. In
        YAML, ``on``, ``off``, ``yes`` and ``no`` are plain strings (as in YAML 1.2), so
        ``on: failure`` means the ``on`` field.

        Usage::

            FlowWebhooks.from_file(Path(__file__).with_name("webhooks.yaml")).attach(dag)

        :param path: the file.
        :param limits: also check the administrator's limits; attaching to a DAG checks them anyway.
        :return: the definitions.
        :raises InvalidWebhookDefinition: naming the file, the webhook, the field and the fix,
            one line per problem found.
        :raises OSError: when the file cannot be read.
        """
        file = Path(path)
        source = str(path)
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidWebhookDefinition(
                f"{source}: is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        return cls.from_text(text, file_format=_file_format(file, text), source=source, limits=limits)

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        file_format: FileFormat | None = None,
        source: str = "definitions",
        limits: Limits | None = None,
    ) -> Self:
        """Load the definitions of a definition file's text (an upload, a request body).

        :param file_format: ``yaml`` or ``json``; by default JSON when the text starts with
            ``{`` or ``[``, YAML otherwise.
        :param source: what the text is, for the start of every line of an error.
        :param limits: also check the administrator's limits.
        :raises InvalidWebhookDefinition: one line per problem found; ``problems`` lists them
            by field (``webhooks[2].body``).
        """
        return cls.from_mapping(
            parse_definition_text(text, file_format, source), source=source, limits=limits
        )

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "definitions", limits: Limits | None = None) -> Self:
        """Build the definitions from the parsed contents of a definition file.

        :param data: a mapping with a ``webhooks`` list and optionally ``version``.
        :param source: the file name, which starts every line of an error.
        :param limits: also check the administrator's limits.
        :return: the definitions.
        :raises InvalidWebhookDefinition: one line per problem found.
        """
        problems: list[InvalidWebhookDefinition] = []
        items: Sequence[Any] = ()
        if data is None:
            problems.append(
                InvalidWebhookDefinition(
                    "is empty; write webhooks: followed by the list of definitions", field="webhooks"
                )
            )
        elif not isinstance(data, Mapping):
            problems.append(
                InvalidWebhookDefinition(
                    f"the top level must be a mapping with a 'webhooks' list, not {_kind(data)}; "
                    "write webhooks: followed by the list of definitions",
                    field="webhooks",
                )
            )
        else:
            problems += _top_level_problems(data)
            listed = data.get("webhooks")
            if isinstance(listed, Sequence) and not isinstance(listed, str | bytes):
                items = listed
        webhooks: list[FlowWebhook] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, Mapping):
                    item = {str(key): value for key, value in item.items()}
                webhooks.append(FlowWebhook.from_mapping(item))
            except InvalidWebhookDefinition as exc:
                problems.append(
                    InvalidWebhookDefinition(
                        f"webhooks[{index}]: {exc}",
                        webhook=exc.webhook,
                        field=exc.field,
                        problems=[(f"webhooks[{index}].{field}", message) for field, message in exc.problems],
                    )
                )
        if limits is not None:
            try:
                _check_count(len(items), limits, where="the file")
            except InvalidWebhookDefinition as exc:
                problems.append(exc)
            for webhook in webhooks:
                try:
                    _check_body_size(webhook, limits)
                except InvalidWebhookDefinition as exc:
                    problems.append(exc)
        try:
            _check_unique(webhooks)
        except InvalidWebhookDefinition as exc:
            problems.append(exc)
        if problems:
            raise InvalidWebhookDefinition(
                "\n".join(f"{source}: {problem}" for problem in problems),
                webhook=problems[0].webhook,
                field=problems[0].field,
                problems=[found for problem in problems for found in problem.problems],
            )
        return cls(*webhooks)

    def to_mapping(self) -> dict[str, Any]:
        """Return the contents of a definition file: ``version`` and ``webhooks``.

        Fields left at their defaults are left out; ``outputs`` is a list.
        """
        return {
            "version": DEFINITION_FILE_VERSION,
            "webhooks": [w.model_dump(mode="json", exclude_defaults=True) for w in self._webhooks],
        }

    def dump(self, file_format: FileFormat = "yaml") -> str:
        """Return a definition file that :meth:`from_file` reads back into equal definitions.

        :param file_format: ``yaml`` (multi-line bodies as literal blocks) or ``json``.
        """
        mapping = self.to_mapping()
        if file_format == "json":
            return json.dumps(mapping, indent=2, ensure_ascii=False) + "\n"
        return yaml.dump(
            mapping, Dumper=_DefinitionDumper, sort_keys=False, allow_unicode=True, default_flow_style=False
        )


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


def check_limits(webhooks: Iterable[FlowWebhook], limits: Limits, *, where: str) -> None:
    """Refuse more webhooks, or larger bodies, than the administrator allows.

    :param webhooks: every webhook of one flow.
    :param limits: ``[flow_webhook] max_webhooks_per_flow`` and ``max_body_bytes``.
    :param where: the flow, for the message.
    :raises InvalidWebhookDefinition: naming the webhook or the flow, the field and the fix.
    """
    listed = list(webhooks)
    _check_count(len(listed), limits, where=where)
    for webhook in listed:
        _check_body_size(webhook, limits)


def _check_count(count: int, limits: Limits, *, where: str) -> None:
    limit = limits.max_webhooks_per_flow
    if count > limit:
        raise InvalidWebhookDefinition(
            f"{where} defines {count} flow webhooks, more than the {limit} allowed per flow; remove some, "
            "or ask an administrator to raise [flow_webhook] max_webhooks_per_flow",
            field="webhooks",
        )


def _check_body_size(webhook: FlowWebhook, limits: Limits) -> None:
    size = len((webhook.body or "").encode("utf-8"))
    if size > limits.max_body_bytes:
        raise InvalidWebhookDefinition(
            f"flow webhook {webhook.name!r}: field 'body': is {size} bytes, more than [flow_webhook] "
            f"max_body_bytes ({limits.max_body_bytes}); send less, or ask an administrator to raise the limit",
            webhook=webhook.name,
            field="body",
        )


_FILE_KEYS = ("version", "webhooks")
_YAML_BOOL = "tag:yaml.org,2002:bool"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Sequence):
        return "a list"
    return f"a {type(value).__name__}"


def _top_level_problems(data: Mapping[Any, Any]) -> list[InvalidWebhookDefinition]:
    problems = [
        InvalidWebhookDefinition(
            f"unknown top-level key {key!r}; a definition file has only 'webhooks' (the list) and 'version'",
            field=str(key),
        )
        for key in data
        if key not in _FILE_KEYS
    ]
    version = data.get("version", DEFINITION_FILE_VERSION)
    if type(version) is not int or version != DEFINITION_FILE_VERSION:
        problems.append(
            InvalidWebhookDefinition(
                f"field 'version': {version!r} is not a version this release reads; write "
                f"version: {DEFINITION_FILE_VERSION} or leave it out",
                field="version",
            )
        )
    if "webhooks" not in data:
        problems.append(
            InvalidWebhookDefinition(
                "field 'webhooks': is required; list the webhook definitions under it", field="webhooks"
            )
        )
    else:
        listed = data["webhooks"]
        if not isinstance(listed, Sequence) or isinstance(listed, str | bytes):
            problems.append(
                InvalidWebhookDefinition(
                    f"field 'webhooks': must be a list of webhook definitions, not {_kind(listed)}",
                    field="webhooks",
                )
            )
    return problems


class _DefinitionLoader(yaml.SafeLoader):
    """A safe YAML loader that reads booleans as YAML 1.2 does and refuses duplicate keys.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, which would turn the
    ``on:`` field into the key ``True``; and a repeated key would silently replace a value.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice; keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DefinitionLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _YAML_BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DefinitionLoader.add_implicit_resolver(
    _YAML_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _DefinitionDumper(yaml.SafeDumper):
    """A safe YAML dumper that writes multi-line strings (bodies) as literal blocks, without aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_DefinitionDumper.add_representer(str, _represent_str)


class _DuplicateKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _file_format(path: Path, text: str) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def parse_definition_text(
    text: str, file_format: FileFormat | None = None, source: str = "definitions"
) -> Any:
    """Return the parsed contents of a definition file's text, unchecked (see :meth:`WebhookSet.from_mapping`).

    :param file_format: ``yaml`` or ``json``; by default JSON when the text starts with ``{`` or ``[``.
    :raises InvalidWebhookDefinition: when the text is not valid YAML or JSON.
    """
    if file_format is None:
        file_format = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    if file_format == "json":
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            raise InvalidWebhookDefinition(
                f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except _DuplicateKey as exc:
            raise InvalidWebhookDefinition(
                f"{source}: not valid JSON: an object has the key {str(exc)!r} twice; keep one"
            ) from None
    try:
        # A SafeLoader subclass: builds plain data only, never Python objects.
        return yaml.load(text, Loader=_DefinitionLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidWebhookDefinition(f"{source}: not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidWebhookDefinition(f"{source}: not valid YAML: {exc}") from None


def definition_file_schema(max_webhooks: int = Limits.max_webhooks_per_flow) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a definition file, for editors and CI.

    The schema is derived from :class:`FlowWebhook`. It cannot express every rule (unique
    names, template references, header names); ``flow-webhook validate`` checks them all.

    :param max_webhooks: the most webhooks a file may list (``[flow_webhook] max_webhooks_per_flow``).
    """
    webhook = FlowWebhook.model_json_schema()
    webhook["description"] = (
        "One flow webhook: what to send, where, and when a run or an output ends (or a run is late)."
    )
    # The rules between fields that the model's validators apply, as far as a schema can say them.
    webhook["oneOf"] = [
        {"required": ["conn_id"], "properties": {"conn_id": {"type": "string"}, "url": {"type": "null"}}},
        {"required": ["url"], "properties": {"url": {"type": "string"}, "conn_id": {"type": "null"}}},
    ]
    webhook["allOf"] = [
        {
            "if": {"required": ["method"], "properties": {"method": {"enum": ["GET", "DELETE"]}}},
            "then": {"properties": {"body": {"type": "null"}}},
        },
        {
            "if": {"required": ["on"], "properties": {"on": {"const": "late"}}},
            "then": {
                "required": ["late_after"],
                "properties": {"late_after": {"not": {"type": "null"}}, "outputs": {"type": "null"}},
            },
            "else": {"properties": {"late_after": {"type": "null"}}},
        },
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Flow webhook definitions",
        "description": (
            "A file of flow webhook definitions, read by FlowWebhooks.from_file(). Webhook names "
            "must be unique; flow-webhook validate checks every rule."
        ),
        "type": "object",
        "properties": {
            "version": {"const": DEFINITION_FILE_VERSION, "description": "The file format version."},
            "webhooks": {
                "type": "array",
                "description": "The webhooks of one flow (DAG).",
                "maxItems": max_webhooks,
                "items": {"$ref": "#/$defs/FlowWebhook"},
            },
        },
        "required": ["webhooks"],
        "additionalProperties": False,
        "$defs": {"FlowWebhook": webhook},
    }
