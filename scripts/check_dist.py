"""Check a built sdist and wheel against the sources they were built from (run by scripts/build-check.sh).

Usage::

    .venv/bin/python scripts/check_dist.py WORK   # WORK/src: the sources; WORK/dist: one sdist, one wheel

Prints one line per problem on stderr and exits 1 when there is any; otherwise prints a
one-line summary. Nothing is imported from the built package except by a separate
``python -S`` process that runs the unpacked wheel as an installation would.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib

PACKAGE = "airflow_webhook_provider"
DISTRIBUTION = "airflow-webhook-provider"
#: Files every wheel must hold, and what each is for.
REQUIRED = {
    f"{PACKAGE}/py.typed": "the PEP 561 marker",
    f"{PACKAGE}/maintenance/flow_webhook_redelivery.py": "the maintenance DAG",
    f"{PACKAGE}/maintenance/.airflowignore": "the maintenance bundle's .airflowignore",
}
#: METADATA headers and the value each must have.
HEADERS = {
    "Name": DISTRIBUTION,
    "License-Expression": "Apache-2.0",
    "License-File": "LICENSE",
    "Description-Content-Type": "text/markdown",
}
CLASSIFIERS = ("Framework :: Apache Airflow :: Provider", "Typing :: Typed")
URLS = ("Homepage", "Documentation", "Changelog")
AIRFLOW_ENTRY_POINTS = ("apache_airflow_provider", "airflow.plugins")


def version_in_source(src: Path) -> str:
    """Return the literal ``__version__`` of the package's ``__init__.py``, as setuptools reads it."""
    for node in ast.parse((src / PACKAGE / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit(f"build-check: no literal __version__ in {PACKAGE}/__init__.py")


def defines(source: str, name: str) -> bool:
    """Tell whether a module's source defines ``name`` at its top level."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return True
    return False


def package_sources(src: Path) -> list[str]:
    """Return the package's files in the sources, as paths inside the wheel."""
    return sorted(
        path.relative_to(src).as_posix()
        for path in (src / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def check_files(names: set[str], sources: list[str], dist_info: str) -> list[str]:
    """Check that the wheel holds every package file, its license, and nothing else."""
    required = {**REQUIRED, f"{dist_info}/licenses/LICENSE": "the license file"}
    problems = [f"the wheel lacks {name} ({what})" for name, what in required.items() if name not in names]
    problems += [f"the wheel lacks {name}" for name in sources if name not in names and name not in required]
    for folder in ("templates", "static"):
        prefix = f"{PACKAGE}/face/plugins/{folder}/"
        if not any(name.startswith(prefix) for name in names):
            problems.append(f"the wheel has no {prefix}* (the Webhooks pages' {folder} files)")
    problems += [
        f"the wheel holds {name}, which is neither a package file nor its metadata"
        for name in sorted(names)
        if not name.startswith((f"{PACKAGE}/", f"{dist_info}/"))
    ]
    return problems


def check_metadata(metadata_text: str, version: str) -> list[str]:
    """Check METADATA: the version from ``__version__`` and what a package index shows."""
    metadata = email.parser.Parser().parsestr(metadata_text)
    problems = []
    if metadata["Version"] != version:
        problems.append(f"METADATA's Version is {metadata['Version']}, __version__ is {version}")
    for header, value in HEADERS.items():
        if metadata[header] != value:
            problems.append(f"METADATA's {header} is {metadata[header]!r}, not {value!r}")
    classifiers = metadata.get_all("Classifier") or []
    problems += [f"METADATA lacks the classifier {c!r}" for c in CLASSIFIERS if c not in classifiers]
    urls = {url.split(",", 1)[0].strip() for url in metadata.get_all("Project-URL") or []}
    problems += [f"METADATA lacks the {label} URL" for label in URLS if label not in urls]
    if "# Changelog" not in str(metadata.get_payload()):
        problems.append("the long description does not include CHANGELOG.md")
    return problems


def check_entry_points(wheel: zipfile.ZipFile, dist_info: str, pyproject: dict[str, object]) -> list[str]:
    """Check the entry points: as pyproject.toml declares them, Airflow's among them, each resolving in the wheel."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    declared: dict[str, dict[str, str]] = project.get("entry-points", {})
    problems = [
        f"pyproject.toml declares no {group!r} entry point"
        for group in AIRFLOW_ENTRY_POINTS
        if group not in declared
    ]
    found = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    found.optionxform = str  # type: ignore[assignment,method-assign]  # keep the keys' case
    found.read_string(wheel.read(f"{dist_info}/entry_points.txt").decode())
    names = set(wheel.namelist())
    for group, entries in declared.items():
        for key, target in entries.items():
            built = found.get(group, key, fallback=None)
            if built != target:
                problems.append(
                    f"entry point {group}:{key} is {built!r} in the wheel, {target!r} in pyproject.toml"
                )
                continue
            module, _, attribute = target.partition(":")
            module_file = f"{module.replace('.', '/')}.py"
            if module_file not in names:
                problems.append(f"entry point {group}:{key} names {module}, which is not in the wheel")
            elif not defines(wheel.read(module_file).decode(), attribute):
                problems.append(f"entry point {group}:{key}: {module} does not define {attribute}")
    return problems


def check_sdist(sdist_path: Path, sources: list[str], version: str) -> tuple[list[str], int]:
    """Check the sdist: PKG-INFO's version, the license, readme, changelog and every package file.

    :return: the problems, and how many files the sdist holds.
    """
    with tarfile.open(sdist_path) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        members = {name.removeprefix(f"{root}/") for name in sdist.getnames()}
        pkg_info = sdist.extractfile(f"{root}/PKG-INFO")
        sdist_version = (
            email.parser.Parser().parsestr(pkg_info.read().decode())["Version"] if pkg_info else None
        )
    problems = []
    if sdist_version != version:
        problems.append(f"the sdist's PKG-INFO has Version {sdist_version}, __version__ is {version}")
    problems += [
        f"the sdist lacks {name}"
        for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", *sources)
        if name not in members
    ]
    return problems, len(members)


def check_bundle_entry(wheel: zipfile.ZipFile, site: Path) -> list[str]:
    """Unpack the wheel as an installation lays it out; its bundle entry must point at its own maintenance DAG."""
    wheel.extractall(site)
    program = (
        "import runpy, sys; sys.path.insert(0, sys.argv[1]); "
        f"runpy.run_module('{PACKAGE}.maintenance', run_name='__main__')"
    )
    # -S: no site-packages, so the package (and no editable install of it) comes from the wheel.
    printed = subprocess.run(
        [sys.executable, "-S", "-c", program, str(site)], capture_output=True, text=True, check=False
    )
    try:
        bundle = Path(json.loads(printed.stdout)["kwargs"]["path"])
    except (ValueError, KeyError, TypeError):
        return [
            f"python -m {PACKAGE}.maintenance, run from the unpacked wheel, printed no bundle entry: "
            f"{printed.stdout!r} {printed.stderr.strip()[-400:]!r}"
        ]
    if bundle != site / PACKAGE / "maintenance" or not (bundle / "flow_webhook_redelivery.py").is_file():
        return [
            f"the installed package's bundle entry points at {bundle}, not at its maintenance DAG's folder"
        ]
    return []


def main(work: Path) -> int:
    """Check ``work/dist`` against ``work/src``; return the exit status."""
    src, dist = work / "src", work / "dist"
    version = version_in_source(src)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"build-check: expected one wheel and one sdist, got {sorted(p.name for p in dist.iterdir())}")
        return 1
    problems = [
        f"{built.name}: the file name does not carry __version__ {version}"
        for built in (*wheels, *sdists)
        if f"-{version}" not in built.name
    ]
    sources = package_sources(src)
    dist_info = f"{PACKAGE}-{version}.dist-info"
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        problems += check_files(names, sources, dist_info)
        problems += check_metadata(wheel.read(f"{dist_info}/METADATA").decode(), version)
        problems += check_entry_points(wheel, dist_info, tomllib.loads((src / "pyproject.toml").read_text()))
        problems += check_bundle_entry(wheel, work / "site")
    sdist_problems, sdist_files = check_sdist(sdists[0], sources, version)
    problems += sdist_problems
    for problem in problems:
        print(f"build-check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"build-check: ok: {wheels[0].name} ({len(names)} files) and {sdists[0].name} ({sdist_files} files), "
        f"version {version}; twine check --strict passed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
