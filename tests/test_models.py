"""Tests for flow webhook definitions: validation messages, defaults, triggers, per-flow limits."""

from __future__ import annotations

import dataclasses
import traceback
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.attach import FlowWebhooks
from airflow_webhook_provider.core.definitions import (
    FlowWebhook,
    JobEvent,
    Limits,
    check_limits,
    event_for_state,
)
from airflow_webhook_provider.core.exceptions import FlowWebhookError, InvalidWebhookDefinition
from airflow_webhook_provider.core.templating import REFERENCES

URL = "https://hooks.example.com/notify"
SECRET_VALUE = "s3cr3t-VALUE-must-not-leak"
MAX_ENV = "AIRFLOW__FLOW_WEBHOOK__MAX_WEBHOOKS_PER_FLOW"


def _definition(**overrides: Any) -> dict[str, Any]:
    return {"name": "notify", "conn_id": "alerts", **overrides}


def _refusal(data: dict[str, Any]) -> InvalidWebhookDefinition:
    with pytest.raises(InvalidWebhookDefinition) as info:
        FlowWebhook(**data)
    return info.value


INVALID = [
    pytest.param(
        _definition(method="GET", body="x"), "body", ['method="POST"', "remove body"], id="body-with-get"
    ),
    pytest.param(
        _definition(method="delete", body="x"), "body", ["not DELETE", 'method="POST"'], id="body-with-delete"
    ),
    pytest.param(
        _definition(conn_id=None, url="ftp://example.com/x"),
        "url",
        ["scheme 'ftp'", "use an http:// or https:// URL"],
        id="url-ftp",
    ),
    pytest.param(
        _definition(conn_id=None, url="file:///etc/passwd"),
        "url",
        ["scheme 'file'", "use an http:// or https:// URL"],
        id="url-file",
    ),
    pytest.param(
        _definition(conn_id=None, url="gopher://example.com/1"),
        "url",
        ["scheme 'gopher'", "use an http:// or https:// URL"],
        id="url-gopher",
    ),
    pytest.param(
        _definition(conn_id=None, url="javascript:alert(1)"),
        "url",
        ["scheme 'javascript'", "use an http:// or https:// URL"],
        id="url-javascript",
    ),
    pytest.param(
        _definition(conn_id=None, url="hooks.example.com/notify"),
        "url",
        ["scheme '(none)'", "use an http:// or https:// URL"],
        id="url-without-scheme",
    ),
    pytest.param(
        _definition(conn_id=None, url="https:///notify"),
        "url",
        ["has no host", "use a full URL"],
        id="url-without-host",
    ),
    pytest.param(
        _definition(conn_id=None, url="http://:8080/notify"),
        "url",
        ["has no host", "use a full URL"],
        id="url-port-without-host",
    ),
    pytest.param(
        _definition(conn_id=None, url=f"https://user:{SECRET_VALUE}@hooks.example.com/"),
        "url",
        ["must not carry credentials", "use a flow_webhook connection"],
        id="url-with-user-password",
    ),
    pytest.param(
        _definition(conn_id=None, url="https://hooks.example.com/a b"),
        "url",
        ["must not contain whitespace"],
        id="url-with-space",
    ),
    pytest.param(
        _definition(conn_id=None, url="https://hooks.example.com/a\nb"),
        "url",
        ["must not contain whitespace or control characters"],
        id="url-with-newline",
    ),
    pytest.param(
        _definition(body="Job $jobid ended"),
        "body",
        ["unknown reference $jobid", "did you mean $jobId?"],
        id="body-unknown-reference",
    ),
    pytest.param(
        _definition(body="Job $nope ended"),
        "body",
        ["unknown reference $nope", "known: $jobId"],
        id="body-unknown-reference-no-suggestion",
    ),
    pytest.param(
        _definition(body="costs $5"),
        "body",
        ["malformed reference at character 6", "$$ for a literal $"],
        id="body-malformed-dollar",
    ),
    pytest.param(
        _definition(headers={"X Team": "data"}),
        "headers",
        ["'X Team' is not a valid HTTP token", "use letters, digits and - only"],
        id="header-name-with-space",
    ),
    pytest.param(
        _definition(headers={"X-Team:": "data"}),
        "headers",
        ["'X-Team:' is not a valid HTTP token", "use letters, digits and - only"],
        id="header-name-with-colon",
    ),
    pytest.param(
        _definition(headers={"X-Team": "a\rInjected: 1"}),
        "headers",
        ["header X-Team has a control character", "remove it"],
        id="header-value-cr",
    ),
    pytest.param(
        _definition(headers={"X-Team": "a\nInjected: 1"}),
        "headers",
        ["header X-Team has a control character", "remove it"],
        id="header-value-lf",
    ),
    pytest.param(
        _definition(headers={"X-Team": "a\x00b"}),
        "headers",
        ["header X-Team has a control character", "remove it"],
        id="header-value-nul",
    ),
    *(
        pytest.param(
            _definition(headers={name: "x"}),
            "headers",
            [f"header {name} is set by the sender on every request", "remove it"],
            id=f"reserved-header-{name}",
        )
        for name in (
            "X-Webhook-Signature",
            "X-Webhook-Id",
            "Content-Length",
            "Host",
            "Transfer-Encoding",
            "x-webhook-signature",
        )
    ),
    *(
        pytest.param(
            _definition(headers={name: SECRET_VALUE}),
            "headers",
            [f"header {name} carries a credential", "Headers extra of the flow_webhook connection"],
            id=f"credential-header-{name}",
        )
        for name in ("Authorization", "Cookie", "Proxy-Authorization", "authorization")
    ),
    pytest.param(
        _definition(url=URL),
        "conn_id",
        ["set exactly one of conn_id", "and url"],
        id="both-conn-id-and-url",
    ),
    pytest.param(
        _definition(conn_id=None),
        "conn_id",
        ["set exactly one of conn_id", "and url"],
        id="neither-conn-id-nor-url",
    ),
    *(
        pytest.param(
            _definition(**{key: SECRET_VALUE}),
            key,
            ["does not belong in DAG code", "Secret key", "flow_webhook connection"],
            id=f"secret-argument-{key}",
        )
        for key in ("secret", "password", "token", "secret_key", "secretKey")
    ),
    pytest.param(
        _definition(colour="red"),
        "colour",
        [
            "unknown field",
            "the fields are name, conn_id, url, on, late_after, outputs, method, headers, body, query",
        ],
        id="unknown-field",
    ),
    pytest.param(
        _definition(on="failed"),
        "on",
        ["'success', 'failure', 'any' or 'late'"],
        id="bad-on",
    ),
    pytest.param(
        _definition(on="late"),
        "late_after",
        ['is required with on="late"', "late_after=timedelta(hours=2)", "PT2H, or 7200 seconds"],
        id="late-without-late-after",
    ),
    pytest.param(
        _definition(on="failure", late_after=60),
        "late_after",
        ['applies only to on="late", not on="failure"', "remove late_after"],
        id="late-after-without-late",
    ),
    pytest.param(
        _definition(late_after=60),
        "late_after",
        ['applies only to on="late", not on="any"'],
        id="late-after-with-the-default-on",
    ),
    pytest.param(
        _definition(on="late", late_after=0),
        "late_after",
        ["must be a positive duration", "PT2H"],
        id="late-after-zero",
    ),
    pytest.param(
        _definition(on="late", late_after=timedelta(minutes=-5)),
        "late_after",
        ["must be a positive duration"],
        id="late-after-negative",
    ),
    pytest.param(
        _definition(on="late", late_after="two hours"),
        "late_after",
        ["'two hours' is not a duration", "late_after=timedelta(hours=2)"],
        id="late-after-not-a-duration",
    ),
    pytest.param(
        _definition(on="late", late_after=True),
        "late_after",
        ["must be a duration, not True"],
        id="late-after-a-boolean",
    ),
    pytest.param(
        _definition(on="late", late_after=60, outputs=["publish"]),
        "outputs",
        ["a late message is about the whole run", "remove outputs"],
        id="late-with-outputs",
    ),
    pytest.param(
        _definition(method="TRACE"),
        "method",
        ["'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"],
        id="bad-method",
    ),
    pytest.param(
        _definition(outputs="publish"),
        "outputs",
        ['must be a list of task ids, e.g. outputs=["publish"]'],
        id="outputs-as-a-string",
    ),
    pytest.param(
        _definition(outputs=[]),
        "outputs",
        ["must name at least one task", "use None"],
        id="outputs-empty",
    ),
    pytest.param(
        _definition(outputs=["publish", "report", "publish"]),
        "outputs",
        ["lists publish more than once", "name each output once"],
        id="outputs-duplicate",
    ),
    pytest.param(
        _definition(outputs=["publish", ""]),
        "outputs",
        ["every output must be a non-empty task id string"],
        id="outputs-empty-task-id",
    ),
    pytest.param(
        _definition(headers={"Content-Type": "application/json"}, body='{"id": $jobId,}'),
        "body",
        ["the body is sent as JSON but is not valid JSON", "at line 1 column", "fix the JSON"],
        id="json-content-type-invalid-json",
    ),
    pytest.param(
        _definition(headers={"content-type": "application/vnd.api+json; charset=utf-8"}, body="Job $jobId"),
        "body",
        ["not valid JSON", "set a non-JSON Content-Type header"],
        id="plus-json-content-type-plain-text-body",
    ),
    pytest.param(
        _definition(query={"job": "$jbId"}),
        "query",
        ["parameter job: unknown reference $jbId", "did you mean $jobId?"],
        id="query-unknown-reference",
    ),
    pytest.param(
        _definition(query={"job": "$"}),
        "query",
        ["parameter job: malformed reference", "$$ for a literal $"],
        id="query-malformed-reference",
    ),
]


