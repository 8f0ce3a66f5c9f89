"""
Hostile input: every case gets a clear error naming the webhook (or connection), the
field and the fix, raised when the DAG is parsed wherever the input lives in DAG code.
None of them crashes anything: definitions fail the import of their own DAG file only,
and connections fail their own delivery only.
"""

from __future__ import annotations

import json

import pytest

from airflow_webhook_provider import FlowWebhook, FlowWebhooks
from airflow_webhook_provider.core.exceptions import (
    FlowWebhookError,
    InvalidConnection,
    InvalidWebhookDefinition,
)
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

OK = {"name": "hostile", "url": "https://hooks.example.com/in"}
SECRET_VALUE = "s3cr3t-should-never-be-echoed"


def case(changes: dict, field: str, fix: str, *, id: str, on_attach: bool = False):
    """One hostile definition; ``on_attach``: refused when attached to a DAG (the [flow_webhook] limits)."""
    return pytest.param({**OK, **changes}, field, fix, on_attach, id=id)


DEFINITIONS = [
    # Header injection
    case({"headers": {"X-A\r": "v"}}, "headers", "valid HTTP token", id="header-name-cr"),
    case({"headers": {"X-A\n": "v"}}, "headers", "valid HTTP token", id="header-name-lf"),
    case({"headers": {"X-\x00A": "v"}}, "headers", "valid HTTP token", id="header-name-nul"),
    case({"headers": {"X A": "v"}}, "headers", "valid HTTP token", id="header-name-space"),
    case({"headers": {"X-A:": "v"}}, "headers", "valid HTTP token", id="header-name-colon"),
    case({"headers": {"": "v"}}, "headers", "valid HTTP token", id="header-name-empty"),
    case({"headers": {"X-A": "v\r\nSet-Cookie: x"}}, "headers", "remove it", id="header-value-crlf"),
    case({"headers": {"X-A": "v\nX-B: y"}}, "headers", "remove it", id="header-value-lf"),
    case({"headers": {"X-A": "v\x00"}}, "headers", "remove it", id="header-value-nul"),
    case({"headers": {"X-A": "\ud800"}}, "headers", "not valid UTF-8", id="header-value-surrogate"),
    case(
        {"headers": {"X-Webhook-Signature": "t=1,sha256=00"}},
        "headers",
        "set by the sender",
        id="forged-signature",
    ),
    case({"headers": {"X-Webhook-Id": "other"}}, "headers", "set by the sender", id="forged-delivery-id"),
    case({"headers": {"Content-Length": "1"}}, "headers", "set by the sender", id="content-length"),
    case({"headers": {"Host": "internal"}}, "headers", "set by the sender", id="host-header"),
    case(
        {"headers": {"Authorization": f"Bearer {SECRET_VALUE}"}}, "headers", "connection", id="authorization"
    ),
    case({"headers": {"Cookie": f"session={SECRET_VALUE}"}}, "headers", "connection", id="cookie"),
    # URLs
    case({"url": "file:///etc/passwd"}, "url", "http:// or https://", id="scheme-file"),
    case({"url": "gopher://127.0.0.1:6379/_FLUSHALL"}, "url", "http:// or https://", id="scheme-gopher"),
    case({"url": "ftp://files.example.com/x"}, "url", "http:// or https://", id="scheme-ftp"),
    case({"url": "javascript:alert(1)"}, "url", "http:// or https://", id="scheme-javascript"),
    case({"url": "data:text/plain,hi"}, "url", "http:// or https://", id="scheme-data"),
    case({"url": "hooks.example.com/in"}, "url", "http:// or https://", id="no-scheme"),
    case({"url": "https:///in"}, "url", "full URL", id="no-host"),
    case({"url": f"https://user:{SECRET_VALUE}@hooks.example.com/"}, "url", "connection", id="userinfo"),
    case({"url": "https://:pw@hooks.example.com/"}, "url", "connection", id="password-only"),
    case({"url": "https://hooks.example.com:99999/"}, "url", "0 to 65535", id="port-range"),
    case({"url": "https://hooks.example.com/a b"}, "url", "whitespace", id="url-space"),
    case({"url": "https://hooks.example.com/\r\nX: y"}, "url", "control characters", id="url-crlf"),
    case({"url": "https://" + "a" * 300 + ".com/"}, "url", "too long", id="long-host"),
    case({"url": "https://" + "é" * 64 + ".example/"}, "url", "too long", id="long-idn-label"),
    case({"url": "https://" + "x" * 2100 + ".com/"}, "url", "at most 2048", id="long-url"),
    # Bodies and templates
    case({"body": "x" * (1024 * 1024 + 1)}, "body", "max_body_bytes", id="body-over-1mib", on_attach=True),
    case({"body": "ok \ud800 bad"}, "body", "not valid UTF-8", id="body-surrogate"),
    case({"method": "GET", "body": "x"}, "body", 'method="POST"', id="get-with-body"),
    case({"method": "DELETE", "body": "x"}, "body", 'method="POST"', id="delete-with-body"),
    case({"body": "$jobid"}, "body", "did you mean $jobId", id="unknown-reference-case"),
    case({"body": "$password"}, "body", "known:", id="unknown-reference"),
    case({"body": "${jobId"}, "body", "$$ for a literal", id="unclosed-brace"),
    case({"body": "total: $"}, "body", "$$ for a literal", id="dollar-at-end"),
    case({"body": "${}"}, "body", "$$ for a literal", id="empty-braces"),
    case({"body": "$5"}, "body", "$$ for a literal", id="dollar-digit"),
    case({"body": "${job Id}"}, "body", "$$ for a literal", id="braces-with-space"),
    case(
        {"headers": {"Content-Type": "application/json"}, "body": '{"a": $jobId,,}'},
        "body",
        "fix the JSON",
        id="json-invalid",
    ),
    case({"query": {"job": "$jobIdd"}}, "query", "did you mean", id="query-unknown-reference"),
    case({"query": {"": "x"}}, "query", "must not be empty", id="query-empty-name"),
    # Secrets in DAG code
    case({"secret": SECRET_VALUE}, "secret", "Secret key", id="secret"),
    case({"password": SECRET_VALUE}, "password", "Secret key", id="password"),
    case({"token": SECRET_VALUE}, "token", "Secret key", id="token"),
    # Shape
    case({"name": ""}, "name", "unique name", id="empty-name"),
    case({"name": "   "}, "name", "unique name", id="blank-name"),
    case({"name": "bad\nname"}, "name", "control characters", id="name-newline"),
    case({"conn_id": "alerts"}, "conn_id", "exactly one of", id="both-endpoints"),
    case({"url": None}, "conn_id", "exactly one of", id="no-endpoint"),
    case({"on": "sometimes"}, "on", "'success', 'failure', 'any' or 'late'", id="bad-trigger"),
    case({"method": "TRACE"}, "method", "'GET'", id="bad-method"),
    case({"outputs": []}, "outputs", "use None", id="empty-outputs"),
    case({"outputs": "publish"}, "outputs", "list of task ids", id="outputs-string"),
    case({"outputs": ["a", "a"]}, "outputs", "name each output once", id="duplicate-outputs"),
    case({"retries": 3}, "retries", "the fields are", id="unknown-field"),
]


