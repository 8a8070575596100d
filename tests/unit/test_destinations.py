"""Destinations.check: where sign-in may send a browser (the one check against open redirects).

Each refusal sits beside an allowed destination that differs from it in one respect."""

from __future__ import annotations

import pytest

from broker.signin.destinations import Destinations

PUBLIC = "https://broker.example.test"
APP = "https://app.example.test/dash"
ALLOWED = Destinations(PUBLIC, (APP, "http://tools.example.test:8080", "/help"))


@pytest.mark.parametrize("destination", [
    "/console",
    "/console/",
    "/console/x?y=1#z",
    "/help",
    "/help/topic",
    f"{PUBLIC}/console",
    f"{PUBLIC}:443/console/x",
    APP,
    f"{APP}/",
    f"{APP}/reports?id=7",
    "https://app.example.test:443/dash/x",
    "https://APP.example.test/dash/x",
    "http://tools.example.test:8080/",
    "http://tools.example.test:8080/any/path",
])
def test_allowed_destinations_are_followed_unchanged(destination: str) -> None:
    assert ALLOWED.check(destination) == destination


@pytest.mark.parametrize("destination", [
    "",
    "//evil.example",
    "//evil.example/console",
    "/\\evil.example",
    "/console\\..\\x",
    "\\\\evil.example",
    "https://evil.example/console",
    "https://host.evil.example",
    "https://user@broker.example.test/console",
    "https://broker.example.test@evil.example/console",
    "https://user:pw@app.example.test/dash",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/console\r\nSet-Cookie: x=y",
    "/console\nx",
    "/console x",
    "/console\tx",
    "/console\x00",
    "/console\x7f",
    "/console\u2028",
    "/console/../x",
    "/console/%2e%2e/x",
    "/console/%2E%2E/admin",
    "/console/./x",
    "/consolex",
    "/other",
    "/helpdesk",
    "console",
    "http://broker.example.test/console",  # the broker is https: another origin
    "https://broker.example.test:8443/console",
    "https://broker.example.test/other",
    "https://broker.example.test//evil.example",
    "https://app.example.test/dashboard",
    "https://app.example.test/das",
    "https://app.example.test/",
    "http://app.example.test/dash",
    "https://app.example.test:8443/dash",
    "https://app.example.test.evil.example/dash",
    "https://evil.app.example.test/dash",
    "https://app.example.test/dash/../admin",
    "https://app.example.test/dash/%2e%2e/admin",
    "https://app.example.test/dash%2f..%2fadmin",
    "http://tools.example.test/any",  # the default port is not 8080
    "http://tools.example.test:80808/",
    "ftp://app.example.test/dash",
])
def test_refused_destinations(destination: str) -> None:
    assert ALLOWED.check(destination) is None


def test_nothing_outside_the_console_without_a_list() -> None:
    bare = Destinations(PUBLIC)
    assert bare.check("/console/x") == "/console/x"
    assert bare.check(f"{APP}/x") is None
    assert bare.check("/help") is None


def test_a_public_url_with_a_path_keeps_the_console_under_it() -> None:
    below = Destinations("https://sso.example.test/broker")
    assert below.check("https://sso.example.test/broker/console") == \
        "https://sso.example.test/broker/console"
    assert below.check("https://sso.example.test/console") is None
    assert below.check("https://sso.example.test/brokerx/console") is None


def test_a_listed_prefix_with_a_trailing_slash() -> None:
    slash = Destinations(PUBLIC, ("https://app.example.test/dash/",))
    assert slash.check("https://app.example.test/dash/x") == "https://app.example.test/dash/x"
    assert slash.check("https://app.example.test/dash") == "https://app.example.test/dash"
    assert slash.check("https://app.example.test/dashboard") is None
