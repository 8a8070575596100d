"""The access portal's e-mailed invitations and its session length (``sso.*`` settings):
``broker sso reset-password`` run as a process against the data directory with
``sso.smtp_url`` set hands a real SMTP server (aiosmtpd) an invitation, whose link, followed
with httpx, sets the password and goes on to MFA registration and the portal; a portal session
ends after ``sso.session_hours``. The attacks (the link used twice, expired, of another
instance, tampered; a mail server that is down or refuses) each beside the honest control."""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from aiosmtpd.controller import Controller

from broker.identitycenter.directory import Directory
from broker.identitycenter.instances import Instance
from tests.e2e.support import clean_env
from tests.helpers import Broker, free_port, start_broker
from tests.integration.test_portal import (
    NEW_PASSWORD,
    form_of,
    password_step,
    refused,
    seed_of,
)
from tests.sso_world import MovableClock

SESSION_HOURS = 2
WEEK = 7 * 24 * 3600
LINK = re.compile(r"http://\S+/invitation\?token=\S+")


class Inbox:
    """aiosmtpd's handler: keeps every message; refuses recipients at ``refuse.example``."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.endswith("@refuse.example"):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@dataclass
class World:
    broker: Broker
    clock: MovableClock
    inbox: Inbox
    smtp_url: str
    instance: Instance
    other: Instance  # another account's instance
    directory: Directory
    made: list[str] = field(default_factory=list)

    @property
    def start(self) -> str:
        return f"/start/{self.instance.identity_store_id}"

    def user(self, *, instance: Instance | None = None, email_address: str | None = "",
             ) -> str:
        instance = instance or self.instance
        name = f"invited-{len(self.made)}-{instance.identity_store_id[-4:]}"
        self.made.append(name)
        attributes: dict[str, Any] = {"UserName": name, "DisplayName": name.title(),
                                      "Name": {"GivenName": "Ivy", "FamilyName": "Invited"}}
        if email_address is not None:
            attributes["Emails"] = [{"Value": email_address or f"{name}@example.com",
                                     "Primary": True}]
        self.broker.server.call(self.directory.create_user(instance, attributes, "test"))
        return name

    def reset(self, name: str, *, instance: Instance | None = None,
              smtp_url: str | None = None) -> subprocess.CompletedProcess[str]:
        """``broker sso reset-password --json`` in a process of its own."""
        settings = self.broker.settings
        store = (instance or self.instance).identity_store_id
        return subprocess.run(
            [sys.executable, "-m", "broker", "sso", "reset-password", "--data-dir",
             str(settings.data_dir), "--identity-store-id", store, "--user-name", name,
             "--json"],
            env=clean_env(BROKER_AUDIT_SINK="file",
                          BROKER_AUDIT_PATH=str(settings.data_dir / "audit.log"),
                          BROKER_SERVER_PUBLIC_URL=settings.public_url,
                          BROKER_SSO_SMTP_URL=smtp_url or self.smtp_url,
                          BROKER_SSO_SMTP_FROM="Access portal <portal@broker.example>"),
            capture_output=True, text=True, timeout=120, check=False)

    def invite(self, name: str, *, instance: Instance | None = None) -> str:
        """The link of the invitation the command e-mails (checked against what it says)."""
        before = len(self.inbox.messages)
        done = self.reset(name, instance=instance)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"invited": f"{name}@example.com"}
        assert len(self.inbox.messages) == before + 1
        message = self.inbox.messages[-1]
        assert message["To"] == f"{name}@example.com"
        assert message["From"] == "Access portal <portal@broker.example>"
        assert message["Subject"] == "Invitation to join AWS IAM Identity Center"
        body = message.get_content()
        assert name in body
        found = LINK.findall(body)
        assert len(found) == 1, body
        return str(found[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("invitations"), clock=clock,
                          env={"BROKER_SSO_SESSION_HOURS": str(SESSION_HOURS)})
    try:
        instances = []
        for _ in range(2):
            _, root = broker.new_account()
            sso = broker.client("sso-admin", root)
            arn = sso.create_instance(Name="invitations")["InstanceArn"]
            store = sso.describe_instance(InstanceArn=arn)["IdentityStoreId"]
            found = broker.server.call(broker.runtime.portal.instances.by_store(store))
            assert found is not None
            instances.append(found)
        yield World(broker, clock, inbox, f"smtp://127.0.0.1:{port}", instances[0],
                    instances[1], Directory(broker.runtime.store, broker.runtime.clock))
    finally:
        broker.stop()
        smtp.stop()


def browser(world: World) -> httpx.Client:
    return httpx.Client(base_url=world.broker.url, timeout=30)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def accept(http: httpx.Client, world: World, link: str,
           password: str = NEW_PASSWORD) -> httpx.Response:
    """The link's page, then the new password: the page that follows."""
    page = http.get(path_of(link))
    assert page.status_code == 200, page.text
    assert "Accept your invitation" in page.text
    action, fields = form_of(page, "/invitation")
    return http.post(action, data={**fields, "new_password": password,
                                   "confirm_password": password})


