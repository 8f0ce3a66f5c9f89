"""
The package as a user gets it: the generated reference page, and the maintenance DAG that
reaches Airflow from the installed package through a DAG bundle, without a copied file.

The build itself (sdist, wheel, ``twine check --strict``, the wheel's contents) is
``scripts/build-check.sh``, run by ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_webhook_provider import maintenance
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.identity import random_delivery_id
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.pipeline import message_for
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import REPO, flow_webhook_connection

REFERENCE_SCRIPT = REPO / "scripts" / "reference.py"
REFERENCE_PAGE = REPO / "docs" / "reference.md"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
DAGS_FOLDER_BUNDLE = {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}}


def reference(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REFERENCE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def printed_bundle_entry() -> dict[str, object]:
    """Run ``python -m airflow_webhook_provider.maintenance`` as a user would; return the entry it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow_webhook_provider.maintenance"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entry: dict[str, object] = json.loads(done.stdout)  # the whole of stdout is the entry
    return entry


class TestReferencePage:
    def test_the_committed_page_is_what_the_package_generates(self):
        done = reference("--check")
        assert done.returncode == 0, f"docs/reference.md is stale; run scripts/reference.py\n{done.stderr}"

    def test_check_fails_on_a_hand_edited_page_and_shows_the_edit(self, tmp_path):
        page = tmp_path / "reference.md"
        assert reference("--output", str(page)).returncode == 0
        generated = page.read_text()
        assert reference("--check", "--output", str(page)).returncode == 0

        page.write_text(
            generated.replace(
                "| `max_webhooks_per_flow` | integer | `50` |",
                "| `max_webhooks_per_flow` | integer | `500` |",
            )
        )
        done = reference("--check", "--output", str(page))
        assert done.returncode == 1
        assert f"{page} is stale" in done.stderr
        assert "-| `max_webhooks_per_flow` | integer | `500` |" in done.stderr
        assert "+| `max_webhooks_per_flow` | integer | `50` |" in done.stderr

        assert reference("--output", str(page)).returncode == 0  # rewriting it repairs it
        assert page.read_text() == generated

    def test_the_page_covers_what_airflow_reads_from_the_provider(self):
        from airflow_webhook_provider.get_provider_info import get_provider_info

        info = get_provider_info()
        page = REFERENCE_PAGE.read_text()
        for section, spec in info["config"].items():
            assert f"### `[{section}]`" in page
            missing = [option for option in spec["options"] if f"| `{option}` |" not in page]
            assert missing == [], f"options missing from the page: {missing}"
        for connection in info["connection-types"]:
            assert f"(`{connection['connection-type']}`)" in page
            missing = [extra for extra in connection.get("conn-fields", {}) if f"| `{extra}` |" not in page]
            assert missing == [], f"{connection['connection-type']} extras missing from the page: {missing}"
        for path in info["notifications"]:
            assert f"### `{path.rpartition('.')[2]}`" in page
        for heading in ("## Callbacks and notifier", "## Operators", "## Command line", "## Maintenance DAG"):
            assert heading in page
        for command in ("dispatcher", "deliveries list", "redeliver", "doctor", "validate"):
            assert f"### `airflow flow-webhooks {command}`" in page


