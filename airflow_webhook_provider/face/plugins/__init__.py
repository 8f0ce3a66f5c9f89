"""The provider's Airflow UI plugin: a Webhooks tab on every DAG run page (see ``webhooks_tab``)."""
