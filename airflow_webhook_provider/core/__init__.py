"""The pure core: definitions, templating, signing, egress rules, retry arithmetic, states.

Nothing in this package imports Airflow (a test holds it to that): settings come in as
arguments, so the same code validates a definition at DAG-parse time, in the CLI, and
in a receiver that never installed Airflow.
"""
