"""The ``flow-webhook`` command line.

Usage::

    flow-webhook test CONN_ID
    flow-webhook verify --secret-env VAR --header H (--payload-file F | --payload-stdin | --url URL)
    flow-webhook deliveries list [--dag DAG] [--run RUN] [--state STATE] [--limit N] [--json]
    flow-webhook deliveries show ID [--json]
    flow-webhook redeliver ID
    flow-webhook redeliver --due [--time-limit SECONDS] [--batch-size N]
    flow-webhook export DAG_ID [--format yaml|json] [--dags-folder PATH]
    flow-webhook validate FILE [FILE ...]
    flow-webhook schema

Results are the only thing on stdout (``--json`` output is clean JSON); logs, errors and
the progress bar go to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from airflow_webhook_provider.exceptions import FlowWebhookError, InvalidSignature
from airflow_webhook_provider.models import FlowWebhooks, definition_file_schema

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_webhook_provider.ledger import Ledger
    from airflow_webhook_provider.ledger.redelivery import RedeliveryReport

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STATES = ("pending", "delivered", "failed", "dead")
PROG = "flow-webhook"

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


class _UsageError(Exception):
    pass


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, ["-" * w for w in widths], *rows):
        out.write(
            "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
        )


def _ledger() -> Ledger:
    from airflow_webhook_provider.ledger import open_ledger

    return open_ledger()


def _test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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


def _signed_payload(args: argparse.Namespace) -> bytes:
    if args.url is not None:
        return str(args.url).encode("utf-8")
    if args.payload_stdin:
        return sys.stdin.buffer.read()
    return Path(args.payload_file).read_bytes()


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from airflow_webhook_provider.signing import SIGNATURE_HEADER, verify_signature

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise _UsageError(
            f"environment variable {args.secret_env} is not set or empty; export the connection's "
            "secret key in it"
        )
    header = args.header.strip()
    # Accept a header line copied whole from a request dump.
    name, colon, value = header.partition(":")
    if colon and name.strip().lower() == SIGNATURE_HEADER.lower():
        header = value.strip()
    try:
        verify_signature(
            header,
            _signed_payload(args),
            secret,
            tolerance_seconds=args.tolerance,
            now_ms=args.now_ms,
        )
    except InvalidSignature as exc:
        raise FlowWebhookError(f"invalid: {exc}") from None
    out.write("valid\n")
    return EXIT_OK


def _deliveries_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows = _ledger().deliveries(dag_id=args.dag, run_id=args.run, state=args.state, limit=args.limit)
    if args.json:
        json.dump([row.as_dict() for row in rows], out, indent=2)
        out.write("\n")
        return EXIT_OK
    _table(
        [
            (
                row.id,
                row.dag_id,
                row.run_id,
                row.webhook,
                row.output_name or "-",
                row.state,
                str(row.attempts),
                str(row.last_status or "-"),
                _when(row.created_at),
            )
            for row in rows
        ],
        ("ID", "DAG", "RUN", "WEBHOOK", "OUTPUT", "STATE", "ATTEMPTS", "STATUS", "CREATED (UTC)"),
        out,
    )
    return EXIT_OK


def _deliveries_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ledger = _ledger()
    delivery = ledger.get(args.id)
    if delivery is None:
        raise FlowWebhookError(f"no delivery with id {args.id}")
    attempts = ledger.attempts(args.id)
    if args.json:
        document = delivery.as_dict() | {"attempts_detail": [vars(a) for a in attempts]}
        json.dump(document, out, indent=2)
        out.write("\n")
        return EXIT_OK
    for key, value in delivery.as_dict().items():
        if key.endswith("_at"):
            value = _when(value)
        out.write(f"{key:>16}: {value if value is not None else '-'}\n")
    out.write("\n")
    _table(
        [
            (
                str(a.number),
                _when(a.started_at),
                f"{a.duration_seconds:.3f}",
                str(a.status_code or "-"),
                a.error or "-",
                a.source,
                a.response_excerpt[:60].replace("\n", " "),
            )
            for a in attempts
        ],
        ("#", "STARTED (UTC)", "SECONDS", "STATUS", "ERROR", "SOURCE", "RESPONSE"),
        out,
    )
    return EXIT_OK


class _ProgressBar:
    """A one-line bar on a terminal, redrawn in place after each redelivery round."""

    width = 30

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total

    def __call__(self, report: RedeliveryReport) -> None:
        total = max(self.total, report.claimed)  # deliveries that fell due during the run
        filled = self.width * report.claimed // total if total else self.width
        self.stream.write(
            f"\rredelivering [{'#' * filled}{'.' * (self.width - filled)}] {report.claimed}/{total}: "
            f"{report.delivered} delivered, {report.failed} failed, {report.dead} dead"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _redeliver(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from airflow_webhook_provider.ledger.redelivery import RedeliveryReport, redeliver_due, replay

    if args.due == (args.id is not None):
        raise _UsageError("give either a delivery ID or --due")
    if args.id is not None:
        result = replay(args.id)
        if result is None:
            raise FlowWebhookError(f"no delivery with id {args.id}")
        out.write(f"{args.id}: {result.summary()}\n")
        return EXIT_OK if result.delivered else EXIT_FAILURE
    ledger = _ledger()
    bar: _ProgressBar | None = None
    if err.isatty():
        total = ledger.count_due()
        if total:
            bar = _ProgressBar(err, total)
            bar(RedeliveryReport())
    try:
        report = redeliver_due(
            ledger, batch_size=args.batch_size, time_limit_seconds=args.time_limit, progress=bar
        )
    finally:
        if bar is not None:
            bar.close()
    out.write(report.summary() + "\n")
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


def _export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from airflow_webhook_provider.callbacks import find_registry

    dag = _parse_dag(args.dag_id, args.dags_folder)
    registry = find_registry(dag)
    if registry is None or not registry.webhooks:
        raise FlowWebhookError(f"DAG {args.dag_id!r} has no flow webhooks attached ({dag.fileloc})")
    out.write(FlowWebhooks(*registry.webhooks).dump(args.format))
    return EXIT_OK


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    code = EXIT_OK
    for path in args.files:
        try:
            webhooks = FlowWebhooks.from_file(path)
        except (FlowWebhookError, OSError) as exc:
            _report(err, exc)
            code = EXIT_FAILURE
        else:
            out.write(f"{path}: valid, {_plural(len(webhooks), 'webhook')}\n")
    return code


def _schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    json.dump(definition_file_schema(), out, indent=2)
    out.write("\n")
    return EXIT_OK


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler, **kwargs: Any
) -> argparse.ArgumentParser:
    # No abbreviated options: "--secret VALUE" must not be taken for "--secret-env VALUE".
    command = commands.add_parser(name, allow_abbrev=False, **kwargs)
    command.set_defaults(handler=handler, command_parser=command)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Flow webhooks from a terminal: test connections, verify signatures, inspect and "
        "redeliver deliveries, export and validate definition files.",
        epilog="Results go to stdout, logs and errors to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    test = _add_command(
        commands,
        "test",
        _test,
        help="send a test message through a connection (the Test button)",
        description="Send one signed test message ($jobId and $jobStatus are 'test') through a "
        "flow_webhook connection, without retries, and report the receiver's answer.",
    )
    test.add_argument("conn_id", metavar="CONN_ID", help="the flow_webhook connection id")

    verify = _add_command(
        commands,
        "verify",
        _verify,
        help="check an X-Webhook-Signature header against a payload",
        description="Check a received X-Webhook-Signature header, as a receiver does. Prints 'valid', "
        "or the reason on stderr with exit code 1.",
    )
    verify.add_argument(
        "--secret-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable holding the secret key; the secret itself is never an "
        "argument, because arguments show in the process list and in shell history",
    )
    verify.add_argument(
        "--header",
        required=True,
        metavar="H",
        help="the header value, t=<unix ms>,sha256=<hex> (a whole 'X-Webhook-Signature: ...' line also works)",
    )
    payload = verify.add_mutually_exclusive_group(required=True)
    payload.add_argument(
        "--payload-file", metavar="F", help="file holding the exact request body (POST, PUT, PATCH)"
    )
    payload.add_argument(
        "--payload-stdin", action="store_true", help="read the exact request body from stdin"
    )
    payload.add_argument("--url", help="the full request URL as sent, the signed payload of GET and DELETE")
    verify.add_argument(
        "--tolerance",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how far the timestamp may be from now (default 300)",
    )
    verify.add_argument(
        "--now-ms",
        type=int,
        metavar="MS",
        help="the UNIX time in milliseconds to check against, e.g. when the request was captured",
    )

    deliveries = commands.add_parser(
        "deliveries", allow_abbrev=False, help="list and inspect deliveries in the ledger"
    )
    deliveries_commands = deliveries.add_subparsers(
        dest="deliveries_command", required=True, metavar="COMMAND"
    )
    listing = _add_command(
        deliveries_commands, "list", _deliveries_list, help="list deliveries, newest first"
    )
    listing.add_argument("--dag", help="only this DAG")
    listing.add_argument("--run", help="only this run id")
    listing.add_argument("--state", choices=STATES, help="only this state")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = _add_command(
        deliveries_commands, "show", _deliveries_show, help="show one delivery and its attempts"
    )
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")

    redeliver = _add_command(
        commands, "redeliver", _redeliver, help="send a delivery again, or every due delivery"
    )
    redeliver.add_argument("id", nargs="?", metavar="ID", help="the delivery id to replay (any state)")
    redeliver.add_argument(
        "--due", action="store_true", help="send every due delivery (a progress bar shows on a terminal)"
    )
    redeliver.add_argument(
        "--time-limit", type=float, default=240.0, help="start no new round after this many seconds"
    )
    redeliver.add_argument("--batch-size", type=int, default=100, help="deliveries per round (default 100)")

    export = _add_command(
        commands,
        "export",
        _export,
        help="print the webhook definitions of a DAG as a definition file",
        description="Parse the DAGs folder (no scheduler needed) and print the flow webhooks attached "
        "to a DAG as a definition file that FlowWebhooks.from_file() reads.",
    )
    export.add_argument("dag_id", metavar="DAG_ID")
    export.add_argument("--format", choices=("yaml", "json"), default="yaml", help="default yaml")
    export.add_argument(
        "--dags-folder", metavar="PATH", help="the folder to parse (default: [core] dags_folder)"
    )

    validate = _add_command(
        commands,
        "validate",
        _validate,
        help="check definition files (YAML or JSON)",
        description="Check definition files with every rule FlowWebhook and FlowWebhooks apply, the "
        "[flow_webhook] max_webhooks_per_flow limit included.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")

    _add_command(
        commands,
        "schema",
        _schema,
        help="print the JSON Schema of a definition file",
        description="Print the JSON Schema (draft 2020-12) of a definition file, for editors and CI.",
    )
    return parser


def _report(err: TextIO, exc: BaseException) -> None:
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc)
    for line in message.splitlines() or [type(exc).__name__]:
        err.write(f"{PROG}: {line}\n" if not line.startswith(" ") else f"{line}\n")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line.

    :param argv: the arguments; ``sys.argv[1:]`` when omitted.
    :param out: where results go; stdout when omitted.
    :param err: where logs, errors and the progress bar go; stderr when omitted.
    :return: the exit code.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    logging.basicConfig(stream=err, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        # Airflow's logging writes to stdout; only this command's results may go there.
        with contextlib.redirect_stdout(err):
            return int(args.handler(args, out, err))
    except _UsageError as exc:
        args.command_parser.print_usage(err)
        err.write(f"{PROG} {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except (FlowWebhookError, OSError) as exc:
        _report(err, exc)
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        err.write(f"{PROG}: {type(exc).__name__}: {exc}\n{PROG}: run with --debug for the traceback\n")
        return EXIT_FAILURE


def main_entry() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