@pytest.mark.parametrize(("definition", "field", "fix", "on_attach"), DEFINITIONS)
def test_hostile_definitions_are_refused_clearly(definition, field, fix, on_attach):
    with pytest.raises(InvalidWebhookDefinition) as info:
        webhook = FlowWebhook(**definition)
        assert on_attach, "the definition was accepted"
        FlowWebhooks(webhook).attach(_Dag())
    message = str(info.value)
    assert message.startswith("flow webhook ")
    if definition.get("name", "").strip() and "\n" not in definition["name"]:
        assert "'hostile'" in message
    assert f"field {field!r}" in message, message
    assert fix in message, message
    assert SECRET_VALUE not in message and SECRET_VALUE not in repr(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FlowWebhookError)


class _Dag:
    """Just enough of a DAG for attach's checks, which run before anything is changed."""

    def __init__(self) -> None:
        self.dag_id = "hostile_dag"
        self.on_success_callback = None
        self.on_failure_callback = None
        self.task_dict: dict = {}
        self.deadline = None


FLOW_LEVEL = [
    pytest.param(
        lambda: FlowWebhooks(*[FlowWebhook(name=f"w{i}", url=OK["url"]) for i in range(51)]).attach(_Dag()),
        "51 flow webhooks, more than the 50 allowed",
        id="51-webhooks",
    ),
    pytest.param(
        lambda: FlowWebhooks(
            FlowWebhook(name="same", url=OK["url"]), FlowWebhook(name="same", url=OK["url"])
        ),
        "'same': field 'name': is used by two webhooks",
        id="duplicate-names",
    ),
    pytest.param(
        lambda: FlowWebhooks(FlowWebhook(name="o", url=OK["url"], outputs=["ghost"])).attach(_Dag()),
        "'o': field 'outputs': 'ghost' is not a task of DAG 'hostile_dag'",
        id="output-not-in-dag",
    ),
    pytest.param(
        lambda: FlowWebhooks("not a webhook"), "takes FlowWebhook definitions", id="not-a-definition"
    ),
]


@pytest.mark.parametrize(("build", "message"), FLOW_LEVEL)
def test_hostile_flows_are_refused_clearly(build, message):
    with pytest.raises(InvalidWebhookDefinition, match=message.replace("(", r"\(")):
        build()


