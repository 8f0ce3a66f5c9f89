"""
The Webhooks tab on Airflow's DAG run page.

The markup is tested directly (escaping, no secrets, 50 webhooks with many attempts).
Everything else runs against real components, once per module (about a minute):

* ``AirflowDeployment`` starts ``airflow api-server -H 127.0.0.1``, ``airflow scheduler
  --skip-serve-logs`` and ``airflow dag-processor`` on a temporary SQLite home with
  SimpleAuthManager; the plugin is loaded the way users get it (the ``airflow.plugins``
  entry point of the installed provider). One DAG run ends and its webhooks fill the
  ledger: 13 deliveries to a receiver that answers 200, one to a receiver that answers 500.
* Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium
  through ``/usr/bin/chromedriver``; nothing is downloaded) logs in on Airflow's login
  page, opens the run, clicks the **Webhooks** tab and works in it.
* The access rules are checked with plain HTTP requests to the same API server.

Users: ``admin`` (admin), ``editor`` (role user, team ``team_a``: reads and edits the DAG),
``viewer`` (role viewer, team ``team_a``: reads, cannot edit) and ``stranger`` (role viewer,
team ``team_b``). SimpleAuthManager's roles are global (every role reads every DAG), so
the only way it denies reading one DAG is multi-team mode: the DAGs folder bundle belongs
to ``team_a``, and a non-admin of another team may not read its DAGs (Airflow's own REST
API refuses ``stranger`` the same way, which the test checks too).

Screenshots land in ``test-output/webhooks-tab/``: ``webhooks-tab.png`` (a failing delivery
expanded), ``webhooks-tab-light.png`` and ``webhooks-tab-dark.png``. With
``UPDATE_DOCS_SCREENSHOT=1`` the first is also copied to ``docs/webhooks-tab.png`` for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests

from airflow_webhook_provider.delivery.pipeline import DeliveryMode
from airflow_webhook_provider.face.plugins.page import (
    ATTEMPTS_PAGE_SIZE,
    CSRF_HEADER,
    CSRF_VALUE,
    TabUrls,
    render_attempts,
    render_delivery,
    render_page,
)
from airflow_webhook_provider.face.plugins.rendering import STATIC_DIR
from airflow_webhook_provider.get_provider_info import get_provider_info
from airflow_webhook_provider.ledger import AttemptRecord, Delivery, EndpointHealth, Ledger
from airflow_webhook_provider.receiver import RecordingReceiver, Reply
from tests.airflow_deployment import AirflowDeployment, until
from tests.conftest import REPO, SECRET, flow_webhook_connection

PLUGIN_CLASS = "airflow_webhook_provider.face.plugins.webhooks_tab.FlowWebhooksPlugin"
DAG_ID = "webhooks_tab"
# A DAG author's webhook name that would run script if the page did not escape it.
XSS_NAME = '<img src=x onerror="window.top.pwned = 1"> order-feed'
RECEIVER_ERROR_BODY = b"<script>window.top.pwned = 2</script> upstream down"
QUERY_SECRET = "s3cr3t-query-value"
HEADER_SECRET = "Bearer header-secret-value"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-output" / "webhooks-tab"

DAGS = f"""
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG({DAG_ID!r}, schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
         catchup=False) as dag:
    @task
    def extract():
        return 1

    @task
    def publish(value):
        return value

    publish(extract())

