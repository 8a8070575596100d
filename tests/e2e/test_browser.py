"""The browser endpoints in a real browser: headless Chromium (the system's) driven by
Playwright, against a broker in development mode served by uvicorn.

A person signs in on the demo sign-in page, chooses a role, lands in the console (its script
runs under the broker's Content-Security-Policy), copies the credentials to the clipboard and
signs out; a federated user from GetFederationToken opens the console through a sign-in URL.
Screenshots of the consoles are kept as artifacts (tests/browser.py says where).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.browser import chromium, launch, screenshot
from tests.helpers import Broker, Creds, creds_of, start_broker

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

DEMO_ACCOUNT = "111122223333"
DEMO_ROLES = [f"arn:aws:iam::{DEMO_ACCOUNT}:role/{name}"
              for name in ("Admin", "Developer", "ReadOnly")]
SESSION_COOKIE = "broker-session"  # signin.session_cookie's default, on an http public URL
ERROR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
COUNTDOWN = re.compile(r"^\((\d+ h )?\d+ min \d+ s left\)$")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("broker"), env={"BROKER_SERVER_DEV": "true"})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    executable = chromium()
    # Playwright's sync API keeps an event loop running on this thread while it is open, and
    # start_broker runs one of its own (asyncio.run): the broker starts first.
    request.getfixturevalue("broker")
    yield from launch(executable)


@pytest.fixture
def context(browser: Browser, broker: Broker) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) that may use the clipboard on the broker's pages."""
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=broker.url)
    yield ctx
    ctx.close()


def heading(page: Page) -> str:
    return page.locator("h1").inner_text()


def fact(page: Page, name: str) -> str:
    """The value of one line of a page's facts list ("Signed in as", "Error id", ...)."""
    term = page.locator("dl.facts dt", has_text=re.compile(f"^{re.escape(name)}$"))
    return term.locator("xpath=following-sibling::dd[1]").inner_text()


def session_cookies(context: BrowserContext) -> list[str]:
    return [c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE]


def dev_sign_in(page: Page, broker: Broker, person: str, password: str) -> int:
    """Fill in and send the demo sign-in form: the HTTP status of the page it leads to."""
    page.goto(f"{broker.url}/dev/signin")
    page.fill("#person", person)
    page.fill("#password", password)
    with page.expect_navigation() as navigation:
        page.click("form[action='/dev/signin'] button[type=submit]")
    response = navigation.value
    assert response is not None
    return response.status


def error_id(page: Page) -> str:
    return fact(page, "Error id").split()[0]  # "ID (quote it to your administrator)"


def choose(page: Page, role_arn: str) -> None:
    page.check(f"input[name=role][value='{role_arn}']")
    with page.expect_navigation(url="**/console"):
        page.click("form[action='/dev/choose'] button[type=submit]")


def exports_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (AWS_\w+)=(\S+)$", text, re.MULTILINE))


def caller_arn(broker: Broker, exports: dict[str, str]) -> str:
    sts = broker.client("sts", Creds(exports["AWS_ACCESS_KEY_ID"],
                                     exports["AWS_SECRET_ACCESS_KEY"],
                                     exports["AWS_SESSION_TOKEN"]))
    arn: str = sts.get_caller_identity()["Arn"]
    return arn


