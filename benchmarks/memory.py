"""Memory: peak RSS of one fan-out of 50, and RSS across 10,000 deliveries.

Every measurement is a fresh interpreter, so each peak is its own:

- peak of a fan-out (receiver answering after 100 ms), alternating two programs that
  both start with ``import airflow.sdk, requests``: the baseline sends the 50 requests
  from 50 threads through one ``requests.Session``; ours hands 50 messages to
  ``Pipeline.submit`` with no dispatcher alive, so they are recorded and sent inline
  (its imports and the ledger included). Each reports its whole peak RSS,
  and how far the fan-out itself raised RSS above where the imports left it (Linux
  ``clear_refs`` restarts the peak);
- growth: ours sends 10,000 deliveries in 200 fan-outs of 50 and samples RSS every 10;
  the baseline, a bare ``requests.Session`` loop, sends 5,000. The growth over the
  second half (after warm-up) is the figure; Python's live object count is a second view.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _common import (
    Deadline,
    define_connections,
    init_airflow_home,
    lean_receiver,
    paired_ratios,
    summary,
    write_result,
)

REPS = 4
GROWTH_DELIVERIES = 10_000
BASELINE_GROWTH_DELIVERIES = 5_000
SAMPLE_EVERY = 500

_PEAK = r"""
import json, resource, sys
sys.path.insert(0, BENCH)
import airflow.sdk
import requests


def status_mib(field):
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) / 1024 for line in file if line.startswith(field + ":"))


import_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
settled = status_mib("VmRSS")
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")  # Linux: the peak (VmHWM) starts again from the RSS of now
if MODE == "ours":
    from workload import EVENT, submit_inline, webhooks
    results = submit_inline([(webhook, EVENT) for webhook in webhooks()])
    assert all(result.delivered for result in results)
else:
    from concurrent.futures import ThreadPoolExecutor
    with open(REQUESTS) as file:
        prepared = [(body.encode(), headers) for body, headers in json.load(file)]
    with requests.Session() as session:
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=50))
        with ThreadPoolExecutor(max_workers=50) as pool:
            for response in pool.map(lambda item: session.post(URL, data=item[0], headers=item[1], timeout=30), prepared):
                response.raise_for_status()
fan_out_peak = status_mib("VmHWM")
print("RESULT " + json.dumps({
    "process_peak_mib": max(import_peak, fan_out_peak),
    "fan_out_increase_mib": fan_out_peak - settled,
}))
"""

_GROWTH = r"""
import gc, json, sys, time
sys.path.insert(0, BENCH)
import psutil
import airflow.sdk
import requests
process = psutil.Process()
samples = []
objects = []
deadline = time.monotonic() + 100
sent = 0
if MODE == "ours":
    from workload import submit_inline, webhooks
    from airflow_webhook_provider.core.definitions import JobEvent
    definitions = webhooks()
    while sent < TOTAL:
        event = JobEvent(flow_id="bench_memory", job_id=f"run-{sent}", job_status="failed")
        results = submit_inline([(webhook, event) for webhook in definitions])
        assert all(result.delivered for result in results)
        sent += len(results)
        if sent % EVERY == 0:
            samples.append((sent, process.memory_info().rss / 2**20))
            objects.append((sent, len(gc.get_objects())))
        if time.monotonic() > deadline:
            raise SystemExit("ran past its time bound")
else:
    with open(REQUESTS) as file:
        prepared = [(body.encode(), headers) for body, headers in json.load(file)]
    with requests.Session() as session:
        while sent < TOTAL:
            body, headers = prepared[sent % len(prepared)]
            session.post(URL, data=body, headers=headers, timeout=30).raise_for_status()
            sent += 1
            if sent % EVERY == 0:
                samples.append((sent, process.memory_info().rss / 2**20))
                objects.append((sent, len(gc.get_objects())))
            if time.monotonic() > deadline:
                raise SystemExit("ran past its time bound")
