"""A DAG's webhooks as the tab, the API and the CLI manage them (face/catalog.py), on a real SQLite ledger.

What the issue asks of UI-defined webhooks, without a server: validated as ``FlowWebhook``
is, every problem beside its field; the per-DAG limit counting the file's and the UI's
together; versions and an audit row per change; an import that applies all or nothing;
an export of both kinds that imports back unchanged.
"""

from __future__ import annotations

import pytest

from airflow_webhook_provider.capture.definitions import record_definitions
from airflow_webhook_provider.core.definitions import FlowWebhook, Limits
from airflow_webhook_provider.face.catalog import (
    DefinitionProblems,
    WebhookCatalog,
    WebhookNotFound,
    WebhookReadOnly,
)
from airflow_webhook_provider.ledger import DefinitionConflict, Ledger, open_ledger

DAG = "etl"
CODE = [FlowWebhook(name="from-file", conn_id="receiver", on="failure")]


@pytest.fixture
def ledger() -> Ledger:
    opened = open_ledger()
    record_definitions(opened, DAG, CODE, recorded_by="task-runner@test:1")
    return opened


@pytest.fixture
def catalog(ledger: Ledger) -> WebhookCatalog:
    known = {"receiver", "oncall"}
    return WebhookCatalog(
        ledger,
        Limits(max_webhooks_per_flow=3),
        check_connection=lambda conn_id: None if conn_id in known else f"there is no connection {conn_id!r}",
    )


def _fields(problems: DefinitionProblems) -> dict[str, str]:
    return {problem.field: problem.message for problem in problems.problems}


class TestValidation:
    @pytest.mark.parametrize(
        ("data", "field", "words"),
        [
            pytest.param({"method": "GET", "body": "{}"}, "body", "only with POST", id="body-with-GET"),
            pytest.param(
                {"body": '{"job": "$jobNumber"}'}, "body", "unknown reference $jobNumber", id="unknown-ref"
            ),
            pytest.param(
                {"conn_id": None, "url": "https://example.com/h"},
                "conn_id",
                "pick a flow_webhook",
                id="no-conn",
            ),
            pytest.param({"conn_id": "nope"}, "conn_id", "no connection 'nope'", id="missing-conn"),
            pytest.param({"name": "a/b"}, "name", "must not contain /", id="slash"),
            pytest.param({"name": "from-file"}, "name", "the DAG file defines", id="code-name"),
            pytest.param(
                {"headers": {"Authorization": "Bearer x"}}, "headers", "credential", id="credential"
            ),
            pytest.param({"secret": "s3cr3t"}, "secret", "Secret key", id="secret"),
            pytest.param({"on": "late", "late_after": 600}, "on", "only its DAG file can add", id="late"),
        ],
    )
    def test_each_problem_names_its_field(self, catalog, data, field, words) -> None:
        with pytest.raises(DefinitionProblems) as caught:
            catalog.create(DAG, {"name": "tell", "conn_id": "receiver", **data}, actor="alice")
        assert words in _fields(caught.value)[field]
        assert "s3cr3t" not in str(caught.value)
        assert catalog.ledger.ui_definitions(DAG) == []

    def test_the_limit_counts_the_file_and_the_ui_together(self, catalog) -> None:
        catalog.create(DAG, {"name": "one", "conn_id": "receiver"}, actor="alice")
        catalog.create(DAG, {"name": "two", "conn_id": "receiver"}, actor="alice")  # 3 with the file's
        with pytest.raises(DefinitionProblems) as caught:
            catalog.create(DAG, {"name": "three", "conn_id": "receiver"}, actor="alice")
        assert "would have 4 webhooks" in _fields(caught.value)["name"]
        catalog.update(DAG, "two", {"on": "success"}, actor="alice")  # an edit adds none

    def test_names_are_unique_within_the_dag(self, catalog) -> None:
        catalog.create(DAG, {"name": "one", "conn_id": "receiver"}, actor="alice")
        with pytest.raises(DefinitionProblems) as caught:
            catalog.create(DAG, {"name": "one", "conn_id": "oncall"}, actor="bob")
        assert "has a webhook 'one' already" in _fields(caught.value)["name"]


