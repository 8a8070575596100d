"""A FIDO2 security key in a real browser: headless Chromium's virtual authenticator (the
DevTools protocol's WebAuthn domain, through Playwright's CDP session) registers a key from
the security credentials page and signs in with it, the broker's own script carrying options
and answers. The broker's public URL is http://localhost:PORT: browsers take no IP address as
relying party id."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyotp
import pytest

from tests.browser import chromium, launch, localhost_broker, screenshot
from tests.helpers import Broker

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

PASSWORD = "Correct-Horse-9-Battery"
MANAGE = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["iam:EnableMFADevice", "iam:ListMFADevices",
                                  "iam:ListAccessKeys", "iam:GetUser"],
    "Resource": "arn:aws:iam::*:user/${aws:username}"}, {
    "Effect": "Allow", "Action": "iam:CreateVirtualMFADevice",
    "Resource": "arn:aws:iam::*:mfa/*"}]}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = localhost_broker(tmp_path_factory.mktemp("keys"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    executable = chromium()
    request.getfixturevalue("broker")  # the broker's event loop first (see test_browser.py)
    yield from launch(executable)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def with_authenticator(context: BrowserContext, page: Page) -> str:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
        "hasUserVerification": False, "automaticPresenceSimulation": True}})
    return str(made["authenticatorId"])


def test_a_security_key_registered_in_the_console_signs_in(context: BrowserContext,
                                                           broker: Broker) -> None:
    site = f"http://localhost:{broker.server.port}"
    name = f"keyed-{uuid.uuid4().hex[:6]}"
    iam = broker.client("iam")
    iam.create_user(UserName=name)
    iam.create_login_profile(UserName=name, Password=PASSWORD)
    iam.put_user_policy(UserName=name, PolicyName="keys", PolicyDocument=json.dumps(MANAGE))
    page = context.new_page()
    with_authenticator(context, page)

    def password_step() -> None:
        page.goto(f"{site}/signin")
        page.fill("#account", broker.account_id)
        page.fill("#username", name)
        page.fill("#password", PASSWORD)
        page.click("form:has(input[value='iam']) button")

    password_step()
    page.wait_for_url(f"{site}/console")
    page.click("a[href='/console/security-credentials']")
    page.fill("#key_name", "virtual key")
    page.click("#webauthn-register")
    page.wait_for_url(f"{site}/console/security-credentials?done=key-registered")
    assert "Security key" in page.content()
    screenshot(page, "security-credentials")
    devices = iam.list_mfa_devices(UserName=name)["MFADevices"]
    assert len(devices) == 1 and not devices[0]["SerialNumber"].startswith("arn:")

    context.clear_cookies()
    password_step()
    assert page.locator("h1").inner_text() == "Multi-factor authentication"
    assert page.locator("#code").count() == 0  # no virtual device: the key alone
    page.click("#webauthn-use")
    page.wait_for_url(f"{site}/console")
    assert f"user/{name}" in page.content()
    sessions = [c for c in context.cookies() if c["name"] == "broker-session"]
    assert len(sessions) == 1

    # A virtual device too, enrolled from the console by the seed the page shows; then the
    # MFA step offers both, and the code signs in.
    page.goto(f"{site}/console/security-credentials")
    page.fill("#device_name", f"{name}-phone")
    page.click("form[action='/console/security-credentials/mfa'] button")
    totp = pyotp.TOTP(page.locator("#seed").inner_text())
    now = time.time()
    page.fill("#code1", totp.at(now))
    page.fill("#code2", totp.at(now, counter_offset=1))
    page.click("form[action='/console/security-credentials/mfa/enable'] button")
    page.wait_for_url(f"{site}/console/security-credentials?done=mfa")
    assert len(iam.list_mfa_devices(UserName=name)["MFADevices"]) == 2
    context.clear_cookies()
    password_step()
    assert page.locator("#webauthn-use").count() == 1
    # A step within the window the two enabling codes did not spend.
    spent, current = {int(now) // 30, int(now) // 30 + 1}, int(time.time()) // 30
    step = next(s for s in (current - 1, current, current + 1) if s not in spent)
    page.fill("#code", totp.generate_otp(step))
    page.click("form[action='/signin/mfa'] button[type=submit]")
    page.wait_for_url(f"{site}/console")
