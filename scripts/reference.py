"""Write docs/reference.md, the provider's reference page, from the installed package.

Every table comes from what Airflow itself reads: ``get_provider_info()`` (configuration
options, connection types and their form fields, notifiers, operators, hooks, triggers,
plugins, the ``cli`` key), the package's ``__all__``, and pyproject.toml for the
requirements. Nothing is listed by hand, so a new option or command shows up on the next
run.

Usage::

    .venv/bin/python scripts/reference.py            # rewrite docs/reference.md
    .venv/bin/python scripts/reference.py --check    # exit 1 when docs/reference.md is stale

Airflow is imported with a private, empty ``AIRFLOW_HOME`` and without the caller's
``AIRFLOW*`` environment variables, so neither their configuration nor their home
affects the page.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib
import inspect
import json
import os
import re
import sys
import tempfile
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import tomllib

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference.md"
PACKAGE = "airflow_webhook_provider"
#: Connection form fields Airflow shows unless ``ui-field-behaviour`` hides them.
STANDARD_FIELDS = ("host", "schema", "login", "password", "port", "extra")
#: Wide enough that argparse never wraps a usage line.
USAGE_WIDTH = 10_000
#: A docstring field: ``:param name: text``, ``:raises Error: text``, ``:return: text``.
FIELD = re.compile(r"^:(?P<kind>param|raises|returns?)(?:\s+(?P<name>[^:]+))?:\s*(?P<text>.*)$")


def cell(text: object) -> str:
    """Return ``text`` fit for one Markdown table cell."""
    return re.sub(r"\s+", " ", str(text)).strip().replace("|", "\\|")


def code(text: object) -> str:
    """Return ``text`` as inline code, or an em dash when it is empty."""
    value = str(text)
    return f"`{value}`" if value else "—"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """Return the lines of a Markdown table."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def from_rst(text: str) -> str:
    """Turn the reST a docstring uses (roles, double backticks, ``::``) into Markdown."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).rpartition('.')[2]}`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return re.sub(r"::$", ":", text)


def summary(obj: object) -> str:
    """Return the first paragraph of ``obj``'s docstring, on one line, in Markdown."""
    doc = inspect.getdoc(obj) or ""
    return from_rst(" ".join(doc.split("\n\n")[0].split()))


