"""The broker's own sign-in (/signin): IAM users and root users with a password and, when they
have a device, an MFA code; throttling, enumeration, CSRF and the half-signed-in state. httpx
against the real server; every attack beside an honest control built by the same fixture."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import lxml.html
import pyotp
import pytest

from broker.clock import FixedClock
from tests.console_world import SESSION, browser, console, set_cookies, signed_in
from tests.helpers import Broker, start_broker

PASSWORD = "Correct-Horse-9-Battery"
REFUSED = "Your authentication information is incorrect. Please try again."
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
STEP = 30


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    now = int(datetime.now(UTC).timestamp())
    return FixedClock(datetime.fromtimestamp(now - now % STEP + 1, UTC))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("signin"), clock=clock,
                     env={"BROKER_SIGNIN_ROOT_MFA_REQUIRED": "false"})
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def near_real_time(clock: FixedClock) -> None:
    now = int(datetime.now(UTC).timestamp())
    target = datetime.fromtimestamp(now - now % STEP + 1, UTC)
    clock.advance((target - clock.now()).total_seconds())


def new_user(broker: Broker, *, password: str | None = PASSWORD) -> str:
    iam = broker.client("iam")
    name = f"person-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    if password is not None:
        iam.create_login_profile(UserName=name, Password=password)
    return name


def with_device(broker: Broker, clock: FixedClock, name: str) -> pyotp.TOTP:
    iam = broker.client("iam")
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"]
    totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
    iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"],
                          AuthenticationCode1=totp.at(clock.now()),
                          AuthenticationCode2=totp.at(clock.now(), counter_offset=1))
    clock.advance(2 * STEP)
    return totp


def open_page(client: httpx.Client) -> str:
    """GET /signin; the form's CSRF token (the browser keeps the sign-in cookie)."""
    r = client.get("/signin")
    assert r.status_code == 200, r.text
    doc = lxml.html.fromstring(r.text)
    fields = {e.get("name"): e.get("autocomplete") for e in doc.iter("input") if e.get("name")}
    assert fields["username"] == "username" and fields["password"] == "current-password"
    assert "account" in fields and "email" in fields
    return str(doc.xpath("//form[@action='/signin']//input[@name='csrf']/@value")[0])


def sign_in(client: httpx.Client, account: str, user: str, password: str = PASSWORD,
            csrf: str | None = None) -> httpx.Response:
    token = csrf if csrf is not None else open_page(client)
    return client.post("/signin", data={"csrf": token, "kind": "iam", "account": account,
                                        "username": user, "password": password})


def refused(response: httpx.Response, text: str = REFUSED) -> str:
    """The refusal page's text without its error id (to compare two refusals)."""
    assert response.status_code == 403, response.text
    assert SESSION not in set_cookies(response)
    assert text in response.text
    return re.sub(r"[0-9a-f-]{36}", "ID", response.text)


def test_an_iam_user_signs_in_with_a_password(broker: Broker) -> None:
    name = new_user(broker)
    with browser(broker) as client:
        cookie = signed_in(sign_in(client, broker.account_id, name))
    page = console(broker, cookie)
    assert page.status_code == 200 and f"user/{name}" in page.text


def test_with_a_device_the_password_alone_is_not_a_session(broker: Broker,
                                                           clock: FixedClock) -> None:
    name = new_user(broker)
    totp = with_device(broker, clock, name)
    with browser(broker) as client:
        r = sign_in(client, broker.account_id, name)
        assert r.status_code == 200 and SESSION not in set_cookies(r)
        doc = lxml.html.fromstring(r.text)
        assert doc.xpath("//input[@name='code']/@autocomplete") == ["one-time-code"]
        csrf = str(doc.xpath("//input[@name='csrf']/@value")[0])
        pending = set_cookies(r)["broker-signin-mfa"].value
        # The half-signed-in state opens nothing: not the console, not as a session cookie.
        assert client.get("/console").status_code in (303, 401)
        assert console(broker, pending).status_code == 401
        wrong = client.post("/signin/mfa", data={"csrf": csrf, "code": "000000"
                                                 if totp.now() != "000000" else "111111"})
        refused(wrong, "The MFA code is not valid")
        cookie = signed_in(client.post("/signin/mfa", data={"csrf": csrf,
                                                            "code": totp.at(clock.now())}))
        # Taken once: the same pending sign-in (its cookie sent again) completes no more.
        again = client.post("/signin/mfa", data={"csrf": csrf,
                                                 "code": totp.at(clock.now(), counter_offset=1)},
                            headers={"Cookie": f"broker-signin-mfa={pending}; broker-signin="
                                               f"{client.cookies['broker-signin']}"})
        assert again.status_code == 403 and "expired" in again.text
    assert f"user/{name}" in console(broker, cookie).text


