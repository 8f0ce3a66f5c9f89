"""Run every benchmark side by side with its baselines; write results.md, results.json and results.png.

Usage (from the repository root; ``run.sh`` installs the baselines' requirements first)::

    bash benchmarks/run.sh                 # everything, about 4-5 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --only fanout throughput --out /tmp/bench-out

Each part runs in a fresh process (in a process group of its own, stopped whole if it
runs past its time bound) with a private, temporary ``AIRFLOW_HOME`` (and so its own
SQLite ledger), against receivers on 127.0.0.1 that it starts and stops. Every figure
is a ratio against a baseline measured in the same run, interleaved with it: the
median of several repetitions, with the spread (min-max) beside it; the one exception
is ``latency``, a distribution of first-attempt latencies under a running dispatcher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PARTS = ("fanout", "throughput", "cpu", "parse_cost", "memory", "hung", "enqueue", "latency", "listener")
#: Each part's own bound; a whole run takes about four to five minutes on the 2-core machine it was written for.
PART_TIMEOUT_SECONDS = {
    "fanout": 240,
    "throughput": 180,
    "cpu": 120,
    "parse_cost": 150,
    "memory": 150,
    "hung": 120,
    "enqueue": 90,
    "latency": 120,
    "listener": 120,
}


def run_part(part: str, workdir: Path) -> dict[str, object]:
    home = workdir / part
    home.mkdir()
    out = workdir / f"{part}.json"
    env = {**os.environ, "BENCH_HOME": str(home), "BENCH_OUT": str(out), "PYTHONHASHSEED": "0"}
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / f"{part}.py")], env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        returncode = process.wait(timeout=PART_TIMEOUT_SECONDS[part])
    except subprocess.TimeoutExpired:
        raise SystemExit(f"benchmark part {part} ran past {PART_TIMEOUT_SECONDS[part]} s") from None
    finally:
        # The part and whatever it left in its group (receivers, programs); its dispatcher has a
        # group of its own and is told to stop when the part dies.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if returncode != 0:
        raise SystemExit(f"benchmark part {part} failed (exit {returncode})")
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.monotonic() - start
    print(f"{part}: done in {result['wall_seconds']:.0f} s", file=sys.stderr)
    return dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--out", type=Path, default=BENCH, help="where to write results.{md,json,png}")
    args = parser.parse_args()

    from report import write_report

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flow-webhook-bench-"))
    try:
        results = {part: run_part(part, workdir) for part in args.only}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(results, machine, args.out)
    print(
        f"wrote {args.out / 'results.md'} and results.png in {machine['total_seconds']:.0f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
