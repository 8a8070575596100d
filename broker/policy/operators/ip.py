"""IpAddress / NotIpAddress: IPv4 and IPv6 addresses against addresses and CIDR ranges."""

from __future__ import annotations

import ipaddress

from broker.policy.operators import Operator

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class InRange:
    def prepare(self, value: str) -> Network:
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None

    def test(self, request_value: str, prepared: Network) -> bool:
        try:
            address = ipaddress.ip_address(request_value.strip())
        except ValueError:
            return False
        return address.version == prepared.version and address in prepared


OPERATORS = [
    Operator("IpAddress", InRange()),
    Operator("NotIpAddress", InRange(), negated=True),
]
