"""The access portal (``/start``) over HTTP against a real server: a directory user's
one-time password, the forced change, TOTP registration at sign-in, MFA at the next sign-in,
portal sessions and sign-out, ``broker sso reset-password``; the attacks (CSRF, a deleted
user's session, lock-out after wrong passwords, a reused code, another browser's pending
step) each beside the honest request that succeeds."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import botocore.exceptions
import httpx
import lxml.html
import pyotp
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.identitycenter.directory import Directory
from broker.identitycenter.instances import Instance
from tests.authenticator import Authenticator, b64url
from tests.helpers import Broker, Creds
from tests.sso_world import Tenant, make_tenant, pkce

ERROR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
NEW_PASSWORD = "Portal-password-1!"


@dataclass
class World:
    broker: Broker
    instance: Instance
    directory: Directory
    devices: dict[tuple[str, str], tuple[pyotp.TOTP, set[int]]]

    def code(self, store: str, name: str) -> str:
        """A code of the person's device not used yet (within the accepted window)."""
        totp, used = self.devices[(store, name)]
        step = int(time.time()) // 30
        for candidate in (step, step + 1, step - 1):
            if candidate not in used:
                used.add(candidate)
                return str(totp.generate_otp(candidate))
        raise AssertionError("no unused code: sign in less often")

    @property
    def start(self) -> str:
        return f"/start/{self.instance.identity_store_id}"

    def user(self, name: str | None = None, store: str | None = None) -> tuple[str, str]:
        """A new directory user (of this world's directory, or ``store``'s): (user name,
        user id)."""
        name = name or f"person-{uuid.uuid4().hex[:8]}"
        instance = self.instance if store is None else self.broker.server.call(
            self.broker.runtime.portal.instances.by_store(store))
        assert instance is not None
        made = self.broker.server.call(self.directory.create_user(instance, {
            "UserName": name, "DisplayName": name.title(),
            "Name": {"GivenName": "Pat", "FamilyName": "Person"},
            "Emails": [{"Value": f"{name}@example.com", "Primary": True}]}, "test"))
        return name, made.user_id

    def one_time_password(self, name: str) -> str:
        portal = self.broker.runtime.portal
        return self.broker.server.call(portal.reset_password(self.instance.identity_store_id,
                                                             name))

    def delete(self, user_id: str) -> None:
        self.broker.server.call(self.directory.delete_user(self.instance, user_id, None))


@pytest.fixture(scope="module")
def world(broker: Broker) -> World:
    _, root = broker.new_account()
    sso = broker.client("sso-admin", root)
    arn = sso.create_instance(Name="portal-test")["InstanceArn"]
    store = sso.describe_instance(InstanceArn=arn)["IdentityStoreId"]
    runtime = broker.runtime
    instance = broker.server.call(runtime.portal.instances.by_store(store))
    assert instance is not None
    return World(broker, instance, Directory(runtime.store, runtime.clock), {})


def browser(world: World) -> httpx.Client:
    return httpx.Client(base_url=world.broker.url, timeout=30)


def form_of(response: httpx.Response, action_suffix: str) -> tuple[str, dict[str, str]]:
    """(action, the form's fields) of the page's form whose action ends so."""
    doc = lxml.html.fromstring(response.text)
    for form in doc.iter("form"):
        action = form.get("action") or ""
        if action.endswith(action_suffix):
            return action, {e.get("name"): e.get("value") or "" for e in form.iter("input")
                            if e.get("name")}
    raise AssertionError(f"no form for {action_suffix} in {response.text[:400]}")