FlowWebhooks(
    *[FlowWebhook(name=f"notify-{{i:02d}}", conn_id="ok_receiver", on="any") for i in range(12)],
    FlowWebhook(name={XSS_NAME!r}, conn_id="bad_receiver", on="success"),
    FlowWebhook(name="report-published", conn_id="ok_receiver", on="success", outputs=["publish"]),
).attach(dag)
"""
EXPECTED_DELIVERIES = 14


# -- the markup, without a server ----------------------------------------------------------------


def _delivery(index: int = 0, **changes: Any) -> Delivery:
    values: dict[str, Any] = {
        "id": f"00000000-0000-0000-0000-{index:012d}",
        "dag_id": "sales",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "clear_number": 0,
        "output_name": "",
        "webhook": f"notify-{index:02d}",
        "event": "failure",
        "job_status": "failed",
        "capture": "callback",
        "conn_id": "receiver",
        "target_url": None,
        "endpoint": "receiver",
        "definition": None,
        "refs": {},
        "built_at": 1_767_225_600.0,
        "url": "https://hooks.example.com/notify?token=***",
        "query": "",
        "method": "POST",
        "headers": {},
        "body": b"{}",
        "state": "failed",
        "forced": False,
        "attempts": 3,
        "last_status": 503,
        "last_error": "HTTP 503",
        "next_attempt_at": 1_767_225_900.0,
        "event_at": 1_767_225_599.0,
        "created_at": 1_767_225_600.0,
        "updated_at": 1_767_225_610.0,
        "delivered_at": None,
        "claimed_by": None,
        "claimed_until": None,
    }
    values.update(changes)
    return Delivery(**values)


def _attempt(number: int, **changes: Any) -> AttemptRecord:
    values: dict[str, Any] = {
        "number": number,
        "started_at": 1_767_225_600.0 + number,
        "duration_seconds": 0.25,
        "status_code": 503,
        "error": None,
        "response_excerpt": "busy",
        "source": "replay",
        "sender": "replay@api-server:4242",
    }
    values.update(changes)
    return AttemptRecord(**values)


def _health(key: str = "receiver", **changes: Any) -> EndpointHealth:
    values: dict[str, Any] = {
        "key": key,
        "circuit": "closed",
        "consecutive_failures": 0,
        "failing_since": None,
        "last_success_at": 1_767_225_000.0,
        "last_failure_at": None,
        "last_error": None,
        "opened_at": None,
        "opened_reason": None,
        "probes": 0,
        "next_probe_at": None,
        "probe_until": None,
        "disabled_at": None,
        "disabled_reason": None,
        "recovering": False,
        "max_concurrency": None,
        "rate_per_minute": None,
        "tokens": None,
        "tokens_at": None,
        "updated_at": 1_767_225_600.0,
    }
    values.update(changes)
    return EndpointHealth(**values)


URLS = TabUrls(base="/flow-webhooks", dag_id="sales", run_id="manual__2026-01-01T00:00:00+00:00")


INLINE = DeliveryMode(dispatchers=(), stale_seconds=30.0)


def _page(deliveries: list[Delivery], **changes: Any) -> str:
    arguments: dict[str, Any] = {
        "mode": INLINE,
        "endpoints": [],
        "dag_id": "sales",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "deliveries": deliveries,
        "urls": URLS,
        "can_redeliver": True,
        "truncated": False,
    }
    arguments.update(changes)
    return render_page(**arguments)


class _Tags(HTMLParser):
    """Collect every start tag with its attributes, and the text inside ``<script>`` elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


