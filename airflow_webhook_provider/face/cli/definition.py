"""The commands of ``airflow flow-webhooks``, defined once for Airflow's CLI and the ``flow-webhook`` alias.

Airflow builds ``airflow flow-webhooks ...`` from :func:`get_cli_commands` (named by the
``cli`` key of the provider info); :func:`main` builds the same commands into the
``flow-webhook`` program (and ``python -m airflow_webhook_provider``). Both call the same
handlers in :mod:`airflow_webhook_provider.face.cli.commands`, which this module imports
only when a command runs, so that ``airflow --help`` stays fast.

Results are the only thing on stdout (``-o json`` output is clean JSON); logs, errors and
the progress bar go to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from airflow_webhook_provider.face.cli import EXIT_OK, EXIT_USAGE, GROUP, PROG

if TYPE_CHECKING:
    from airflow.cli.cli_config import CLICommand

__all__ = ["COMMANDS", "GROUP", "PROG", "get_cli_commands", "main", "main_entry"]

STATES = ("pending", "delivered", "failed", "dead", "held")
CAPTURES = ("callback", "listener", "reconciled", "test")
EVENTS = ("success", "failure", "late", "test", "alert")
OUTPUTS = ("table", "json", "yaml", "plain")


@dataclass(frozen=True)
class Arg:
    """One argument: argparse's ``add_argument`` flags and keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One command: its handler (``module:function`` in ``commands``) and arguments."""

    name: str
    help: str
    handler: str
    args: tuple[Arg, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Group:
    """A group of commands (``deliveries``, ``endpoints``)."""

    name: str
    help: str
    commands: tuple[Command, ...]


def _arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


OUTPUT = _arg(
    "-o",
    "--output",
    choices=OUTPUTS,
    default="table",
    metavar="(table, json, yaml, plain)",
    help="Output format. Allowed values: json, yaml, plain, table (default: table)",
)

COMMANDS: tuple[Command | Group, ...] = (
    Command(
        "test",
        "send a test message through a connection (the Test button)",
        "test",
        (
            _arg("conn_id", nargs="?", metavar="CONN_ID", help="the flow_webhook connection id"),
            _arg("--dag", metavar="DAG_ID", help="with --webhook: test this DAG's webhook"),
            _arg("--webhook", metavar="NAME", help="the webhook (defined in the DAG file or in the UI)"),
            _arg("--dags-folder", metavar="PATH", help="the folder to parse (default: [core] dags_folder)"),
            _arg(
                "--wait",
                type=float,
                default=40.0,
                metavar="SECONDS",
                help="how long to wait for a running dispatcher's attempt (default 40)",
            ),
        ),
        "Send one signed test message ($jobId and $jobStatus are 'test') and report the receiver's answer: "
        "through a flow_webhook connection (test CONN_ID, as its Test button does), or as a DAG's webhook "
        "would, with its own method, headers, query and body (test --dag DAG --webhook NAME, as the DAG's "
        "Webhooks tab does). It goes through the egress policy, is recorded in the ledger, and a running "
        "dispatcher sends it. Exits 1 when the receiver did not accept it.",
    ),
    Command(
        "verify",
        "check an X-Webhook-Signature header against a payload",
        "verify",
        (
            _arg(
                "--secret-env",
                required=True,
                metavar="VAR",
                help="name of the environment variable holding the secret key; the secret itself is never an "
                "argument, because arguments show in the process list and in shell history",
            ),
            _arg(
                "--header",
                required=True,
                metavar="H",
                help="the header value, t=<unix ms>,sha256=<hex> (a whole 'X-Webhook-Signature: ...' line "
                "also works)",
            ),
            _arg(
                "--payload-file", metavar="F", help="file holding the exact request body (POST, PUT, PATCH)"
            ),
            _arg("--payload-stdin", action="store_true", help="read the exact request body from stdin"),
            _arg("--url", help="the full request URL as sent, the signed payload of GET and DELETE"),
            _arg(
                "--tolerance",
                type=float,
                default=300.0,
                metavar="SECONDS",
                help="how far the timestamp may be from now (default 300)",
            ),
            _arg(
                "--now-ms",
                type=int,
                metavar="MS",
                help="the UNIX time in milliseconds to check against, e.g. when the request was captured",
            ),
        ),
        "Check a received X-Webhook-Signature header, as a receiver does. Give exactly one of --payload-file, "
        "--payload-stdin and --url. Prints 'valid', or the reason on stderr with exit code 1.",
    ),
    Group(
        "deliveries",
        "list and inspect messages in the ledger",
        (
            Command(
                "list",
                "list messages, newest first",
                "deliveries_list",
                (
                    _arg("--dag", help="only this DAG"),
                    _arg("--run", help="only this run id"),
                    _arg("--state", choices=STATES, help="only this state"),
                    _arg("--capture", choices=CAPTURES, help="only messages captured this way"),
                    _arg("--event", choices=EVENTS, help="only messages reporting this event"),
                    _arg("--endpoint", help="only this endpoint (a connection id)"),
                    _arg("--limit", type=int, default=100, help="at most this many (default 100)"),
                    OUTPUT,
                ),
            ),
            Command(
                "show",
                "show one message and its attempts",
                "deliveries_show",
                (_arg("id", metavar="ID"), OUTPUT),
            ),
        ),
    ),
    Command(
        "redeliver",
        "send a message again, or every due message",
        "redeliver",
        (
            _arg("id", nargs="?", metavar="ID", help="the delivery id to send again (any state)"),
            _arg(
                "--due",
                action="store_true",
                help="send every due message (a progress bar shows on a terminal)",
            ),
            _arg("--time-limit", type=float, default=240.0, help="claim nothing new after this many seconds"),
        ),
        "Send one message again now (same delivery id, fresh signature; through the dispatcher when one is "
        "alive), or drain every due message here, as the maintenance DAG does.",
    ),
    Command(
        "dispatcher",
        "send what the ledger holds, until stopped (a long-running component)",
        "dispatcher",
        (
            _arg("--once", action="store_true", help="send what is due now, then exit"),
            _arg(
                "--concurrency",
                type=int,
                help="requests in flight at once ([flow_webhook] dispatcher_concurrency)",
            ),
            _arg("--time-limit", type=float, help="with --once: claim nothing new after this many seconds"),
        ),
        "Claim due messages from the ledger and send them, with the full wire format, retries and circuit "
        "breakers, recording every attempt. While a dispatcher is alive, callbacks only record messages. "
        "SIGTERM lets requests in flight finish (within [flow_webhook] dispatcher_shutdown_grace_seconds), "
        "then exits; nothing is lost.",
    ),
    Command(
        "status",
        "show who sends (dispatcher or inline), the dispatchers, and what the ledger holds",
        "status",
        (OUTPUT,),
    ),
    Group(
        "endpoints",
        "show and manage endpoints: health, circuit breaker, disabled",
        (
            Command("list", "list endpoints and their health", "endpoints_list", (OUTPUT,)),
            Command(
                "disable",
                "disable an endpoint: its new messages are held, not sent",
                "endpoints_disable",
                (
                    _arg(
                        "endpoint",
                        metavar="ENDPOINT",
                        help="a connection id (or url:... as endpoints list shows)",
                    ),
                    _arg("--reason", default="disabled by hand", help="why, for the list and the alert"),
                ),
            ),
            Command(
                "enable",
                "enable an endpoint: close its circuit and send what it held",
                "endpoints_enable",
                (_arg("endpoint", metavar="ENDPOINT"),),
                "Enable a disabled endpoint, close its circuit, and make every message it held due now "
                "(a running dispatcher sends them; without one, they are sent here).",
            ),
        ),
    ),
    Command(
        "recover",
        "send again every message of a time range that was not delivered",
        "recover",
        (
            _arg(
                "--since",
                required=True,
                metavar="DURATION|TIME",
                help="e.g. 6h, 2d, 90m, or 2026-11-30T08:00",
            ),
            _arg("--until", metavar="DURATION|TIME", help="the end of the range (default now)"),
            _arg("--dag", help="only this DAG"),
            _arg("--conn", help="only this connection (endpoint)"),
            _arg(
                "--state",
                action="append",
                choices=STATES,
                help="only these states (repeatable); default: everything not delivered",
            ),
            _arg("--dry-run", action="store_true", help="count what would be sent, and show a sample"),
            _arg(
                "--time-limit", type=float, default=3600.0, help="claim nothing new after this many seconds"
            ),
            OUTPUT,
        ),
        "Send again exactly the messages the selection names (same delivery ids, fresh signatures), "
        "held and dead ones included, within each endpoint's concurrency and rate limits, with a "
        "progress bar on a terminal. --dry-run prints the count and a sample instead.",
    ),
    Command(
        "purge",
        "delete old messages and their attempts",
        "purge",
        (
            _arg("--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h"),
            _arg(
                "--state",
                action="append",
                choices=STATES,
                help="purge these states (repeatable); default: delivered",
            ),
            _arg("--dry-run", action="store_true", help="count what would be purged"),
            OUTPUT,
        ),
        "Delete messages in the given states (delivered by default) last changed before the age, as "
        "[flow_webhook] retention_days does for delivered ones; a message being sent is never purged.",
    ),
    Command(
        "doctor",
        "check the set-up and say how to fix what is wrong",
        "doctor",
        (
            _arg(
                "--conn",
                action="append",
                help="also send a test message through this connection (repeatable)",
            ),
            OUTPUT,
        ),
        "Check the ledger, the dispatcher's heartbeat, the plugin and its listeners, the connections "
        "(a test message each with --conn), and that the executor can share the ledger. Exits 1 when "
        "anything is wrong, with the fix for each problem.",
    ),
    Command(
        "export",
        "print the webhook definitions of a DAG as a definition file",
        "export",
        (
            _arg("dag_id", metavar="DAG_ID"),
            _arg("--format", choices=("yaml", "json"), default="yaml", help="default yaml"),
            _arg("--dags-folder", metavar="PATH", help="the folder to parse (default: [core] dags_folder)"),
        ),
        "Parse the DAGs folder (no scheduler needed) and print the flow webhooks attached to a DAG, followed "
        "by those defined in the UI (from the ledger), as a definition file that FlowWebhooks.from_file() "
        "and import read.",
    ),
    Command(
        "import",
        "create or update a DAG's UI-defined webhooks from a definition file",
        "import_",
        (
            _arg("dag_id", metavar="DAG_ID"),
            _arg("file", metavar="FILE", help="a definition file (YAML, or JSON when it ends in .json)"),
            _arg(
                "--replace",
                action="store_true",
                help="also delete the UI-defined webhooks the file does not list",
            ),
            _arg("--actor", help="who to record in the audit trail (default: your login name)"),
        ),
        "Validate every entry of the file first (each must name a flow_webhook connection) and apply all of "
        "them, or none when any is wrong, printing every problem. The changes are versioned and audited as "
        "the DAG's Webhooks tab's are; runs that end afterwards send them. Webhooks the DAG file defines are "
        "read-only.",
    ),
    Command(
        "validate",
        "check definition files (YAML or JSON)",
        "validate",
        (_arg("files", nargs="+", metavar="FILE"),),
        "Check definition files with every rule FlowWebhook and FlowWebhooks apply, the "
        "[flow_webhook] max_webhooks_per_flow limit included.",
    ),
    Command(
        "schema",
        "print the JSON Schema of a definition file",
        "schema",
        description="Print the JSON Schema (draft 2020-12) of a definition file, for editors and CI.",
    ),
)


def _handler(name: str) -> Callable[[argparse.Namespace], None]:
    """Return a function that imports the handler when it runs, and reports errors as the CLI should."""

    def run(args: argparse.Namespace) -> None:
        commands = importlib.import_module("airflow_webhook_provider.face.cli.commands")
        code = commands.run(getattr(commands, name), args)
        if code:
            raise SystemExit(code)

    run.__name__ = name
    return run


def get_cli_commands() -> list[CLICommand]:
    """Return the ``flow-webhooks`` group for Airflow's CLI (the provider info's ``cli`` key)."""
    from airflow.cli.cli_config import ActionCommand, GroupCommand
    from airflow.cli.cli_config import Arg as AirflowArg

    def action(command: Command) -> ActionCommand:
        return ActionCommand(
            name=command.name,
            help=command.help,
            description=command.description,
            func=_handler(command.handler),
            args=tuple(AirflowArg(arg.flags, **arg.options) for arg in command.args),  # type: ignore[no-untyped-call]
        )

    subcommands = [
        GroupCommand(name=item.name, help=item.help, subcommands=[action(c) for c in item.commands])
        if isinstance(item, Group)
        else action(item)
        for item in COMMANDS
    ]
    return [
        GroupCommand(
            name=GROUP,
            help="Flow webhooks: the dispatcher, deliveries, redelivery, endpoints, connection tests, definitions",
            subcommands=subcommands,
        )
    ]


def _add(commands: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    # No abbreviated options: "--secret VALUE" must not be taken for "--secret-env VALUE".
    parser = commands.add_parser(
        command.name, help=command.help, description=command.description or command.help, allow_abbrev=False
    )
    for arg in command.args:
        parser.add_argument(*arg.flags, **arg.options)
    parser.set_defaults(func=_handler(command.handler), command_parser=parser)


def parser() -> argparse.ArgumentParser:
    """Return the ``flow-webhook`` parser: the commands of ``airflow flow-webhooks``."""
    top = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description=f"Flow webhooks from a terminal; the same commands as `airflow {GROUP}`.",
        epilog="Results go to stdout, logs and errors to stderr. Exit codes: 0 ok, 1 failure, 2 usage error.",
    )
    top.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = top.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for item in COMMANDS:
        if isinstance(item, Group):
            group = commands.add_parser(item.name, help=item.help, allow_abbrev=False)
            inner = group.add_subparsers(dest="group_command", required=True, metavar="COMMAND")
            for command in item.commands:
                _add(inner, command)
        else:
            _add(commands, item)
    return top


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``flow-webhook``.

    :param argv: the arguments; ``sys.argv[1:]`` when omitted.
    :param out: where results go; stdout when omitted.
    :param err: where logs, errors and the progress bar go; stderr when omitted.
    :return: the exit code.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    logging.basicConfig(stream=err, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
            args.func(args)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_USAGE if code else EXIT_OK)
    return EXIT_OK


def main_entry() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
