"""
Fuzzing: arbitrary input to every parser raises only the package's own errors.

Rendering, template parsing, connection header parsing, definition headers, Retry-After
and signature headers each get arbitrary text; anything but a FlowWebhookError (or a
clean result) is a bug.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_webhook_provider.core.definitions import FlowWebhook
from airflow_webhook_provider.core.exceptions import FlowWebhookError
from airflow_webhook_provider.core.signing import verify_signature
from airflow_webhook_provider.core.templating import REFERENCES, parse_template
from airflow_webhook_provider.delivery.endpoints import ConnectionExtras
from airflow_webhook_provider.delivery.sender import _retry_after_seconds

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=200)
template_text = st.lists(
    st.sampled_from(["$", "{", "}", '"', "\\", " ", "a", "\n", "$jobId", "${flowId}", "$$"]), max_size=30
).map("".join)


@FUZZ
@given(source=st.one_of(any_text, template_text))
def test_template_parsing_raises_only_template_errors(source):
    try:
        template = parse_template(source)
    except FlowWebhookError:
        return
    values = dict.fromkeys(REFERENCES, 'v"\\\n')
    for mode in ("json", "form", "url", "text"):
        assert isinstance(template.render(values, mode=mode), str)


@FUZZ
@given(
    value=st.one_of(
        any_text,
        st.dictionaries(any_text, st.one_of(any_text, st.integers(), st.none()), max_size=5).map(json.dumps),
        st.recursive(st.none() | st.booleans() | any_text, lambda inner: st.lists(inner, max_size=3)).map(
            json.dumps
        ),
    )
)
def test_connection_headers_parse_or_raise_invalid_connection(value):
    try:
        headers = ConnectionExtras.parse("fuzz", {"headers": value}).headers
    except FlowWebhookError as exc:
        assert "connection 'fuzz'" in str(exc)
        return
    for name, header_value in headers.items():
        assert isinstance(name, str) and isinstance(header_value, str)
        assert not any(c in name + header_value for c in "\r\n\x00")


@FUZZ
@given(headers=st.dictionaries(any_text, any_text, max_size=4), body=st.one_of(st.none(), any_text))
def test_definitions_validate_or_raise_definition_errors(headers, body):
    try:
        webhook = FlowWebhook(name="fuzz", url="https://hooks.example.com/x", headers=headers, body=body)
    except FlowWebhookError as exc:
        assert "flow webhook 'fuzz'" in str(exc)
        return
    for name, value in webhook.headers.items():
        assert "\r" not in value and "\n" not in value and "\x00" not in value
        assert name.isascii() and ":" not in name


@FUZZ
@given(value=st.one_of(st.none(), any_text))
def test_retry_after_never_raises(value):
    seconds = _retry_after_seconds(value, now=1_800_000_000.0)
    assert seconds is None or seconds >= 0


@FUZZ
@given(
    header=st.one_of(
        any_text,
        st.builds(lambda t, s: f"t={t},sha256={s}", any_text, any_text),
        st.binary(max_size=100),
    ),
    payload=st.one_of(st.binary(max_size=100), any_text),
)
def test_signature_headers_raise_only_invalid_signature(header, payload):
    with contextlib.suppress(FlowWebhookError):
        verify_signature(header, payload, "k", now_ms=1_700_000_000_000)
