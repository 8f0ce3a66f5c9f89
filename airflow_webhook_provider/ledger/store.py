"""The delivery ledger: the outbox between capture and delivery, in a database of its own.

Capture records each message ``pending`` (:meth:`Ledger.record`); the id is
deterministic, so a second capture of the same end is ignored. Senders claim messages
(:meth:`Ledger.claim_due` for the dispatcher, :meth:`Ledger.claim_ids` for an inline
sender), holding a lease (``claimed_until``) that no other sender may take before it
expires; if a sender dies, its lease runs out and another takes the message over.
Outcomes (:meth:`Ledger.record_outcomes`) move a message to ``delivered``, or to
``failed`` with a next attempt time, and finally to ``dead`` past the maximum age; they
also keep each endpoint's health and circuit breaker.

Claiming is what keeps concurrent senders apart: on PostgreSQL rows are claimed with
``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite every transaction begins with
``BEGIN IMMEDIATE``, so one writer claims at a time.

This module stores and reads; it imports nothing that sends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)

from airflow_webhook_provider.core.exceptions import FlowWebhookError
from airflow_webhook_provider.core.outcome import DeliveryResult
from airflow_webhook_provider.core.redaction import redact_url
from airflow_webhook_provider.core.retry import RetrySchedule
from airflow_webhook_provider.core.states import SENDABLE, CaptureSource, CircuitState, DeliveryState
from airflow_webhook_provider.ledger.schema import (
    SCHEMA_VERSION,
    alerts,
    attempts,
    code_definitions,
    definition_audit,
    deliveries,
    dispatchers,
    endpoints,
    metadata,
    run_ends,
    schema_info,
    ui_definitions,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "AttemptRecord",
    "AuditRecord",
    "Built",
    "CodeDefinitions",
    "DefinitionChange",
    "DefinitionConflict",
    "DefinitionNotFound",
    "Delivery",
    "DispatcherRecord",
    "EndpointHealth",
    "Ledger",
    "LedgerError",
    "NewDelivery",
    "Outcome",
    "OutcomeReport",
    "UiDefinition",
    "engine_for",
]

EXCERPT_LIMIT = 4096
#: An endpoint's concurrency limit until a sender has read its connection's ``max_concurrency``.
DEFAULT_MAX_CONCURRENCY = 10
#: The PostgreSQL advisory lock held while the schema is created or migrated.
_SCHEMA_LOCK_KEY = 0x466C6F77576562
#: The PostgreSQL channel a new message is announced on, so dispatchers wake at once.
NOTIFY_CHANNEL = "flow_webhook_pending"


class LedgerError(FlowWebhookError):
    """The ledger cannot be opened, is newer than this release, or refuses an operation."""


class DefinitionNotFound(LedgerError):
    """No UI-defined webhook of that name for that DAG."""


class DefinitionConflict(LedgerError):
    """A UI-defined webhook exists already, or changed since the version the change was based on."""


@dataclass(frozen=True)
class CodeDefinitions:
    """A DAG's code-defined webhooks, as the process that parsed its file last recorded them.

    :param definitions: the definition file's mapping (JSON).
    :param recorded_by: ``role@host:pid`` of that process (a task runner, the DAG processor).
    """

    dag_id: str
    digest: str
    definitions: str
    recorded_at: float
    recorded_by: str


@dataclass(frozen=True)
class UiDefinition:
    """The current version of one webhook defined in the Airflow UI.

    :param definition: the ``FlowWebhook`` fields, as a definition file lists them.
    """

    dag_id: str
    name: str
    version: int
    definition: dict[str, Any]
    created_at: float
    created_by: str
    updated_at: float
    updated_by: str

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return dict(vars(self))


@dataclass(frozen=True)
class DefinitionChange:
    """One change to a DAG's UI-defined webhooks.

    :param name: the webhook.
    :param definition: its new fields; None deletes it.
    :param mode: ``create`` (refused when it exists), ``update`` (refused when it does not),
        ``upsert`` (either), or ``delete``.
    :param expected_version: refuse the change unless the stored version is this one.
    """

    name: str
    definition: dict[str, Any] | None
    mode: str
    expected_version: int | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One change to a UI-defined webhook: who, when, through what, and what changed."""

    id: int
    dag_id: str
    name: str
    version: int
    action: str
    actor: str
    via: str
    at: float
    changed: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return dict(vars(self))


@dataclass(frozen=True)
class NewDelivery:
    """A message as capture records it: what it reports and where it goes.

    :param id: the delivery id.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param clear_number: the run's clear number when it ended.
    :param output_name: the output task, or empty.
    :param webhook: the definition's name.
    :param event: ``success``, ``failure`` or ``test``.
    :param job_status: the state that triggered it.
    :param capture: how it was captured.
    :param conn_id: the connection to read at send time, or None.
    :param target_url: the URL of a webhook without a connection, or None.
    :param endpoint: the endpoint key (see ``delivery.endpoints.endpoint_key``).
    :param definition: the definition as JSON, or None for a test message.
    :param refs: the values of the event's references, the delivery id included.
    :param event_at: when the end happened (UNIX seconds), if known.
    :param built: the exact request, for a message built when it is recorded (an operator alert).
    """

    id: str
    dag_id: str
    run_id: str
    clear_number: int
    output_name: str
    webhook: str
    event: str
    job_status: str
    capture: CaptureSource
    conn_id: str | None
    target_url: str | None
    endpoint: str
    definition: str | None = field(repr=False)
    refs: Mapping[str, str] = field(repr=False)
    event_at: float | None = None
    built: Built | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Built:
    """The exact request a message sends, fixed the first time it is built.

    :param url: the URL as sent (redacted before it is stored).
    :param query: the query string appended to the endpoint's URL.
    :param method: the HTTP method.
    :param headers: the definition's own headers (never the connection's).
    :param body: the exact body, or None.
    """

    url: str
    query: str
    method: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """What one send did to one message, for :meth:`Ledger.record_outcomes`.

    :param delivery_id: the message.
    :param result: the attempts and their result.
    :param retry: whether to try again if it was not delivered (the connection's retry on failure).
    :param built: the request, when this send built it.
    :param row: the message as the sender claimed it; its attempt count and creation time
        are read from the ledger when it is not given.
    """

    delivery_id: str
    result: DeliveryResult
    retry: bool
    built: Built | None = None
    row: Delivery | None = field(default=None, repr=False)


@dataclass
class OutcomeReport:
    """What recording outcomes changed: each message's state, and what operators are alerted about.

    :param states: the new state of each message.
    :param dead: ``(delivery id, endpoint)`` of each message that became dead.
    :param disabled: ``(endpoint, reason)`` of each endpoint that was disabled.
    :param recovered: each endpoint that answered again after its circuit opened or it was disabled.
    """

    states: dict[str, str] = field(default_factory=dict)
    dead: list[tuple[str, str]] = field(default_factory=list)
    disabled: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AttemptRecord:
    """One stored attempt."""

    number: int
    started_at: float
    duration_seconds: float
    status_code: int | None
    error: str | None
    response_excerpt: str
    source: str
    sender: str


