"""The provider's maintenance DAG, alone in this folder so that a DAG bundle can point at exactly it.

``python -m airflow_webhook_provider.maintenance`` prints the bundle's entry for
``[dag_processor] dag_bundle_config_list``. This module imports nothing from Airflow; the
folder's ``.airflowignore`` keeps it and ``__main__.py`` out of DAG parsing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_NAME", "DAG_FILE", "FOLDER", "bundle_entry"]

BUNDLE_NAME = "flow-webhook-maintenance"
FOLDER = Path(__file__).resolve().parent
DAG_FILE = FOLDER / "flow_webhook_redelivery.py"
_LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


def bundle_entry() -> dict[str, Any]:
    """Return the ``dag_bundle_config_list`` entry of a local DAG bundle holding only the maintenance DAG.

    :return: the entry, with this installation's folder as the bundle's ``path``.
    """
    return {"name": BUNDLE_NAME, "classpath": _LOCAL_BUNDLE, "kwargs": {"path": str(FOLDER)}}