class TestInvalidDefinitions:
    def test_invalid_webhook_definition_is_a_flow_webhook_error_and_value_error(self) -> None:
        assert issubclass(InvalidWebhookDefinition, FlowWebhookError)
        assert issubclass(InvalidWebhookDefinition, ValueError)

    @pytest.mark.parametrize(("data", "field", "fixes"), INVALID)
    def test_message_names_webhook_field_and_fix(
        self, data: dict[str, Any], field: str, fixes: list[str]
    ) -> None:
        error = _refusal(data)
        message = str(error)
        assert message.startswith(f"flow webhook 'notify': field {field!r}: "), message
        for fix in fixes:
            assert fix in message, message
        assert error.webhook == "notify"
        assert error.field == field

    @pytest.mark.parametrize(("data", "field", "fixes"), INVALID)
    def test_message_never_shows_a_secret(self, data: dict[str, Any], field: str, fixes: list[str]) -> None:
        error = _refusal(data)
        shown = [str(error), repr(error), "".join(traceback.format_exception(error))]
        assert not any(SECRET_VALUE in text for text in shown)

    @pytest.mark.parametrize(
        ("name", "label", "fix"),
        [
            pytest.param(
                "", "flow webhook (unnamed)", "give the webhook a short unique name", id="empty-name"
            ),
            pytest.param(
                "   ", "flow webhook '   '", "give the webhook a short unique name", id="blank-name"
            ),
            pytest.param("a\nb", "flow webhook 'a\\nb'", "must not contain control characters", id="newline"),
        ],
    )
    def test_bad_name(self, name: str, label: str, fix: str) -> None:
        error = _refusal(_definition(name=name))
        message = str(error)
        assert message.startswith(f"{label}: field 'name': "), message
        assert fix in message
        assert error.field == "name"

    def test_missing_name(self) -> None:
        error = _refusal({"conn_id": "alerts"})
        assert str(error) == "flow webhook (unnamed): field 'name': is required"

    def test_several_problems_are_all_reported(self) -> None:
        message = str(_refusal(_definition(on="never", outputs="publish")))
        assert "field 'on'" in message
        assert "field 'outputs'" in message

    def test_secret_is_refused_with_the_connection_field_to_use(self) -> None:
        message = str(_refusal(_definition(secret=SECRET_VALUE)))
        assert message == (
            "flow webhook 'notify': field 'secret': a secret does not belong in DAG code; put it in the "
            "Secret key (password) of the flow_webhook connection named by conn_id"
        )

    def test_from_mapping_refuses_a_non_mapping(self) -> None:
        with pytest.raises(InvalidWebhookDefinition, match="each webhook must be a mapping"):
            FlowWebhook.from_mapping(["notify"])  # type: ignore[arg-type]

    def test_from_mapping_validates(self) -> None:
        assert "field 'colour'" in str(_refusal_from_mapping(_definition(colour="red")))