# Not frozen: a frozen dataclass of 32 fields costs three times as much to build, and the
# dispatcher builds one per message it claims. Nothing changes a Delivery after it is read.
@dataclass(slots=True)
class Delivery:
    """One stored message (a row of the ledger)."""

    id: str
    dag_id: str
    run_id: str
    clear_number: int
    output_name: str
    webhook: str
    event: str
    job_status: str
    capture: str
    conn_id: str | None
    target_url: str | None
    endpoint: str
    definition: str | None
    refs: Mapping[str, str]
    built_at: float | None
    url: str
    query: str
    method: str
    headers: Mapping[str, str]
    body: bytes | None
    state: str
    forced: bool
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None
    event_at: float | None
    created_at: float
    updated_at: float
    delivered_at: float | None
    claimed_by: str | None
    claimed_until: float | None

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        """Build from a database row mapping."""
        values = dict(row)
        values["headers"] = json.loads(values["headers"] or "{}")
        values["refs"] = json.loads(values["refs"] or "{}")
        values["forced"] = bool(values["forced"])
        return cls(**values)

    @property
    def built(self) -> Built | None:
        """The request this message sends, once it has been built."""
        if self.built_at is None:
            return None
        return Built(url=self.url, query=self.query, method=self.method, headers=self.headers, body=self.body)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view, without the body bytes."""
        return {
            "id": self.id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "clear_number": self.clear_number,
            "output": self.output_name,
            "webhook": self.webhook,
            "event": self.event,
            "job_status": self.job_status,
            "capture": self.capture,
            "conn_id": self.conn_id,
            "endpoint": self.endpoint,
            "url": self.url,
            "method": self.method,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "event_at": self.event_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "delivered_at": self.delivered_at,
        }


@dataclass(frozen=True)
class EndpointHealth:
    """One endpoint's health, as the senders recorded it."""

    key: str
    circuit: str
    consecutive_failures: int
    failing_since: float | None
    last_success_at: float | None
    last_failure_at: float | None
    last_error: str | None
    opened_at: float | None
    opened_reason: str | None
    probes: int
    next_probe_at: float | None
    probe_until: float | None
    disabled_at: float | None
    disabled_reason: str | None
    recovering: bool
    max_concurrency: int | None
    rate_per_minute: int | None
    tokens: float | None
    tokens_at: float | None
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return dict(vars(self))


@dataclass(frozen=True)
class DispatcherRecord:
    """One dispatcher's heartbeat."""

    name: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    sent: int
    delivered: int

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return dict(vars(self))