class TestMaintenanceBundleEntry:
    def test_the_module_prints_an_entry_airflow_accepts(self, monkeypatch):
        from airflow.dag_processing.bundles.local import LocalDagBundle
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        entry = printed_bundle_entry()
        assert entry == {
            "name": "flow-webhook-maintenance",
            "classpath": LOCAL_BUNDLE,
            "kwargs": {"path": str(maintenance.FOLDER)},
        }
        monkeypatch.setenv(
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([DAGS_FOLDER_BUNDLE, entry])
        )
        bundle = DagBundlesManager().get_bundle("flow-webhook-maintenance")
        assert isinstance(bundle, LocalDagBundle)
        assert bundle.path == maintenance.FOLDER

    @pytest.mark.parametrize("document", ["README.md", "docs/reference.md"])
    def test_the_documented_commands_configure_both_bundles(self, document):
        """The page's shell lines, run as written, set a config list holding both bundles."""
        text = (REPO / document).read_text()
        block = text[text.index("entry=$(python -m airflow_webhook_provider.maintenance)") :]
        setup = "\n".join(block.splitlines()[:2])  # entry=..., export ...
        done = subprocess.run(
            ["bash", "-c", f'{setup}\nprintf %s "$AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"'],
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout) == [DAGS_FOLDER_BUNDLE, maintenance.bundle_entry()]

    @pytest.mark.parametrize("syntax", ["glob", "regexp"])
    # Airflow's glob syntax builds on a pattern class that pathspec deprecates.
    @pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")
    def test_only_the_dag_file_of_the_folder_is_parsed(self, monkeypatch, syntax):
        from airflow.utils.file import list_py_file_paths

        monkeypatch.setenv("AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX", syntax)
        # Not even the heuristic that skips files without "dag" and "airflow" is needed.
        found = list_py_file_paths(maintenance.FOLDER, safe_mode=False)
        assert found == [str(maintenance.DAG_FILE)]


USER_DAG = """
import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False)
def user_pipeline():
    @task
    def work():
        return 1

    work()


user_pipeline()
"""


@pytest.mark.airflow_components
def test_a_deployment_runs_the_maintenance_dag_from_the_installed_package(tmp_path, receiver, own_ledger):
    """The dags-folder bundle plus the printed entry: the DAG is parsed, scheduled and run, nothing copied.

    A message the ledger holds (as one only a listener captured would be) is what the run sends.
    """
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "user_pipeline.py").write_text(USER_DAG)
    missed = message_for(
        FlowWebhook(name="missed", conn_id="receiver"),
        JobEvent(flow_id="user_pipeline", job_id="manual__marked_by_hand", job_status="failed"),
        clear_number=0,
        capture=CaptureSource.LISTENER,
        delivery_id=random_delivery_id(),
    )
    own_ledger.record([missed])
    env = {
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [DAGS_FOLDER_BUNDLE, printed_bundle_entry()]
        ),
        "AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/maintenance")),
        # The test's own ledger, for the task that the maintenance DAG runs.
        **{
            name: os.environ[name]
            for name in ("AIRFLOW_CONN_FLOW_WEBHOOK_TEST_LEDGER", "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID")
        },
    }
    with AirflowDeployment(tmp_path, dags, extra_env=env) as airflow:
        airflow.start("api-server", "scheduler", "dag-processor")
        details = airflow.wait_for_dag("flow_webhook_redelivery", timeout=240)
        user_dag = airflow.wait_for_dag("user_pipeline", timeout=120)
        run_id = airflow.trigger("flow_webhook_redelivery")
        state = airflow.wait_for_run("flow_webhook_redelivery", run_id, timeout=300)
        import_errors = airflow.api("GET", "/api/v2/importErrors").json()["import_errors"]
        (request,) = receiver.wait_for(1, timeout=60)

    assert (details["bundle_name"], details["relative_fileloc"]) == (
        "flow-webhook-maintenance",
        "flow_webhook_redelivery.py",
    )
    assert Path(details["fileloc"]) == maintenance.DAG_FILE
    assert details["tags"] and {tag["name"] for tag in details["tags"]} == {"flow-webhook", "maintenance"}
    assert user_dag["bundle_name"] == "dags-folder"
    assert sorted(path.name for path in dags.glob("*.py")) == ["user_pipeline.py"]  # nothing copied in
    assert import_errors == []
    assert state == "success"
    assert request.delivery_id == missed.id
    assert request.signature_valid
    assert json.loads(request.body)["jobId"] == "manual__marked_by_hand"
    delivered = own_ledger.get(missed.id)
    assert delivered is not None and delivered.state == "delivered"
