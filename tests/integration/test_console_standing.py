"""A console session lasts only while its credentials are in standing: revoked sessions (AWS's
revoke-sessions policy, a Deny of ``*`` for sessions issued before a time) and sessions of a
deleted role get no sign-in token, no console and nothing through the gateway — and
``SessionDuration`` cannot be used to renew a session past revocation or past the role's
maximum. Each refusal beside the same fixture's honest control.

Also here: forward-auth reads the original URL only from the source ``gateway.url_header``
names, so a client-supplied header of the other kind is never believed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console_world import (
    APP,
    SESSION,
    ConsoleWorld,
    browser,
    console,
    console_env,
    gateway,
    get_token,
    json_error,
    login,
    session_param,
    set_cookies,
    signed_in,
    signin_token,
)
from tests.helpers import Broker, start_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("broker"), env=console_env())
    yield b
    b.stop()


@pytest.fixture
def world(broker: Broker) -> ConsoleWorld:
    return ConsoleWorld.make(broker)


def revoke_older_sessions(world: ConsoleWorld, before: datetime) -> None:
    """AWS's "Revoke active sessions" policy on the role: deny everything to sessions issued
    before ``before``."""
    world.broker.client("iam").put_role_policy(
        RoleName=world.role_arn.rsplit("/", 1)[1], PolicyName="AWSRevokeOlderSessions",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Action": ["*"], "Resource": ["*"],
            "Condition": {"DateLessThan": {
                "aws:TokenIssueTime": before.strftime("%Y-%m-%dT%H:%M:%SZ")}}}]}))


def sign_in(world: ConsoleWorld, token: str) -> str:
    with browser(world.broker) as client:
        return signed_in(login(client, token))


def test_revoked_credentials_get_no_signin_token(world: ConsoleWorld) -> None:
    control = world.assume(name="control")
    assert signin_token(world.broker, control)  # the honest control, before the revocation
    revoked = world.assume(name="revoked")
    revoke_older_sessions(world, datetime.now(UTC) + timedelta(minutes=5))
    with browser(world.broker) as client:
        message = json_error(get_token(client, session_param(revoked)), 403, "AccessDenied")
    assert "revoked" in message


def test_a_revoked_session_loses_the_console_and_the_gateway(world: ConsoleWorld) -> None:
    cookie = sign_in(world, signin_token(world.broker, world.assume()))
    assert console(world.broker, cookie).status_code == 200  # the control
    assert gateway(world.broker, cookie).status_code == 200
    revoke_older_sessions(world, datetime.now(UTC) + timedelta(minutes=5))
    page = console(world.broker, cookie)
    assert page.status_code == 401 and "Your session has ended" in page.text
    assert gateway(world.broker, cookie).status_code == 401
    # Sessions issued after the revocation time are not touched.
    revoke_older_sessions(world, datetime.now(UTC) - timedelta(minutes=5))
    fresh = sign_in(world, signin_token(world.broker, world.assume(name="after")))
    assert console(world.broker, fresh).status_code == 200


def test_a_token_made_before_revocation_does_not_sign_in_after_it(world: ConsoleWorld) -> None:
    token = signin_token(world.broker, world.assume())
    revoke_older_sessions(world, datetime.now(UTC) + timedelta(minutes=5))
    with browser(world.broker) as client:
        refused = login(client, token)
    assert refused.status_code == 403 and SESSION not in set_cookies(refused)


def test_a_deleted_roles_session_loses_the_console(world: ConsoleWorld) -> None:
    cookie = sign_in(world, signin_token(world.broker, world.assume()))
    assert console(world.broker, cookie).status_code == 200
    iam = world.broker.client("iam")
    name = world.role_arn.rsplit("/", 1)[1]
    iam.delete_role_policy(RoleName=name, PolicyName="chain")
    iam.delete_role(RoleName=name)
    assert console(world.broker, cookie).status_code == 401
    assert gateway(world.broker, cookie).status_code == 401


def test_session_duration_keeps_the_issue_time_so_revocation_still_applies(
        world: ConsoleWorld) -> None:
    """New keys for SessionDuration are the same session: a revoke-sessions policy whose time
    lies between the role's assumption and the console sign-in still refuses them (had they
    been issued 'now', they would escape it)."""
    creds = world.assume()
    assumed = datetime.now(UTC)
    time.sleep(2.2)  # aws:TokenIssueTime has second precision
    cookie = sign_in(world, signin_token(world.broker, creds, duration=7200))
    page = console(world.broker, cookie)
    assert page.status_code == 200 and creds.access_key_id not in page.text  # new keys
    revoke_older_sessions(world, assumed + timedelta(seconds=1))
    assert console(world.broker, cookie).status_code == 401
    assert gateway(world.broker, cookie).status_code == 401
    # The control: a session assumed after that time is untouched.
    later = sign_in(world, signin_token(world.broker, world.assume(name="later"), duration=900))
    assert console(world.broker, later).status_code == 200


def test_session_duration_cannot_outlast_the_role_maximum_from_when_it_was_assumed(
        world: ConsoleWorld) -> None:
    """Asking again never extends a session: the console's credentials end at most
    MaxSessionDuration (7200 s here) after the role was assumed."""
    creds = world.assume()
    assumed_at = datetime.now(UTC).timestamp()
    cookie = sign_in(world, signin_token(world.broker, creds, duration=7200))
    page = console(world.broker, cookie)
    expires_at = int(page.text.split('data-expires-at="', 1)[1].split('"', 1)[0])
    assert assumed_at + 7200 - 30 <= expires_at <= assumed_at + 7200 + 5
    # A second token from the same credentials, later, ends at the same time, not later.
    again = sign_in(world, signin_token(world.broker, creds, duration=7200))
    later = console(world.broker, again)
    assert int(later.text.split('data-expires-at="', 1)[1].split('"', 1)[0]) <= expires_at


def test_gateway_reads_only_the_configured_url_source(world: ConsoleWorld) -> None:
    """With the default gateway.url_header (X-Forwarded), a client-supplied X-Original-URL
    is not read: without X-Forwarded-* the gateway cannot place the request and refuses."""
    cookie = sign_in(world, signin_token(world.broker, world.assume()))
    assert gateway(world.broker, cookie, f"{APP}/reports").status_code == 200  # the control
    with browser(world.broker) as client:
        sneaked = client.get("/gateway/auth", headers={
            "Cookie": f"{SESSION}={cookie}", "X-Original-URL": f"{APP}/reports"})
    assert sneaked.status_code == 401


def test_signing_out_on_https_deletes_the_host_cookie_as_it_was_set(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A browser drops a __Host- cookie only if the deletion is Secure with Path=/."""
    port_env = console_env(BROKER_SERVER_PUBLIC_URL="https://broker.example.test")
    b = start_broker(tmp_path_factory.mktemp("https"), env=port_env)
    try:
        world = ConsoleWorld.make(b)
        with browser(b) as client:
            r = login(client, signin_token(b, world.assume()))
            assert r.status_code == 303
            made = set_cookies(r)[f"__Host-{SESSION}"]
            assert made["secure"] and made["path"] == "/"
            out = client.get("/federation", params={"Action": "logout"},
                             headers={"Cookie": f"__Host-{SESSION}={made.value}"})
        gone = set_cookies(out)[f"__Host-{SESSION}"]
        assert gone.value == "" and gone["secure"] and gone["path"] == "/"
        assert gone["httponly"] and gone["max-age"] == "0"
    finally:
        b.stop()