def enrol(http: httpx.Client, world: World, enrolling: httpx.Response) -> pyotp.TOTP:
    assert "Register an MFA device" in enrolling.text, enrolling.text
    totp = pyotp.TOTP(seed_of(enrolling))
    action, fields = form_of(enrolling, "/enrol")
    done = http.post(action, data={**fields, "code": totp.now()})
    assert done.status_code == 303 and done.headers["location"] == world.start, done.text
    return totp


def signed_in(http: httpx.Client, world: World) -> bool:
    return "Signed in as" in http.get(world.start).text


# -- the honest path --------------------------------------------------------------------------

def test_the_invitation_link_sets_the_password_then_mfa_then_the_portal(world: World) -> None:
    name = world.user()
    link = world.invite(name)
    assert link.startswith(f"{world.broker.settings.public_url}{world.start}/invitation?")
    with browser(world) as http:
        page = http.get(path_of(link))
        # The same fields, rules and autocomplete tokens as the forced change.
        assert 'autocomplete="new-password"' in page.text
        assert 'autocomplete="username"' in page.text and name in page.text
        action, fields = form_of(page, "/invitation")
        refused(http.post(action, data={**fields, "new_password": "short",
                                        "confirm_password": "short"}), 400,
                "Password should meet")
        refused(http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                        "confirm_password": NEW_PASSWORD + "x"}), 400,
                "differ")
        # A refused password uses up nothing: the same form, honest, goes on.
        enrolling = http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                            "confirm_password": NEW_PASSWORD})
        totp = enrol(http, world, enrolling)
        assert signed_in(http, world)
        # The password chosen signs in again, with the device registered.
        http.cookies.clear()
        mfa = password_step(http, world.start, name, NEW_PASSWORD)
        assert "Multi-factor authentication" in mfa.text, mfa.text
        action, fields = form_of(mfa, "/mfa")
        done = http.post(action, data={**fields, "code": totp.at(
            world.clock.now().timestamp(), counter_offset=1)})
        assert done.status_code == 303, done.text
        assert signed_in(http, world)