def test_the_mfa_step_belongs_to_the_browser_that_gave_the_password(
        broker: Broker, clock: FixedClock) -> None:
    """Fixation at the MFA step: an attacker's pending sign-in (their handle and token)
    planted in a victim's browser does not complete there; the control completes in the
    browser that gave the password."""
    name = new_user(broker)
    totp = with_device(broker, clock, name)
    with browser(broker) as attacker, browser(broker) as victim:
        r = sign_in(attacker, broker.account_id, name)
        csrf = str(lxml.html.fromstring(r.text).xpath("//input[@name='csrf']/@value")[0])
        handle = set_cookies(r)["broker-signin-mfa"].value
        open_page(victim)  # the victim's own sign-in cookie
        planted = victim.post("/signin/mfa", data={"csrf": csrf, "code": totp.now()},
                              headers={"Cookie": f"broker-signin-mfa={handle}; broker-signin="
                                                 f"{victim.cookies['broker-signin']}"})
        assert planted.status_code == 403 and "expired" in planted.text
        signed_in(attacker.post("/signin/mfa", data={"csrf": csrf,
                                                     "code": totp.at(clock.now())}))


def test_every_failure_says_the_same_thing(broker: Broker) -> None:
    """User enumeration by message: an unknown account, an unknown user, a user without a
    password and a wrong password get the same page."""
    name, without = new_user(broker), new_user(broker, password=None)
    with browser(broker) as client:
        pages = {refused(sign_in(client, broker.account_id, name, "Wrong-Passw0rd-1")),
                 refused(sign_in(client, broker.account_id, f"nobody-{uuid.uuid4().hex[:6]}")),
                 refused(sign_in(client, broker.account_id, without)),
                 refused(sign_in(client, "999999999999", name))}
        assert len(pages) == 1
        signed_in(sign_in(client, broker.account_id, name))  # the control


def test_guessing_locks_the_user_and_an_administrator_unlocks(broker: Broker) -> None:
    name, other = new_user(broker), new_user(broker)
    with browser(broker) as client:
        for _ in range(5):
            refused(sign_in(client, broker.account_id, name, "Wrong-Passw0rd-1"))
        refused(sign_in(client, broker.account_id, name))  # locked: even the right password
        signed_in(sign_in(client, broker.account_id, other))  # another user is not locked
    throttle = broker.runtime.password_signin.throttle
    count, locked = broker.server.call(throttle.failures(broker.account_id, name))
    assert count == 6 and locked  # the five wrong passwords, and the attempt refused as locked
    broker.server.call(throttle.unlock(broker.account_id, name))
    with browser(broker) as client:
        signed_in(sign_in(client, broker.account_id, name))


def test_a_form_from_elsewhere_is_refused(broker: Broker) -> None:
    """Login CSRF: a page of another site posts credentials to /signin; without the sign-in
    cookie's token it signs nobody in. The control: the same post with the page's token."""
    name = new_user(broker)
    with browser(broker) as client:
        for token in ("", "x" * 64):
            r = sign_in(client, broker.account_id, name, csrf=token)
            assert r.status_code == 403 and "CSRF" in r.text
        with browser(broker) as bare:
            r = bare.post("/signin", data={"csrf": open_page(client), "kind": "iam",
                                           "account": broker.account_id, "username": name,
                                           "password": PASSWORD})
            assert r.status_code == 403 and "CSRF" in r.text
        signed_in(sign_in(client, broker.account_id, name))


