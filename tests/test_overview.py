"""The Webhooks overview in Airflow's navigation, on a real API server, scheduler, DAG processor and dispatcher.

Two DAGs of two teams send to three receivers: one that answers 200, one that answers
410 Gone (so its endpoint is disabled and its messages held) and one that answers 500
(so its messages die after two attempts). The tests read the page as four users
(admin; an editor and a viewer of team A; a viewer of team B) and act on it: Recover
makes the dead messages of the editor's DAGs due again, and the dispatcher sends them;
Enable releases what the disabled endpoint held. In headless Chromium, an admin finds
the page in the navigation, filters it, recovers and enables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_webhook_provider.face.plugins.page import CSRF_HEADER, CSRF_VALUE
from airflow_webhook_provider.ledger import Delivery, Ledger
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.airflow_deployment import AirflowDeployment, until
from tests.conftest import REPO, SECRET, flow_webhook_connection
from tests.test_ui import _chrome, _log_in

SCREENSHOTS = REPO / "test-output" / "webhooks-overview"

DAG_TEMPLATE = """
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
         catchup=False) as dag:
    @task
    def work():
        return 1

    work()

FlowWebhooks(*[FlowWebhook(name=name, conn_id=conn, on="any") for name, conn in {webhooks!r}]).attach(dag)
"""
TEAM_A_DAG = "overview_team_a"
TEAM_B_DAG = "overview_team_b"
WEBHOOKS = {
    TEAM_A_DAG: [("a-ok", "ok_receiver"), ("a-gone", "gone_receiver"), ("a-down", "down_receiver")],
    TEAM_B_DAG: [("b-down", "down_receiver")],
}
EXPECTED_STATES = {"a-ok": "delivered", "a-gone": "held", "a-down": "dead", "b-down": "dead"}


@dataclass
class Overview:
    airflow: AirflowDeployment
    ledger: Ledger
    down: RecordingReceiver
    gone: RecordingReceiver

    @property
    def url(self) -> str:
        return f"{self.airflow.api_url}/flow-webhooks/overview"

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.airflow.token(user, self.airflow.passwords[user])}"}

    def by_webhook(self) -> dict[str, Delivery]:
        return {row.webhook: row for row in self.ledger.deliveries(limit=None)}

    def page(self, user: str, **params: str) -> requests.Response:
        return requests.get(self.url, params=params, headers=self.bearer(user), timeout=30)

    def post(self, user: str, path: str, **params: str) -> requests.Response:
        headers = {CSRF_HEADER: CSRF_VALUE, **self.bearer(user)}
        return requests.post(f"{self.url}{path}", params=params, headers=headers, timeout=30)


def _bundle(name: str, folder: Path, team: str) -> dict[str, Any]:
    return {
        "name": name,
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(folder)},
        "team_name": team,
    }


@pytest.fixture(scope="module")
def overview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overview]:
    base = tmp_path_factory.mktemp("webhooks-overview")
    folders = {TEAM_A_DAG: base / "dags-a", TEAM_B_DAG: base / "dags-b"}
    for dag_id, folder in folders.items():
        folder.mkdir()
        (folder / f"{dag_id}.py").write_text(DAG_TEMPLATE.format(dag_id=dag_id, webhooks=WEBHOOKS[dag_id]))
    bundles = [
        _bundle("team-a-dags", folders[TEAM_A_DAG], "team_a"),
        _bundle("team-b-dags", folders[TEAM_B_DAG], "team_b"),
    ]
    with (
        RecordingReceiver(secret=SECRET) as ok,
        RecordingReceiver(secret=SECRET, default=Reply(410, body=b"hook deleted")) as gone,
        RecordingReceiver(secret=SECRET, default=Reply(500, body=b"down")) as down,
    ):
        env = {
            "AIRFLOW_CONN_OK_RECEIVER": flow_webhook_connection(ok.url("/hook")),
            "AIRFLOW_CONN_GONE_RECEIVER": flow_webhook_connection(gone.url("/hook")),
            "AIRFLOW_CONN_DOWN_RECEIVER": flow_webhook_connection(down.url("/hook")),
            "AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS": "2",
            "AIRFLOW__FLOW_WEBHOOK__RETRY_BACKOFF_SECONDS": "0.05",
            # A message that keeps failing dies within seconds (instead of 3 days).
            "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS": "1",
            "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_AGE_SECONDS": "6",
            "AIRFLOW__FLOW_WEBHOOK__CIRCUIT_FAILURE_THRESHOLD": "1000",
            "AIRFLOW__CORE__MULTI_TEAM": "True",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        }
        users = "admin:admin,editor:user:team_a,viewer:viewer:team_a,stranger:viewer:team_b"
        with AirflowDeployment(base, folders[TEAM_A_DAG], users=users, extra_env=env) as airflow:
            airflow.cli("teams", "create", "team_a")
            airflow.cli("teams", "create", "team_b")
            airflow.start("api-server", "scheduler", "dag-processor", "dispatcher")
            airflow.wait_for_dispatcher()
            for dag_id in folders:
                airflow.wait_for_dag(dag_id, timeout=180)
            runs = {dag_id: airflow.trigger(dag_id) for dag_id in folders}
            for dag_id, run_id in runs.items():
                assert airflow.wait_for_run(dag_id, run_id, timeout=180) == "success"
            ledger = Ledger.open(f"sqlite:///{airflow.home / 'flow_webhooks.db'}")
            result = Overview(airflow, ledger, down, gone)

            def settled() -> bool | None:
                states = {name: row.state for name, row in result.by_webhook().items()}
                return True if states == EXPECTED_STATES else None

            try:
                until(settled, 120, f"the deliveries to settle as {EXPECTED_STATES}")
            except TimeoutError:
                states = {name: (row.state, row.last_status) for name, row in result.by_webhook().items()}
                raise AssertionError(f"the deliveries did not settle: {states}") from None
            yield result


class TestMarkup:
    """The page's markup, rendered without a server."""

    @staticmethod
    def _render(**changes: Any) -> str:
        from airflow_webhook_provider.delivery.pipeline import DeliveryMode
        from airflow_webhook_provider.face.plugins.overview import STATE_CHOICES, Filters
        from airflow_webhook_provider.face.plugins.rendering import render

        context: dict[str, Any] = {
            "theme": None,
            "static_base": "/flow-webhooks/static",
            "csrf_header": CSRF_HEADER,
            "csrf_value": CSRF_VALUE,
            "base": "/flow-webhooks",
            "mode": DeliveryMode(dispatchers=("dispatcher@host:1",), stale_seconds=30.0),
            "counts": {"dead": 1},
            "endpoints": [],
            "deliveries": [],
            "truncated": False,
            "max_rows": 500,
            "filters": Filters("all", None, None, None),
            "state_choices": STATE_CHOICES,
            "dag_choices": [],
            "conn_choices": [],
            "recover_url": "/flow-webhooks/overview/recover?state=all",
            "recoverable": 0,
            "recover_limit": 10_000,
            "may_recover": False,
            "problem": None,
        }
        context.update(changes)
        return render("overview.html", **context)

    def test_escapes_what_authors_receivers_and_users_control(self) -> None:
        from airflow_webhook_provider.face.plugins.overview import EndpointRow, Filters
        from tests.test_ui import _delivery, _health

        payload = '<img src=x onerror="alert(1)">'
        page = self._render(
            deliveries=[_delivery(webhook=payload, last_error=payload, run_id=payload, dag_id=payload)],
            endpoints=[EndpointRow(_health(key=payload, last_error=payload), {"dead": 1}, can_edit=True)],
            filters=Filters("all", payload, payload, payload),
            dag_choices=[payload],
            conn_choices=[payload],
            problem=payload,
        )
        assert "<img" not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page

    def test_no_inline_code_and_recover_only_for_editors(self) -> None:
        page = self._render(may_recover=False)
        assert "<style" not in page and " style=" not in page and "onclick" not in page
        assert "data-recover" not in page and "Recover needs edit access" in page
        editable = self._render(may_recover=True, recoverable=3)
        assert 'data-recover="/flow-webhooks/overview/recover?state=all" data-count="3"' in editable