class TestChanges:
    def test_versions_and_an_audit_row_for_each_change(self, catalog) -> None:
        created = catalog.create(DAG, {"name": "tell", "conn_id": "receiver", "on": "failure"}, actor="alice")
        assert (created.version, created.source, created.updated_by) == (1, "ui", "alice")
        edited = catalog.update(
            DAG, "tell", {"body": '{"id": "$jobId"}', "on": None}, actor="bob", expected_version=1
        )
        assert edited.version == 2 and edited.definition == {
            "name": "tell",
            "conn_id": "receiver",
            "body": '{"id": "$jobId"}',
        }
        with pytest.raises(DefinitionConflict, match="at version 2, not 1"):
            catalog.update(DAG, "tell", {"method": "PUT"}, actor="carol", expected_version=1)
        catalog.delete(DAG, "tell", actor="dave")
        history = catalog.history(DAG, "tell")
        assert [(r.action, r.version, r.actor) for r in history] == [
            ("deleted", 2, "dave"),
            ("updated", 2, "bob"),
            ("created", 1, "alice"),
        ]
        assert history[1].changed == ["body", "on"]
        assert history[1].before == {"name": "tell", "conn_id": "receiver", "on": "failure"}
        assert history[0].after is None and history[2].before is None
        with pytest.raises(WebhookNotFound):
            catalog.get(DAG, "tell")

    def test_code_defined_webhooks_are_read_only(self, catalog) -> None:
        (item,) = catalog.items(DAG)
        assert (item.name, item.source, item.version) == ("from-file", "code", None)
        assert "task-runner@test:1" in item.origin
        with pytest.raises(WebhookReadOnly, match="change it there"):
            catalog.update(DAG, "from-file", {"on": "any"}, actor="alice")
        with pytest.raises(WebhookReadOnly):
            catalog.delete(DAG, "from-file", actor="alice")


class TestImportExport:
    GOOD = "webhooks:\n- name: a\n  conn_id: receiver\n- name: b\n  conn_id: oncall\n  on: failure\n"

    def test_one_bad_entry_applies_nothing_and_every_error_is_listed(self, catalog) -> None:
        bad = (
            self.GOOD
            + "- name: c\n  conn_id: receiver\n  method: GET\n  body: x\n- name: d\n  conn_id: ghost\n"
        )
        with pytest.raises(DefinitionProblems) as caught:
            catalog.import_text(DAG, bad, actor="alice")
        fields = _fields(caught.value)
        assert "only with POST" in fields["webhooks[2].body"]
        assert "no connection 'ghost'" in fields["webhooks[3].conn_id"]
        assert catalog.ledger.ui_definitions(DAG) == [] and catalog.history(DAG) == []

    def test_an_export_imports_back_unchanged(self, catalog) -> None:
        report = catalog.import_text(DAG, self.GOOD, actor="alice")
        assert (report.created, report.updated) == (["a", "b"], [])
        exported = catalog.export(DAG)
        assert "from-file" in exported and "name: a" in exported
        again = catalog.import_text(DAG, exported, actor="alice")
        assert sorted(again.unchanged) == ["a", "b", "from-file"] and not again.created and not again.updated
        assert len(catalog.history(DAG)) == 2  # nothing unchanged is audited

    def test_replace_deletes_what_the_file_does_not_list(self, catalog) -> None:
        catalog.import_text(DAG, self.GOOD, actor="alice")
        report = catalog.import_text(
            DAG, "webhooks:\n- name: a\n  conn_id: oncall\n", actor="bob", replace=True
        )
        assert (report.updated, report.deleted) == (["a"], ["b"])
        assert [item.name for item in catalog.items(DAG)] == ["from-file", "a"]