class TestPage:
    @pytest.mark.parametrize(
        "field",
        [
            pytest.param("webhook", id="webhook-name"),
            pytest.param("url", id="url"),
            pytest.param("last_error", id="last-error"),
            pytest.param("output_name", id="output"),
            pytest.param("run_id", id="run-id"),
        ],
    )
    def test_escapes_what_authors_and_receivers_control(self, field: str) -> None:
        payload = '<script>alert("x")</script>"\'><img src=x onerror=alert(1)>'
        page = _page([_delivery(**{field: payload})], run_id=payload if field == "run_id" else "r")
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page

    def test_escapes_receiver_answers_and_errors_in_attempts(self) -> None:
        fragment = render_attempts(
            [_attempt(1, response_excerpt="<b>down</b>", error="<i>reset</i>")],
            total=1,
            offset=0,
            more_url=None,
        )
        assert "<b>" not in fragment and "<i>" not in fragment
        assert "&lt;b&gt;down&lt;/b&gt;" in fragment and "&lt;i&gt;reset&lt;/i&gt;" in fragment

    def test_shows_no_header_values_or_bodies(self) -> None:
        page = _page([_delivery(headers={"X-Api-Key": "header-secret"}, body=b'{"card": "body-secret"}')])
        assert "header-secret" not in page
        assert "body-secret" not in page
        assert "X-Api-Key" not in page

    def test_lists_deliveries_that_need_attention_first(self) -> None:
        page = _page(
            [
                _delivery(1, webhook="b-ok", state="delivered", delivered_at=1_767_225_601.0),
                _delivery(2, webhook="c-dead", state="dead", next_attempt_at=None),
                _delivery(3, webhook="a-pending", state="pending", attempts=0),
                _delivery(4, webhook="d-failed"),
            ]
        )
        names = re.findall(r'<td class="name"[^>]*>([^<]+)</td>', page)
        assert names == ["c-dead", "d-failed", "a-pending", "b-ok"]

    def test_the_page_has_no_inline_script_or_style(self) -> None:
        # What the Content-Security-Policy (script-src 'self'; style-src 'self') lets run: files only.
        payload = '<script>alert(1)</script><img src=x onerror=alert(1) style="color: red">'
        page = _page([_delivery(), _delivery(1, webhook=payload, last_error=payload)], truncated=True)
        tags = _Tags()
        tags.feed(page)
        tags.close()
        scripts = [attributes for tag, attributes in tags.found if tag == "script"]
        assert scripts == [
            {
                "src": "/flow-webhooks/static/pages.js",
                "data-csrf-header": CSRF_HEADER,
                "data-csrf-value": CSRF_VALUE,
            },
            {"src": "/flow-webhooks/static/run.js"},
        ]
        assert tags.script_text == ""
        stylesheets = [attributes for tag, attributes in tags.found if tag == "link"]
        assert stylesheets == [{"rel": "stylesheet", "href": "/flow-webhooks/static/webhooks.css"}]
        assert "style" not in {tag for tag, _ in tags.found}
        assert not [
            (tag, name)
            for tag, attributes in tags.found
            for name in attributes
            if name == "style" or name.startswith("on")
        ]
        for url in (*(script["src"] for script in scripts), stylesheets[0]["href"]):
            assert (STATIC_DIR / url.removeprefix("/flow-webhooks/static/")).is_file(), url

    @pytest.mark.parametrize(
        ("theme", "attribute"),
        [
            pytest.param(None, '<html lang="en">', id="follow-airflow-or-system"),
            pytest.param("dark", '<html lang="en" data-theme="dark">', id="dark"),
            pytest.param("light", '<html lang="en" data-theme="light">', id="light"),
        ],
    )
    def test_theme(self, theme: str | None, attribute: str) -> None:
        assert attribute in _page([], theme=theme)

    def test_viewers_see_a_disabled_redeliver_button(self) -> None:
        page = _page([_delivery()], can_redeliver=False)
        assert "data-redeliver" not in page
        assert 'disabled title="Redeliver needs edit access to this DAG"' in page

    def test_fifty_webhooks_with_many_attempts_stay_small(self) -> None:
        # Attempts are not part of the page: a row loads them when expanded, a page at a time.
        page = _page([_delivery(i, attempts=400) for i in range(50)])
        assert page.count('<tbody class="delivery"') == 50
        assert len(page) < 50 * 2500
        assert len(page) - len(_page([_delivery(i, attempts=4) for i in range(50)])) == 50 * 2

        attempts = [_attempt(n) for n in range(400, 0, -1)]
        first = render_attempts(
            attempts[:ATTEMPTS_PAGE_SIZE], total=400, offset=0, more_url=URLS.attempts("x", 20)
        )
        assert first.split("<tbody>")[1].count("<tr>") == ATTEMPTS_PAGE_SIZE
        assert "Attempts 381 to 400 of 400" in first
        assert "Show older attempts (380 more)" in first
        last = render_attempts(attempts[380:], total=400, offset=380, more_url=None)
        assert "Attempts 1 to 20 of 400" in last
        assert "Show older" not in last

    def test_urls_carry_any_run_id_in_the_query(self) -> None:
        urls = TabUrls(base="/flow-webhooks", dag_id="d", run_id="scheduled__2026-01-01T00:00:00+00:00/x&y")
        assert urls.redeliver("id-1") == (
            "/flow-webhooks/run/redeliver?dag_id=d&run_id=scheduled__2026-01-01T00%3A00%3A00%2B00%3A00%2Fx%26y"
            "&delivery_id=id-1"
        )

    def test_a_row_without_attempts_shows_dashes(self) -> None:
        row = render_delivery(
            _delivery(state="pending", attempts=0, last_status=None, last_error=None),
            urls=URLS,
            can_redeliver=True,
        )
        assert '<td class="num attempts">0</td>' in row
        assert "next try" not in row

    def test_each_row_says_how_its_message_was_captured(self) -> None:
        page = _page([_delivery(1, capture="callback"), _delivery(2, capture="reconciled")])
        assert '<th title="How the end was seen: callback, listener or reconciled">Captured by</th>' in page
        captures = re.findall(r'<td class="small" title="([^"]+)">([^<]+)</td>', page)
        assert sorted(captures) == [
            ("an Airflow callback", "callback"),
            ("run-end reconciliation of the outputs", "reconciled"),
        ]

    def test_the_page_says_who_sends_new_messages(self) -> None:
        inline = _page([])
        assert '<p class="mode small">Delivery: <span class="badge retry">inline</span>' in inline
        assert "no dispatcher heartbeat in the last 30 s" in inline
        dispatcher = _page([], mode=DeliveryMode(dispatchers=("dispatcher@host:1",), stale_seconds=30.0))
        assert '<span class="badge success">dispatcher</span>' in dispatcher
        assert "dispatcher: 1 alive (dispatcher@host:1)" in dispatcher

    def test_lists_only_the_troubled_endpoints(self) -> None:
        page = _page(
            [_delivery()],
            endpoints=[
                _health("healthy"),
                _health("<b>streak</b>", consecutive_failures=2, failing_since=1_767_225_500.0),
                _health(
                    "broken",
                    circuit="open",
                    consecutive_failures=3,
                    opened_at=1_767_225_600.0,
                    opened_reason="3 consecutive failures; last: HTTP 503",
                    next_probe_at=1_767_225_660.0,
                ),
            ],
        )
        items = re.findall(r"<li>(.*?)</li>", page)
        assert len(items) == 2
        assert "healthy" not in page.split('<ul class="endpoints small">')[1]
        assert "&lt;b&gt;streak&lt;/b&gt;" in items[0] and "2 failure(s) in a row" in items[0]
        assert '<span class="mono">broken</span>' in items[1] and "circuit open" in items[1]
        assert "3 consecutive failures; last: HTTP 503" in items[1]
        assert '<ul class="endpoints' not in _page([_delivery()], endpoints=[_health("healthy")])


