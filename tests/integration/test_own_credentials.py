"""The security credentials page of a user signed in with the broker's own sign-in: password,
MFA devices, access keys and command-line credentials, each authorized exactly as the IAM
action it performs (AWS's own policies, verbatim, decide); switching role from a user's
session. httpx against the real server, boto3 for what the page hands out; every attack beside
an honest control built by the same fixture."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import botocore.exceptions
import httpx
import lxml.html
import pyotp
import pytest

from broker.clock import FixedClock
from tests.console_world import SESSION, browser, error_page, signed_in
from tests.helpers import Broker, Creds, start_broker

PASSWORD = "Correct-Horse-9-Battery"
PAGE = "/console/security-credentials"
STEP = 30

# AWS's documented policy "IAM: Allows MFA-authenticated IAM users to manage their own
# credentials on the Security credentials page", verbatim.
SELF_MANAGE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "AllowViewAccountInfo", "Effect": "Allow",
         "Action": ["iam:GetAccountPasswordPolicy", "iam:ListVirtualMFADevices"],
         "Resource": "*"},
        {"Sid": "AllowManageOwnPasswords", "Effect": "Allow",
         "Action": ["iam:ChangePassword", "iam:GetUser"],
         "Resource": "arn:aws:iam::*:user/${aws:username}"},
        {"Sid": "AllowManageOwnAccessKeys", "Effect": "Allow",
         "Action": ["iam:CreateAccessKey", "iam:DeleteAccessKey", "iam:ListAccessKeys",
                    "iam:UpdateAccessKey", "iam:GetAccessKeyLastUsed"],
         "Resource": "arn:aws:iam::*:user/${aws:username}"},
        {"Sid": "AllowManageOwnVirtualMFADevice", "Effect": "Allow",
         "Action": ["iam:CreateVirtualMFADevice", "iam:DeleteVirtualMFADevice"],
         "Resource": "arn:aws:iam::*:mfa/*"},
        {"Sid": "AllowManageOwnUserMFA", "Effect": "Allow",
         "Action": ["iam:DeactivateMFADevice", "iam:EnableMFADevice", "iam:ListMFADevices",
                    "iam:ResyncMFADevice"],
         "Resource": "arn:aws:iam::*:user/${aws:username}"},
        {"Sid": "DenyAllExceptListedIfNoMFA", "Effect": "Deny",
         "NotAction": ["iam:CreateVirtualMFADevice", "iam:EnableMFADevice", "iam:GetUser",
                       "iam:ChangePassword", "iam:ListMFADevices", "iam:ListVirtualMFADevices",
                       "iam:ResyncMFADevice", "sts:GetSessionToken"],
         "Resource": "*",
         "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}},
    ],
}
# AWS's IAMUserChangePassword managed policy's document.
CHANGE_PASSWORD = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["iam:ChangePassword"],
         "Resource": ["arn:aws:iam::*:user/${aws:username}"]},
        {"Effect": "Allow", "Action": ["iam:GetAccountPasswordPolicy"], "Resource": "*"},
    ],
}


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    now = int(datetime.now(UTC).timestamp())
    return FixedClock(datetime.fromtimestamp(now - now % STEP + 1, UTC))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("own"), clock=clock)
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def near_real_time(clock: FixedClock) -> Iterator[None]:
    now = int(datetime.now(UTC).timestamp())
    target = datetime.fromtimestamp(now - now % STEP + 1, UTC)
    clock.advance((target - clock.now()).total_seconds())
    yield
    while BROWSERS:
        BROWSERS.pop().close()


BROWSERS: list[httpx.Client] = []  # each Person's, closed after each test


class Person:
    """An IAM user with a password and the given policy, and a browser of their own."""

    def __init__(self, broker: Broker, clock: FixedClock, policy: dict | None = SELF_MANAGE):
        self.broker, self.clock = broker, clock
        self.name = f"own-{uuid.uuid4().hex[:8]}"
        iam = broker.client("iam")
        iam.create_user(UserName=self.name)
        iam.create_login_profile(UserName=self.name, Password=PASSWORD)
        if policy is not None:
            iam.put_user_policy(UserName=self.name, PolicyName="own",
                                PolicyDocument=json.dumps(policy))
        self.client = browser(broker)
        BROWSERS.append(self.client)
        self.totp: pyotp.TOTP | None = None
        self.password = PASSWORD

    def password_step(self) -> httpx.Response:
        """A fresh browser's sign-in page and password: the answer (console or MFA step)."""
        self.client.cookies.clear()
        page = self.client.get("/signin")
        csrf = lxml.html.fromstring(page.text).xpath(
            "//form[@action='/signin']//input[@name='csrf']/@value")[0]
        return self.client.post("/signin", data={
            "csrf": csrf, "kind": "iam", "account": self.broker.account_id,
            "username": self.name, "password": self.password})

    def sign_in(self) -> str:
        """Sign in (with the device's code, once there is one); the session cookie."""
        r = self.password_step()
        if self.totp is not None:
            assert r.status_code == 200, r.text
            csrf = lxml.html.fromstring(r.text).xpath(
                "//form[@action='/signin/mfa']//input[@name='csrf']/@value")[0]
            self.clock.advance(STEP)
            r = self.client.post("/signin/mfa", data={"csrf": csrf,
                                                      "code": self.totp.at(self.clock.now())})
        cookie = signed_in(r)
        self.client.cookies.set(SESSION, cookie)
        return cookie

    def page(self) -> lxml.html.HtmlElement:
        r = self.client.get(PAGE)
        assert r.status_code == 200, r.text
        assert "no-store" in r.headers["cache-control"]
        return lxml.html.fromstring(r.text)

    def csrf(self) -> str:
        return str(self.page().xpath(f"//form[@action='{PAGE}/cli']//input[@name='csrf']"
                                     "/@value")[0])

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.client.post(f"{PAGE}{path}", data={"csrf": self.csrf(), **fields})

    def register_device(self, name: str = "phone") -> str:
        """Assign a virtual device from the page, reading the seed the page shows."""
        r = self.post("/mfa", name=f"{self.name}-{name}")
        assert r.status_code == 200, r.text
        doc = lxml.html.fromstring(r.text)
        seed = doc.xpath("//code[@id='seed']/text()")[0]
        serial = doc.xpath("//code[@id='serial']/text()")[0]
        assert doc.xpath("//figure/svg") or doc.xpath("//figure/*")  # the QR code, inline
        totp = pyotp.TOTP(seed)
        csrf = doc.xpath(f"//form[@action='{PAGE}/mfa/enable']//input[@name='csrf']/@value")[0]
        now = self.clock.now()
        r = self.client.post(f"{PAGE}/mfa/enable", data={
            "csrf": csrf, "serial": serial, "code1": totp.at(now),
            "code2": totp.at(now, counter_offset=1)})
        assert r.status_code == 303 and r.headers["location"] == f"{PAGE}?done=mfa", r.text
        self.clock.advance(2 * STEP)
        self.totp = totp
        return str(serial)

    def command_line(self) -> Creds:
        r = self.post("/cli")
        assert r.status_code == 200, r.text
        text = lxml.html.fromstring(r.text).xpath("//pre[@id='exports']/text()")[0]
        values = dict(line.removeprefix("export ").split("=", 1)
                      for line in text.strip().splitlines())
        return Creds(values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"],
                     values["AWS_SESSION_TOKEN"])