def test_without_a_session_the_console_sends_the_browser_to_sign_in(
        tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> None:
    """signin.url set: a 303 there. The control, this module's broker without it: the 401 page
    that says so."""
    b = start_broker(tmp_path_factory.mktemp("signin-url"),
                     env=console_env(BROKER_SIGNIN_URL="/saml/login?provider=Corp"))
    try:
        with browser(b) as client:
            sent = client.get("/console")
        assert sent.status_code == 303 and sent.headers["location"] == "/saml/login?provider=Corp"
    finally:
        b.stop()
    with browser(broker) as client:
        page = client.get("/console")
    assert page.status_code == 401 and "You are not signed in" in page.text


def test_standing_is_decided_with_the_request_source_address(world: ConsoleWorld) -> None:
    """A common guard — deny everything from outside the office network — is evaluated with
    the browser's address, as for a signed request: from inside (127.0.0.1 here) the console and
    the gateway work; the same policy naming another network ends them."""
    iam = world.broker.client("iam")
    role = world.role_arn.rsplit("/", 1)[1]

    def office(network: str) -> None:
        iam.put_role_policy(RoleName=role, PolicyName="office-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Action": "*", "Resource": "*",
                "Condition": {"NotIpAddress": {"aws:SourceIp": network}}}]}))

    office("127.0.0.0/8")
    cookie = sign_in(world, signin_token(world.broker, world.assume()))
    assert console(world.broker, cookie).status_code == 200
    assert gateway(world.broker, cookie).status_code == 200
    office("203.0.113.0/24")
    assert console(world.broker, cookie).status_code == 401
    assert gateway(world.broker, cookie).status_code == 401