print("RESULT " + json.dumps({"samples": samples, "objects": objects}))
"""


def run_program(template: str, **values: object) -> dict[str, object]:
    program = template
    for name, value in values.items():
        program = program.replace(name, repr(value))
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        cwd=os.environ[
            "BENCH_HOME"
        ],  # not the repository: its copy of the provider would shadow the installed one
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory program failed:\n{completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)


def growth(samples: list[tuple[float, float]], total: int) -> dict[str, float]:
    """Growth over the second half of the run (slope per 1,000 deliveries, last minus first), and overall.

    The first half is warm-up: it includes SQLite's page cache filling up to its bound
    (2 MiB by default) as the ledger grows.
    """
    steady = [(x, y) for x, y in samples if x >= total / 2]
    return {
        "per_1000": slope(steady) * 1000,
        "first": steady[0][1],
        "last": steady[-1][1],
        "delta": steady[-1][1] - steady[0][1],
        "overall_delta": samples[-1][1] - samples[0][1],
    }


def write_requests(home: Path) -> str:
    """Write the 50 signed requests ours sends, for the baseline programs to load (they import no provider)."""
    from workload import same_requests, webhooks

    path = home / "requests.json"
    path.write_text(json.dumps([(body.decode(), headers) for body, headers in same_requests(webhooks())]))
    return str(path)


def main() -> None:
    home = init_airflow_home()
    bench = os.path.dirname(os.path.abspath(__file__))
    deadline = Deadline(140, "memory")
    peaks: dict[str, list[float]] = {"baseline": [], "ours": []}
    increases: dict[str, list[float]] = {"baseline": [], "ours": []}
    with lean_receiver(delay=0.1) as receiver:
        define_connections(receiver.url(), receiver.port)
        prepared = write_requests(home)
        program_values = {"URL": receiver.url(), "BENCH": bench, "REQUESTS": prepared}
        run_program(_PEAK, MODE="ours", **program_values)  # makes the ledger's schema; not counted
        for rep in range(REPS):
            for mode in ("baseline", "ours") if rep % 2 == 0 else ("ours", "baseline"):
                deadline.check()
                result = run_program(_PEAK, MODE=mode, **program_values)
                peaks[mode].append(float(result["process_peak_mib"]))  # type: ignore[arg-type]
                increases[mode].append(float(result["fan_out_increase_mib"]))  # type: ignore[arg-type]
    with lean_receiver(delay=0.0) as receiver:
        define_connections(receiver.url(), receiver.port)
        prepared = write_requests(home)
        common = {"EVERY": SAMPLE_EVERY, "URL": receiver.url(), "BENCH": bench, "REQUESTS": prepared}
        deadline.check()
        ours = run_program(_GROWTH, MODE="ours", TOTAL=GROWTH_DELIVERIES, **common)
        deadline.check()
        bare = run_program(_GROWTH, MODE="bare", TOTAL=BASELINE_GROWTH_DELIVERIES, **common)
        stats = receiver.stats()
    assert stats["signed_invalid"] == 0
    write_result(
        "memory",
        {
            "process_peak_mib": {mode: summary(values) for mode, values in peaks.items()},
            "fan_out_increase_mib": {mode: summary(values) for mode, values in increases.items()},
            "ratios": {
                "ours_vs_baseline_process_peak": paired_ratios(peaks["ours"], peaks["baseline"]),
                "ours_vs_baseline_fan_out_increase": paired_ratios(increases["ours"], increases["baseline"]),
            },
            "growth": {
                "ours": {
                    "deliveries": GROWTH_DELIVERIES,
                    "rss_mib": growth(ours["samples"], GROWTH_DELIVERIES),  # type: ignore[arg-type]
                    "objects": growth(ours["objects"], GROWTH_DELIVERIES),  # type: ignore[arg-type]
                    "samples": ours["samples"],
                },
                "bare_loop": {
                    "deliveries": BASELINE_GROWTH_DELIVERIES,
                    "rss_mib": growth(bare["samples"], BASELINE_GROWTH_DELIVERIES),  # type: ignore[arg-type]
                    "objects": growth(bare["objects"], BASELINE_GROWTH_DELIVERIES),  # type: ignore[arg-type]
                    "samples": bare["samples"],
                },
            },
        },
    )


if __name__ == "__main__":
    main()