def _rows(html: str) -> list[str]:
    """Return the webhook names of the page's delivery rows, in order."""
    import re

    return re.findall(r'data-webhook="([^"]+)"', html)


@pytest.mark.airflow_components
def test_rows_need_read_access_to_their_dag_and_attention_comes_first(overview: Overview) -> None:
    viewer = overview.page("viewer")
    assert viewer.status_code == 200, viewer.text
    assert _rows(viewer.text) == ["a-down", "a-gone", "a-ok"]  # dead, held, delivered
    assert "b-down" not in viewer.text
    assert viewer.headers["Content-Security-Policy"].startswith("default-src 'none'")

    stranger = overview.page("stranger")
    assert _rows(stranger.text) == ["b-down"]
    for name in ("a-ok", "a-gone", "a-down", TEAM_A_DAG):
        assert name not in stranger.text
    # The stranger sees the endpoint its own DAG sends to, and none of team A's.
    assert "down_receiver" in stranger.text
    assert "gone_receiver" not in stranger.text and "ok_receiver" not in stranger.text

    admin = _rows(overview.page("admin").text)
    assert set(admin[:2]) == {"a-down", "b-down"} and admin[2:] == ["a-gone", "a-ok"]


@pytest.mark.airflow_components
def test_filters_narrow_the_rows(overview: Overview) -> None:
    assert set(_rows(overview.page("admin", state="dead").text)) == {"a-down", "b-down"}
    assert _rows(overview.page("admin", state="held").text) == ["a-gone"]
    assert _rows(overview.page("admin", conn="ok_receiver").text) == ["a-ok"]
    assert _rows(overview.page("admin", dag_id=TEAM_B_DAG).text) == ["b-down"]
    assert _rows(overview.page("admin", since="1m", state="undelivered").text) != []
    bad = overview.page("admin", since="yesterday")
    assert bad.status_code == 200 and "since: " in bad.text and "neither a duration" in bad.text
    refused = overview.page("viewer", dag_id=TEAM_B_DAG)
    assert refused.status_code == 403 and "b-down" not in refused.text