def refused(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert text in response.text, response.text
    assert ERROR_ID.search(response.text), response.text


def password_step(http: httpx.Client, world: World | str, name: str,
                  password: str) -> httpx.Response:
    start = world if isinstance(world, str) else world.start
    page = http.get(start)
    assert page.status_code == 200, page.text
    action, fields = form_of(page, start)
    return http.post(action, data={**fields, "username": name, "password": password})


def seed_of(page: httpx.Response) -> str:
    doc = lxml.html.fromstring(page.text)
    return str(doc.xpath("//dt[text()='Key']/following-sibling::dd[1]/code/text()")[0])


def first_sign_in(http: httpx.Client, world: World, name: str, *,
                  store: str | None = None, expect: str | None = None) -> pyotp.TOTP:
    """One-time password → the new password → a TOTP device registered: signed in."""
    start = f"/start/{store}" if store else world.start
    otp = world.broker.server.call(world.broker.runtime.portal.reset_password(
        store or world.instance.identity_store_id, name))
    changing = password_step(http, start, name, otp)
    assert "Choose a new password" in changing.text, changing.text
    action, fields = form_of(changing, "/change")
    enrolling = http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                        "confirm_password": NEW_PASSWORD})
    assert "Register an MFA device" in enrolling.text, enrolling.text
    totp = pyotp.TOTP(seed_of(enrolling))
    action, fields = form_of(enrolling, "/enrol")
    done = http.post(action, data={**fields, "code": totp.now()})
    assert done.status_code == 303 and done.headers["location"] == (expect or start), \
        done.text
    world.devices[(store or world.instance.identity_store_id, name)] = (
        totp, {int(time.time()) // 30})
    return totp


def sign_in(http: httpx.Client, world: World, name: str, store: str, *,
            expect: str | None = None) -> None:
    """Sign in, registering a device the first time, or with a code of the one registered."""
    if (store, name) not in world.devices:
        first_sign_in(http, world, name, store=store, expect=expect)
        return
    otp = world.broker.server.call(world.broker.runtime.portal.reset_password(store, name))
    changing = password_step(http, f"/start/{store}", name, otp)
    action, fields = form_of(changing, "/change")
    password = f"Portal-{uuid.uuid4().hex[:8]}-1!"
    mfa = http.post(action, data={**fields, "new_password": password,
                                  "confirm_password": password})
    action, fields = form_of(mfa, "/mfa")
    done = http.post(action, data={**fields, "code": world.code(store, name)})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == (expect or f"/start/{store}")


def next_code(totp: pyotp.TOTP) -> str:
    """A code of the device not used yet: the next step's (within the accepted window)."""
    return totp.at(time.time(), counter_offset=1)


def signed_in_home(http: httpx.Client, world: World | str) -> httpx.Response:
    home = http.get(world if isinstance(world, str) else world.start)
    assert home.status_code == 200 and "Signed in as" in home.text, home.text
    return home


# -- the honest path --------------------------------------------------------------------------

def test_start_goes_to_the_only_portal_or_asks_for_the_directory(world: World) -> None:
    with browser(world) as http:
        r = http.get("/start")
        assert r.status_code == 303 and r.headers["location"] == world.start
        r = http.get("/start", params={"directory": world.instance.identity_store_id})
        assert r.status_code == 303 and r.headers["location"] == world.start
        refused(http.get("/start", params={"directory": "d-0000000000"}), 404,
                "no access portal")
        refused(http.get("/start/d-0000000000"), 404, "no access portal")
        refused(http.get("/start/not-a-directory"), 404, "no access portal")
        _, other = world.broker.new_account()
        world.broker.client("sso-admin", other).create_instance(Name="second")
        r = http.get("/start")
        assert r.status_code == 200 and 'name="directory"' in r.text, r.text


def test_one_time_password_change_totp_registration_then_the_portal(world: World) -> None:
    name, _ = world.user()
    with browser(world) as http:
        totp = first_sign_in(http, world, name)
        home = signed_in_home(http, world)
        assert name in home.text
        assert "no access to any AWS account" in home.text
        # The next sign-in: the new password, then a code of the registered device.
        http.cookies.clear()
        mfa = password_step(http, world, name, NEW_PASSWORD)
        assert "Multi-factor authentication" in mfa.text, mfa.text
        action, fields = form_of(mfa, "/mfa")
        done = http.post(action, data={**fields, "code": next_code(totp)})
        assert done.status_code == 303, done.text
        signed_in_home(http, world)
        # Signing out ends the session.
        action, fields = form_of(http.get(world.start), "/signout")
        out = http.post(action, data=fields)
        assert out.status_code == 200 and "signed out" in out.text
        assert "Signed in as" not in http.get(world.start).text


def test_the_one_time_password_is_not_a_password_and_must_be_changed(world: World) -> None:
    name, _ = world.user()
    with browser(world) as http:
        otp = world.one_time_password(name)
        changing = password_step(http, world, name, otp)
        action, fields = form_of(changing, "/change")
        # Not the one-time password again, not a weak one, not two different ones.
        refused(http.post(action, data={**fields, "new_password": otp,
                                        "confirm_password": otp}), 400, "not the one")
        refused(http.post(action, data={**fields, "new_password": "short",
                                        "confirm_password": "short"}), 400,
                "Password should meet")
        refused(http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                        "confirm_password": NEW_PASSWORD + "x"}), 400,
                "differ")
        # The control: the same pending step, honest, goes on to the registration.
        ok = http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                     "confirm_password": NEW_PASSWORD})
        assert "Register an MFA device" in ok.text, ok.text
        # The one-time password was replaced.
        http.cookies.clear()
        refused(password_step(http, world, name, otp), 403, "incorrect")


