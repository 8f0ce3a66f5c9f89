"""The DAG's Webhooks tab and its HTTP API, on a real API server, scheduler, DAG processor and dispatcher.

One DAG attaches one webhook in its file (``from-code``). In headless Chromium an admin
opens the DAG's Webhooks tab, creates a webhook in the form, tests it (the receiver gets
that webhook's own body, signed), and the next run sends both webhooks; an edit changes
what the next run sends, a delete stops it. Invalid definitions are refused beside their
field. Through the API: an import with one bad entry applies nothing, a read-only user
gets 403 on every change, a browser request without the pages' header is refused, and
every change leaves an audit row. The command line tests a code-defined webhook, imports
a file and exports both kinds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_webhook_provider.face.plugins.page import CSRF_HEADER, CSRF_VALUE
from airflow_webhook_provider.ledger import Delivery, Ledger
from airflow_webhook_provider.receiver import ReceivedRequest, RecordingReceiver
from tests.airflow_deployment import AirflowDeployment, until
from tests.conftest import REPO, SECRET, flow_webhook_connection
from tests.test_ui import _chrome, _log_in

SCREENSHOTS = REPO / "test-output" / "dag-webhooks-tab"
DAG_ID = "dag_tab_etl"
DAG = f"""
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG({DAG_ID!r}, schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
         catchup=False) as dag:
    @task
    def extract():
        return 1

    @task
    def load(value):
        return value

    load(extract())

