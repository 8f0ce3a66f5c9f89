"""``python -m airflow_webhook_provider`` runs the ``flow-webhook`` command line."""

import sys

from airflow_webhook_provider.cli import main

sys.exit(main())
