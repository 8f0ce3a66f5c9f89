"""The delivery ledger: every message and every attempt, in a database of its own.

A delivery is written ``pending`` before its first attempt, with a lease held by the
sender; if the sender dies, the lease runs out and redelivery takes the row over.
Outcomes move it to ``delivered``, or to ``failed`` with a next attempt time on an
exponential schedule, and finally to ``dead`` past the maximum age.

Claiming is what keeps concurrent redeliverers apart: on PostgreSQL rows are claimed
with ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite every transaction begins with
``BEGIN IMMEDIATE``, so one writer claims at a time. A claimed row carries a lease
(``claimed_until``) that no other claimer may take before it expires.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)

from airflow_webhook_provider.delivery import DeliveryResult
from airflow_webhook_provider.exceptions import FlowWebhookError
from airflow_webhook_provider.ledger.schema import SCHEMA_VERSION, attempts, deliveries, metadata, schema_info
from airflow_webhook_provider.redaction import redact_url

__all__ = [
    "AttemptRecord",
    "Delivery",
    "Ledger",
    "LedgerError",
    "NewDelivery",
    "RedeliverySchedule",
    "redact_url",
]

EXCERPT_LIMIT = 4096


class LedgerError(FlowWebhookError):
    """The ledger cannot be opened or is newer than this release understands."""


@dataclass(frozen=True)
class RedeliverySchedule:
    """When to try again after a failed delivery, and when to give up.

    :param backoff_seconds: the first wait; each later wait doubles, with jitter.
    :param max_backoff_seconds: the longest wait.
    :param max_age_seconds: past this age a delivery is ``dead`` (default 3 days).
    """

    backoff_seconds: float = 60.0
    max_backoff_seconds: float = 3600.0
    max_age_seconds: float = 3 * 24 * 3600.0

    def next_attempt_at(self, attempts_made: int, retry_after: float | None, now: float) -> float:
        """Return when to try next, honouring the receiver's ``Retry-After``."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** max(0, attempts_made - 1))
        wait = ceiling * random.uniform(0.5, 1.0)
        return now + max(wait, retry_after or 0.0)


@dataclass(frozen=True)
class NewDelivery:
    """A message about to be sent for the first time.

    :param id: the delivery id.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param output_name: the output task, or empty.
    :param webhook: the definition's name.
    :param event: ``success``, ``failure`` or ``test``.
    :param job_status: the state that triggered it.
    :param conn_id: the connection to re-read at send time, or None.
    :param target_url: the URL of a webhook without a connection, or None.
    :param url: the URL as sent (it is redacted before it is stored).
    :param query: the query string the message appended to the endpoint's URL.
    :param method: the HTTP method.
    :param headers: the definition's headers (never the connection's).
    :param body: the exact body, or None.
    """

    id: str
    dag_id: str
    run_id: str
    output_name: str
    webhook: str
    event: str
    job_status: str
    conn_id: str | None
    target_url: str | None
    url: str
    query: str
    method: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)


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


@dataclass(frozen=True)
class Delivery:
    """One stored delivery (a row of the ledger)."""

    id: str
    dag_id: str
    run_id: str
    output_name: str
    webhook: str
    event: str
    job_status: str
    conn_id: str | None
    target_url: str | None
    url: str
    query: str
    method: str
    headers: Mapping[str, str]
    body: bytes | None
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None
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
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view, without the body bytes."""
        return {
            "id": self.id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "output": self.output_name,
            "webhook": self.webhook,
            "event": self.event,
            "job_status": self.job_status,
            "conn_id": self.conn_id,
            "url": self.url,
            "method": self.method,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "delivered_at": self.delivered_at,
        }


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses no committed row when a process dies (only on power loss),
        # which is what the write-ahead guarantee is about, and spares an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_for(url: str) -> Engine:
    """Return the process-wide engine for a database URL (made once per process)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                _sqlite_setup(engine)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


