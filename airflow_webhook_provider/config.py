"""Every ``[flow_webhook]`` option, read in one place.

:data:`OPTIONS` states each option once: its type, default and description. The same
table feeds the ``config`` section of ``get_provider_info`` (so ``airflow config list``
shows the defaults) and :func:`load`, which reads Airflow's configuration into a frozen
:class:`Settings` that the rest of the package receives as plain values. No other module
reads ``conf``.

Usage::

    settings = config.load()
    settings.retry.budget_seconds      # [flow_webhook] retry_budget_seconds
    settings.egress.check_url(url)     # allowed_url_regexes, forbidden_networks
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_webhook_provider.core.definitions import Limits
from airflow_webhook_provider.core.egress import DEFAULT_FORBIDDEN_NETWORKS, EgressPolicy
from airflow_webhook_provider.core.retry import RetrySchedule

__all__ = [
    "OPTIONS",
    "SECTION",
    "Option",
    "Settings",
    "base_url",
    "default_deferrable",
    "executors",
    "legacy_metric_names",
    "limits",
    "load",
    "provider_config",
]

SECTION = "flow_webhook"
_VERSION = "0.1.0"
OptionType = Literal["integer", "float", "string", "boolean"]


@dataclass(frozen=True)
class Option:
    """One ``[flow_webhook]`` option.

    :param type: how the value is read.
    :param default: the default, as Airflow's config files spell it.
    :param description: what it does, for ``airflow config list`` and the docs.
    :param example: an example value, if the default does not show one.
    :param version_added: the release that added it.
    """

    type: OptionType
    default: str
    description: str
    example: str | None = None
    version_added: str = _VERSION


OPTIONS: dict[str, Option] = {
    "max_webhooks_per_flow": Option(
        "integer", "50", "Largest number of flow webhooks one DAG may define; more is a DAG import error."
    ),
    "max_body_bytes": Option(
        "integer",
        "1048576",
        "Largest webhook body template in bytes; a larger one is a DAG import error.",
    ),
    "retry_max_attempts": Option(
        "integer",
        "5",
        "Quick attempts for one message when retry on failure is on: those an inline sender makes before "
        "leaving the message to redelivery, and those the dispatcher schedules right after a failure.",
    ),
    "retry_backoff_seconds": Option(
        "float", "1", "First wait between quick attempts; each later wait doubles, with jitter."
    ),
    "retry_budget_seconds": Option(
        "float",
        "30",
        "Time the quick attempts of one message may take together, waits included. It bounds how long an "
        "inline send (no dispatcher running) can hold a task or the DAG processor.",
    ),
    "redelivery_backoff_seconds": Option(
        "float",
        "60",
        "First wait after the quick attempts; each later wait doubles, with jitter, honouring Retry-After.",
    ),
    "redelivery_max_backoff_seconds": Option("float", "3600", "Longest wait between two attempts."),
    "redelivery_max_age_seconds": Option(
        "float",
        "259200",
        "Age after which an undelivered message is dead (default 3 days). Dead messages can still be "
        "replayed by id.",
    ),
    "allowed_url_regexes": Option(
        "string",
        "",
        "Regular expressions, comma or newline separated; a webhook URL must match one of them in full. "
        "Empty allows every URL.",
        example="https://hooks[.]slack[.]com/.*",
    ),
    "forbidden_networks": Option(
        "string",
        DEFAULT_FORBIDDEN_NETWORKS,
        "CIDR blocks no webhook may reach, comma separated. Checked on the resolved address of every "
        "connection (behind a proxy too, before the request is handed to it). The default blocks "
        "link-local addresses and cloud metadata endpoints.",
        example="169.254.0.0/16, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16",
    ),
    "proxy": Option(
        "string",
        "",
        "An HTTP(S) proxy every webhook goes through, e.g. for fixed egress addresses. Empty: the "
        "HTTP_PROXY, HTTPS_PROXY and NO_PROXY environment variables decide.",
        example="http://egress-proxy.internal:3128",
        version_added="0.2.0",
    ),
    "ledger_conn_id": Option(
        "string",
        "",
        "Airflow connection to the delivery ledger's database (postgres, sqlite, or any type with a "
        "sqlalchemy_url extra). Empty: the SQLite file $AIRFLOW_HOME/flow_webhooks.db. Use a shared "
        "database when tasks run on several hosts.",
        example="flow_webhook_ledger",
    ),
    "circuit_failure_threshold": Option(
        "integer",
        "3",
        "Consecutive failures after which an endpoint's circuit opens: inline senders stop trying it and "
        "the dispatcher probes it on the redelivery schedule until one attempt succeeds. An attempt that "
        "times out opens the circuit at once.",
        version_added="0.2.0",
    ),
    "disable_after_seconds": Option(
        "float",
        "432000",
        "An endpoint that has failed without a single success for longer than this (default 5 days) is "
        "disabled: its new messages are held, unsent and kept, until `airflow flow-webhooks endpoints enable`. "
        "An answer of 410 Gone disables it at once. 0 never disables on time.",
        version_added="0.2.0",
    ),
    "alert_conn_id": Option(
        "string",
        "",
        "A flow_webhook connection that receives operator alerts (signed JSON): endpoint.disabled, "
        "endpoint.recovered and delivery.dead. Empty: no alerts.",
        example="ops_alerts",
        version_added="0.2.0",
    ),
    "alert_interval_seconds": Option(
        "float",
        "900",
        "At most one alert of a kind per endpoint in this many seconds; the next one counts those held back.",
        version_added="0.2.0",
    ),
    "retention_days": Option(
        "float",
        "30",
        "Delivered messages (and their attempts) older than this are purged by the dispatcher and the "
        "maintenance DAG; held and dead ones stay until recovered or purged by hand. 0 keeps everything.",
        version_added="0.2.0",
    ),
    "dispatcher_concurrency": Option(
        "integer",
        "16",
        "Requests one dispatcher sends at once, over all endpoints.",
        version_added="0.2.0",
    ),
    "dispatcher_poll_seconds": Option(
        "float",
        "0.25",
        "How often an idle dispatcher looks for new messages (on PostgreSQL it is also woken by NOTIFY).",
        version_added="0.2.0",
    ),
    "dispatcher_heartbeat_seconds": Option(
        "float",
        "5",
        "How often a dispatcher records that it is alive in the ledger.",
        version_added="0.2.0",
    ),
    "dispatcher_stale_seconds": Option(
        "float",
        "30",
        "A dispatcher whose last heartbeat is older than this is taken for dead; while no dispatcher is "
        "alive, callbacks send their messages themselves (inline).",
        version_added="0.2.0",
    ),
    "dispatcher_shutdown_grace_seconds": Option(
        "float",
        "35",
        "On SIGTERM, how long a dispatcher waits for the requests it has in flight before it exits; "
        "their messages stay in the ledger either way.",
        version_added="0.2.0",
    ),
}


def provider_config() -> dict[str, Any]:
    """Return the ``config`` section of the provider info, built from :data:`OPTIONS`."""
    return {
        SECTION: {
            "description": "Flow webhook definitions, delivery and the dispatcher.",
            "options": {
                key: {
                    "description": option.description,
                    "version_added": option.version_added,
                    "type": option.type,
                    "example": option.example,
                    "default": option.default,
                }
                for key, option in OPTIONS.items()
            },
        }
    }


@dataclass(frozen=True)
class Settings:
    """The ``[flow_webhook]`` options as typed values (and ``[api] base_url``).

    Build it with :func:`load`; tests may build one directly.
    """

    limits: Limits = field(default_factory=Limits)
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    proxy: str = ""
    ledger_conn_id: str = ""
    circuit_failure_threshold: int = 3
    dispatcher_concurrency: int = 16
    dispatcher_poll_seconds: float = 0.25
    dispatcher_heartbeat_seconds: float = 5.0
    dispatcher_stale_seconds: float = 30.0
    dispatcher_shutdown_grace_seconds: float = 35.0
    disable_after_seconds: float = 432000.0
    alert_conn_id: str = ""
    alert_interval_seconds: float = 900.0
    retention_days: float = 30.0
    base_url: str = ""


def _value(key: str) -> Any:
    from airflow.sdk.configuration import conf

    option = OPTIONS[key]
    if option.type == "integer":
        return conf.getint(SECTION, key, fallback=int(option.default))
    if option.type == "float":
        return conf.getfloat(SECTION, key, fallback=float(option.default))
    if option.type == "boolean":
        return conf.getboolean(SECTION, key, fallback=option.default.lower() == "true")
    return conf.get(SECTION, key, fallback=option.default) or ""


@functools.lru_cache(maxsize=8)
def _egress(allowed_url_regexes: str, forbidden_networks: str) -> EgressPolicy:
    # Parsed once per distinct pair of option strings: every send asks for the policy.
    return EgressPolicy.parse(allowed_url_regexes=allowed_url_regexes, forbidden_networks=forbidden_networks)


def load() -> Settings:
    """Read the options from Airflow's configuration (environment variables included).

    The settings are read once per process and again whenever the environment's
    ``AIRFLOW__FLOW_WEBHOOK__*`` (or ``[api] base_url``) variables change: every callback and
    every send asks for them.

    :raises ValueError: naming the option, when one is malformed.
    """
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENVIRONMENT_PREFIXES)))
    cached = _loaded.get(key)
    if cached is None:
        if len(_loaded) > 32:
            _loaded.clear()
        cached = _loaded[key] = _read()
    return cached


_ENVIRONMENT_PREFIXES = (f"AIRFLOW__{SECTION.upper()}__", "AIRFLOW__API__BASE_URL", "AIRFLOW_CONFIG")
_loaded: dict[tuple[tuple[str, str], ...], Settings] = {}


def _read() -> Settings:
    return Settings(
        limits=limits(),
        retry=RetrySchedule(
            attempts=_value("retry_max_attempts"),
            backoff_seconds=_value("retry_backoff_seconds"),
            budget_seconds=_value("retry_budget_seconds"),
            redelivery_backoff_seconds=_value("redelivery_backoff_seconds"),
            redelivery_max_backoff_seconds=_value("redelivery_max_backoff_seconds"),
            max_age_seconds=_value("redelivery_max_age_seconds"),
        ),
        egress=_egress(_value("allowed_url_regexes"), _value("forbidden_networks")),
        proxy=_value("proxy").strip(),
        ledger_conn_id=_value("ledger_conn_id").strip(),
        circuit_failure_threshold=max(1, _value("circuit_failure_threshold")),
        dispatcher_concurrency=max(1, _value("dispatcher_concurrency")),
        dispatcher_poll_seconds=max(0.01, _value("dispatcher_poll_seconds")),
        dispatcher_heartbeat_seconds=max(0.1, _value("dispatcher_heartbeat_seconds")),
        dispatcher_stale_seconds=max(1.0, _value("dispatcher_stale_seconds")),
        dispatcher_shutdown_grace_seconds=max(0.0, _value("dispatcher_shutdown_grace_seconds")),
        disable_after_seconds=max(0.0, _value("disable_after_seconds")),
        alert_conn_id=_value("alert_conn_id").strip(),
        alert_interval_seconds=max(0.0, _value("alert_interval_seconds")),
        retention_days=max(0.0, _value("retention_days")),
        base_url=base_url(),
    )


def base_url() -> str:
    """Return ``[api] base_url``: where the Airflow UI and API server are reached (empty when unset)."""
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").strip()


def executors() -> list[str]:
    """Return the executors ``[core] executor`` names (a comma-separated list since Airflow 2.10)."""
    from airflow.sdk.configuration import conf

    return [
        name.strip() for name in (conf.get("core", "executor", fallback="") or "").split(",") if name.strip()
    ]


def legacy_metric_names() -> bool:
    """Return ``[metrics] legacy_names_on``: whether metrics are also sent under their legacy names."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("metrics", "legacy_names_on", fallback=True))


def default_deferrable() -> bool:
    """Return ``[operators] default_deferrable``: whether operators that can defer do so by default."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def limits() -> Limits:
    """Read only the per-flow limits: what attaching webhooks at DAG-parse time needs."""
    return Limits(
        max_webhooks_per_flow=_value("max_webhooks_per_flow"), max_body_bytes=_value("max_body_bytes")
    )