@pytest.mark.airflow_components
def test_every_route_needs_a_session_and_actions_refuse_cross_site_requests(overview: Overview) -> None:
    before = overview.by_webhook()
    for method, path, params in [
        ("GET", "", {}),
        ("POST", "/recover", {}),
        ("POST", "/endpoints/enable", {"conn": "gone_receiver"}),
        ("POST", "/endpoints/disable", {"conn": "ok_receiver"}),
    ]:
        response = requests.request(
            method, f"{overview.url}{path}", params=params, headers={CSRF_HEADER: CSRF_VALUE}, timeout=30
        )
        assert response.status_code == 401, (path, response.text)
    for path, params in [("/recover", {}), ("/endpoints/enable", {"conn": "gone_receiver"})]:
        forged = requests.post(
            f"{overview.url}{path}", params=params, headers=overview.bearer("admin"), timeout=30
        )
        assert forged.status_code == 403 and CSRF_HEADER in forged.text
    assert overview.by_webhook() == before


@pytest.mark.airflow_components
def test_recover_needs_edit_access_and_replays_only_the_editors_dags(overview: Overview) -> None:
    viewer_page = overview.page("viewer").text
    assert "data-recover" not in viewer_page
    refused = overview.post("viewer", "/recover", state="dead")
    assert refused.status_code == 403, refused.text
    assert overview.post("editor", "/recover", dag_id=TEAM_B_DAG).status_code == 403
    assert "data-recover" in overview.page("editor").text

    before = overview.by_webhook()
    requests_before = len(overview.down.requests)
    answer = overview.post("editor", "/recover", state="dead")
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1
    assert "dispatcher sends them now" in answer.json()["message"]

    def sent_again() -> Delivery | None:
        row = overview.by_webhook()["a-down"]
        return row if row.state == "dead" and row.attempts > before["a-down"].attempts else None

    again = until(sent_again, 60, "the dispatcher to send the recovered message")
    assert again.id == before["a-down"].id
    assert {r.delivery_id for r in overview.down.requests[requests_before:]} == {again.id}
    assert overview.by_webhook()["b-down"] == before["b-down"]  # team B's DAG was not the editor's


