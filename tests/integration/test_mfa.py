"""Virtual MFA devices through boto3, and MFA in STS and policy: every attack beside an honest
control built by the same fixture. Codes are computed by pyotp from the seed the broker hands
out, as an authenticator app would, at the broker's (fixed, advanced by hand) time."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.credentials
import botocore.exceptions
import botocore.session
import httpx
import pyotp
import pytest

from broker.clock import FixedClock
from tests.helpers import Broker, creds_of, signed_request, start_broker

ClientError = botocore.exceptions.ClientError
STEP = 30
REUSED = "MultiFactorAuthentication failed with invalid MFA one time pass code."
NOT_ASSOCIATED = ("MultiFactorAuthentication failed, unable to validate MFA code. Please "
                  "verify your MFA serial number is valid and associated with this user.")


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    now = int(datetime.now(UTC).timestamp())
    return FixedClock(datetime.fromtimestamp(now - now % STEP + 1, UTC))  # a step's start


@pytest.fixture(autouse=True)
def near_real_time(clock: FixedClock) -> None:
    """Each test starts at the start of the current step: within SigV4's five minutes of the
    time botocore signs with, whatever the previous test advanced (each test makes its own
    devices, so no code it uses was spent at an earlier, later-looking time)."""
    now = int(datetime.now(UTC).timestamp())
    target = datetime.fromtimestamp(now - now % STEP + 1, UTC)
    clock.advance((target - clock.now()).total_seconds())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("mfa"), clock=clock)
    yield b
    b.stop()


class Person:
    """An IAM user with an access key, allowed to manage their own MFA device and to assume
    roles, and (once enabled) a virtual device."""

    def __init__(self, broker: Broker, clock: FixedClock) -> None:
        self.broker, self.clock = broker, clock
        self.name, self.creds = broker.new_user(name=f"mfa-{uuid.uuid4().hex[:8]}")
        self.iam = broker.client("iam", self.creds)
        broker.client("iam").put_user_policy(
            UserName=self.name, PolicyName="self", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["iam:*VirtualMFADevice", "iam:*MFADevice*",
                                                   "iam:ListMFADevices"],
                     "Resource": [f"arn:aws:iam::{broker.account_id}:mfa/{self.name}",
                                  f"arn:aws:iam::{broker.account_id}:user/{self.name}"]},
                    {"Effect": "Allow", "Action": ["iam:ListVirtualMFADevices", "iam:GetUser",
                                                   "sts:AssumeRole"], "Resource": "*"}]}))
        self.serial = ""
        self.totp: pyotp.TOTP | None = None

    def create(self) -> dict[str, Any]:
        device: dict[str, Any] = self.iam.create_virtual_mfa_device(
            VirtualMFADeviceName=self.name)["VirtualMFADevice"]
        self.serial = device["SerialNumber"]
        self.totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
        return device

    def code(self, steps: int = 0) -> str:
        assert self.totp is not None
        return self.totp.at(self.clock.now(), counter_offset=steps)

    def enable(self) -> None:
        self.create()
        self.iam.enable_mfa_device(UserName=self.name, SerialNumber=self.serial,
                                   AuthenticationCode1=self.code(),
                                   AuthenticationCode2=self.code(1))
        self.clock.advance(2 * STEP)  # past the two codes enabling spent

    def sts(self) -> Any:
        return self.broker.client("sts", self.creds)


def test_a_virtual_device_is_made_enabled_listed_and_removed(broker: Broker,
                                                             clock: FixedClock) -> None:
    person = Person(broker, clock)
    device = person.create()
    assert device["SerialNumber"] == f"arn:aws:iam::{broker.account_id}:mfa/{person.name}"
    assert len(device["Base32StringSeed"]) == 64
    assert device["QRCodePNG"].startswith(b"\x89PNG\r\n\x1a\n")
    unassigned = person.iam.list_virtual_mfa_devices(AssignmentStatus="Unassigned")
    assert person.serial in [d["SerialNumber"] for d in unassigned["VirtualMFADevices"]]
    assert person.iam.list_mfa_devices()["MFADevices"] == []
    person.iam.enable_mfa_device(UserName=person.name, SerialNumber=person.serial,
                                 AuthenticationCode1=person.code(),
                                 AuthenticationCode2=person.code(1))
    listed = person.iam.list_mfa_devices()["MFADevices"]
    assert [(d["UserName"], d["SerialNumber"]) for d in listed] == [(person.name, person.serial)]
    assigned = person.iam.list_virtual_mfa_devices(AssignmentStatus="Assigned")
    mine = [d for d in assigned["VirtualMFADevices"] if d["SerialNumber"] == person.serial]
    assert mine and mine[0]["User"]["UserName"] == person.name and mine[0]["EnableDate"]
    got = person.iam.get_mfa_device(SerialNumber=person.serial)
    assert got["UserName"] == person.name
    # In use: neither enabled again nor deleted, and its user cannot be deleted.
    root_iam = broker.client("iam")
    with pytest.raises(ClientError) as info:
        person.iam.delete_virtual_mfa_device(SerialNumber=person.serial)
    assert error_of(info)[0::2] == ("DeleteConflict", 409)
    root_iam.delete_access_key(UserName=person.name, AccessKeyId=person.creds.access_key_id)
    root_iam.delete_user_policy(UserName=person.name, PolicyName="self")
    with pytest.raises(ClientError) as info:
        root_iam.delete_user(UserName=person.name)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must remove MFA device first.", 409)
    root_iam.deactivate_mfa_device(UserName=person.name, SerialNumber=person.serial)
    root_iam.delete_virtual_mfa_device(SerialNumber=person.serial)
    root_iam.delete_user(UserName=person.name)  # the control: nothing holds it now


def test_enabling_needs_two_consecutive_codes_of_the_device(broker: Broker,
                                                            clock: FixedClock) -> None:
    person = Person(broker, clock)
    person.create()
    other = Person(broker, clock)
    other.create()
    for code1, code2 in ((person.code(1), person.code()),      # out of order
                         (person.code(), person.code(2)),      # not consecutive
                         (other.code(), other.code(1)),        # another device's
                         (person.code(-6), person.code(-5))):  # three minutes old
        with pytest.raises(ClientError) as info:
            person.iam.enable_mfa_device(UserName=person.name, SerialNumber=person.serial,
                                         AuthenticationCode1=code1, AuthenticationCode2=code2)
        assert error_of(info) == ("InvalidAuthenticationCode",
                                  "Authentication code for device is not valid.", 403)
    person.iam.enable_mfa_device(UserName=person.name, SerialNumber=person.serial,
                                 AuthenticationCode1=person.code(),
                                 AuthenticationCode2=person.code(1))
    with pytest.raises(ClientError) as info:  # and once only
        other.iam.enable_mfa_device(UserName=other.name, SerialNumber=person.serial,
                                    AuthenticationCode1=person.code(),
                                    AuthenticationCode2=person.code(1))
    assert error_of(info)[0] in ("AccessDenied", "EntityAlreadyExists")
    clock.advance(2 * STEP)


def test_get_session_token_with_mfa_opens_what_requires_mfa(broker: Broker,
                                                            clock: FixedClock) -> None:
    """AWS's "deny everything but MFA self-management unless aws:MultiFactorAuthPresent"
    policy, verbatim in its essentials: credentials from GetSessionToken with a code pass it;
    the same user's key, and session credentials without a code, do not."""
    person = Person(broker, clock)
    person.enable()
    broker.client("iam").put_user_policy(
        UserName=person.name, PolicyName="force-mfa", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Sid": "AllowViewAccountInfo", "Effect": "Allow",
                 "Action": ["iam:GetUser", "iam:ListUsers"], "Resource": "*"},
                {"Sid": "DenyAllExceptListedIfNoMFA", "Effect": "Deny",
                 "NotAction": ["iam:CreateVirtualMFADevice", "iam:EnableMFADevice",
                               "iam:GetUser", "iam:ListMFADevices",
                               "iam:ListVirtualMFADevices", "iam:ResyncMFADevice",
                               "sts:GetSessionToken"],
                 "Resource": "*",
                 "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}}]}))
    with pytest.raises(ClientError) as info:
        person.iam.list_users()
    assert error_of(info)[0] == "AccessDenied"
    plain = creds_of(person.sts().get_session_token())
    with pytest.raises(ClientError) as info:  # GetSessionToken without MFA cannot call IAM
        broker.client("iam", plain).list_users()
    assert error_of(info)[0] == "AccessDenied"
    with_mfa = creds_of(person.sts().get_session_token(SerialNumber=person.serial,
                                                       TokenCode=person.code()))
    assert "Users" in broker.client("iam", with_mfa).list_users()  # the control


def test_a_code_opens_once_in_sequence_and_at_once(broker: Broker, clock: FixedClock) -> None:
    person = Person(broker, clock)
    person.enable()
    code = person.code()
    person.sts().get_session_token(SerialNumber=person.serial, TokenCode=code)
    with pytest.raises(ClientError) as info:
        person.sts().get_session_token(SerialNumber=person.serial, TokenCode=code)
    assert error_of(info) == ("AccessDenied", REUSED, 403)
    # Ten requests with the next step's code at the same moment: exactly one is let in.
    clock.advance(STEP)
    code, results = person.code(), []

    def attempt() -> None:
        try:
            person.sts().get_session_token(SerialNumber=person.serial, TokenCode=code)
            results.append("issued")
        except ClientError as exc:
            results.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["AccessDenied"] * 9 + ["issued"]


def test_a_code_of_another_device_or_for_another_user_is_refused(broker: Broker,
                                                                 clock: FixedClock) -> None:
    alice, bob = Person(broker, clock), Person(broker, clock)
    alice.enable()
    bob.enable()
    cases = (
        (alice, bob.serial, bob.code(), NOT_ASSOCIATED),           # bob's device, bob's code
        (alice, alice.serial, bob.code(), REUSED),                 # bob's code, alice's device
        (alice, f"arn:aws:iam::{broker.account_id}:mfa/nobody", "123456", NOT_ASSOCIATED),
        (alice, alice.serial, "12345a", None),                     # not a code at all
    )
    for person, serial, code, message in cases:
        with pytest.raises(ClientError) as info:
            person.sts().get_session_token(SerialNumber=serial, TokenCode=code)
        code_, text, status = error_of(info)
        assert status in (400, 403) and code_ in ("AccessDenied", "ValidationError")
        if message is not None:
            assert text == message
    with pytest.raises(ClientError) as info:  # half of it
        alice.sts().get_session_token(SerialNumber=alice.serial)
    assert error_of(info)[1].startswith("MultiFactorAuthentication failed, must provide both")
    alice.sts().get_session_token(SerialNumber=alice.serial, TokenCode=alice.code())  # control


def test_a_role_that_requires_mfa_is_assumed_with_a_code(broker: Broker,
                                                        clock: FixedClock) -> None:
    person = Person(broker, clock)
    person.enable()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{person.name}"
    role = broker.client("iam").create_role(
        RoleName=f"needs-mfa-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}))["Role"]["Arn"]
    with pytest.raises(ClientError) as info:
        person.sts().assume_role(RoleArn=role, RoleSessionName="no-mfa")
    assert error_of(info)[0] == "AccessDenied"
    result = person.sts().assume_role(RoleArn=role, RoleSessionName="with-mfa",
                                      SerialNumber=person.serial, TokenCode=person.code())
    assert result["AssumedRoleUser"]["Arn"].endswith("/with-mfa")


def test_botocore_s_mfa_serial_profile_assumes_the_role(broker: Broker, clock: FixedClock,
                                                        tmp_path: Path) -> None:
    """A profile with role_arn, source_profile and mfa_serial, as the AWS CLI and every SDK
    read it: botocore's own AssumeRoleProvider asks for the code and sends it."""
    person = Person(broker, clock)
    person.enable()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{person.name}"
    role = broker.client("iam").create_role(
        RoleName=f"profile-mfa-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}))["Role"]["Arn"]
    config = tmp_path / "config"
    config.write_text(
        "[profile base]\n"
        f"aws_access_key_id = {person.creds.access_key_id}\n"
        f"aws_secret_access_key = {person.creds.secret_access_key}\n"
        f"endpoint_url = {broker.url}\nregion = us-east-1\n"
        "[profile admin]\n"
        f"role_arn = {role}\nsource_profile = base\nmfa_serial = {person.serial}\n"
        f"endpoint_url = {broker.url}\nregion = us-east-1\n")
    asked: list[str] = []

    def prompter(prompt: str) -> str:
        asked.append(prompt)
        return person.code()

    session = botocore.session.Session(profile="admin")
    session.set_config_variable("config_file", str(config))
    session.set_config_variable("credentials_file", str(tmp_path / "none"))
    # botocore's own provider, given the prompter the CLI would give it (the terminal's).
    resolver = session.get_component("credential_provider")
    resolver.remove("assume-role")
    resolver.insert_before("assume-role-with-web-identity", botocore.credentials.AssumeRoleProvider(
        load_config=lambda: session.full_config, client_creator=session.create_client,
        cache={}, profile_name="admin", prompter=prompter))
    identity = session.create_client("sts").get_caller_identity()
    assert identity["Arn"].startswith(role.replace(":iam:", ":sts:").replace(":role/",
                                                                             ":assumed-role/"))
    assert asked and person.serial in asked[0]


def test_devices_are_tagged_and_their_seed_is_sealed(broker: Broker, clock: FixedClock) -> None:
    person = Person(broker, clock)
    seed = person.iam.create_virtual_mfa_device(
        VirtualMFADeviceName=person.name,
        Tags=[{"Key": "team", "Value": "blue"}])["VirtualMFADevice"]["Base32StringSeed"]
    serial = f"arn:aws:iam::{broker.account_id}:mfa/{person.name}"
    person.iam.tag_mfa_device(SerialNumber=serial, Tags=[{"Key": "env", "Value": "prod"}])
    person.iam.untag_mfa_device(SerialNumber=serial, TagKeys=["team"])
    assert person.iam.list_mfa_device_tags(SerialNumber=serial)["Tags"] == [
        {"Key": "env", "Value": "prod"}]
    # The store keeps the seed sealed: neither the record nor its blob holds it.
    records = broker.server.call(broker.runtime.iam.mfa.listing(broker.account_id))
    mine = next(d for d in records if d.serial == serial)
    assert seed.decode() not in json.dumps(mine.record().data)
    assert seed not in base64.b64decode(mine.sealed_seed)
    with pytest.raises(ClientError) as info:  # someone else's device is not theirs to tag
        Person(broker, clock).iam.tag_mfa_device(SerialNumber=serial,
                                                 Tags=[{"Key": "x", "Value": "y"}])
    assert error_of(info)[0] == "AccessDenied"


def test_at_most_eight_devices_per_user(broker: Broker, clock: FixedClock) -> None:
    iam = broker.client("iam")
    name, _ = broker.new_user(name=f"many-{uuid.uuid4().hex[:6]}")
    for i in range(9):
        device = iam.create_virtual_mfa_device(
            VirtualMFADeviceName=f"{name}-{i}")["VirtualMFADevice"]
        totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
        codes = {"AuthenticationCode1": totp.at(clock.now()),
                 "AuthenticationCode2": totp.at(clock.now(), counter_offset=1)}
        if i < 8:
            iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"], **codes)
            continue
        with pytest.raises(ClientError) as info:
            iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"], **codes)
        assert error_of(info) == ("LimitExceeded",
                                  "Cannot exceed quota for MFADevicesPerUser: 8", 409)
    assert len(iam.list_mfa_devices(UserName=name)["MFADevices"]) == 8


def test_keyring_rotation_reseals_seeds_and_codes_still_open(broker: Broker,
                                                             clock: FixedClock) -> None:
    """Seeds are secrets like access-key secrets: `broker keys rotate` reseals them, so the
    old key can retire and the device still opens (the control: a code before rotation)."""
    person = Person(broker, clock)
    person.enable()
    person.sts().get_session_token(SerialNumber=person.serial, TokenCode=person.code())
    runtime = broker.runtime
    old = runtime.keyring.sealing.id

    async def rotate() -> tuple[int, int]:
        before = await runtime.iam.mfa.sealed_with(broker.account_id, old)
        runtime.keyring.rotate(runtime.clock)
        runtime.keyring.save()
        await runtime.iam.reseal_secrets()
        return before, await runtime.iam.mfa.sealed_with(broker.account_id, old)

    before, left = broker.server.call(rotate())
    assert before >= 1 and left == 0
    clock.advance(STEP)
    person.sts().get_session_token(SerialNumber=person.serial, TokenCode=person.code())


def test_a_name_too_long_for_a_serial_number_is_refused_and_nothing_is_kept(
        broker: Broker, clock: FixedClock) -> None:
    """The model bounds the name only below; a serial number is at most 256 characters in
    every other action. Such a name answered 500 (its QR code overflowed) after the device
    was stored, so asking again said it already existed. The control: a name that fits."""
    iam = broker.client("iam")
    name = "a" * 300
    for _ in range(2):
        with pytest.raises(ClientError) as info:
            iam.create_virtual_mfa_device(VirtualMFADeviceName=name)
        assert error_of(info)[0::2] == ("InvalidInput", 400)
    fits = "b" * (256 - len(f"arn:aws:iam::{broker.account_id}:mfa/"))
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=fits)["VirtualMFADevice"]
    assert len(device["SerialNumber"]) == 256
    iam.delete_virtual_mfa_device(SerialNumber=device["SerialNumber"])


def test_resync_follows_a_device_whose_clock_has_drifted(broker: Broker,
                                                         clock: FixedClock) -> None:
    """A device five minutes fast: its codes are refused until ResyncMFADevice, given two
    consecutive codes of it, learns the drift; then its next code opens (and the two
    resync codes do not)."""
    person = Person(broker, clock)
    person.enable()
    with pytest.raises(ClientError) as info:
        person.sts().get_session_token(SerialNumber=person.serial, TokenCode=person.code(10))
    assert error_of(info) == ("AccessDenied", REUSED, 403)
    person.iam.resync_mfa_device(UserName=person.name, SerialNumber=person.serial,
                                 AuthenticationCode1=person.code(10),
                                 AuthenticationCode2=person.code(11))
    with pytest.raises(ClientError):
        person.sts().get_session_token(SerialNumber=person.serial, TokenCode=person.code(11))
    person.sts().get_session_token(SerialNumber=person.serial, TokenCode=person.code(12))


def test_guessing_codes_locks_the_device_for_five_minutes(broker: Broker,
                                                          clock: FixedClock) -> None:
    """Five wrong codes within five minutes and the device takes no code, not even the right
    one, until the window ends; the control: another user's device is not locked, and the
    right code works again once the window is over."""
    person, other = Person(broker, clock), Person(broker, clock)
    person.enable()
    other.enable()
    right = person.code()
    wrong = next(c for c in (f"{n:06d}" for n in range(1_000_000))
                 if c not in {person.code(s) for s in (-1, 0, 1)})
    for _ in range(5):
        with pytest.raises(ClientError):
            person.sts().get_session_token(SerialNumber=person.serial, TokenCode=wrong)
    with pytest.raises(ClientError) as info:
        person.sts().get_session_token(SerialNumber=person.serial, TokenCode=right)
    assert error_of(info) == ("AccessDenied", REUSED, 403)
    other.sts().get_session_token(SerialNumber=other.serial, TokenCode=other.code())
    clock.advance(300)
    # Signed at the broker's time, five minutes on (botocore signs with the real clock).
    method, url, headers, body = signed_request(broker.url, {
        "Action": "GetSessionToken", "Version": "2011-06-15", "SerialNumber": person.serial,
        "TokenCode": person.code()}, person.creds, at=clock.now())
    answer = httpx.request(method, url, headers=headers, content=body)
    assert answer.status_code == 200, answer.text