def keys_on(doc: lxml.html.HtmlElement) -> dict[str, str]:
    """{access key id: status} as the page lists them."""
    rows = doc.xpath("//section[@aria-labelledby='keys']//tbody/tr")
    return {row.xpath("td[1]/code/text()")[0]: row.xpath("td[2]/text()")[0] for row in rows}


def denied(response: httpx.Response) -> None:
    error_page(response, 403, "not authorized to perform")


def test_a_user_with_mfa_rotates_their_own_access_key(broker: Broker, clock: FixedClock) -> None:
    """Under AWS's self-management policy, a user signed in with MFA creates a second key
    (the secret shown once, and working), deactivates the first, sees its age and last use,
    and deletes it."""
    person = Person(broker, clock)
    person.sign_in()
    person.register_device()
    person.sign_in()  # now with MFA
    first = person.post("/keys", action="create")
    assert first.status_code == 200, first.text
    doc = lxml.html.fromstring(first.text)
    old_id = doc.xpath("//code[@id='access_key_id']/text()")[0]
    old = Creds(old_id, doc.xpath("//code[@id='secret_access_key']/text()")[0])
    assert broker.client("sts", old).get_caller_identity()["Arn"].endswith(f"/{person.name}")
    second = lxml.html.fromstring(person.post("/keys", action="create").text)
    new = Creds(second.xpath("//code[@id='access_key_id']/text()")[0],
                second.xpath("//code[@id='secret_access_key']/text()")[0])
    doc = person.page()
    assert keys_on(doc) == {old.access_key_id: "Active", new.access_key_id: "Active"}
    rows = {row.xpath("td[1]/code/text()")[0]: [" ".join(td.itertext()) for td in row.xpath("td")]
            for row in doc.xpath("//section[@aria-labelledby='keys']//tbody/tr")}
    assert rows[old.access_key_id][3] == "0 days"  # its age
    assert "(sts," in rows[old.access_key_id][4]  # last used: the GetCallerIdentity above
    assert rows[new.access_key_id][4] == "never"
    r = person.post("/keys", action="deactivate", key_id=old.access_key_id)
    assert r.status_code == 303, r.text
    assert keys_on(person.page())[old.access_key_id] == "Inactive"
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidClientTokenId"):
        broker.client("sts", old).get_caller_identity()
    assert broker.client("sts", new).get_caller_identity()  # the control: the new key works
    person.post("/keys", action="delete", key_id=old.access_key_id)
    assert list(keys_on(person.page())) == [new.access_key_id]
    # The secret is on no later page.
    assert new.secret_access_key not in person.client.get(PAGE).text


