"""What each ``airflow flow-webhooks`` command does (see ``definition`` for their arguments).

Each handler takes the parsed arguments and the stream its results go to; while it runs,
anything else printed to stdout (Airflow's own logging among it) goes to stderr, so
``-o json`` output stays clean JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import (
    FileFormat,
    FlowWebhook,
    WebhookSet,
    definition_file_schema,
)
from airflow_webhook_provider.core.exceptions import FlowWebhookError, InvalidSignature
from airflow_webhook_provider.face.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROG

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_webhook_provider.delivery.dispatcher import DispatchReport
    from airflow_webhook_provider.delivery.pipeline import Pipeline
    from airflow_webhook_provider.face.catalog import WebhookCatalog

__all__ = ["run"]

Handler = Callable[[argparse.Namespace, TextIO], int]


class UsageError(Exception):
    """The arguments do not make a valid command."""


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run a handler with results on stdout and everything else on stderr; return the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        # Airflow's logging writes to stdout; only this command's results may go there.
        with contextlib.redirect_stdout(err):
            return handler(args, out)
    except UsageError as exc:
        parser = getattr(args, "command_parser", None)
        if parser is not None:
            parser.print_usage(err)
        err.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except (FlowWebhookError, OSError) as exc:
        _report(err, exc)
        return EXIT_FAILURE
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        err.write(f"{PROG}: {type(exc).__name__}: {exc}\n{PROG}: run with --debug for the traceback\n")
        return EXIT_FAILURE


def _report(err: TextIO, exc: BaseException) -> None:
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc)
    for line in message.splitlines() or [type(exc).__name__]:
        err.write(f"{PROG}: {line}\n" if not line.startswith(" ") else f"{line}\n")


# -- output ------------------------------------------------------------------------------


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def emit(rows: Sequence[Mapping[str, Any]], output: str, out: TextIO, *, document: Any = None) -> None:
    """Write rows as Airflow's CLI does (``table``, ``plain``), or as typed JSON or YAML.

    :param rows: the records, for table and plain output.
    :param output: ``table``, ``json``, ``yaml`` or ``plain``.
    :param out: where the results go.
    :param document: what JSON and YAML print instead of ``rows`` (e.g. one object).
    """
    data = list(rows) if document is None else document
    if output == "json":
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
    elif output == "yaml":
        yaml.safe_dump(data, out, sort_keys=False, allow_unicode=True, default_flow_style=False)
    else:
        from airflow.cli.simple_table import AirflowConsole

        console = AirflowConsole(file=out, color_system=None)
        # Airflow prints its plain tables with print(), to whatever sys.stdout is.
        with contextlib.redirect_stdout(out):
            console.print_as(
                [{key: "-" if value is None else value for key, value in r.items()} for r in rows], output
            )


# -- helpers -----------------------------------------------------------------------------


def _pipeline() -> Pipeline:
    from airflow_webhook_provider.delivery.pipeline import Pipeline

    return Pipeline.from_config(require_ledger=True)


def _mode_line(pipeline: Pipeline) -> str:
    return f"delivery mode: {pipeline.mode().describe()}"


# -- commands ----------------------------------------------------------------------------


def test(args: argparse.Namespace, out: TextIO) -> int:
    """Send a test message through a connection (``test CONN_ID``), or as one webhook would (``--dag --webhook``)."""
    if (args.dag is None) != (args.webhook is None):
        raise UsageError("--dag and --webhook go together: name the DAG and its webhook")
    if args.dag is not None:
        if args.conn_id is not None:
            raise UsageError("give a connection id, or --dag and --webhook, not both")
        return _test_webhook(args, out)
    if args.conn_id is None:
        raise UsageError("name a connection (test CONN_ID), or a webhook (test --dag DAG --webhook NAME)")
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

    try:
        ok, message = FlowWebhookHook(args.conn_id).test_connection()
    except AirflowNotFoundException:
        raise FlowWebhookError(
            f"no connection {args.conn_id!r}; create a Flow Webhook connection in Admin -> Connections "
            f"or set AIRFLOW_CONN_{args.conn_id.upper()}"
        ) from None
    if not ok:
        raise FlowWebhookError(f"connection {args.conn_id!r}: {message}")
    out.write(f"{args.conn_id}: {message}\n")
    return EXIT_OK


def _code_webhooks(dag_id: str, dags_folder: str | None) -> list[FlowWebhook]:
    """Return the webhooks the DAG file attaches (parsed now, so the newest code counts)."""
    from airflow_webhook_provider.capture.attach import find_registry

    registry = find_registry(_parse_dag(dag_id, dags_folder))
    return list(registry.webhooks) if registry is not None else []


def _catalog(pipeline: Pipeline) -> WebhookCatalog:
    from airflow_webhook_provider.face.catalog import WebhookCatalog

    assert pipeline.ledger is not None  # _pipeline() requires a ledger
    return WebhookCatalog.configured(pipeline.ledger)


def _test_webhook(args: argparse.Namespace, out: TextIO) -> int:
    """Send one webhook's own test message: the DAG file's webhook of that name, else the UI's."""
    pipeline = _pipeline()
    code = {webhook.name: webhook for webhook in _code_webhooks(args.dag, args.dags_folder)}
    webhook = code.get(args.webhook)
    if webhook is None:
        from airflow_webhook_provider.face.catalog import WebhookNotFound

        catalog = _catalog(pipeline)
        try:
            webhook = catalog.webhook(args.dag, args.webhook)
        except WebhookNotFound:
            known = sorted({*code, *(item.name for item in catalog.items(args.dag))})
            raise FlowWebhookError(
                f"DAG {args.dag!r} has no webhook {args.webhook!r}; its webhooks: {', '.join(known) or 'none'}"
            ) from None
    report = pipeline.test(webhook=webhook, dag_id=args.dag, wait_seconds=args.wait)
    out.write(f"{args.dag}/{args.webhook}: {report.summary()}\n")
    if report.response_excerpt:
        out.write(f"answer: {report.response_excerpt[:500]}\n")
    return EXIT_OK if report.delivered else EXIT_FAILURE