def type_name(annotation: Any) -> str:
    """Spell a type as its source would: ``str | None``, ``Literal['a', 'b']``, ``dict[str, str]``."""
    if isinstance(annotation, str):
        return annotation
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Ellipsis:
        return "..."
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin is not None:
        return f"{type_name(origin)}[{', '.join(type_name(arg) for arg in args)}]"
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def signature(cls: type) -> str | None:
    """Return ``Name(parameters)`` for a class, one parameter a line when it is long."""
    try:
        found = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    fields = getattr(cls, "model_fields", {})
    parameters: list[str] = []
    star_done = False
    for parameter in found.parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star_done:
            parameters.append("*")
        star_done = star_done or parameter.kind in (parameter.KEYWORD_ONLY, parameter.VAR_POSITIONAL)
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(parameter.kind.name, "")
        text = prefix + parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {type_name(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            field = fields.get(parameter.name)
            factory = getattr(field, "default_factory", None)
            default = factory() if callable(factory) else parameter.default
            text += f" = {default!r}"
        parameters.append(text)
    one_line = f"{cls.__name__}({', '.join(parameters)})"
    if len(one_line) <= 100:
        return one_line
    return f"{cls.__name__}(\n" + "".join(f"    {parameter},\n" for parameter in parameters) + ")"


def import_object(path: str) -> Any:
    """Import ``package.module.name``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def classes_of(module_name: str, base: type) -> list[type]:
    """Return the public subclasses of ``base`` a module defines (its ``__all__`` order when it has one)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or sorted(vars(module))
    return [
        obj
        for name in names
        if not name.startswith("_")
        and inspect.isclass(obj := getattr(module, name))
        and obj.__module__ == module_name
        and issubclass(obj, base)
    ]


def split_docstring(obj: object) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Split ``obj``'s docstring into its prose lines and its fields.

    :return: the lines before the first field, and ``(kind, name, text)`` for each
        ``:param:``, ``:raises:`` and ``:return:`` field, its continuation lines joined.
    """
    lines = (inspect.getdoc(obj) or "").splitlines()
    first = next((index for index, line in enumerate(lines) if FIELD.match(line)), len(lines))
    fields: list[tuple[str, str, str]] = []
    for line in lines[first:]:
        match = FIELD.match(line)
        if match:
            fields.append((match["kind"].rstrip("s"), (match["name"] or "").strip(), match["text"]))
        elif fields and line.strip():
            kind, name, text = fields[-1]
            fields[-1] = (kind, name, f"{text} {line.strip()}")
    return lines[:first], fields


def prose(lines: list[str]) -> list[str]:
    """Turn docstring prose into Markdown: reST inline markup, and ``::`` blocks as Python code."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.rstrip().endswith("::"):
            out.append(from_rst(line.rstrip()))
            continue
        if line.strip() != "::":
            out.append(from_rst(line.rstrip()))
        block: list[str] = []
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith(" ")):
            block.append(lines[index])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        out += ["", "```python", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```", ""]
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n").splitlines()


def short_signature(name: str, function: Callable[..., Any]) -> str:
    """Return ``name(a, *, b=1)``: a method's parameters without annotations, ``self``/``cls`` left out."""
    try:
        found = inspect.signature(function)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parameters = [
        parameter.replace(annotation=parameter.empty)
        for parameter in found.parameters.values()
        if parameter.name not in ("self", "cls")
    ]
    return f"{name}{found.replace(parameters=parameters, return_annotation=found.empty)}"


def methods(cls: type) -> list[tuple[str, str]]:
    """Return ``(signature, summary)`` in Markdown for the documented public methods and properties of ``cls``.

    Only what this package defines (its own classes in the MRO) is listed, not what a
    class inherits from Airflow or pydantic.
    """
    found: dict[str, tuple[str, str]] = {}
    for owner in inspect.getmro(cls):
        if not owner.__module__.startswith(PACKAGE):
            continue
        for name, raw in vars(owner).items():
            if name.startswith(("_", "model_")) or name in found:
                continue
            function = raw.__func__ if isinstance(raw, classmethod | staticmethod) else raw
            if isinstance(raw, property | functools.cached_property):
                found[name] = (f"{code(name)} (property)", summary(raw))
            elif inspect.isfunction(function) and inspect.getdoc(function):
                found[name] = (code(short_signature(name, function)), summary(function))
    return list(found.values())


def class_section(cls: type, import_line: str) -> list[str]:
    """Return a class's heading, import, signature, description, parameters and methods."""
    lines = [f"### `{cls.__name__}`", "", f"`{import_line}`", ""]
    spelled = signature(cls) or f"class {cls.__name__}({', '.join(base.__name__ for base in cls.__bases__)})"
    lines += ["```python", spelled, "```", ""]
    text, fields = split_docstring(cls)
    lines += [*prose(text), ""]
    parameters = [(code(name), from_rst(text)) for kind, name, text in fields if kind == "param"]
    if parameters:
        lines += [*table(("Parameter", "Description"), parameters), ""]
    templated = getattr(cls, "template_fields", ())
    if templated:
        lines += [f"Templated fields: {', '.join(code(name) for name in templated)}.", ""]
    raised = [(code(name), from_rst(text)) for kind, name, text in fields if kind == "raise"]
    if raised:
        lines += [*table(("Raises", "When"), raised), ""]
    listed = methods(cls)
    if listed:
        lines += [*table(("Method", "What it does"), listed), ""]
    return lines


def installation(pyproject: dict[str, Any]) -> list[str]:
    """Return the *Installation* section: pip commands, extras, and the requirements from pyproject.toml."""
    project = pyproject["project"]
    name = project["name"]
    extras = {key: value for key, value in project.get("optional-dependencies", {}).items() if key != "test"}
    lines = [
        "## Installation",
        "",
        "```bash",
        f"pip install {name}",
        *(f'pip install "{name}[{extra}]"' for extra in extras),
        "```",
        "",
    ]
    lines += [f"- `[{extra}]`: {', '.join(f'`{dep}`' for dep in deps)}" for extra, deps in extras.items()]
    if extras:
        lines.append("")
    lines += ["### Requirements", ""]
    rows = [("Python", project["requires-python"])]
    for dependency in project["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.\[\]-]+)\s*(.*)", dependency)
        assert match is not None, dependency
        rows.append((match.group(1), match.group(2) or "any"))
    lines += table(("Package", "Version required"), ((code(pkg), code(version)) for pkg, version in rows))
    return [*lines, ""]


def configuration(info: dict[str, Any]) -> list[str]:
    """Return the *Configuration* section: every option of the provider info's ``config`` key."""
    lines = ["## Configuration", ""]
    for section, spec in info.get("config", {}).items():
        lines += [
            f"### `[{section}]`",
            "",
            spec.get("description", ""),
            "",
            f"Each option can also be set as an environment variable, "
            f"`AIRFLOW__{section.upper()}__<OPTION>` (upper case).",
            "",
        ]
        rows = (
            (
                code(key),
                option.get("type", ""),
                code(option.get("default") or "") if option.get("default") else "*(empty)*",
                option.get("description", ""),
                code(option.get("example") or ""),
                option.get("version_added", ""),
            )
            for key, option in spec.get("options", {}).items()
        )
        lines += table(("Option", "Type", "Default", "Description", "Example", "Added"), rows)
        lines.append("")
    return lines


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(code(value) for value in schema["enum"]))
    for key, word in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    for key in ("format", "pattern"):
        if key in schema:
            parts.append(f"{key} {code(schema[key])}")
    return "; ".join(parts) or "—"


