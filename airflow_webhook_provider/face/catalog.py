"""A DAG's webhooks as the Webhooks tab, its HTTP API and the command line manage them.

A DAG has two kinds of webhook. **Code-defined** ones come from its DAG file; the
processes that parse it record them in the ledger (the task runner when a task starts,
the DAG processor at a run's end), and here they are read-only. **UI-defined** ones are
created, edited and deleted here, stored in the ledger with a version and an audit row
per change, and fired by every run that ends after the save (the listeners read them at
each end). Both count towards ``[flow_webhook] max_webhooks_per_flow``.

A UI-defined webhook is validated exactly as a ``FlowWebhook`` in a DAG file is, plus
what the UI needs: it names a ``flow_webhook`` connection (its URL and secret live
there: nothing secret is stored with the webhook), its name is not the name of another
webhook of the DAG, and has no ``/`` (it is part of the API's paths). Every problem is
reported with the field it belongs to (:class:`DefinitionProblems`), so a form shows it
beside that field.

Usage::

    catalog = WebhookCatalog.configured(open_ledger())
    catalog.create("etl", {"name": "tell-oncall", "conn_id": "oncall", "on": "failure"}, actor="alice")
    catalog.export("etl", "yaml")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_webhook_provider.core.definitions import (
    FileFormat,
    FlowWebhook,
    Limits,
    WebhookSet,
    parse_definition_text,
)
from airflow_webhook_provider.core.exceptions import FlowWebhookError, InvalidWebhookDefinition
from airflow_webhook_provider.ledger import (
    AuditRecord,
    CodeDefinitions,
    DefinitionChange,
    DefinitionNotFound,
    Ledger,
    UiDefinition,
)

__all__ = [
    "DefinitionProblems",
    "ImportReport",
    "Problem",
    "WebhookCatalog",
    "WebhookItem",
    "WebhookNotFound",
    "WebhookReadOnly",
]

#: ``conn_id -> a problem with it, or None``: how the catalog learns that a connection exists.
ConnectionCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: the field it belongs to, and how to fix it.

    :param field: the field (``body``, ``conn_id``, ...), ``webhooks[2].body`` in a file, or ``definition``.
    :param webhook: the webhook, when known.
    """

    field: str
    message: str
    webhook: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return {"field": self.field, "message": self.message, "webhook": self.webhook}