class TestRegistration:
    def test_provider_info_names_the_plugin(self) -> None:
        assert get_provider_info()["plugins"] == [{"name": "flow_webhooks", "plugin-class": PLUGIN_CLASS}]

    def test_the_installed_provider_exposes_the_plugin_entry_point(self) -> None:
        # Airflow loads provider-info plugins only with [core] lazy_discover_providers = False
        # (default True); the airflow.plugins entry point loads it in every set-up.
        found = {(e.name, e.value) for e in entry_points(group="airflow.plugins")}
        assert ("flow_webhooks", PLUGIN_CLASS.replace(".FlowWebhooksPlugin", ":FlowWebhooksPlugin")) in found

    def test_the_tabs_are_dag_and_dag_run_external_views_and_the_overview_a_nav_entry(self) -> None:
        from airflow_webhook_provider.face.plugins.webhooks_tab import FlowWebhooksPlugin

        views = {view["destination"]: view for view in FlowWebhooksPlugin.external_views}
        assert sorted(views) == ["dag", "dag_run", "nav"]
        assert views["dag"]["name"] == views["dag_run"]["name"] == views["nav"]["name"] == "Webhooks"
        assert views["dag"]["href"] == "/flow-webhooks/dag?dag_id={DAG_ID}"
        assert views["dag_run"]["href"] == "/flow-webhooks/run?dag_id={DAG_ID}&run_id={RUN_ID}"
        assert views["nav"]["href"] == "/flow-webhooks/overview"
        for icon in ("icon", "icon_dark_mode"):
            assert (STATIC_DIR / views["nav"][icon].removeprefix("/flow-webhooks/static/")).is_file()
        (app,) = FlowWebhooksPlugin.fastapi_apps
        assert app["url_prefix"] == "/flow-webhooks"


# -- the real API server -------------------------------------------------------------------------


@dataclass
class TabDeployment:
    airflow: AirflowDeployment
    ledger: Ledger
    run_id: str
    bad_receiver: RecordingReceiver

    @property
    def page_url(self) -> str:
        return f"{self.airflow.api_url}/flow-webhooks/run"

    def params(self, **extra: str) -> dict[str, str]:
        return {"dag_id": DAG_ID, "run_id": self.run_id, **extra}

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.airflow.token(user, self.airflow.passwords[user])}"}

    def failing_delivery(self) -> Delivery:
        (delivery,) = [
            d for d in self.ledger.deliveries(dag_id=DAG_ID, run_id=self.run_id) if d.webhook == XSS_NAME
        ]
        return delivery