FlowWebhooks(FlowWebhook(name="from-code", conn_id="receiver", on="success")).attach(dag)
"""
UI_BODY = '{"who": "ui", "job": "$jobId", "status": "$jobStatus"}'
EDITED_BODY = '{"who": "ui-edited", "job": "$jobId", "status": "$jobStatus"}'


@dataclass
class Tab:
    airflow: AirflowDeployment
    ledger: Ledger
    receiver: RecordingReceiver

    @property
    def api(self) -> str:
        return f"{self.airflow.api_url}/flow-webhooks/api/v1/dags/{DAG_ID}"

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.airflow.token(user, self.airflow.passwords[user])}"}

    def call(self, user: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.api}{path}", headers=self.bearer(user), timeout=60, **kwargs)

    def run(self) -> tuple[str, dict[str, Delivery]]:
        """Trigger the DAG, wait for it and for its messages to settle; return its deliveries by webhook."""
        run_id = self.airflow.trigger(DAG_ID)
        assert self.airflow.wait_for_run(DAG_ID, run_id, timeout=180) == "success"

        def settled() -> dict[str, Delivery] | None:
            rows = self.ledger.deliveries(dag_id=DAG_ID, run_id=run_id, limit=None)
            done = rows and all(row.state == "delivered" for row in rows)
            return {row.webhook: row for row in rows} if done else None

        time.sleep(2)  # the listeners' run-end capture lands just after the run's state
        return run_id, until(settled, 60, f"the messages of {run_id} delivered")

    def received(self, delivery_id: str) -> ReceivedRequest:
        (request,) = [r for r in self.receiver.requests if r.delivery_id == delivery_id]
        return request


@pytest.fixture(scope="module")
def tab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tab]:
    base = tmp_path_factory.mktemp("dag-webhooks-tab")
    dags_folder = base / "dags"
    dags_folder.mkdir()
    (dags_folder / f"{DAG_ID}.py").write_text(DAG)
    with RecordingReceiver(secret=SECRET) as receiver:
        env = {"AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/hook"))}
        with AirflowDeployment(
            base, dags_folder, users="admin:admin,viewer:viewer", extra_env=env
        ) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor", "dispatcher")
            airflow.wait_for_dag(DAG_ID, timeout=180)
            result = Tab(airflow, Ledger.open(f"sqlite:///{airflow.home / 'flow_webhooks.db'}"), receiver)
            # A first run records the DAG file's webhooks, so the tab lists them.
            _, first = result.run()
            assert set(first) == {"from-code"}
            yield result


class TestMarkup:
    """The page's markup, rendered without a server."""

    @staticmethod
    def _render(**changes: Any) -> str:
        from airflow_webhook_provider.delivery.pipeline import DeliveryMode
        from airflow_webhook_provider.face.plugins.rendering import render

        context: dict[str, Any] = {
            "theme": None,
            "static_base": "/flow-webhooks/static",
            "csrf_header": CSRF_HEADER,
            "csrf_value": CSRF_VALUE,
            "dag_id": "etl",
            "api": "/flow-webhooks/api/v1/dags/etl",
            "run_url": lambda run_id: f"/flow-webhooks/run?dag_id=etl&run_id={quote(run_id)}",
            "mode": DeliveryMode(dispatchers=(), stale_seconds=30.0),
            "code_rows": [],
            "ui_rows": [],
            "file_recorded": True,
            "limit": 50,
            "count": 0,
            "can_edit": True,
            "connections": [],
            "task_ids": [],
            "triggers": ("success", "failure", "any"),
            "methods": ("GET", "POST"),
            "history": [],
        }
        context.update(changes)
        return render("dag.html", **context)

    def test_escapes_what_authors_and_users_control(self) -> None:
        from airflow_webhook_provider.face.catalog import WebhookItem
        from airflow_webhook_provider.face.plugins.dag_tab import WebhookRow

        payload = '<img src=x onerror="alert(1)">'
        item = WebhookItem(
            name=payload,
            source="ui",
            definition={"name": payload, "conn_id": payload, "body": payload, "outputs": [payload]},
            version=1,
            origin=payload,
            updated_at=None,
            updated_by=payload,
        )
        page = self._render(
            dag_id=payload, ui_rows=[WebhookRow(item, None, None)], connections=[payload], task_ids=[payload]
        )
        assert "<img" not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page

    def test_rows_say_what_each_webhook_sends_on(self) -> None:
        from airflow_webhook_provider.face.catalog import WebhookItem
        from airflow_webhook_provider.face.plugins.dag_tab import WebhookRow

        def row(**definition: Any) -> WebhookRow:
            item = WebhookItem("w", "code", {"name": "w", **definition}, None, "DAG file", None, None)
            return WebhookRow(item, None, None)

        assert (row().trigger, row().outputs, row().method) == ("success or failure", "the run", "POST")
        assert row(on="late", late_after="PT15S").trigger == "late: not finished PT15S after queued"
        chosen = row(on="failure", outputs=["load", "publish"], conn_id="c", method="PUT")
        assert (chosen.trigger, chosen.outputs, chosen.method, chosen.target) == (
            "failure",
            "load, publish",
            "PUT",
            "c",
        )
        assert row(conn_id="c").method == "connection's (POST)"
        assert row().status == ("queued", "no messages yet")

    def test_no_inline_code_and_changes_only_for_editors(self) -> None:
        page = self._render(can_edit=False)
        assert "<style" not in page and " style=" not in page and "onclick" not in page
        assert 'id="webhook-form"' not in page and 'id="create"' not in page
        assert "Creating one needs edit access" in page
        assert 'id="webhook-form"' in self._render(can_edit=True)


def _wait(driver: Any) -> Any:
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, 60)


