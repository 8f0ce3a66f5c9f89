"""
The ``flow-webhook`` command line on a real ledger (SQLite through ``[flow_webhook]
ledger_conn_id``), real receivers on 127.0.0.1 and real DAG files.

Most commands run in-process through ``main([...], out=..., err=...)`` for speed; the
properties that only a real process shows (clean stdout, exit codes, no tracebacks, a
progress bar on a real terminal) are checked with ``python -m airflow_webhook_provider``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import text

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.attach import FlowWebhooks
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.signing import sign
from airflow_webhook_provider.face.cli.definition import main
from airflow_webhook_provider.ledger import Ledger, open_ledger
from airflow_webhook_provider.receiver import Reply
from tests.conftest import REPO, SECRET, submit

EXAMPLE = REPO / "examples" / "webhooks.yaml"
SCHEMA_FILE = REPO / "schemas" / "flow-webhooks.schema.json"
MAX_ENV = "AIRFLOW__FLOW_WEBHOOK__MAX_WEBHOOKS_PER_FLOW"
EVENT = JobEvent(flow_id="cli_dag", job_id="manual__1", job_status="failed")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def cli(*args: str | Path, err: io.StringIO | None = None) -> tuple[int, str, str]:
    """Run the command line in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    code = main([str(a) for a in args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def table(text: str) -> tuple[list[str], str, list[list[str]]]:
    """Split an AirflowConsole table into (header cells, rule line, row cells)."""
    header, rule, *rows = [line for line in text.splitlines() if line.strip()]

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.split(" | ")]

    return cells(header), rule.strip(), [cells(row) for row in rows]


def run_cli(*args: str | Path, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m airflow_webhook_provider`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "airflow_webhook_provider", *map(str, args)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=os.environ | env,
        timeout=120,
    )


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh SQLite ledger, reached the way users configure it: [flow_webhook] ledger_conn_id."""
    connection = {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_LEDGER", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID", "cli_ledger")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_BACKOFF_SECONDS", "0.05")
    opened = open_ledger(config.load().ledger_conn_id)
    yield opened
    opened.engine.dispose()


def failed_deliveries(ledger: Ledger, receiver: Any, connect: Any, count: int) -> list[str]:
    """Record ``count`` deliveries the receiver refused, due for redelivery now.

    From three refusals on, the receiver's circuit is open; its probe is made due now too,
    so a drain sends the probe first and, once it succeeds, the rest.
    """
    connect("receiver")
    receiver.default = Reply(500, body=b"down for maintenance")
    webhooks = [FlowWebhook(name=f"w{i:02d}", conn_id="receiver") for i in range(count)]
    results = submit([(w, EVENT) for w in webhooks], attempts=1)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE flow_webhook_deliveries SET next_attempt_at = 0"))
        conn.execute(
            text("UPDATE flow_webhook_endpoints SET next_probe_at = 0 WHERE next_probe_at IS NOT NULL")
        )
    receiver.default = Reply(200)
    return [r.delivery_id for r in results]


class TestTestCommand:
    def test_sends_a_signed_test_message(self, receiver, connect):
        connect("receiver")
        code, out, _ = cli("test", "receiver")
        assert code == 0
        assert out.startswith("receiver: Receiver answered HTTP 200 in ")
        # The line no longer names the method; the receiver shows it was a signed POST.
        assert "to a signed test message" in out
        (request,) = receiver.requests
        assert request.method == "POST"
        assert request.signature_valid
        assert json.loads(request.body)["jobId"] == "test"

    def test_a_refusing_receiver_fails(self, receiver, connect):
        connect("receiver")
        receiver.script(Reply(503, body=b"busy"))
        code, out, err = cli("test", "receiver")
        assert (code, out) == (1, "")
        assert "flow-webhook: connection 'receiver': Receiver answered HTTP 503: busy" in err
        assert len(receiver.requests) == 1  # the Test button does not retry

    def test_unknown_connection(self):
        code, out, err = cli("test", "no_such_conn")
        assert (code, out) == (1, "")
        assert "no connection 'no_such_conn'" in err
        assert "AIRFLOW_CONN_NO_SUCH_CONN" in err


class TestVerify:
    BODY = b'{"jobId": "manual__1", "jobStatus": "failed"}'

    @pytest.fixture(autouse=True)
    def _secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLOW_SECRET", SECRET)

    def payload_file(self, tmp_path: Path, content: bytes = BODY) -> Path:
        path = tmp_path / "body.json"
        path.write_bytes(content)
        return path

    @pytest.mark.parametrize(
        "header_form",
        [
            pytest.param("{}", id="value"),
            pytest.param("X-Webhook-Signature: {}", id="whole-header-line"),
        ],
    )
    def test_valid(self, tmp_path, header_form):
        header = header_form.format(sign(SECRET, self.BODY))
        code, out, err = cli(
            "verify",
            "--secret-env",
            "FLOW_SECRET",
            "--header",
            header,
            "--payload-file",
            self.payload_file(tmp_path),
        )
        assert (code, out, err) == (0, "valid\n", "")

    @pytest.mark.parametrize(
        ("header", "payload", "reason"),
        [
            pytest.param(
                sign(SECRET, BODY), BODY + b" ", "signature mismatch", id="body-changed-by-one-byte"
            ),
            pytest.param(sign("other", BODY), BODY, "signature mismatch", id="other-secret"),
            pytest.param(sign(SECRET, BODY, timestamp_ms=1_000), BODY, "stale signature", id="stale"),
            pytest.param("sha256=abc", BODY, "malformed signature header", id="malformed"),
        ],
    )
    def test_invalid(self, tmp_path, header, payload, reason):
        code, out, err = cli(
            "verify",
            "--secret-env",
            "FLOW_SECRET",
            "--header",
            header,
            "--payload-file",
            self.payload_file(tmp_path, payload),
        )
        assert (code, out) == (1, "")
        assert err.startswith(f"flow-webhook: invalid: {reason}")

    def test_now_ms_checks_a_captured_request_at_its_own_time(self, tmp_path):
        header = sign(SECRET, self.BODY, timestamp_ms=1_700_000_000_000)
        args = ("verify", "--secret-env", "FLOW_SECRET", "--header", header, "--payload-file")
        assert cli(*args, self.payload_file(tmp_path), "--now-ms", "1700000060000")[0] == 0
        code, _, err = cli(
            *args, self.payload_file(tmp_path), "--now-ms", "1700000060000", "--tolerance", "30"
        )
        assert code == 1 and "timestamp is 60 s old (tolerance 30 s)" in err

    def test_get_signs_the_url(self):
        url = "https://hooks.example.com/ping?flow=etl&status=failed"
        code, out, _ = cli(
            "verify", "--secret-env", "FLOW_SECRET", "--header", sign(SECRET, url), "--url", url
        )
        assert (code, out) == (0, "valid\n")

    def test_unset_secret_variable_is_a_usage_error(self, tmp_path, monkeypatch):
        monkeypatch.delenv("FLOW_SECRET")
        code, out, err = cli(
            "verify",
            "--secret-env",
            "FLOW_SECRET",
            "--header",
            "t=1,sha256=x",
            "--payload-file",
            self.payload_file(tmp_path),
        )
        assert (code, out) == (2, "")
        assert "environment variable FLOW_SECRET is not set or empty" in err

    def test_a_request_the_provider_sent_verifies_from_stdin(self, receiver, connect):
        """Receiver-side debugging: the exact bytes and header a receiver got, piped in."""
        connect("receiver")
        assert cli("test", "receiver")[0] == 0
        (request,) = receiver.requests
        done = run_cli(
            "verify",
            "--secret-env",
            "FLOW_SECRET",
            "--header",
            request.header("X-Webhook-Signature"),
            "--payload-stdin",
            stdin=request.body,
        )
        assert (done.returncode, done.stdout) == (0, "valid\n"), done.stderr


class TestDeliveries:
    @pytest.fixture
    def recorded(self, ledger, receiver, connect) -> dict[str, str]:
        connect("receiver")
        receiver.script(Reply(503, body=b"busy"), Reply(200, body=b"thanks"))
        first = submit(
            [(FlowWebhook(name="retried", conn_id="receiver"), EVENT)], attempts=2, backoff=0.01, budget=5
        )
        receiver.default = Reply(500)
        other = JobEvent(flow_id="other_dag", job_id="scheduled__2", job_status="success", output_name="load")
        second = submit([(FlowWebhook(name="refused", conn_id="receiver"), other)], attempts=1)
        return {"retried": first[0].delivery_id, "refused": second[0].delivery_id}

    def test_list_is_a_table(self, recorded):
        code, out, err = cli("deliveries", "list")
        assert code == 0
        header, rule, rows = table(out)
        assert header == [
            "id",
            "dag",
            "run",
            "webhook",
            "output",
            "state",
            "capture",
            "attempts",
            "status",
            "created (UTC)",
        ]
        assert set(rule) == {"=", "+"}
        by_id = {row[0]: row for row in rows}
        assert set(by_id) == set(recorded.values())
        assert by_id[recorded["retried"]][1:9] == [
            "cli_dag",
            "manual__1",
            "retried",
            "-",
            "delivered",
            "callback",
            "2",
            "200",
        ]
        assert by_id[recorded["refused"]][1:9] == [
            "other_dag",
            "scheduled__2",
            "refused",
            "load",
            "failed",
            "callback",
            "1",
            "500",
        ]
        # Columns line up: every row's state starts where the header's does.
        lines = [line for line in out.splitlines() if line.strip()]
        column = lines[0].index("state")
        assert all(line[column:].split()[0] in ("delivered", "failed") for line in lines[2:])
        # Who sends is said on stderr, away from the results.
        assert err.startswith("delivery mode: inline: ")

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            pytest.param(("--dag", "other_dag"), ["refused"], id="dag"),
            pytest.param(("--run", "manual__1"), ["retried"], id="run"),
            pytest.param(("--state", "delivered"), ["retried"], id="state"),
            pytest.param(("--limit", "1"), ["refused"], id="limit-newest-first"),
            pytest.param(("--dag", "nobody"), [], id="none"),
        ],
    )
    def test_list_json_filters(self, recorded, filters, expected):
        code, out, _ = cli("deliveries", "list", "-o", "json", *filters)
        assert code == 0
        assert [d["webhook"] for d in json.loads(out)] == expected

    def test_show_lists_the_attempts(self, recorded):
        code, out, _ = cli("deliveries", "show", recorded["retried"])
        assert code == 0
        details, attempts = out.split("\n\n")
        assert f"id: {recorded['retried']}" in details
        assert "state: delivered" in details
        header, _, (first, second) = table(attempts)
        assert header[:2] == ["#", "started (UTC)"]
        columns = ["#", "status", "source", "response"]
        picked = [[row[header.index(name)] for name in columns] for row in (first, second)]
        assert picked == [["1", "503", "inline", "busy"], ["2", "200", "inline", "thanks"]]

    def test_show_json(self, recorded):
        code, out, _ = cli("deliveries", "show", recorded["refused"], "-o", "json")
        assert code == 0
        document = json.loads(out)
        assert (document["webhook"], document["state"], document["output"]) == ("refused", "failed", "load")
        assert [(a["number"], a["status_code"], a["source"]) for a in document["attempts_detail"]] == [
            (1, 500, "inline")
        ]

    def test_show_unknown(self, ledger):
        assert cli("deliveries", "show", "nope") == (1, "", "flow-webhook: no delivery with id nope\n")


class TestRedeliver:
    def test_by_id(self, ledger, receiver, connect):
        (delivery_id,) = failed_deliveries(ledger, receiver, connect, 1)
        code, out, _ = cli("redeliver", delivery_id)
        assert code == 0
        assert out.startswith(f"{delivery_id}: delivered: HTTP 200 in ")
        assert out.endswith(" ms (sent inline)\n")
        assert ledger.get(delivery_id).state == "delivered"
        # One attempt made the redelivery, after the one the receiver refused.
        assert [(a.status_code, a.source) for a in ledger.attempts(delivery_id)] == [
            (500, "inline"),
            (200, "replay"),
        ]
        assert receiver.requests[-1].delivery_id == delivery_id

    def test_by_id_still_refused_fails(self, ledger, receiver, connect):
        (delivery_id,) = failed_deliveries(ledger, receiver, connect, 1)
        receiver.default = Reply(500)
        code, out, _ = cli("redeliver", delivery_id)
        assert code == 1
        assert out.startswith(f"{delivery_id}: not delivered: HTTP 500")

    def test_due_draws_a_progress_bar_on_a_terminal(self, ledger, receiver, connect, monkeypatch):
        ids = failed_deliveries(ledger, receiver, connect, 30)
        receiver.max_in_flight = 0  # count from here: the refusals above were sent inline, all at once
        # At most 10 requests in flight, so the bar is redrawn as they finish, at least 3 times.
        monkeypatch.setenv("AIRFLOW__FLOW_WEBHOOK__DISPATCHER_CONCURRENCY", "10")
        terminal = _Terminal()
        code, out, err = cli("redeliver", "--due", err=terminal)
        assert code == 0
        summary = re.fullmatch(
            r"30 message\(s\) in (\d+) round\(s\): 30 delivered, 0 failed \(will retry\), 0 dead\n", out
        )
        assert summary is not None, out
        assert receiver.max_in_flight <= 10  # the dispatcher's workers bound what is in flight
        frames = err.split("\r")[1:]
        assert frames[-1].endswith("\n")
        frames[-1] = frames[-1][:-1]
        done = [int(frame.split("] ")[1].split("/")[0]) for frame in frames]
        assert len(done) >= 3
        assert done == sorted(set(done)) and done[-1] == 30
        for count, frame in zip(done, frames, strict=True):
            bar = "#" * count + "." * (30 - count)  # 30 messages on a bar 30 wide
            assert frame == f"sending [{bar}] {count}/30: {count} delivered, 0 failed, 0 dead"
        assert {r.delivery_id for r in receiver.requests if r.status == 200} == set(ids)

    def test_due_draws_no_bar_when_stderr_is_not_a_terminal(self, ledger, receiver, connect):
        failed_deliveries(ledger, receiver, connect, 3)
        code, out, err = cli("redeliver", "--due")
        assert code == 0 and out.startswith("3 message(s) in ")
        assert "sending [" not in err and "\r" not in err

    def test_due_progress_bar_on_a_real_terminal(self, ledger, receiver, connect):
        failed_deliveries(ledger, receiver, connect, 6)
        receiver.max_in_flight = 0  # count from here: the refusals above were sent inline, all at once
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_webhook_provider", "redeliver", "--due"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            # Two requests in flight at once: the bar is redrawn as they finish.
            env=os.environ | {"AIRFLOW__FLOW_WEBHOOK__DISPATCHER_CONCURRENCY": "2"},
        )
        os.close(terminal)
        screen = b""
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([controller], [], [], 1)
                if not ready:
                    if process.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            stdout = process.communicate(timeout=30)[0].decode()
        finally:
            os.close(controller)
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0
        summary = re.fullmatch(
            r"6 message\(s\) in (\d+) round\(s\): 6 delivered, 0 failed \(will retry\), 0 dead\n", stdout
        )
        assert summary is not None, stdout
        assert receiver.max_in_flight <= 2  # never more than the two workers at once
        assert b"\rsending [" + b"#" * 30 + b"] 6/6: 6 delivered, 0 failed, 0 dead" in screen
        # The bar was drawn before the end too, and redrawn in place.
        assert any(f"] {n}/6: ".encode() in screen for n in range(1, 6))


class TestStatusAndEndpoints:
    def test_status_without_a_dispatcher_is_inline(self, ledger, receiver, connect):
        failed_deliveries(ledger, receiver, connect, 1)
        code, out, _ = cli("status", "-o", "json")
        assert code == 0
        document = json.loads(out)
        assert (document["mode"], document["dispatchers"]) == ("inline", [])
        assert document["counts"] == {"failed": 1}
        assert (document["due"], document["open_circuits"]) == (1, [])

        code, out, _ = cli("status")
        assert code == 0
        assert out.startswith("delivery mode: inline: no dispatcher heartbeat in the last 30 s")
        assert "ledger: 1 failed; 1 due now\n" in out

    def test_endpoints_list_shows_an_open_circuit(self, ledger, receiver, connect):
        failed_deliveries(ledger, receiver, connect, 3)
        code, out, _ = cli("endpoints", "list", "-o", "json")
        assert code == 0
        (health,) = json.loads(out)
        assert (health["key"], health["circuit"], health["consecutive_failures"]) == ("receiver", "open", 3)
        assert health["last_error"] == "HTTP 500"
        assert json.loads(cli("status", "-o", "json")[1])["open_circuits"] == ["receiver"]

        code, out, _ = cli("endpoints", "list")
        assert code == 0
        header, _, (row,) = table(out)
        assert (row[header.index("endpoint")], row[header.index("circuit")]) == ("receiver", "open")

    def test_dispatcher_once_drains_and_leaves_no_dispatcher_behind(self, ledger, receiver, connect):
        ids = failed_deliveries(ledger, receiver, connect, 2)
        code, out, _ = cli("dispatcher", "--once")
        assert code == 0
        assert re.fullmatch(
            r"2 message\(s\) in \d+ round\(s\): 2 delivered, 0 failed \(will retry\), 0 dead\n", out
        ), out
        assert [ledger.get(i).state for i in ids] == ["delivered", "delivered"]
        assert json.loads(cli("status", "-o", "json")[1])["mode"] == "inline"

    def test_plain_output_is_on_stdout(self, ledger, receiver, connect):
        (delivery_id,) = failed_deliveries(ledger, receiver, connect, 1)
        code, out, err = cli("deliveries", "list", "-o", "plain")
        assert code == 0
        assert delivery_id in out and delivery_id not in err


EXPORT_DAG = """
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG("cli_export", schedule=None) as dag:
    @task
    def publish_report():
        return 1

    @task
    def audit():
        return 2

    publish_report() >> audit()

WEBHOOKS = FlowWebhooks(
    FlowWebhook(
        name="slack-on-failure",
        conn_id="slack_webhook",
        on="failure",
        headers={"Content-Type": "application/json"},
        body='{"text": "Job $jobId has completed. Status: $jobStatus."}',
    ),
    FlowWebhook(
        name="report-published",
        conn_id="reports_webhook",
        on="success",
        outputs=["publish_report", "audit"],
        body='{\\n  "report": "$outputName",\\n  "run": "$jobId"\\n}\\n',
    ),
    # Words YAML 1.1 reads as booleans or numbers must stay strings.
    FlowWebhook(
        name="on",
        url="https://status.example.com/ping?probe=1",
        method="get",
        query={"flow": "$flowId", "no": "yes", "code": "007", "nothing": "null"},
    ),
    FlowWebhook(
        name="ünïcode ✓",
        url="https://hooks.example.com/text",
        method="PUT",
        headers={"Content-Type": "text/plain", "X-Off": "off"},
        body="line with trailing space \\n\\ttab, $$5 and ${jobId}s",
    ),
)
WEBHOOKS.attach(dag)
"""

FROM_FILE_DAG = """
from pathlib import Path
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhooks

with DAG("from_file", schedule=None) as dag:
    @task
    def publish_report():
        return 1

    publish_report()

FlowWebhooks.from_file(Path(__file__).with_name("webhooks.yaml")).attach(dag)
"""

PLAIN_DAG = """
from airflow.sdk import DAG, task

with DAG("no_webhooks", schedule=None) as dag:
    @task
    def work():
        return 1

    work()
"""

BROKEN_DAG = """
from airflow.sdk import DAG
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG("broken", schedule=None) as dag:
    pass

FlowWebhooks(FlowWebhook(name="both", conn_id="a", url="https://hooks.example.com/x")).attach(dag)
"""


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    """A DAGs folder of its own: a DAG with tricky definitions, one loading a file, one without, one broken."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "export_dag.py").write_text(EXPORT_DAG)
    (folder / "from_file_dag.py").write_text(FROM_FILE_DAG)
    shutil.copy(EXAMPLE, folder / "webhooks.yaml")
    (folder / "plain_dag.py").write_text(PLAIN_DAG)
    (folder / "broken_dag.py").write_text(BROKEN_DAG)
    return folder


def import_dag_file(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{uuid.uuid4().hex[:12]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestExport:
    @pytest.mark.parametrize("file_format", ["yaml", "json"])
    def test_export_validate_from_file_round_trip(self, dags, tmp_path, file_format):
        code, out, _ = cli("export", "cli_export", "--format", file_format, "--dags-folder", dags)
        assert code == 0
        exported = tmp_path / f"exported.{file_format}"
        exported.write_text(out)

        assert cli("validate", exported) == (0, f"{exported}: valid, 4 webhooks\n", "")
        original = import_dag_file(dags / "export_dag.py").WEBHOOKS
        assert list(FlowWebhooks.from_file(exported)) == list(original)

    def test_yaml_is_readable(self, dags):
        _, out, _ = cli("export", "cli_export", "--dags-folder", dags)
        assert out.startswith("version: 1\nwebhooks:\n- name: slack-on-failure\n  conn_id: slack_webhook\n")
        # A multi-line body is a literal block, as an author would write it.
        assert '  body: |\n    {\n      "report": "$outputName",\n' in out
        assert "outputs:\n  - publish_report\n  - audit\n" in out

    def test_a_dag_that_loads_a_definition_file_exports_the_same_definitions(self, dags, tmp_path):
        code, out, _ = cli("export", "from_file", "--dags-folder", dags)
        assert code == 0
        exported = tmp_path / "exported.yaml"
        exported.write_text(out)
        assert list(FlowWebhooks.from_file(exported)) == list(FlowWebhooks.from_file(EXAMPLE))

    def test_unknown_dag_names_the_files_that_failed_to_import(self, dags):
        code, out, err = cli("export", "missing", "--dags-folder", dags)
        assert (code, out) == (1, "")
        assert err.startswith(f"flow-webhook: no DAG 'missing' in {dags}; 1 file failed to import:\n")
        assert f"  {dags / 'broken_dag.py'}: " in err
        assert "flow webhook 'both': field 'conn_id': set exactly one of conn_id" in err
        assert "Traceback" not in err

    def test_dag_without_webhooks(self, dags):
        code, out, err = cli("export", "no_webhooks", "--dags-folder", dags)
        assert (code, out) == (1, "")
        assert err.startswith(
            "flow-webhook: DAG 'no_webhooks' has no flow webhooks: its file attaches none and none are "
            "defined in the UI"
        )

    def test_missing_dags_folder(self, tmp_path):
        code, _, err = cli("export", "x", "--dags-folder", tmp_path / "nowhere")
        assert code == 1 and "does not exist; name the right one with --dags-folder" in err

    def test_default_dags_folder_is_airflows(self, dag_file):
        dag_file(EXPORT_DAG.replace('"cli_export"', '"in_dags_folder"'))
        code, out, _ = cli("export", "in_dags_folder", "--format", "json")
        assert code == 0
        assert [w["name"] for w in json.loads(out)["webhooks"]] == [
            "slack-on-failure",
            "report-published",
            "on",
            "ünïcode ✓",
        ]


def write(tmp_path: Path, content: str, name: str = "webhooks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(content))
    return path


def many(count: int) -> str:
    return json.dumps({"webhooks": [{"name": f"hook-{i}", "conn_id": "alerts"} for i in range(count)]})


class TestValidate:
    @pytest.fixture(autouse=True)
    def _default_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(MAX_ENV, raising=False)

    def test_example_is_valid(self):
        assert cli("validate", EXAMPLE) == (0, f"{EXAMPLE}: valid, 3 webhooks\n", "")

    def test_yaml_reads_on_and_yes_as_strings(self):
        on_failure, outputs, ping = FlowWebhooks.from_file(EXAMPLE)
        assert on_failure.on == "failure" and outputs.outputs == ("publish_report",)
        assert ping.method == "GET" and ping.query == {"flow": "$flowId", "status": "$jobStatus"}

    @pytest.mark.parametrize(
        ("name", "content", "messages"),
        [
            pytest.param(
                "many.json",
                many(51),
                ["the file defines 51 flow webhooks, more than the 50 allowed"],
                id="51-webhooks",
            ),
            pytest.param(
                "dup.yaml",
                """
                webhooks:
                  - {name: notify, conn_id: alerts}
                  - {name: notify, conn_id: reports, on: success}
                """,
                [
                    "flow webhook 'notify': field 'name': is used by two webhooks of this flow; give each webhook a unique name"
                ],
                id="duplicate-names",
            ),
            pytest.param(
                "bad.yaml",
                """
                webhooks:
                  - name: ok
                    conn_id: alerts
                  - name: ftp
                    url: ftp://files.example.com/drop
                  - name: get-with-body
                    conn_id: alerts
                    method: GET
                    body: x
                  - conn_id: alerts
                """,
                [
                    "webhooks[1]: flow webhook 'ftp': field 'url': scheme 'ftp' is not allowed; use an http:// or https:// URL",
                    "webhooks[2]: flow webhook 'get-with-body': field 'body': a body is sent only with POST, PUT or PATCH",
                    "webhooks[3]: flow webhook (unnamed): field 'name': is required",
                ],
                id="bad-fields-all-reported",
            ),
            pytest.param(
                "unknown.yaml",
                """
                webhooks:
                  - name: notify
                    conn_id: alerts
                    colour: red
                """,
                [
                    "webhooks[0]: flow webhook 'notify': field 'colour': unknown field; the fields are name, conn_id"
                ],
                id="unknown-field",
            ),
            pytest.param(
                "top.yaml",
                """
                version: 1
                hooks: []
                """,
                [
                    "unknown top-level key 'hooks'; a definition file has only 'webhooks' (the list) and 'version'",
                    "field 'webhooks': is required",
                ],
                id="unknown-top-level-key",
            ),
            pytest.param(
                "list.yaml",
                "- name: notify\n  conn_id: alerts\n",
                ["the top level must be a mapping with a 'webhooks' list, not a list"],
                id="bare-list",
            ),
            pytest.param(
                "v2.json",
                '{"version": 2, "webhooks": []}',
                ["field 'version': 2 is not a version this release reads"],
                id="version",
            ),
            pytest.param(
                "syntax.yaml",
                "webhooks:\n  - name: a\n   conn_id: b\n",
                ["not valid YAML at line 3, column"],
                id="yaml-syntax",
            ),
            pytest.param(
                "syntax.json", '{"webhooks": [}', ["not valid JSON at line 1, column 15"], id="json-syntax"
            ),
            pytest.param(
                "twice.yaml",
                "webhooks:\n  - name: a\n    conn_id: b\n    name: c\n",
                ["not valid YAML at line 4, column 5: found the key 'name' twice; keep one"],
                id="duplicate-key",
            ),
        ],
    )
    def test_invalid(self, tmp_path, name, content, messages):
        path = write(tmp_path, content, name)
        code, out, err = cli("validate", path)
        assert (code, out) == (1, "")
        for message in messages:
            assert f"flow-webhook: {path}: {message}" in err
        assert len(err.splitlines()) == len(messages)

    def test_fifty_is_the_default_limit(self, tmp_path):
        path = write(tmp_path, many(50), "fifty.json")
        assert cli("validate", path)[:2] == (0, f"{path}: valid, 50 webhooks\n")

    def test_limit_comes_from_airflow_config(self, monkeypatch):
        monkeypatch.setenv(MAX_ENV, "2")
        code, _, err = cli("validate", EXAMPLE)
        assert code == 1 and "the file defines 3 flow webhooks, more than the 2 allowed per flow" in err

    def test_a_secret_is_refused_and_never_echoed(self, tmp_path):
        path = write(tmp_path, "webhooks:\n  - {name: a, conn_id: b, secret: hunter2-value}\n")
        code, _, err = cli("validate", path)
        assert code == 1
        assert "field 'secret': a secret does not belong in DAG code" in err
        assert "hunter2-value" not in err

    def test_several_files_and_a_missing_one(self, tmp_path):
        missing = tmp_path / "missing.yaml"
        code, out, err = cli("validate", EXAMPLE, missing)
        assert code == 1
        assert out == f"{EXAMPLE}: valid, 3 webhooks\n"
        assert err == f"flow-webhook: {missing}: No such file or directory\n"

    def test_json_without_extension_is_recognised(self, tmp_path):
        path = write(
            tmp_path, json.dumps({"webhooks": [{"name": "a", "url": "https://e.example/x"}]}), "webhooks"
        )
        assert cli("validate", path)[0] == 0


class TestSchema:
    @pytest.fixture(autouse=True)
    def _default_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(MAX_ENV, raising=False)

    def test_committed_schema_is_the_generated_one(self):
        code, out, _ = cli("schema")
        assert code == 0
        assert SCHEMA_FILE.read_text() == out, (
            "schemas/flow-webhooks.schema.json is stale; regenerate it with "
            "`flow-webhook schema > schemas/flow-webhooks.schema.json` (default config)"
        )

    def test_max_items_follows_the_configured_limit(self, monkeypatch):
        monkeypatch.setenv(MAX_ENV, "7")
        assert json.loads(cli("schema")[1])["properties"]["webhooks"]["maxItems"] == 7

    @pytest.fixture
    def validator(self) -> jsonschema.Draft202012Validator:
        schema = json.loads(SCHEMA_FILE.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        return jsonschema.Draft202012Validator(schema)

    def test_accepts_the_example_and_every_export(self, validator, dags):
        assert not list(validator.iter_errors(FlowWebhooks.from_file(EXAMPLE).to_mapping()))
        exported = json.loads(cli("export", "cli_export", "--format", "json", "--dags-folder", dags)[1])
        assert not list(validator.iter_errors(exported))

    @pytest.mark.parametrize(
        "document",
        [
            pytest.param(json.loads(many(51)), id="51-webhooks"),
            pytest.param({"webhooks": [], "hooks": []}, id="unknown-top-level-key"),
            pytest.param({"webhooks": [{"name": "a", "conn_id": "b", "colour": "red"}]}, id="unknown-field"),
            pytest.param(
                {"webhooks": [{"name": "a", "conn_id": "b", "url": "https://e.example"}]},
                id="conn-id-and-url",
            ),
            pytest.param({"webhooks": [{"name": "a"}]}, id="neither-conn-id-nor-url"),
            pytest.param(
                {"webhooks": [{"name": "a", "conn_id": "b", "method": "GET", "body": "x"}]},
                id="body-with-get",
            ),
            pytest.param({"webhooks": [{"name": "a", "conn_id": "b", "on": "maybe"}]}, id="bad-on"),
            pytest.param({"webhooks": [{"name": "a", "conn_id": "b", "outputs": []}]}, id="no-outputs"),
            pytest.param({"webhooks": [{"name": "a", "conn_id": "b", "secret": "s"}]}, id="secret"),
        ],
    )
    def test_rejects_what_validate_rejects(self, validator, document, tmp_path):
        assert list(validator.iter_errors(document))
        assert cli("validate", write(tmp_path, json.dumps(document), "doc.json"))[0] == 1


class TestRealProcess:
    """What only a real process shows: clean stdout, exit codes, and no tracebacks."""

    def test_json_outputs_are_clean_json_on_stdout(self, ledger, receiver, connect, dags):
        failed_deliveries(ledger, receiver, connect, 2)
        listing = run_cli("deliveries", "list", "-o", "json")
        assert listing.returncode == 0, listing.stderr
        assert sorted(d["webhook"] for d in json.loads(listing.stdout)) == ["w00", "w01"]

        exported = run_cli("export", "cli_export", "--format", "json", "--dags-folder", dags)
        assert exported.returncode == 0, exported.stderr
        assert len(json.loads(exported.stdout)["webhooks"]) == 4
        assert "Traceback" not in exported.stderr  # the broken DAG file in the folder stays quiet

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            pytest.param(("validate", EXAMPLE), 0, "", id="ok"),
            pytest.param(
                ("validate", "no-such-file.yaml"),
                1,
                "no-such-file.yaml: No such file or directory",
                id="missing-file",
            ),
            pytest.param(
                ("deliveries", "show", "nope"), 1, "no delivery with id nope", id="unknown-delivery"
            ),
            pytest.param(
                ("verify", "--secret-env", "UNSET_VAR", "--header", "t=1,sha256=x", "--url", "http://x"),
                2,
                "environment variable UNSET_VAR is not set",
                id="unset-secret-variable",
            ),
            pytest.param(
                ("verify", "--secret", "s", "--header", "t=1,sha256=x", "--url", "http://x"),
                2,
                "the following arguments are required: --secret-env",
                id="secret-on-argv-refused",
            ),
            pytest.param(("frobnicate",), 2, "invalid choice: 'frobnicate'", id="unknown-command"),
            pytest.param((), 2, "the following arguments are required: COMMAND", id="no-command"),
        ],
    )
    def test_exit_codes_and_no_tracebacks(self, ledger, args, code, message):
        done = run_cli(*args)
        assert done.returncode == code, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr
        if code:
            assert done.stdout == ""