def test_a_demo_person_signs_in_copies_credentials_and_signs_out(
        context: BrowserContext, broker: Broker) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{broker.url}/dev/signin")
    expect(page.locator(".dev-banner")).to_contain_text("Development mode")
    assert dev_sign_in(page, broker, "alice", "Demo-alice-1") == 200
    assert heading(page) == "Select a role"
    expect(page.locator(".dev-banner")).to_contain_text("Development mode")
    radios = page.locator("input[name=role]")
    assert [radios.nth(i).get_attribute("value") for i in range(radios.count())] == DEMO_ROLES

    choose(page, DEMO_ROLES[1])
    arn = f"arn:aws:sts::{DEMO_ACCOUNT}:assumed-role/Developer/alice"
    assert urlsplit(page.url).path == "/console"
    assert fact(page, "Signed in as") == arn
    assert fact(page, "Account") == f"demo ({DEMO_ACCOUNT})"
    assert fact(page, "Role").startswith("Developer")
    # The countdown is written by console.js: its text is there only if the script ran.
    expect(page.locator("#countdown")).to_have_text(COUNTDOWN)

    page.get_by_role("button", name="Copy shell exports").click()
    expect(page.locator("#copied")).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    on_page = exports_of(page.locator("#exports").inner_text())
    assert exports_of(copied) == on_page
    assert set(on_page) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert caller_arn(broker, exports_of(copied)) == arn
    screenshot(page, "console-demo-developer")

    [old_cookie] = session_cookies(context)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert heading(page) == "Signed out"
    assert session_cookies(context) == []
    # Without a session the console sends the browser to sign in (development mode's demo
    # sign-in here).
    again = page.goto(f"{broker.url}/console")
    assert again is not None and again.status == 200
    assert page.url == f"{broker.url}/dev/signin" and heading(page) == "Demo sign-in"
    # The old cookie, replayed by another client, opens nothing: the session itself has ended.
    replayed = httpx.get(f"{broker.url}/console", cookies={SESSION_COOKIE: old_cookie})
    assert replayed.status_code == 303 and replayed.headers["location"] == "/dev/signin"


def test_a_sign_in_url_from_get_federation_token_opens_the_console(
        browser: Browser, context: BrowserContext, broker: Broker) -> None:
    name, user = broker.new_user()
    broker.client("iam").put_user_policy(UserName=name, PolicyName="federate", PolicyDocument=(
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:GetFederationToken",
            "Resource": f"arn:aws:sts::{broker.account_id}:federated-user/*"}]})))
    federated = creds_of(broker.client("sts", user).get_federation_token(Name="browser-fed"))
    session = json.dumps({"sessionId": federated.access_key_id,
                          "sessionKey": federated.secret_access_key,
                          "sessionToken": federated.session_token})
    answer = httpx.get(f"{broker.url}/federation",
                       params={"Action": "getSigninToken", "Session": session})
    assert answer.status_code == 200, answer.text
    signin_url = f"{broker.url}/federation?" + urlencode({
        "Action": "login", "Destination": f"{broker.url}/console",
        "SigninToken": answer.json()["SigninToken"]})

    page = context.new_page()
    opened = page.goto(signin_url)
    assert opened is not None and opened.status == 200
    assert urlsplit(page.url).path == "/console"
    arn = f"arn:aws:sts::{broker.account_id}:federated-user/browser-fed"
    assert fact(page, "Signed in as") == arn
    assert exports_of(page.locator("#exports").inner_text())["AWS_ACCESS_KEY_ID"] \
        == federated.access_key_id
    assert len(session_cookies(context)) == 1
    screenshot(page, "console-federated-user")

    # The sign-in token is spent: the same URL in another browser profile is refused.
    other = browser.new_context()
    try:
        refused_page = other.new_page()
        refused = refused_page.goto(signin_url)
        assert refused is not None and refused.status == 400
        assert heading(refused_page) == "Sign-in refused"
        assert fact(refused_page, "Error") == "InvalidSigninToken"
        assert ERROR_ID.fullmatch(error_id(refused_page))
        assert session_cookies(other) == []
    finally:
        other.close()


def test_a_wrong_password_shows_an_error_page_and_sets_no_session(
        context: BrowserContext, broker: Broker) -> None:
    page = context.new_page()
    assert dev_sign_in(page, broker, "alice", "Demo-bob-1") == 403
    assert heading(page) == "Sign-in refused"
    assert page.get_by_role("alert").inner_text() == "Unknown person or wrong password."
    assert fact(page, "Error") == "AccessDenied"
    assert ERROR_ID.fullmatch(error_id(page))
    assert session_cookies(context) == []
    assert "broker-demo-choice" not in {c["name"] for c in context.cookies()}
    shown = page.goto(f"{broker.url}/console")  # no session: sent to sign in
    assert shown is not None and page.url == f"{broker.url}/dev/signin"


