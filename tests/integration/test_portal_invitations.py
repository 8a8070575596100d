"""E-mailed invitations and the portal's session length (``sso.smtp_url``,
``sso.session_hours``): a real SMTP server (aiosmtpd) receives what ``broker sso
reset-password`` sends; the link sets the person's password once, then the first sign-in
goes on with a TOTP device. Each refusal beside the honest path that succeeds."""

from __future__ import annotations

import email
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import httpx
import pyotp
import pytest
from aiosmtpd.controller import Controller

from tests.e2e.support import BIN, clean_env
from tests.helpers import Broker, free_port, start_broker
from tests.integration.test_portal import form_of, seed_of
from tests.sso_world import MovableClock, Tenant, make_tenant

NEW_PASSWORD = "Invited-portal-7-Lantern!"
ERROR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class World:
    broker: Broker
    clock: MovableClock
    inbox: Inbox
    env: dict[str, str]
    tenant: Tenant


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    web = free_port()
    env = {"BROKER_SSO_SMTP_URL": f"smtp://127.0.0.1:{port}",
           "BROKER_SERVER_PUBLIC_URL": f"http://127.0.0.1:{web}",
           "BROKER_SSO_SMTP_FROM": "portal@broker.example.test",
           "BROKER_SSO_SESSION_HOURS": "2"}
    clock = MovableClock()
    data_dir = tmp_path_factory.mktemp("broker")
    broker = start_broker(data_dir, clock=clock, env=env, port=web)
    try:
        yield World(broker, clock, inbox, {**env, "BROKER_SERVER_DATA_DIR": str(data_dir)},
                    make_tenant(broker, "ReadOnly"))
    finally:
        broker.stop()
        controller.stop()


def invite(world: World, user_name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "broker"), "sso", "reset-password", "--data-dir", world.env[
            "BROKER_SERVER_DATA_DIR"], "--identity-store-id", world.tenant.identity_store_id,
         "--user-name", user_name, "--json"],
        env=clean_env(**world.env), capture_output=True, text=True, timeout=60)


def person(world: World, *, address: bool = True) -> str:
    name = f"invited-{uuid.uuid4().hex[:6]}"
    extra = {"Emails": [{"Value": f"{name}@example.test", "Primary": True}]} if address else {}
    world.broker.client("identitystore", world.tenant.root).create_user(
        IdentityStoreId=world.tenant.identity_store_id, UserName=name, DisplayName="Invited",
        Name={"GivenName": "I", "FamilyName": "Nvited"}, **extra)
    return name


def link_for(world: World, name: str) -> str:
    done = invite(world, name)
    assert done.returncode == 0, done.stderr
    assert f"{name}@example.test" in done.stdout
    message = world.inbox.messages[-1]
    assert message["To"] == f"{name}@example.test"
    body = message.get_payload(decode=True) if not message.is_multipart() else \
        message.get_payload(0).get_payload(decode=True)
    found = re.search(r"(http\S+)(/start/\S+/invitation\?token=\S+)", body.decode())
    assert found, body
    assert found.group(1) == world.broker.url  # the broker's public URL
    return found.group(2)


def refused(response: httpx.Response, text: str) -> None:
    assert response.status_code in (400, 403, 404), response.text
    assert text in response.text and ERROR_ID.search(response.text), response.text


def accept(http: httpx.Client, link: str) -> httpx.Response:
    page = http.get(link)
    assert page.status_code == 200, page.text
    action, fields = form_of(page, "/invitation")
    return http.post(action, data={**fields, "new_password": NEW_PASSWORD,
                                   "confirm_password": NEW_PASSWORD})


def test_an_invitation_sets_the_password_once_then_the_first_sign_in_goes_on(
        world: World) -> None:
    name = person(world)
    link = link_for(world, name)
    start = f"/start/{world.tenant.identity_store_id}"
    with httpx.Client(base_url=world.broker.url, timeout=30) as http:
        enrolling = accept(http, link)
        assert "Register an MFA device" in enrolling.text, enrolling.text
        action, fields = form_of(enrolling, "/enrol")
        done = http.post(action, data={**fields,
                                       "code": pyotp.TOTP(seed_of(enrolling)).now()})
        assert done.status_code == 303 and done.headers["location"] == start
        assert "Signed in as" in http.get(start).text
    # The same link again, in another browser: used up.
    with httpx.Client(base_url=world.broker.url, timeout=30) as other:
        refused(other.get(link), "not valid")


def test_a_tampered_or_misplaced_or_expired_link_is_refused(world: World) -> None:
    name = person(world)
    link = link_for(world, name)
    with httpx.Client(base_url=world.broker.url, timeout=30) as http:
        refused(http.get(link[:-3] + "AAA"), "not valid")
        other = make_tenant(world.broker, "Other")
        misplaced = link.replace(world.tenant.identity_store_id, other.identity_store_id)
        refused(http.get(misplaced), "not valid")
        with world.clock.later(8 * 24 * 3600):
            refused(http.get(link), "not valid")
        # The control: the link itself, in time, still opens.
        assert http.get(link).status_code == 200


def test_no_invitation_without_an_address(world: World) -> None:
    done = invite(world, person(world, address=False))
    assert done.returncode != 0 and "e-mail" in done.stderr.lower(), done.stderr


def test_a_portal_session_lasts_session_hours(world: World) -> None:
    name = person(world)
    link = link_for(world, name)
    start = f"/start/{world.tenant.identity_store_id}"
    with httpx.Client(base_url=world.broker.url, timeout=30) as http:
        enrolling = accept(http, link)
        action, fields = form_of(enrolling, "/enrol")
        http.post(action, data={**fields, "code": pyotp.TOTP(seed_of(enrolling)).now()})
        with world.clock.later(2 * 3600 - 60):  # the control: a minute before its end
            assert "Signed in as" in http.get(start).text
        with world.clock.later(2 * 3600 + 60):
            assert "Signed in as" not in http.get(start).text
