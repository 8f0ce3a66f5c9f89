"""The jobGroups API client, FlowWebhookOperator, JobGroupTrigger and the example DAG.

Everything talks HTTP to ``JobGroupsServer`` on 127.0.0.1. Operator tests run the task
through ``dag.test()`` in a real Airflow with a SQLite metadata database; the deferrable
path goes through Airflow's in-process trigger runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.execution_time import supervisor
from airflow.sdk.execution_time.comms import DeferTask
from airflow.sdk.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize
from airflow.utils.state import TaskInstanceState

from airflow_webhook_provider.core.exceptions import (
    InvalidConnection,
    InvalidWebhookDefinition,
    JobGroupFailed,
    JobGroupsAuthError,
    JobGroupsError,
    JobGroupsNotFound,
)
from airflow_webhook_provider.core.retry import RetryPolicy
from airflow_webhook_provider.hooks.job_groups import ApiSettings, JobGroupsHook, excerpt
from airflow_webhook_provider.operators.flow_webhook import FlowWebhookOperator
from airflow_webhook_provider.triggers.job_group import JobGroupTrigger
from tests.job_groups_server import JobGroupsServer

REPO = Path(__file__).resolve().parent.parent
TOKEN = "jg-test-token-7f3c9a"
CONN_ID = "job_groups_default"
FAST_RETRIES = RetryPolicy(max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.05, budget_seconds=5)


def job_groups_connection(host: str, *, token: str | None = TOKEN, **extra: Any) -> str:
    """Return a ``job_groups`` connection in Airflow's JSON form, for an AIRFLOW_CONN_ variable."""
    connection: dict[str, Any] = {"conn_type": "job_groups", "host": host}
    if token is not None:
        connection["password"] = token
    if extra:
        connection["extra"] = extra
    return json.dumps(connection)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobGroupsServer]:
    """A jobGroups API on 127.0.0.1, and the ``job_groups_default`` connection pointing at it."""
    with JobGroupsServer(token=TOKEN) as api:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", job_groups_connection(api.base_url))
        yield api


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hook() -> JobGroupsHook:
    return JobGroupsHook(CONN_ID, retry_policy=FAST_RETRIES)


class TestApiSettings:
    def make(self, **fields: Any) -> ApiSettings:
        defaults: dict[str, Any] = {"conn_id": "jg", "conn_type": "job_groups", "password": TOKEN}
        return ApiSettings.from_connection(Connection(**{**defaults, **fields}))

    def test_reads_base_url_token_and_defaults(self) -> None:
        settings = self.make(host="http://www.example.com:3005/")

        assert settings.base_url == "http://www.example.com:3005"
        assert settings.url("/v4/jobGroups") == "http://www.example.com:3005/v4/jobGroups"
        assert settings.headers["Authorization"] == f"Bearer {TOKEN}"
        assert (settings.validate_ssl, settings.timeout) == (True, 30.0)
        assert TOKEN not in repr(settings)

    def test_reads_extras_and_port(self) -> None:
        settings = self.make(
            host="https://api.example.com",
            port=8443,
            extra=json.dumps({"validate_ssl": "false", "timeout": 5}),
        )

        assert settings.base_url == "https://api.example.com:8443"
        assert (settings.validate_ssl, settings.timeout) == (False, 5.0)

    @pytest.mark.parametrize(
        ("fields", "field", "hint"),
        [
            pytest.param({"host": "www.example.com:3005"}, "host", "must start with http", id="no-scheme"),
            pytest.param({"host": None}, "host", "must start with http", id="no-host"),
            pytest.param({"host": "http://x", "password": None}, "password", "Password", id="no-token"),
            pytest.param(
                {"host": "http://x", "extra": '{"timeout": "soon"}'}, "timeout", "seconds", id="bad-timeout"
            ),
            pytest.param(
                {"host": "http://x", "extra": '{"validate_ssl": "maybe"}'},
                "validate_ssl",
                "true or false",
                id="bad-ssl",
            ),
        ],
    )
    def test_refuses_a_misconfigured_connection(self, fields: dict[str, Any], field: str, hint: str) -> None:
        with pytest.raises(InvalidConnection, match=hint) as info:
            self.make(**fields)

        assert (info.value.conn_id, info.value.field) == ("jg", field)