@pytest.mark.airflow_components
def test_enabling_an_endpoint_needs_edit_access_to_its_connection(overview: Overview) -> None:
    assert overview.by_webhook()["a-gone"].state == "held"
    refused = overview.post("editor", "/endpoints/enable", conn="gone_receiver")
    assert refused.status_code == 403 and "connection" in refused.text
    assert overview.post("admin", "/endpoints/enable", conn="no_such_receiver").status_code == 404
    assert "data-enable" not in overview.page("editor").text
    assert "data-enable" in overview.page("admin").text

    disabled = overview.post("admin", "/endpoints/disable", conn="ok_receiver", reason="maintenance window")
    assert disabled.status_code == 200, disabled.text
    (health,) = overview.ledger.endpoint_health(["ok_receiver"])
    assert health.disabled_reason == "maintenance window"
    assert overview.post("admin", "/endpoints/enable", conn="ok_receiver").json()["released"] == 0


@pytest.mark.airflow_components
def test_in_chromium_an_admin_finds_filters_recovers_and_enables(overview: Overview) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    driver = _chrome()
    try:
        wait = WebDriverWait(driver, 30)
        _log_in(driver, overview, "admin")  # type: ignore[arg-type]  # needs .airflow only
        driver.get(f"{overview.airflow.api_url}/")
        wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, 'a[href$="/plugin/webhooks-overview"]'))
        ).click()
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title=Webhooks]")))
        assert "/plugin/webhooks-overview" in driver.current_url
        driver.switch_to.frame(frame)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr[data-webhook]")))
        names = [
            row.get_attribute("data-webhook")
            for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-webhook]")
        ]
        assert set(names) == set(EXPECTED_STATES) and names[-1] == "a-ok"
        endpoint = driver.find_element(By.CSS_SELECTOR, 'tr[data-endpoint="gone_receiver"]')
        assert "disabled" in endpoint.text and "410" in endpoint.text
        _screenshot_to(driver, "overview.png")

        # Filter: dead ones only, through the form.
        driver.find_element(By.CSS_SELECTOR, "select[name=state] option[value=dead]").click()
        driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-webhook]")) == 2)

        # Recover them: the first click asks, the second sends; then the dispatcher sends both.
        attempts = {name: row.attempts for name, row in overview.by_webhook().items()}
        recover = driver.find_element(By.CSS_SELECTOR, "button[data-recover]")
        recover.click()
        assert recover.text == "Click again to send 2 message(s) again"
        assert all(overview.by_webhook()[n].attempts == attempts[n] for n in attempts)
        recover.click()
        notice = wait.until(ec.visibility_of_element_located((By.ID, "notice")))
        assert "2 message(s) due again" in notice.text
        until(
            lambda: (
                True
                if all(overview.by_webhook()[n].attempts > attempts[n] for n in ("a-down", "b-down"))
                else None
            ),
            60,
            "both recovered messages sent",
        )

        # Enable the endpoint that answered 410, which answers 200 now: its held message is delivered.
        overview.gone.default = Reply(200)
        driver.get(f"{overview.url}?state=all")
        wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, 'button[data-enable*="gone_receiver"]'))
        ).click()
        notice = wait.until(ec.visibility_of_element_located((By.ID, "notice")))
        assert "1 held message(s) due now" in notice.text
        until(
            lambda: True if overview.by_webhook()["a-gone"].state == "delivered" else None,
            60,
            "the held message delivered",
        )
        _screenshot_to(driver, "overview-after-enable.png")

        # A run links to its deliveries, in the same frame.
        driver.find_element(By.CSS_SELECTOR, 'tr[data-webhook="a-gone"] td a').click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.deliveries td.name")))
        assert {cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "td.name")} == {
            "a-ok",
            "a-gone",
            "a-down",
        }
    finally:
        driver.quit()


def _screenshot_to(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path))
    return path