def _open_dag_tab(driver: Any, tab: Tab) -> None:
    """Open the DAG's page, click its Webhooks tab and switch into the tab's frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.switch_to.default_content()
    driver.get(f"{tab.airflow.api_url}/dags/{DAG_ID}")
    _wait(driver).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, 'a[href$="/plugin/dag-webhooks"]'))
    ).click()
    frame = _wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title=Webhooks]")))
    assert driver.current_url.endswith(f"/dags/{DAG_ID}/plugin/dag-webhooks")
    driver.switch_to.frame(frame)
    _wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr[data-webhook]")))


def _fill(driver: Any, field: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.CSS_SELECTOR, f"#webhook-form [name={field}]")
    element.clear()
    element.send_keys(text)


def _row(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr[data-webhook="{name}"]')


def _save_and_reload(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    old = driver.find_element(By.CSS_SELECTOR, "main")
    driver.find_element(By.ID, "save").click()
    _wait(driver).until(ec.staleness_of(old))
    _wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-webhook="{name}"]')))


def _field_error(driver: Any, field: str) -> str:
    from selenium.webdriver.common.by import By

    def shown(d: Any) -> str | None:
        text = d.find_element(By.CSS_SELECTOR, f'#webhook-form [data-error-for="{field}"]').text
        return text or None

    return str(_wait(driver).until(shown))


@pytest.mark.airflow_components
def test_in_chromium_create_test_run_edit_and_delete_a_webhook(tab: Tab) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    driver = _chrome()
    try:
        _log_in(driver, tab, "admin")  # type: ignore[arg-type]  # needs .airflow only
        _open_dag_tab(driver, tab)
        code = _row(driver, "from-code")
        assert "DAG file" in code.text and "receiver" in code.text and "healthy" in code.text
        assert code.find_elements(By.CSS_SELECTOR, "button[data-edit]") == []  # read-only

        # Create: a webhook of its own body and header, on the run's success.
        driver.find_element(By.ID, "create").click()
        _fill(driver, "name", "tell-oncall")
        _fill(driver, "conn_id", "receiver")
        Select(driver.find_element(By.NAME, "on")).select_by_value("success")
        _fill(driver, "headers", "X-Team: data")
        _fill(driver, "body", UI_BODY)
        _screenshot(driver, "form.png")
        _save_and_reload(driver, "tell-oncall")
        created = _row(driver, "tell-oncall")
        assert "Airflow UI, version 1, by admin" in created.text

        # Test it: the receiver gets this webhook's own body and header, signed.
        before = len(tab.receiver.requests)
        created.find_element(By.CSS_SELECTOR, "button[data-test]").click()
        notice = _wait(driver).until(ec.visibility_of_element_located((By.ID, "notice")))
        _wait(driver).until(lambda d: "delivered: HTTP 200" in notice.text)
        (test,) = tab.receiver.requests[before:]
        assert json.loads(test.body) == {"who": "ui", "job": "test", "status": "test"}
        assert test.headers["X-Team"] == "data" and test.signature_valid is True
        _screenshot(driver, "tab.png")

        # A run sends the file's webhook and the UI's.
        _, sent = tab.run()
        assert set(sent) == {"from-code", "tell-oncall"}
        body = json.loads(tab.received(sent["tell-oncall"].id).body)
        assert body["who"] == "ui" and body["status"] == "success"
        assert tab.received(sent["tell-oncall"].id).signature_valid is True

        # Edit: the next run sends the edited body.
        _open_dag_tab(driver, tab)
        _row(driver, "tell-oncall").find_element(By.CSS_SELECTOR, "button[data-edit]").click()
        assert driver.find_element(By.NAME, "body").get_attribute("value") == UI_BODY
        _fill(driver, "body", EDITED_BODY)
        _save_and_reload(driver, "tell-oncall")
        assert "version 2" in _row(driver, "tell-oncall").text
        _, sent = tab.run()
        assert json.loads(tab.received(sent["tell-oncall"].id).body)["who"] == "ui-edited"

        # Delete (the first click asks): the next run does not send it.
        _open_dag_tab(driver, tab)
        delete = _row(driver, "tell-oncall").find_element(By.CSS_SELECTOR, "button[data-delete]")
        delete.click()
        assert delete.text == "Click again to delete"
        page = driver.find_element(By.CSS_SELECTOR, "main")
        delete.click()
        _wait(driver).until(ec.staleness_of(page))
        _wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-webhook="from-code"]')))
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-webhook="tell-oncall"]') == []
        _, sent = tab.run()
        assert set(sent) == {"from-code"}

        # Every change left an audit row: who, through what, which fields.
        audit = tab.ledger.definition_audit(DAG_ID, name="tell-oncall")
        assert [(r.action, r.version, r.actor, r.via) for r in audit] == [
            ("deleted", 2, "admin", "api"),
            ("updated", 2, "admin", "api"),
            ("created", 1, "admin", "api"),
        ]
        assert audit[1].changed == ["body"]
        history = driver.find_elements(By.CSS_SELECTOR, "table.history tr[data-audit]")
        actions = [row.find_elements(By.TAG_NAME, "td")[3].text for row in history[:3]]
        assert actions == ["deleted", "updated", "created"]
    finally:
        driver.quit()


@pytest.mark.airflow_components
def test_in_chromium_invalid_definitions_are_refused_beside_their_field(tab: Tab) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _chrome()
    names_before = {item["name"] for item in tab.call("admin", "GET", "/webhooks").json()["webhooks"]}
    try:
        _log_in(driver, tab, "admin")  # type: ignore[arg-type]
        _open_dag_tab(driver, tab)
        driver.find_element(By.ID, "create").click()
        _fill(driver, "name", "bad-one")
        _fill(driver, "conn_id", "receiver")

        # A body with GET.
        Select(driver.find_element(By.NAME, "method")).select_by_value("GET")
        _fill(driver, "body", '{"a": 1}')
        driver.find_element(By.ID, "save").click()
        assert "a body is sent only with POST, PUT or PATCH, not GET" in _field_error(driver, "body")

        # An unknown $reference.
        Select(driver.find_element(By.NAME, "method")).select_by_value("POST")
        _fill(driver, "body", '{"a": "$jobNmae"}')
        driver.find_element(By.ID, "save").click()
        assert "$jobNmae" in _field_error(driver, "body")

        # A connection that does not exist.
        _fill(driver, "body", '{"a": "$jobId"}')
        _fill(driver, "conn_id", "no_such_connection")
        driver.find_element(By.ID, "save").click()
        assert "no_such_connection" in _field_error(driver, "conn_id")
        _screenshot(driver, "form-errors.png")

        # The 51st webhook: the file's one and 49 from the API fill the DAG's 50.
        for index in range(49):
            made = tab.call(
                "admin", "POST", "/webhooks", json={"name": f"filler-{index:02d}", "conn_id": "receiver"}
            )
            assert made.status_code == 201, made.text
        _fill(driver, "conn_id", "receiver")
        driver.find_element(By.ID, "save").click()
        assert "would have 51 webhooks" in _field_error(driver, "name")
    finally:
        driver.quit()
        for index in range(49):
            tab.call("admin", "DELETE", f"/webhooks/filler-{index:02d}")
    names = {item["name"] for item in tab.call("admin", "GET", "/webhooks").json()["webhooks"]}
    assert names == names_before and "bad-one" not in names


@pytest.mark.airflow_components
def test_an_import_with_one_bad_entry_applies_nothing(tab: Tab) -> None:
    text = (
        "webhooks:\n"
        "  - {name: imported-a, conn_id: receiver, on: failure}\n"
        '  - {name: imported-b, conn_id: receiver, method: GET, body: "{}"}\n'
        "  - {name: imported-c, conn_id: receiver}\n"
    )
    refused = tab.call("admin", "POST", "/webhooks/import", data=text.encode())
    assert refused.status_code == 422, refused.text
    problems = refused.json()["detail"]["problems"]
    assert [(p["field"], p["webhook"]) for p in problems] == [("webhooks[1].body", "imported-b")]
    names = {item["name"] for item in tab.call("admin", "GET", "/webhooks").json()["webhooks"]}
    assert not names & {"imported-a", "imported-b", "imported-c"}
    assert tab.ledger.definition_audit(DAG_ID, name="imported-a") == []


@pytest.mark.airflow_components
def test_a_read_only_user_gets_403_on_every_change(tab: Tab) -> None:
    assert tab.call("viewer", "GET", "/webhooks").status_code == 200
    made = tab.call("admin", "POST", "/webhooks", json={"name": "guarded", "conn_id": "receiver"})
    assert made.status_code == 201, made.text
    try:
        for method, path, kwargs in [
            ("POST", "/webhooks", {"json": {"name": "sneaky", "conn_id": "receiver"}}),
            ("PATCH", "/webhooks/guarded", {"json": {"on": "failure"}}),
            ("DELETE", "/webhooks/guarded", {}),
            ("POST", "/webhooks/guarded/test", {}),
            ("POST", "/webhooks/from-code/test", {}),
            ("POST", "/webhooks/import", {"data": b"webhooks: [{name: sneaky, conn_id: receiver}]"}),
        ]:
            response = tab.call("viewer", method, path, **kwargs)
            assert response.status_code == 403, (method, path, response.text)
        guarded = tab.call("viewer", "GET", "/webhooks/guarded").json()
        assert guarded["version"] == 1 and guarded["definition"].get("on", "any") == "any"
        page = requests.get(
            f"{tab.airflow.api_url}/flow-webhooks/dag",
            params={"dag_id": DAG_ID},
            headers=tab.bearer("viewer"),
        )
        assert (
            page.status_code == 200
            and 'id="webhook-form"' not in page.text
            and "data-delete" not in page.text
        )
        # Without a session: 401; with the browser's cookie but not the pages' header: 403.
        anonymous = requests.post(
            f"{tab.api}/webhooks", json={"name": "x", "conn_id": "receiver"}, timeout=30
        )
        assert anonymous.status_code == 401
        cookie = {"_token": tab.airflow.token("admin", tab.airflow.passwords["admin"])}
        forged = requests.post(
            f"{tab.api}/webhooks", json={"name": "forged", "conn_id": "receiver"}, cookies=cookie, timeout=30
        )
        assert forged.status_code == 403 and CSRF_HEADER in forged.text
        allowed = requests.delete(
            f"{tab.api}/webhooks/guarded", cookies=cookie, headers={CSRF_HEADER: CSRF_VALUE}, timeout=30
        )
        assert allowed.status_code == 204, allowed.text
    finally:
        tab.call("admin", "DELETE", "/webhooks/guarded")
    assert tab.call("admin", "GET", "/webhooks/forged").status_code == 404


@pytest.mark.airflow_components
def test_the_openapi_schema_is_served(tab: Tab) -> None:
    schema = requests.get(f"{tab.airflow.api_url}/flow-webhooks/api/v1/openapi.json", timeout=30).json()
    assert "/dags/{dag_id}/webhooks/{name}/test" in schema["paths"]
    assert set(schema["paths"]["/dags/{dag_id}/webhooks/{name}"]) == {"get", "patch", "delete"}


@pytest.mark.airflow_components
def test_the_command_line_tests_imports_and_exports(tab: Tab, tmp_path: Path) -> None:
    before = len(tab.receiver.requests)
    tested = tab.airflow.provider_cli("test", "--dag", DAG_ID, "--webhook", "from-code", check=False)
    assert tested.returncode == 0, tested.stderr
    assert f"{DAG_ID}/from-code: delivered: HTTP 200" in tested.stdout
    (test,) = tab.receiver.requests[before:]
    assert json.loads(test.body)["jobStatus"] == "test" and test.signature_valid is True

    file = tmp_path / "hooks.yaml"
    file.write_text("webhooks:\n  - {name: from-cli, conn_id: receiver, on: failure}\n")
    try:
        imported = tab.airflow.provider_cli("import", DAG_ID, str(file), "--actor", "ci-bot", check=False)
        assert imported.returncode == 0, imported.stderr
        assert "1 created" in imported.stdout
        (record,) = tab.ledger.definition_audit(DAG_ID, name="from-cli")
        assert (record.action, record.actor, record.via) == ("created", "ci-bot", "cli")

        exported = tab.airflow.provider_cli("export", DAG_ID, "--format", "json", check=False)
        assert exported.returncode == 0, exported.stderr
        names = [hook["name"] for hook in json.loads(exported.stdout)["webhooks"]]
        assert names == ["from-code", "from-cli"]

        bad = tmp_path / "bad.yaml"
        bad.write_text("webhooks:\n  - {name: from-cli-2, conn_id: receiver, body: '$nope'}\n")
        refused = tab.airflow.provider_cli("import", DAG_ID, str(bad), check=False)
        assert refused.returncode == 1 and "webhooks[0].body" in refused.stderr
    finally:
        tab.call("admin", "DELETE", "/webhooks/from-cli")


def _screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path))
    return path
