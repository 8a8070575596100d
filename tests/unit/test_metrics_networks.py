"""metrics.public_networks as docs/operations.md ("Metrics") describes it: each documented form
of an entry, the default, and what is refused, through the same settings loader and check the
public port uses."""

from __future__ import annotations

import pytest

from broker import metrics, settings
from broker.errors import ConfigError


def networks(value: str | None) -> tuple[str, ...]:
    environ = {} if value is None else {"BROKER_METRICS_PUBLIC_NETWORKS": value}
    return tuple(settings.load(None, environ=environ).metrics.public_networks)


@pytest.mark.parametrize(("value", "caller", "allowed"), [
    (None, "127.0.0.1", True),  # the default: loopback only
    (None, "::1", True),
    (None, "10.0.0.5", False),
    ("10.0.0.0/8", "10.200.1.1", True),  # CIDR
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.1.2.3/8", "10.9.9.9", True),  # host bits ignored: 10.0.0.0/8
    ("192.0.2.7", "192.0.2.7", True),  # a single address is one host
    ("192.0.2.7", "192.0.2.8", False),
    ("2001:db8::/32", "2001:db8::1", True),
    ("10.0.0.0/8", "::ffff:10.0.0.1", False),  # an IPv4 caller seen as IPv6 ...
    ("::ffff:10.0.0.0/104", "::ffff:10.0.0.1", True),  # ... matches only an IPv6 entry
    ("*", "203.0.113.9", True),
    ("*", "2001:db8::1", True),
    ("", "127.0.0.1", False),  # an empty list: nobody
    ("10.0.0.0/8,::1", "::1", True),  # the environment's comma-separated list
])
def test_each_documented_form(value: str | None, caller: str, allowed: bool) -> None:
    assert metrics.allowed(caller, networks(value)) is allowed


def test_a_caller_without_an_ip_address_is_refused_even_by_star() -> None:
    assert not metrics.allowed(None, ("*",))
    assert not metrics.allowed("unix-socket", ("*",))
    assert metrics.allowed("127.0.0.1", ("*",))  # the control


def test_an_entry_that_is_no_network_stops_the_start_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        networks("10.0.0.0/8,intranet")
    assert "setting metrics.public_networks" in str(info.value)
    assert "'intranet' is not an IP address or network" in str(info.value)
