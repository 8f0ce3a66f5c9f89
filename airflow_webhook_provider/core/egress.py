r"""Where webhooks may be sent: the egress policy.

An administrator limits outbound webhooks with ``[flow_webhook] allowed_url_regexes``
(a URL must match one of them in full) and ``[flow_webhook] forbidden_networks`` (CIDR
blocks no webhook may reach). The network check runs on the address the host name
resolved to, when the connection is opened, on every attempt, so a host name that
later resolves somewhere else (DNS rebinding) is caught too. This module imports
nothing from Airflow.

Usage::

    policy = EgressPolicy.parse(allowed_url_regexes=r"https://hooks\\.example\\.com/.*",
                                forbidden_networks="169.254.0.0/16, 10.0.0.0/8")
    policy.check_url("https://hooks.example.com/x")      # passes
    policy.check_address(ipaddress.ip_address("10.1.2.3"), host="internal")  # raises EgressBlocked
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from airflow_webhook_provider.core.exceptions import FlowWebhookError

__all__ = ["DEFAULT_FORBIDDEN_NETWORKS", "EgressBlocked", "EgressPolicy"]

#: Link-local ranges and the cloud metadata endpoints (AWS, GCP, Azure, Alibaba, AWS IPv6).
DEFAULT_FORBIDDEN_NETWORKS = "169.254.0.0/16, fe80::/10, fd00:ec2::254/128, 100.100.100.200/32"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressBlocked(FlowWebhookError):
    """The egress policy forbids this URL or address; retrying will not help."""


def _split(value: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]


@dataclass(frozen=True)
class EgressPolicy:
    """Which URLs and addresses webhooks may reach.

    :param allowed_url_patterns: a URL must match one in full; empty allows every URL.
    :param forbidden_networks: no webhook may connect to an address in these networks.
    """

    allowed_url_patterns: tuple[re.Pattern[str], ...] = ()
    forbidden_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(
        cls, *, allowed_url_regexes: str = "", forbidden_networks: str = DEFAULT_FORBIDDEN_NETWORKS
    ) -> EgressPolicy:
        """Build a policy from the config strings (comma or newline separated).

        :raises ValueError: naming the option and the bad item.
        """
        patterns = []
        for item in _split(allowed_url_regexes):
            try:
                patterns.append(re.compile(item))
            except re.error as exc:
                raise ValueError(
                    f"[flow_webhook] allowed_url_regexes: {item!r} is not a regular expression ({exc})"
                ) from None
        networks = []
        for item in _split(forbidden_networks):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"[flow_webhook] forbidden_networks: {item!r} is not a CIDR block such as 10.0.0.0/8"
                ) from None
        return cls(tuple(patterns), tuple(networks))

    def check_url(self, url: str) -> None:
        """Refuse a URL that matches none of the allowed patterns.

        :raises EgressBlocked: naming the rule.
        """
        if self.allowed_url_patterns and not any(p.fullmatch(url) for p in self.allowed_url_patterns):
            raise EgressBlocked(
                "the URL matches none of [flow_webhook] allowed_url_regexes; ask an administrator to allow it"
            )

    def check_address(self, address: IPAddress, *, host: str) -> None:
        """Refuse an address inside a forbidden network.

        IPv4 addresses mapped into IPv6 (``::ffff:169.254.169.254``) are checked as IPv4.

        :raises EgressBlocked: naming the host, the address and the rule.
        """
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        for candidate in candidates:
            for network in self.forbidden_networks:
                if candidate.version == network.version and candidate in network:
                    raise EgressBlocked(
                        f"{host} resolves to {candidate}, inside forbidden network {network} "
                        "([flow_webhook] forbidden_networks)"
                    )
