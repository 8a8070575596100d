"""``broker login`` end to end, and botocore's own SSO credential provider: a directory user
assigned a permission set signs in with the device flow, and then the AWS CLI and boto3 —
each a subprocess with its own HOME and no key anywhere — get that role's credentials,
botocore refreshing the expired token with the refresh token by itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.login import cache_path
from tests.e2e.support import BIN, ROOT, clean_env
from tests.helpers import Broker
from tests.sso_world import SsoWorld, Tenant, make_tenant

CALLER = ("import boto3, json, sys; "
          "s = boto3.Session(profile_name=sys.argv[1]); "
          "print(json.dumps(s.client('sts').get_caller_identity()))")


@pytest.fixture(scope="module")
def tenant(broker: Broker) -> Tenant:
    return make_tenant(broker, "Engineers")


def home_env(home: Path) -> dict[str, str]:
    env = clean_env(HOME=str(home))
    del env["AWS_CONFIG_FILE"]  # the profile broker login writes, in HOME
    return env


def login(broker: Broker, tenant: Tenant, home: Path, profile: str, *extra: str,
          approve_as: str | None = None, deny: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """Run ``broker login --no-browser``; when it prints the code, approve it as the portal
    does for the signed-in person (``approve_as``: another user of the same store), or deny
    it."""
    world = SsoWorld(broker, None, tenant, tenant)  # type: ignore[arg-type]  # no clock here
    proc = subprocess.Popen(
        [str(BIN / "broker"), "login", "--start-url", tenant.start_url, "--profile", profile,
         "--no-browser", *extra],
        env=home_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"confirm the code ([A-Z]{4}-[A-Z]{4})", line)
        if found:
            if deny:
                broker.server.call(world.oauth.deny_device(found.group(1)))
            else:
                world.approve(found.group(1), tenant, approve_as)
            break
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + err)


def caller(home: Path, profile: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-c", CALLER, profile], env=home_env(home),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def test_broker_login_gives_the_cli_the_role(broker: Broker, tenant: Tenant,
                                             tmp_path: Path) -> None:
    done = login(broker, tenant, tmp_path, "work")
    assert done.returncode == 0, done.stderr
    assert f"{broker.url}/start/device?user_code=" in done.stderr
    cache = json.loads(cache_path(tmp_path, "work").read_text())
    assert cache_path(tmp_path, "work").stat().st_mode & 0o777 == 0o600
    assert cache["startUrl"] == tenant.start_url and cache["refreshToken"]
    config = (tmp_path / ".aws" / "config").read_text()
    assert "[profile work]" in config and "[sso-session work]" in config
    assert f"sso_account_id = {tenant.account_id}" in config
    assert "sso_role_name = Engineers" in config and f"endpoint_url = {broker.url}" in config
    # The AWS CLI, with no keys anywhere: the role's credentials through botocore's provider.
    cli = subprocess.run([str(BIN / "aws"), "--profile", "work", "sts", "get-caller-identity"],
                         env=home_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    who = json.loads(cli.stdout)
    assert who["Account"] == tenant.account_id
    assert re.fullmatch(
        rf"arn:aws:sts::{tenant.account_id}:assumed-role/AWSReservedSSO_Engineers_[0-9a-f]{{16}}"
        rf"/{tenant.user_name}", who["Arn"]), who["Arn"]


def test_botocore_refreshes_the_token_with_the_refresh_token(broker: Broker, tenant: Tenant,
                                                             tmp_path: Path) -> None:
    done = login(broker, tenant, tmp_path, "refresh", "--account-id", tenant.account_id,
                 "--role-name", "Engineers")
    assert done.returncode == 0, done.stderr
    path = cache_path(tmp_path, "refresh")
    first = json.loads(path.read_text())
    code, who, err = caller(tmp_path, "refresh")
    assert code == 0, err
    assert who["Account"] == tenant.account_id
    # The access token expires (within botocore's refresh window): botocore's SSOTokenProvider
    # calls CreateToken with the refresh token, and writes the rotated tokens back.
    first["expiresAt"] = (datetime.now(UTC) + timedelta(seconds=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(first))
    code, who, err = caller(tmp_path, "refresh")
    assert code == 0, err
    refreshed = json.loads(path.read_text())
    assert refreshed["accessToken"] != first["accessToken"]
    assert refreshed["refreshToken"] != first["refreshToken"]
    # The old refresh token, reused after rotation, is refused — and ends the whole sign-in:
    # the rotated tokens stop working too.
    stolen = {**refreshed, "refreshToken": first["refreshToken"],
              "expiresAt": "2000-01-01T00:00:00Z"}
    path.write_text(json.dumps(stolen))
    code, _, err = caller(tmp_path, "refresh")
    assert code != 0
    path.write_text(json.dumps(refreshed))
    code, _, err = caller(tmp_path, "refresh")
    assert code != 0 and "Unauthorized" in err, err


def test_a_login_approved_for_a_user_without_the_role_gets_nothing(
        broker: Broker, tenant: Tenant, tmp_path: Path) -> None:
    from tests.sso_world import new_user

    other = new_user(broker, tenant.account_id, tenant.identity_store_id, "unassigned-person")
    done = login(broker, tenant, tmp_path, "nobody", approve_as=other)
    assert done.returncode != 0
    assert "No role matches" in done.stderr
    assert not (tmp_path / ".aws" / "config").exists()
    assert not cache_path(tmp_path, "nobody").exists()
    denied = login(broker, tenant, tmp_path, "denied", deny=True)
    assert denied.returncode != 0 and "AccessDeniedException" in denied.stderr, denied.stderr
    assert not cache_path(tmp_path, "denied").exists()
    # The honest control, in the same HOME: the assigned person's login writes the profile.
    done = login(broker, tenant, tmp_path, "somebody")
    assert done.returncode == 0, done.stderr
