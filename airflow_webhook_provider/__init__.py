"""Signed flow webhooks for Apache Airflow.

Usage::

    from airflow_webhook_provider import FlowWebhook, FlowWebhooks

    FlowWebhooks(
        FlowWebhook(name="slack", conn_id="slack_webhook", on="failure",
                    body='{"text": "Job $jobId has completed. Status: $jobStatus."}'),
    ).attach(dag)

The DAG-facing names are imported lazily so that importing the package costs little
at DAG-parse time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = ["FlowWebhook", "FlowWebhookError", "FlowWebhookNotifier", "FlowWebhooks", "__version__"]

_LAZY = {
    "FlowWebhook": "airflow_webhook_provider.core.definitions",
    "FlowWebhooks": "airflow_webhook_provider.capture.attach",
    "FlowWebhookError": "airflow_webhook_provider.core.exceptions",
    "FlowWebhookNotifier": "airflow_webhook_provider.notifications.flow_webhook",
}

if TYPE_CHECKING:
    from airflow_webhook_provider.capture.attach import FlowWebhooks
    from airflow_webhook_provider.core.definitions import FlowWebhook
    from airflow_webhook_provider.core.exceptions import FlowWebhookError
    from airflow_webhook_provider.notifications.flow_webhook import FlowWebhookNotifier


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_webhook_provider' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