class DefinitionProblems(FlowWebhookError):
    """A definition, or a file of them, is refused; nothing was changed.

    :param problems: every problem found, each with its field.
    """

    def __init__(self, message: str, problems: Sequence[Problem]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class WebhookNotFound(FlowWebhookError):
    """The DAG has no webhook of that name."""


class WebhookReadOnly(FlowWebhookError):
    """The webhook is defined in the DAG file: change it there."""


@dataclass(frozen=True)
class WebhookItem:
    """One webhook of a DAG, as the tab and the API list it.

    :param source: ``code`` (its DAG file) or ``ui``.
    :param definition: its fields, as a definition file lists them.
    :param version: a UI-defined webhook's version (None for code-defined ones).
    :param origin: where it comes from, in words.
    :param shadowed: a UI-defined webhook whose name the DAG file now uses too (the file's is sent).
    :param error: why a stored UI definition no longer validates, if it does not.
    """

    name: str
    source: str
    definition: dict[str, Any]
    version: int | None
    origin: str
    updated_at: float | None
    updated_by: str | None
    shadowed: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return dict(vars(self))


@dataclass
class ImportReport:
    """What an import changed."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the tab and the command line."""
        parts = [f"{len(names)} {what}" for what, names in vars(self).items()]
        return "imported: " + ", ".join(parts)


def _problems_of(exc: InvalidWebhookDefinition, *, prefix: str = "") -> list[Problem]:
    return [Problem(f"{prefix}{name}", message, exc.webhook) for name, message in exc.problems]


def _fields(webhook: FlowWebhook) -> dict[str, Any]:
    return webhook.model_dump(mode="json", exclude_defaults=True)


class WebhookCatalog:
    """Read and change a DAG's webhooks: code-defined ones read-only, UI-defined ones versioned and audited.

    :param ledger: the ledger, where both kinds are recorded.
    :param limits: ``[flow_webhook] max_webhooks_per_flow`` and ``max_body_bytes``.
    :param check_connection: tells whether a connection exists and is a ``flow_webhook``
        one (None when it is fine, else the problem); by default every connection passes.
    """

    def __init__(
        self, ledger: Ledger, limits: Limits, *, check_connection: ConnectionCheck | None = None
    ) -> None:
        self.ledger = ledger
        self.limits = limits
        self.check_connection = check_connection or (lambda conn_id: None)

    @classmethod
    def configured(cls, ledger: Ledger) -> WebhookCatalog:
        """Return the catalog over a ledger with ``[flow_webhook]``'s limits, checking connections as Airflow sees them."""
        from airflow_webhook_provider import config
        from airflow_webhook_provider.delivery.endpoints import connection_problem

        settings = config.load()
        return cls(
            ledger, config.limits(), check_connection=lambda conn_id: connection_problem(conn_id, settings)
        )

    # -- reading -------------------------------------------------------------------------

    def code_webhooks(self, dag_id: str) -> list[FlowWebhook]:
        """Return the DAG file's webhooks as last recorded (none when never recorded)."""
        return self._code(dag_id)[0]

    def _code(self, dag_id: str) -> tuple[list[FlowWebhook], CodeDefinitions | None]:
        recorded = self.ledger.code_definitions(dag_id)
        if recorded is None:
            return [], None
        return list(
            WebhookSet.from_mapping(json.loads(recorded.definitions), source=f"DAG {dag_id!r}")
        ), recorded

    def items(self, dag_id: str) -> list[WebhookItem]:
        """Return every webhook of the DAG: its file's first, then the UI's, each by name."""
        code, recorded = self._code(dag_id)
        taken = {webhook.name for webhook in code}
        found = [
            WebhookItem(
                name=webhook.name,
                source="code",
                definition=_fields(webhook),
                version=None,
                origin=f"DAG file, as {recorded.recorded_by} read it" if recorded is not None else "DAG file",
                updated_at=recorded.recorded_at if recorded is not None else None,
                updated_by=None,
            )
            for webhook in sorted(code, key=lambda w: w.name)
        ]
        found += [
            self._ui_item(stored, shadowed=stored.name in taken)
            for stored in self.ledger.ui_definitions(dag_id)
        ]
        return found

    def file_recorded(self, dag_id: str) -> bool:
        """Whether the DAG file's webhooks are recorded (a task of the DAG started since the provider was installed)."""
        return self.ledger.code_definitions(dag_id) is not None

    def _ui_item(self, stored: UiDefinition, *, shadowed: bool = False) -> WebhookItem:
        error = None
        try:
            FlowWebhook.from_mapping(stored.definition)
        except InvalidWebhookDefinition as exc:
            error = str(exc)
        return WebhookItem(
            name=stored.name,
            source="ui",
            definition=stored.definition,
            version=stored.version,
            origin=f"Airflow UI, version {stored.version}, by {stored.updated_by}",
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
            shadowed=shadowed,
            error=error,
        )

    def get(self, dag_id: str, name: str) -> WebhookItem:
        """Return one webhook of the DAG.

        :raises WebhookNotFound: when the DAG has none of that name.
        """
        for item in self.items(dag_id):
            if item.name == name and not item.shadowed:
                return item
        raise WebhookNotFound(f"DAG {dag_id!r} has no webhook {name!r}")

    def webhook(self, dag_id: str, name: str) -> FlowWebhook:
        """Return one webhook of the DAG as a definition (to test it).

        :raises WebhookNotFound: when the DAG has none of that name.
        :raises InvalidWebhookDefinition: when a stored UI definition no longer validates.
        """
        return FlowWebhook.from_mapping(self.get(dag_id, name).definition)

    def history(self, dag_id: str, name: str | None = None) -> list[AuditRecord]:
        """Return the changes to the DAG's UI-defined webhooks (one webhook's, with ``name``), newest first."""
        return self.ledger.definition_audit(dag_id, name=name)

    def export(
        self, dag_id: str, file_format: FileFormat = "yaml", *, code: Sequence[FlowWebhook] | None = None
    ) -> str | None:
        """Return every webhook of the DAG (file and UI) as a definition file; None when it has none.

        :param code: the DAG file's webhooks, parsed afresh (default: as last recorded).
        """
        if code is None:
            code = self.code_webhooks(dag_id)
        taken = {webhook.name for webhook in code}
        ui = [
            FlowWebhook.from_mapping(s.definition)
            for s in self.ledger.ui_definitions(dag_id)
            if s.name not in taken
        ]
        if not code and not ui:
            return None
        return WebhookSet(*code, *ui).dump(file_format)

    # -- validating ----------------------------------------------------------------------

    def _ui_rules(self, webhook: FlowWebhook, *, prefix: str = "") -> list[Problem]:
        problems = []
        if "/" in webhook.name:
            problems.append(
                Problem(
                    f"{prefix}name",
                    "must not contain /; it names the webhook in the API's paths",
                    webhook.name,
                )
            )
        if webhook.on == "late":
            problems.append(
                Problem(
                    f"{prefix}on",
                    "a late webhook is a deadline alert of the DAG, which only its DAG file can add; define it "
                    'there: FlowWebhooks(FlowWebhook(..., on="late", late_after=...)).attach(dag)',
                    webhook.name,
                )
            )
        if webhook.conn_id is None:
            problems.append(
                Problem(
                    f"{prefix}conn_id",
                    "pick a flow_webhook connection: a webhook defined in the UI sends through a connection, "
                    "which holds its URL and secret key (nothing secret is stored with the webhook)",
                    webhook.name,
                )
            )
        else:
            trouble = self.check_connection(webhook.conn_id)
            if trouble is not None:
                problems.append(Problem(f"{prefix}conn_id", trouble, webhook.name))
        return problems

    def _validated(self, data: Mapping[str, Any]) -> tuple[FlowWebhook | None, list[Problem]]:
        try:
            webhook = FlowWebhook.from_mapping(data)
        except InvalidWebhookDefinition as exc:
            return None, _problems_of(exc)
        return webhook, self._ui_rules(webhook)

    def _check_room(self, dag_id: str, names_after: Sequence[str]) -> list[Problem]:
        """Refuse more webhooks (file and UI together) than the limit allows."""
        code = self.code_webhooks(dag_id)
        total = len({webhook.name for webhook in code} | set(names_after))
        limit = self.limits.max_webhooks_per_flow
        if total <= limit:
            return []
        return [
            Problem(
                "name",
                f"DAG {dag_id!r} would have {total} webhooks (its file's and the UI's together), more than the "
                f"{limit} allowed per DAG; delete one first, or ask an administrator to raise "
                "[flow_webhook] max_webhooks_per_flow",
            )
        ]

    def _check_body(self, webhook: FlowWebhook, *, prefix: str = "") -> list[Problem]:
        size = len((webhook.body or "").encode("utf-8"))
        if size <= self.limits.max_body_bytes:
            return []
        return [
            Problem(
                f"{prefix}body",
                f"is {size} bytes, more than [flow_webhook] max_body_bytes ({self.limits.max_body_bytes})",
                webhook.name,
            )
        ]

    def _code_names(self, dag_id: str) -> set[str]:
        return {webhook.name for webhook in self.code_webhooks(dag_id)}

    @staticmethod
    def _refuse(what: str, problems: Sequence[Problem]) -> None:
        if problems:
            lines = "; ".join(f"{p.field}: {p.message}" for p in problems)
            raise DefinitionProblems(f"{what}: {lines}", problems)

    def validate(self, dag_id: str, data: Mapping[str, Any], *, replacing: str | None = None) -> FlowWebhook:
        """Check a UI definition as a save would, and return it.

        :param replacing: the name of the webhook this definition replaces (an edit).
        :raises DefinitionProblems: with every problem found, each with its field.
        """
        webhook, problems = self._validated(data)
        if webhook is not None:
            problems += self._check_body(webhook)
            if webhook.name in self._code_names(dag_id):
                problems.append(
                    Problem(
                        "name",
                        f"the DAG file defines a webhook {webhook.name!r}; choose another name",
                        webhook.name,
                    )
                )
            ui_names = [s.name for s in self.ledger.ui_definitions(dag_id)]
            if webhook.name != replacing and webhook.name in ui_names:
                problems.append(
                    Problem(
                        "name",
                        f"DAG {dag_id!r} has a webhook {webhook.name!r} already; choose another name",
                        webhook.name,
                    )
                )
            if replacing is None:
                problems += self._check_room(dag_id, [*ui_names, webhook.name])
        label = (
            f"webhook {data.get('name')!r} of DAG {dag_id!r}"
            if data.get("name")
            else f"a webhook of DAG {dag_id!r}"
        )
        self._refuse(label, problems)
        assert webhook is not None  # no problem means it validated
        return webhook

    # -- changing ------------------------------------------------------------------------

    def create(self, dag_id: str, data: Mapping[str, Any], *, actor: str, via: str = "api") -> WebhookItem:
        """Create a UI-defined webhook.

        :raises DefinitionProblems: when it is refused, with every problem found.
        :raises DefinitionConflict: when one of that name was created meanwhile.
        """
        webhook = self.validate(dag_id, data)
        (stored,) = self.ledger.change_ui_definitions(
            dag_id, [DefinitionChange(webhook.name, _fields(webhook), "create")], actor=actor, via=via
        )
        assert stored is not None
        return self._ui_item(stored)

    def _ui_stored(self, dag_id: str, name: str) -> UiDefinition:
        for stored in self.ledger.ui_definitions(dag_id):
            if stored.name == name:
                return stored
        if name in self._code_names(dag_id):
            raise WebhookReadOnly(
                f"webhook {name!r} of DAG {dag_id!r} is defined in the DAG file; change it there"
            )
        raise WebhookNotFound(f"DAG {dag_id!r} has no webhook {name!r}")

    def update(
        self,
        dag_id: str,
        name: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        expected_version: int | None = None,
        via: str = "api",
    ) -> WebhookItem:
        """Change fields of a UI-defined webhook; a field set to None goes back to its default.

        :param changes: the fields to change (``name`` may not change: create another webhook).
        :param expected_version: refuse the change unless the webhook is still at this version.
        :raises WebhookNotFound: when there is no such webhook.
        :raises WebhookReadOnly: when it is defined in the DAG file.
        :raises DefinitionProblems: when the result is refused, with every problem found.
        :raises DefinitionConflict: when the webhook changed since ``expected_version``.
        """
        stored = self._ui_stored(dag_id, name)
        if "name" in changes and changes["name"] != name:
            self._refuse(
                f"webhook {name!r} of DAG {dag_id!r}",
                [
                    Problem(
                        "name",
                        "a webhook's name does not change; create a new webhook and delete this one",
                        name,
                    )
                ],
            )
        merged = {**stored.definition, **changes, "name": name}
        merged = {key: value for key, value in merged.items() if value is not None}
        webhook = self.validate(dag_id, merged, replacing=name)
        (after,) = self.ledger.change_ui_definitions(
            dag_id,
            [DefinitionChange(name, _fields(webhook), "update", expected_version=expected_version)],
            actor=actor,
            via=via,
        )
        assert after is not None
        return self._ui_item(after)

    def delete(
        self, dag_id: str, name: str, *, actor: str, expected_version: int | None = None, via: str = "api"
    ) -> None:
        """Delete a UI-defined webhook; runs that end afterwards do not send it.

        :raises WebhookNotFound: when there is no such webhook.
        :raises WebhookReadOnly: when it is defined in the DAG file.
        :raises DefinitionConflict: when it changed since ``expected_version``.
        """
        self._ui_stored(dag_id, name)
        try:
            self.ledger.change_ui_definitions(
                dag_id,
                [DefinitionChange(name, None, "delete", expected_version=expected_version)],
                actor=actor,
                via=via,
            )
        except DefinitionNotFound as exc:
            raise WebhookNotFound(str(exc)) from None

    def import_text(
        self,
        dag_id: str,
        text: str,
        *,
        actor: str,
        file_format: FileFormat | None = None,
        replace: bool = False,
        via: str = "import",
    ) -> ImportReport:
        """Create or update the UI-defined webhooks a definition file lists: all of them, or none.

        Every entry is checked first; if any is refused, nothing changes. An entry that
        repeats a code-defined webhook exactly (an export lists those too) is left alone;
        one that differs from it is refused.

        :param replace: also delete the UI-defined webhooks the file does not list.
        :raises DefinitionProblems: with every problem of every entry.
        """
        try:
            data = parse_definition_text(text, file_format, "the file")
        except InvalidWebhookDefinition as exc:
            raise DefinitionProblems(str(exc), _problems_of(exc)) from None
        problems: list[Problem] = []
        try:
            WebhookSet.from_mapping(data, source="the file")
        except InvalidWebhookDefinition as exc:
            problems += _problems_of(exc)
        # The entries that validate as FlowWebhook, by position: the UI's own rules apply to those.
        listed: list[tuple[int, FlowWebhook]] = []
        items = data.get("webhooks") if isinstance(data, Mapping) else None
        for index, item in enumerate(items if isinstance(items, list) else []):
            try:
                listed.append((index, FlowWebhook.from_mapping(item)))
            except InvalidWebhookDefinition:
                continue  # reported above
        code = {webhook.name: webhook for webhook in self.code_webhooks(dag_id)}
        stored = {s.name: s for s in self.ledger.ui_definitions(dag_id)}
        report = ImportReport()
        changes: list[DefinitionChange] = []
        for index, webhook in listed:
            prefix = f"webhooks[{index}]."
            if webhook.name in code:
                if code[webhook.name] == webhook:
                    report.unchanged.append(webhook.name)
                else:
                    problems.append(
                        Problem(
                            f"{prefix}name",
                            f"the DAG file defines {webhook.name!r} differently; change it in the DAG file, "
                            "or give this entry another name",
                            webhook.name,
                        )
                    )
                continue
            problems += self._ui_rules(webhook, prefix=prefix) + self._check_body(webhook, prefix=prefix)
            fields = _fields(webhook)
            current = stored.get(webhook.name)
            if current is not None and current.definition == fields:
                report.unchanged.append(webhook.name)
                continue
            (report.updated if current is not None else report.created).append(webhook.name)
            changes.append(DefinitionChange(webhook.name, fields, "upsert"))
        listed_names = {webhook.name for _, webhook in listed}
        if replace:
            for name in sorted(set(stored) - listed_names):
                report.deleted.append(name)
                changes.append(DefinitionChange(name, None, "delete"))
        kept = set(stored) - set(report.deleted)
        problems += self._check_room(dag_id, sorted(kept | (listed_names - set(code))))
        self._refuse(f"importing into DAG {dag_id!r}", problems)
        if changes:
            self.ledger.change_ui_definitions(dag_id, changes, actor=actor, via=via)
        return report
