"""``python -m airflow_webhook_provider.maintenance`` prints the maintenance DAG's bundle entry as JSON."""

from __future__ import annotations

import json

from airflow_webhook_provider.maintenance import bundle_entry

print(json.dumps(bundle_entry()))
