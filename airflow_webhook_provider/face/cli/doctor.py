"""``airflow flow-webhooks doctor``: check a deployment and say how to fix what is wrong.

It checks the settings, the ledger, the executor against the ledger, the dispatcher's and
the triggerer's heartbeats, the plugin and its listeners, and the connections. Each check
is a :class:`Check`: ``ok``, a ``warning`` (works, but worth knowing), or a
``problem`` (something is or will be lost or refused), with the fix for anything not ok.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from airflow_webhook_provider import config

__all__ = ["DISTRIBUTED_EXECUTORS", "Check", "run_checks"]

Status = Literal["ok", "warning", "problem"]

#: Executors whose tasks run on other hosts than the scheduler: a per-host SQLite ledger cannot work.
DISTRIBUTED_EXECUTORS = ("CeleryExecutor", "KubernetesExecutor", "CeleryKubernetesExecutor", "EdgeExecutor")


@dataclass(frozen=True)
class Check:
    """One check's verdict."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view."""
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix or "-"}


def _settings() -> Check:
    try:
        config.load()
    except ValueError as exc:
        return Check("settings", "problem", str(exc), "correct the [flow_webhook] option it names")
    return Check("settings", "ok", "every [flow_webhook] option reads")


def _ledger(found: dict[str, Any]) -> Check:
    from airflow_webhook_provider.ledger import open_ledger

    settings = config.load()
    try:
        ledger = open_ledger(settings.ledger_conn_id)
        ledger.ping()
    except Exception as exc:
        return Check(
            "ledger",
            "problem",
            f"cannot open the ledger: {type(exc).__name__}: {str(exc)[:300]}",
            "check [flow_webhook] ledger_conn_id and that its database is reachable",
        )
    found["ledger"] = ledger
    where = f"connection {settings.ledger_conn_id!r}" if settings.ledger_conn_id else "the SQLite default"
    return Check("ledger", "ok", f"{ledger.dialect} ledger reachable ({where})")


def _executor(found: dict[str, Any]) -> Check:
    ledger = found.get("ledger")
    names = config.executors()
    distributed = [name for name in names if name.rsplit(".", 1)[-1] in DISTRIBUTED_EXECUTORS]
    if ledger is None:
        return Check(
            "executor",
            "warning",
            f"executor {', '.join(names) or '(default)'}; the ledger could not be checked",
        )
    if distributed and ledger.dialect == "sqlite":
        return Check(
            "executor",
            "problem",
            f"{', '.join(distributed)} runs tasks on other hosts, but the ledger is a SQLite file on each host: "
            "messages recorded by a worker would be invisible to the dispatcher, the tab and redelivery",
            "point [flow_webhook] ledger_conn_id at a postgres connection that every host reaches "
            "(pip install airflow-webhook-provider[postgres])",
        )
    return Check(
        "executor", "ok", f"{', '.join(names) or 'the default executor'} with a {ledger.dialect} ledger"
    )


def _dispatcher(found: dict[str, Any]) -> Check:
    ledger = found.get("ledger")
    if ledger is None:
        return Check("dispatcher", "warning", "the ledger could not be checked")
    settings = config.load()
    alive = ledger.dispatchers(alive_within=settings.dispatcher_stale_seconds)
    if alive:
        return Check("dispatcher", "ok", f"{len(alive)} alive: {', '.join(d.name for d in alive)}")
    silent = [d for d in ledger.dispatchers() if d.stopped_at is None]
    if silent:
        return Check(
            "dispatcher",
            "problem",
            f"{', '.join(d.name for d in silent)} stopped sending heartbeats without stopping; callbacks send "
            "inline, and runs ended by hand wait",
            "restart `airflow flow-webhooks dispatcher` (under a process supervisor, like the scheduler)",
        )
    return Check(
        "dispatcher",
        "warning",
        "no dispatcher runs: callbacks send their own messages inline, and messages only the listeners "
        "saw (runs marked by hand) wait for the maintenance DAG",
        "run `airflow flow-webhooks dispatcher` beside the scheduler",
    )


