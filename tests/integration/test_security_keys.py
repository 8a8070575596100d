"""FIDO2 / WebAuthn security keys: registered from the security credentials page, listed by
ListMFADevices with their credential id as serial, and used as the second factor at sign-in.
A software authenticator (tests/authenticator.py) plays key and browser; every attack (another
origin, a replayed assertion, an old challenge, a counter that did not grow, no user presence,
another user's key) beside the honest control made the same way."""

from __future__ import annotations

import json

import httpx
import lxml.html
import pytest

from broker.clock import FixedClock
from tests.authenticator import Authenticator, b64url
from tests.console_world import SESSION, error_page, set_cookies, signed_in
from tests.helpers import Broker
from tests.integration.test_own_credentials import (
    PAGE,
    SELF_MANAGE,
    Person,
    broker,  # noqa: F401 (the module's broker fixture)
    clock,  # noqa: F401
    near_real_time,  # noqa: F401
)

MANAGE = {"Version": "2012-10-17", "Statement": SELF_MANAGE["Statement"][:-1]}


def register(person: Person, key: Authenticator, name: str = "yubikey") -> httpx.Response:
    csrf = person.csrf()
    options = person.client.post(f"{PAGE}/webauthn/options", data={"csrf": csrf},
                                 headers={"Accept": "application/json"})
    assert options.status_code == 200, options.text
    return person.client.post(f"{PAGE}/webauthn", data={
        "csrf": csrf, "name": name, "credential": key.create(options.json())})


def password_step(person: Person) -> tuple[str, dict]:
    """The password step of a sign-in: the MFA form's CSRF token and the key options."""
    r = person.password_step()
    assert r.status_code == 200, r.text
    doc = lxml.html.fromstring(r.text)
    token = doc.xpath("//form[@action='/signin/mfa']//input[@name='csrf']/@value")[0]
    options = json.loads(doc.xpath("//button[@id='webauthn-use']/@data-options")[0])
    return token, options


def assert_with(person: Person, token: str, assertion: str) -> httpx.Response:
    return person.client.post("/signin/mfa", data={"csrf": token, "assertion": assertion})


@pytest.fixture
def enrolled(broker: Broker, clock: FixedClock) -> tuple[Person, Authenticator]:  # noqa: F811
    person = Person(broker, clock, policy=MANAGE)
    person.sign_in()
    key = Authenticator(origin=broker.url, rp_id=broker.runtime.security_keys.rp_id)
    r = register(person, key)
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}?done=key-registered", \
        r.text
    return person, key


def test_a_key_registered_from_the_page_signs_in(broker: Broker,  # noqa: F811
                                                 enrolled: tuple[Person, Authenticator]) -> None:
    person, key = enrolled
    devices = broker.client("iam").list_mfa_devices(UserName=person.name)["MFADevices"]
    assert [d["SerialNumber"] for d in devices] == [
        b64url(next(iter(key.credentials)))]
    token, options = password_step(person)
    cookie = signed_in(assert_with(person, token, key.get(options)))
    session = broker.server.call(broker.runtime.console_sessions.get(cookie))
    assert session is not None
    # The sign-in used MFA: the command line credentials say so.
    person.client.cookies.set(SESSION, cookie)
    assert "with MFA" in person.post("/cli").text


def test_an_assertion_for_another_origin_is_refused(broker: Broker,  # noqa: F811
                                                    enrolled: tuple[Person, Authenticator]
                                                    ) -> None:
    person, key = enrolled
    token, options = password_step(person)
    key.origin = "https://evil.example.test"
    error_page(assert_with(person, token, key.get(options)), 403, "MFA code is not valid")
    key.origin = broker.url  # the control: the same key, the same step, the right origin
    signed_in(assert_with(person, token, key.get(options)))


def test_a_replayed_assertion_or_an_old_challenge_is_refused(
        broker: Broker, enrolled: tuple[Person, Authenticator]) -> None:  # noqa: F811
    person, key = enrolled
    token, options = password_step(person)
    assertion = key.get(options)
    signed_in(assert_with(person, token, assertion))  # the control
    refused = assert_with(person, token, assertion)  # the same step again: taken
    assert refused.status_code == 403 and SESSION not in set_cookies(refused)
    # A new sign-in, answered with an assertion over the old challenge.
    token, fresh = password_step(person)
    assert fresh["challenge"] != options["challenge"]
    error_page(assert_with(person, token, key.get(options)), 403, "MFA code is not valid")
    signed_in(assert_with(person, token, key.get(fresh)))


def test_a_counter_that_did_not_grow_or_no_user_presence_is_refused(
        broker: Broker, enrolled: tuple[Person, Authenticator]) -> None:  # noqa: F811
    person, key = enrolled
    token, options = password_step(person)
    signed_in(assert_with(person, token, key.get(options)))
    token, options = password_step(person)
    # A clone of the key: the same counter value as the last assertion.
    error_page(assert_with(person, token, key.get(options, count=False)), 403,
               "MFA code is not valid")
    key.present = False
    error_page(assert_with(person, token, key.get(options)), 403, "MFA code is not valid")
    key.present = True
    signed_in(assert_with(person, token, key.get(options)))


def test_another_user_s_key_opens_nothing(broker: Broker, clock: FixedClock,  # noqa: F811
                                          enrolled: tuple[Person, Authenticator]) -> None:
    person, key = enrolled
    other = Person(broker, clock, policy=MANAGE)
    other.sign_in()
    other_key = Authenticator(origin=broker.url, rp_id=key.rp_id)
    assert register(other, other_key).status_code == 303
    token, options = password_step(person)
    # The other user's key answering the person's challenge (as if it were allowed).
    forged = other_key.get({**options, "allowCredentials": [
        {"id": b64url(c), "type":
         "public-key"} for c in other_key.credentials]})
    error_page(assert_with(person, token, forged), 403, "MFA code is not valid")
    signed_in(assert_with(person, token, key.get(options)))


def test_registration_checks_origin_challenge_and_permission(
        broker: Broker, clock: FixedClock) -> None:  # noqa: F811
    person = Person(broker, clock, policy=MANAGE)
    person.sign_in()
    evil = Authenticator(origin="https://evil.example.test",
                         rp_id=broker.runtime.security_keys.rp_id)
    error_page(register(person, evil), 403, "registration response is not valid")
    # A response without fetching options first (no challenge kept for this session).
    key = Authenticator(origin=broker.url, rp_id=evil.rp_id)
    stale = person.client.post(f"{PAGE}/webauthn", data={
        "csrf": person.csrf(), "name": "k", "credential": key.create({"challenge": "AAAA"})})
    error_page(stale, 403, "expired")
    assert register(person, key).status_code == 303  # the control
    nobody = Person(broker, clock, policy=None)
    nobody.sign_in()
    error_page(register(nobody, Authenticator(origin=broker.url, rp_id=evil.rp_id)), 403,
               "iam:EnableMFADevice")
    assert not broker.client("iam").list_mfa_devices(UserName=nobody.name)["MFADevices"]
