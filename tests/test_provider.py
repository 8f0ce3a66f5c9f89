"""Provider registration as Airflow's own providers manager and CLI report it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_webhook_provider import __version__


def airflow_cli_json(*args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "-o", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        check=True,
    )
    # The Airflow CLI may print warnings on stdout before the JSON document.
    return json.loads(done.stdout[done.stdout.index("[") :])


@pytest.fixture(scope="module")
def providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_list_shows_the_package():
    rows = airflow_cli_json("providers", "list")
    (ours,) = [row for row in rows if row["package_name"] == "airflow-webhook-provider"]
    assert ours["version"] == __version__  # the one place the version is set


def test_providers_hooks_binds_the_connection_types():
    rows = {row["connection_type"]: row for row in airflow_cli_json("providers", "hooks")}
    assert rows["flow_webhook"]["class"] == "airflow_webhook_provider.hooks.flow_webhook.FlowWebhookHook"
    assert rows["flow_webhook"]["hook_name"] == "Flow Webhook"
    assert rows["flow_webhook"]["conn_id_attribute_name"] == "flow_webhook_conn_id"
    assert rows["job_groups"]["class"] == "airflow_webhook_provider.hooks.job_groups.JobGroupsHook"
    assert rows["job_groups"]["hook_name"] == "Job Groups API"


def test_connection_form_fields(providers_manager):
    widgets = {
        name.removeprefix("extra__flow_webhook__"): widget.field
        for name, widget in providers_manager.connection_form_widgets.items()
        if name.startswith("extra__flow_webhook__")
    }
    assert set(widgets) == {
        "method",
        "headers",
        "validate_ssl",
        "ca_bundle",
        "client_cert",
        "client_key",
        "signature_scheme",
        "previous_secret",
        "previous_secret_expires",
        "retry_on_failure",
        "max_concurrency",
        "rate_limit_per_minute",
        "timeout",
    }
    assert widgets["max_concurrency"]["value"] == 10
    assert widgets["method"]["schema"]["title"] == "Method"
    assert widgets["method"]["value"] == "POST"
    assert widgets["method"]["schema"]["enum"] == ["POST", "PUT", "PATCH", "GET", "DELETE"]
    assert widgets["headers"]["schema"]["title"] == "Headers"
    assert widgets["validate_ssl"]["schema"]["title"] == "Validate SSL certificate"
    assert widgets["validate_ssl"]["value"] is True
    assert widgets["retry_on_failure"]["schema"]["title"] == "Retry on failure"
    assert widgets["retry_on_failure"]["value"] is True
    assert widgets["timeout"]["schema"]["title"] == "Timeout seconds"
    assert widgets["timeout"]["value"] == 30


def test_connection_form_behaviour(providers_manager):
    behaviour = providers_manager.field_behaviours["flow_webhook"]
    assert behaviour["relabeling"] == {"host": "URL", "password": "Secret key"}
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}


def test_provider_config_defaults_reach_airflow():
    from airflow.sdk.configuration import conf

    assert conf.getint("flow_webhook", "max_webhooks_per_flow") == 50
    assert conf.getfloat("flow_webhook", "retry_budget_seconds") == 30


def test_the_connection_is_testable():
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["flow_webhook"]
    assert hook_info is not None
    assert hook_info.connection_testable
