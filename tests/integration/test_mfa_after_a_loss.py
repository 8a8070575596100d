"""An MFA code after Redis lost its data (store/redis.py's lost-at key): the device's right
code, acceptable from before the loss, is refused (it may have been used) but not counted as
a guess, so honest retries after a loss do not lock the device; a wrong code is counted (the
control, through the same device and the same store)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pyotp
import pytest
import redis

from tests.helpers import Broker, Creds, start_broker


@pytest.fixture
def broker(tmp_path: Path, redis_url: str) -> Iterator[tuple[Broker, str]]:
    prefix = f"mfa-loss-{uuid.uuid4().hex[:8]}:"
    b = start_broker(tmp_path / "d", env={"BROKER_STORE_EPHEMERAL_URL": redis_url,
                                          "BROKER_STORE_REDIS_PREFIX": prefix})
    try:
        yield b, prefix
    finally:
        b.server.stop()


def _refused(call: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def test_a_right_code_from_before_a_loss_is_refused_but_not_counted(
        broker: tuple[Broker, str], redis_url: str) -> None:
    b, prefix = broker
    iam = b.client("iam")
    iam.create_user(UserName="carol")
    key = iam.create_access_key(UserName="carol")["AccessKey"]
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName="carol")["VirtualMFADevice"]
    serial = device["SerialNumber"]
    totp, now = pyotp.TOTP(device["Base32StringSeed"].decode("ascii")), time.time()
    iam.enable_mfa_device(UserName="carol", SerialNumber=serial,
                          AuthenticationCode1=totp.at(now, counter_offset=-1),
                          AuthenticationCode2=totp.at(now))
    sts = b.client("sts", Creds(key["AccessKeyId"], key["SecretAccessKey"]))
    client = redis.Redis.from_url(redis_url)
    failures = f"{prefix}mfa-failed:{hashlib.sha256(serial.encode()).hexdigest()}"

    # Redis loses this prefix's data (its lost-at key with it): the next code is one the
    # device showed before the loss, so its use cannot be told.
    client.delete(*client.keys(prefix + "*"))
    right = totp.at(now, counter_offset=1)
    for _ in range(6):  # more than MAX_FAILURES: none is a guess, no lock-out follows
        assert _refused(lambda: sts.get_session_token(
            SerialNumber=serial, TokenCode=right)) == "AccessDenied"
    assert client.get(failures) is None
    # The control: a wrong code through the same device is counted.
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert _refused(lambda: sts.get_session_token(
        SerialNumber=serial, TokenCode=wrong)) == "AccessDenied"
    assert client.get(failures) == b"1"