@pytest.fixture(scope="module")
def tab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TabDeployment]:
    base = tmp_path_factory.mktemp("webhooks-tab")
    dags_folder = base / "dags"
    dags_folder.mkdir()
    (dags_folder / "webhooks_tab_dag.py").write_text(DAGS)
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
            "team_name": "team_a",
        }
    ]
    with (
        RecordingReceiver(secret=SECRET) as ok_receiver,
        RecordingReceiver(secret=SECRET, default=Reply(500, body=RECEIVER_ERROR_BODY)) as bad_receiver,
    ):
        env = {
            "AIRFLOW_CONN_OK_RECEIVER": flow_webhook_connection(
                ok_receiver.url(f"/hook?token={QUERY_SECRET}"),
                headers=json.dumps({"Authorization": HEADER_SECRET}),
            ),
            "AIRFLOW_CONN_BAD_RECEIVER": flow_webhook_connection(bad_receiver.url("/fail")),
            "AIRFLOW__FLOW_WEBHOOK__RETRY_MAX_ATTEMPTS": "3",
            "AIRFLOW__FLOW_WEBHOOK__RETRY_BACKOFF_SECONDS": "0.05",
            "AIRFLOW__CORE__MULTI_TEAM": "True",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        }
        users = "admin:admin,editor:user:team_a,viewer:viewer:team_a,stranger:viewer:team_b"
        with AirflowDeployment(base, dags_folder, users=users, extra_env=env) as airflow:
            airflow.cli("teams", "create", "team_a")
            airflow.cli("teams", "create", "team_b")
            airflow.start("api-server", "scheduler", "dag-processor")
            airflow.wait_for_dag(DAG_ID, timeout=180)
            run_id = airflow.trigger(DAG_ID)
            assert airflow.wait_for_run(DAG_ID, run_id, timeout=180) == "success"
            ledger = Ledger.open(f"sqlite:///{airflow.home / 'flow_webhooks.db'}")

            def settled() -> list[Delivery] | None:
                rows = ledger.deliveries(dag_id=DAG_ID, run_id=run_id)
                done = len(rows) == EXPECTED_DELIVERIES and all(r.state != "pending" for r in rows)
                return rows if done else None

            until(settled, 120, f"{EXPECTED_DELIVERIES} settled deliveries in the ledger")
            yield TabDeployment(airflow, ledger, run_id, bad_receiver)


def _chrome() -> Any:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _log_in(driver: Any, tab: TabDeployment, user: str) -> None:
    """Log in on Airflow's own login page.

    The UI redirects ``/`` to its login page from a script, so a look for the form can land
    mid-navigation ("aborted by navigation"): the wait looks again until the page settles.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    driver.get(f"{tab.airflow.api_url}/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=username]"))).send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(tab.airflow.passwords[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.get_cookie("_token") is not None)


def _open_tab(driver: Any, tab: TabDeployment) -> Any:
    """Open the run's page, click its Webhooks tab and return the tab's iframe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, 30)
    driver.get(f"{tab.airflow.api_url}/dags/{DAG_ID}/runs/{quote(tab.run_id, safe='')}")
    # The run's tab (the navigation's Webhooks entry links to /plugin/webhooks-overview).
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, 'a[href$="/plugin/webhooks"]'))).click()
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title=Webhooks]")))
    assert driver.current_url.endswith("/plugin/webhooks")
    return frame


def _screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path))
    return path