CONNECTIONS = [
    pytest.param({"host": "file:///etc/passwd"}, "host", "http:// or https://", id="conn-scheme-file"),
    pytest.param(
        {"host": "gopher://127.0.0.1:6379/_x"}, "host", "http:// or https://", id="conn-scheme-gopher"
    ),
    pytest.param({"host": "hooks.example.com"}, "host", "full http:// or https:// URL", id="conn-no-scheme"),
    pytest.param({"extra": {"headers": "{not json"}}, "headers", "JSON object", id="headers-not-json"),
    pytest.param({"extra": {"headers": '["a", "b"]'}}, "headers", "JSON object", id="headers-not-object"),
    pytest.param({"extra": {"headers": '{"X-A": 5}'}}, "headers", "string value", id="headers-non-string"),
    pytest.param(
        {"extra": {"headers": json.dumps({"X-A": f"{SECRET_VALUE}\r\nInjected: 1"})}},
        "headers",
        "CR, LF or NUL",
        id="headers-crlf",
    ),
    pytest.param({"extra": {"method": "CONNECT"}}, "method", "one of GET", id="conn-method"),
    pytest.param({"extra": {"timeout": -5}}, "timeout", "between 0 and 600", id="timeout-negative"),
    pytest.param({"extra": {"timeout": 1e12}}, "timeout", "between 0 and 600", id="timeout-huge"),
    pytest.param({"extra": {"timeout": "nan"}}, "timeout", "between 0 and 600", id="timeout-nan"),
    pytest.param({"extra": {"timeout": "inf"}}, "timeout", "between 0 and 600", id="timeout-inf"),
    pytest.param({"extra": {"validate_ssl": "perhaps"}}, "validate_ssl", "true or false", id="validate-ssl"),
    pytest.param({"extra": {"signature_scheme": "md5"}}, "signature_scheme", "one of webhook", id="scheme"),
    pytest.param(
        {"extra": {"previous_secret": SECRET_VALUE}},
        "previous_secret_expires",
        "ISO 8601",
        id="rotation-no-expiry",
    ),
]


@pytest.mark.parametrize(("connection", "field", "fix"), CONNECTIONS)
def test_hostile_connections_are_refused_clearly(monkeypatch, connection, field, fix):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HOSTILE",
        json.dumps({"conn_type": "flow_webhook", "host": "https://hooks.example.com/", **connection}),
    )
    with pytest.raises(InvalidConnection) as info:
        _ = FlowWebhookHook("hostile").endpoint
    message = str(info.value)
    assert message.startswith("connection 'hostile'")
    assert info.value.field == field
    assert fix in message, message
    assert SECRET_VALUE not in message


def test_a_hostile_definition_fails_only_its_own_dag_file(airflow_db, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "hostile.py").write_text(
        "from airflow.sdk import DAG\n"
        "from airflow_webhook_provider import FlowWebhook, FlowWebhooks\n"
        "with DAG('hostile', schedule=None) as dag:\n"
        "    pass\n"
        "FlowWebhooks(FlowWebhook(name='x', url='gopher://127.0.0.1:6379/_FLUSHALL')).attach(dag)\n"
    )
    (tmp_path / "innocent.py").write_text(
        "from airflow.sdk import DAG\nwith DAG('innocent', schedule=None) as dag:\n    pass\n"
    )
    bag = DagBag(dag_folder=str(tmp_path))
    assert set(bag.dags) == {"innocent"}
    ((path, error),) = bag.import_errors.items()
    assert path.endswith("hostile.py")
    assert "flow webhook 'x': field 'url': scheme 'gopher' is not allowed" in error


def test_a_hostile_connection_fails_only_its_own_delivery(dag_file, receiver, connect, monkeypatch):
    connect("good")
    monkeypatch.setenv(
        "AIRFLOW_CONN_EVIL", json.dumps({"conn_type": "flow_webhook", "host": "gopher://127.0.0.1:6379/_x"})
    )
    module = dag_file(
        "from airflow.sdk import DAG, task\n"
        "from airflow_webhook_provider import FlowWebhook, FlowWebhooks\n"
        "with DAG('hostile_conn', schedule=None) as dag:\n"
        "    @task\n"
        "    def work():\n"
        "        return 1\n"
        "    work()\n"
        "FlowWebhooks(FlowWebhook(name='evil', conn_id='evil'), FlowWebhook(name='good', conn_id='good')).attach(dag)\n"
    )
    dag_run = module.dag.test()
    assert dag_run.state == "success"
    (request,) = receiver.wait_for(1)
    assert json.loads(request.body)["webhookName"] == "good"


def test_the_table_is_at_least_forty_cases():
    assert len(DEFINITIONS) + len(FLOW_LEVEL) + len(CONNECTIONS) >= 40
