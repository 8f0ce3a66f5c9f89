"""``python -m airflow_webhook_provider`` runs the ``flow-webhook`` command line."""

import sys

from airflow_webhook_provider.face.cli.definition import main

sys.exit(main())
