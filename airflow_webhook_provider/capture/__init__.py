"""Capture: decide what an end calls for, and record it in the ledger; never wait on a receiver.

- ``attach``: ``FlowWebhooks(...).attach(dag)`` wires a DAG's webhooks to its callbacks.
- ``callbacks``: task- and DAG-level callbacks, the low-latency path (task runner, DAG processor).
- ``context``: what a callback context says about the end (clear number, states, links).
"""
