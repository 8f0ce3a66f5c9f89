"""The delivery ledger and redelivery.

By default the ledger is a SQLite file, ``$AIRFLOW_HOME/flow_webhooks.db``. For several
hosts, point ``[flow_webhook] ledger_conn_id`` at an Airflow connection to a shared
database (PostgreSQL). The ledger is never Airflow's metadata database.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from airflow_webhook_provider.exceptions import InvalidConnection
from airflow_webhook_provider.ledger.store import (
    AttemptRecord,
    Delivery,
    Ledger,
    LedgerError,
    NewDelivery,
    RedeliverySchedule,
)
from airflow_webhook_provider.redaction import redact_url

__all__ = [
    "AttemptRecord",
    "Delivery",
    "Ledger",
    "LedgerError",
    "NewDelivery",
    "RedeliverySchedule",
    "ledger_url",
    "open_ledger",
    "redact_url",
    "schedule_from_config",
]

_POSTGRES_TYPES = frozenset({"postgres", "postgresql"})
_opened: dict[str, Ledger] = {}
_opened_lock = threading.Lock()


def _airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path("~/airflow").expanduser())


def ledger_url() -> str:
    """Return the ledger's SQLAlchemy URL from ``[flow_webhook] ledger_conn_id``.

    The connection may be of type ``postgres`` (host, port, login, password, schema as
    the database), ``sqlite`` (host is the file path), or any type whose extra holds
    ``{"sqlalchemy_url": "..."}``. Without a connection id, the ledger is
    ``$AIRFLOW_HOME/flow_webhooks.db``.

    :raises InvalidConnection: when the connection cannot be turned into a URL.
    """
    from airflow.sdk.configuration import conf

    conn_id = conf.get("flow_webhook", "ledger_conn_id", fallback="") or ""
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


def open_ledger(url: str | None = None) -> Ledger:
    """Return this process's ledger (opened once per URL; the schema is created on first use)."""
    url = url or ledger_url()
    with _opened_lock:
        ledger = _opened.get(url)
        if ledger is None:
            ledger = _opened[url] = Ledger.open(url)
        return ledger


def schedule_from_config() -> RedeliverySchedule:
    """Return the redelivery schedule from ``[flow_webhook]`` in Airflow's config."""
    from airflow.sdk.configuration import conf

    default = RedeliverySchedule()
    return RedeliverySchedule(
        backoff_seconds=conf.getfloat(
            "flow_webhook", "redelivery_backoff_seconds", fallback=default.backoff_seconds
        ),
        max_backoff_seconds=conf.getfloat(
            "flow_webhook", "redelivery_max_backoff_seconds", fallback=default.max_backoff_seconds
        ),
        max_age_seconds=conf.getfloat(
            "flow_webhook", "redelivery_max_age_seconds", fallback=default.max_age_seconds
        ),
    )
