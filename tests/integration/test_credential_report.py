"""The credential report through boto3: AWS's CSV columns for the root user and every IAM user,
kept four hours; refusals in AWS's codes, each beside its control."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import botocore.exceptions
import httpx
import pyotp
import pytest

from broker.clock import FixedClock
from tests.helpers import Broker, Creds, signed_request, start_broker

ClientError = botocore.exceptions.ClientError
# AWS's columns, in AWS's order (IAM User Guide, "Getting credential reports").
AWS_COLUMNS = [
    "user", "arn", "user_creation_time", "password_enabled", "password_last_used",
    "password_last_changed", "password_next_rotation", "mfa_active", "access_key_1_active",
    "access_key_1_last_rotated", "access_key_1_last_used_date",
    "access_key_1_last_used_region", "access_key_1_last_used_service", "access_key_2_active",
    "access_key_2_last_rotated", "access_key_2_last_used_date",
    "access_key_2_last_used_region", "access_key_2_last_used_service", "cert_1_active",
    "cert_1_last_rotated", "cert_2_active", "cert_2_last_rotated",
]


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("report"), clock=clock)
    yield b
    b.stop()


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def rows(iam: object) -> dict[str, dict[str, str]]:
    report = iam.get_credential_report()  # type: ignore[attr-defined]
    assert report["ReportFormat"] == "text/csv"
    reader = csv.DictReader(io.StringIO(report["Content"].decode("utf-8")))
    assert reader.fieldnames == AWS_COLUMNS
    return {row["user"]: row for row in reader}


def test_the_report_lists_root_and_every_user_with_aws_s_columns(broker: Broker,
                                                                 clock: FixedClock) -> None:
    account, root = broker.new_account()
    iam = broker.client("iam", root)
    with pytest.raises(ClientError) as info:  # nothing generated yet
        iam.get_credential_report()
    assert error_of(info) == ("ReportNotPresent", 410)
    iam.update_account_password_policy(MinimumPasswordLength=12, MaxPasswordAge=90)
    plain = f"plain-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=plain)
    full = f"full-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=full)
    iam.create_login_profile(UserName=full, Password="A-long-enough-Passw0rd")
    first = iam.create_access_key(UserName=full)["AccessKey"]
    clock.advance(1)  # key 1 is the older key
    second = iam.create_access_key(UserName=full)["AccessKey"]
    iam.update_access_key(UserName=full, AccessKeyId=second["AccessKeyId"], Status="Inactive")
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=full)["VirtualMFADevice"]
    totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
    iam.enable_mfa_device(UserName=full, SerialNumber=device["SerialNumber"],
                          AuthenticationCode1=totp.at(clock.now()),
                          AuthenticationCode2=totp.at(clock.now(), counter_offset=1))
    # The first key is used once (last use is flushed to the store in the background).
    used = broker.client("sts", type(root)(first["AccessKeyId"], first["SecretAccessKey"]))
    used.get_caller_identity()
    broker.server.call(broker.runtime.last_used.flush())

    assert iam.generate_credential_report()["State"] == "COMPLETE"
    found = rows(iam)
    assert set(found) == {"<root_account>", plain, full}
    root_row = found["<root_account>"]
    assert root_row["arn"] == f"arn:aws:iam::{account}:root"
    assert root_row["password_enabled"] == "not_supported"
    assert root_row["access_key_1_active"] == "true"  # the root key broker.new_account made
    assert root_row["mfa_active"] == "false"
    assert found[plain]["password_enabled"] == "false"
    assert found[plain]["access_key_1_active"] == "false"
    assert found[plain]["password_last_changed"] == "N/A"
    row = found[full]
    assert row["arn"] == f"arn:aws:iam::{account}:user/{full}"
    assert row["password_enabled"] == "true" and row["mfa_active"] == "true"
    changed = datetime.fromisoformat(row["password_last_changed"])
    assert (datetime.fromisoformat(row["password_next_rotation"]) - changed).days == 90
    assert row["access_key_1_active"] == "true" and row["access_key_2_active"] == "false"
    assert row["access_key_1_last_used_service"] == "sts"
    assert row["access_key_1_last_used_region"] == "us-east-1"
    assert row["access_key_1_last_used_date"] != "N/A"
    assert row["access_key_2_last_used_date"] == "N/A"
    assert row["cert_1_active"] == "false"


def at_broker_time(broker: Broker, clock: FixedClock, creds: Creds, action: str) -> httpx.Response:
    """An IAM call signed at the broker's (advanced) time, by botocore's own signer."""
    method, url, headers, body = signed_request(
        broker.url, {"Action": action, "Version": "2010-05-08"}, creds, service="iam",
        at=clock.now())
    return httpx.request(method, url, headers=headers, content=body)


def test_a_report_is_kept_four_hours(broker: Broker, clock: FixedClock) -> None:
    _, root = broker.new_account()
    iam = broker.client("iam", root)
    iam.generate_credential_report()
    generated = iam.get_credential_report()["GeneratedTime"]
    name = f"late-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    try:
        clock.advance(3600)
        assert at_broker_time(broker, clock, root, "GenerateCredentialReport").status_code == 200
        again = at_broker_time(broker, clock, root, "GetCredentialReport")
        assert again.status_code == 200  # within four hours: the same report
        assert generated.strftime("%Y-%m-%dT%H:%M:%S") in again.text
        clock.advance(3 * 3600)
        expired = at_broker_time(broker, clock, root, "GetCredentialReport")
        assert expired.status_code == 410 and "<Code>ReportExpired</Code>" in expired.text
        # The control: a new report, with the new user.
        assert at_broker_time(broker, clock, root, "GenerateCredentialReport").status_code == 200
        fresh = at_broker_time(broker, clock, root, "GetCredentialReport")
        assert fresh.status_code == 200
        content = re.search(r"<Content>([^<]+)</Content>", fresh.text)
        assert content and name in base64.b64decode(content.group(1)).decode()
    finally:
        clock.advance(-4 * 3600)


def test_the_report_needs_its_permissions(broker: Broker, clock: FixedClock) -> None:
    name, creds = broker.new_user(name=f"auditor-{uuid.uuid4().hex[:6]}")
    auditor = broker.client("iam", creds)
    for call in (auditor.generate_credential_report, auditor.get_credential_report):
        with pytest.raises(ClientError) as info:
            call()
        assert error_of(info) == ("AccessDenied", 403)
    broker.client("iam").put_user_policy(
        UserName=name, PolicyName="report", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Resource": "*",
                "Action": ["iam:GenerateCredentialReport", "iam:GetCredentialReport"]}]}))
    assert auditor.generate_credential_report()["State"] == "COMPLETE"
    assert name in rows(auditor)