def test_an_invitation_needs_an_address_and_a_mail_server_that_takes_it(world: World) -> None:
    nobody = world.user(email_address=None)
    done = world.reset(nobody)
    assert done.returncode == 2 and "no e-mail address" in done.stderr, done.stderr
    # The mail server down, or refusing the address: a clear error, and no invitation.
    name = world.user()
    down = world.reset(name, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    assert down.returncode == 2 and "could not send" in down.stderr, down.stderr
    refusing = world.user(email_address="someone@refuse.example")
    said_no = world.reset(refusing)
    assert said_no.returncode == 2 and "refused the address" in said_no.stderr, said_no.stderr
    portal = world.broker.runtime.portal
    for who in (name, refusing):
        user = world.broker.server.call(world.directory.user_by_name(
            world.instance.account_id, world.instance.identity_store_id, who))
        assert user is not None
        credential = world.broker.server.call(portal.credential(world.instance, user.user_id))
        assert credential.invitation is None and credential.password_hash is None
    # The control: the same user, the server up.
    with browser(world) as http:
        enrol(http, world, accept(http, world, world.invite(name)))


def test_a_failed_invitation_leaves_the_password_as_it_was(world: World) -> None:
    name = world.user()
    with browser(world) as http:
        enrol(http, world, accept(http, world, world.invite(name)))
        down = world.reset(name, smtp_url=f"smtp://127.0.0.1:{free_port()}")
        assert down.returncode == 2, down.stderr
        http.cookies.clear()
        mfa = password_step(http, world.start, name, NEW_PASSWORD)
        assert "Multi-factor authentication" in mfa.text, mfa.text
        # The control: a sent invitation replaces the password.
        world.invite(name)
        http.cookies.clear()
        refused(password_step(http, world.start, name, NEW_PASSWORD), 403, "incorrect")


# -- attacks, each beside its control ---------------------------------------------------------

def test_a_link_works_once(world: World) -> None:
    name = world.user()
    link = world.invite(name)
    with browser(world) as http, browser(world) as second:
        page = http.get(path_of(link))
        action, fields = form_of(page, "/invitation")
        also = second.get(path_of(link))  # opened twice before it is used: both pages show
        assert also.status_code == 200
        other_action, other_fields = form_of(also, "/invitation")
        enrol(http, world, http.post(action, data={
            **fields, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}))
        refused(second.post(other_action, data={
            **other_fields, "new_password": "Other-password-2!",
            "confirm_password": "Other-password-2!"}), 403, "invitation link is not valid")
        refused(second.get(path_of(link)), 403, "invitation link is not valid")
        refused(http.get(path_of(link)), 403, "invitation link is not valid")


def test_a_newer_invitation_replaces_the_older(world: World) -> None:
    name = world.user()
    first = world.invite(name)
    second = world.invite(name)
    with browser(world) as http:
        refused(http.get(path_of(first)), 403, "invitation link is not valid")
        enrol(http, world, accept(http, world, second))


def test_an_expired_link_is_refused(world: World) -> None:
    name = world.user()
    link = world.invite(name)  # made on the real clock, by the command's process
    with browser(world) as http:
        with world.clock.later(WEEK + 60):
            refused(http.get(path_of(link)), 403, "invitation link is not valid")
        with world.clock.later(WEEK - 60):  # the control: a minute before
            enrolling = accept(http, world, link)
        enrol(http, world, enrolling)


def test_a_link_of_another_instance_or_tampered_is_refused(world: World) -> None:
    name = world.user()
    link = world.invite(name)
    theirs = world.user(instance=world.other)
    their_link = world.invite(theirs, instance=world.other)
    token = path_of(link).split("token=", 1)[1]
    their_token = path_of(their_link).split("token=", 1)[1]
    other_start = f"/start/{world.other.identity_store_id}"
    mine_user, mine_secret = token.split(".", 1)
    their_user, their_secret = their_token.split(".", 1)
    flipped = mine_secret[:-1] + ("A" if mine_secret[-1] != "A" else "B")
    with browser(world) as http:
        for path in (
                f"{other_start}/invitation?token={token}",  # my token, their portal
                f"{world.start}/invitation?token={their_token}",  # theirs, my portal
                f"{world.start}/invitation?token={mine_user}.{their_secret}",
                f"{other_start}/invitation?token={their_user}.{mine_secret}",
                f"{world.start}/invitation?token={mine_user}.{flipped}",
                f"{world.start}/invitation?token={mine_user}",
                f"{world.start}/invitation?token=",
                f"{world.start}/invitation"):
            refused(http.get(path), 403, "invitation link is not valid")
        refused(http.get(f"/start/d-0000000000/invitation?token={token}"), 404,
                "no access portal")
        # A tampered token in the form is refused as in the link.
        page = http.get(path_of(link))
        action, fields = form_of(page, "/invitation")
        refused(http.post(action, data={**fields, "token": f"{mine_user}.{flipped}",
                                        "new_password": NEW_PASSWORD,
                                        "confirm_password": NEW_PASSWORD}), 403,
                "invitation link is not valid")
        # And a form without this browser's CSRF token.
        with browser(world) as stranger:
            refused(stranger.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                                "confirm_password": NEW_PASSWORD}), 403,
                    "CSRF")
        # The controls: each link, untouched, in its own portal.
        enrol(http, world, accept(http, world, link))
    with browser(world) as http:
        page = http.get(path_of(their_link))
        assert page.status_code == 200 and theirs in page.text


def test_a_portal_session_lasts_the_configured_hours(world: World) -> None:
    assert world.broker.runtime.portal.session_seconds == SESSION_HOURS * 3600
    name = world.user()
    with browser(world) as http:
        enrol(http, world, accept(http, world, world.invite(name)))
        cookie = http.cookies.get("broker-portal-session")
        assert cookie is not None
        with world.clock.later(SESSION_HOURS * 3600 - 60):  # the control: a minute before
            assert signed_in(http, world)
        with world.clock.later(SESSION_HOURS * 3600 + 1):
            assert not signed_in(http, world)
        assert not signed_in(http, world)  # gone for good