def test_without_mfa_only_mfa_self_management_is_allowed(broker: Broker,
                                                         clock: FixedClock) -> None:
    """AWS's policy denies everything but registering a device to a session without MFA: the
    page cannot create a key and says what it may not show; the same user, signed in with
    the device it registered from the page, can (the control)."""
    person = Person(broker, clock)
    person.sign_in()
    doc = person.page()
    assert "Not shown" in lxml.html.tostring(doc, encoding="unicode")  # ListAccessKeys denied
    denied(person.post("/keys", action="create"))
    person.register_device()
    person.sign_in()
    assert person.post("/keys", action="create").status_code == 200
    assert "Not shown" not in lxml.html.tostring(person.page(), encoding="unicode")


def test_a_user_without_permission_gets_nothing(broker: Broker, clock: FixedClock) -> None:
    """No policy, no self-service: every action is the IAM action's AccessDenied; a user
    with AWS's IAMUserChangePassword policy may change the password, and only that."""
    nobody = Person(broker, clock, policy=None)
    nobody.sign_in()
    denied(nobody.post("/keys", action="create"))
    denied(nobody.post("/mfa", name=f"{nobody.name}-x"))
    denied(nobody.post("/password", current_password=PASSWORD, new_password="Another-pw-77",
                       confirm_password="Another-pw-77"))
    changer = Person(broker, clock, policy=CHANGE_PASSWORD)
    changer.sign_in()
    r = changer.post("/password", current_password=PASSWORD, new_password="Another-pw-77",
                     confirm_password="Another-pw-77")
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}?done=password"
    changer.password = "Another-pw-77"
    changer.sign_in()  # with the new password
    denied(changer.post("/keys", action="create"))


def test_another_user_s_key_or_device_is_out_of_reach(broker: Broker,
                                                      clock: FixedClock) -> None:
    """The page acts on the signed-in user only: another user's key id or device serial in
    the form is refused (the IAM action finds no such key of theirs), while their own works."""
    victim = broker.client("iam")
    other = f"victim-{uuid.uuid4().hex[:6]}"
    victim.create_user(UserName=other)
    key = victim.create_access_key(UserName=other)["AccessKey"]["AccessKeyId"]
    device = victim.create_virtual_mfa_device(VirtualMFADeviceName=other)["VirtualMFADevice"]
    totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
    now = clock.now()
    victim.enable_mfa_device(UserName=other, SerialNumber=device["SerialNumber"],
                             AuthenticationCode1=totp.at(now),
                             AuthenticationCode2=totp.at(now, counter_offset=1))
    person = Person(broker, clock)
    person.sign_in()
    person.register_device()
    person.sign_in()
    for action in ("deactivate", "delete"):
        r = person.post("/keys", action=action, key_id=key)
        assert r.status_code == 404 and "NoSuchEntity" in r.text, r.text
    r = person.post("/mfa/remove", serial=device["SerialNumber"])
    assert r.status_code == 404, r.text
    assert victim.list_access_keys(UserName=other)["AccessKeyMetadata"][0]["Status"] == "Active"
    assert victim.list_mfa_devices(UserName=other)["MFADevices"]
    # The control: the same forms on the person's own key and device.
    mine = lxml.html.fromstring(person.post("/keys", action="create").text).xpath(
        "//code[@id='access_key_id']/text()")[0]
    assert person.post("/keys", action="deactivate", key_id=mine).status_code == 303
    serial = broker.client("iam").list_mfa_devices(UserName=person.name)["MFADevices"][0][
        "SerialNumber"]
    assert person.post("/mfa/remove", serial=serial).status_code == 303
    assert not broker.client("iam").list_mfa_devices(UserName=person.name)["MFADevices"]


def test_command_line_credentials_carry_the_sign_in_s_mfa(broker: Broker,
                                                          clock: FixedClock) -> None:
    """GetSessionToken credentials from the page: MFA-flagged after a sign-in with a device
    (they pass an MFA-required policy), not after one without."""
    person = Person(broker, clock)
    broker.client("iam").put_user_policy(
        UserName=person.name, PolicyName="list-with-mfa", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*",
                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}))
    person.sign_in()
    plain = person.command_line()
    assert broker.client("sts", plain).get_caller_identity()["Arn"].endswith(person.name)
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        broker.client("iam", plain).list_users()
    person.register_device()
    person.sign_in()
    with_mfa = person.command_line()
    assert "Users" in broker.client("iam", with_mfa).list_users()


