"""Maintenance: send the flow webhooks the ledger still holds, every 5 minutes.

With a dispatcher running (``airflow flow-webhooks dispatcher``) this DAG is only a
safety net: the dispatcher already redelivers due messages and purges old ones, and
this DAG finds nothing to do. Without one, it is what sends the messages that only the
listeners captured (a run marked by hand) and the redeliveries of failed ones.

Each run claims the ledger's due messages and sends each once more, on an exponential
schedule, until it is delivered or reaches ``[flow_webhook] redelivery_max_age_seconds``
(3 days by default) and is marked dead. Several copies may run at once (on several
hosts): claiming keeps them from sending the same message twice. Each run also purges
delivered messages older than ``[flow_webhook] retention_days``.
``airflow flow-webhooks dispatcher --once`` does the same from a terminal.

The file ships inside the provider package, alone in its folder, so that an Airflow
deployment can load it without copying files: ``python -m
airflow_webhook_provider.maintenance`` prints the ``[dag_processor]
dag_bundle_config_list`` entry of a local DAG bundle pointing at this folder.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


@dag(
    schedule=datetime.timedelta(minutes=5),
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["flow-webhook", "maintenance"],
)
def flow_webhook_redelivery() -> None:
    """Send the flow webhooks that are due and purge old delivered ones (a safety net beside a dispatcher)."""

    @task(execution_timeout=datetime.timedelta(minutes=4))
    def redeliver_due() -> dict[str, int]:
        from airflow_webhook_provider.delivery.dispatcher import Dispatcher
        from airflow_webhook_provider.delivery.pipeline import Pipeline

        report = Dispatcher(Pipeline.from_config(require_ledger=True)).run(once=True, time_limit_seconds=180)
        return {
            "claimed": report.claimed,
            "delivered": report.delivered,
            "failed": report.failed,
            "dead": report.dead,
        }

    redeliver_due()


flow_webhook_redelivery()