def _json_type(schema: dict[str, Any]) -> str:
    kinds = schema.get("type", "")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return ", ".join(kind for kind in kinds if kind != "null")


def connections(info: dict[str, Any]) -> list[str]:
    """Return the *Connections* section: each connection type's form fields and extras."""
    lines = ["## Connections", ""]
    for connection in info.get("connection-types", []):
        behaviour = connection.get("ui-field-behaviour", {})
        hidden = set(behaviour.get("hidden-fields", []))
        relabeling = behaviour.get("relabeling", {})
        placeholders = behaviour.get("placeholders", {})
        lines += [
            f"### {connection['hook-name']} (`{connection['connection-type']}`)",
            "",
            f"Hook: `{connection['hook-class-name']}`. Form fields:",
            "",
        ]
        form = [
            (field, relabeling.get(field, field.capitalize()), code(placeholders.get(field, "")))
            for field in STANDARD_FIELDS
            if field not in hidden
        ]
        lines += table(("Field", "Label", "Placeholder"), form)
        if hidden:
            lines += [
                "",
                f"Hidden: {', '.join(code(field) for field in STANDARD_FIELDS if field in hidden)}.",
            ]
        lines += ["", "Extras (each its own form field, stored in the connection's extra JSON):", ""]
        rows = []
        for key, field in connection.get("conn-fields", {}).items():
            schema = field.get("schema", {})
            default = schema.get("default")
            rows.append(
                (
                    code(key),
                    field.get("label", key),
                    _json_type(schema),
                    code(json.dumps(default)) if default is not None else "—",
                    _constraints(schema),
                    field.get("description", ""),
                )
            )
        lines += table(("Extra", "Label", "Type", "Default", "Allowed", "Description"), rows)
        lines.append("")
    return lines


def python_api(info: dict[str, Any]) -> list[str]:
    """Return the sections of the Python API: exports, notifiers, operators, hooks, triggers."""
    from airflow.sdk import BaseHook, BaseOperator
    from airflow.triggers.base import BaseTrigger

    package = importlib.import_module(PACKAGE)
    shown: set[type] = set()

    def section(title: str, intro: str, found: Iterable[type]) -> list[str]:
        body: list[str] = []
        for cls in found:
            if cls not in shown:
                shown.add(cls)
                home = PACKAGE if getattr(package, cls.__name__, None) is cls else cls.__module__
                body += class_section(cls, f"from {home} import {cls.__name__}")
        return [f"## {title}", "", intro, "", *body] if body else []

    def from_modules(kind: str, base: type) -> list[type]:
        return [
            cls
            for entry in info.get(kind, [])
            for module in entry["python-modules"]
            for cls in classes_of(module, base)
        ]

    exported = [obj for name in package.__all__ if inspect.isclass(obj := getattr(package, name))]
    notifiers = [import_object(path) for path in info.get("notifications", [])]
    connection_hooks = [import_object(c["hook-class-name"]) for c in info.get("connection-types", [])]
    return [
        *section(
            "Callbacks and notifier",
            f"What `{PACKAGE}` exports (its `__all__`), and the notifiers the provider registers.",
            [*exported, *notifiers],
        ),
        *section(
            "Operators", "The operators the provider registers.", from_modules("operators", BaseOperator)
        ),
        *section(
            "Hooks",
            "The hooks the provider registers, with those of its connection types.",
            [*from_modules("hooks", BaseHook), *connection_hooks],
        ),
        *section("Triggers", "The triggers the provider registers.", from_modules("triggers", BaseTrigger)),
    ]