def test_the_console_session_s_own_credentials_never_leave_it(broker: Broker,
                                                              clock: FixedClock) -> None:
    """The console page shows no credentials of a session of the broker's own sign-in, and
    those credentials, taken from the store, are refused by every signed request; the
    command-line credentials from the page (the control) are accepted."""
    person = Person(broker, clock)
    cookie = person.sign_in()
    page = person.client.get("/console")
    assert page.status_code == 200 and 'id="exports"' not in page.text
    assert f'href="{PAGE}"' in page.text
    session = broker.server.call(broker.runtime.console_sessions.get(cookie))
    assert session is not None and session.access_key_id not in page.text
    stolen = Creds(session.access_key_id, session.secret_access_key, session.session_token)
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidClientTokenId"):
        broker.client("sts", stolen).get_caller_identity()
    assert broker.client("sts", person.command_line()).get_caller_identity()


def test_the_page_needs_the_form_token_and_a_session_of_its_own(broker: Broker,
                                                               clock: FixedClock) -> None:
    """A form from elsewhere (no or another session's CSRF token) changes nothing; a role
    session from the federation endpoint has no such page (its identity provider keeps its
    credentials)."""
    person = Person(broker, clock, policy=CHANGE_PASSWORD)
    person.sign_in()
    other = Person(broker, clock, policy=CHANGE_PASSWORD)
    other.sign_in()
    for token in ("", other.csrf()):
        r = person.client.post(f"{PAGE}/password", data={
            "csrf": token, "current_password": PASSWORD, "new_password": "Another-pw-77",
            "confirm_password": "Another-pw-77"})
        error_page(r, 403, "CSRF")
    r = person.post("/password", current_password=PASSWORD, new_password="Another-pw-77",
                    confirm_password="Another-pw-77")
    assert r.status_code == 303  # the control
    with browser(broker) as anonymous:
        error_page(anonymous.get(PAGE), 403, "not signed in")


def test_switch_role_from_a_user_s_session_carries_mfa(broker: Broker,
                                                       clock: FixedClock) -> None:
    """A user's console session switches to a role whose trust policy requires MFA once the
    sign-in used a device; signed in without one, the same switch is refused (the user's own
    policies let them manage their devices, and require MFA of nothing)."""
    person = Person(broker, clock, policy={"Version": "2012-10-17",
                                           "Statement": SELF_MANAGE["Statement"][:-1]})
    iam = broker.client("iam")
    role = iam.create_role(RoleName=f"needs-mfa-{person.name}",
                           AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": f"arn:aws:iam::{broker.account_id}:user/{person.name}"},
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}))["Role"]
    iam.put_user_policy(UserName=person.name, PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}]}))

    def switch(cookie: str) -> httpx.Response:
        page = person.client.get("/console")
        csrf = lxml.html.fromstring(page.text).xpath(
            "//form[@action='/console/switch-role']//input[@name='csrf']/@value")[0]
        return person.client.post("/console/switch-role", data={
            "csrf": csrf, "role_arn": role["Arn"], "session_name": person.name})

    error_page(switch(person.sign_in()), 403, "not authorized to perform: sts:AssumeRole")
    person.register_device()
    new = signed_in(switch(person.sign_in()), "/console?switched=1")
    session = broker.server.call(broker.runtime.console_sessions.get(new))
    assert session is not None and session.arn.endswith(f"/{role['RoleName']}/{person.name}")
    creds = Creds(session.access_key_id, session.secret_access_key, session.session_token)
    assert broker.client("sts", creds).get_caller_identity()["Arn"] == session.arn


def test_a_policy_that_denies_everything_leaves_nothing_on_the_page(broker: Broker,
                                                                    clock: FixedClock) -> None:
    """Under AWS's self-management policy without MFA the console is restricted to the
    security credentials page (no applications, no switch role) but that page still works;
    a revoke-sessions policy (Deny of everything for sessions issued before now) leaves the
    page nothing, not even fresh command-line credentials that would outlive it."""
    person = Person(broker, clock)
    person.sign_in()
    console = person.client.get("/console")
    assert console.status_code == 200 and "only your security credentials page" in console.text
    assert "/console/switch-role" not in console.text
    assert person.command_line()  # the control: the page works for this session
    clock.advance(1)
    issued_before = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    broker.client("iam").put_user_policy(
        UserName=person.name, PolicyName="revoke", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Action": "*", "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}}}]}))
    denied(person.post("/cli"))
    denied(person.post("/mfa", name=f"{person.name}-late"))
    assert broker.client("iam").list_virtual_mfa_devices()  # nothing was made
    names = [d["SerialNumber"] for d in
             broker.client("iam").list_virtual_mfa_devices()["VirtualMFADevices"]]
    assert not any(n.endswith(f"/{person.name}-late") for n in names)