def _refusal_from_mapping(data: dict[str, Any]) -> InvalidWebhookDefinition:
    with pytest.raises(InvalidWebhookDefinition) as info:
        FlowWebhook.from_mapping(data)
    return info.value


class TestValidDefinitions:
    def test_defaults(self) -> None:
        webhook = FlowWebhook(name="notify", conn_id="alerts")
        assert webhook.on == "any"
        assert webhook.method is None
        assert webhook.outputs is None
        assert webhook.url is None
        assert webhook.headers == {}
        assert webhook.body is None
        assert webhook.query == {}
        assert webhook.body_template is None
        assert webhook.query_templates == {}
        assert webhook.declared_content_type is None

    @pytest.mark.parametrize(
        ("method", "expected"),
        [
            pytest.param("post", "POST", id="post"),
            pytest.param("Put", "PUT", id="put"),
            pytest.param("patch", "PATCH", id="patch"),
            pytest.param("get", "GET", id="get"),
            pytest.param("DeLeTe", "DELETE", id="delete"),
        ],
    )
    def test_method_is_upper_cased(self, method: str, expected: str) -> None:
        assert FlowWebhook(name="notify", conn_id="alerts", method=method).method == expected

    @pytest.mark.parametrize(
        "outputs",
        [
            pytest.param(["publish", "report"], id="list"),
            pytest.param(("publish", "report"), id="tuple"),
            pytest.param(iter(["publish", "report"]), id="iterator"),
        ],
    )
    def test_outputs_become_a_tuple(self, outputs: Any) -> None:
        webhook = FlowWebhook(name="notify", conn_id="alerts", outputs=outputs)
        assert webhook.outputs == ("publish", "report")

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            pytest.param("name", "other", id="name"),
            pytest.param("on", "success", id="on"),
            pytest.param("conn_id", "elsewhere", id="conn_id"),
        ],
    )
    def test_frozen(self, field: str, value: str) -> None:
        webhook = FlowWebhook(name="notify", conn_id="alerts")
        with pytest.raises(ValidationError, match="frozen"):
            setattr(webhook, field, value)
        assert getattr(webhook, field) != value

    def test_plain_url_instead_of_a_connection(self) -> None:
        webhook = FlowWebhook(name="notify", url="http://127.0.0.1:8080/hook?x=1")
        assert webhook.url == "http://127.0.0.1:8080/hook?x=1"
        assert webhook.conn_id is None

    def test_body_and_query_templates_are_parsed(self) -> None:
        webhook = FlowWebhook(
            name="notify",
            conn_id="alerts",
            headers={"content-TYPE": "application/json; charset=utf-8", "X-Team": "data\tops"},
            body='{"id": $jobId, "status": "${jobStatus}", "price": "$$5"}',
            query={"flow": "$flowId", "static": "1"},
        )
        assert webhook.declared_content_type == "application/json; charset=utf-8"
        assert webhook.body_template is not None
        assert webhook.body_template.references == frozenset({"jobId", "jobStatus"})
        assert webhook.query_templates["flow"].render({"flowId": "etl"}) == "etl"
        assert webhook.query_templates["static"].render({}) == "1"

    def test_non_json_content_type_allows_any_text_body(self) -> None:
        webhook = FlowWebhook(
            name="notify", conn_id="alerts", headers={"Content-Type": "text/plain"}, body="{not json $jobId"
        )
        assert webhook.body_template is not None

    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
    def test_body_with_methods_that_carry_one(self, method: str) -> None:
        assert FlowWebhook(name="notify", conn_id="alerts", method=method, body="x").body == "x"


