"""Turn the parts' results into results.md (tables), results.json (raw) and results.png (chart)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

#: Growth over the second 5,000 of 10,000 deliveries that still counts as "no growth".
GROWTH_LIMIT_MIB = 1.0

FANOUT_LABELS = {
    "ours": "ours: Pipeline.submit inline (ledger + concurrent sends)",
    "requests_threads": "requests on 50 threads (no ledger, no retries)",
    "one_request": "one request (one receiver latency)",
    "requests_loop": "requests.Session loop",
    "http_hook_loop": "HttpHook.run loop",
    "http_notifier": "HttpNotifier, one per webhook",
}
THROUGHPUT_LABELS = {
    "inline": "ours: Pipeline.submit inline, fan-outs of 50",
    "dispatcher": "ours: Dispatcher.run(once=True) draining the ledger",
    "bare_loop": "bare requests.Session loop",
    "bare_threads": "requests on 50 threads",
}
CPU_LABELS = {
    "capture_message": "capture (message_for: delivery id, references, definition)",
    "render": "render (build_message)",
    "sign_body": "sign (HMAC-SHA256)",
    "ledger_record_fanout": "ledger record only (dispatcher alive), in a fan-out of 50",
    "ledger_write_fanout": "ledger record + claim + outcomes (inline), in a fan-out of 50",
    "ledger_write_single": "ledger record + claim + outcomes (inline), one message alone",
    "http_round_trip": "HTTP round trip (bare requests, keep-alive)",
    "our_send": "our send (WebhookSender.send)",
    "submit_single": "inline submit of one message, end to end",
    "connection_lookup": "connection lookup (resolve_endpoint)",
    "config_reads": "config reads + open_ledger (Pipeline.from_config)",
    "heartbeat_read": "dispatcher heartbeat read (Pipeline.mode)",
    "pool_handoff": "fan_out of 50 no-op jobs on the process's pool",
    "new_thread_pool": "for reference: a new ThreadPoolExecutor(50) per fan-out",
    "deadline_timer": "attempt_context (deadline watchdog)",
    "proxy_settings": "the proxy a receiver goes through (cached per receiver)",
    "proxy_settings_uncached": "for reference: get_environ_proxies, uncached",
}
HUNG_LABELS = {
    "plain": "no webhooks",
    "inline_closed": "inline, circuit closed (first attempt times out)",
    "inline_open": "inline, circuit open (records only)",
    "dispatcher": "dispatcher alive (records only)",
}

LISTENER_LABELS = {
    "plain": "no listener",
    "noop": "a no-op listener",
    "ours": "the provider's listeners",
}


#: Shorter labels for the chart's narrow panels.
CHART_LABELS = {
    "fanout": {
        "ours": "ours: submit inline",
        "requests_threads": "requests, 50 threads",
        "one_request": "one request (latency)",
        "requests_loop": "requests loop",
        "http_hook_loop": "HttpHook.run loop",
        "http_notifier": "HttpNotifier x 50",
    },
    "throughput": {
        "inline": "ours: submit inline",
        "dispatcher": "ours: dispatcher drain",
        "dispatcher_default_cap": "ours: dispatcher, default cap 10",
        "bare_loop": "bare requests loop",
        "bare_threads": "requests, 50 threads",
    },
    "cpu": {
        "capture_message": "capture",
        "render": "render",
        "sign_body": "sign",
        "ledger_record_fanout": "ledger record only (in a fan-out)",
        "ledger_write_fanout": "ledger inline (in a fan-out)",
        "ledger_write_single": "ledger inline (alone)",
        "http_round_trip": "HTTP round trip (bare)",
        "our_send": "our send",
        "submit_single": "inline submit of one message",
        "deadline_timer": "deadline timer (per attempt)",
        "proxy_settings": "proxy lookup (per attempt, cached)",
    },
    "hung": {
        "plain": "no webhooks",
        "inline_closed": "inline, circuit closed",
        "inline_open": "inline, circuit open",
        "dispatcher": "dispatcher alive",
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
        baseline = f"{THROUGHPUT_LABELS['bare_loop']}, same bytes: {_spread(s['bare_loop'], unit='/s')}"
        rows.append(
            [
                "3",
                "Throughput: signed deliveries/s, keep-alive receiver, ledger on SQLite; inline, fan-outs of 50",
                _spread(s["inline"], unit="/s"),
                baseline,
                _ratio(r["inline_vs_bare_loop"]),
                "≥ 0.8 x",
                _met(r["inline_vs_bare_loop"]["median"] >= 0.8),
            ]
        )
        rows.append(
            [
                "3",
                f"Throughput: the dispatcher draining {thr['deliveries_per_rep']['dispatcher']:,} recorded messages "
                "(`run(once=True)`), connection `max_concurrency` 50",
                _spread(s["dispatcher"], unit="/s"),
                baseline,
                _ratio(r["dispatcher_vs_bare_loop"]),
                "≥ 0.9 x",
                _met(r["dispatcher_vs_bare_loop"]["median"] >= 0.9),
            ]
        )
        if "dispatcher_default_cap" in s:
            rows.append(
                [
                    "3",
                    "Throughput: the same drain to a connection at the default `max_concurrency` (10 in flight)",
                    _spread(s["dispatcher_default_cap"], unit="/s"),
                    baseline,
                    _ratio(r["dispatcher_default_cap_vs_bare_loop"]),
                    "-",
                    "-",
                ]
            )
        for name in ("inline", "dispatcher"):
            rows.append(
                [
                    "3",
                    f"Throughput (reference): {name}",
                    _spread(s[name], unit="/s"),
                    f"{THROUGHPUT_LABELS['bare_threads']}: {_spread(s['bare_threads'], unit='/s')}",
                    _ratio(r[f"{name}_vs_bare_threads"]),
                    "-",
                    "-",
                ]
            )
    cpu = results.get("cpu")
    if cpu:
        us, vs = cpu["microseconds"], cpu["vs_http_round_trip"]
        own = [
            us[name]["median"] for name in ("capture_message", "render", "sign_body", "ledger_write_fanout")
        ]
        rows.append(
            [
                "4",
                "Per-message CPU: capture + render + sign + ledger (inline, in a fan-out of 50)",
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
    rows += new_part_rows(results)
    rows += listener_rows(results)
    return rows


def new_part_rows(results: dict[str, Any]) -> list[list[str]]:
    """The rows of the hung-receiver, enqueue and latency parts (the listener's: :func:`listener_rows`)."""
    rows: list[list[str]] = []
    hung = results.get("hung")
    if hung:
        s, added, r = hung["seconds"], hung["added_seconds"], hung["ratios"]
        ms = {"scale": 1000, "unit": " ms"}
        timeout = hung["timeout_seconds"]
        baseline = f"{HUNG_LABELS['plain']}: {_spread(s['plain'], **ms)}"
        rows.append(
            [
                "7",
                f"Hung receiver, one output task (`dag.test()`), {timeout:.0f} s timeout: "
                f"{HUNG_LABELS['inline_closed']}",
                f"{_spread(s['inline_closed'], **ms)}; adds {_spread(added['inline_closed'], fmt='{:.2f}', unit=' s')}",
                baseline,
                _ratio(r["inline_closed_vs_plain"], fmt="{:.1f}"),
                f"adds ≤ 1 timeout + 0.5 s ({timeout + 0.5:.1f} s)",
                _met(added["inline_closed"]["median"] <= timeout + 0.5),
            ]
        )
        for name in ("inline_open", "dispatcher"):
            rows.append(
                [
                    "7",
                    f"Hung receiver, one output task: {HUNG_LABELS[name]}",
                    f"{_spread(s[name], **ms)}; callback alone "
                    f"{_spread(hung['callback_seconds'][name], scale=1000, fmt='{:.1f}', unit=' ms')}",
                    baseline,
                    _ratio(r[f"{name}_vs_plain"]),
                    "-",
                    "-",
                ]
            )
    enqueue = results.get("enqueue")
    if enqueue:
        s, r = enqueue["seconds_per_message"], enqueue["ratios"]
        for count in enqueue["fan_outs"]:
            rows.append(
                [
                    "8",
                    f"Callback cost per message, dispatcher alive (records only), task selected by {count} "
                    f"webhook{'s' if count > 1 else ''}",
                    _spread(s[f"ours_{count}"], scale=1000, fmt="{:.2f}", unit=" ms"),
                    f"HttpNotifier to a receiver answering at once: "
                    f"{_spread(s[f'notifier_{count}'], scale=1000, fmt='{:.2f}', unit=' ms')}",
                    _ratio(
                        r[f"ours_vs_notifier_{count}"],
                        fmt="{:.3f}" if r[f"ours_vs_notifier_{count}"]["median"] < 0.1 else "{:.2f}",
                    ),
                    "< 1 x",
                    _met(r[f"ours_vs_notifier_{count}"]["median"] < 1),
                ]
            )
    latency = results.get("latency")
    if latency:
        q = latency["seconds"]
        rows.append(
            [
                "9",
                f"First-attempt latency, running dispatcher (SQLite, polls every {latency['poll_seconds']:g} s): "
                f"{latency['messages']} messages over {latency['spread_seconds']:.0f} s, record to arrival",
                f"p50 {q['p50'] * 1000:.0f} ms, p90 {q['p90'] * 1000:.0f} ms, p99 {q['p99'] * 1000:.0f} ms, "
                f"max {q['max'] * 1000:.0f} ms",
                "-",
                "-",
                f"max ≤ {latency['bound_seconds']:g} s",
                _met(q["max"] <= latency["bound_seconds"]),
            ]
        )
    return rows


def listener_rows(results: dict[str, Any]) -> list[list[str]]:
    """The rows of the listener part: what the run-end listener adds to the scheduler's loop."""
    listener = results.get("listener")
    if not listener:
        return []
    rows: list[list[str]] = []
    s, added, r = listener["seconds"], listener["added_seconds"], listener["ratios"]
    alone, commits = listener["alone_seconds"], listener["alone_commit_seconds"]
    ms = {"scale": 1000, "fmt": "{:.1f}", "unit": " ms"}
    us = {"scale": 1e6, "unit": " µs"}
    for count in listener["tasks"]:
        rows.append(
            [
                "10",
                f"Listener in the scheduler loop: `update_state` + commit of a finished {count}-task run, "
                f"{LISTENER_LABELS['ours']} registered",
                f"{_spread(s[f'ours_{count}'], **ms)}; the listener adds {_spread(added[f'ours_{count}'], **us)}",
                f"{LISTENER_LABELS['plain']}: {_spread(s[f'plain_{count}'], **ms)}; "
                f"{LISTENER_LABELS['noop']}: {_spread(s[f'noop_{count}'], **ms)} "
                f"({_ratio(r[f'noop_{count}_vs_plain'])})",
                _ratio(r[f"ours_{count}_vs_plain"]),
                "-",
                "-",
            ]
        )
    for count in listener["tasks"]:
        call, query = alone[f"listener_{count}"], alone[f"get_task_instances_{count}"]
        rows.append(
            [
                "10",
                f"Listener alone (`on_dag_run_failed`), {count} tasks: the call, then the commit that "
                "hands the fact to the writer",
                f"call {_spread(call, **us)}, of which `get_task_instances` {_spread(query, **us)} "
                f"({query['median'] / call['median']:.0%}); commit {_spread(commits[f'listener_commit_{count}'], **us)}",
                f"{LISTENER_LABELS['noop']}: call {_spread(alone[f'noop_{count}'], scale=1e6, fmt='{:.1f}', unit=' µs')}, "
                f"commit {_spread(commits[f'noop_commit_{count}'], **us)}",
                "-",
                "-",
                "-",
            ]
        )
    for count in listener["tasks"]:
        rows.append(
            [
                "10",
                f"For reference, {count} tasks: the fact's three columns (`task_id, map_index, state`) "
                "+ the session's unflushed task instances, instead of `get_task_instances`",
                _spread(alone[f"columns_{count}"], **us),
                f"`get_task_instances`: {_spread(alone[f'get_task_instances_{count}'], **us)}",
                _ratio(listener["alone_ratios"][f"columns_vs_get_task_instances_{count}"], fmt="{:.3f}"),
                "-",
                "-",
            ]
        )
    writer = listener["writer_seconds_per_fact"]
    rows.append(
        [
            "10",
            f"Listener's writer thread, per fact: 1 run message + {listener['outputs_selected']} reconciled "
            "outputs and the run end, in the SQLite ledger (off the scheduler's thread, same process)",
            "; ".join(
                f"{count} tasks: {_spread(writer[str(count)], scale=1000, fmt='{:.2f}', unit=' ms')}"
                for count in listener["tasks"]
            ),
            "-",
            "-",
            "-",
            "-",
        ]
    )
    hooks = listener["session_hooks"]
    rows.append(
        [
            "10",
            f"Commit hooks left on one scoped session (the scheduler loop's) after {hooks['run_ends']} run ends "
            f"of {hooks['tasks']} tasks",
            f"{hooks['hooks_left']} hooks, {hooks['retained_bytes_per_run_end'] / 1024:.1f} KiB kept per run end; "
            f"an empty commit {hooks['empty_commit_with_hooks_seconds'] * 1e6:.0f} µs",
            f"{LISTENER_LABELS['noop']}: {hooks['hooks_left_noop']} hooks; an empty commit on a fresh session "
            f"{hooks['empty_commit_fresh_seconds'] * 1e6:.0f} µs",
            f"{hooks['empty_commit_with_hooks_seconds'] / hooks['empty_commit_fresh_seconds']:.2f} x",
            "-",
            "-",
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

    listener = results.get("listener")
    # A fourth row only for the listener part, so that results without it keep their chart.
    nrows = 4 if listener else 3
    fig, axes = plt.subplots(nrows, 3, figsize=(22, 13 if nrows == 3 else 17))
    fig.suptitle(
        "airflow-webhook-provider benchmarks - median with min-max, baselines measured in the same run"
    )

    def bars(
        ax: Any,
        labels: list[str],
        stats: list[dict[str, Any]],
        scale: float,
        colors: list[str],
        fmt: str = " {:,.0f}",
    ) -> None:
        medians = [s["median"] * scale for s in stats]
        errors = [
            [m - s["min"] * scale for m, s in zip(medians, stats, strict=True)],
            [s["max"] * scale - m for m, s in zip(medians, stats, strict=True)],
        ]
        ax.barh(labels, medians, xerr=errors, color=colors, capsize=3)
        ax.invert_yaxis()
        for y, value in enumerate(medians):
            ax.annotate(fmt.format(value), (value, y), va="center", fontsize=8)

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
            [ours_color if n in ("inline", "dispatcher") else base_color for n in names],
        )
        bare = thr["per_second"]["bare_loop"]["median"]
        ax.axvline(
            bare * 0.9,
            color="red",
            linestyle="--",
            label=f"dispatcher ≥ 0.9 x bare loop ({bare * 0.9:.0f}/s)",
        )
        ax.axvline(
            bare * 0.8, color="orange", linestyle=":", label=f"inline ≥ 0.8 x bare loop ({bare * 0.8:.0f}/s)"
        )
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

    hung = results.get("hung")
    ax = axes[2][0]
    if hung:
        names = list(CHART_LABELS["hung"])
        bars(
            ax,
            [CHART_LABELS["hung"][n] for n in names],
            [hung["seconds"][n] for n in names],
            1000,
            [base_color if n == "plain" else ours_color for n in names],
        )
        ax.set_xscale("log")
    ax.set_title(
        f"7. One output task under dag.test(), hung receiver, {hung['timeout_seconds'] if hung else 0:.0f} s timeout (ms, log)"
    )

    enqueue = results.get("enqueue")
    ax = axes[2][1]
    if enqueue:
        labels, stats, colors = [], [], []
        for count in enqueue["fan_outs"]:
            for name, label, color in (
                ("ours", "ours, dispatcher alive", ours_color),
                ("notifier", "HttpNotifier", base_color),
            ):
                labels.append(f"{label} ({count} webhook{'s' if count > 1 else ''})")
                stats.append(enqueue["seconds_per_message"][f"{name}_{count}"])
                colors.append(color)
        bars(ax, labels, stats, 1000, colors, fmt=" {:,.2f}")
        ax.set_xscale("log")
    ax.set_title("8. Callback cost per message (ms, log)")

    latency = results.get("latency")
    ax = axes[2][2]
    if latency:
        values = [value * 1000 for value in latency["latencies"]]
        ax.plot(values, [100 * (i + 1) / len(values) for i in range(len(values))], color=ours_color)
        bound = latency["bound_seconds"] * 1000
        ax.axvline(bound, color="red", linestyle="--", label=f"bound {bound:.0f} ms")
        for key, style in (("p50", ":"), ("p99", "-.")):
            at = latency["seconds"][key] * 1000
            ax.axvline(at, color="#7f7f7f", linestyle=style, label=f"{key} {at:.0f} ms")
        ax.set_xlabel("record to arrival (ms)")
        ax.set_ylabel("% of messages")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("9. First-attempt latency, running dispatcher (CDF)")

    if listener:
        ax = axes[3][0]
        labels, stats, colors = [], [], []
        for count in listener["tasks"]:
            for name in ("plain", "noop", "ours"):
                labels.append(f"{LISTENER_LABELS[name]} ({count} tasks)")
                stats.append(listener["seconds"][f"{name}_{count}"])
                colors.append(ours_color if name == "ours" else base_color)
        bars(ax, labels, stats, 1000, colors, fmt=" {:,.1f}")
        ax.set_title("10. update_state + commit of a finished run, in the scheduler's loop (ms)")

        ax = axes[3][1]
        labels, stats, colors = [], [], []
        alone = listener["alone_seconds"]
        for count in listener["tasks"]:
            for key, label, color in (
                (f"listener_{count}", "listener call", ours_color),
                (f"get_task_instances_{count}", "of which get_task_instances", "#ff7f0e"),
                (f"columns_{count}", "ref.: three columns + unflushed", base_color),
            ):
                labels.append(f"{label} ({count} tasks)")
                stats.append(alone[key])
                colors.append(color)
            labels.append(f"writer per fact, off-thread ({count} tasks)")
            stats.append(listener["writer_seconds_per_fact"][str(count)])
            colors.append("#2ca02c")
        bars(ax, labels, stats, 1e6, colors)
        ax.set_xscale("log")
        ax.set_title("10. Where a run end's listener time goes (µs, log)")
        axes[3][2].axis("off")

    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(results: dict[str, Any], machine: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results, machine))
    chart(results, out / "results.png")
