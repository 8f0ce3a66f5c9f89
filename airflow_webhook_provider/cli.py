"""The ``flow-webhook`` command line.

Usage::

    flow-webhook deliveries list [--dag DAG] [--run RUN] [--state STATE] [--limit N] [--json]
    flow-webhook deliveries show ID [--json]
    flow-webhook redeliver ID
    flow-webhook redeliver --due

Output meant for programs (``--json``) is the only thing on stdout; logs go to stderr.
Exit codes: 0 ok, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from airflow_webhook_provider.exceptions import FlowWebhookError

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STATES = ("pending", "delivered", "failed", "dead")


class _UsageError(Exception):
    pass


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, ["-" * w for w in widths], *rows):
        out.write(
            "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
        )


def _ledger() -> Any:
    from airflow_webhook_provider.ledger import open_ledger

    return open_ledger()


def _deliveries_list(args: argparse.Namespace, out: TextIO) -> int:
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


def _deliveries_show(args: argparse.Namespace, out: TextIO) -> int:
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


def _redeliver(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_webhook_provider.ledger.redelivery import redeliver_due, replay

    if args.due == (args.id is not None):
        raise _UsageError("give either a delivery ID or --due")
    if args.id is not None:
        result = replay(args.id)
        if result is None:
            raise FlowWebhookError(f"no delivery with id {args.id}")
        out.write(f"{args.id}: {result.summary()}\n")
        return EXIT_OK if result.delivered else EXIT_FAILURE
    report = redeliver_due(time_limit_seconds=args.time_limit)
    out.write(report.summary() + "\n")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flow-webhook", description="Flow webhook deliveries and redelivery."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    deliveries = commands.add_parser("deliveries", help="list and inspect deliveries in the ledger")
    deliveries_commands = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listing = deliveries_commands.add_parser("list", help="list deliveries, newest first")
    listing.add_argument("--dag", help="only this DAG")
    listing.add_argument("--run", help="only this run id")
    listing.add_argument("--state", choices=STATES, help="only this state")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_deliveries_list)
    show = deliveries_commands.add_parser("show", help="show one delivery and its attempts")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_deliveries_show)

    redeliver = commands.add_parser("redeliver", help="send a delivery again, or every due delivery")
    redeliver.add_argument("id", nargs="?", help="the delivery id to replay (any state)")
    redeliver.add_argument("--due", action="store_true", help="send every due delivery")
    redeliver.add_argument(
        "--time-limit", type=float, default=240.0, help="start no new round after this many seconds"
    )
    redeliver.set_defaults(handler=_redeliver)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line.

    :param argv: the arguments; ``sys.argv[1:]`` when omitted.
    :param out: where results go; stdout when omitted.
    :return: the exit code.
    """
    out = out or sys.stdout
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        # Airflow's logging writes to stdout; only this command's results may go there.
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.handler(args, out))
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"flow-webhook: error: {exc}\n")
        return EXIT_USAGE
    except FlowWebhookError as exc:
        sys.stderr.write(f"flow-webhook: {exc}\n")
        return EXIT_FAILURE


def main_entry() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