def test_the_command_line_prints_a_one_time_password(world: World) -> None:
    name, _ = world.user()
    settings = world.broker.settings
    result = CliRunner().invoke(main, [
        "sso", "reset-password", "--data-dir", str(settings.data_dir),
        "--identity-store-id", world.instance.identity_store_id, "--user-name", name.upper(),
        "--json"], env={"BROKER_AUDIT_SINK": "file",
                        "BROKER_AUDIT_PATH": str(settings.data_dir / "audit.log")})
    assert result.exit_code == 0, result.output
    otp = json.loads(result.output)["one_time_password"]
    with browser(world) as http:
        changing = password_step(http, world, name, otp)
        assert "Choose a new password" in changing.text, changing.text
    unknown = CliRunner().invoke(main, [
        "sso", "reset-password", "--data-dir", str(settings.data_dir),
        "--identity-store-id", world.instance.identity_store_id, "--user-name", "nobody-here"])
    assert unknown.exit_code == 2 and "no user named" in unknown.output


def test_a_lost_device_is_removed_with_a_new_one_time_password(world: World) -> None:
    name, _ = world.user()
    settings = world.broker.settings
    with browser(world) as http:
        first_sign_in(http, world, name)

        def reset(*extra: str) -> str:
            result = CliRunner().invoke(main, [
                "sso", "reset-password", "--data-dir", str(settings.data_dir),
                "--identity-store-id", world.instance.identity_store_id, "--user-name", name,
                "--json", *extra], env={"BROKER_AUDIT_SINK": "file", "BROKER_AUDIT_PATH": str(
                    settings.data_dir / "audit.log")})
            assert result.exit_code == 0, result.output
            return str(json.loads(result.output)["one_time_password"])

        for extra, expected in (((), "Multi-factor authentication"),
                                (("--remove-mfa-devices",), "Register an MFA device")):
            http.cookies.clear()
            changing = password_step(http, world, name, reset(*extra))
            action, fields = form_of(changing, "/change")
            password = f"Portal-{uuid.uuid4().hex[:8]}-1!"
            after = http.post(action, data={**fields, "new_password": password,
                                            "confirm_password": password})
            assert expected in after.text, after.text


# -- attacks, each beside its control ---------------------------------------------------------