_engines: dict[str, Engine] = {}


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses no committed row when a process dies (only on power loss),
        # which is what the outbox guarantee is about, and spares an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_for(url: str) -> Engine:
    """Return the process-wide engine for a database URL (made once per process)."""
    engine = _engines.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            _sqlite_setup(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        engine = _engines.setdefault(url, engine)
    return engine


# Columns added by schema version 2, with the value old rows get.
_V2_COLUMNS = (
    ("flow_webhook_deliveries", "clear_number", "INTEGER NOT NULL DEFAULT 0"),
    ("flow_webhook_deliveries", "capture", "VARCHAR(16) NOT NULL DEFAULT 'callback'"),
    ("flow_webhook_deliveries", "endpoint", "VARCHAR(300) NOT NULL DEFAULT ''"),
    ("flow_webhook_deliveries", "definition", "TEXT"),
    ("flow_webhook_deliveries", "refs", "TEXT NOT NULL DEFAULT '{}'"),
    ("flow_webhook_deliveries", "built_at", "FLOAT"),
    ("flow_webhook_deliveries", "forced", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("flow_webhook_deliveries", "event_at", "FLOAT"),
    ("flow_webhook_attempts", "sender", "VARCHAR(120) NOT NULL DEFAULT ''"),
)


def _migrate_to_2(connection: Connection) -> None:
    """Add the columns of version 2; rows of version 1 were built when they were recorded."""
    for table, column, ddl in _V2_COLUMNS:
        connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
    connection.execute(
        update(deliveries).values(
            built_at=deliveries.c.created_at,
            endpoint=func.coalesce(deliveries.c.conn_id, "url:" + func.coalesce(deliveries.c.target_url, "")),
        )
    )


class Ledger:
    """Record messages and attempts, hand them to senders, and keep endpoint health.

    Usage::

        ledger = Ledger.open("sqlite:////opt/airflow/flow_webhooks.db")
        ledger.record([new_delivery])
        for row in ledger.claim_due("dispatcher-1", limit=50, lease_seconds=60):
            ...
        ledger.record_outcomes([Outcome(row.id, result, retry=True)], source="dispatcher", schedule=schedule)

    :param engine: a SQLAlchemy engine for the ledger database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._schema_checked = False

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Open (and on first use, create or migrate) the ledger at a SQLAlchemy URL."""
        ledger = cls(engine_for(url))
        ledger.ensure_schema()
        return ledger

    @property
    def dialect(self) -> str:
        """The database dialect name (``sqlite``, ``postgresql``, ...)."""
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        """Create missing tables, migrate an older schema, and refuse a newer one.

        :raises LedgerError: when the ledger was written by a newer release.
        """
        if self._schema_checked:
            return
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                # Several processes may open a new ledger at once (two dispatchers starting);
                # one creates the tables while the others wait, then find them.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            known = (
                connection.execute(select(schema_info.c.version)).scalar()
                if self._has_schema(connection)
                else None
            )
            if known is not None and known > SCHEMA_VERSION:
                raise LedgerError(
                    f"the flow webhook ledger has schema version {known}, newer than this release "
                    f"understands ({SCHEMA_VERSION}); upgrade airflow-webhook-provider"
                )
            if known == 1:
                _migrate_to_2(connection)
            metadata.create_all(connection, checkfirst=True)
            if known is None:
                connection.execute(insert(schema_info).values(id=1, version=SCHEMA_VERSION))
            elif known < SCHEMA_VERSION:
                connection.execute(update(schema_info).values(version=SCHEMA_VERSION))
        self._schema_checked = True

    @staticmethod
    def _has_schema(connection: Connection) -> bool:
        return connection.dialect.has_table(connection, schema_info.name)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def _insert_ignoring_duplicates(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        raise LedgerError(f"the ledger supports SQLite and PostgreSQL, not {self.dialect}")

    # -- capture -------------------------------------------------------------------------

    def record(self, new: Sequence[NewDelivery]) -> None:
        """Write messages as ``pending``, due now, in one transaction; a known id is left as it is.

        A second capture of the same end (a listener after a callback, a late DAG-level
        callback) has the same delivery id, so it adds nothing. A message to a disabled
        endpoint is recorded ``held``: kept, not sent, until the endpoint is enabled.
        """
        if not new:
            return
        now = time.time()
        with self._transaction() as connection:
            disabled = set(connection.execute(_DISABLED_KEYS).scalars())
            rows = [self._new_row(item, now, held=item.endpoint in disabled) for item in new]
            connection.execute(self._insert_ignoring_duplicates(deliveries), rows)
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")

    @staticmethod
    def _new_row(item: NewDelivery, now: float, *, held: bool) -> dict[str, Any]:
        built = item.built
        return {
            "id": item.id,
            "dag_id": item.dag_id,
            "run_id": item.run_id,
            "clear_number": item.clear_number,
            "output_name": item.output_name,
            "webhook": item.webhook,
            "event": item.event,
            "job_status": item.job_status,
            "capture": str(item.capture),
            "conn_id": item.conn_id,
            "target_url": item.target_url,
            "endpoint": item.endpoint,
            "definition": item.definition,
            "refs": json.dumps(dict(item.refs), sort_keys=True),
            "built_at": now if built is not None else None,
            "url": redact_url(built.url) if built is not None else "",
            "query": built.query if built is not None else "",
            "method": built.method if built is not None else "",
            "headers": json.dumps(dict(built.headers), sort_keys=True) if built is not None else "{}",
            "body": built.body if built is not None else None,
            "state": str(DeliveryState.HELD if held else DeliveryState.PENDING),
            "forced": False,
            "attempts": 0,
            "next_attempt_at": None if held else now,
            "event_at": item.event_at,
            "created_at": now,
            "updated_at": now,
        }

    # -- claiming ------------------------------------------------------------------------

    @staticmethod
    def _due(now: float) -> ColumnElement[bool]:
        """Due: sendable, next attempt time past, no unexpired lease held by another."""
        return (
            deliveries.c.state.in_([str(state) for state in SENDABLE])
            & (deliveries.c.next_attempt_at <= now)
            & or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < now)
        )

    def _open_circuits(self, connection: Connection) -> dict[str, Any]:
        return {row.key: row for row in connection.execute(_OPEN_CIRCUITS)}

    def _lease(self, connection: Connection, ids: Sequence[str], owner: str, until: float) -> list[Delivery]:
        """Lease messages to ``owner`` and return them, in one statement."""
        if not ids:
            return []
        rows = connection.execute(_LEASE, {"ids": list(ids), "owner": owner, "until": until})
        return [Delivery.from_row(row._mapping) for row in rows]

    def claim_due(self, owner: str, *, limit: int = 100, lease_seconds: float = 120.0) -> list[Delivery]:
        """Claim up to ``limit`` due messages for ``owner`` alone, oldest due first.

        Messages of an endpoint whose circuit is open are left alone, except one probe
        when its next probe time has come, and so are those of a disabled endpoint
        (messages sent by hand, which are forced, go anyway). No endpoint gets more
        claimed messages than its ``max_concurrency``, over every claimer of the ledger,
        nor more than its rate limit allows.

        :param owner: the claimer's name.
        :param limit: the most messages to claim.
        :param lease_seconds: how long the claim holds.
        """
        now = time.time()
        skip_locked = self.dialect == "postgresql"
        with self._transaction() as connection:
            gated = {row.key: row for row in connection.execute(_GATED_ENDPOINTS)}
            candidates = connection.execute(
                _DUE_CANDIDATES[(skip_locked, bool(gated))],
                {"now": now, "limit": limit * 2, "gated": list(gated)},
            ).all()
            ids = self._within_limits(connection, candidates, limit, now)
            for key, circuit in gated.items():
                if len(ids) >= limit:
                    break
                probe_free = circuit.probe_until is None or circuit.probe_until < now
                if (
                    circuit.disabled_at is not None
                    or circuit.next_probe_at is None
                    or circuit.next_probe_at > now
                    or not probe_free
                ):
                    continue
                probe = self._claim_probe(connection, key, now, skip_locked, until=now + lease_seconds)
                if probe is not None:
                    ids.append(probe)
            return self._lease(connection, ids, owner, now + lease_seconds)

    def _within_limits(
        self, connection: Connection, candidates: Sequence[Any], limit: int, now: float
    ) -> list[str]:
        """Choose candidates, oldest first, that keep each endpoint within its concurrency and rate limits."""
        if not candidates:
            return []
        keys = sorted({row.endpoint for row in candidates})
        if self.dialect == "postgresql":
            # Claimers of one endpoint take turns here, so both cannot count the same free slots.
            connection.execute(
                self._insert_ignoring_duplicates(endpoints),
                [
                    {
                        "key": key,
                        "circuit": str(CircuitState.CLOSED),
                        "consecutive_failures": 0,
                        "probes": 0,
                        "updated_at": now,
                    }
                    for key in keys
                ],
            )
            limits = {row.key: row for row in connection.execute(_LIMITS.with_for_update(), {"keys": keys})}
        else:
            limits = {row.key: row for row in connection.execute(_LIMITS, {"keys": keys})}
        busy: dict[str, int] = dict(connection.execute(_IN_FLIGHT, {"keys": keys, "now": now}).tuples().all())
        room: dict[str, int] = {}
        buckets: dict[str, float] = {}
        for key in keys:
            row = limits.get(key)
            room[key] = (
                (row.max_concurrency if row is not None else None) or DEFAULT_MAX_CONCURRENCY
            ) - busy.get(key, 0)
            if row is not None and row.rate_per_minute:
                buckets[key] = _refilled(row.tokens, row.tokens_at, row.rate_per_minute, now)
                room[key] = min(room[key], int(buckets[key]))
        chosen: list[str] = []
        for row in candidates:
            if len(chosen) >= limit:
                break
            if room[row.endpoint] > 0:
                chosen.append(row.id)
                room[row.endpoint] -= 1
                if row.endpoint in buckets:
                    buckets[row.endpoint] -= 1
        if buckets:
            connection.execute(
                _SPEND_TOKENS,
                [{"b_key": key, "b_tokens": tokens, "b_at": now} for key, tokens in buckets.items()],
            )
        return chosen

    def _claim_probe(
        self, connection: Connection, key: str, now: float, skip_locked: bool, *, until: float
    ) -> str | None:
        """Choose the oldest due message of an open endpoint as its probe, if no other claimer probes it."""
        lock = select(endpoints.c.key).where(endpoints.c.key == key)
        if skip_locked and connection.execute(lock.with_for_update(skip_locked=True)).first() is None:
            return None  # another dispatcher is choosing this endpoint's probe right now
        query = (
            select(deliveries.c.id)
            .where(self._due(now) & (deliveries.c.endpoint == key))
            .order_by(deliveries.c.next_attempt_at)
            .limit(1)
        )
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        probe = connection.execute(query).scalar()
        if probe is not None:
            connection.execute(update(endpoints).where(endpoints.c.key == key).values(probe_until=until))
        return probe

    def claim_ids(
        self,
        ids: Sequence[str],
        owner: str,
        *,
        lease_seconds: float,
        skip_open_circuits: bool = True,
        within_limits: bool = False,
    ) -> list[Delivery]:
        """Claim those of the given messages that are due and held by no claimer (this one included).

        A message recorded before and already sent, being sent, or waiting for its next
        attempt time (a receiver's ``Retry-After``) is left alone.

        :param ids: the messages.
        :param owner: the claimer's name.
        :param lease_seconds: how long the claim holds.
        :param skip_open_circuits: leave messages of an endpoint whose circuit is open to the dispatcher.
        :param within_limits: claim no more than each endpoint's concurrency and rate limits allow.
        :return: the messages claimed, in no particular order.
        """
        if not ids:
            return []
        now = time.time()
        with self._transaction() as connection:
            open_circuits = self._open_circuits(connection) if skip_open_circuits else {}
            found = connection.execute(
                _DUE_OF_IDS[(self.dialect == "postgresql", bool(open_circuits))],
                {"now": now, "ids": list(ids), "open": list(open_circuits)},
            ).all()
            chosen = (
                self._within_limits(connection, found, len(found), now)
                if within_limits
                else [row.id for row in found]
            )
            return self._lease(connection, chosen, owner, now + lease_seconds)

    def release(self, ids: Sequence[str], owner: str) -> None:
        """Give up claims that were not used (a dispatcher stopping), so others may send them now."""
        if not ids:
            return
        with self._transaction() as connection:
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(list(ids)) & (deliveries.c.claimed_by == owner))
                .values(claimed_by=None, claimed_until=None)
            )

    def renew(self, ids: Sequence[str], owner: str, *, lease_seconds: float) -> None:
        """Extend ``owner``'s claims on messages it is still sending."""
        if not ids:
            return
        with self._transaction() as connection:
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(list(ids)) & (deliveries.c.claimed_by == owner))
                .values(claimed_until=time.time() + lease_seconds)
            )

    def force(self, delivery_id: str) -> Delivery | None:
        """Make one message due now, whatever its state, for a sender to take (redeliver by hand).

        It is sent even if its endpoint's circuit is open.

        :return: the message as it was, or None when no message has that id.
        :raises LedgerError: when a sender holds it right now.
        """
        now = time.time()
        query = select(deliveries).where(deliveries.c.id == delivery_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        with self._transaction() as connection:
            row = connection.execute(query).first()
            if row is None:
                return None
            delivery = Delivery.from_row(row._mapping)
            self._refuse_if_claimed(delivery, now)
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(state=str(DeliveryState.PENDING), forced=True, next_attempt_at=now, updated_at=now)
            )
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")
        return delivery

    @staticmethod
    def _refuse_if_claimed(delivery: Delivery, now: float, owner: str | None = None) -> None:
        if (
            delivery.claimed_until is not None
            and delivery.claimed_until > now
            and delivery.claimed_by != owner
        ):
            raise LedgerError(
                f"delivery {delivery.id} is being sent by {delivery.claimed_by} right now; try again "
                f"in {delivery.claimed_until - now:.0f} s"
            )

    def claim(self, delivery_id: str, owner: str, *, lease_seconds: float = 120.0) -> Delivery | None:
        """Claim one message by id, whatever its state, unless another claimer holds it.

        :return: the message, or None when it does not exist.
        :raises LedgerError: when another claimer's lease has not expired.
        """
        now = time.time()
        query = select(deliveries).where(deliveries.c.id == delivery_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        with self._transaction() as connection:
            row = connection.execute(query).first()
            if row is None:
                return None
            self._refuse_if_claimed(Delivery.from_row(row._mapping), now, owner)
            (delivery,) = self._lease(connection, [delivery_id], owner, now + lease_seconds)
        return delivery

    # -- outcomes ------------------------------------------------------------------------

    def record_outcomes(
        self,
        outcomes: Sequence[Outcome],
        *,
        source: str,
        schedule: RetrySchedule,
        circuit_threshold: int = 3,
        sender: str = "",
        disable_after_seconds: float = 0.0,
    ) -> OutcomeReport:
        """Store the attempts of sent messages, move each to its next state, and update endpoint health.

        :param outcomes: what each send did.
        :param source: how it was sent: ``inline``, ``dispatcher``, ``replay`` or ``test``.
        :param sender: the process that sent it (``role@host:pid``).
        :param schedule: when to try again, and when a message is dead.
        :param circuit_threshold: consecutive receiver failures that open an endpoint's circuit.
        :param disable_after_seconds: disable an endpoint failing without a success for this long (0: never).
        :return: the new states, and what changed that operators are alerted about.
        """
        report = OutcomeReport()
        if not outcomes:
            return report
        states = report.states
        now = time.time()
        with self._transaction() as connection:
            # A claimed message's counters cannot change while its sender holds it: the
            # sender's copy is as good as a read (only unclaimed sends need one).
            current: dict[str, Any] = {o.delivery_id: o.row for o in outcomes if o.row is not None}
            unknown = [o.delivery_id for o in outcomes if o.row is None]
            if unknown:
                current.update(
                    (row.id, row)
                    for row in connection.execute(
                        select(
                            deliveries.c.id,
                            deliveries.c.attempts,
                            deliveries.c.created_at,
                            deliveries.c.delivered_at,
                            deliveries.c.endpoint,
                        ).where(deliveries.c.id.in_(unknown))
                    )
                )
            attempt_rows: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            by_endpoint: dict[str, list[DeliveryResult]] = {}
            for outcome in outcomes:
                row = current.get(outcome.delivery_id)
                if row is None:
                    continue  # purged while it was being sent
                result = outcome.result
                for offset, attempt in enumerate(result.attempts, start=1):
                    attempt_rows.append(
                        {
                            "delivery_id": outcome.delivery_id,
                            "number": row.attempts + offset,
                            "started_at": attempt.started_at,
                            "duration_seconds": attempt.duration_seconds,
                            "status_code": attempt.status_code,
                            "error": attempt.error,
                            "response_excerpt": attempt.response_excerpt[:EXCERPT_LIMIT],
                            "source": source,
                            "sender": sender,
                        }
                    )
                total = row.attempts + len(result.attempts)
                state, next_at = self._next_state(outcome, total, now - row.created_at, now, schedule)
                states[outcome.delivery_id] = str(state)
                if state == DeliveryState.DEAD:
                    report.dead.append((outcome.delivery_id, row.endpoint))
                built = outcome.built
                # Bind names may not equal column names in an UPDATE's SET clause.
                updates.append(
                    {
                        "b_id": outcome.delivery_id,
                        "b_attempts": total,
                        "b_last_status": result.status_code,
                        "b_last_error": result.error,
                        "b_updated_at": now,
                        "b_delivered_at": now if result.delivered else row.delivered_at,
                        "b_state": str(state),
                        "b_next_attempt_at": next_at,
                        # The request, the first time it is built (NULL keeps what is stored).
                        "b_built_at": now if built is not None else None,
                        "b_url": redact_url(built.url) if built is not None else None,
                        "b_query": built.query if built is not None else None,
                        "b_method": built.method if built is not None else None,
                        "b_headers": json.dumps(dict(built.headers), sort_keys=True)
                        if built is not None
                        else None,
                        "b_body": built.body if built is not None else None,
                    }
                )
                if result.delivered or result.receiver_failed:
                    by_endpoint.setdefault(row.endpoint, []).append(result)
            if updates:
                connection.execute(_OUTCOME_UPDATE, updates)
            if attempt_rows:
                connection.execute(_ATTEMPTS_INSERT, attempt_rows)
            for key, results in by_endpoint.items():
                self._update_health(
                    connection, key, results, now, schedule, circuit_threshold, disable_after_seconds, report
                )
        return report

    @staticmethod
    def _next_state(
        outcome: Outcome, total: int, age: float, now: float, schedule: RetrySchedule
    ) -> tuple[DeliveryState, float | None]:
        result = outcome.result
        if result.delivered:
            return DeliveryState.DELIVERED, None
        if not outcome.retry or not result.retryable:
            return DeliveryState.FAILED, None
        if schedule.is_dead(age=age):
            return DeliveryState.DEAD, None
        return DeliveryState.FAILED, schedule.next_attempt_at(
            attempts_made=total, retry_after=result.retry_after_seconds, age=age, now=now
        )

    def _update_health(
        self,
        connection: Connection,
        key: str,
        results: Sequence[DeliveryResult],
        now: float,
        schedule: RetrySchedule,
        threshold: int,
        disable_after_seconds: float,
        report: OutcomeReport,
    ) -> None:
        """Fold the results of one endpoint, in order, into its health row, circuit and enablement."""
        # The common case, a healthy endpoint that answers: one statement.
        if (
            all(result.delivered for result in results)
            and connection.execute(_STILL_HEALTHY, {"b_key": key, "now": now}).rowcount
        ):
            return
        connection.execute(
            self._insert_ignoring_duplicates(endpoints).values(
                key=key, circuit=str(CircuitState.CLOSED), consecutive_failures=0, probes=0, updated_at=now
            )
        )
        query = select(endpoints).where(endpoints.c.key == key)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        health = dict(connection.execute(query).one()._mapping)
        was_open = health["circuit"] == str(CircuitState.OPEN)
        disable_reason: str | None = None
        for result in results:
            if result.delivered:
                if health["recovering"]:
                    report.recovered.append(key)
                health.update(
                    recovering=False,
                    circuit=str(CircuitState.CLOSED),
                    consecutive_failures=0,
                    failing_since=None,
                    last_success_at=now,
                    opened_at=None,
                    opened_reason=None,
                    probes=0,
                    next_probe_at=None,
                )
                continue
            health["consecutive_failures"] += 1
            health["failing_since"] = health["failing_since"] or now
            health["last_failure_at"] = now
            health["last_error"] = result.error
            if result.status_code == 410:
                disable_reason = "it answered 410 Gone"
            elif disable_after_seconds and now - health["failing_since"] >= disable_after_seconds:
                disable_reason = (
                    f"it has failed without a success for {(now - health['failing_since']) / 3600:.1f} h"
                )
            if health["circuit"] == str(CircuitState.OPEN):
                health["probes"] += 1
                health["next_probe_at"] = schedule.probe_at(probes_made=health["probes"], now=now)
            elif health["consecutive_failures"] >= threshold or result.timed_out:
                reason = (
                    "an attempt timed out"
                    if result.timed_out
                    else f"{health['consecutive_failures']} consecutive failures"
                )
                health.update(
                    circuit=str(CircuitState.OPEN),
                    opened_at=now,
                    opened_reason=f"{reason}; last: {result.error}",
                    probes=0,
                    next_probe_at=schedule.probe_at(probes_made=1, now=now),
                    recovering=True,
                )
        health.update(probe_until=None, updated_at=now)
        connection.execute(update(endpoints).where(endpoints.c.key == key).values(health))
        if disable_reason is not None and health["disabled_at"] is None:
            self._disable(connection, key, disable_reason, now)
            report.disabled.append((key, disable_reason))
        if was_open and health["circuit"] == str(CircuitState.CLOSED):
            # The endpoint is back: what waited for it is due now, not at its own next time.
            connection.execute(
                update(deliveries)
                .where(
                    (deliveries.c.endpoint == key)
                    & (deliveries.c.state == str(DeliveryState.FAILED))
                    & (deliveries.c.next_attempt_at > now)
                )
                .values(next_attempt_at=now)
            )

    # -- endpoints -----------------------------------------------------------------------

    def _disable(self, connection: Connection, key: str, reason: str, now: float) -> int:
        connection.execute(
            update(endpoints)
            .where(endpoints.c.key == key)
            .values(disabled_at=now, disabled_reason=reason, recovering=True, updated_at=now)
        )
        # What waited to be sent is held too: not sent, and never dead while it waits.
        return int(
            connection.execute(
                update(deliveries)
                .where(
                    (deliveries.c.endpoint == key)
                    & deliveries.c.state.in_([str(state) for state in SENDABLE])
                    & (deliveries.c.forced.is_(False))
                )
                .values(state=str(DeliveryState.HELD), next_attempt_at=None, updated_at=now)
            ).rowcount
        )

    def _ensure_endpoint(self, connection: Connection, key: str, now: float) -> None:
        connection.execute(
            self._insert_ignoring_duplicates(endpoints).values(
                key=key, circuit=str(CircuitState.CLOSED), consecutive_failures=0, probes=0, updated_at=now
            )
        )

    def disable_endpoint(self, key: str, reason: str) -> int:
        """Disable an endpoint by hand: its new messages are held, and so is what waited for it.

        :return: how many messages are held now.
        """
        now = time.time()
        with self._transaction() as connection:
            self._ensure_endpoint(connection, key, now)
            self._disable(connection, key, reason, now)
            return int(connection.execute(_COUNT_HELD, {"key": key}).scalar_one())

    def enable_endpoint(self, key: str) -> int:
        """Enable an endpoint: its circuit closes, and what it held is due now.

        :return: how many held messages were released.
        """
        now = time.time()
        with self._transaction() as connection:
            self._ensure_endpoint(connection, key, now)
            connection.execute(
                update(endpoints)
                .where(endpoints.c.key == key)
                .values(
                    disabled_at=None,
                    disabled_reason=None,
                    circuit=str(CircuitState.CLOSED),
                    consecutive_failures=0,
                    failing_since=None,
                    opened_at=None,
                    opened_reason=None,
                    probes=0,
                    next_probe_at=None,
                    updated_at=now,
                )
            )
            released = connection.execute(
                update(deliveries)
                .where((deliveries.c.endpoint == key) & (deliveries.c.state == str(DeliveryState.HELD)))
                .values(state=str(DeliveryState.PENDING), next_attempt_at=now, updated_at=now)
            ).rowcount
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")
        return int(released)

    def note_limits(self, key: str, *, max_concurrency: int, rate_per_minute: int | None) -> None:
        """Record an endpoint's limits as its connection says, for every claimer of the ledger to hold."""
        now = time.time()
        with self._transaction() as connection:
            self._ensure_endpoint(connection, key, now)
            connection.execute(
                update(endpoints)
                .where(
                    (endpoints.c.key == key)
                    & (
                        or_(
                            endpoints.c.max_concurrency.is_(None),
                            endpoints.c.max_concurrency != max_concurrency,
                            endpoints.c.rate_per_minute.is_distinct_from(rate_per_minute),
                        )
                    )
                )
                .values(max_concurrency=max_concurrency, rate_per_minute=rate_per_minute, updated_at=now)
            )

    def alert_slot(self, key: str, *, interval_seconds: float) -> int | None:
        """Take the right to send alert ``key`` now, at most once per interval.

        :return: how many alerts of this key were held back since the last one sent, or None
            when this one is held back (and counted) too.
        """
        now = time.time()
        with self._transaction() as connection:
            connection.execute(
                self._insert_ignoring_duplicates(alerts).values(key=key, last_sent_at=0.0, suppressed=0)
            )
            query = select(alerts.c.last_sent_at, alerts.c.suppressed).where(alerts.c.key == key)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            last, suppressed = connection.execute(query).one()
            if now - last < interval_seconds:
                connection.execute(
                    update(alerts).where(alerts.c.key == key).values(suppressed=suppressed + 1)
                )
                return None
            connection.execute(
                update(alerts).where(alerts.c.key == key).values(last_sent_at=now, suppressed=0)
            )
            return int(suppressed)

    # -- operations ----------------------------------------------------------------------

    def select_ids(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        dag_id: str | None = None,
        dag_ids: Collection[str] | None = None,
        endpoint: str | None = None,
        states: Sequence[str],
        limit: int | None = None,
    ) -> list[str]:
        """Return the ids of the messages a selection names, oldest first (what ``recover`` replays).

        :param dag_ids: only messages of these DAGs (those a user may act on), when given.
        """
        query = (
            select(deliveries.c.id)
            .where(
                _matching(
                    since=since, until=until, dag_id=dag_id, dag_ids=dag_ids, endpoint=endpoint, states=states
                )
            )
            .order_by(deliveries.c.created_at, deliveries.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def force_many(self, ids: Sequence[str]) -> int:
        """Make messages due now whatever their state, for a send by hand (``recover``); held by no one.

        :return: how many were made due (those a sender holds right now are left alone).
        """
        now = time.time()
        with self._transaction() as connection:
            changed = 0
            for start in range(0, len(ids), 500):
                changed += connection.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.id.in_(list(ids[start : start + 500]))
                        & or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < now)
                    )
                    .values(
                        state=str(DeliveryState.PENDING), forced=True, next_attempt_at=now, updated_at=now
                    )
                ).rowcount
        return int(changed)

    def still_forced(self, ids: Sequence[str]) -> list[str]:
        """Return those of the messages made due by hand that no sender has taken yet."""
        found: list[str] = []
        with self.engine.connect() as connection:
            for start in range(0, len(ids), 500):
                query = select(deliveries.c.id).where(
                    deliveries.c.id.in_(list(ids[start : start + 500])) & deliveries.c.forced.is_(True)
                )
                found.extend(connection.execute(query).scalars())
        order = {delivery_id: index for index, delivery_id in enumerate(ids)}
        return sorted(found, key=order.__getitem__)

    def purge(
        self,
        *,
        older_than: float,
        states: Sequence[str] = (str(DeliveryState.DELIVERED),),
        dry_run: bool = False,
    ) -> int:
        """Delete messages (and their attempts) in ``states`` last changed before ``older_than``.

        A message a sender holds right now is never purged.

        :param older_than: a UNIX time.
        :param states: the states to purge; delivered ones by default.
        :param dry_run: only count them.
        :return: how many messages were (or would be) deleted.
        """
        condition = (
            deliveries.c.state.in_(list(states))
            & (deliveries.c.updated_at < older_than)
            & or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < time.time())
        )
        if dry_run:
            with self.engine.connect() as connection:
                return int(
                    connection.execute(
                        select(func.count()).select_from(deliveries).where(condition)
                    ).scalar_one()
                )
        with self._transaction() as connection:
            doomed = select(deliveries.c.id).where(condition).scalar_subquery()
            connection.execute(attempts.delete().where(attempts.c.delivery_id.in_(doomed)))
            return int(connection.execute(deliveries.delete().where(condition)).rowcount)

    def backlog(self) -> list[tuple[str, int, float]]:
        """Return ``(endpoint, messages not yet delivered, age of the oldest in seconds)`` per endpoint.

        Counted: pending, failed and held messages.
        """
        now = time.time()
        query = (
            select(deliveries.c.endpoint, func.count(), func.min(deliveries.c.created_at))
            .where(deliveries.c.state.in_([*_SENDABLE_STATES, str(DeliveryState.HELD)]))
            .group_by(deliveries.c.endpoint)
        )
        with self.engine.connect() as connection:
            return [
                (key, int(count), now - float(oldest)) for key, count, oldest in connection.execute(query)
            ]

    # -- webhooks defined in the UI ------------------------------------------------------

    def ui_definitions(self, dag_id: str) -> list[UiDefinition]:
        """Return a DAG's UI-defined webhooks (their current versions), by name."""
        query = (
            select(ui_definitions).where(ui_definitions.c.dag_id == dag_id).order_by(ui_definitions.c.name)
        )
        with self.engine.connect() as connection:
            return [_ui_definition(row._mapping) for row in connection.execute(query)]

    def change_ui_definitions(
        self, dag_id: str, changes: Sequence[DefinitionChange], *, actor: str, via: str
    ) -> list[UiDefinition | None]:
        """Apply changes to a DAG's UI-defined webhooks, all or none, each with its audit row.

        :param actor: who changes them (the Airflow user).
        :param via: through what (``api``, ``import``, ``cli``).
        :return: each webhook after its change (None once deleted), in the order of ``changes``.
        :raises DefinitionNotFound: when an update or delete names a webhook that does not exist.
        :raises DefinitionConflict: when a create names one that exists, or a version does not match.
        """
        now = time.time()
        results: list[UiDefinition | None] = []
        with self._transaction() as connection:
            for change in changes:
                key = (ui_definitions.c.dag_id == dag_id) & (ui_definitions.c.name == change.name)
                row = connection.execute(select(ui_definitions).where(key)).first()
                current = _ui_definition(row._mapping) if row is not None else None
                _check_change(dag_id, change, current)
                before = current.definition if current is not None else None
                if change.definition is None:
                    assert current is not None  # _check_change refuses deleting what does not exist
                    connection.execute(ui_definitions.delete().where(key))
                    version, action = current.version, "deleted"
                    results.append(None)
                else:
                    text_value = json.dumps(change.definition, sort_keys=True)
                    if current is None:
                        version, action = 1, "created"
                        connection.execute(
                            insert(ui_definitions).values(
                                dag_id=dag_id,
                                name=change.name,
                                version=version,
                                definition=text_value,
                                created_at=now,
                                created_by=actor,
                                updated_at=now,
                                updated_by=actor,
                            )
                        )
                    else:
                        version, action = current.version + 1, "updated"
                        connection.execute(
                            update(ui_definitions)
                            .where(key)
                            .values(version=version, definition=text_value, updated_at=now, updated_by=actor)
                        )
                    results.append(
                        UiDefinition(
                            dag_id=dag_id,
                            name=change.name,
                            version=version,
                            definition=json.loads(text_value),
                            created_at=current.created_at if current else now,
                            created_by=current.created_by if current else actor,
                            updated_at=now,
                            updated_by=actor,
                        )
                    )
                connection.execute(
                    insert(definition_audit).values(
                        dag_id=dag_id,
                        name=change.name,
                        version=version,
                        action=action,
                        actor=actor,
                        via=via,
                        at=now,
                        changed=json.dumps(_changed_fields(before, change.definition)),
                        before=json.dumps(before, sort_keys=True) if before is not None else None,
                        after=json.dumps(change.definition, sort_keys=True)
                        if change.definition is not None
                        else None,
                    )
                )
        return results

    def definition_audit(
        self, dag_id: str, *, name: str | None = None, limit: int = 200
    ) -> list[AuditRecord]:
        """Return the changes to a DAG's UI-defined webhooks (one webhook's, with ``name``), newest first."""
        query = select(definition_audit).where(definition_audit.c.dag_id == dag_id)
        if name is not None:
            query = query.where(definition_audit.c.name == name)
        query = query.order_by(definition_audit.c.at.desc(), definition_audit.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [
                AuditRecord(
                    **{
                        **row._mapping,
                        "changed": json.loads(row.changed),
                        "before": json.loads(row.before) if row.before is not None else None,
                        "after": json.loads(row.after) if row.after is not None else None,
                    }
                )
                for row in connection.execute(query)
            ]

    # -- what capture needs beyond messages ----------------------------------------------

    def code_definitions_digest(self, dag_id: str) -> str | None:
        """Return the digest of the code-defined webhooks last recorded for a DAG, or None."""
        query = select(code_definitions.c.digest).where(code_definitions.c.dag_id == dag_id)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def record_code_definitions(
        self, dag_id: str, *, digest: str, definitions: str, recorded_by: str
    ) -> None:
        """Record a DAG's code-defined webhooks (a definition file's mapping, as JSON), replacing older ones."""
        now = time.time()
        with self._transaction() as connection:
            row = {
                "digest": digest,
                "definitions": definitions,
                "recorded_at": now,
                "recorded_by": recorded_by,
            }
            updated = connection.execute(
                update(code_definitions).where(code_definitions.c.dag_id == dag_id).values(row)
            )
            if not updated.rowcount:
                connection.execute(
                    self._insert_ignoring_duplicates(code_definitions).values(dag_id=dag_id, **row)
                )

    def code_definitions(self, dag_id: str) -> CodeDefinitions | None:
        """Return a DAG's code-defined webhooks as last recorded, or None when never recorded."""
        query = select(code_definitions).where(code_definitions.c.dag_id == dag_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return CodeDefinitions(**row._mapping) if row is not None else None

    def record_run_end(
        self,
        *,
        dag_id: str,
        run_id: str,
        clear_number: int,
        state: str,
        task_states: Mapping[tuple[str, int], str],
        ended_at: float | None,
    ) -> None:
        """Record a run end and its task instances' states at that moment (a second record is ignored)."""
        states = sorted([task_id, map_index, value] for (task_id, map_index), value in task_states.items())
        with self._transaction() as connection:
            connection.execute(
                self._insert_ignoring_duplicates(run_ends).values(
                    dag_id=dag_id,
                    run_id=run_id,
                    clear_number=clear_number,
                    state=state,
                    task_states=json.dumps(states),
                    ended_at=ended_at,
                    recorded_at=time.time(),
                )
            )

    def run_end_states(
        self, *, dag_id: str, run_id: str, clear_number: int
    ) -> dict[tuple[str, int], str] | None:
        """Return the task states a listener saw when this run ended, or None when none captured it."""
        query = select(run_ends.c.task_states).where(
            (run_ends.c.dag_id == dag_id)
            & (run_ends.c.run_id == run_id)
            & (run_ends.c.clear_number == clear_number)
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).scalar()
        if found is None:
            return None
        return {(task_id, int(map_index)): value for task_id, map_index, value in json.loads(found)}

    # -- dispatchers ---------------------------------------------------------------------

    def heartbeat(self, name: str, *, sent: int = 0, delivered: int = 0) -> None:
        """Record that dispatcher ``name`` is alive, with its running totals."""
        now = time.time()
        with self._transaction() as connection:
            connection.execute(
                self._insert_ignoring_duplicates(dispatchers).values(
                    name=name, started_at=now, heartbeat_at=now, sent=0, delivered=0
                )
            )
            connection.execute(
                update(dispatchers)
                .where(dispatchers.c.name == name)
                .values(heartbeat_at=now, stopped_at=None, sent=sent, delivered=delivered)
            )

    def stop_dispatcher(self, name: str) -> None:
        """Record that dispatcher ``name`` stopped."""
        with self._transaction() as connection:
            connection.execute(
                update(dispatchers).where(dispatchers.c.name == name).values(stopped_at=time.time())
            )

    def dispatchers(self, *, alive_within: float | None = None) -> list[DispatcherRecord]:
        """Return dispatchers, newest heartbeat first; only running ones beating within ``alive_within`` s if given."""
        query = select(dispatchers).order_by(dispatchers.c.heartbeat_at.desc())
        if alive_within is not None:
            query = query.where(
                dispatchers.c.stopped_at.is_(None)
                & (dispatchers.c.heartbeat_at >= time.time() - alive_within)
            )
        with self.engine.connect() as connection:
            return [DispatcherRecord(**row._mapping) for row in connection.execute(query)]

    # -- reading -------------------------------------------------------------------------

    def endpoint_health(self, keys: Sequence[str] | None = None) -> list[EndpointHealth]:
        """Return the health of the given endpoints (all when None), by key."""
        query = select(endpoints).order_by(endpoints.c.key)
        if keys is not None:
            query = query.where(endpoints.c.key.in_(list(keys)))
        with self.engine.connect() as connection:
            return [EndpointHealth(**row._mapping) for row in connection.execute(query)]

    def count_due(self) -> int:
        """Return how many messages are due now (circuit gates aside)."""
        query = select(func.count()).select_from(deliveries).where(self._due(time.time()))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def get(self, delivery_id: str) -> Delivery | None:
        """Return one message, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return Delivery.from_row(row._mapping) if row is not None else None

    def get_many(self, ids: Sequence[str]) -> list[Delivery]:
        """Return the messages with these ids (those that exist)."""
        if not ids:
            return []
        with self.engine.connect() as connection:
            query = select(deliveries).where(deliveries.c.id.in_(list(ids)))
            return [Delivery.from_row(row._mapping) for row in connection.execute(query)]

    def deliveries(
        self,
        *,
        dag_id: str | None = None,
        dag_ids: Collection[str] | None = None,
        run_id: str | None = None,
        state: str | None = None,
        states: Sequence[str] | None = None,
        capture: str | None = None,
        endpoint: str | None = None,
        event: str | None = None,
        since: float | None = None,
        attention_first: bool = False,
        limit: int | None = 100,
    ) -> list[Delivery]:
        """Return messages, newest first, optionally filtered.

        :param dag_ids: only messages of these DAGs, when given.
        :param states: only messages in these states (``state`` names one).
        :param event: only messages reporting this event (``success``, ``failure``, ``late``, ...).
        :param since: only messages recorded at or after this UNIX time.
        :param attention_first: dead, then held, failed, pending and delivered ones, each newest first.
        """
        query = select(deliveries).where(
            _matching(
                dag_id=dag_id,
                dag_ids=dag_ids,
                run_id=run_id,
                states=[state] if state is not None else states,
                capture=capture,
                endpoint=endpoint,
                event=event,
                since=since,
            )
        )
        order = [deliveries.c.created_at.desc(), deliveries.c.id]
        if attention_first:
            order.insert(0, case(_ATTENTION_ORDER, value=deliveries.c.state, else_=len(_ATTENTION_ORDER)))
        query = query.order_by(*order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [Delivery.from_row(row._mapping) for row in connection.execute(query)]

    def latest_by_webhook(self, dag_id: str) -> dict[str, Delivery]:
        """Return the newest message of each webhook of a DAG (tests included), by webhook name."""
        newest = (
            select(deliveries.c.webhook, func.max(deliveries.c.created_at).label("created_at"))
            .where(deliveries.c.dag_id == dag_id)
            .group_by(deliveries.c.webhook)
            .subquery()
        )
        query = (
            select(deliveries)
            .join(
                newest,
                (deliveries.c.webhook == newest.c.webhook) & (deliveries.c.created_at == newest.c.created_at),
            )
            .where(deliveries.c.dag_id == dag_id)
        )
        with self.engine.connect() as connection:
            rows = [Delivery.from_row(row._mapping) for row in connection.execute(query)]
        return {row.webhook: row for row in rows}

    def attempts(self, delivery_id: str) -> list[AttemptRecord]:
        """Return the attempts of one message, in order."""
        query = (
            select(
                attempts.c.number,
                attempts.c.started_at,
                attempts.c.duration_seconds,
                attempts.c.status_code,
                attempts.c.error,
                attempts.c.response_excerpt,
                attempts.c.source,
                attempts.c.sender,
            )
            .where(attempts.c.delivery_id == delivery_id)
            .order_by(attempts.c.number)
        )
        with self.engine.connect() as connection:
            return [AttemptRecord(**row._mapping) for row in connection.execute(query)]

    def counts(
        self, *, dag_ids: Collection[str] | None = None, endpoint: str | None = None
    ) -> dict[str, int]:
        """Return the number of messages in each state.

        :param dag_ids: count only messages of these DAGs, when given.
        :param endpoint: count only messages to this endpoint, when given.
        """
        query = (
            select(deliveries.c.state, func.count())
            .where(_matching(dag_ids=dag_ids, endpoint=endpoint))
            .group_by(deliveries.c.state)
        )
        with self.engine.connect() as connection:
            return {state: count for state, count in connection.execute(query)}

    def counts_by_endpoint(self, *, dag_ids: Collection[str] | None = None) -> dict[str, dict[str, int]]:
        """Return, per endpoint, the number of its messages in each state.

        :param dag_ids: count only messages of these DAGs, when given.
        """
        query = (
            select(deliveries.c.endpoint, deliveries.c.state, func.count())
            .where(_matching(dag_ids=dag_ids))
            .group_by(deliveries.c.endpoint, deliveries.c.state)
        )
        found: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for key, state, count in connection.execute(query):
                found.setdefault(key, {})[state] = count
        return found

    def dag_ids(self) -> list[str]:
        """Return the DAGs that have messages in the ledger, sorted."""
        query = select(deliveries.c.dag_id).distinct().order_by(deliveries.c.dag_id)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def ping(self) -> None:
        """Run a trivial query, raising what the database raises when it is unreachable."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


# The statements the dispatcher runs on every round, built once: building and keying a
# statement again each time costs more than the database's own work.
_NOW = bindparam("now", type_=Float)
_DUE = (
    deliveries.c.state.in_([str(state) for state in SENDABLE])
    & (deliveries.c.next_attempt_at <= _NOW)
    & or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < _NOW)
)
_OPEN_CIRCUITS = select(endpoints).where(endpoints.c.circuit == str(CircuitState.OPEN))
#: Endpoints nothing is claimed for (except by hand): an open circuit, or disabled.
_GATED_ENDPOINTS = select(endpoints).where(
    (endpoints.c.circuit == str(CircuitState.OPEN)) | endpoints.c.disabled_at.is_not(None)
)
_DISABLED_KEYS = select(endpoints.c.key).where(endpoints.c.disabled_at.is_not(None))
_SENDABLE_STATES = [str(state) for state in SENDABLE]
_COUNT_HELD = (
    select(func.count())
    .select_from(deliveries)
    .where((deliveries.c.endpoint == bindparam("key")) & (deliveries.c.state == str(DeliveryState.HELD)))
)
_LIMITS = select(
    endpoints.c.key,
    endpoints.c.max_concurrency,
    endpoints.c.rate_per_minute,
    endpoints.c.tokens,
    endpoints.c.tokens_at,
).where(endpoints.c.key.in_(bindparam("keys", expanding=True)))
_IN_FLIGHT = (
    select(deliveries.c.endpoint, func.count())
    .where(
        deliveries.c.endpoint.in_(bindparam("keys", expanding=True))
        & deliveries.c.state.in_([str(state) for state in SENDABLE])
        & (deliveries.c.claimed_until > _NOW)
    )
    .group_by(deliveries.c.endpoint)
)
_SPEND_TOKENS = (
    update(endpoints)
    .where(endpoints.c.key == bindparam("b_key"))
    .values(tokens=bindparam("b_tokens"), tokens_at=bindparam("b_at"))
)


def _ui_definition(row: Any) -> UiDefinition:
    return UiDefinition(**{**row, "definition": json.loads(row["definition"])})


def _check_change(dag_id: str, change: DefinitionChange, current: UiDefinition | None) -> None:
    """Refuse a change that does not fit what is stored (see :class:`DefinitionChange`)."""
    where = f"webhook {change.name!r} of DAG {dag_id!r}"
    if current is None and change.mode in ("update", "delete"):
        raise DefinitionNotFound(f"there is no UI-defined {where}; create it first")
    if current is not None and change.mode == "create":
        raise DefinitionConflict(f"a UI-defined {where} exists already; edit it, or choose another name")
    if current is not None and change.expected_version not in (None, current.version):
        raise DefinitionConflict(
            f"{where} is at version {current.version}, not {change.expected_version}: someone changed it "
            f"since (last {current.updated_by}); reload it and make the change again"
        )


def _changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """Return the fields whose values differ (every field of the side that exists, when one is missing)."""
    old, new = before or {}, after or {}
    return sorted(key for key in {*old, *new} if old.get(key) != new.get(key))


#: The order in which messages need an operator: given up, held, failing, in flight, delivered.
_ATTENTION_ORDER = {
    str(state): rank
    for rank, state in enumerate(
        (
            DeliveryState.DEAD,
            DeliveryState.HELD,
            DeliveryState.FAILED,
            DeliveryState.PENDING,
            DeliveryState.DELIVERED,
        )
    )
}


def _matching(
    *,
    dag_id: str | None = None,
    dag_ids: Collection[str] | None = None,
    run_id: str | None = None,
    states: Sequence[str] | None = None,
    capture: str | None = None,
    endpoint: str | None = None,
    event: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> ColumnElement[bool]:
    """Return the condition on messages that every given filter holds for (all of them when none is given)."""
    condition: ColumnElement[bool] = true()
    for column, value in (
        (deliveries.c.dag_id, dag_id),
        (deliveries.c.run_id, run_id),
        (deliveries.c.capture, capture),
        (deliveries.c.endpoint, endpoint),
        (deliveries.c.event, event),
    ):
        if value is not None:
            condition = condition & (column == value)
    if dag_ids is not None:
        condition = condition & deliveries.c.dag_id.in_(list(dag_ids))
    if states is not None:
        condition = condition & deliveries.c.state.in_(list(states))
    if since is not None:
        condition = condition & (deliveries.c.created_at >= since)
    if until is not None:
        condition = condition & (deliveries.c.created_at < until)
    return condition


def _due_candidates(*, skip_locked: bool, gated: bool) -> Any:
    """Due messages with their endpoints, oldest first; with ``gated``, none of a gated endpoint unless forced."""
    condition = _DUE
    if gated:
        gated_keys: Any = bindparam("gated", expanding=True)
        condition = condition & or_(deliveries.c.endpoint.not_in(gated_keys), deliveries.c.forced.is_(True))
    query = (
        select(deliveries.c.id, deliveries.c.endpoint).where(condition).order_by(deliveries.c.next_attempt_at)
    )
    query = query.limit(bindparam("limit", type_=Integer))
    return query.with_for_update(skip_locked=True) if skip_locked else query


def _due_of_ids(*, skip_locked: bool, skip_open: bool) -> Any:
    """Those of some messages that are due; with ``skip_open``, none of an open circuit."""
    condition = deliveries.c.id.in_(bindparam("ids", expanding=True)) & _DUE
    if skip_open:
        condition = condition & deliveries.c.endpoint.not_in(bindparam("open", expanding=True))
    query = select(deliveries.c.id, deliveries.c.endpoint).where(condition)
    return query.with_for_update(skip_locked=True) if skip_locked else query


#: (skip locked rows, skip open circuits) -> the statement.
_DUE_CANDIDATES = {
    (locked, gated): _due_candidates(skip_locked=locked, gated=gated)
    for locked in (False, True)
    for gated in (False, True)
}
_DUE_OF_IDS = {
    (locked, skip): _due_of_ids(skip_locked=locked, skip_open=skip)
    for locked in (False, True)
    for skip in (False, True)
}
_LEASE = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_by=bindparam("owner"), claimed_until=bindparam("until", type_=Float), forced=False)
    .returning(*deliveries.c)
)
_STILL_HEALTHY = (
    update(endpoints)
    .where(
        (endpoints.c.key == bindparam("b_key"))
        & (endpoints.c.circuit == str(CircuitState.CLOSED))
        & (endpoints.c.consecutive_failures == 0)
        & endpoints.c.recovering.is_(False)
    )
    .values(last_success_at=bindparam("now", type_=Float), updated_at=bindparam("now", type_=Float))
)
_ATTEMPTS_INSERT = insert(attempts)

#: One UPDATE for a batch of outcomes (binds prefixed ``b_``: they may not be column names).
_OUTCOME_UPDATE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}")
            for name in (
                "attempts",
                "last_status",
                "last_error",
                "updated_at",
                "delivered_at",
                "state",
                "next_attempt_at",
            )
        }
        | {
            name: func.coalesce(bindparam(f"b_{name}", type_=deliveries.c[name].type), deliveries.c[name])
            for name in ("built_at", "url", "query", "method", "headers", "body")
        }
        | {"claimed_by": None, "claimed_until": None}
    )
)


def _refilled(tokens: float | None, at: float | None, rate_per_minute: int, now: float) -> float:
    """Return a rate limit's tokens now: refilled at the rate, up to five seconds' worth (at least one)."""
    capacity = max(1.0, rate_per_minute / 12.0)
    if tokens is None or at is None:
        return capacity
    return min(capacity, tokens + (now - at) * rate_per_minute / 60.0)
