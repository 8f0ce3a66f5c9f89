"""The ledger's tables, and the schema version that lets later releases migrate them.

The ledger is its own database, never Airflow's metadata database. It holds no secret:
no connection password and no connection header value; definition headers are kept
because they are needed to replay a message and credentials are refused in them.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["SCHEMA_VERSION", "attempts", "deliveries", "metadata", "schema_info"]

#: The version this release writes; bump it with a migration in ledger/migrations.
SCHEMA_VERSION = 1

metadata = MetaData()

schema_info = Table(
    "flow_webhook_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

deliveries = Table(
    "flow_webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # the delivery id, also X-Webhook-Id
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("output_name", String(250), nullable=False, default=""),
    Column("webhook", String(200), nullable=False),
    Column("event", String(16), nullable=False),  # success | failure | test
    Column("job_status", String(32), nullable=False),
    Column("conn_id", String(250)),  # the connection re-read at send time, or NULL
    Column("target_url", Text),  # the URL of a url= webhook (no connection), else NULL
    Column("url", Text, nullable=False),  # for display: credentials and sensitive values redacted
    Column("query", Text, nullable=False, default=""),  # the rendered query the message appends
    Column("method", String(8), nullable=False),
    Column("headers", Text, nullable=False, default="{}"),  # definition headers (JSON), never connection ones
    Column("body", LargeBinary),
    Column("state", String(16), nullable=False),  # pending | delivered | failed | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", Float),  # UNIX seconds; NULL once delivered or dead
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("claimed_by", String(120)),
    Column("claimed_until", Float),
)
Index("ix_flow_webhook_deliveries_due", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_flow_webhook_deliveries_run", deliveries.c.dag_id, deliveries.c.run_id)

attempts = Table(
    "flow_webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        String(64),
        ForeignKey("flow_webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("number", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("response_excerpt", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False),  # inline | redelivery | replay
)
Index("ix_flow_webhook_attempts_delivery", attempts.c.delivery_id, attempts.c.number)
