"""Turn the parts' results into results.md (tables), results.json (raw) and results.png (chart)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

#: Growth over the second 5,000 of 10,000 deliveries that still counts as "no growth".
GROWTH_LIMIT_MIB = 1.0

FANOUT_LABELS = {
    "ours": "ours: dispatch (ledger + concurrent sends)",
    "requests_threads": "requests on 50 threads (no ledger, no retries)",
    "one_request": "one request (one receiver latency)",
    "requests_loop": "requests.Session loop",
    "http_hook_loop": "HttpHook.run loop",
    "http_notifier": "HttpNotifier, one per webhook",
}
THROUGHPUT_LABELS = {
    "ours": "ours: dispatch, fan-outs of 50",
    "bare_loop": "bare requests.Session loop",
    "bare_threads": "requests on 50 threads",
}
CPU_LABELS = {
    "render": "render (build_message)",
    "sign_body": "sign (HMAC-SHA256)",
    "ledger_write_fanout": "ledger write, in a fan-out of 50",
    "ledger_write_single": "ledger write, one message alone",
    "http_round_trip": "HTTP round trip (bare requests, keep-alive)",
    "our_send": "our send (WebhookSender.send)",
    "dispatch_single": "dispatch of one message, end to end",
    "connection_lookup": "connection lookup (FlowWebhookHook.endpoint)",
    "config_reads": "config reads + open_ledger",
    "pool_handoff": "fan_out of 50 no-op jobs on the process's pool",
    "new_thread_pool": "for reference: a new ThreadPoolExecutor(50) per fan-out",
    "deadline_timer": "attempt_context (deadline watchdog)",
    "proxy_settings": "environment settings (proxies, CA bundle; cached per receiver)",
    "proxy_settings_uncached": "for reference: merge_environment_settings, uncached",
}


#: Shorter labels for the chart's narrow panels.
CHART_LABELS = {
    "fanout": {
        "ours": "ours: dispatch",
        "requests_threads": "requests, 50 threads",
        "one_request": "one request (latency)",
        "requests_loop": "requests loop",
        "http_hook_loop": "HttpHook.run loop",
        "http_notifier": "HttpNotifier x 50",
    },
    "throughput": {
        "ours": "ours: dispatch",
        "bare_loop": "bare requests loop",
        "bare_threads": "requests, 50 threads",
    },
    "cpu": {
        "render": "render",
        "sign_body": "sign",
        "ledger_write_fanout": "ledger write (in a fan-out)",
        "ledger_write_single": "ledger write (alone)",
        "http_round_trip": "HTTP round trip (bare)",
        "our_send": "our send",
        "dispatch_single": "dispatch of one message",
        "deadline_timer": "deadline timer (per attempt)",
        "proxy_settings": "proxy/CA env (per attempt, cached)",
    },
}


def _spread(stats: dict[str, Any], scale: float = 1.0, fmt: str = "{:.0f}", unit: str = "") -> str:
    median, low, high = (stats[key] * scale for key in ("median", "min", "max"))
    return f"{fmt.format(median)}{unit} [{fmt.format(low)}-{fmt.format(high)}]"


def _ratio(stats: dict[str, Any], fmt: str = "{:.2f}") -> str:
    return _spread(stats, fmt=fmt, unit=" x")


def _met(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    fan = results.get("fanout")
    if fan:
        s, r = fan["seconds"], fan["ratios"]
        ms = {"scale": 1000, "unit": " ms"}
        target = r["ours_vs_receiver_latency"]["median"]
        rows.append(
            [
                "2",
                f"Fan-out: {fan['webhooks']} webhooks, receiver answers after {fan['receiver_delay_seconds'] * 1000:.0f} ms (wall time)",
                _spread(s["ours"], **ms),
                f"one receiver latency: {_spread(s['one_request'], **ms)}",
                _ratio(r["ours_vs_receiver_latency"]),
                "≤ 1.5 x",
                _met(target <= 1.5),
            ]
        )
        for name in ("http_notifier", "http_hook_loop", "requests_loop", "requests_threads"):
            rows.append(
                [
                    "2",
                    "Fan-out, same 50 requests",
                    _spread(s["ours"], **ms),
                    f"{FANOUT_LABELS[name]}: {_spread(s[name], **ms)}",
                    _ratio(
                        r[f"ours_vs_{name}"],
                        fmt="{:.3f}" if r[f"ours_vs_{name}"]["median"] < 0.1 else "{:.2f}",
                    ),
                    "< 1 x",
                    _met(r[f"ours_vs_{name}"]["median"] < 1),
                ]
            )
    thr = results.get("throughput")
    if thr:
        s, r = thr["per_second"], thr["ratios"]
        rows.append(
            [
                "3",
                "Throughput: signed deliveries/s, keep-alive receiver, ledger on SQLite",
                _spread(s["ours"], unit="/s"),
                f"{THROUGHPUT_LABELS['bare_loop']}, same bytes: {_spread(s['bare_loop'], unit='/s')}",
                _ratio(r["ours_vs_bare_loop"]),
                "≥ 0.8 x",
                _met(r["ours_vs_bare_loop"]["median"] >= 0.8),
            ]
        )
        rows.append(
            [
                "3",
                "Throughput (reference)",
                _spread(s["ours"], unit="/s"),
                f"{THROUGHPUT_LABELS['bare_threads']}: {_spread(s['bare_threads'], unit='/s')}",
                _ratio(r["ours_vs_bare_threads"]),
                "-",
                "-",
            ]
        )
    cpu = results.get("cpu")
    if cpu:
        us, vs = cpu["microseconds"], cpu["vs_http_round_trip"]
        own = [us[name]["median"] for name in ("render", "sign_body", "ledger_write_fanout")]
        rows.append(
            [
                "4",
                "Per-message CPU: render + sign + ledger write (in a fan-out of 50)",
                f"{sum(own):.0f} µs",
                f"HTTP round trip: {_spread(us['http_round_trip'], unit=' µs')}",
                f"{sum(own) / cpu['http_round_trip_median_us']:.2f} x",
                "-",
                "-",
            ]
        )
        rows.append(
            [
                "4",
                "Per-message: our send vs a bare request, same bytes",
                _spread(us["our_send"], unit=" µs"),
                f"HTTP round trip: {_spread(us['http_round_trip'], unit=' µs')}",
                _ratio(vs["our_send"]),
                "-",
                "-",
            ]
        )
    parse = results.get("parse_cost")
    if parse:
        s, r = parse["seconds"], parse["ratios"]
        ms = {"scale": 1000, "unit": " ms"}
        added = [a + b for a, b in zip(s["ours_import"]["values"], s["ours_attach"]["values"], strict=True)]
        rows.append(
            [
                "5",
                "DAG parse: `import airflow.sdk` + 20-task DAG, then the provider imported and 50 webhooks "
                "attached (same interpreter)",
                f"provider + attach: {_spread(summary_of(added), **ms)}",
                f"import airflow.sdk + DAG: {_spread(s['baseline'], **ms)}",
                _ratio(r["ours_vs_baseline_same_process"], fmt="{:.3f}"),
                "≤ 1.10 x",
                _met(r["ours_vs_baseline_same_process"]["median"] <= 1.10),
            ]
        )
        rows.append(
            [
                "5",
                "DAG parse, cross-check: separate fresh interpreters, paired",
                _spread(s["ours"], **ms),
                f"without the provider: {_spread(s['baseline'], **ms)}",
                _ratio(r["ours_vs_baseline_separate_processes"]),
                "≤ 1.10 x",
                _met(r["ours_vs_baseline_separate_processes"]["median"] <= 1.10),
            ]
        )
        calls = parse["calls_during_import_and_attach"]
        total_calls = sum(calls.values())
        rows.append(
            [
                "5",
                "Network / database calls while importing and attaching",
                str(total_calls),
                "-",
                "-",
                "0",
                _met(total_calls == 0),
            ]
        )
    mem = results.get("memory")
    if mem:
        peak, increase, r = mem["process_peak_mib"], mem["fan_out_increase_mib"], mem["ratios"]
        mib = {"fmt": "{:.1f}", "unit": " MiB"}
        rows.append(
            [
                "6",
                "Peak RSS of a process that sends one fan-out of 50 (fresh interpreter, imports included)",
                _spread(peak["ours"], **mib),
                f"requests on 50 threads: {_spread(peak['baseline'], **mib)}",
                _ratio(r["ours_vs_baseline_process_peak"]),
                "-",
                "-",
            ]
        )
        rows.append(
            [
                "6",
                "RSS added by the fan-out itself, above the RSS after `import airflow.sdk, requests`",
                _spread(increase["ours"], **mib),
                f"requests on 50 threads: {_spread(increase['baseline'], **mib)}",
                _ratio(r["ours_vs_baseline_fan_out_increase"]),
                "-",
                "-",
            ]
        )
        g = mem["growth"]
        ours_growth, bare_growth = g["ours"]["rss_mib"], g["bare_loop"]["rss_mib"]
        objects = g["ours"]["objects"]
        rows.append(
            [
                "6",
                f"RSS growth over the second half of {g['ours']['deliveries']:,} deliveries (200 fan-outs of 50)",
                f"{ours_growth['delta']:+.2f} MiB ({ours_growth['per_1000']:+.3f} MiB per 1,000; "
                f"live objects {objects['delta']:+.0f}); whole run {ours_growth['overall_delta']:+.1f} MiB",
                f"bare loop, second half of {g['bare_loop']['deliveries']:,}: {bare_growth['delta']:+.2f} MiB",
                "-",
                f"≤ {GROWTH_LIMIT_MIB:.0f} MiB",
                _met(ours_growth["delta"] <= GROWTH_LIMIT_MIB),
            ]
        )
    return rows


def summary_of(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_rows(cpu: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, stats in cpu["microseconds"].items():
        ratio = "1 x" if name == "http_round_trip" else _ratio(cpu["vs_http_round_trip"][name])
        unit = stats["unit"]
        per_message = f"{stats['median'] / 50:.1f}" if unit == "fan-out" else f"{stats['median']:.1f}"
        rows.append([CPU_LABELS.get(name, name), unit, _spread(stats, fmt="{:.1f}"), per_message, ratio])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any], machine: dict[str, Any]) -> str:
    parts = [
        "# Benchmark results",
        "",
        f"Measured by `bash benchmarks/run.sh` on {machine['cpus']} CPUs, Python {machine['python']}, "
        f"{machine['platform']}; the run took {machine['total_seconds']:.0f} s. Each figure is the median "
        "of several repetitions with the spread [min-max]; each ratio pairs every repetition with the "
        "baseline measured beside it in the same run (interleaved), and gives their median [min-max]. "
        "The receiver is a lean keep-alive HTTP/1.1 server on 127.0.0.1 in its own process, which "
        "verifies every signature.",
        "",
        _table(["#", "benchmark", "ours", "baseline", "ratio", "target", "met"], summary_rows(results)),
        "",
    ]
    if "cpu" in results:
        parts += [
            "## Where a delivery's time goes",
            "",
            "Microseconds per unit, median [min-max] of 5 repetitions; the last column divides by one "
            "keep-alive HTTP round trip of a bare `requests.Session` to the same receiver.",
            "",
            _table(
                ["step", "per", "µs per unit", "µs per message", "÷ HTTP round trip"],
                cpu_rows(results["cpu"]),
            ),
            "",
        ]
    if "parse_cost" in results:
        parse = results["parse_cost"]
        s = parse["seconds"]
        parts += [
            "## DAG-parse detail",
            "",
            f"- Importing `FlowWebhook, FlowWebhooks`: {_spread(s['ours_import'], scale=1000, fmt='{:.1f}', unit=' ms')}; "
            f"building and attaching 50 webhooks: {_spread(s['ours_attach'], scale=1000, fmt='{:.1f}', unit=' ms')}.",
            f"- Provider modules imported: {', '.join(parse['provider_modules']) or 'none'}.",
            f"- Heavier modules pulled in by the provider at parse time: "
            f"{', '.join(parse['notable_modules']) or 'none'}.",
            f"- Calls while importing and attaching: {json.dumps(parse['calls_during_import_and_attach'])}.",
            "",
        ]
    parts += ["![Benchmark chart](results.png)", ""]
    return "\n".join(parts)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(3, 2, figsize=(15, 13))
    axes = [[grid[0][0], grid[0][1], grid[1][0]], [grid[1][1], grid[2][0], grid[2][1]]]
    fig.suptitle(
        "airflow-webhook-provider benchmarks - median with min-max, baselines measured in the same run"
    )

    def bars(
        ax: Any, labels: list[str], stats: list[dict[str, Any]], scale: float, colors: list[str]
    ) -> None:
        medians = [s["median"] * scale for s in stats]
        errors = [
            [m - s["min"] * scale for m, s in zip(medians, stats, strict=True)],
            [s["max"] * scale - m for m, s in zip(medians, stats, strict=True)],
        ]
        ax.barh(labels, medians, xerr=errors, color=colors, capsize=3)
        ax.invert_yaxis()
        for y, value in enumerate(medians):
            ax.annotate(f" {value:,.0f}", (value, y), va="center", fontsize=8)

    ours_color, base_color = "#1f77b4", "#bbbbbb"
    fan = results.get("fanout")
    ax = axes[0][0]
    if fan:
        names = list(CHART_LABELS["fanout"])
        bars(
            ax,
            [CHART_LABELS["fanout"][n] for n in names],
            [fan["seconds"][n] for n in names],
            1000,
            [ours_color if n == "ours" else base_color for n in names],
        )
        ax.set_xscale("log")
        target = fan["seconds"]["one_request"]["median"] * 1500
        ax.axvline(target, color="red", linestyle="--", label=f"target ≤ 1.5 x latency ({target:.0f} ms)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("2. Fan-out of 50, receiver 100 ms: wall time (ms, log)")

    thr = results.get("throughput")
    ax = axes[0][1]
    if thr:
        names = list(CHART_LABELS["throughput"])
        bars(
            ax,
            [CHART_LABELS["throughput"][n] for n in names],
            [thr["per_second"][n] for n in names],
            1,
            [ours_color if n == "ours" else base_color for n in names],
        )
        target = thr["per_second"]["bare_loop"]["median"] * 0.8
        ax.axvline(target, color="red", linestyle="--", label=f"target ≥ 0.8 x bare loop ({target:.0f}/s)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("3. Throughput: signed deliveries per second")

    cpu = results.get("cpu")
    ax = axes[0][2]
    if cpu:
        names = [n for n in CHART_LABELS["cpu"] if n in cpu["microseconds"]]
        colors = ["#d62728" if n == "http_round_trip" else ours_color for n in names]
        bars(ax, [CHART_LABELS["cpu"][n] for n in names], [cpu["microseconds"][n] for n in names], 1, colors)
        ax.set_xscale("log")
    ax.set_title("4. Per-message / per-attempt cost (µs, log)")

    parse = results.get("parse_cost")
    ax = axes[1][0]
    if parse:
        s = parse["seconds"]
        bars(
            ax,
            ["airflow.sdk + DAG (own process)", "+ provider + 50 webhooks (own process)"],
            [s["baseline"], s["ours"]],
            1000,
            [base_color, ours_color],
        )
        base_part = s["ours_baseline_part"]["median"] * 1000
        added = (s["ours_import"]["median"] + s["ours_attach"]["median"]) * 1000
        label = "same process: airflow.sdk + DAG | provider"
        ax.barh([label], [base_part], color=base_color)
        ax.barh([label], [added], left=[base_part], color=ours_color)
        ax.annotate(
            f" +{added:.0f} ms ({added / base_part:.1%})", (base_part + added, 2), va="center", fontsize=8
        )
        target = base_part * 1.10
        ax.axvline(target, color="red", linestyle="--", label=f"target ≤ 1.10 x ({target:.0f} ms)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("5. DAG parse (ms)")

    mem = results.get("memory")
    ax = axes[1][1]
    if mem:
        peak, increase = mem["process_peak_mib"], mem["fan_out_increase_mib"]
        bars(
            ax,
            [
                "process: requests, 50 threads",
                "process: ours",
                "fan-out: requests, 50 threads",
                "fan-out: ours",
            ],
            [peak["baseline"], peak["ours"], increase["baseline"], increase["ours"]],
            1,
            [base_color, ours_color, base_color, ours_color],
        )
    ax.set_title("6. Peak RSS of one fan-out of 50 (MiB)")

    ax = axes[1][2]
    if mem:
        for key, label, color in (
            ("ours", "ours: 200 fan-outs of 50", ours_color),
            ("bare_loop", "bare requests loop", "#7f7f7f"),
        ):
            samples = mem["growth"][key]["samples"]
            ax.plot([x for x, _ in samples], [y for _, y in samples], marker=".", label=label, color=color)
        ax.set_xlabel("deliveries")
        ax.set_ylabel("RSS (MiB)")
        ax.legend(fontsize=8)
    ax.set_title("6. RSS across 10,000 deliveries")

    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(results: dict[str, Any], machine: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results, machine))
    chart(results, out / "results.png")