def test_the_account_may_be_named_by_its_alias(broker: Broker) -> None:
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    alias = f"team-{uuid.uuid4().hex[:8]}"
    iam.create_account_alias(AccountAlias=alias)
    iam.create_user(UserName="aliased")
    iam.create_login_profile(UserName="aliased", Password=PASSWORD)
    with browser(broker) as client:
        signed_in(sign_in(client, alias, "aliased"))
        signed_in(sign_in(client, account, "aliased"))


def test_the_root_user_signs_in_with_email_and_password(tmp_path: Path) -> None:
    """Root sign-in, with signin.root_mfa_required off and on (the default: refused without a
    device)."""
    for required in ("false", "true"):
        b = start_broker(tmp_path / required, env={"BROKER_SIGNIN_ROOT_MFA_REQUIRED": required})
        try:
            email = f"root-{uuid.uuid4().hex[:6]}@example.com"
            b.server.call(b.runtime.iam.create_account(root_email=email,
                                                       root_password=PASSWORD))
            with browser(b) as client:
                data = {"csrf": open_page(client), "kind": "root", "email": email,
                        "password": PASSWORD}
                r = client.post("/signin", data=data)
                if required == "false":
                    cookie = signed_in(r)
                    assert ":root" in console(b, cookie).text
                    wrong = client.post("/signin", data={**data, "password": "Wrong-Passw0rd-1"})
                    refused(wrong)
                else:
                    assert r.status_code == 200 and "Register an MFA device" in r.text
        finally:
            b.stop()


def test_every_attempt_is_audited_without_the_password(broker: Broker,
                                                       clock: FixedClock) -> None:
    name = new_user(broker)
    totp = with_device(broker, clock, name)
    with browser(broker) as client:
        refused(sign_in(client, broker.account_id, name, "Wrong-Passw0rd-1"))
        r = sign_in(client, broker.account_id, name)
        csrf = str(lxml.html.fromstring(r.text).xpath("//input[@name='csrf']/@value")[0])
        signed_in(client.post("/signin/mfa", data={"csrf": csrf, "code": totp.at(clock.now())}))
    text = (Path(broker.settings.audit.path)).read_text()
    assert PASSWORD not in text and "Wrong-Passw0rd-1" not in text
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()
                                   if '"ConsoleLogin"' in line]
    mine = [d for d in lines if d["userIdentity"].get("arn", "").endswith(f"user/{name}")]
    assert mine and "errorCode" not in mine[-1]
    assert any("errorCode" in d for d in lines)
    # Shaped as CloudTrail's ConsoleLogin: the outcome and MFAUsed where CloudTrail has them,
    # and the console session's access key id (never its secret) beside MFAUsed.
    assert mine[-1]["responseElements"] == {"ConsoleLogin": "Success"}
    extra = mine[-1]["additionalEventData"]
    assert extra.pop("IssuedAccessKeyId").startswith("ASIA")
    assert extra == {"MFAUsed": "Yes"}
    assert mine[-1]["eventSource"] == "signin.amazonaws.com"
    failed = [d for d in lines if "errorCode" in d]
    assert failed[-1]["responseElements"] == {"ConsoleLogin": "Failure"}
    assert failed[-1]["additionalEventData"] == {"MFAUsed": "No"}
    others = [json.loads(line) for line in text.splitlines() if '"ConsoleLogin"' not in line]
    assert others and not any("responseElements" in d for d in others)


