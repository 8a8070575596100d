"""The access portal in a real browser: headless Chromium (the system's) driven by Playwright.

A directory user made with boto3's ``identitystore`` and assigned a permission set with
``sso-admin`` signs in at ``/start`` with the one-time password ``broker sso reset-password``
gives, chooses their own password, registers a TOTP device from the seed the page shows, sees
the account and role they are assigned and opens its "Access keys"; then approves the AWS
CLI's device authorization on the page its ``verificationUriComplete`` opens. Screenshots are
kept as artifacts (tests/browser.py says where). Last, the issue's whole path: `broker login`
approved in the same browser gives the AWS CLI the role, with no key anywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest

from tests.browser import chromium, launch, localhost_broker, screenshot, site
from tests.e2e.support import BIN, clean_env
from tests.helpers import Broker, Creds
from tests.sso_world import Tenant, make_tenant

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

NEW_PASSWORD = "Browser-portal-9-Battery!"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = localhost_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def tenant(broker: Broker) -> Tenant:
    return make_tenant(broker, "ReadOnly")


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    executable = chromium()
    request.getfixturevalue("tenant")  # the broker (and its world) first: see test_browser
    yield from launch(executable)


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile for the module: the device approval uses the portal session."""
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def heading(page: Page) -> str:
    return page.locator("h1").inner_text()


def test_first_sign_in_then_the_roles_and_their_access_keys(
        context: BrowserContext, broker: Broker, tenant: Tenant) -> None:
    otp = broker.server.call(broker.runtime.portal.reset_password(tenant.identity_store_id,
                                                                  tenant.user_name))
    page = context.new_page()
    page.goto(f"{site(broker)}/start")  # the broker's only instance: straight to its portal
    page.wait_for_url(f"{site(broker)}/start/{tenant.identity_store_id}")
    assert heading(page) == "Sign in"
    assert page.get_attribute("#username", "autocomplete") == "username"
    assert page.get_attribute("#password", "autocomplete") == "current-password"
    page.fill("#username", tenant.user_name)
    page.fill("#password", otp)
    page.click("form button")
    assert heading(page) == "Choose a new password"
    assert page.get_attribute("#new_password", "autocomplete") == "new-password"
    assert page.get_attribute("#confirm_password", "autocomplete") == "new-password"
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#confirm_password", NEW_PASSWORD)
    page.click("form button")
    assert heading(page) == "Register an MFA device"
    assert page.locator("figure svg").count() == 1  # the QR code, inline
    seed = page.locator("dt:text-is('Key') + dd code").inner_text()
    assert page.get_attribute("#code", "autocomplete") == "one-time-code"
    screenshot(page, "portal-mfa-registration")
    page.fill("#code", pyotp.TOTP(seed).now())
    page.click("form button")
    page.wait_for_url(f"{site(broker)}/start/{tenant.identity_store_id}")
    assert heading(page) == "AWS access portal"
    account = page.locator(f"section[data-account='{tenant.account_id}']")
    assert account.count() == 1
    assert account.locator("li[data-role]").evaluate_all(
        "items => items.map(i => i.dataset.role)") == ["ReadOnly"]
    screenshot(page, "portal-home")
    account.locator("li[data-role='ReadOnly'] button", has_text="Access keys").click()
    assert heading(page).startswith("Access keys for ReadOnly")
    exports = page.locator("#exports").inner_text()
    values = dict(re.findall(r'export (\w+)="([^"]+)"', exports))
    assert set(values) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert f"[{tenant.account_id}_ReadOnly]" in page.locator("#profile").inner_text()
    caller = broker.client("sts", Creds(values["AWS_ACCESS_KEY_ID"],
                                        values["AWS_SECRET_ACCESS_KEY"],
                                        values["AWS_SESSION_TOKEN"])).get_caller_identity()
    assert ":assumed-role/AWSReservedSSO_ReadOnly_" in caller["Arn"]
    screenshot(page, "portal-access-keys")
    # "Management console": the broker's console, as the AWSReservedSSO role, the session
    # named after the person.
    page.goto(f"{site(broker)}/start/{tenant.identity_store_id}")
    page.locator(f"section[data-account='{tenant.account_id}'] li[data-role='ReadOnly'] "
                 "button", has_text="Management console").click()
    page.wait_for_url(f"{site(broker)}/console")
    assert heading(page) == "Console"
    signed_in_as = page.locator("dt:text-is('Signed in as') + dd code").inner_text()
    assert re.fullmatch(rf"arn:aws:sts::{tenant.account_id}:assumed-role/"
                        rf"AWSReservedSSO_ReadOnly_[0-9a-f]{{16}}/{tenant.user_name}",
                        signed_in_as), signed_in_as
    screenshot(page, "portal-console")