STATES = ["success", "failed", "upstream_failed", "skipped", "running", None]
FIRES = {
    "success": {"success"},
    "failure": {"failed", "upstream_failed"},
    "any": {"success", "failed", "upstream_failed"},
}


class TestFiresOn:
    @pytest.mark.parametrize("state", STATES, ids=[str(s) for s in STATES])
    @pytest.mark.parametrize("on", ["success", "failure", "any"])
    def test_matrix(self, on: str, state: str | None) -> None:
        webhook = FlowWebhook(name="notify", conn_id="alerts", on=on)
        assert webhook.fires_on(state) is (state in FIRES[on])

    @pytest.mark.parametrize("state", STATES, ids=[str(s) for s in STATES])
    def test_a_late_webhook_fires_on_no_end(self, state: str | None) -> None:
        webhook = FlowWebhook(name="notify", conn_id="alerts", on="late", late_after=timedelta(hours=1))
        assert not webhook.fires_on(state)


class TestEventForState:
    @pytest.mark.parametrize(
        ("state", "event"),
        [
            pytest.param("success", "success", id="success"),
            pytest.param("failed", "failure", id="failed"),
            pytest.param("upstream_failed", "failure", id="upstream_failed"),
            pytest.param("SUCCESS", "success", id="upper-case"),
            pytest.param("skipped", None, id="skipped"),
            pytest.param("removed", None, id="removed"),
            pytest.param("running", None, id="running"),
            pytest.param("queued", None, id="queued"),
            pytest.param("", None, id="empty"),
            pytest.param(None, None, id="none"),
        ],
    )
    def test_event(self, state: str | None, event: str | None) -> None:
        assert event_for_state(state) == event