def test_a_form_without_this_browsers_token_is_refused(world: World) -> None:
    name, _ = world.user()
    otp = world.one_time_password(name)
    with browser(world) as attacker, browser(world) as victim:
        # The attacker's own sign-in page's token, posted from the victim's browser.
        _, theirs = form_of(attacker.get(world.start), world.instance.identity_store_id)
        victim.get(world.start)
        refused(victim.post(world.start, data={**theirs, "username": name, "password": otp}),
                403, "CSRF")
        refused(victim.post(world.start, data={"username": name, "password": otp}), 403,
                "CSRF")
        # The control: the victim's own form.
        ok = password_step(victim, world, name, otp)
        assert "Choose a new password" in ok.text
        # A pending step is bound to the browser that began it.
        action, fields = form_of(ok, "/change")
        step = victim.cookies.get("broker-portal-step")
        attacker.cookies.set("broker-portal-step", step or "")
        refused(attacker.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                            "confirm_password": NEW_PASSWORD}), 403, "expired")


def test_signed_in_forms_need_the_sessions_token(world: World) -> None:
    name, _ = world.user()
    with browser(world) as http:
        first_sign_in(http, world, name)
        action, fields = form_of(signed_in_home(http, world), "/signout")
        refused(http.post(action, data={**fields, "csrf": "0" * 64}), 403, "CSRF")
        refused(http.post(action, data={"other": "1"}), 403, "CSRF")
        signed_in_home(http, world)  # still signed in
        assert http.post(action, data=fields).status_code == 200  # the control


def test_a_deleted_users_session_ends_at_once(world: World) -> None:
    name, user_id = world.user()
    keep, _ = world.user()
    with browser(world) as http, browser(world) as other:
        first_sign_in(http, world, name)
        first_sign_in(other, world, keep)
        action, fields = form_of(signed_in_home(http, world), "/signout")
        world.delete(user_id)
        page = http.get(world.start)
        assert "Signed in as" not in page.text and 'name="password"' in page.text
        refused(http.post(action, data=fields), 403, "not signed in")
        refused(password_step(http, world, name, NEW_PASSWORD), 403, "incorrect")
        signed_in_home(other, world)  # the control: another user's session lives on


def test_wrong_passwords_lock_the_user_out(world: World) -> None:
    name, _ = world.user()
    control, _ = world.user()
    with browser(world) as http:
        first_sign_in(http, world, name)
        http.cookies.clear()
        first_sign_in(http, world, control)
        http.cookies.clear()
        limit = world.broker.settings.signin.max_failures
        for _ in range(limit):
            refused(password_step(http, world, name, "Wrong-password-1!"), 403, "incorrect")
        # Locked: the right password is refused too, with the same sentence.
        refused(password_step(http, world, name, NEW_PASSWORD), 403, "incorrect")
        # An unknown user is refused alike.
        refused(password_step(http, world, "nobody-at-all", NEW_PASSWORD), 403, "incorrect")
        # The control: another user of the same portal signs in.
        mfa = password_step(http, world, control, NEW_PASSWORD)
        assert "Multi-factor authentication" in mfa.text, mfa.text
        # An administrator's new one-time password ends the lock-out.
        ok = password_step(http, world, name, world.one_time_password(name))
        assert "Choose a new password" in ok.text, ok.text


def test_a_code_opens_one_sign_in_only(world: World) -> None:
    name, _ = world.user()
    with browser(world) as http:
        totp = first_sign_in(http, world, name)
        code = next_code(totp)
        http.cookies.clear()
        action, fields = form_of(password_step(http, world, name, NEW_PASSWORD), "/mfa")
        assert http.post(action, data={**fields, "code": code}).status_code == 303
        http.cookies.clear()
        action, fields = form_of(password_step(http, world, name, NEW_PASSWORD), "/mfa")
        refused(http.post(action, data={**fields, "code": code}), 403, "not valid")
        refused(http.post(action, data={**fields, "code": "12345x"}), 403, "not valid")


