r"""Render ``$reference`` templates in webhook bodies and query values.

A template is plain text in which ``$jobId`` or ``${jobId}`` stands for a value of the
event and ``$$`` for a literal ``$``. Any other ``$`` is an error, and so is a reference
that does not exist: both are caught when the template is parsed, which happens when the
DAG file is parsed.

Values are escaped for where they land. In a JSON body a reference inside a string
literal gets the JSON-escaped text, and a reference outside one becomes a JSON string,
so the rendered body is valid JSON whatever characters the values hold::

    template = parse_template('{"text": "Job $jobId: $jobStatus"}')
    template.render({"jobId": 'a"b', "jobStatus": "failed"}, mode="json")
    # '{"text": "Job a\\"b: failed"}'
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, quote_plus

from airflow_webhook_provider.core.exceptions import TemplateError

__all__ = [
    "REFERENCES",
    "RenderMode",
    "Template",
    "check_json_template",
    "parse_template",
    "render_mode_for",
]

#: Every reference a template may use, in documentation order.
REFERENCES: tuple[str, ...] = (
    "jobId",
    "jobStatus",
    "flowId",
    "outputName",
    "logicalDate",
    "jobUrl",
    "webhookName",
    "deliveryId",
)
_KNOWN = frozenset(REFERENCES)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

RenderMode = Literal["json", "form", "text", "url"]


@dataclass(frozen=True)
class _Reference:
    name: str
    in_json_string: bool


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and references, ready to render many times.

    Build it with :func:`parse_template`.
    """

    source: str
    segments: tuple[str | _Reference, ...]
    #: Where each segment starts in ``source``, to point errors at what the author wrote.
    origins: tuple[int, ...]

    @property
    def references(self) -> frozenset[str]:
        """Names of the references the template uses."""
        return frozenset(s.name for s in self.segments if isinstance(s, _Reference))

    def render(self, values: Mapping[str, str], *, mode: RenderMode = "text") -> str:
        """Substitute the values, escaped for ``mode``.

        :param values: a value for every reference the template uses.
        :param mode: ``json`` (JSON-escaped), ``form`` (form-urlencoded), ``url`` (percent-encoded)
            or ``text`` (as is).
        :return: the rendered text.
        """
        parts: list[str] = []
        for segment in self.segments:
            if isinstance(segment, str):
                parts.append(segment)
            else:
                parts.append(_escape(values[segment.name], mode, in_json_string=segment.in_json_string))
        return "".join(parts)

    def source_position(self, rendered_position: int, values: Mapping[str, str], *, mode: RenderMode) -> int:
        """Map an offset in the rendered text back to the template text it came from."""
        offset = 0
        for segment, origin in zip(self.segments, self.origins, strict=True):
            if isinstance(segment, str):
                size = len(segment)
                # A lone "$" segment is a "$$", which renders one character from two.
                inside = 0 if segment == "$" else rendered_position - offset
            else:
                size = len(_escape(values[segment.name], mode, in_json_string=segment.in_json_string))
                inside = 0
            if rendered_position < offset + size:
                return origin + inside
            offset += size
        return len(self.source)


def _escape(value: str, mode: RenderMode, *, in_json_string: bool) -> str:
    if mode == "json":
        try:
            value.encode("utf-8")
            encoded = json.dumps(value, ensure_ascii=False)
        except UnicodeEncodeError:
            # A lone surrogate cannot be sent as UTF-8; \u escapes keep the JSON valid.
            encoded = json.dumps(value)
        return encoded[1:-1] if in_json_string else encoded
    if mode == "form":
        return quote_plus(value)
    if mode == "url":
        return quote(value, safe="")
    return value


def _unknown(name: str, position: int) -> TemplateError:
    hint = difflib.get_close_matches(name, REFERENCES, n=1)
    suggestion = f"; did you mean ${hint[0]}?" if hint else ""
    known = ", ".join(f"${r}" for r in REFERENCES)
    return TemplateError(
        f"unknown reference ${name} at character {position}{suggestion} "
        f"(known: {known}; write $$ for a literal $)",
        position=position,
    )


def _malformed(position: int, what: str) -> TemplateError:
    return TemplateError(
        f"malformed reference at character {position}: {what}; "
        "write $name or ${name} for a reference and $$ for a literal $",
        position=position,
    )


def parse_template(source: str) -> Template:
    """Parse a template, checking every reference.

    :param source: the template text.
    :return: the parsed template.
    :raises TemplateError: for an unknown reference or a ``$`` that starts no reference.
    """
    segments: list[str | _Reference] = []
    origins: list[int] = []
    literal_start = 0
    in_string = False
    escaped = False
    i = 0
    length = len(source)

    def flush(end: int) -> None:
        if end > literal_start:
            segments.append(source[literal_start:end])
            origins.append(literal_start)

    while i < length:
        char = source[i]
        if char != "$":
            # Track JSON string state so that references know where they land.
            if escaped:
                escaped = False
            elif char == "\\" and in_string:
                escaped = True
            elif char == '"':
                in_string = not in_string
            i += 1
            continue
        flush(i)
        if i + 1 < length and source[i + 1] == "$":
            segments.append("$")
            origins.append(i)
            i += 2
            literal_start = i
            continue
        if i + 1 < length and source[i + 1] == "{":
            end = source.find("}", i + 2)
            if end == -1:
                raise _malformed(i, "'${' is not closed by '}'")
            name = source[i + 2 : end]
            if not _IDENTIFIER.fullmatch(name):
                raise _malformed(i, f"'${{{name[:40]}}}' is not a reference name")
            next_index = end + 1
        else:
            match = _IDENTIFIER.match(source, i + 1)
            if match is None:
                raise _malformed(i, "'$' is not followed by a reference name")
            name = match.group()
            next_index = match.end()
        if name not in _KNOWN:
            raise _unknown(name, i)
        segments.append(_Reference(name, in_json_string=in_string))
        origins.append(i)
        escaped = False
        i = literal_start = next_index
    flush(length)
    return Template(source=source, segments=tuple(segments), origins=tuple(origins))


def render_mode_for(content_type: str | None) -> RenderMode:
    """Choose how values are escaped for a body of the given Content-Type.

    :param content_type: the Content-Type header value, or None.
    :return: ``json`` for ``application/json`` and ``+json`` types, ``form`` for
        ``application/x-www-form-urlencoded``, otherwise ``text``.
    """
    if not content_type:
        return "text"
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return "json"
    if media_type == "application/x-www-form-urlencoded":
        return "form"
    return "text"


def check_json_template(template: Template) -> None:
    """Check that a template renders to valid JSON.

    :param template: a parsed template meant for a JSON body.
    :raises TemplateError: when the body is not valid JSON, with the line and column.
    """
    values = dict.fromkeys(template.references, "x")
    sample = template.render(values, mode="json")
    try:
        json.loads(sample)
    except json.JSONDecodeError as exc:
        position = template.source_position(exc.pos, values, mode="json")
        line = template.source.count("\n", 0, position) + 1
        column = position - (template.source.rfind("\n", 0, position) + 1) + 1
        raise TemplateError(
            f"the body is sent as JSON but is not valid JSON: {exc.msg} at line {line} column {column}; "
            "fix the JSON, or set a non-JSON Content-Type header",
            position=position,
        ) from None