def _triggerer() -> Check:
    from airflow.jobs.job import most_recent_job

    try:
        job = most_recent_job("TriggererJob")
    except Exception as exc:
        return Check(
            "triggerer",
            "warning",
            f"cannot read the triggerer's heartbeat from Airflow's metadata database: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}",
            "run `airflow db migrate`, or check [database] sql_alchemy_conn",
        )
    if job is not None and job.is_alive():
        return Check("triggerer", "ok", f"alive on {job.hostname}")
    return Check(
        "triggerer",
        "warning",
        'no triggerer is alive: late webhooks (on="late", Airflow\'s deadline alerts) are not sent, and '
        "FlowWebhookOperator tasks that defer do not resume",
        "run `airflow triggerer` beside the scheduler",
    )


def _plugin() -> Check:
    from airflow import plugins_manager
    from airflow.listeners.listener import get_listener_manager

    from airflow_webhook_provider.capture import listeners

    names = {str(info.get("name")) for info in plugins_manager.get_plugin_info(attrs_to_dump=["name"])}
    if "flow_webhooks" not in names:
        return Check(
            "plugin",
            "problem",
            "the flow_webhooks plugin is not loaded: no Webhooks tab, and runs ended by hand send nothing",
            "reinstall airflow-webhook-provider (its airflow.plugins entry point loads the plugin)",
        )
    if not get_listener_manager().pm.is_registered(listeners):
        return Check(
            "plugin",
            "problem",
            "the plugin is loaded but its listeners are not registered",
            "check the scheduler's log for plugin errors",
        )
    return Check("plugin", "ok", "the Webhooks tab and the run-end listeners are registered")


def _endpoints(found: dict[str, Any], conn_ids: list[str]) -> list[Check]:
    from airflow_webhook_provider.delivery.endpoints import resolve_endpoint
    from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

    ledger = found.get("ledger")
    checks = []
    settings = config.load()
    known = [health for health in ledger.endpoint_health()] if ledger is not None else []
    for health in known:
        if health.disabled_at is not None:
            checks.append(
                Check(
                    f"endpoint {health.key}",
                    "warning",
                    f"disabled ({health.disabled_reason}); its messages are held",
                    f"fix the receiver, then `airflow flow-webhooks endpoints enable {health.key}`",
                )
            )
        elif health.circuit == "open":
            checks.append(
                Check(
                    f"endpoint {health.key}",
                    "warning",
                    f"circuit open ({health.opened_reason}); the dispatcher probes it",
                    "fix the receiver; the first successful probe closes the circuit",
                )
            )
    wanted = [key for key in dict.fromkeys([*conn_ids, settings.alert_conn_id]) if key]
    wanted += [h.key for h in known if not h.key.startswith("url:") and h.key not in wanted]
    for conn_id in wanted:
        name = f"connection {conn_id}"
        try:
            resolve_endpoint(conn_id, settings)
        except Exception as exc:
            checks.append(
                Check(
                    name,
                    "problem",
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    "create or correct the connection",
                )
            )
            continue
        if conn_id in conn_ids:
            ok, message = FlowWebhookHook(conn_id).test_connection()
            checks.append(
                Check(name, "ok" if ok else "problem", message, "" if ok else "see the receiver's answer")
            )
        else:
            checks.append(Check(name, "ok", "reads as a flow_webhook connection"))
    return checks


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        return Check(name, "problem", f"the check failed: {type(exc).__name__}: {str(exc)[:300]}")


def run_checks(*, conn_ids: list[str]) -> list[Check]:
    """Run every check; ``conn_ids`` also get a test message each."""
    found: dict[str, Any] = {}
    checks = [_guarded("settings", _settings)]
    if checks[0].status == "problem":
        return checks
    checks.append(_guarded("ledger", lambda: _ledger(found)))
    checks.append(_guarded("executor", lambda: _executor(found)))
    checks.append(_guarded("dispatcher", lambda: _dispatcher(found)))
    checks.append(_guarded("triggerer", _triggerer))
    checks.append(_guarded("plugin", _plugin))
    try:
        checks += _endpoints(found, conn_ids)
    except Exception as exc:
        checks.append(Check("endpoints", "problem", f"the check failed: {type(exc).__name__}: {exc}"))
    return checks