def test_the_console_runs_under_the_content_security_policy(
        context: BrowserContext, broker: Broker) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # Chromium asks for /favicon.ico on its own, and the broker has none: that 404 is the
        # browser's, not the page's.
        if message.type == "error" and \
                urlsplit(message.location.get("url", "")).path != "/favicon.ico":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    dev_sign_in(page, broker, "carol", "Demo-carol-1")
    choose(page, DEMO_ROLES[2])
    response = page.goto(f"{broker.url}/console")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in (response.header_value("content-security-policy") or "")
    scripts = page.locator("script")
    sources = [scripts.nth(i).get_attribute("src") for i in range(scripts.count())]
    assert sources == ["/static/console.js"]  # no inline script
    expect(page.locator("#countdown")).not_to_be_empty()
    page.get_by_role("button", name="Copy profile").click()
    expect(page.locator("#copied")).to_have_text("Copied.")
    assert errors == []

    # The control: an inline script put on the page is refused by the browser, and the
    # refusal is seen where the test above looks for it.
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("""() => {
            const s = document.createElement("script");
            s.textContent = "window.inlineRan = true";
            document.body.appendChild(s);
        }""")
    assert page.evaluate("window.inlineRan === undefined")
    assert [e for e in errors if "Content Security Policy" in e] != []


def test_screenshots_are_kept_where_the_artifacts_go(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     context: BrowserContext) -> None:
    monkeypatch.setenv("BROKER_TEST_ARTIFACTS", str(tmp_path))
    page = context.new_page()
    page.set_content("<p>artifact</p>")
    path = screenshot(page, "artifact")
    assert path == tmp_path / "browser" / "artifact.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_iam_user_and_a_root_user_sign_in_with_password_and_totp(
        context: BrowserContext, broker: Broker) -> None:
    """The broker's own sign-in in Chromium, without JavaScript of its own: an IAM user (by
    account alias) and a root user (by email) give their password, then a code their
    authenticator computes from the seed the IAM API handed out, and land in the console as
    themselves. A wrong code first: refused, and no session."""
    import time
    import uuid

    import pyotp

    password = "Correct-Horse-9-Battery"
    email = f"root-{uuid.uuid4().hex[:6]}@example.com"
    made_account, _ = broker.server.call(broker.runtime.iam.create_account(
        root_email=email, root_password=password))
    account = made_account.id
    iam = broker.client("iam")  # the first account's root: makes the IAM user there
    alias = f"browser-{uuid.uuid4().hex[:6]}"
    iam.create_account_alias(AccountAlias=alias)
    iam.create_user(UserName="erin")
    iam.create_login_profile(UserName="erin", Password=password)

    def device(user: str | None, owner_account: str) -> pyotp.TOTP:
        made, seed, _ = broker.server.call(broker.runtime.iam.mfa.create_virtual(
            owner_account, user or "root-device", "/"))
        totp, now = pyotp.TOTP(seed), time.time()
        broker.server.call(broker.runtime.iam.mfa.enable(
            owner_account, user, made.serial, totp.at(now, counter_offset=-1), totp.at(now)))
        return totp

    erin, root = device("erin", broker.account_id), device(None, account)
    page = context.new_page()

    def as_erin() -> None:
        page.goto(f"{broker.url}/signin")
        page.fill("#account", alias)
        page.fill("#username", "erin")
        page.fill("#password", password)
        page.click("form:has(input[value='iam']) button")
        assert heading(page) == "Multi-factor authentication"

    as_erin()
    assert page.get_attribute("#code", "autocomplete") == "one-time-code"
    assert session_cookies(context) == []
    page.fill("#code", "000000" if erin.now() != "000000" else "111111")
    page.click("form[action='/signin/mfa'] button")
    assert "MFA code is not valid" in page.content() and session_cookies(context) == []
    as_erin()
    page.fill("#code", erin.at(time.time(), counter_offset=1))
    page.click("form[action='/signin/mfa'] button")
    page.wait_for_url(f"{broker.url}/console")
    assert "user/erin" in page.content() and len(session_cookies(context)) == 1
    screenshot(page, "console-iam-user")

    context.clear_cookies()
    page.goto(f"{broker.url}/signin")
    page.fill("#email", email)
    page.fill("#root-password", password)
    page.click("form:has(input[value='root']) button")
    assert heading(page) == "Multi-factor authentication"
    page.fill("#code", root.at(time.time(), counter_offset=1))
    page.click("form[action='/signin/mfa'] button")
    page.wait_for_url(f"{broker.url}/console")
    assert f"arn:aws:iam::{account}:root" in page.content()