@pytest.mark.airflow_components
def test_the_webhooks_tab_lists_expands_and_redelivers(tab: TabDeployment) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    # Give the failing delivery more attempts than one page shows (the receiver keeps answering 500).
    editor = {CSRF_HEADER: CSRF_VALUE, **tab.bearer("editor")}
    for _ in range(ATTEMPTS_PAGE_SIZE):
        params = tab.params(delivery_id=tab.failing_delivery().id)
        requests.post(
            f"{tab.page_url}/redeliver", params=params, headers=editor, timeout=60
        ).raise_for_status()
    failing = tab.failing_delivery()
    assert failing.state == "failed" and failing.attempts > ATTEMPTS_PAGE_SIZE
    attempts_of_failing = f"#d-{failing.id}-attempts table.attempts tbody tr"

    driver = _chrome()
    try:
        wait = WebDriverWait(driver, 30)
        _log_in(driver, tab, "editor")
        frame = _open_tab(driver, tab)
        driver.switch_to.frame(frame)
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tbody.delivery") or None)
        assert len(rows) == EXPECTED_DELIVERIES

        # The failing delivery comes first; its name is text, not markup.
        first = rows[0]
        assert first.get_attribute("id") == f"d-{failing.id}"
        assert first.find_element(By.CSS_SELECTOR, "td.name").text == XSS_NAME
        assert first.find_element(By.CSS_SELECTOR, ".badge").text == "failed"
        assert first.find_element(By.CSS_SELECTOR, "td.attempts").text == str(failing.attempts)
        assert "HTTP 500" in first.find_element(By.CSS_SELECTOR, "td.error").text
        names = {row.find_element(By.CSS_SELECTOR, "td.name").text for row in rows}
        assert {f"notify-{i:02d}" for i in range(12)} | {"report-published", XSS_NAME} == names
        assert "token=***" in driver.find_element(By.TAG_NAME, "body").text
        # The scheduler's listener sees the run end before the DAG processor's callback does;
        # the output's own task callback records it first. No dispatcher runs, so callbacks
        # sent them inline; the failing receiver's circuit is open (the ok receiver is not listed).
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.deliveries > thead th")]
        assert headers[4] == "Captured by"
        captures = {
            (
                row.find_element(By.CSS_SELECTOR, "td.name").text,
                row.find_element(By.CSS_SELECTOR, "tr.summary > td:nth-child(5)").text,
            )
            for row in rows
        }
        assert {capture for name, capture in captures if name != "report-published"} == {"listener"}
        assert ("report-published", "callback") in captures
        mode = driver.find_element(By.CSS_SELECTOR, "p.mode").text
        assert mode.startswith("Delivery: inline") and "no dispatcher heartbeat" in mode, mode
        (troubled,) = driver.find_elements(By.CSS_SELECTOR, "ul.endpoints li")
        assert troubled.text.startswith("bad_receiver: circuit open"), troubled.text
        for secret in (QUERY_SECRET, HEADER_SECRET, SECRET):
            assert secret not in driver.page_source

        # Expanding the row loads its newest attempts; the receiver's answer is shown as text.
        first.find_element(By.CSS_SELECTOR, "button.toggle").click()
        shown = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, attempts_of_failing) or None)
        newest = range(failing.attempts, failing.attempts - ATTEMPTS_PAGE_SIZE, -1)
        assert [r.find_element(By.TAG_NAME, "td").text for r in shown] == [str(n) for n in newest]
        assert RECEIVER_ERROR_BODY.decode() in shown[0].text
        assert not driver.find_elements(By.CSS_SELECTOR, "td.name img, pre.excerpt script")
        driver.execute_script("window.scrollTo(0, 0)")
        driver.switch_to.default_content()
        screenshot = _screenshot(driver, "webhooks-tab.png")
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(screenshot, REPO / "docs" / "webhooks-tab.png")
        driver.switch_to.frame(frame)

        # Older attempts load on demand, below the newer ones.
        driver.find_element(By.CSS_SELECTOR, f"#d-{failing.id}-attempts button[data-more]").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, attempts_of_failing)) == failing.attempts)
        every = driver.find_elements(By.CSS_SELECTOR, attempts_of_failing)
        assert [r.find_element(By.TAG_NAME, "td").text for r in every] == [
            str(n) for n in range(failing.attempts, 0, -1)
        ]
        assert not driver.find_elements(By.CSS_SELECTOR, f"#d-{failing.id}-attempts button[data-more]")

        # Redeliver: the receiver now accepts, and the row turns delivered in place.
        driver.execute_script("window.scrollTo(0, 0)")
        first.find_element(By.CSS_SELECTOR, "button.toggle").click()
        tab.bad_receiver.script(Reply(200))
        before = len(tab.bad_receiver.requests)
        first.find_element(By.CSS_SELECTOR, "button[data-redeliver]").click()
        notice = wait.until(ec.visibility_of_element_located((By.ID, "notice")))
        wait.until(lambda d: "delivered: HTTP 200" in notice.text)
        row = driver.find_element(By.ID, f"d-{failing.id}")
        assert row.find_element(By.CSS_SELECTOR, ".badge").text == "delivered"
        assert row.find_element(By.CSS_SELECTOR, "td.attempts").text == str(failing.attempts + 1)
        summary = driver.find_element(By.CSS_SELECTOR, ".summary-line").text
        assert summary == f"{EXPECTED_DELIVERIES} deliveries {EXPECTED_DELIVERIES} delivered"
        replayed = tab.bad_receiver.requests[before]
        assert replayed.delivery_id == failing.id and replayed.signature_valid
        stored = tab.ledger.get(failing.id)
        assert stored is not None and (stored.state, stored.attempts) == ("delivered", failing.attempts + 1)
        assert tab.ledger.attempts(failing.id)[-1].source == "replay"

        driver.switch_to.default_content()
        assert driver.execute_script("return window.pwned") is None
    finally:
        driver.quit()


