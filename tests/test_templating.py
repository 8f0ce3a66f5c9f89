"""Tests for ``$reference`` templates: parsing, errors, escaping per render mode."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_webhook_provider.core.exceptions import FlowWebhookError, TemplateError
from airflow_webhook_provider.core.templating import (
    REFERENCES,
    RenderMode,
    check_json_template,
    parse_template,
    render_mode_for,
)

VALUES = {
    "jobId": "manual__2024-01-01T00:00:00+00:00",
    "jobStatus": "failed",
    "flowId": "etl",
    "outputName": "publish",
    "logicalDate": "2024-01-01T00:00:00+00:00",
    "jobUrl": "http://airflow.example.com/dags/etl/runs/1",
    "webhookName": "notify",
    "deliveryId": "0b5e5cc6-0d6b-4c64-9a35-9f0f1d1b7c44",
}


class TestParseTemplate:
    def test_references_are_exactly_the_documented_ones(self) -> None:
        assert set(REFERENCES) == set(VALUES)
        assert len(REFERENCES) == len(set(REFERENCES)) == 8

    @pytest.mark.parametrize("name", REFERENCES)
    def test_every_reference_renders_in_both_forms(self, name: str) -> None:
        template = parse_template(f"<${name}|${{{name}}}>")
        assert template.references == frozenset({name})
        assert template.render(VALUES) == f"<{VALUES[name]}|{VALUES[name]}>"

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            pytest.param("Job $jobId ended", "Job R ended", id="dollar-name"),
            pytest.param("Job ${jobId}ended", "Job Rended", id="braced-name-followed-by-letters"),
            pytest.param("$jobId", "R", id="reference-only"),
            pytest.param("$jobId.$jobStatus", "R.S", id="name-ends-at-dot"),
            pytest.param("$jobId-$jobStatus", "R-S", id="name-ends-at-hyphen"),
            pytest.param("cost: $$5", "cost: $5", id="double-dollar"),
            pytest.param("$$", "$", id="double-dollar-alone"),
            pytest.param("$$jobId", "$jobId", id="double-dollar-before-name-is-literal"),
            pytest.param("$$$jobId", "$R", id="double-dollar-then-reference"),
            pytest.param("$$$$", "$$", id="two-double-dollars"),
            pytest.param("no references", "no references", id="plain-text"),
            pytest.param("", "", id="empty"),
        ],
    )
    def test_render_text(self, source: str, expected: str) -> None:
        assert parse_template(source).render({"jobId": "R", "jobStatus": "S"}) == expected

    def test_template_keeps_its_source(self) -> None:
        assert parse_template("Job $jobId").source == "Job $jobId"

    def test_references_lists_the_used_names(self) -> None:
        template = parse_template("$jobId ${jobStatus} $jobId $$flowId")
        assert template.references == frozenset({"jobId", "jobStatus"})

    def test_template_renders_many_times(self) -> None:
        template = parse_template("Job $jobId")
        assert template.render({"jobId": "a"}) == "Job a"
        assert template.render({"jobId": "b"}) == "Job b"

    def test_template_error_is_a_flow_webhook_error_and_value_error(self) -> None:
        assert issubclass(TemplateError, FlowWebhookError)
        assert issubclass(TemplateError, ValueError)

    @pytest.mark.parametrize(
        ("source", "unknown", "suggestion", "position"),
        [
            pytest.param("Job $jobid", "jobid", "jobId", 4, id="wrong-case"),
            pytest.param("${jobStatsu}", "jobStatsu", "jobStatus", 0, id="braced-typo"),
            pytest.param("x $jobIdx", "jobIdx", "jobId", 2, id="letters-run-into-the-name"),
            pytest.param("$flow_id", "flow_id", "flowId", 0, id="snake-case"),
            pytest.param("$logical_date", "logical_date", "logicalDate", 0, id="snake-case-date"),
        ],
    )
    def test_unknown_reference_suggests_a_close_name(
        self, source: str, unknown: str, suggestion: str, position: int
    ) -> None:
        with pytest.raises(TemplateError) as info:
            parse_template(source)
        message = str(info.value)
        assert f"unknown reference ${unknown} at character {position}" in message
        assert f"did you mean ${suggestion}?" in message
        assert "write $$ for a literal $" in message
        assert info.value.position == position

    def test_unknown_reference_without_a_close_name_lists_the_known_ones(self) -> None:
        with pytest.raises(TemplateError) as info:
            parse_template("price: $USD")
        message = str(info.value)
        assert "unknown reference $USD at character 7" in message
        assert "did you mean" not in message
        assert all(f"${name}" in message for name in REFERENCES)
        assert info.value.position == 7

    @pytest.mark.parametrize(
        ("source", "position", "what"),
        [
            pytest.param("$", 0, "'$' is not followed by a reference name", id="dollar-alone"),
            pytest.param("total $", 6, "'$' is not followed by a reference name", id="dollar-at-end"),
            pytest.param("a $ b", 2, "'$' is not followed by a reference name", id="dollar-space"),
            pytest.param("cost $5", 5, "'$' is not followed by a reference name", id="dollar-digit"),
            pytest.param('{"a": "$-"}', 7, "'$' is not followed by a reference name", id="dollar-hyphen"),
            pytest.param("${", 0, "'${' is not closed by '}'", id="open-brace-at-end"),
            pytest.param("x ${jobId", 2, "'${' is not closed by '}'", id="unclosed-brace"),
            pytest.param("ab${}", 2, "'${}' is not a reference name", id="empty-braces"),
            pytest.param("${bad name}", 0, "'${bad name}' is not a reference name", id="space-in-braces"),
            pytest.param("${5x}", 0, "'${5x}' is not a reference name", id="digit-first-in-braces"),
            pytest.param("$jobId $", 7, "'$' is not followed by a reference name", id="after-a-valid-one"),
        ],
    )
    def test_malformed_reference_reports_the_position(self, source: str, position: int, what: str) -> None:
        with pytest.raises(TemplateError) as info:
            parse_template(source)
        message = str(info.value)
        assert f"malformed reference at character {position}: {what}" in message
        assert "write $name or ${name} for a reference and $$ for a literal $" in message
        assert info.value.position == position


class TestRenderModes:
    VALUE = 'a b&c=d/"é\\'

    @pytest.mark.parametrize(
        ("mode", "expected"),
        [
            pytest.param("text", 'v=a b&c=d/"é\\', id="text-as-is"),
            pytest.param("form", "v=a+b%26c%3Dd%2F%22%C3%A9%5C", id="form-urlencoded"),
            pytest.param("url", "v=a%20b%26c%3Dd%2F%22%C3%A9%5C", id="percent-encoded"),
            pytest.param("json", 'v="a b&c=d/\\"é\\\\"', id="json-outside-string-is-quoted"),
        ],
    )
    def test_value_is_escaped_for_the_mode(self, mode: RenderMode, expected: str) -> None:
        assert parse_template("v=$jobId").render({"jobId": self.VALUE}, mode=mode) == expected

    def test_default_mode_is_text(self) -> None:
        assert parse_template("$jobId").render({"jobId": '"<&>'}) == '"<&>'

    def test_form_value_round_trips(self) -> None:
        rendered = parse_template("a=$jobId&b=$jobStatus").render(
            {"jobId": self.VALUE, "jobStatus": "x+y"}, mode="form"
        )
        assert parse_qsl(rendered) == [("a", self.VALUE), ("b", "x+y")]

    def test_url_value_round_trips(self) -> None:
        rendered = parse_template("$jobId").render({"jobId": self.VALUE}, mode="url")
        assert re.fullmatch(r"[A-Za-z0-9_.~%-]*", rendered), rendered
        assert unquote(rendered) == self.VALUE

    def test_json_inside_a_string_is_escaped_without_quotes(self) -> None:
        rendered = parse_template('{"text": "Job $jobId!"}').render({"jobId": self.VALUE}, mode="json")
        assert rendered == '{"text": "Job a b&c=d/\\"é\\\\!"}'
        assert json.loads(rendered) == {"text": f"Job {self.VALUE}!"}

    def test_json_keeps_non_ascii_as_is(self) -> None:
        assert parse_template('"$jobId"').render({"jobId": "ü🔑"}, mode="json") == '"ü🔑"'

    def test_json_lone_surrogate_becomes_an_escape(self) -> None:
        rendered = parse_template('{"a": "$jobId", "b": $jobId}').render({"jobId": "x\ud800"}, mode="json")
        assert rendered == '{"a": "x\\ud800", "b": "x\\ud800"}'
        assert json.loads(rendered.encode()) == {"a": "x\ud800", "b": "x\ud800"}

    def test_json_string_tracking_follows_escaped_quotes(self) -> None:
        template = parse_template('{"a": "say \\"hi\\" $jobId", "b": $jobId, "c": "\\\\", "d": $jobId}')
        rendered = template.render({"jobId": 'q"'}, mode="json")
        assert json.loads(rendered) == {"a": 'say "hi" q"', "b": 'q"', "c": "\\", "d": 'q"'}

    def test_json_dollar_dollar_is_a_literal(self) -> None:
        rendered = parse_template('{"price": "$$5", "id": $jobId}').render({"jobId": "1"}, mode="json")
        assert json.loads(rendered) == {"price": "$5", "id": "1"}


class TestRenderModeFor:
    @pytest.mark.parametrize(
        ("content_type", "mode"),
        [
            pytest.param("application/json", "json", id="json"),
            pytest.param("application/json; charset=utf-8", "json", id="json-with-charset"),
            pytest.param("Application/JSON ; charset=UTF-8", "json", id="json-mixed-case-and-space"),
            pytest.param("application/vnd.api+json", "json", id="vendor-plus-json"),
            pytest.param("application/problem+json; charset=utf-8", "json", id="plus-json-with-charset"),
            pytest.param("application/x-www-form-urlencoded", "form", id="form"),
            pytest.param("application/x-www-form-urlencoded; charset=utf-8", "form", id="form-with-charset"),
            pytest.param("text/plain", "text", id="text-plain"),
            pytest.param("application/xml", "text", id="xml"),
            pytest.param("application/jsonl", "text", id="json-lines-is-not-json"),
            pytest.param("", "text", id="empty"),
            pytest.param(None, "text", id="none"),
        ],
    )
    def test_mode(self, content_type: str | None, mode: str) -> None:
        assert render_mode_for(content_type) == mode


class TestCheckJsonTemplate:
    @pytest.mark.parametrize(
        "source",
        [
            pytest.param('{"text": "Job $jobId: $jobStatus"}', id="references-in-strings"),
            pytest.param('{"id": $jobId, "list": [$flowId, "${outputName}x"]}', id="references-as-values"),
            pytest.param("$jobId", id="bare-reference"),
            pytest.param('{"price": "$$5"}', id="literal-dollar"),
            pytest.param("[]", id="no-references"),
        ],
    )
    def test_valid_json_passes(self, source: str) -> None:
        check_json_template(parse_template(source))

    @pytest.mark.parametrize(
        ("source", "line", "column"),
        [
            pytest.param('{"id": $jobId,}', 1, 15, id="trailing-comma"),
            pytest.param('{\n  "id": $jobId,\n  "status" $jobStatus\n}', 3, 12, id="missing-colon-line-3"),
            pytest.param('{"id": "$jobId}', 1, 8, id="unterminated-string"),
            pytest.param("Job $jobId failed", 1, 1, id="plain-text"),
            pytest.param("", 1, 1, id="empty"),
        ],
    )
    def test_invalid_json_reports_line_and_column(self, source: str, line: int, column: int) -> None:
        with pytest.raises(TemplateError) as info:
            check_json_template(parse_template(source))
        message = str(info.value)
        assert "the body is sent as JSON but is not valid JSON" in message
        assert f"at line {line} column {column}" in message
        assert "fix the JSON, or set a non-JSON Content-Type header" in message


JSON_TEMPLATE = parse_template(
    '{"text": "Job $jobId: $jobStatus", "raw": $jobId, "nested": {"o": "${outputName}x"}, '
    '"list": ["$flowId", $logicalDate]}'
)
# Any code point, lone surrogates included: a value from an upstream system may hold anything.
_any_text = st.text(st.characters(exclude_categories=()))
_awkward_text = st.text(
    st.sampled_from(
        [
            '"',
            "\\",
            "\n",
            "\r",
            "\t",
            "\x00",
            "\x1f",
            "\x7f",
            "\u2028",
            "é",
            "🔑",
            "\ud800",
            "\udfff",
            "$",
            "{",
            "}",
        ]
    )
)
_values = st.fixed_dictionaries(
    {
        name: st.one_of(_any_text, _awkward_text)
        for name in ("jobId", "jobStatus", "outputName", "flowId", "logicalDate")
    }
)


def _as_json_reads(value: str) -> str:
    """Pair adjacent surrogates as JSON does: the text \\ud800\\udc00 reads back as U+10000."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def test_adjacent_surrogates_read_back_as_one_code_point() -> None:
    # JSON cannot tell a surrogate pair from the code point it encodes, whoever escapes it.
    rendered = parse_template("$jobId").render({"jobId": "\ud800\udc00"}, mode="json")
    assert rendered == '"\\ud800\\udc00"'
    assert json.loads(rendered.encode("utf-8")) == "\U00010000" == _as_json_reads("\ud800\udc00")


@given(values=_values)
@example(
    values={
        "jobId": 'a"b\\c\nd\x00',
        "jobStatus": "\ud800",
        "outputName": "\udfff\ud800",
        "flowId": "🔑\u2028",
        "logicalDate": "\ud800\udc00",
    }
)
@settings(max_examples=300, deadline=None)
def test_json_rendering_is_valid_json_for_any_values(values: dict[str, str]) -> None:
    rendered = JSON_TEMPLATE.render(values, mode="json")
    parsed = json.loads(rendered.encode("utf-8"))
    read = {name: _as_json_reads(value) for name, value in values.items()}
    assert parsed == {
        "text": f"Job {read['jobId']}: {read['jobStatus']}",
        "raw": read["jobId"],
        "nested": {"o": f"{read['outputName']}x"},
        "list": [read["flowId"], read["logicalDate"]],
    }
