"""Which application a forward-auth request is for: the URL as the proxy routes it, and nothing
the broker would have to guess. Each trick that would let a session past an application's
policy beside the honest URL of the same application."""

from __future__ import annotations

import pytest

from broker.settings import Application
from broker.signin.console import Console

PAYROLL = Application("Payroll", "https://gateway.example.com/payroll",
                      "arn:aws:gateway:::app/payroll")
WIKI = Application("Wiki", "https://gateway.example.com/app")
CONSOLE = Console(None, None, None, None, (PAYROLL, WIKI))  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "app"), [
    ("https://gateway.example.com/payroll/slips", PAYROLL),
    ("https://gateway.example.com/payroll", PAYROLL),
    ("https://GATEWAY.example.com:443/payroll/slips", PAYROLL),
    ("https://gateway.example.com/%70ayroll/slips", PAYROLL),  # decoded as the proxy routes it
    ("https://gateway.example.com/app/page?x=../payroll", WIKI),
    ("https://gateway.example.com/app", WIKI),
])
def test_a_url_is_placed_as_the_proxy_routes_it(url: str, app: Application) -> None:
    assert CONSOLE.application_for(url) is app


@pytest.mark.parametrize("url", [
    "https://gateway.example.com/app/../payroll/slips",
    "https://gateway.example.com/app/%2e%2e/payroll/slips",
    "https://gateway.example.com/app%2f..%2fpayroll/slips",
    "https://gateway.example.com/app/%252e%252e/payroll",
    "https://gateway.example.com//payroll/slips",
    "https://gateway.example.com/app\\..\\payroll",
    "https://gateway.example.com/app/./x",
    "https://user@gateway.example.com/app/x",
    "https://gateway.example.com/app/x\r\nX-Broker-Role: Admin",
    "https://gateway.example.com/payrollx",
    "https://elsewhere.example/payroll/slips",
    "http://gateway.example.com/payroll/slips",
    "https://gateway.example.com:8443/payroll/slips",
    "javascript:alert(1)",
    "",
])
def test_a_url_that_cannot_be_placed_lies_under_no_application(url: str) -> None:
    assert CONSOLE.application_for(url) is None