def test_a_pending_step_is_taken_once(world: World) -> None:
    name, _ = world.user()
    with browser(world) as http:
        totp = first_sign_in(http, world, name)
        http.cookies.clear()
        mfa = password_step(http, world, name, NEW_PASSWORD)
        action, fields = form_of(mfa, "/mfa")
        step = http.cookies.get("broker-portal-step")
        assert http.post(action, data={**fields, "code": next_code(totp)}).status_code == 303
        http.cookies.set("broker-portal-step", step or "")
        refused(http.post(action, data={**fields, "code": totp.now()}), 403, "expired")


def test_hostile_inputs_are_pages_with_an_error_id(world: World) -> None:
    with browser(world) as http:
        refused(http.post(world.start, content=b"\xff\xfe=1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}),
                400, "UTF-8")
        refused(http.post(world.start, content="a=1",
                          headers={"Content-Type": "text/plain"}), 400, "x-www-form")
        refused(http.get("/start?directory=%ED%A0%80"), 400, "UTF-8")
        refused(http.get("/start/device?user_code=" + "A" * 100), 400, "code")
        for route in ("change", "enrol", "mfa", "console", "credentials", "signout"):
            r = http.post(f"{world.start}/{route}", data={"csrf": "x"})
            assert r.status_code == 403 and ERROR_ID.search(r.text), (route, r.text)


def _cookie_attributes(response: httpx.Response) -> list[str]:
    return [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]


def test_cookies_are_host_only_and_http_only(world: World) -> None:
    with browser(world) as http:
        for cookie in _cookie_attributes(http.get(world.start)):
            assert "HttpOnly" in cookie and "Path=/" in cookie and "Domain" not in cookie


def portal_fields(page: httpx.Response) -> dict[str, Any]:
    return dict(form_of(page, "/signout")[1])


# -- security keys ---------------------------------------------------------------------------

def register_key(http: httpx.Client, world: World, key: Authenticator) -> httpx.Response:
    action, fields = form_of(signed_in_home(http, world), "/webauthn")
    options = http.post(f"{action}/options", data={"csrf": fields["csrf"]},
                        headers={"Accept": "application/json"})
    assert options.status_code == 200, options.text
    return http.post(action, data={**fields, "name": "my key",
                                   "credential": key.create(options.json())})


def mfa_options(page: httpx.Response) -> dict[str, Any]:
    doc = lxml.html.fromstring(page.text)
    options: dict[str, Any] = json.loads(doc.xpath("//button[@id='webauthn-use']/@data-options")[0])
    return options


def test_a_security_key_registered_in_the_portal_signs_in(world: World) -> None:
    name, _ = world.user()
    key = Authenticator(origin=world.broker.url,
                        rp_id=world.broker.runtime.security_keys.rp_id)
    with browser(world) as http:
        totp = first_sign_in(http, world, name)
        done = register_key(http, world, key)
        assert done.status_code == 303, done.text
        home = http.get(done.headers["location"])
        assert "The security key is registered" in home.text and "my key" in home.text
        # The next sign-in offers the key beside the code; its assertion signs in.
        http.cookies.clear()
        mfa = password_step(http, world, name, NEW_PASSWORD)
        action, fields = form_of(mfa, "/mfa")
        options = mfa_options(mfa)
        assert 'id="code"' in mfa.text  # the authenticator app too
        ok = http.post(action, data={**fields, "assertion": key.get(options)})
        assert ok.status_code == 303, ok.text
        signed_in_home(http, world)
        del totp


def test_a_security_keys_assertion_is_checked(world: World) -> None:
    name, _ = world.user()
    key = Authenticator(origin=world.broker.url,
                        rp_id=world.broker.runtime.security_keys.rp_id)
    with browser(world) as http:
        first_sign_in(http, world, name)
        assert register_key(http, world, key).status_code == 303
        # A registration response answers one challenge, once.
        action, fields = form_of(signed_in_home(http, world), "/webauthn")
        refused(http.post(action, data={**fields, "name": "again",
                                        "credential": key.create({"challenge": "x"})}),
                403, "expired")
        http.cookies.clear()
        mfa = password_step(http, world, name, NEW_PASSWORD)
        action, fields = form_of(mfa, "/mfa")
        options = mfa_options(mfa)
        # Another origin's assertion, one over another challenge, an unknown key: refused.
        evil = Authenticator(origin="https://evil.example.test", rp_id=key.rp_id,
                             credentials=key.credentials, counter=key.counter)
        refused(http.post(action, data={**fields, "assertion": evil.get(options)}), 403,
                "not valid")
        refused(http.post(action, data={**fields, "assertion": key.get(
            {**options, "challenge": "AAAA"})}), 403, "not valid")
        stranger = Authenticator(origin=world.broker.url, rp_id=key.rp_id)
        stranger.create({"challenge": "x"})
        refused(http.post(action, data={**fields, "assertion": stranger.get(
            {"challenge": options["challenge"], "allowCredentials": [
                {"id": b64url(next(iter(stranger.credentials)))}]})}), 403, "not valid")
        # The control: the key's honest assertion.
        assert http.post(action, data={**fields, "assertion": key.get(options)}
                         ).status_code == 303
        # Then a counter that did not grow (a cloned key): refused.
        http.cookies.clear()
        mfa = password_step(http, world, name, NEW_PASSWORD)
        action, fields = form_of(mfa, "/mfa")
        refused(http.post(action, data={**fields, "assertion": key.get(
            mfa_options(mfa), count=False)}), 403, "not valid")


# -- the roles, their access keys, and the command line's sign-in -----------------------------

@pytest.fixture(scope="module")
def tenants(broker: Broker) -> tuple[Tenant, Tenant]:
    return make_tenant(broker, "ReadOnly"), make_tenant(broker, "Other")


def exported(page: httpx.Response) -> dict[str, str]:
    text = lxml.html.fromstring(page.text).xpath("//pre[@id='exports']/text()")[0]
    return dict(re.findall(r'export (\w+)="([^"]+)"', text))


def test_the_portal_lists_the_assigned_roles_and_gives_their_access_keys(
        world: World, tenants: tuple[Tenant, Tenant]) -> None:
    one, _ = tenants
    start = f"/start/{one.identity_store_id}"
    with browser(world) as http:
        sign_in(http, world, one.user_name, one.identity_store_id)
        home = signed_in_home(http, start)
        doc = lxml.html.fromstring(home.text)
        assert doc.xpath("//section[@class='account']/@data-account") == [one.account_id]
        assert doc.xpath("//li/@data-role") == ["ReadOnly"]
        action, fields = form_of(home, "/credentials")
        keys = http.post(action, data=fields)
        assert keys.status_code == 200, keys.text
        values = exported(keys)
        assert set(values) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                               "AWS_SESSION_TOKEN"}
        assert f"[{one.account_id}_ReadOnly]" in keys.text
        caller = world.broker.client("sts", Creds(
            values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"],
            values["AWS_SESSION_TOKEN"])).get_caller_identity()
        assert caller["Account"] == one.account_id
        assert ":assumed-role/AWSReservedSSO_ReadOnly_" in caller["Arn"]
        assert caller["Arn"].endswith(f"/{one.user_name}")
        # Another role, or the same role in another account, is not this person's.
        refused(http.post(action, data={**fields, "role_name": "Other"}), 403,
                "No role Other")
        refused(http.post(action, data={**fields, "account_id": "000000000000"}), 403,
                "No role")
        refused(http.post(action, data={**fields, "account_id": "x"}), 400, "Choose one")
        # "Management console": a sign-in token of the same role's session, through the
        # federation endpoint, into the console.
        action, fields = form_of(home, "/console")
        sent = http.post(action, data=fields)
        assert sent.status_code == 303, sent.text
        assert "/federation?Action=login" in sent.headers["location"]
        console = http.get(sent.headers["location"], follow_redirects=True)
        assert console.status_code == 200, console.text
        assert f"arn:aws:sts::{one.account_id}:assumed-role/AWSReservedSSO_ReadOnly_" in \
            console.text and f"/{one.user_name}" in console.text
        refused(http.post(action, data={**fields, "role_name": "Other"}), 403, "No role Other")