class TestJobEvent:
    def test_references_has_exactly_the_template_references(self) -> None:
        event = JobEvent(
            flow_id="etl",
            job_id="run_1",
            job_status="failed",
            output_name="publish",
            logical_date="2024-01-01T00:00:00+00:00",
            job_url="http://airflow/dags/etl/runs/run_1",
        )
        references = event.references(webhook_name="notify", delivery_id="d-1")
        assert sorted(references) == sorted(REFERENCES)
        assert references == {
            "jobId": "run_1",
            "jobStatus": "failed",
            "flowId": "etl",
            "outputName": "publish",
            "logicalDate": "2024-01-01T00:00:00+00:00",
            "jobUrl": "http://airflow/dags/etl/runs/run_1",
            "webhookName": "notify",
            "deliveryId": "d-1",
        }

    def test_optional_fields_default_to_empty(self) -> None:
        references = JobEvent(flow_id="etl", job_id="run_1", job_status="success").references(
            webhook_name="notify", delivery_id="d-1"
        )
        assert references["outputName"] == references["logicalDate"] == references["jobUrl"] == ""

    def test_frozen(self) -> None:
        event = JobEvent(flow_id="etl", job_id="run_1", job_status="success")
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.job_status = "failed"  # type: ignore[misc]


def _webhooks(count: int) -> list[FlowWebhook]:
    return [FlowWebhook(name=f"hook-{i}", conn_id="alerts") for i in range(count)]


def _attach(webhooks: list[FlowWebhook]) -> Any:
    """Attach to a new DAG, which checks the ``[flow_webhook]`` limits; return the DAG."""
    from airflow.sdk import DAG

    dag = DAG(f"limits_{uuid.uuid4().hex[:8]}", schedule=None)
    return FlowWebhooks(*webhooks).attach(dag)


def _definition_file(webhooks: list[FlowWebhook]) -> dict[str, Any]:
    return {"webhooks": [w.model_dump(mode="json", exclude_defaults=True) for w in webhooks]}