def audit_events(broker: Broker, event: str) -> list[dict[str, Any]]:
    lines = Path(broker.settings.audit.path).read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc["eventName"] == event]


def test_switching_role_is_audited_issued_and_refused(world: ConsoleWorld) -> None:
    """SwitchRole writes an audit line for the new session; a switch the trust policy refuses
    writes a refused line and issues nothing."""
    cookie = sign_in(world, signin_token(world.broker, world.assume(name="switcher")))
    page = console(world.broker, cookie)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    before = len(audit_events(world.broker, "SwitchRole"))
    with browser(world.broker) as client:
        ok = client.post("/console/switch-role", data={
            "csrf": csrf, "role_arn": world.chained_arn, "session_name": "switched"},
            headers={"Cookie": f"{SESSION}={cookie}"})
        assert ok.status_code == 303
        new_cookie = set_cookies(ok)[SESSION].value
        new_page = console(world.broker, new_cookie)
        new_csrf = new_page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # The chained role does not trust its own sessions: refused.
        no = client.post("/console/switch-role", data={
            "csrf": new_csrf, "role_arn": world.chained_arn, "session_name": "again"},
            headers={"Cookie": f"{SESSION}={new_cookie}"})
        assert no.status_code == 403
    events = audit_events(world.broker, "SwitchRole")[before:]
    assert [e.get("errorCode") for e in events] == [None, "AccessDenied"]
    issued = events[0]["additionalEventData"]
    assert issued["IssuedTo"].endswith(f"{world.chained_arn.rsplit('/', 1)[1]}/switched")
    assert issued["IssuedAccessKeyId"].startswith("ASIA")
    assert events[0]["userIdentity"]["arn"].endswith("/switcher")
    assert "additionalEventData" not in events[1]  # nothing issued


def test_a_session_revoked_for_the_console_cannot_switch_role(world: ConsoleWorld) -> None:
    """Out of standing (a Deny of signin:UseConsole alone, which leaves sts:AssumeRole
    allowed), the session cannot escape into a fresh one by switching role; the control is the
    same switch before the deny."""
    iam = world.broker.client("iam")
    role = world.role_arn.rsplit("/", 1)[1]

    def switch(cookie: str, name: str) -> httpx.Response:
        page = console(world.broker, cookie)
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        with browser(world.broker) as client:
            return client.post("/console/switch-role", data={
                "csrf": csrf, "role_arn": world.chained_arn, "session_name": name},
                headers={"Cookie": f"{SESSION}={cookie}"})

    assert switch(sign_in(world, signin_token(world.broker, world.assume())),
                  "control").status_code == 303
    cookie = sign_in(world, signin_token(world.broker, world.assume(name="escaper")))
    csrf = console(world.broker, cookie).text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    iam.put_role_policy(RoleName=role, PolicyName="no-console", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Action": "signin:UseConsole", "Resource": "*"}]}))
    with browser(world.broker) as client:
        refused = client.post("/console/switch-role", data={
            "csrf": csrf, "role_arn": world.chained_arn, "session_name": "escaped"},
            headers={"Cookie": f"{SESSION}={cookie}"})
    assert refused.status_code == 403 and SESSION not in set_cookies(refused)


def test_a_forwarded_proto_from_an_untrusted_client_is_not_https(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """aws:SecureTransport for the console's decisions comes from the scheme uvicorn set, which
    believes X-Forwarded-Proto only from server.trusted_proxies: a client claiming https over
    plain http is not believed (the control: without the deny the same request passes)."""
    b = start_broker(tmp_path_factory.mktemp("untrusted"),
                     env=console_env(BROKER_SERVER_TRUSTED_PROXIES="10.9.9.9"))
    try:
        world = ConsoleWorld.make(b)
        cookie = sign_in(world, signin_token(b, world.assume()))
        spoofed = {"Cookie": f"{SESSION}={cookie}", "X-Forwarded-Proto": "https"}
        with browser(b) as client:
            assert client.get("/console", headers=spoofed).status_code == 200  # the control
        b.client("iam").put_role_policy(
            RoleName=world.role_arn.rsplit("/", 1)[1], PolicyName="tls-only",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Action": "*", "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        with browser(b) as client:
            assert client.get("/console", headers=spoofed).status_code == 401
    finally:
        b.stop()