class Ledger:
    """Record deliveries and attempts, and hand due deliveries to redelivery.

    Usage::

        ledger = Ledger.open("sqlite:////opt/airflow/flow_webhooks.db")
        ledger.record_pending([new_delivery], owner="worker-1", lease_seconds=60)
        ledger.record_outcomes([(delivery_id, result, True)], source="inline")

    :param engine: a SQLAlchemy engine for the ledger database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._schema_checked = False

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Open (and on first use, create) the ledger at a SQLAlchemy URL."""
        ledger = cls(engine_for(url))
        ledger.ensure_schema()
        return ledger

    @property
    def dialect(self) -> str:
        """The database dialect name (``sqlite``, ``postgresql``, ...)."""
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        """Create the tables if they are missing, and check the schema version.

        :raises LedgerError: when the ledger was written by a newer release.
        """
        if self._schema_checked:
            return
        with self.engine.begin() as connection:
            metadata.create_all(connection, checkfirst=True)
            version = connection.execute(select(schema_info.c.version)).scalar()
            if version is None:
                connection.execute(insert(schema_info).values(id=1, version=SCHEMA_VERSION))
            elif version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the flow webhook ledger has schema version {version}, newer than this release "
                    f"understands ({SCHEMA_VERSION}); upgrade airflow-webhook-provider"
                )
        self._schema_checked = True

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def record_pending(self, new: Sequence[NewDelivery], *, owner: str, lease_seconds: float) -> None:
        """Write new deliveries as ``pending``, leased to ``owner``, in one transaction.

        This happens before the first attempt, so a crash between here and the send
        leaves rows that redelivery picks up once the lease expires.
        """
        if not new:
            return
        now = time.time()
        rows = [
            {
                "id": item.id,
                "dag_id": item.dag_id,
                "run_id": item.run_id,
                "output_name": item.output_name,
                "webhook": item.webhook,
                "event": item.event,
                "job_status": item.job_status,
                "conn_id": item.conn_id,
                "target_url": item.target_url,
                "url": redact_url(item.url),
                "query": item.query,
                "method": item.method,
                "headers": json.dumps(dict(item.headers), sort_keys=True),
                "body": item.body,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "claimed_by": owner,
                "claimed_until": now + lease_seconds,
            }
            for item in new
        ]
        with self._transaction() as connection:
            connection.execute(insert(deliveries), rows)

    def record_outcomes(
        self,
        outcomes: Sequence[tuple[str, DeliveryResult, bool]],
        *,
        source: str,
        schedule: RedeliverySchedule | None = None,
    ) -> dict[str, str]:
        """Store the attempts of sent messages and move each delivery to its next state.

        :param outcomes: ``(delivery_id, result, retry_later)`` triples; ``retry_later``
            is False when the connection turned retry on failure off.
        :param source: ``inline``, ``redelivery`` or ``replay``.
        :param schedule: the redelivery schedule.
        :return: the new state of each delivery.
        """
        if not outcomes:
            return {}
        schedule = schedule or RedeliverySchedule()
        states: dict[str, str] = {}
        now = time.time()
        with self._transaction() as connection:
            ids = [delivery_id for delivery_id, _, _ in outcomes]
            current = {
                row.id: (row.attempts, row.created_at, row.delivered_at)
                for row in connection.execute(
                    select(
                        deliveries.c.id,
                        deliveries.c.attempts,
                        deliveries.c.created_at,
                        deliveries.c.delivered_at,
                    ).where(deliveries.c.id.in_(ids))
                )
            }
            attempt_rows: list[dict[str, Any]] = []
            delivery_rows: list[dict[str, Any]] = []
            for delivery_id, result, retry_later in outcomes:
                made, created_at, delivered_at = current[delivery_id]
                for offset, attempt in enumerate(result.attempts, start=1):
                    attempt_rows.append(
                        {
                            "delivery_id": delivery_id,
                            "number": made + offset,
                            "started_at": attempt.started_at,
                            "duration_seconds": attempt.duration_seconds,
                            "status_code": attempt.status_code,
                            "error": attempt.error,
                            "response_excerpt": attempt.response_excerpt[:EXCERPT_LIMIT],
                            "source": source,
                        }
                    )
                total = made + len(result.attempts)
                values: dict[str, Any] = {
                    "row_id": delivery_id,
                    "attempts": total,
                    "last_status": result.status_code,
                    "last_error": result.error,
                    "updated_at": now,
                    "delivered_at": delivered_at,
                }
                if result.delivered:
                    values.update(state="delivered", delivered_at=now, next_attempt_at=None)
                elif not retry_later:
                    values.update(state="failed", next_attempt_at=None)
                elif now - created_at >= schedule.max_age_seconds:
                    values.update(state="dead", next_attempt_at=None)
                else:
                    next_at = schedule.next_attempt_at(total, result.retry_after_seconds, now)
                    values.update(state="failed", next_attempt_at=next_at)
                states[delivery_id] = values["state"]
                # Bind names may not equal column names in an UPDATE's SET clause.
                delivery_rows.append({f"new_{name}": value for name, value in values.items()})
            # One statement for the whole batch: every row sets the same columns.
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == bindparam("new_row_id"))
                .values(
                    {name[4:]: bindparam(name) for name in delivery_rows[0] if name != "new_row_id"}
                    | {"claimed_by": None, "claimed_until": None}
                ),
                delivery_rows,
            )
            if attempt_rows:
                connection.execute(insert(attempts), attempt_rows)
        return states

    @staticmethod
    def _due(now: float) -> ColumnElement[bool]:
        """Due: ``pending`` or ``failed``, next attempt time past, no unexpired lease held by another."""
        return (
            deliveries.c.state.in_(("pending", "failed"))
            & (deliveries.c.next_attempt_at <= now)
            & or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < now)
        )

    def count_due(self) -> int:
        """Return how many deliveries are due now (what :meth:`claim_due` would hand out)."""
        query = select(func.count()).select_from(deliveries).where(self._due(time.time()))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def claim_due(self, owner: str, *, limit: int = 100, lease_seconds: float = 120.0) -> list[Delivery]:
        """Claim up to ``limit`` deliveries that are due, for ``owner`` alone.

        Due means ``pending`` or ``failed`` with a next attempt time in the past, and no
        unexpired lease held by another claimer.
        """
        now = time.time()
        query = select(deliveries).where(self._due(now)).order_by(deliveries.c.next_attempt_at).limit(limit)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self._transaction() as connection:
            rows = [Delivery.from_row(row._mapping) for row in connection.execute(query)]
            if rows:
                connection.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_([row.id for row in rows]))
                    .values(claimed_by=owner, claimed_until=now + lease_seconds)
                )
        return rows

    def claim(self, delivery_id: str, owner: str, *, lease_seconds: float = 120.0) -> Delivery | None:
        """Claim one delivery by id, whatever its state, unless another claimer holds it.

        :return: the delivery, or None when it does not exist.
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
            delivery = Delivery.from_row(row._mapping)
            if (
                delivery.claimed_until is not None
                and delivery.claimed_until > now
                and delivery.claimed_by != owner
            ):
                raise LedgerError(
                    f"delivery {delivery_id} is being sent by {delivery.claimed_by} right now; try again "
                    f"in {delivery.claimed_until - now:.0f} s"
                )
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(claimed_by=owner, claimed_until=now + lease_seconds)
            )
        return delivery

    def get(self, delivery_id: str) -> Delivery | None:
        """Return one delivery, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return Delivery.from_row(row._mapping) if row is not None else None

    def deliveries(
        self,
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
        state: str | None = None,
        limit: int | None = 100,
    ) -> list[Delivery]:
        """Return deliveries, newest first, optionally filtered."""
        query = select(deliveries).order_by(deliveries.c.created_at.desc(), deliveries.c.id)
        if dag_id is not None:
            query = query.where(deliveries.c.dag_id == dag_id)
        if run_id is not None:
            query = query.where(deliveries.c.run_id == run_id)
        if state is not None:
            query = query.where(deliveries.c.state == state)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [Delivery.from_row(row._mapping) for row in connection.execute(query)]

    def attempts(self, delivery_id: str) -> list[AttemptRecord]:
        """Return the attempts of one delivery, in order."""
        query = (
            select(
                attempts.c.number,
                attempts.c.started_at,
                attempts.c.duration_seconds,
                attempts.c.status_code,
                attempts.c.error,
                attempts.c.response_excerpt,
                attempts.c.source,
            )
            .where(attempts.c.delivery_id == delivery_id)
            .order_by(attempts.c.number)
        )
        with self.engine.connect() as connection:
            return [AttemptRecord(**row._mapping) for row in connection.execute(query)]

    def counts(self) -> dict[str, int]:
        """Return the number of deliveries in each state."""
        query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        with self.engine.connect() as connection:
            return {state: count for state, count in connection.execute(query)}