class TestFlowWebhooks:
    @pytest.fixture(autouse=True)
    def _default_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(MAX_ENV, raising=False)

    def test_keeps_the_definitions_in_order(self) -> None:
        webhooks = _webhooks(3)
        flow = FlowWebhooks(*webhooks)
        assert list(flow) == webhooks
        assert len(flow) == 3
        assert repr(flow) == "FlowWebhooks('hook-0', 'hook-1', 'hook-2')"

    def test_no_webhooks(self) -> None:
        assert len(FlowWebhooks()) == 0

    def test_duplicate_names_are_refused(self) -> None:
        with pytest.raises(InvalidWebhookDefinition) as info:
            FlowWebhooks(
                FlowWebhook(name="notify", conn_id="alerts"),
                FlowWebhook(name="other", conn_id="alerts"),
                FlowWebhook(name="notify", conn_id="reports", on="success"),
            )
        message = str(info.value)
        assert message.startswith("flow webhook 'notify': field 'name': is used by two webhooks")
        assert "give each webhook a unique name" in message
        assert info.value.webhook == "notify"
        assert info.value.field == "name"

    def test_exactly_the_default_limit_is_allowed(self) -> None:
        assert Limits().max_webhooks_per_flow == 50
        assert config.limits() == Limits()
        webhooks = FlowWebhooks(*_webhooks(50))
        assert len(webhooks) == 50
        check_limits(webhooks, config.limits(), where="FlowWebhooks")
        assert len(FlowWebhooks.from_mapping(_definition_file(_webhooks(50)), limits=config.limits())) == 50
        assert len(_attach(_webhooks(50)).on_success_callback[0].registry.webhooks) == 50

    def test_more_than_the_default_limit_is_refused(self) -> None:
        # The constructor takes any number; the limit is checked where it applies.
        webhooks = FlowWebhooks(*_webhooks(51))
        assert len(webhooks) == 51
        refusals = []
        with pytest.raises(InvalidWebhookDefinition) as info:
            check_limits(webhooks, config.limits(), where="FlowWebhooks")
        refusals.append(info.value)
        with pytest.raises(InvalidWebhookDefinition) as info:
            FlowWebhooks.from_mapping(_definition_file(_webhooks(51)), limits=config.limits())
        refusals.append(info.value)
        with pytest.raises(InvalidWebhookDefinition) as info:
            _attach(_webhooks(51))
        refusals.append(info.value)
        for refusal in refusals:
            message = str(refusal)
            assert "defines 51 flow webhooks, more than the 50 allowed per flow" in message
            assert "[flow_webhook] max_webhooks_per_flow" in message
            assert refusal.field == "webhooks"

    def test_limit_comes_from_airflow_config(self, monkeypatch: pytest.MonkeyPatch) -> None:
        webhooks = _webhooks(4)
        _attach(webhooks)
        monkeypatch.setenv(MAX_ENV, "3")
        assert config.limits().max_webhooks_per_flow == 3
        _attach(webhooks[:3])
        with pytest.raises(
            InvalidWebhookDefinition, match="defines 4 flow webhooks, more than the 3 allowed"
        ):
            _attach(webhooks)
        with pytest.raises(
            InvalidWebhookDefinition, match="defines 4 flow webhooks, more than the 3 allowed"
        ):
            check_limits(FlowWebhooks(*webhooks), config.limits(), where="FlowWebhooks")
        monkeypatch.delenv(MAX_ENV)
        _attach(webhooks)

    @pytest.mark.parametrize(
        ("item", "type_name"),
        [
            pytest.param({"name": "notify", "conn_id": "alerts"}, "dict", id="dict"),
            pytest.param("notify", "str", id="str"),
            pytest.param(None, "NoneType", id="none"),
        ],
    )
    def test_non_definitions_are_refused(self, item: Any, type_name: str) -> None:
        with pytest.raises(
            InvalidWebhookDefinition, match=f"takes FlowWebhook definitions, got {type_name}$"
        ):
            FlowWebhooks(FlowWebhook(name="notify", conn_id="alerts"), item)