def test_password_last_used_and_reuse_prevention(broker: Broker) -> None:
    """A sign-in is PasswordLastUsed in GetUser and the credential report; with
    PasswordReusePrevention a user's earlier passwords are refused, a new one is not."""
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    iam.create_user(UserName="reuser")
    iam.create_login_profile(UserName="reuser", Password=PASSWORD)
    assert "PasswordLastUsed" not in iam.get_user(UserName="reuser")["User"]
    with browser(broker) as client:
        signed_in(sign_in(client, account, "reuser"))
    assert iam.get_user(UserName="reuser")["User"]["PasswordLastUsed"]
    iam.generate_credential_report()
    report = iam.get_credential_report()["Content"].decode()
    row = next(line for line in report.splitlines() if line.startswith("reuser,"))
    assert row.split(",")[4] not in ("no_information", "N/A")
    iam.update_account_password_policy(MinimumPasswordLength=8, PasswordReusePrevention=2)
    iam.update_login_profile(UserName="reuser", Password="Second-Passw0rd-22")
    for earlier in (PASSWORD, "Second-Passw0rd-22"):
        with pytest.raises(botocore.exceptions.ClientError, match="PasswordPolicyViolation"):
            iam.update_login_profile(UserName="reuser", Password=earlier)
    iam.update_login_profile(UserName="reuser", Password="Third-Passw0rd-333")  # the control


def change_page(response: httpx.Response) -> str:
    """The forced change's page: its CSRF token, after checking its fields."""
    assert response.status_code == 200, response.text
    assert SESSION not in set_cookies(response)
    doc = lxml.html.fromstring(response.text)
    fields = {e.get("name"): e.get("autocomplete") for e in doc.iter("input") if e.get("name")}
    assert fields == {"csrf": None, "password": "current-password",
                      "new_password": "new-password", "confirm_password": "new-password"}
    return str(doc.xpath("//form[@action='/signin/change']//input[@name='csrf']/@value")[0])


def test_a_required_reset_leads_to_a_password_change(broker: Broker) -> None:
    """PasswordResetRequired: the password opens the change page, not a session; the new
    password must meet the policy and be typed twice; then the user is signed in, and the
    next sign-in needs the new password alone."""
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    iam.update_account_password_policy(MinimumPasswordLength=12, AllowUsersToChangePassword=True)
    iam.create_user(UserName="resetter")
    iam.create_login_profile(UserName="resetter", Password=PASSWORD, PasswordResetRequired=True)
    with browser(broker) as client:
        csrf = change_page(sign_in(client, account, "resetter"))
        for new, confirm, text in (("Short-1a", "Short-1a", "PasswordPolicyViolation"),
                                   ("A-new-Passw0rd-1", "A-new-Passw0rd-2", "differ")):
            r = client.post("/signin/change", data={"csrf": csrf, "password": PASSWORD,
                                                    "new_password": new,
                                                    "confirm_password": confirm})
            assert r.status_code == 400 and text in r.text, r.text
        wrong_current = client.post("/signin/change", data={
            "csrf": csrf, "password": "Wrong-Passw0rd-1", "new_password": "A-new-Passw0rd-1",
            "confirm_password": "A-new-Passw0rd-1"})
        assert wrong_current.status_code == 400 and "old password was incorrect" in \
            wrong_current.text
    with browser(broker) as client:
        csrf = change_page(sign_in(client, account, "resetter"))
        signed_in(client.post("/signin/change", data={
            "csrf": csrf, "password": PASSWORD, "new_password": "A-new-Passw0rd-1",
            "confirm_password": "A-new-Passw0rd-1"}))
        signed_in(sign_in(client, account, "resetter", "A-new-Passw0rd-1"))


def test_an_expired_password_is_changed_or_with_hard_expiry_refused(broker: Broker,
                                                                   clock: FixedClock) -> None:
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    iam.update_account_password_policy(MinimumPasswordLength=8, MaxPasswordAge=30,
                                       AllowUsersToChangePassword=True)
    iam.create_user(UserName="ager")
    iam.create_login_profile(UserName="ager", Password=PASSWORD)
    other, other_root = broker.new_account()
    hard = broker.client("iam", other_root)
    hard.update_account_password_policy(MinimumPasswordLength=8, MaxPasswordAge=30,
                                        HardExpiry=True)
    hard.create_user(UserName="ager")
    hard.create_login_profile(UserName="ager", Password=PASSWORD)
    with browser(broker) as client:
        signed_in(sign_in(client, account, "ager"))  # the control: not yet expired
    clock.advance(31 * 86400)  # the web sign-in needs no signature, so the clock may run ahead
    try:
        with browser(broker) as client:
            change_page(sign_in(client, account, "ager"))
            r = sign_in(client, other, "ager")
            assert r.status_code == 403 and "only an administrator can reset it" in r.text
    finally:
        clock.advance(-31 * 86400)


