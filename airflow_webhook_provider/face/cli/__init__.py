"""The ``airflow flow-webhooks`` command group (also installed as ``flow-webhook``).

``definition`` says what the commands are (for Airflow's CLI and the alias); ``commands``
does what they say.
"""

PROG = "flow-webhook"
GROUP = "flow-webhooks"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
