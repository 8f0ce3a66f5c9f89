"""The ledger's tables, and the schema version that lets later releases migrate them.

The ledger is its own database, never Airflow's metadata database. It holds no secret:
no connection password and no connection header value; definition headers are kept
because they are needed to send a message and credentials are refused in them.

- ``flow_webhook_deliveries``: the outbox. One row per message, written ``pending`` by
  whoever captured it, with what it reports (the definition and the event's references);
  the sender fills in the exact request (method, query, headers, body) the first time it
  builds it, so every later attempt sends the same bytes.
- ``flow_webhook_attempts``: every attempt of every message.
- ``flow_webhook_endpoints``: the health of each endpoint (a connection, or the host of a
  ``url=`` webhook): its circuit breaker, failure streak and last success.
- ``flow_webhook_dispatchers``: the heartbeat of each running dispatcher.
- ``flow_webhook_code_definitions``: each DAG's code-defined webhooks, as the task runner
  and the DAG processor (which parse DAG files) last saw them, for the listeners in the
  scheduler and the API server (which never do).
- ``flow_webhook_alerts``: when each kind of operator alert was last sent, to rate-limit them.
- ``flow_webhook_run_ends``: each run end a listener captured, with its task instances'
  states at that moment, so a DAG-level callback that runs late reconciles the outputs
  from those states, not from a rerun's.
- ``flow_webhook_ui_definitions``: the webhooks defined in the Airflow UI (the DAG's
  Webhooks tab and its API), the current version of each; never a secret (a UI webhook
  names a connection).
- ``flow_webhook_definition_audit``: every change to them: who, when, through what, and
  the definition before and after.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
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

__all__ = [
    "SCHEMA_VERSION",
    "alerts",
    "attempts",
    "code_definitions",
    "definition_audit",
    "deliveries",
    "dispatchers",
    "endpoints",
    "metadata",
    "run_ends",
    "schema_info",
    "ui_definitions",
]

#: The version this release writes; ``Ledger.ensure_schema`` migrates older ledgers to it.
SCHEMA_VERSION = 3

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
    Column("clear_number", Integer, nullable=False, default=0),
    Column("output_name", String(250), nullable=False, default=""),
    Column("webhook", String(200), nullable=False),
    Column("event", String(16), nullable=False),  # an Event: success | failure | late | test | alert
    Column("job_status", String(32), nullable=False),
    Column("capture", String(16), nullable=False, default="callback"),  # a CaptureSource
    Column("conn_id", String(250)),  # the connection re-read at send time, or NULL
    Column("target_url", Text),  # the URL of a url= webhook (no connection), else NULL
    Column("endpoint", String(300), nullable=False, default=""),  # the endpoint key (circuit, limits)
    Column("definition", Text),  # the webhook definition (JSON) the message is built from; NULL: a test
    Column("refs", Text, nullable=False, default="{}"),  # the event's reference values (JSON)
    Column("built_at", Float),  # when the request below was built; NULL until the first send
    Column("url", Text, nullable=False, default=""),  # for display: credentials and sensitive values redacted
    Column("query", Text, nullable=False, default=""),  # the rendered query the message appends
    Column("method", String(8), nullable=False, default=""),
    Column("headers", Text, nullable=False, default="{}"),  # definition headers (JSON), never connection ones
    Column("body", LargeBinary),
    Column("state", String(16), nullable=False),  # a DeliveryState
    Column("forced", Boolean, nullable=False, default=False),  # sent by hand: skips an open circuit
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", Float),  # UNIX seconds; NULL once delivered or dead
    Column("event_at", Float),  # when the end it reports happened, if known
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("claimed_by", String(120)),
    Column("claimed_until", Float),
)
Index("ix_flow_webhook_deliveries_due", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_flow_webhook_deliveries_run", deliveries.c.dag_id, deliveries.c.run_id)
Index("ix_flow_webhook_deliveries_endpoint", deliveries.c.endpoint, deliveries.c.state)

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
    Column("source", String(16), nullable=False),  # inline | dispatcher | replay | test
    Column("sender", String(120), nullable=False, default=""),  # the process that sent it (role@host:pid)
)
Index("ix_flow_webhook_attempts_delivery", attempts.c.delivery_id, attempts.c.number)

endpoints = Table(
    "flow_webhook_endpoints",
    metadata,
    Column("key", String(300), primary_key=True),  # the connection id, or "url:<scheme>://<host>:<port>"
    Column("circuit", String(8), nullable=False, default="closed"),  # a CircuitState
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("failing_since", Float),  # the first failure after the last success
    Column("last_success_at", Float),
    Column("last_failure_at", Float),
    Column("last_error", Text),
    Column("opened_at", Float),
    Column("opened_reason", Text),
    Column("probes", Integer, nullable=False, default=0),  # failed probes since the circuit opened
    Column("next_probe_at", Float),
    Column("probe_until", Float),  # a probe is in flight until then
    Column("disabled_at", Float),  # disabled: new messages are held, nothing is sent
    Column("disabled_reason", Text),
    Column("recovering", Boolean, nullable=False, default=False),  # its next success is a recovery
    Column("max_concurrency", Integer),  # from the connection, as a sender last read it
    Column("rate_per_minute", Integer),
    Column("tokens", Float),  # the rate limit's bucket
    Column("tokens_at", Float),
    Column("updated_at", Float, nullable=False),
)

dispatchers = Table(
    "flow_webhook_dispatchers",
    metadata,
    Column("name", String(120), primary_key=True),  # host:pid
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float),
    Column("sent", Integer, nullable=False, default=0),
    Column("delivered", Integer, nullable=False, default=0),
)

code_definitions = Table(
    "flow_webhook_code_definitions",
    metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("digest", String(64), nullable=False),  # sha256 of the definitions below
    Column("definitions", Text, nullable=False),  # the definition file's mapping (JSON)
    Column("recorded_at", Float, nullable=False),
    Column("recorded_by", String(120), nullable=False),  # role@host:pid of the process that parsed the DAG
)

run_ends = Table(
    "flow_webhook_run_ends",
    metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("clear_number", Integer, primary_key=True),
    Column("state", String(32), nullable=False),
    Column("task_states", Text, nullable=False),  # JSON [[task_id, map_index, state], ...] at the end
    Column("ended_at", Float),
    Column("recorded_at", Float, nullable=False),
)

alerts = Table(
    "flow_webhook_alerts",
    metadata,
    Column("key", String(400), primary_key=True),  # "<event>:<endpoint>"
    Column("last_sent_at", Float, nullable=False),
    Column("suppressed", Integer, nullable=False, default=0),  # held back since, counted in the next one
)

ui_definitions = Table(
    "flow_webhook_ui_definitions",
    metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("version", Integer, nullable=False),  # 1 when created, one more with every change
    Column(
        "definition", Text, nullable=False
    ),  # the FlowWebhook's fields (JSON), as a definition file lists them
    Column("created_at", Float, nullable=False),
    Column("created_by", String(250), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(250), nullable=False),
)

definition_audit = Table(
    "flow_webhook_definition_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),  # the version the change made (deleted: the last one)
    Column("action", String(16), nullable=False),  # created | updated | deleted
    Column("actor", String(250), nullable=False),  # the Airflow user, or the CLI's user@host
    Column("via", String(16), nullable=False),  # api | import | cli
    Column("at", Float, nullable=False),
    Column("changed", Text, nullable=False),  # JSON list of the fields that changed
    Column("before", Text),  # the definition before (JSON); NULL when created
    Column("after", Text),  # the definition after (JSON); NULL when deleted
    Index("ix_flow_webhook_definition_audit_dag", "dag_id", "at"),
)