def _invocation(flags: tuple[str, ...], options: dict[str, Any]) -> str:
    takes_value = options.get("action") not in ("store_true", "store_false", "count", "help", "version")
    if not flags[0].startswith("-"):
        return options.get("metavar") or flags[0]
    value = ""
    if takes_value:
        if "metavar" in options:
            value = f" {options['metavar']}"
        elif "choices" in options:
            value = " {" + ",".join(str(choice) for choice in options["choices"]) + "}"
        else:
            value = " " + flags[-1].lstrip("-").replace("-", "_").upper()
    return ", ".join(flags) + value


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(full name, ActionCommand)`` for a command and everything below it."""
    name = f"{path} {command.name}"
    subcommands = getattr(command, "subcommands", None)
    if subcommands is None:
        yield name, command
        return
    for subcommand in subcommands:
        yield from _commands(subcommand, name)


def command_line(info: dict[str, Any]) -> list[str]:
    """Return the *Command line* section: every command of the provider info's ``cli`` key."""
    lines = ["## Command line", ""]
    groups = [command for path in info.get("cli", []) for command in import_object(path)()]
    if groups:
        lines += [
            "The provider's `cli` key adds these commands to Airflow's CLI.",
            "",
            *table(
                ("Command", "What it does"),
                (
                    (code(name), action.help)
                    for group in groups
                    for name, action in _commands(group, "airflow")
                ),
            ),
            "",
        ]
    for group in groups:
        for name, action in _commands(group, "airflow"):
            parser = argparse.ArgumentParser(
                prog=name,
                add_help=False,
                formatter_class=functools.partial(argparse.HelpFormatter, width=USAGE_WIDTH),
            )
            for arg in action.args:
                parser.add_argument(*arg.flags, **arg.kwargs)
            usage = parser.format_usage().removeprefix("usage: ").strip()
            lines += [
                f"### `{name}`",
                "",
                cell(action.description or action.help),
                "",
                "```",
                usage,
                "```",
                "",
            ]
            rows = []
            for arg in action.args:
                options = arg.kwargs
                default = options.get("default")
                rows.append(
                    (
                        code(_invocation(tuple(arg.flags), options)),
                        ("Required. " if options.get("required") else "") + str(options.get("help", "")),
                        code(default) if default not in (None, False) else "—",
                    )
                )
            if rows:
                lines += [*table(("Argument", "Description", "Default"), rows), ""]
    return lines


def _describe(item: Any) -> str:
    if isinstance(item, dict):
        return ", ".join(f"{key}: {code(value)}" for key, value in item.items() if isinstance(value, str))
    if inspect.ismodule(item):
        return code(item.__name__)
    if inspect.isclass(item) or inspect.isfunction(item):
        return code(f"{item.__module__}.{item.__qualname__}")
    return code(type(item).__name__)


def plugins(info: dict[str, Any]) -> list[str]:
    """Return the *Plugins* section: what each registered plugin adds to Airflow."""
    from airflow.plugins_manager import AirflowPlugin

    parts = sorted(name for name, value in vars(AirflowPlugin).items() if isinstance(value, list))
    lines = ["## Plugins", ""]
    for entry in info.get("plugins", []):
        plugin = import_object(entry["plugin-class"])
        lines += [f"### `{entry['name']}`", "", f"`{entry['plugin-class']}`", "", summary(plugin), ""]
        rows = [(code(part), _describe(item)) for part in parts for item in getattr(plugin, part, None) or ()]
        if rows:
            lines += [*table(("Part", "What"), rows), ""]
    return lines