def test_the_device_approval_page_for_a_signed_in_person(
        world: World, tenants: tuple[Tenant, Tenant]) -> None:
    one, two = tenants
    oidc = world.broker.client("sso-oidc")
    client = oidc.register_client(clientName="portal-test-cli", clientType="public")
    started = oidc.start_device_authorization(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        startUrl=one.start_url)
    complete = started["verificationUriComplete"]
    assert complete.startswith(f"{world.broker.url}/start/device?user_code=")
    with browser(world) as http, browser(world) as intruder:
        # Not signed in: to the instance's sign-in first, and back to the page after it.
        first = http.get(complete)
        assert first.status_code == 303
        assert first.headers["location"] == f"/start/{one.identity_store_id}"
        sign_in(http, world, one.user_name, one.identity_store_id,
                expect=f"/start/device?{urlencode({'user_code': started['userCode']})}")
        page = http.get(complete)
        assert page.status_code == 200 and "portal-test-cli" in page.text, page.text
        assert started["userCode"] in page.text
        action, fields = form_of(page, "/start/device")
        # A person of another instance is sent to sign in to this one, and even signed in
        # there cannot approve this code with their own session.
        sign_in(intruder, world, two.user_name, two.identity_store_id)
        assert intruder.get(complete).status_code == 303
        intruder_fields = form_of(signed_in_home(
            intruder, f"/start/{two.identity_store_id}"), "/signout")[1]
        refused(intruder.post(action, data={**fields, "csrf": intruder_fields["csrf"]}), 404,
                "not valid")
        # Another browser's token: refused (CSRF).
        refused(intruder.post(action, data=fields), 403, "CSRF")
        # The control: the person allows it, and the command line gets its tokens.
        allowed = http.post(action, data={**fields, "action": "allow"})
        assert allowed.status_code == 200 and "approved" in allowed.text, allowed.text
        tokens = oidc.create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="urn:ietf:params:oauth:grant-type:device_code",
            deviceCode=started["deviceCode"])
        sso = world.broker.client("sso")
        listed = sso.list_accounts(accessToken=tokens["accessToken"])["accountList"]
        assert [a["accountId"] for a in listed] == [one.account_id]
        # Used once: the code is gone.
        refused(http.get(complete), 404, "not valid")