@pytest.mark.airflow_components
def test_the_webhooks_tab_follows_the_airflow_colour_mode(tab: TabDeployment) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    background = "return getComputedStyle(document.{}).backgroundColor"
    driver = _chrome()
    try:
        wait = WebDriverWait(driver, 30)
        _log_in(driver, tab, "viewer")
        for mode in ("light", "dark"):
            driver.execute_script("localStorage.setItem('theme', arguments[0])", mode)
            frame = _open_tab(driver, tab)
            airflow_background = driver.execute_script(background.format("documentElement"))
            driver.switch_to.frame(frame)
            wait.until(
                lambda d, mode=mode: d.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == mode
            )
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tbody.delivery") or None)
            assert driver.execute_script(background.format("body")) == airflow_background
            driver.switch_to.default_content()
            _screenshot(driver, f"webhooks-tab-{mode}.png")
    finally:
        driver.quit()


def _expired(token: str, jwt_secret: str) -> str:
    """Return ``token`` re-signed with its validity moved an hour into the past."""
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600, jti=uuid.uuid4().hex)
    return jwt.encode(claims, jwt_secret, algorithm="HS512", headers=jwt.get_unverified_header(token))


@pytest.mark.airflow_components
def test_without_a_valid_session_every_endpoint_answers_401(tab: TabDeployment) -> None:
    before = tab.failing_delivery()
    delivery_id = before.id
    expired = _expired(
        tab.airflow.token("editor", "editor"), tab.airflow.env["AIRFLOW__API_AUTH__JWT_SECRET"]
    )
    calls = [
        ("GET", tab.page_url, tab.params()),
        ("GET", f"{tab.page_url}/attempts", tab.params(delivery_id=delivery_id)),
        ("POST", f"{tab.page_url}/redeliver", tab.params(delivery_id=delivery_id)),
    ]
    for method, url, params in calls:
        for headers, cookies in (
            ({}, {}),
            ({"Authorization": f"Bearer {expired}"}, {}),
            ({}, {"_token": expired}),
        ):
            response = requests.request(
                method,
                url,
                params=params,
                headers={CSRF_HEADER: CSRF_VALUE, **headers},
                cookies=cookies,
                timeout=30,
            )
            assert response.status_code == 401, (method, url, headers, cookies, response.text)
    assert tab.ledger.get(delivery_id) == before


@pytest.mark.airflow_components
def test_a_user_who_cannot_read_the_dag_gets_403(tab: TabDeployment) -> None:
    stranger = tab.bearer("stranger")
    delivery_id = tab.failing_delivery().id
    # Airflow itself refuses this user the DAG ...
    own_api = requests.get(f"{tab.airflow.api_url}/api/v2/dags/{DAG_ID}", headers=stranger, timeout=30)
    assert own_api.status_code == 403
    # ... and so does the tab, for every endpoint.
    for method, url, params in [
        ("GET", tab.page_url, tab.params()),
        ("GET", f"{tab.page_url}/attempts", tab.params(delivery_id=delivery_id)),
        ("POST", f"{tab.page_url}/redeliver", tab.params(delivery_id=delivery_id)),
    ]:
        response = requests.request(
            method, url, params=params, headers={CSRF_HEADER: CSRF_VALUE, **stranger}, timeout=30
        )
        assert response.status_code == 403, (method, url, response.text)
        assert delivery_id not in response.text
    # The same user reads the tab once the DAG is theirs to read: the 403 is about this DAG.
    assert requests.get(tab.page_url, params=tab.params(), headers=tab.bearer("viewer"), timeout=30).ok