class TestExcerpt:
    def test_is_one_line_of_at_most_200_characters(self) -> None:
        text = excerpt("<html>\n<body>" + "x" * 500 + "</body></html>")

        assert len(text) == 200
        assert text.startswith("<html> <body>xxx")
        assert text.endswith("…")

    def test_masks_the_token(self) -> None:
        assert excerpt(f"bad token {TOKEN}!", secret=TOKEN) == "bad token ***!"


class TestJobGroupsHook:
    def test_run_job_group_sends_the_documented_request(self, server: JobGroupsServer) -> None:
        job_group = hook().run_job_group({"wrangledDataset": {"id": 4}})

        assert job_group["id"] == 101
        assert job_group["reason"] == "JobStarted"
        [request] = server.requests
        assert (request.method, request.path) == ("POST", "/v4/jobGroups")
        assert request.header("Authorization") == f"Bearer {TOKEN}"
        assert request.header("Content-Type") == "application/json"
        assert request.json() == {"wrangledDataset": {"id": 4}}

    def test_status_moves_from_created_to_terminal(self, server: JobGroupsServer) -> None:
        client = hook()
        job_group_id = client.run_job_group({"wrangledDataset": {"id": 4}})["id"]

        statuses = [client.get_job_group_status(job_group_id) for _ in range(4)]

        assert statuses == ["Created", "InProgress", "Complete", "Complete"]
        assert len(server.requests_to("GET", f"/v4/jobGroups/{job_group_id}/status")) == 4

    def test_get_job_group(self, server: JobGroupsServer) -> None:
        client = hook()
        job_group_id = client.run_job_group({"wrangledDataset": {"id": 4}})["id"]

        job_group = client.get_job_group(job_group_id)

        assert job_group["id"] == job_group_id
        assert job_group["wrangledDataset"] == {"id": 4}
        assert job_group["status"] == "Created"

    @pytest.mark.parametrize("final_status", ["Failed", "Canceled"])
    def test_wait_fails_on_a_failed_job_group(self, server: JobGroupsServer, final_status: str) -> None:
        server.final_status = final_status
        client = hook()
        job_group_id = client.run_job_group({"wrangledDataset": {"id": 4}})["id"]

        with pytest.raises(
            JobGroupFailed, match=rf"Job group {job_group_id} ended with status '{final_status}'"
        ):
            client.wait_for_job_group(job_group_id, poll_interval=0.01, timeout=5)

        assert len(server.requests_to("GET", f"/v4/jobGroups/{job_group_id}/status")) == 3

    def test_wait_times_out(self, server: JobGroupsServer) -> None:
        server.final_status = None
        client = hook()
        job_group_id = client.run_job_group({"wrangledDataset": {"id": 4}})["id"]
        started = time.monotonic()

        with pytest.raises(JobGroupsError, match=r"did not finish within 0.2 s \(last status 'InProgress'\)"):
            client.wait_for_job_group(job_group_id, poll_interval=0.05, timeout=0.2)

        assert 0.2 <= time.monotonic() - started < 2
        assert 2 <= len(server.requests_to("GET", f"/v4/jobGroups/{job_group_id}/status")) <= 6

    def test_a_wrong_token_is_rejected_without_printing_it(
        self, server: JobGroupsServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wrong = "not-the-token-4242"
        monkeypatch.setenv("AIRFLOW_CONN_JG_WRONG", job_groups_connection(server.base_url, token=wrong))

        with pytest.raises(JobGroupsAuthError, match="rejected the access token") as info:
            JobGroupsHook("jg_wrong", retry_policy=FAST_RETRIES).run_job_group({"wrangledDataset": {"id": 4}})

        assert info.value.status_code == 401
        assert info.value.url == f"{server.base_url}/v4/jobGroups"
        assert wrong not in str(info.value)
        assert len(server.requests) == 1, "401 is not retried"

    def test_403_is_an_auth_error(self, server: JobGroupsServer) -> None:
        server.answer_next(server.raw(403, b'{"exception": {"name": "Forbidden"}}', "application/json"))

        with pytest.raises(JobGroupsAuthError, match=r"HTTP 403"):
            hook().run_job_group({"wrangledDataset": {"id": 4}})

    def test_unknown_wrangled_dataset(self, server: JobGroupsServer) -> None:
        with pytest.raises(JobGroupsNotFound, match="does not know wrangled dataset 99") as info:
            hook().run_job_group({"wrangledDataset": {"id": 99}})

        assert info.value.status_code == 404

    def test_unknown_job_group(self, server: JobGroupsServer) -> None:
        with pytest.raises(JobGroupsNotFound, match="does not know job group 999"):
            hook().get_job_group_status(999)

    def test_5xx_is_retried_until_the_job_starts(self, server: JobGroupsServer) -> None:
        server.fail_next(2, status=503)

        job_group = hook().run_job_group({"wrangledDataset": {"id": 4}})

        assert job_group["id"] == 101
        posts = server.requests_to("POST", "/v4/jobGroups")
        assert len(posts) == 3
        assert all(p.json() == {"wrangledDataset": {"id": 4}} for p in posts)

    def test_retries_are_logged_without_the_token(
        self, server: JobGroupsServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> None:
        server.fail_next(2, status=503)

        with caplog.at_level(logging.DEBUG):
            hook().run_job_group({"wrangledDataset": {"id": 4}})

        # Airflow's structlog set-up writes to stdout; libraries (urllib3) log through logging.
        out, err = capfd.readouterr()
        logged = out + err + caplog.text
        assert "POST /v4/jobGroups HTTP/1.1" in caplog.text
        assert "failed (HTTP 503) on attempt 1 of 3; retrying" in logged
        assert TOKEN not in logged

    def test_5xx_retries_stop_at_the_attempt_limit(self, server: JobGroupsServer) -> None:
        server.fail_next(10, status=502)

        with pytest.raises(JobGroupsError, match="answered HTTP 502") as info:
            hook().get_job_group_status(101)

        assert info.value.status_code == 502
        assert len(server.requests) == FAST_RETRIES.max_attempts

    def test_5xx_retries_stop_when_the_time_budget_is_spent(self, server: JobGroupsServer) -> None:
        server.fail_next(10, status=500)
        budget = RetryPolicy(
            max_attempts=10, backoff_seconds=0.1, max_backoff_seconds=0.1, budget_seconds=0.25
        )
        started = time.monotonic()

        with pytest.raises(JobGroupsError, match="answered HTTP 500"):
            JobGroupsHook(CONN_ID, retry_policy=budget).get_job_group_status(101)

        # Waits of 0.05-0.1 s fit at most 5 attempts into 0.25 s, far fewer than the 10 allowed.
        assert time.monotonic() - started < 1
        assert 2 <= len(server.requests) <= 5

    def test_connection_errors_are_retried_then_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        monkeypatch.setenv("AIRFLOW_CONN_JG_DOWN", job_groups_connection(url))

        with pytest.raises(
            JobGroupsError, match=r"Could not reach the jobGroups API at .*: ConnectionError"
        ) as info:
            JobGroupsHook("jg_down", retry_policy=FAST_RETRIES).run_job_group({"wrangledDataset": {"id": 4}})

        assert info.value.url == f"{url}/v4/jobGroups"
        assert isinstance(info.value.__cause__, Exception)

    def test_a_post_that_timed_out_is_not_retried(
        self, server: JobGroupsServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_JG_SLOW", job_groups_connection(server.base_url, timeout=0.1))
        server.answer_next(server.raw(201, b'{"id": 5}', "application/json", delay_seconds=0.5))

        with pytest.raises(JobGroupsError, match="may have started anyway"):
            JobGroupsHook("jg_slow", retry_policy=FAST_RETRIES).run_job_group({"wrangledDataset": {"id": 4}})

        assert len(server.requests) == 1

    def test_a_body_that_is_not_json_is_quoted_briefly(self, server: JobGroupsServer) -> None:
        page = (
            b"<html><head><title>Gateway login</title></head><body>" + b"Please sign in. " * 100 + b"</body>"
        )
        server.answer_next(server.raw(200, page))

        with pytest.raises(JobGroupsError, match="with a body that is not JSON") as info:
            hook().get_job_group_status(101)

        quoted = str(info.value).split("not JSON: ", 1)[1]
        assert quoted.startswith("'<html><head><title>Gateway login</title>")
        assert len(quoted) <= 200 + 2  # the excerpt and its quotes

    @pytest.mark.parametrize(
        ("answer", "call", "message"),
        [
            pytest.param(
                b'{"reason": "JobStarted"}', "start", "without a job group id", id="start-without-id"
            ),
            pytest.param(b'{"id": "101"}', "start", "without a job group id", id="start-with-text-id"),
            pytest.param(b'{"status": "Complete"}', "status", "not a status", id="status-object"),
        ],
    )
    def test_an_unexpected_answer_is_quoted(
        self, server: JobGroupsServer, answer: bytes, call: str, message: str
    ) -> None:
        server.answer_next(server.raw(201 if call == "start" else 200, answer, "application/json"))
        client = hook()

        with pytest.raises(JobGroupsError, match=message) as info:
            if call == "start":
                client.run_job_group({"wrangledDataset": {"id": 4}})
            else:
                client.get_job_group_status(101)

        assert repr(answer.decode()) in str(info.value)

    def test_an_error_body_echoing_the_token_is_masked(self, server: JobGroupsServer) -> None:
        server.answer_next(server.raw(400, f"bad request, token={TOKEN}".encode()))

        with pytest.raises(JobGroupsError, match=r"answered HTTP 400: 'bad request, token=\*\*\*'") as info:
            hook().run_job_group({"wrangledDataset": {"id": 4}})

        assert TOKEN not in str(info.value)

    def test_test_connection_succeeds(self, server: JobGroupsServer) -> None:
        ok, message = hook().test_connection()

        assert ok, message
        assert server.base_url in message
        [request] = server.requests
        assert (request.method, request.path) == ("GET", "/v4/jobGroups?limit=1")
        assert request.header("Authorization") == f"Bearer {TOKEN}"

    def test_test_connection_reports_a_rejected_token(
        self, server: JobGroupsServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_JG_WRONG", job_groups_connection(server.base_url, token="wrong-token-123")
        )

        ok, message = JobGroupsHook("jg_wrong").test_connection()

        assert not ok
        assert "rejected the access token (HTTP 401)" in message
        assert "wrong-token-123" not in message

    @pytest.mark.parametrize(
        ("host", "message"),
        [
            pytest.param("http://127.0.0.1:{closed_port}", "Could not reach", id="down"),
            pytest.param("www.example.com", "must start with http", id="no-scheme"),
        ],
    )
    def test_test_connection_reports_a_broken_connection(
        self, monkeypatch: pytest.MonkeyPatch, host: str, message: str
    ) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_JG_BROKEN", job_groups_connection(host.format(closed_port=closed_port()))
        )

        ok, reason = JobGroupsHook("jg_broken").test_connection()

        assert not ok
        assert message in reason

    def test_reads_the_connection_on_first_use_not_in_init(self) -> None:
        client = JobGroupsHook("jg_not_defined")

        with pytest.raises(AirflowNotFoundException, match="jg_not_defined"):
            client.run_job_group({"wrangledDataset": {"id": 4}})


class TestFlowWebhookOperatorArguments:
    def test_body_defaults_to_the_wrangled_dataset(self) -> None:
        operator = FlowWebhookOperator(task_id="start", wrangled_dataset_id=4)

        assert operator.request_body() == {"wrangledDataset": {"id": 4}}
        assert operator.job_groups_conn_id == CONN_ID

    def test_a_full_body_is_sent_as_given(self) -> None:
        body = {"wrangledDataset": {"id": 4}, "overrides": {"execution": "photon"}}

        assert FlowWebhookOperator(task_id="start", body=body).request_body() == body

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            pytest.param({}, "wrangled_dataset_id", id="neither"),
            pytest.param(
                {"wrangled_dataset_id": 4, "body": {"wrangledDataset": {"id": 4}}}, "body", id="both"
            ),
            pytest.param({"wrangled_dataset_id": 0}, "wrangled_dataset_id", id="zero-id"),
            pytest.param({"wrangled_dataset_id": 4, "poll_interval": 0}, "poll_interval", id="zero-poll"),
            pytest.param({"wrangled_dataset_id": 4, "timeout": -1}, "timeout", id="negative-timeout"),
            pytest.param({"wrangled_dataset_id": 4, "token": TOKEN}, "token", id="token"),
        ],
    )
    def test_refuses_wrong_arguments(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(InvalidWebhookDefinition, match="task 'start'") as info:
            FlowWebhookOperator(task_id="start", **kwargs)

        assert (info.value.webhook, info.value.field) == ("start", field)
        assert TOKEN not in str(info.value)

    def test_a_token_argument_says_where_the_token_belongs(self) -> None:
        with pytest.raises(InvalidWebhookDefinition, match=r"Access token \(Password\) field"):
            FlowWebhookOperator(task_id="start", wrangled_dataset_id=4, access_token=TOKEN)

    def test_a_rendered_id_that_is_not_a_number_is_refused(self) -> None:
        operator = FlowWebhookOperator(task_id="start", wrangled_dataset_id="{{ params.recipe }}")
        operator.wrangled_dataset_id = "four"

        with pytest.raises(InvalidWebhookDefinition, match="must be a positive integer"):
            operator.request_body()


@dataclass(frozen=True)
class TaskRun:
    """One call of the Task SDK's in-process task runner, as ``dag.test()`` makes it."""

    task_id: str
    state: str
    message: object
    error: BaseException | None


@pytest.fixture
def task_runs(monkeypatch: pytest.MonkeyPatch) -> list[TaskRun]:
    """Record each task run ``dag.test()`` makes: its end state, its message to the supervisor, its error."""
    runs: list[TaskRun] = []
    run_task_in_process = supervisor.run_task_in_process

    def recording(ti: Any, task: Any, **options: Any) -> Any:
        # Airflow 3.3 passes a ``client`` too; 3.2's runner takes none.
        result = run_task_in_process(ti=ti, task=task, **options)
        runs.append(TaskRun(ti.task_id, result.state, result.msg, result.error))
        return result

    monkeypatch.setattr(supervisor, "run_task_in_process", recording)
    return runs


def operator_dag(dag_id: str, **operator_kwargs: Any) -> str:
    """Return the source of a DAG with one FlowWebhookOperator, ``start_job``."""
    arguments = "".join(f"{name}={value!r}, " for name, value in operator_kwargs.items())
    return textwrap.dedent(
        f"""\
        import datetime

        from airflow.sdk import DAG

        from airflow_webhook_provider.core.retry import RetryPolicy
        from airflow_webhook_provider.operators.flow_webhook import FlowWebhookOperator

        with DAG(
            {dag_id!r},
            schedule=None,
            start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
            params={{"recipe_id": 4}},
        ) as dag:
            FlowWebhookOperator(task_id="start_job", job_groups_conn_id={CONN_ID!r}, {arguments})
        """
    )


def run_start_job(dag_file: Any, **operator_kwargs: Any) -> Any:
    """Run a one-operator DAG through ``dag.test()``; return the ``start_job`` task instance.

    A wait is bounded to 5 s unless the test sets ``timeout``, so a broken wait cannot hang the run.
    """
    operator_kwargs.setdefault("timeout", 5)
    module = dag_file(operator_dag("chain_job", api_retry_policy=FAST_RETRIES, **operator_kwargs))
    dag_run = module.dag.test()
    return dag_run.get_task_instance("start_job")


class TestFlowWebhookOperatorInDagTest:
    def test_starts_the_job_and_pushes_its_id(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        ti = run_start_job(dag_file, wrangled_dataset_id=4)

        assert ti.state == TaskInstanceState.SUCCESS
        assert ti.xcom_pull(task_ids="start_job") == 101
        [request] = server.requests
        assert (request.method, request.path) == ("POST", "/v4/jobGroups")
        assert request.header("Authorization") == f"Bearer {TOKEN}"
        assert request.header("Content-Type") == "application/json"
        assert request.json() == {"wrangledDataset": {"id": 4}}

    def test_renders_a_templated_id_and_body(self, server: JobGroupsServer, dag_file: Any) -> None:
        ti = run_start_job(
            dag_file, body={"wrangledDataset": {"id": 4}, "runParameters": {"run": "{{ dag_run.dag_id }}"}}
        )

        assert ti.state == TaskInstanceState.SUCCESS
        assert server.requests[0].json() == {
            "wrangledDataset": {"id": 4},
            "runParameters": {"run": "chain_job"},
        }

        ti = run_start_job(dag_file, wrangled_dataset_id="{{ params.recipe_id }}")

        assert ti.state == TaskInstanceState.SUCCESS
        assert server.requests[1].json() == {"wrangledDataset": {"id": 4}}

    def test_waits_for_complete(self, server: JobGroupsServer, dag_file: Any) -> None:
        ti = run_start_job(dag_file, wrangled_dataset_id=4, wait_for_completion=True, poll_interval=0.05)

        assert ti.state == TaskInstanceState.SUCCESS
        assert ti.xcom_pull(task_ids="start_job") == 101
        assert (
            len(server.requests_to("GET", "/v4/jobGroups/101/status")) == 3
        )  # Created, InProgress, Complete

    @pytest.mark.parametrize("final_status", ["Failed", "Canceled"])
    def test_fails_when_the_job_group_fails(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun], final_status: str
    ) -> None:
        server.final_status = final_status

        ti = run_start_job(dag_file, wrangled_dataset_id=4, wait_for_completion=True, poll_interval=0.05)

        assert ti.state == TaskInstanceState.FAILED
        [run] = task_runs
        assert isinstance(run.error, JobGroupFailed)
        assert str(run.error) == f"Job group 101 ended with status '{final_status}'"

    def test_fails_when_the_wait_times_out(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        server.final_status = None

        ti = run_start_job(
            dag_file, wrangled_dataset_id=4, wait_for_completion=True, poll_interval=0.05, timeout=0.3
        )

        assert ti.state == TaskInstanceState.FAILED
        [run] = task_runs
        assert type(run.error) is JobGroupsError
        assert "Job group 101 did not finish within 0.3 s (last status 'InProgress')" in str(run.error)

    def test_fails_on_a_rejected_token(
        self,
        server: JobGroupsServer,
        dag_file: Any,
        task_runs: list[TaskRun],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            job_groups_connection(server.base_url, token="revoked-token-99"),
        )

        ti = run_start_job(dag_file, wrangled_dataset_id=4)

        assert ti.state == TaskInstanceState.FAILED
        [run] = task_runs
        assert isinstance(run.error, JobGroupsAuthError)
        assert "rejected the access token (HTTP 401)" in str(run.error)
        assert "revoked-token-99" not in str(run.error)

    def test_fails_on_an_unknown_wrangled_dataset(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        ti = run_start_job(dag_file, wrangled_dataset_id=99)

        assert ti.state == TaskInstanceState.FAILED
        [run] = task_runs
        assert isinstance(run.error, JobGroupsNotFound)
        assert "wrangled dataset 99" in str(run.error)

    def test_retries_5xx_until_the_job_starts(self, server: JobGroupsServer, dag_file: Any) -> None:
        server.fail_next(2, status=503)

        ti = run_start_job(dag_file, wrangled_dataset_id=4)

        assert ti.state == TaskInstanceState.SUCCESS
        assert ti.xcom_pull(task_ids="start_job") == 101
        assert [r.method for r in server.requests] == ["POST"] * 3


class TestFlowWebhookOperatorDeferred:
    def test_defers_then_completes(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        ti = run_start_job(
            dag_file, wrangled_dataset_id=4, wait_for_completion=True, deferrable=True, poll_interval=0.05
        )

        assert ti.state == TaskInstanceState.SUCCESS
        assert ti.xcom_pull(task_ids="start_job") == 101
        deferred, resumed = task_runs
        assert deferred.state == TaskInstanceState.DEFERRED
        assert isinstance(deferred.message, DeferTask)
        assert deferred.message.classpath == "airflow_webhook_provider.triggers.job_group.JobGroupTrigger"
        assert deferred.message.next_method == "execute_complete"
        assert resumed.state == TaskInstanceState.SUCCESS
        # The worker started the job and deferred; the trigger read Created, InProgress, Complete.
        assert [(r.method, r.path) for r in server.requests] == [
            ("POST", "/v4/jobGroups"),
            *[("GET", "/v4/jobGroups/101/status")] * 3,
        ]

    @pytest.mark.parametrize("final_status", ["Failed", "Canceled"])
    def test_defers_then_fails(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun], final_status: str
    ) -> None:
        server.final_status = final_status

        ti = run_start_job(
            dag_file, wrangled_dataset_id=4, wait_for_completion=True, deferrable=True, poll_interval=0.05
        )

        assert ti.state == TaskInstanceState.FAILED
        deferred, resumed = task_runs
        assert deferred.state == TaskInstanceState.DEFERRED
        assert isinstance(resumed.error, JobGroupFailed)
        assert str(resumed.error) == f"Job group 101 ended with status '{final_status}'"

    def test_defers_then_times_out(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        server.final_status = None

        ti = run_start_job(
            dag_file,
            wrangled_dataset_id=4,
            wait_for_completion=True,
            deferrable=True,
            poll_interval=0.05,
            timeout=0.3,
        )

        assert ti.state == TaskInstanceState.FAILED
        deferred, resumed = task_runs
        assert deferred.state == TaskInstanceState.DEFERRED
        assert type(resumed.error) is JobGroupsError
        assert "Job group 101 did not finish within 0.3 s (last status 'InProgress')" in str(resumed.error)


def first_event(trigger: JobGroupTrigger) -> dict[str, Any]:
    """Run a trigger until its first event (at most 10 s) and return the payload."""

    async def first() -> Any:
        return await asyncio.wait_for(anext(trigger.run()), timeout=10)

    return dict(asyncio.run(first()).payload)


class TestJobGroupTrigger:
    def trigger(self, **kwargs: Any) -> JobGroupTrigger:
        defaults: dict[str, Any] = {
            "job_group_id": 101,
            "end_time": time.time() + 5,
            "job_groups_conn_id": CONN_ID,
            "poll_interval": 0.05,
            "retry_policy": {"max_attempts": 3, "backoff_seconds": 0.01},
        }
        return JobGroupTrigger(**{**defaults, **kwargs})

    def start_job(self) -> int:
        return int(hook().run_job_group({"wrangledDataset": {"id": 4}})["id"])

    def test_serialize_round_trip(self) -> None:
        trigger = self.trigger(end_time=1_900_000_000.5)

        classpath, kwargs = trigger.serialize()
        rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))

        assert classpath == "airflow_webhook_provider.triggers.job_group.JobGroupTrigger"
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs == {
            "job_group_id": 101,
            "end_time": 1_900_000_000.5,
            "job_groups_conn_id": CONN_ID,
            "poll_interval": 0.05,
            "retry_policy": {"max_attempts": 3, "backoff_seconds": 0.01},
        }
        assert json.loads(json.dumps(kwargs)) == kwargs

    def test_fires_complete(self, server: JobGroupsServer) -> None:
        job_group_id = self.start_job()

        event = first_event(self.trigger(job_group_id=job_group_id))

        assert event == {
            "job_group_id": job_group_id,
            "status": "Complete",
            "outcome": "complete",
            "message": f"Job group {job_group_id} is Complete",
        }
        statuses = server.requests_to("GET", f"/v4/jobGroups/{job_group_id}/status")
        assert len(statuses) == 3
        assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in statuses)

    @pytest.mark.parametrize("final_status", ["Failed", "Canceled"])
    def test_fires_failed(self, server: JobGroupsServer, final_status: str) -> None:
        server.final_status = final_status
        job_group_id = self.start_job()

        event = first_event(self.trigger(job_group_id=job_group_id))

        assert (event["outcome"], event["status"]) == ("failed", final_status)

    def test_fires_timeout_at_end_time(self, server: JobGroupsServer) -> None:
        server.final_status = None
        job_group_id = self.start_job()
        started = time.time()

        event = first_event(self.trigger(job_group_id=job_group_id, end_time=started + 0.3))

        assert (event["outcome"], event["status"]) == ("timeout", "InProgress")
        assert 0.3 <= time.time() - started < 2

    def test_retries_5xx_while_polling(self, server: JobGroupsServer) -> None:
        job_group_id = self.start_job()
        server.fail_next(2, status=503)

        event = first_event(self.trigger(job_group_id=job_group_id))

        assert event["outcome"] == "complete"
        assert len(server.requests_to("GET", f"/v4/jobGroups/{job_group_id}/status")) == 5

    @pytest.mark.parametrize(
        ("job_group_id", "token", "error", "status_code"),
        [
            pytest.param(101, "wrong-token-5678", "JobGroupsAuthError", 401, id="401"),
            pytest.param(999, TOKEN, "JobGroupsNotFound", 404, id="404"),
        ],
    )
    def test_fires_error(
        self,
        server: JobGroupsServer,
        monkeypatch: pytest.MonkeyPatch,
        job_group_id: int,
        token: str,
        error: str,
        status_code: int,
    ) -> None:
        self.start_job()
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", job_groups_connection(server.base_url, token=token)
        )

        event = first_event(self.trigger(job_group_id=job_group_id))

        assert (event["outcome"], event["error"], event["status_code"]) == ("error", error, status_code)
        assert event["url"] == f"{server.base_url}/v4/jobGroups/{job_group_id}/status"
        assert token not in event["message"]

    def test_operator_turns_an_error_event_into_the_same_exception(self) -> None:
        operator = FlowWebhookOperator(task_id="start", wrangled_dataset_id=4)
        event = {
            "job_group_id": 101,
            "status": None,
            "outcome": "error",
            "message": "rejected",
            "error": "JobGroupsAuthError",
            "status_code": 401,
            "url": "http://x/v4/jobGroups/101/status",
        }

        with pytest.raises(JobGroupsAuthError, match="rejected") as info:
            operator.execute_complete({}, event)  # type: ignore[arg-type]

        assert (info.value.status_code, info.value.url) == (401, "http://x/v4/jobGroups/101/status")