def test_the_device_authorization_approved_in_the_browser(
        context: BrowserContext, broker: Broker, tenant: Tenant) -> None:
    oidc = broker.client("sso-oidc")
    client = oidc.register_client(clientName="browser-cli", clientType="public")
    started = oidc.start_device_authorization(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        startUrl=f"{site(broker)}/start/{tenant.identity_store_id}")
    page = context.new_page()
    page.goto(started["verificationUriComplete"])  # signed in by the test above
    assert heading(page) == "Allow browser-cli to access your data?"
    assert started["userCode"] in page.content()
    screenshot(page, "portal-device-approval")
    page.click("button[value='allow']")
    assert heading(page) == "Request approved"
    tokens = oidc.create_token(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        grantType="urn:ietf:params:oauth:grant-type:device_code",
        deviceCode=started["deviceCode"])
    roles = broker.client("sso").list_account_roles(
        accessToken=tokens["accessToken"], accountId=tenant.account_id)["roleList"]
    assert [r["roleName"] for r in roles] == ["ReadOnly"]


def test_a_security_key_registered_in_the_portal_signs_in(
        context: BrowserContext, broker: Broker, tenant: Tenant) -> None:
    """Chromium's virtual authenticator (the DevTools protocol's WebAuthn domain) registers
    a key on the portal page of the person signed in above, then signs in with it."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
        "hasUserVerification": False, "automaticPresenceSimulation": True}})
    start = f"{site(broker)}/start/{tenant.identity_store_id}"
    page.goto(start)
    page.fill("#key-name", "virtual key")
    page.click("#webauthn-register")
    page.wait_for_url(f"{start}?done=key-registered")
    assert "virtual key" in page.content()
    page.click("form[action$='/signout'] button")
    assert heading(page) == "You have signed out"
    page.goto(start)
    page.fill("#username", tenant.user_name)
    page.fill("#password", NEW_PASSWORD)
    page.click("form button")
    assert heading(page) == "Multi-factor authentication"
    page.click("#webauthn-use")
    # The MFA page is at the start URL too (the password's POST): wait for the portal itself.
    page.wait_for_selector("h1:text-is('AWS access portal')")
    assert "Signed in as" in page.content()


def test_broker_login_approved_in_the_browser_gives_the_cli_the_role(
        context: BrowserContext, broker: Broker, tenant: Tenant, tmp_path: Path) -> None:
    """The issue's whole path: the person signed in at /start above; ``broker login`` prints
    its verification URL, the person allows it in the browser, and the AWS CLI — with no key
    anywhere — has the AWSReservedSSO role's credentials."""
    env = clean_env(HOME=str(tmp_path))
    del env["AWS_CONFIG_FILE"]
    login = subprocess.Popen(
        [str(BIN / "broker"), "login", "--start-url",
         f"{site(broker)}/start/{tenant.identity_store_id}", "--profile", "portal",
         "--no-browser"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert login.stderr is not None
    url = None
    for line in login.stderr:
        if line.startswith("Open "):
            url = line.split(" ", 1)[1].strip()
            break
    assert url is not None and url.startswith(f"{site(broker)}/start/device?user_code=")
    page = context.new_page()
    page.goto(url)
    assert heading(page).startswith("Allow broker-login-portal")
    page.click("button[value='allow']")
    assert heading(page) == "Request approved"
    _, err = login.communicate(timeout=60)
    assert login.returncode == 0, err
    cli = subprocess.run([str(BIN / "aws"), "--profile", "portal", "sts", "get-caller-identity"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert re.fullmatch(rf"arn:aws:sts::{tenant.account_id}:assumed-role/"
                        rf"AWSReservedSSO_ReadOnly_[0-9a-f]{{16}}/{tenant.user_name}",
                        json.loads(cli.stdout)["Arn"])