def maintenance() -> list[str]:
    """Return the *Maintenance DAG* section: what the DAG does and how a deployment loads it."""
    bundles = importlib.import_module(f"{PACKAGE}.maintenance")
    site = bundles.FOLDER.parents[1]
    entry = bundles.bundle_entry()
    entry["kwargs"]["path"] = f"<site-packages>/{bundles.FOLDER.relative_to(site).as_posix()}"
    default_bundle = {"name": "dags-folder", "classpath": entry["classpath"], "kwargs": {}}
    dag_doc = ast.get_docstring(ast.parse(bundles.DAG_FILE.read_text())) or ""
    paragraphs = [from_rst(" ".join(paragraph.split())) for paragraph in dag_doc.split("\n\n")]
    listing = ",\n    ".join(json.dumps(bundle) for bundle in (default_bundle, entry))
    escaped_default = json.dumps(default_bundle).replace('"', '\\"')
    return [
        "## Maintenance DAG",
        "",
        f"`{bundles.DAG_FILE.relative_to(site).as_posix()}`",
        "",
        *(line for paragraph in paragraphs for line in (paragraph, "")),
        "Add the bundle's entry to `[dag_processor] dag_bundle_config_list`, next to the bundles you "
        "have (Airflow's default is the `dags-folder` one), in the configuration every Airflow "
        "component reads (the DAG processor parses the DAG, workers run its task):",
        "",
        "```ini",
        "[dag_processor]",
        "dag_bundle_config_list = [",
        f"    {listing}",
        "  ]",
        "```",
        "",
        "or, with this installation's path filled in:",
        "",
        "```bash",
        "entry=$(python -m airflow_webhook_provider.maintenance)",
        f'export AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST="[{escaped_default}, $entry]"',
        f"airflow dags unpause {bundles.DAG_FILE.stem}   # a new DAG starts paused",
        "```",
        "",
        "A deployment that runs `airflow flow-webhooks dispatcher` does not need the DAG: leave the entry out.",
        "",
    ]


def anchor(heading: str) -> str:
    """Return the link anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def render() -> str:
    """Return the reference page, built from the installed package."""
    from airflow_webhook_provider import __version__
    from airflow_webhook_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    body = [
        *installation(pyproject),
        *configuration(info),
        *connections(info),
        *python_api(info),
        *command_line(info),
        *plugins(info),
        *maintenance(),
        "## Changelog",
        "",
        "See [CHANGELOG.md](../CHANGELOG.md).",
    ]
    headings = [line.removeprefix("## ") for line in body if line.startswith("## ")]
    lines = [
        f"# {info['name']} provider reference",
        "",
        "<!-- Generated by scripts/reference.py; do not edit. Run it to rewrite this page. -->",
        "",
        f"`{info['package-name']}` {__version__}. {info['description']}",
        "",
        " · ".join(f"[{heading}](#{anchor(heading)})" for heading in headings),
        "",
        *body,
    ]
    return "\n".join(lines).rstrip() + "\n"


def render_isolated() -> str:
    """Return :func:`render`'s page, with Airflow reading a private, empty home and none of the caller's settings."""
    for name in [name for name in os.environ if name.startswith("AIRFLOW")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="flow-webhook-reference-") as home:
        os.environ["AIRFLOW_HOME"] = home
        return render()


def main(argv: list[str] | None = None) -> int:
    """Write the reference page, or with ``--check`` report whether it is up to date.

    :return: the exit status: 0, or 1 when ``--check`` finds the page stale.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the page is stale, showing the diff"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REFERENCE,
        help="the page to write or check (default: docs/reference.md)",
    )
    args = parser.parse_args(argv)
    output: Path = args.output
    text = render_isolated()
    current = output.read_text() if output.exists() else ""
    if args.check:
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), str(output), "generated", lineterm="", n=1
            )
            shown = list(diff)
            print(
                "\n".join(
                    shown[:60] + ([f"... {len(shown) - 60} more diff lines"] if len(shown) > 60 else [])
                ),
                file=sys.stderr,
            )
            print(f"{output} is stale: run .venv/bin/python scripts/reference.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        output.write_text(text)
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
