"""Provider registration read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata: connection types, hooks, notifiers, operators, triggers, plugins, config."""
    return {
        "package-name": "airflow-webhook-provider",
        "name": "Flow Webhook",
        "description": "Signed flow webhooks fired when a DAG run or an output task succeeds or fails, "
        "and an operator that chains the next job through a jobGroups API.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "Flow Webhook",
                "external-doc-url": "https://pypi.org/project/airflow-webhook-provider/",
                "tags": ["protocol"],
            },
        ],
        "hooks": [
            {
                "integration-name": "Flow Webhook",
                "python-modules": [
                    "airflow_webhook_provider.hooks.flow_webhook",
                    "airflow_webhook_provider.hooks.job_groups",
                ],
            },
        ],
        "operators": [
            {
                "integration-name": "Flow Webhook",
                "python-modules": ["airflow_webhook_provider.operators.flow_webhook"],
            },
        ],
        "triggers": [
            {
                "integration-name": "Flow Webhook",
                "python-modules": ["airflow_webhook_provider.triggers.job_group"],
            },
        ],
        "notifications": ["airflow_webhook_provider.notifications.flow_webhook.FlowWebhookNotifier"],
        "plugins": [
            {
                "name": "flow_webhooks",
                "plugin-class": "airflow_webhook_provider.plugins.webhooks_tab.FlowWebhooksPlugin",
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_webhook_provider.hooks.flow_webhook.FlowWebhookHook",
                "hook-name": "Flow Webhook",
                "connection-type": "flow_webhook",
                "conn-fields": {
                    "method": {
                        "label": "Method",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "POST",
                            "enum": ["POST", "PUT", "PATCH", "GET", "DELETE"],
                        },
                        "description": "HTTP method. A body is sent only with POST, PUT or PATCH.",
                    },
                    "headers": {
                        "label": "Headers",
                        "schema": {"type": ["string", "null"]},
                        "description": 'JSON object of HTTP headers, e.g. {"Content-Type": "application/json", '
                        '"Authorization": "Bearer <token>"}. Values are never logged.',
                    },
                    "validate_ssl": {
                        "label": "Validate SSL certificate",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Verify the receiver's HTTPS certificate. Turn off only for a "
                        "receiver with an expired or self-signed certificate.",
                    },
                    "ca_bundle": {
                        "label": "CA bundle path",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional path to a PEM CA bundle to verify the receiver against, "
                        "instead of the system's trusted CAs.",
                    },
                    "client_cert": {
                        "label": "Client certificate path",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional PEM client certificate for receivers that require mutual TLS.",
                    },
                    "client_key": {
                        "label": "Client key path",
                        "schema": {"type": ["string", "null"]},
                        "description": "The client certificate's private key, if not in the certificate file.",
                    },
                    "signature_scheme": {
                        "label": "Signature scheme",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "webhook",
                            "enum": ["webhook", "standard", "both"],
                        },
                        "description": "webhook: X-Webhook-Signature. standard: Standard Webhooks headers "
                        "(webhook-id, webhook-timestamp, webhook-signature); the secret key is whsec_ + base64. "
                        "both: all of them.",
                    },
                    "previous_secret": {
                        "label": "Previous secret key",
                        "schema": {"type": ["string", "null"], "format": "password"},
                        "description": "During key rotation: the old key; requests carry a signature for "
                        "it too until Previous secret expires.",
                    },
                    "previous_secret_expires": {
                        "label": "Previous secret expires",
                        "schema": {"type": ["string", "null"]},
                        "description": "ISO 8601 time after which the previous key is no longer used, "
                        "e.g. 2026-12-31T00:00:00+00:00.",
                    },
                    "retry_on_failure": {
                        "label": "Retry on failure",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Retry when the receiver answers outside 200-299, "
                        "refuses the connection or times out.",
                    },
                    "timeout": {
                        "label": "Timeout seconds",
                        "schema": {"type": ["number", "null"], "default": 30},
                        "description": "Per-request timeout in seconds.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "URL", "password": "Secret key"},
                    "placeholders": {
                        "host": "https://hooks.example.com/flows/notify",
                        "password": "optional: signs each request (X-Webhook-Signature)",
                    },
                },
            },
            {
                "hook-class-name": "airflow_webhook_provider.hooks.job_groups.JobGroupsHook",
                "hook-name": "Job Groups API",
                "connection-type": "job_groups",
                "conn-fields": {
                    "validate_ssl": {
                        "label": "Validate SSL certificate",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "timeout": {
                        "label": "Timeout seconds",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "Base URL", "password": "Access token"},
                    "placeholders": {"host": "http://www.example.com:3005"},
                },
            },
        ],
        "config": {
            "flow_webhook": {
                "description": "Flow webhook delivery settings.",
                "options": {
                    "max_webhooks_per_flow": {
                        "description": "Largest number of flow webhooks one DAG may define; more is a "
                        "DAG import error.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": None,
                        "default": "50",
                    },
                    "max_body_bytes": {
                        "description": "Largest webhook body, template or rendered, in bytes. A larger "
                        "template is a DAG import error.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": None,
                        "default": "1048576",
                    },
                    "retry_budget_seconds": {
                        "description": "Total time one delivery may spend on inline attempts, "
                        "including backoff waits.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "30",
                    },
                    "retry_max_attempts": {
                        "description": "Largest number of inline attempts for one delivery when "
                        "retry on failure is on.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": None,
                        "default": "5",
                    },
                    "allowed_url_regexes": {
                        "description": "Regular expressions, comma or newline separated; a webhook URL must "
                        "match one of them in full. Empty allows every URL.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://hooks[.]slack[.]com/.*",
                        "default": "",
                    },
                    "forbidden_networks": {
                        "description": "CIDR blocks no webhook may connect to, comma separated. Checked on the "
                        "resolved address of every connection, so DNS tricks cannot reach them. The default "
                        "blocks link-local addresses and cloud metadata endpoints.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "169.254.0.0/16, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16",
                        "default": "169.254.0.0/16, fe80::/10, fd00:ec2::254/128, 100.100.100.200/32",
                    },
                    "ledger_conn_id": {
                        "description": "Airflow connection to the delivery ledger's database (postgres, "
                        "sqlite, or any type with a sqlalchemy_url extra). Empty: the SQLite file "
                        "$AIRFLOW_HOME/flow_webhooks.db. Use a shared database when tasks run on several hosts.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "flow_webhook_ledger",
                        "default": "",
                    },
                    "redelivery_backoff_seconds": {
                        "description": "First wait before redelivering a failed message; each later wait "
                        "doubles, with jitter, honouring Retry-After.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "60",
                    },
                    "redelivery_max_backoff_seconds": {
                        "description": "Longest wait between two redelivery attempts.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "3600",
                    },
                    "redelivery_max_age_seconds": {
                        "description": "Age after which an undelivered message is dead (default 3 days). "
                        "Dead messages can still be replayed by id.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "259200",
                    },
                    "retry_backoff_seconds": {
                        "description": "First backoff wait; each later wait doubles, with jitter.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "1",
                    },
                },
            },
        },
    }
