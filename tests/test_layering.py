"""
The package's layers, held by parsing its imports (function-level ones included).

Data flows one way, capture -> ledger -> delivery -> face (docs/architecture.md), so:

- no import cycle between the package's modules;
- ``core`` (definitions, templating, signing, ...) imports nothing from Airflow and nothing
  of the package outside ``core``: settings come in as arguments;
- ``ledger`` (storage) imports no sending, capturing or face code;
- ``delivery`` imports no capture or face code;
- ``capture`` imports no face code;
- Airflow's configuration is read in ``config.py`` only.

Imports under ``if TYPE_CHECKING:`` never run and are not counted. The checker itself is
shown to fail on a small package that breaks each rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = "airflow_webhook_provider"

#: layer -> layers (package prefixes) it must not import.
FORBIDDEN = {
    f"{PACKAGE}.core": (f"{PACKAGE}.",),  # except itself, see below
    f"{PACKAGE}.ledger": (f"{PACKAGE}.delivery", f"{PACKAGE}.capture", f"{PACKAGE}.face", f"{PACKAGE}.hooks"),
    f"{PACKAGE}.delivery": (
        f"{PACKAGE}.capture",
        f"{PACKAGE}.face",
        f"{PACKAGE}.hooks",
        f"{PACKAGE}.notifications",
    ),
    f"{PACKAGE}.capture": (f"{PACKAGE}.face", f"{PACKAGE}.hooks"),
}
CONFIG_MODULES = ("airflow.configuration", "airflow.sdk.configuration")


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node, without descending into ``if TYPE_CHECKING:`` bodies."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _walk([child])
            else:
                yield from ast.walk(child)


def imports_of(root: Path) -> tuple[set[str], list[Import]]:
    """Return the package's modules and every import they run, resolved to module names."""
    modules = {_module_name(root, path): path for path in root.rglob("*.py")}
    found: list[Import] = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _walk(ast.parse(path.read_text(), filename=str(path)).body):
            if isinstance(node, ast.Import):
                found += [Import(name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.append(Import(name, candidate if candidate in modules else base, node.lineno))
    return set(modules), found


def internal_graph(modules: set[str], found: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for item in found:
        target = item.target
        # "import a.b.c" also runs a and a.b; an import of a package's module runs the package.
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != item.source:
            graph[item.source].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every broken rule, one line each."""
    package = root.name
    modules, found = imports_of(root)
    problems = [
        f"import cycle: {' -> '.join(component)}" for component in cycles(internal_graph(modules, found))
    ]
    forbidden = {
        layer.replace(PACKAGE, package, 1): tuple(p.replace(PACKAGE, package, 1) for p in banned)
        for layer, banned in FORBIDDEN.items()
    }
    core = f"{package}.core"
    for item in found:
        where = f"{item.source} (line {item.line}) imports {item.target}"
        if _within(item.source, core):
            if item.target == "airflow" or item.target.startswith("airflow."):
                problems.append(f"the pure core imports Airflow: {where}")
            elif (
                item.target.startswith(f"{package}.")
                and not _within(item.target, core)
                and item.target != f"{package}"
            ):
                problems.append(f"the pure core imports outside itself: {where}")
            continue
        for layer, banned in forbidden.items():
            if _within(item.source, layer) and any(_within(item.target, b) for b in banned):
                problems.append(f"{layer} must not import {item.target}: {where}")
        if item.target in CONFIG_MODULES and item.source != f"{package}.config":
            problems.append(f"Airflow's configuration is read outside config.py: {where}")
    return problems


def test_the_package_keeps_its_layers() -> None:
    assert violations(REPO / PACKAGE) == []


def test_the_pure_core_runs_without_airflow(tmp_path: Path) -> None:
    # Beyond the parse: import the core in an interpreter where importing Airflow fails.
    import subprocess
    import sys

    blocker = tmp_path / "airflow" / "__init__.py"
    blocker.parent.mkdir()
    blocker.write_text("raise ImportError('the pure core must not import Airflow')\n")
    code = (
        "import importlib, pkgutil, airflow_webhook_provider.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module(f'airflow_webhook_provider.core.{m.name}')\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "ok", done.stderr


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        pytest.param(
            {"core/a.py": "def f():\n    from pkg.core import b\n", "core/b.py": "from pkg.core import a\n"},
            "import cycle: pkg.core.a -> pkg.core.b",
            id="function-level-cycle",
        ),
        pytest.param(
            {"core/a.py": "from airflow.sdk import conf\n"}, "the pure core imports Airflow", id="impure-core"
        ),
        pytest.param(
            {"core/a.py": "import pkg.delivery.x\n", "delivery/x.py": ""},
            "the pure core imports outside itself",
            id="core-reaches-out",
        ),
        pytest.param(
            {"ledger/store.py": "from pkg.delivery import sender\n", "delivery/sender.py": ""},
            "pkg.ledger must not import pkg.delivery",
            id="storage-imports-transport",
        ),
        pytest.param(
            {"hooks/h.py": "def get():\n    from airflow.sdk.configuration import conf\n"},
            "configuration is read outside config.py",
            id="conf-outside-config",
        ),
    ],
)
def test_the_checker_catches_each_rule(tmp_path: Path, files: dict[str, str], problem: str) -> None:
    root = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "ledger/__init__.py": "",
            "delivery/__init__.py": "",
            "hooks/__init__.py": "",
            **files,
        },
    )
    found = violations(root)
    assert any(problem in line for line in found), found


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from airflow.sdk import DAG\n",
        },
    )
    assert violations(root) == []