def test_a_denied_device_request_gets_no_tokens(world: World,
                                               tenants: tuple[Tenant, Tenant]) -> None:
    one, _ = tenants
    oidc = world.broker.client("sso-oidc")
    client = oidc.register_client(clientName="portal-deny", clientType="public")
    started = oidc.start_device_authorization(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        startUrl=one.start_url)
    with browser(world) as http:
        sign_in(http, world, world.user(store=one.identity_store_id)[0], one.identity_store_id)
        action, fields = form_of(http.get(started["verificationUriComplete"]), "/start/device")
        denied = http.post(action, data={**fields, "action": "deny"})
        assert denied.status_code == 200 and "denied" in denied.text
    with pytest.raises(botocore.exceptions.ClientError) as refusal:
        oidc.create_token(clientId=client["clientId"], clientSecret=client["clientSecret"],
                          grantType="urn:ietf:params:oauth:grant-type:device_code",
                          deviceCode=started["deviceCode"])
    assert refusal.value.response["Error"]["Code"] == "AccessDeniedException"


def test_the_authorization_code_grant_redirects_to_the_loopback_with_code_and_state(
        world: World, tenants: tuple[Tenant, Tenant]) -> None:
    one, _ = tenants
    oidc = world.broker.client("sso-oidc")
    client = oidc.register_client(
        clientName="portal-code", clientType="public",
        grantTypes=["authorization_code", "refresh_token"],
        redirectUris=["http://127.0.0.1/oauth/callback"], issuerUrl=one.start_url)
    verifier, challenge = pkce()
    redirect = "http://127.0.0.1:43111/oauth/callback"
    params = {"response_type": "code", "client_id": client["clientId"],
              "redirect_uri": redirect, "state": "state-1", "code_challenge": challenge,
              "code_challenge_method": "S256", "scopes": "sso:account:access"}
    with browser(world) as http:
        first = http.get("/authorize", params=params)
        assert first.status_code == 303, first.text
        assert first.headers["location"] == f"/start/{one.identity_store_id}"
        # Signing in ends where the grant began: back at /authorize, then the loopback.
        name, _ = world.user(store=one.identity_store_id)
        sign_in(http, world, name, one.identity_store_id,
                expect=f"/authorize?{urlencode(params)}")
        consent = http.get("/authorize", params=params)
        assert consent.status_code == 200 and "portal-code" in consent.text, consent.text
        action, fields = form_of(consent, "/authorize")
        # Another browser's token (a page of another site posting the form): refused.
        refused(http.post(action, data={**fields, "csrf": "0" * 64, "action": "allow"}), 403,
                "CSRF")
        back = http.post(action, data={**fields, "action": "allow"})
        assert back.status_code == 303, back.text
        location = back.headers["location"]
        assert location.startswith(redirect + "?")
        query = dict(parse_qsl(urlsplit(location).query))
        assert query["state"] == "state-1" and query["code"]
        tokens = oidc.create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="authorization_code", code=query["code"], redirectUri=redirect,
            codeVerifier=verifier)
        assert tokens["accessToken"]
        # Denied: the client is told so, with its state.
        denied = http.post(action, data={**fields, "action": "deny"})
        assert dict(parse_qsl(urlsplit(denied.headers["location"]).query)) == {
            "error": "access_denied", "error_description": "The person denied the request.",
            "state": "state-1"}
        # A redirect URI that is not a loopback: an error page, no redirect.
        refused(http.get("/authorize", params={**params,
                                               "redirect_uri": "http://evil.example/cb"}),
                403, "loopback")
        # No PKCE: the client is told at its (registered, loopback) redirect URI.
        told = http.get("/authorize", params={**params, "code_challenge": ""})
        assert told.status_code == 302
        assert dict(parse_qsl(urlsplit(told.headers["location"]).query))["error"] == \
            "invalid_request"


def test_a_guessed_user_code_is_throttled(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Its own broker: the misses from this test's one address would block the others."""
    from tests.helpers import start_broker

    b = start_broker(tmp_path_factory.mktemp("guessing"))
    try:
        tenant = make_tenant(b, "ReadOnly")
        oidc = b.client("sso-oidc")
        client = oidc.register_client(clientName="guess", clientType="public")
        started = oidc.start_device_authorization(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            startUrl=tenant.start_url)
        with httpx.Client(base_url=b.url, timeout=30) as http:
            # The control: the honest code finds its request (sign-in comes first).
            assert http.get(started["verificationUriComplete"]).status_code == 303
            misses = 0
            for n in range(40):
                r = http.get("/start/device", params={"user_code": f"BCDF-{n:04d}"})
                assert r.status_code == 404 and ERROR_ID.search(r.text), r.text
                misses += 1
                if http.get(started["verificationUriComplete"]).status_code == 404:
                    break
            # After the misses, even the honest code is refused from this address.
            assert misses < 40
            refused(http.get(started["verificationUriComplete"]), 404, "not valid")
    finally:
        b.stop()
