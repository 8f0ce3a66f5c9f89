"""The delivery ledger: the outbox between capture and delivery.

By default the ledger is a SQLite file, ``$AIRFLOW_HOME/flow_webhooks.db``. For several
hosts, point ``[flow_webhook] ledger_conn_id`` at an Airflow connection to a shared
database (PostgreSQL). The ledger is never Airflow's metadata database.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from airflow_webhook_provider import config
from airflow_webhook_provider.core.exceptions import InvalidConnection
from airflow_webhook_provider.ledger.store import (
    AttemptRecord,
    AuditRecord,
    Built,
    CodeDefinitions,
    DefinitionChange,
    DefinitionConflict,
    DefinitionNotFound,
    Delivery,
    DispatcherRecord,
    EndpointHealth,
    Ledger,
    LedgerError,
    NewDelivery,
    Outcome,
    OutcomeReport,
    UiDefinition,
)

__all__ = [
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
    "ledger_url",
    "open_ledger",
]

_POSTGRES_TYPES = frozenset({"postgres", "postgresql"})
_opened: dict[str, Ledger] = {}
_opened_lock = threading.Lock()


def _airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path("~/airflow").expanduser())


def ledger_url(conn_id: str) -> str:
    """Return the ledger's SQLAlchemy URL for ``[flow_webhook] ledger_conn_id``.

    The connection may be of type ``postgres`` (host, port, login, password, schema as
    the database), ``sqlite`` (host is the file path), or any type whose extra holds
    ``{"sqlalchemy_url": "..."}``. Without a connection id, the ledger is
    ``$AIRFLOW_HOME/flow_webhooks.db``.

    :param conn_id: the connection id, or empty.
    :raises InvalidConnection: when the connection cannot be turned into a URL.
    """
    if not conn_id:
        return f"sqlite:///{_airflow_home() / 'flow_webhooks.db'}"
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    explicit = conn.extra_dejson.get("sqlalchemy_url")
    if explicit:
        return str(explicit)
    if conn.conn_type in _POSTGRES_TYPES:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    raise InvalidConnection(
        f"connection {conn_id!r} (from [flow_webhook] ledger_conn_id) is of type {conn.conn_type!r}; use a "
        'postgres or sqlite connection, or put {"sqlalchemy_url": "..."} in its extra',
        conn_id=conn_id,
        field="conn_type",
    )


def open_ledger(conn_id: str | None = None, *, url: str | None = None) -> Ledger:
    """Return this process's ledger (opened once per URL; the schema is created or migrated on first use).

    :param conn_id: the ledger's connection (see :func:`ledger_url`); ``[flow_webhook]
        ledger_conn_id`` when omitted.
    :param url: a SQLAlchemy URL, instead of a connection.
    """
    if url is None:
        url = ledger_url(config.load().ledger_conn_id if conn_id is None else conn_id)
    with _opened_lock:
        ledger = _opened.get(url)
        if ledger is None:
            ledger = _opened[url] = Ledger.open(url)
        return ledger