class TestExampleChainJobsDag:
    def load(self, dag_file: Any) -> Any:
        module = dag_file((REPO / "dags" / "example_chain_jobs.py").read_text())
        # The example polls every 30 s and waits up to a day, like a real deployment; a test cannot.
        start_job_b = module.chain_jobs.get_task("start_job_b")
        start_job_b.poll_interval, start_job_b.timeout = 0.05, 5
        return module.chain_jobs

    def test_starts_job_b_when_job_a_succeeded(
        self, server: JobGroupsServer, dag_file: Any, task_runs: list[TaskRun]
    ) -> None:
        dag_run = self.load(dag_file).test()

        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
        assert states == {
            "job_a_output": TaskInstanceState.SUCCESS,
            "start_job_b": TaskInstanceState.SUCCESS,
            "start_recovery_job": TaskInstanceState.SKIPPED,
        }
        assert dag_run.state == "success"
        assert [r.json() for r in server.requests_to("POST", "/v4/jobGroups")] == [
            {"wrangledDataset": {"id": 4}}
        ]
        assert [run.state for run in task_runs if run.task_id == "start_job_b"] == [
            TaskInstanceState.DEFERRED,
            TaskInstanceState.SUCCESS,
        ]

    def test_starts_the_recovery_job_when_job_a_failed(
        self, server: JobGroupsServer, dag_file: Any, receiver: Any, connect: Any
    ) -> None:
        server.known_datasets.add(5)
        connect("slack_webhook")

        dag_run = self.load(dag_file).test(run_conf={"simulate_failure": True})

        # The Slack-style webhooks: one for the failed run, one for job B that never started.
        receiver.wait_for(2, timeout=30)
        texts = sorted(json.loads(r.body)["text"] for r in receiver.wait_for(3, timeout=1))
        assert texts == [
            f"Job B of {dag_run.run_id} did not complete: start_job_b is upstream_failed. "
            f"http://127.0.0.1:8080/dags/example_chain_jobs/runs/{quote(dag_run.run_id, safe='')}",
            f"Job {dag_run.run_id} has completed. Status: failed.",
        ]
        assert all(r.signature_valid for r in receiver.requests)

        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
        assert states == {
            "job_a_output": TaskInstanceState.FAILED,
            "start_job_b": TaskInstanceState.UPSTREAM_FAILED,
            "start_recovery_job": TaskInstanceState.SUCCESS,
        }
        assert [r.json() for r in server.requests_to("POST", "/v4/jobGroups")] == [
            {"wrangledDataset": {"id": 5}}
        ]
