"""The SDKs' own web identity flow against the broker, in a separate process with a clean
environment: ``AWS_WEB_IDENTITY_TOKEN_FILE``, ``AWS_ROLE_ARN`` and ``AWS_ENDPOINT_URL_STS``, as
Kubernetes (IRSA) and CI systems set them, and nothing else. boto3 finds the token file, calls
AssumeRoleWithWebIdentity at the broker, uses the credentials, and — when they near their end —
reads the token file again and gets new ones by itself.

botocore decides to refresh by its own clock; the child process moves that clock (only the
credentials object's and the fetcher's view of "now") 55 minutes ahead between two calls, so
that a refresh happens within the test instead of an hour later. Everything else — the provider
chain, the fetcher, the STS call, the parsing of the answer — is botocore's, unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Broker, start_broker
from tests.oidc_issuer import TestIssuer
from tests.oidc_world import FAST_KEYS, OidcWorld

CHILD = r"""
import datetime, json, os, sys
import boto3, botocore.credentials

session = boto3.Session()
first = session.client("sts").get_caller_identity()
credentials = session.get_credentials()
first_key = credentials.get_frozen_credentials().access_key
roles = session.client("iam").list_roles()["Roles"]

# The platform rotates the token file (Kubernetes does, every hour or so).
with open(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"], "w") as out:
    out.write(os.environ["NEXT_TOKEN"])
real_now = botocore.credentials._local_now
later = lambda: real_now() + datetime.timedelta(minutes=55)
credentials._time_fetcher = later  # when to refresh: the credentials object's clock
botocore.credentials._local_now = later  # whether the fetcher's cached answer has expired
second = session.client("sts").get_caller_identity()
second_key = session.get_credentials().get_frozen_credentials().access_key
print(json.dumps({"first": first["Arn"], "second": second["Arn"], "first_key": first_key,
                  "second_key": second_key, "method": credentials.method,
                  "roles": len(roles)}))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    with TestIssuer(path="/ci", algs=("RS256",)) as issuer:
        broker = start_broker(tmp_path_factory.mktemp("broker"), env=FAST_KEYS)
        try:
            world = OidcWorld.make(broker, issuer)
            broker.client("iam").attach_role_policy(
                RoleName=world.role_arn.rsplit("/", 1)[1],
                PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
            yield world
        finally:
            broker.stop()


def issued(broker: Broker) -> list[dict[str, Any]]:
    lines = Path(broker.settings.audit.path).read_text().splitlines()
    return [doc for doc in map(json.loads, lines)
            if doc["eventName"] == "AssumeRoleWithWebIdentity" and "errorCode" not in doc]


def run_child(world: OidcWorld, tmp_path: Path, token: str,
              next_token: str) -> subprocess.CompletedProcess[str]:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_ARN": world.role_arn,
        "AWS_ENDPOINT_URL_STS": world.broker.url,
        "AWS_ENDPOINT_URL_IAM": world.broker.url,
        "NEXT_TOKEN": next_token,
    }
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_boto3_gets_and_refreshes_credentials_from_the_token_file(
        world: OidcWorld, tmp_path: Path) -> None:
    before = len(issued(world.broker))
    child = run_child(world, tmp_path, world.token(), world.token(sub="rotated"))
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["method"] == "assume-role-with-web-identity"
    assert out["first"].startswith(world.role_arn.replace(":iam:", ":sts:").replace(
        ":role/", ":assumed-role/"))
    assert out["second"].rsplit("/", 1)[0] == out["first"].rsplit("/", 1)[0]
    assert out["roles"] >= 1  # the credentials work for IAM too
    # New credentials after the refresh: AssumeRoleWithWebIdentity called again (botocore,
    # seeing sessions that each have five minutes left by its shifted clock, may call it more
    # than once).
    assert out["first_key"] != out["second_key"]
    keys = [doc["responseElements"]["credentials"]["accessKeyId"]
            for doc in issued(world.broker)[before:]]
    assert len(keys) >= 2 and keys[0] == out["first_key"] and out["second_key"] in keys[1:]


def test_boto3_fails_cleanly_with_a_token_the_broker_refuses(
        world: OidcWorld, tmp_path: Path) -> None:
    """The control's twin: the same child, the same environment, a token for another client
    id. botocore surfaces the broker's InvalidIdentityToken and gets no credentials."""
    before = len(issued(world.broker))
    bad = world.token(aud="another-client")
    child = run_child(world, tmp_path, bad, bad)
    assert child.returncode != 0
    assert "InvalidIdentityToken" in child.stderr and "Incorrect token audience" in child.stderr
    assert len(issued(world.broker)) == before