def _signed_payload(args: argparse.Namespace) -> bytes:
    if args.url is not None:
        return str(args.url).encode("utf-8")
    if args.payload_stdin:
        return sys.stdin.buffer.read()
    return Path(args.payload_file).read_bytes()


def verify(args: argparse.Namespace, out: TextIO) -> int:
    """Check a received signature header (``verify``)."""
    from airflow_webhook_provider.core.signing import SIGNATURE_HEADER, verify_signature

    given = [args.payload_file is not None, bool(args.payload_stdin), args.url is not None]
    if sum(given) != 1:
        raise UsageError("give exactly one of --payload-file, --payload-stdin and --url")
    secret = os.environ.get(args.secret_env)
    if not secret:
        raise UsageError(
            f"environment variable {args.secret_env} is not set or empty; export the connection's secret key in it"
        )
    header = args.header.strip()
    # Accept a header line copied whole from a request dump.
    name, colon, value = header.partition(":")
    if colon and name.strip().lower() == SIGNATURE_HEADER.lower():
        header = value.strip()
    try:
        verify_signature(
            header, _signed_payload(args), secret, tolerance_seconds=args.tolerance, now_ms=args.now_ms
        )
    except InvalidSignature as exc:
        raise FlowWebhookError(f"invalid: {exc}") from None
    out.write("valid\n")
    return EXIT_OK


