"""How traffic reaches the cluster: load-balancer addresses, the public domain, ACME."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from components.settings.reader import DNS_NAME, Value

EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AddressBlock:
    """One MetalLB address block: a CIDR or an inclusive `first-last` range."""

    text: str
    first: IPAddress
    last: IPAddress

    def __contains__(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return ip.version == self.first.version and self.first <= ip <= self.last  # type: ignore[operator]


@dataclass(frozen=True)
class NetworkSettings:
    load_balancer_pool: tuple[AddressBlock, ...]
    domain: str
    acme_email: str

    @property
    def ingress_address(self) -> str:
        """The address Traefik, the one public entry point, is given: the pool's first."""
        return str(self.load_balancer_pool[0].first)


def _read_block(value: Value) -> AddressBlock | None:
    text = value.string()
    if not text:
        return None
    try:
        if "-" in text:
            first_text, last_text = (part.strip() for part in text.split("-", 1))
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
            if first.version != last.version or first > last:  # type: ignore[operator]
                value.fail(f"range {text!r} must go from a lower to a higher address of one IP version")
                return None
            return AddressBlock(f"{first}-{last}", first, last)
        network = ipaddress.ip_network(text, strict=True)
        return AddressBlock(str(network), network[0], network[-1])
    except ValueError:
        value.fail(f"must be an IP address block as a CIDR (192.0.2.10/32) or a range (a-b), got {text!r}")
        return None


def read_network(value: Value) -> NetworkSettings:
    section = value.section()
    pool_value = section.required("loadBalancerAddresses")
    blocks = [_read_block(v) for v in pool_value.items(minimum=1, maximum=64)]
    domain = section.required("domain").string(pattern=DNS_NAME, what="a DNS name")
    email = section.required("acmeEmail").string(pattern=EMAIL, what="an e-mail address")
    section.close()
    pool = tuple(b for b in blocks if b is not None)
    for i, block in enumerate(pool):
        for other in pool[:i]:
            if block.first.version == other.first.version and not (
                block.last < other.first or other.last < block.first  # type: ignore[operator]
            ):
                pool_value.fail(f"blocks {other.text} and {block.text} overlap")
    return NetworkSettings(pool, domain, email)
