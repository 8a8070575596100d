"""examples/custom_identity_broker, run as an administrator would run it: its own process, a
clean environment holding only its IAM user's keys, a users file made with its own
``hash-password``. The sign-in URL it prints is followed by a browser (httpx, following
redirects and keeping cookies) into the broker's console — AWS's "Enabling custom identity
broker access to the AWS console", end to end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import lxml.html
import pytest

from tests.e2e.support import ROOT, clean_env
from tests.helpers import Broker, Creds, start_broker

PROGRAM = ROOT / "examples" / "custom_identity_broker" / "broker_app.py"
PORTAL = "https://portal.example.com/"  # the program's own sign-in page, an allowed Issuer
REFUSED = "Sign-in refused: unknown user or wrong password."
PASSWORDS = {"alice": "alice: correct horse", "bob": "bob: battery staple"}
ISSUING = ("GetFederationToken", "AssumeRole")


@dataclass(frozen=True)
class World:
    broker: Broker
    program: Creds  # the program's own IAM user's keys
    program_arn: str
    role_arn: str
    users: Path


def run(*args: str, stdin: str = "", creds: Creds | None = None,
        ) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    if creds is not None:
        env.update(AWS_ACCESS_KEY_ID=creds.access_key_id,
                   AWS_SECRET_ACCESS_KEY=creds.secret_access_key)
    return subprocess.run([sys.executable, str(PROGRAM), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def password_hash(password: str) -> str:
    done = run("hash-password", "--password-stdin", stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    broker = start_broker(tmp_path_factory.mktemp("broker"),
                          env={"BROKER_SIGNIN_DESTINATIONS": PORTAL})
    try:
        account = broker.account_id
        name, program = broker.new_user(name="custom-identity-broker")
        program_arn = f"arn:aws:iam::{account}:user/{name}"
        iam = broker.client("iam")
        role_arn = iam.create_role(
            RoleName="ConsoleOperator", MaxSessionDuration=7200,
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": program_arn},
                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        iam.put_user_policy(UserName=name, PolicyName="broker", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:GetFederationToken",
                 "Resource": f"arn:aws:sts::{account}:federated-user/*"},
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn},
                {"Effect": "Allow", "Action": ["iam:Get*", "iam:List*"], "Resource": "*"}]}))
        users = tmp_path_factory.mktemp("program") / "users.json"
        users.write_text(json.dumps({
            "alice": {"password": password_hash(PASSWORDS["alice"]), "federated": {"policy": {
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "iam:List*", "Resource": "*"}]}}},
            "bob": {"password": password_hash(PASSWORDS["bob"]), "role_arn": role_arn},
        }))
        yield World(broker, program, program_arn, role_arn, users)
    finally:
        broker.stop()


def sign_in(world: World, user: str, password: str | None = None,
            *extra: str) -> subprocess.CompletedProcess[str]:
    return run("sign-in", "--users", str(world.users), "--broker", world.broker.url,
               "--user", user, "--password-stdin", *extra,
               stdin=(PASSWORDS[user] if password is None else password) + "\n",
               creds=world.program)


def signin_url(world: World, user: str, *extra: str) -> str:
    done = sign_in(world, user, None, *extra)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith(f"{world.broker.url}/federation?Action=login&"), url
    assert PASSWORDS[user] not in done.stdout + done.stderr
    return url


def follow(url: str) -> httpx.Response:
    """A fresh browser opening the link: redirects followed, cookies kept."""
    with httpx.Client(follow_redirects=True, timeout=20) as browser:
        return browser.get(url)


def console(response: httpx.Response) -> dict[str, str]:
    """What the console page says: who is signed in, the credentials, the expiry."""
    assert response.status_code == 200, response.text
    assert urlsplit(str(response.url)).path == "/console"
    doc = lxml.html.fromstring(response.text)
    arn = doc.xpath('//dt[.="Signed in as"]/following-sibling::dd[1]/code/text()')
    shell = doc.get_element_by_id("exports").text_content()
    exports = dict(re.findall(r"export (\w+)=(\S+)", shell))
    expires = doc.get_element_by_id("expires").get("data-expires-at")
    return {"arn": arn[0], "expires_at": expires, **exports}


def audited(world: World) -> list[dict[str, Any]]:
    lines = Path(world.broker.settings.audit.path).read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc["eventName"] in ISSUING]


def issued_to(event: dict[str, Any]) -> str | None:
    """The identity an audit line says credentials were issued to (None: none were)."""
    if "errorCode" in event:
        return None
    answer = event["responseElements"]
    user = answer.get("federatedUser") or answer.get("assumedRoleUser")
    return str(user["arn"])


def caller_arn(world: World, page: dict[str, str]) -> str:
    sts = world.broker.client("sts", Creds(page["AWS_ACCESS_KEY_ID"],
                                           page["AWS_SECRET_ACCESS_KEY"],
                                           page["AWS_SESSION_TOKEN"]))
    arn: str = sts.get_caller_identity()["Arn"]
    return arn


# -- GetFederationToken: a federated user in the console ----------------------------------------

def test_a_person_signs_in_to_the_console_as_a_federated_user(world: World) -> None:
    before = len(audited(world))
    url = signin_url(world, "alice")
    assert "Issuer" not in parse_qs(urlsplit(url).query)
    page = console(follow(url))
    federated = f"arn:aws:sts::{world.broker.account_id}:federated-user/alice"
    assert page["arn"] == federated
    assert caller_arn(world, page) == federated  # the credentials on the page work
    # The credentials were asked for with the program's keys, for alice, once.
    [event] = audited(world)[before:]
    assert (event["eventName"], event["userIdentity"]["arn"], issued_to(event)) == (
        "GetFederationToken", world.program_arn, federated)


def test_the_sign_in_url_works_once(world: World) -> None:
    url = signin_url(world, "alice")
    assert console(follow(url))["arn"].endswith(":federated-user/alice")
    again = follow(url)
    assert again.status_code == 400
    assert "InvalidSigninToken" in again.text
    assert urlsplit(str(again.url)).path == "/federation"  # not let into the console
    assert "Signed in as" not in again.text


# -- AssumeRole: a role session in the console ---------------------------------------------------

def test_a_role_user_lands_in_the_console_with_the_assumed_role(world: World) -> None:
    page = console(follow(signin_url(world, "bob")))
    assumed = f"arn:aws:sts::{world.broker.account_id}:assumed-role/ConsoleOperator/bob"
    assert page["arn"] == assumed
    assert caller_arn(world, page) == assumed
    assert 3500 <= int(page["expires_at"]) - time.time() <= 3600  # the role session's hour


def test_session_duration_makes_the_console_session_longer_for_a_role(world: World) -> None:
    page = console(follow(signin_url(world, "bob", "--session-duration", "7200")))
    assert page["arn"].endswith(":assumed-role/ConsoleOperator/bob")
    assert 7100 <= int(page["expires_at"]) - time.time() <= 7200


# -- Issuer: a link back to the program, only if the administrator allowed it -------------------

def test_an_allowed_issuer_becomes_the_console_s_link_back(world: World) -> None:
    page = follow(signin_url(world, "alice", "--issuer", PORTAL + "signin"))
    console(page)
    links = lxml.html.fromstring(page.text).xpath("//a[.='Back to where you signed in']/@href")
    assert links == [PORTAL + "signin"]


def test_an_issuer_the_administrator_did_not_allow_is_refused(world: World) -> None:
    refused = follow(signin_url(world, "alice", "--issuer", "https://evil.example/signin"))
    assert refused.status_code == 400
    assert "The Issuer is not an allowed destination" in refused.text
    assert "Signed in as" not in refused.text


# -- Refusals: nothing reaches the broker --------------------------------------------------------

@pytest.mark.parametrize(("user", "password"), [
    ("alice", "alice: correct horse!"),  # wrong password
    ("alice", ""),
    ("bob", PASSWORDS["alice"]),  # someone else's password
    ("mallory", PASSWORDS["alice"]),  # no such user
])
def test_a_wrong_password_or_unknown_user_is_refused_without_calling_the_broker(
        world: World, user: str, password: str) -> None:
    before = len(audited(world))
    refused = sign_in(world, user, password)
    assert (refused.returncode, refused.stdout, refused.stderr.strip()) == (1, "", REFUSED)
    assert audited(world)[before:] == []  # the broker issued and refused nothing
    # The control: the right password, the same way, does reach the broker.
    if user in PASSWORDS:
        assert sign_in(world, user).returncode == 0
        [event] = audited(world)[before:]
        assert (issued_to(event) or "<refused>").endswith(f"/{user}")