@pytest.mark.airflow_components
def test_the_page_runs_only_the_app_s_own_script_and_stylesheet(tab: TabDeployment) -> None:
    page = requests.get(tab.page_url, params=tab.params(), headers=tab.bearer("viewer"), timeout=30)
    assert page.status_code == 200, page.text
    policy = dict(
        directive.strip().split(" ", 1) for directive in page.headers["Content-Security-Policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "frame-ancestors": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # The page's own files, served without a session (they hold no data) and never sniffed.
    for name, media_types in (
        ("pages.js", {"text/javascript", "application/javascript"}),
        ("run.js", {"text/javascript", "application/javascript"}),
        ("webhooks.css", {"text/css"}),
    ):
        path = f"/flow-webhooks/static/{name}"
        assert f'"{path}"' in page.text
        served = requests.get(f"{tab.airflow.api_url}{path}", timeout=30)
        assert served.status_code == 200, (name, served.text)
        assert served.headers["Content-Type"].split(";")[0] in media_types, served.headers
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.content == (STATIC_DIR / name).read_bytes()
    missing = requests.get(f"{tab.airflow.api_url}/flow-webhooks/static/app.py", timeout=30)
    assert missing.status_code == 404


@pytest.mark.airflow_components
def test_redeliver_needs_edit_access_to_the_dag(tab: TabDeployment) -> None:
    viewer = tab.bearer("viewer")
    delivery = tab.failing_delivery()
    page = requests.get(tab.page_url, params=tab.params(), headers=viewer, timeout=30)
    assert page.status_code == 200
    assert 'disabled title="Redeliver needs edit access to this DAG"' in page.text
    assert "data-redeliver" not in page.text
    refused = requests.post(
        f"{tab.page_url}/redeliver",
        params=tab.params(delivery_id=delivery.id),
        headers={CSRF_HEADER: CSRF_VALUE, **viewer},
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    assert tab.ledger.get(delivery.id) == delivery

    editor_page = requests.get(tab.page_url, params=tab.params(), headers=tab.bearer("editor"), timeout=30)
    assert "data-redeliver" in editor_page.text


@pytest.mark.airflow_components
def test_redeliver_refuses_cross_site_requests(tab: TabDeployment) -> None:
    delivery = tab.failing_delivery()
    url = f"{tab.page_url}/redeliver"
    params = tab.params(delivery_id=delivery.id)
    token = tab.airflow.token("editor", "editor")
    cookie = {"_token": token}
    bearer = {"Authorization": f"Bearer {token}"}
    another_port = f"http://127.0.0.1:{tab.airflow.port + 1}"
    # (what the case is, request headers, whether it authenticates with the cookie or the token)
    refused: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("token, no header", {}, bearer),
        ("cookie, no header (a cross-site form)", {}, {}),
        ("form from another port of the host", {"Origin": another_port}, {}),
        ("script from another port", {CSRF_HEADER: CSRF_VALUE, "Origin": another_port}, {}),
        ("sandboxed page", {CSRF_HEADER: CSRF_VALUE, "Origin": "null"}, {}),
        ("same-site fetch", {CSRF_HEADER: CSRF_VALUE, "Sec-Fetch-Site": "same-site"}, {}),
        ("wrong header value", {CSRF_HEADER: "1"}, {}),
    ]
    for case, headers, auth in refused:
        response = requests.post(
            url, params=params, headers={**headers, **auth}, cookies=None if auth else cookie, timeout=30
        )
        assert response.status_code == 403, (case, response.text)
        assert "Refused" in response.json()["detail"], case
    assert tab.ledger.get(delivery.id) == delivery
    assert requests.get(url, params=params, cookies=cookie, timeout=30).status_code == 405

    # What the tab itself sends passes: the header, from the API server's own origin.
    accepted = requests.post(
        url,
        params=params,
        headers={CSRF_HEADER: CSRF_VALUE, "Origin": tab.airflow.api_url, "Sec-Fetch-Site": "same-origin"},
        cookies=cookie,
        timeout=60,
    )
    assert accepted.status_code == 200, accepted.text
    answer = accepted.json()
    assert answer["delivery_id"] == delivery.id and answer["attempts"] == delivery.attempts + 1
    assert tab.ledger.attempts(delivery.id)[-1].source == "replay"


@pytest.mark.airflow_components
def test_a_delivery_is_only_reachable_through_its_own_run(tab: TabDeployment) -> None:
    editor = {CSRF_HEADER: CSRF_VALUE, **tab.bearer("editor")}
    delivery = tab.failing_delivery()
    for method, path in (("GET", "/attempts"), ("POST", "/redeliver")):
        response = requests.request(
            method,
            f"{tab.page_url}{path}",
            params={"dag_id": DAG_ID, "run_id": "another-run", "delivery_id": delivery.id},
            headers=editor,
            timeout=30,
        )
        assert response.status_code == 404, (path, response.text)
    assert tab.ledger.get(delivery.id) == delivery