def test_without_permission_to_change_the_forced_change_is_refused(broker: Broker) -> None:
    """No AllowUsersToChangePassword and no iam:ChangePassword of their own: the user cannot
    complete a required reset (AWS's rule); the control: with IAMUserChangePassword's
    permission, the same user can."""
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    iam.create_user(UserName="stuck")
    iam.create_login_profile(UserName="stuck", Password=PASSWORD, PasswordResetRequired=True)
    form = {"password": PASSWORD, "new_password": "A-new-Passw0rd-1",
            "confirm_password": "A-new-Passw0rd-1"}
    with browser(broker) as client:
        csrf = change_page(sign_in(client, account, "stuck"))
        r = client.post("/signin/change", data={"csrf": csrf, **form})
        assert r.status_code == 403 and "you may not change it" in r.text
    iam.put_user_policy(UserName="stuck", PolicyName="change-own", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "iam:ChangePassword",
            "Resource": "arn:aws:iam::*:user/${aws:username}"}]}))
    with browser(broker) as client:
        csrf = change_page(sign_in(client, account, "stuck"))
        signed_in(client.post("/signin/change", data={"csrf": csrf, **form}))


def test_a_root_user_without_a_device_registers_one_at_sign_in(tmp_path: Path) -> None:
    """signin.root_mfa_required (the default): the root user's right password leads to a new
    device's page — its seed, its QR code — not to a session; two consecutive codes computed
    from the seed the page shows enable it and sign in with MFA; the next sign-in asks for a
    code. Codes that are not consecutive are refused, and the same page takes the right ones."""
    b = start_broker(tmp_path / "root", env={"BROKER_SIGNIN_ROOT_MFA_REQUIRED": "true"})
    try:
        email = f"root-{uuid.uuid4().hex[:6]}@example.com"
        account, _ = b.server.call(b.runtime.iam.create_account(root_email=email,
                                                                root_password=PASSWORD))
        with browser(b) as client:
            r = client.post("/signin", data={"csrf": open_page(client), "kind": "root",
                                             "email": email, "password": PASSWORD})
            assert r.status_code == 200 and SESSION not in set_cookies(r), r.text
            doc = lxml.html.fromstring(r.text)
            seed = doc.xpath("//dt[text()='Key']/following-sibling::dd[1]/code/text()")[0]
            assert doc.xpath("//figure/svg") and len(seed) == 64
            csrf = str(doc.xpath("//form[@action='/signin/enrol']//input[@name='csrf']"
                                 "/@value")[0])
            totp, now = pyotp.TOTP(seed), datetime.now(UTC)
            wrong = client.post("/signin/enrol", data={
                "csrf": csrf, "code1": totp.at(now, counter_offset=1), "code2": totp.at(now)})
            assert wrong.status_code == 403 and "two consecutive codes" in wrong.text
            cookie = signed_in(client.post("/signin/enrol", data={
                "csrf": csrf, "code1": totp.at(now, counter_offset=-1),
                "code2": totp.at(now)}))
        assert f"arn:aws:iam::{account.id}:root" in console(b, cookie).text
        devices = b.server.call(b.runtime.iam.mfa.of_owner(account.id, None))
        assert len(devices) == 1 and devices[0].root
        with browser(b) as client:  # the next sign-in asks for a code of it
            r = client.post("/signin", data={"csrf": open_page(client), "kind": "root",
                                             "email": email, "password": PASSWORD})
            assert r.status_code == 200 and "Multi-factor authentication" in r.text
    finally:
        b.stop()
