"""Provider registration read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_webhook_provider import __version__
from airflow_webhook_provider.config import provider_config
from airflow_webhook_provider.delivery.endpoints import ConnectionExtras


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata: connection types, hooks, notifiers, operators, triggers, plugins, config."""
    return {
        "package-name": "airflow-webhook-provider",
        "name": "Flow Webhook",
        "description": "Signed flow webhooks fired when a DAG run or an output task succeeds or fails, "
        "and an operator that chains the next job through a jobGroups API.",
        "versions": [__version__],
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
        "cli": ["airflow_webhook_provider.face.cli.definition.get_cli_commands"],
        "plugins": [
            {
                "name": "flow_webhooks",
                "plugin-class": "airflow_webhook_provider.face.plugins.webhooks_tab.FlowWebhooksPlugin",
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_webhook_provider.hooks.flow_webhook.FlowWebhookHook",
                "hook-name": "Flow Webhook",
                "connection-type": "flow_webhook",
                "conn-fields": ConnectionExtras.conn_fields(),
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
        "config": provider_config(),
    }
