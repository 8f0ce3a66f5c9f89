#!/usr/bin/env bash
# Build the package as a release would and check what it ships.
#
#   bash scripts/build-check.sh                 # build, check, throw the files away
#   bash scripts/build-check.sh --outdir dist   # ... and keep the sdist and wheel in dist/
#
# `python -m build` builds the sdist, then the wheel from the unpacked sdist, each in a fresh
# isolated environment (so a file missing from the sdist fails the wheel too). It runs on a
# temporary copy of the files a build reads (tracked or new, not ignored), so the working tree
# gets no build/ or *.egg-info. Then `twine check --strict`, and scripts/check_dist.py checks
# what the sdist and the wheel hold: every package file (py.typed, the plugin's templates and
# static files, the maintenance DAG and its .airflowignore), nothing outside the package, the
# `apache_airflow_provider` and `airflow.plugins` entry points resolving to code in the
# wheel, METADATA's version equal to `__version__`, and the maintenance bundle entry printed
# by the unpacked wheel itself.
# Exit status 0 when all of it holds; otherwise 1, with one line per problem on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --outdir) outdir=$2; shift 2 ;;
    *) echo "usage: bash scripts/build-check.sh [--outdir DIR]" >&2; exit 2 ;;
  esac
done
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/flow-webhook-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/dist"

git ls-files -z --cached --others --exclude-standard -- \
  pyproject.toml README.md CHANGELOG.md LICENSE MANIFEST.in setup.cfg setup.py airflow_webhook_provider |
  while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done |
  tar --null --files-from=- -cf - | tar -xf - -C "$work/src"

if ! "$python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  echo "build-check: python -m build failed (the last 40 lines of its output are above)" >&2
  exit 1
fi
if ! "$python" -m twine check --strict "$work"/dist/* >"$work/twine.log" 2>&1; then
  cat "$work/twine.log" >&2
  echo "build-check: twine check --strict failed (its output is above)" >&2
  exit 1
fi

"$python" scripts/check_dist.py "$work"

if [ -n "$outdir" ]; then
  mkdir -p "$outdir"
  cp "$work"/dist/* "$outdir"/
  echo "build-check: kept $(cd "$work/dist" && ls | tr '\n' ' ')in $outdir"
fi
echo "build-check: took $(($(date +%s) - started)) s"