def deliveries_list(args: argparse.Namespace, out: TextIO) -> int:
    """List the ledger's messages, newest first (``deliveries list``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    rows = pipeline.ledger.deliveries(
        dag_id=args.dag,
        run_id=args.run,
        state=args.state,
        capture=args.capture,
        endpoint=args.endpoint,
        event=args.event,
        limit=args.limit,
    )
    if args.output in ("json", "yaml"):
        emit([], args.output, out, document=[row.as_dict() for row in rows])
        return EXIT_OK
    sys.stderr.write(_mode_line(pipeline) + "\n")
    emit(
        [
            {
                "id": row.id,
                "dag": row.dag_id,
                "run": row.run_id,
                "webhook": row.webhook,
                "output": row.output_name or "-",
                "state": row.state,
                "capture": row.capture,
                "attempts": row.attempts,
                "status": row.last_status,
                "created (UTC)": _when(row.created_at),
            }
            for row in rows
        ],
        args.output,
        out,
    )
    return EXIT_OK


def deliveries_show(args: argparse.Namespace, out: TextIO) -> int:
    """Show one message and every attempt (``deliveries show ID``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    delivery = pipeline.ledger.get(args.id)
    if delivery is None:
        raise FlowWebhookError(f"no delivery with id {args.id}")
    attempts = pipeline.ledger.attempts(args.id)
    if args.output in ("json", "yaml"):
        emit(
            [],
            args.output,
            out,
            document=delivery.as_dict() | {"attempts_detail": [vars(a) for a in attempts]},
        )
        return EXIT_OK
    for key, value in delivery.as_dict().items():
        if key.endswith("_at"):
            value = _when(value)
        out.write(f"{key:>16}: {value if value is not None else '-'}\n")
    out.write("\n")
    emit(
        [
            {
                "#": a.number,
                "started (UTC)": _when(a.started_at),
                "seconds": f"{a.duration_seconds:.3f}",
                "status": a.status_code,
                "error": a.error,
                "source": a.source,
                "response": a.response_excerpt[:60].replace("\n", " "),
            }
            for a in attempts
        ],
        args.output,
        out,
    )
    return EXIT_OK


class _ProgressBar:
    """A one-line bar on a terminal, redrawn in place after outcomes are recorded."""

    width = 30

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total

    def __call__(self, report: DispatchReport) -> None:
        done = report.delivered + report.failed + report.dead
        total = max(self.total, report.claimed)  # messages that fell due during the run
        filled = self.width * done // total if total else self.width
        self.stream.write(
            f"\rsending [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}: "
            f"{report.delivered} delivered, {report.failed} failed, {report.dead} dead"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def drain(
    pipeline: Pipeline, *, time_limit_seconds: float | None, err: TextIO, total: int | None = None
) -> DispatchReport:
    """Send every due message here (``--once``), with a progress bar when ``err`` is a terminal."""
    from airflow_webhook_provider.delivery.dispatcher import Dispatcher

    assert pipeline.ledger is not None
    bar: _ProgressBar | None = None
    if err.isatty():
        count = pipeline.ledger.count_due() if total is None else total
        if count:
            bar = _ProgressBar(err, count)
    try:
        return Dispatcher(pipeline).run(once=True, time_limit_seconds=time_limit_seconds, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def redeliver(args: argparse.Namespace, out: TextIO) -> int:
    """Send one message again, or every due one (``redeliver ID`` / ``redeliver --due``)."""
    if args.due == (args.id is not None):
        raise UsageError("give either a delivery ID or --due")
    pipeline = _pipeline()
    if args.id is not None:
        report = pipeline.send_now(args.id)
        if report is None:
            raise FlowWebhookError(f"no delivery with id {args.id}")
        out.write(f"{args.id}: {report.summary()}\n")
        return EXIT_OK if report.delivered else EXIT_FAILURE
    report_ = drain(pipeline, time_limit_seconds=args.time_limit, err=sys.stderr)
    out.write(report_.summary() + "\n")
    return EXIT_OK


def dispatcher(args: argparse.Namespace, out: TextIO) -> int:
    """Run the dispatcher until SIGTERM, or with ``--once`` until nothing is due (``dispatcher``)."""
    from dataclasses import replace

    from airflow_webhook_provider.delivery.dispatcher import Dispatcher

    pipeline = _pipeline()
    if args.concurrency:
        pipeline.settings = replace(pipeline.settings, dispatcher_concurrency=max(1, args.concurrency))
    if args.once:
        report = drain(pipeline, time_limit_seconds=args.time_limit, err=sys.stderr)
        out.write(report.summary() + "\n")
        return EXIT_OK
    logging.getLogger("airflow_webhook_provider").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    worker = Dispatcher(pipeline)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    sys.stderr.write(
        f"{worker.name}: dispatching from the ledger ({pipeline.ledger.dialect if pipeline.ledger else '-'})\n"
    )
    report = worker.run()
    out.write(report.summary() + "\n")
    return EXIT_OK


def status(args: argparse.Namespace, out: TextIO) -> int:
    """Show the delivery mode, the dispatchers and the ledger's counts (``status``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    mode = pipeline.mode()
    stale = pipeline.settings.dispatcher_stale_seconds
    now = time.time()
    dispatchers = [
        record.as_dict()
        | {
            "alive": record.name in mode.dispatchers,
            "heartbeat_age_seconds": round(now - record.heartbeat_at, 1),
        }
        for record in pipeline.ledger.dispatchers()
    ]
    open_circuits = [e.key for e in pipeline.ledger.endpoint_health() if e.circuit == "open"]
    counts = pipeline.ledger.counts()
    document: dict[str, Any] = {
        "mode": mode.name,
        "mode_detail": mode.describe(),
        "stale_after_seconds": stale,
        "dispatchers": dispatchers,
        "counts": counts,
        "due": pipeline.ledger.count_due(),
        "open_circuits": open_circuits,
    }
    if args.output in ("json", "yaml"):
        emit([], args.output, out, document=document)
        return EXIT_OK
    out.write(f"delivery mode: {mode.describe()}\n")
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "empty"
    out.write(f"ledger: {summary}; {document['due']} due now\n")
    if open_circuits:
        out.write(f"open circuits: {', '.join(open_circuits)}\n")
    if dispatchers:
        out.write("\n")
        emit(
            [
                {
                    "dispatcher": d["name"],
                    "alive": "yes" if d["alive"] else "no",
                    "last heartbeat (UTC)": _when(d["heartbeat_at"]),
                    "started (UTC)": _when(d["started_at"]),
                    "sent": d["sent"],
                    "delivered": d["delivered"],
                }
                for d in dispatchers
            ],
            args.output,
            out,
        )
    return EXIT_OK


def endpoints_list(args: argparse.Namespace, out: TextIO) -> int:
    """List each endpoint's health (``endpoints list``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    health = pipeline.ledger.endpoint_health()
    if args.output in ("json", "yaml"):
        emit([], args.output, out, document=[e.as_dict() for e in health])
        return EXIT_OK
    emit(
        [
            {
                "endpoint": e.key,
                "circuit": e.circuit,
                "failures in a row": e.consecutive_failures,
                "failing since (UTC)": _when(e.failing_since),
                "last success (UTC)": _when(e.last_success_at),
                "next probe (UTC)": _when(e.next_probe_at) if e.circuit == "open" else "-",
                "last error": (e.last_error or "-")[:80],
            }
            for e in health
        ],
        args.output,
        out,
    )
    return EXIT_OK


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _parse_dag(dag_id: str, dags_folder: str | None) -> DAG:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    folder = Path(dags_folder or settings.DAGS_FOLDER).expanduser()
    if not folder.exists():
        raise FlowWebhookError(
            f"the DAGs folder {folder} does not exist; name the right one with --dags-folder"
        )
    # Parsing logs every DAG file's problems, tracebacks included, through both the standard
    # logging handlers and structlog's writers; only the asked-for DAG matters here.
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            bag = DagBag(dag_folder=folder)
    finally:
        logging.disable(previous)
    dag = bag.dags.get(dag_id)
    if dag is not None:
        return dag
    message = f"no DAG {dag_id!r} in {folder}"
    if bag.import_errors:
        failures = "\n".join(
            f"  {path}: {_last_line(error)}" for path, error in sorted(bag.import_errors.items())
        )
        message += f"; {_plural(len(bag.import_errors), 'file')} failed to import:\n{failures}"
    raise FlowWebhookError(message)


def export(args: argparse.Namespace, out: TextIO) -> int:
    """Print a DAG's webhooks, its file's and the UI's, as a definition file (``export DAG_ID``)."""
    code = _code_webhooks(args.dag_id, args.dags_folder)
    text = _catalog(_pipeline()).export(args.dag_id, args.format, code=code)
    if text is None:
        raise FlowWebhookError(
            f"DAG {args.dag_id!r} has no flow webhooks: its file attaches none and none are defined in the UI"
        )
    out.write(text)
    return EXIT_OK


def import_(args: argparse.Namespace, out: TextIO) -> int:
    """Create or update a DAG's UI-defined webhooks from a definition file (``import DAG_ID FILE``)."""
    import getpass

    path = Path(args.file)
    text = path.read_text(encoding="utf-8-sig")
    file_format: FileFormat = "json" if path.suffix.lower() == ".json" else "yaml"
    report = _catalog(_pipeline()).import_text(
        args.dag_id,
        text,
        actor=args.actor or getpass.getuser(),
        file_format=file_format,
        replace=args.replace,
        via="cli",
    )
    out.write(f"{args.dag_id}: {report.summary()}\n")
    return EXIT_OK


def validate(args: argparse.Namespace, out: TextIO) -> int:
    """Check definition files with every rule a DAG import applies, limits included (``validate FILE...``)."""
    limits = config.limits()
    code = EXIT_OK
    for path in args.files:
        try:
            webhooks = WebhookSet.from_file(path, limits=limits)
        except (FlowWebhookError, OSError) as exc:
            _report(sys.stderr, exc)
            code = EXIT_FAILURE
        else:
            out.write(f"{path}: valid, {_plural(len(webhooks), 'webhook')}\n")
    return code


def schema(args: argparse.Namespace, out: TextIO) -> int:
    """Print the JSON Schema of a definition file (``schema``)."""
    json.dump(definition_file_schema(config.limits().max_webhooks_per_flow), out, indent=2)
    out.write("\n")
    return EXIT_OK


def endpoints_disable(args: argparse.Namespace, out: TextIO) -> int:
    """Disable an endpoint by hand (``endpoints disable ENDPOINT``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    held = pipeline.ledger.disable_endpoint(args.endpoint, args.reason)
    out.write(f"{args.endpoint}: disabled ({args.reason}); {_plural(held, 'message')} held\n")
    return EXIT_OK


def endpoints_enable(args: argparse.Namespace, out: TextIO) -> int:
    """Enable an endpoint and send what it held (``endpoints enable ENDPOINT``)."""
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    released = pipeline.ledger.enable_endpoint(args.endpoint)
    out.write(f"{args.endpoint}: enabled; {_plural(released, 'held message')} due now\n")
    if released and pipeline.mode().name == "inline":
        report = drain(pipeline, time_limit_seconds=600, err=sys.stderr, total=released)
        out.write(report.summary() + "\n")
    return EXIT_OK


_NOT_DELIVERED = ("pending", "failed", "dead", "held")


def recover(args: argparse.Namespace, out: TextIO) -> int:
    """Send again the messages of a time range that were not delivered (``recover``)."""
    from airflow_webhook_provider.core.durations import parse_time

    now = time.time()
    try:
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now) if args.until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    states = tuple(args.state or _NOT_DELIVERED)
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    ids = pipeline.ledger.select_ids(
        since=since, until=until, dag_id=args.dag, endpoint=args.conn, states=states
    )
    selection = {
        "since": datetime.fromtimestamp(since, tz=timezone.utc).isoformat(timespec="seconds"),
        "until": datetime.fromtimestamp(until, tz=timezone.utc).isoformat(timespec="seconds")
        if until
        else None,
        "dag": args.dag,
        "conn": args.conn,
        "states": list(states),
    }
    if args.dry_run:
        sample = [row.as_dict() for row in pipeline.ledger.get_many(ids[:5])]
        document = {"count": len(ids), "selection": selection, "sample": sample}
        if args.output in ("json", "yaml"):
            emit([], args.output, out, document=document)
            return EXIT_OK
        out.write(f"{_plural(len(ids), 'message')} would be sent again\n")
        emit(
            [
                {
                    "id": r["id"],
                    "dag": r["dag_id"],
                    "webhook": r["webhook"],
                    "state": r["state"],
                    "endpoint": r["endpoint"],
                }
                for r in sample
            ],
            args.output,
            out,
        )
        return EXIT_OK
    bar = _RecoverBar(sys.stderr, len(ids)) if sys.stderr.isatty() and ids else None
    try:
        report = pipeline.recover(ids, progress=bar, time_limit_seconds=args.time_limit)
    finally:
        if bar is not None:
            bar.close()
    if args.output in ("json", "yaml"):
        emit([], args.output, out, document={"count": len(ids), "selection": selection, **vars(report)})
    else:
        out.write(report.summary() + "\n")
    return EXIT_OK


class _RecoverBar(_ProgressBar):
    """The progress bar of ``recover``."""

    def __call__(self, report: Any) -> None:  # a RecoverReport
        filled = self.width * report.sent // self.total if self.total else self.width
        self.stream.write(
            f"\rrecovering [{'#' * filled}{'.' * (self.width - filled)}] {report.sent}/{self.total}: "
            f"{report.delivered} delivered, {report.failed} not"
        )
        self.stream.flush()


def purge(args: argparse.Namespace, out: TextIO) -> int:
    """Delete old messages and their attempts (``purge --older-than DURATION``)."""
    from airflow_webhook_provider.core.durations import parse_duration

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    states = tuple(args.state or ("delivered",))
    pipeline = _pipeline()
    assert pipeline.ledger is not None
    older_than = time.time() - age
    count = pipeline.ledger.purge(older_than=older_than, states=states, dry_run=args.dry_run)
    verb = "would be purged" if args.dry_run else "purged"
    if args.output in ("json", "yaml"):
        emit(
            [],
            args.output,
            out,
            document={
                "count": count,
                "states": list(states),
                "older_than_seconds": age,
                "dry_run": args.dry_run,
            },
        )
    else:
        out.write(f"{_plural(count, 'message')} {verb} ({', '.join(states)}, older than {args.older_than})\n")
    return EXIT_OK


def doctor(args: argparse.Namespace, out: TextIO) -> int:
    """Check the set-up and print the fix for each problem (``doctor``)."""
    from airflow_webhook_provider.face.cli.doctor import run_checks

    checks = run_checks(conn_ids=args.conn or [])
    if args.output in ("json", "yaml"):
        emit([], args.output, out, document=[check.as_dict() for check in checks])
    else:
        emit([check.as_dict() for check in checks], args.output, out)
    problems = [check for check in checks if check.status == "problem"]
    sys.stderr.write(
        f"{_plural(len(problems), 'problem')}, "
        f"{_plural(sum(check.status == 'warning' for check in checks), 'warning')}\n"
    )
    return EXIT_FAILURE if problems else EXIT_OK
