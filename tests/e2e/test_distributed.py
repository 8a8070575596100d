"""The distributed deployment: stateless broker processes on PostgreSQL and Redis.

Two broker processes (one of them with two workers) share the real PostgreSQL and Redis of
this machine and one keyring file, as replicas behind a load balancer would. Whatever one
process writes or issues, the other honours; a key rotated from the command line reaches both
without a restart. The races through a real load balancer (one SAML assertion, one TOTP code,
an IAM change on every node) are tests/e2e/test_cluster.py's.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import httpx
import pytest

from tests.e2e.support import BIN, BrokerProcess, clean_env
from tests.helpers import free_port

PUBLIC_URL = "http://broker.example.test"


def client(url: str, service: str, creds: dict[str, str]) -> object:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds.get("SessionToken"),
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def settles(probe: Callable[[], bool], expected: bool, *, seconds: float = 15) -> None:
    """Wait until ``probe()`` answers ``expected`` (another process has seen a change)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if probe() == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"the change did not reach the other process (wanted {expected})")


@pytest.fixture
def cluster(tmp_path: Path, postgres_databases: Callable[[], str],
            redis_url: str) -> Iterator[tuple[BrokerProcess, BrokerProcess, dict[str, str],
                                              dict[str, str]]]:
    env = clean_env(
        BROKER_STORE_DATABASE_URL=postgres_databases(),
        BROKER_STORE_EPHEMERAL_URL=redis_url,
        BROKER_STORE_REDIS_PREFIX=f"broker-e2e-{uuid.uuid4().hex[:8]}:",
        BROKER_KEYRING_CHECK_INTERVAL_SECONDS="1",
        BROKER_SERVER_DATA_DIR=str(tmp_path / "shared"),
        # Replicas behind one load balancer: one public URL, so one SAML ACS URL.
        BROKER_SERVER_PUBLIC_URL=PUBLIC_URL,
    )
    init = subprocess.run([str(BIN / "broker"), "init", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    root = json.loads(init.stdout)["root"]
    creds = {"AccessKeyId": root["access_key_id"], "SecretAccessKey": root["secret_access_key"]}
    pa, pb = free_port(), free_port()
    a = BrokerProcess(["--port", str(pa), "--workers", "2"], env, pa, tmp_path / "a.log")
    b = BrokerProcess(["--port", str(pb)], env, pb, tmp_path / "b.log")
    yield a, b, creds, env
    a.stop()
    b.stop()


def test_processes_share_everything(cluster: tuple[BrokerProcess, BrokerProcess,
                                                   dict[str, str], dict[str, str]]) -> None:
    a, b, root, _ = cluster
    iam_a, iam_b = client(a.url, "iam", root), client(b.url, "iam", root)
    iam_a.create_user(UserName="shared")  # type: ignore[attr-defined]
    assert iam_b.get_user(UserName="shared")["User"]["UserName"] == "shared"  # type: ignore

    session = client(a.url, "sts", root).get_session_token()["Credentials"]  # type: ignore
    for _ in range(6):  # across both workers of A and across B
        for url in (a.url, b.url):
            who = client(url, "sts", session).get_caller_identity()  # type: ignore
            assert who["Arn"].endswith(":root")

    def attempt(url: str) -> bool:
        try:
            client(url, "iam", root).create_access_key(UserName="shared")  # type: ignore
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "LimitExceeded"
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(attempt, [a.url, b.url] * 4))
    assert created.count(True) == 2
    assert len(iam_b.list_access_keys(UserName="shared")["AccessKeyMetadata"]) == 2  # type: ignore


def test_rotation_reaches_every_process(cluster: tuple[BrokerProcess, BrokerProcess,
                                                       dict[str, str], dict[str, str]]) -> None:
    a, b, root, env = cluster
    before = client(a.url, "sts", root).get_session_token()["Credentials"]  # type: ignore
    subprocess.run([str(BIN / "broker"), "keys", "rotate"], env=env, check=True,
                   capture_output=True, timeout=120)
    time.sleep(1.5)  # the keyring check interval of the running processes
    after = client(a.url, "sts", root).get_session_token()["Credentials"]  # type: ignore
    for url in (a.url, b.url):
        client(url, "sts", after).get_caller_identity()  # type: ignore
        client(url, "sts", before).get_caller_identity()  # type: ignore
    listing = subprocess.run([str(BIN / "broker"), "keys", "list"], env=env, check=True,
                             capture_output=True, text=True, timeout=120).stdout
    old = listing.splitlines()[0].split()[0]
    subprocess.run([str(BIN / "broker"), "keys", "retire", old], env=env, check=True,
                   capture_output=True, timeout=120)
    time.sleep(1.5)
    for url in (a.url, b.url):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client(url, "sts", before).get_caller_identity()  # type: ignore
        assert info.value.response["Error"]["Code"] == "InvalidClientTokenId"
        client(url, "sts", after).get_caller_identity()  # type: ignore
        client(url, "sts", root).get_caller_identity()  # type: ignore  # resealed secret


def test_hosts_with_their_own_keyring_copies(tmp_path: Path,
                                             postgres_databases: Callable[[], str],
                                             redis_url: str) -> None:
    """Replicas that each hold a copy of the keyring (a mounted secret): a new key is staged
    and copied everywhere before it seals, so no host ever meets a secret it cannot open."""
    import shutil

    base = clean_env(
        BROKER_STORE_DATABASE_URL=postgres_databases(),
        BROKER_STORE_EPHEMERAL_URL=redis_url,
        BROKER_STORE_REDIS_PREFIX=f"broker-e2e-{uuid.uuid4().hex[:8]}:",
        BROKER_KEYRING_CHECK_INTERVAL_SECONDS="1",
    )
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    env_a = {**base, "BROKER_SERVER_DATA_DIR": str(dir_a)}
    env_b = {**base, "BROKER_SERVER_DATA_DIR": str(dir_b)}

    def cli(env: dict[str, str], *args: str) -> str:
        return subprocess.run([str(BIN / "broker"), *args], env=env, check=True,
                              capture_output=True, text=True, timeout=120).stdout

    root_doc = json.loads(cli(env_a, "init", "--json"))["root"]
    root = {"AccessKeyId": root_doc["access_key_id"],
            "SecretAccessKey": root_doc["secret_access_key"]}
    dir_b.mkdir()

    def copy_keyring() -> None:
        shutil.copy2(dir_a / "keyring.json", dir_b / "keyring.json")
        time.sleep(1.5)  # the processes' keyring check interval

    copy_keyring()
    pa, pb = free_port(), free_port()
    a = BrokerProcess(["--port", str(pa)], env_a, pa, tmp_path / "a.log")
    b = BrokerProcess(["--port", str(pb)], env_b, pb, tmp_path / "b.log")
    try:
        staged = cli(env_a, "keys", "add").split()[2].rstrip(".")
        copy_keyring()
        cli(env_a, "keys", "activate", staged)  # reseals every stored secret with it
        time.sleep(1.5)  # B's copy has the key only staged: enough to open
        for url in (a.url, b.url):
            client(url, "sts", root).get_caller_identity()  # type: ignore[attr-defined]
        from_a = client(a.url, "sts", root).get_session_token()["Credentials"]  # type: ignore
        from_b = client(b.url, "sts", root).get_session_token()["Credentials"]  # type: ignore
        client(b.url, "sts", from_a).get_caller_identity()  # type: ignore[attr-defined]
        client(a.url, "sts", from_b).get_caller_identity()  # type: ignore[attr-defined]

        # Skipping the staging step: B meets secrets sealed with a key it has never seen. It
        # says so as a fault of the service, not of the caller's credentials.
        cli(env_a, "keys", "rotate")
        time.sleep(1.5)
        client(a.url, "sts", root).get_caller_identity()  # type: ignore[attr-defined]
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client(b.url, "sts", root).get_caller_identity()  # type: ignore[attr-defined]
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert "does not open with this process's keyring" in b.output()
        copy_keyring()
        client(b.url, "sts", root).get_caller_identity()  # type: ignore[attr-defined]
    finally:
        a.stop()
        b.stop()


def test_a_deactivated_key_stops_working_everywhere_within_seconds(
        cluster: tuple[BrokerProcess, BrokerProcess, dict[str, str], dict[str, str]]) -> None:
    """Authentication keeps an active key's lookup as long as IAM's other answers: the process
    that deactivates a key refuses it at once, every other process within
    iam.policy_cache_seconds; reactivated, it works again."""
    a, b, root, _ = cluster
    iam_b = client(b.url, "iam", root)
    iam_b.create_user(UserName="leaver")  # type: ignore[attr-defined]
    key = iam_b.create_access_key(UserName="leaver")["AccessKey"]  # type: ignore
    user = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    sts_a, sts_b = client(a.url, "sts", user), client(b.url, "sts", user)

    def works(sts: object) -> bool:
        try:
            sts.get_caller_identity()  # type: ignore[attr-defined]
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidClientTokenId"
            return False
        return True

    # The control: the key works on both, so both have it remembered.
    for _ in range(3):
        assert works(sts_a) and works(sts_b)
    iam_b.update_access_key(UserName="leaver", AccessKeyId=key["AccessKeyId"],  # type: ignore
                            Status="Inactive")
    assert not works(sts_b)  # the process that made the change: at once
    settles(lambda: works(sts_a), False)
    iam_b.update_access_key(UserName="leaver", AccessKeyId=key["AccessKeyId"],  # type: ignore
                            Status="Active")
    assert works(sts_b)
    settles(lambda: works(sts_a), True)


def test_sign_in_lock_outs_and_pending_steps_hold_across_processes(
        cluster: tuple[BrokerProcess, BrokerProcess, dict[str, str], dict[str, str]]) -> None:
    """Failed sign-ins counted on A and on B add up to one lock-out, seen by both; the
    control: another user signs in on either. A pending MFA step begun on A completes on B
    (one store), once."""
    import re

    import pyotp

    a, b, root, _ = cluster
    iam = client(a.url, "iam", root)
    password = "Correct-Horse-9-Battery"
    account = iam.get_user()["User"]["Arn"].split(":")[4]  # type: ignore[attr-defined]
    for name in ("lockme", "other", "withmfa"):
        iam.create_user(UserName=name)  # type: ignore[attr-defined]
        iam.create_login_profile(UserName=name, Password=password)  # type: ignore
    device = iam.create_virtual_mfa_device(  # type: ignore[attr-defined]
        VirtualMFADeviceName="withmfa")["VirtualMFADevice"]
    totp, now = pyotp.TOTP(device["Base32StringSeed"].decode("ascii")), time.time()
    iam.enable_mfa_device(  # type: ignore[attr-defined]
        UserName="withmfa", SerialNumber=device["SerialNumber"],
        AuthenticationCode1=totp.at(now, counter_offset=-1), AuthenticationCode2=totp.at(now))

    def attempt(url: str, user: str, secret: str, jar: httpx.Client | None = None
                ) -> httpx.Response:
        if jar is None:
            with httpx.Client(base_url=url, follow_redirects=False) as fresh:
                return attempt(url, user, secret, fresh)
        c = jar
        page = c.get(f"{url}/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        return c.post(f"{url}/signin", data={"csrf": csrf.group(1), "kind": "iam",
                                             "account": account, "username": user,
                                             "password": secret})

    for url in (a.url, a.url, a.url, b.url, b.url):  # five failures, split across processes
        assert attempt(url, "lockme", "Wrong-Passw0rd-1").status_code == 403
    for url in (a.url, b.url):
        assert attempt(url, "lockme", password).status_code == 403  # locked everywhere
        assert attempt(url, "other", password).status_code == 303  # the control
    with httpx.Client(base_url=a.url, follow_redirects=False) as jar:
        pending = attempt(a.url, "withmfa", password, jar)
        cookies = "; ".join(f"{k}={v}" for k, v in jar.cookies.items())
    assert pending.status_code == 200, pending.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', pending.text)
    assert csrf
    form = {"csrf": csrf.group(1), "code": totp.at(now, counter_offset=1)}
    done = httpx.post(f"{b.url}/signin/mfa", data=form, headers={"Cookie": cookies})
    assert done.status_code == 303, done.text
    again = httpx.post(f"{a.url}/signin/mfa", data=form, headers={"Cookie": cookies})
    assert again.status_code == 403


def test_an_scp_reaches_every_process_and_binds_the_member_root(
        cluster: tuple[BrokerProcess, BrokerProcess, dict[str, str], dict[str, str]]) -> None:
    """The walk-through of docs/organizations.md over two processes: an SCP attached to an OU
    through one process denies iam:CreateUser to the member account's root user on the other
    within iam.policy_cache_seconds; the management account is not bound; detached, the
    member's root may again."""
    a, b, management_root, env = cluster
    made = subprocess.run([str(BIN / "broker"), "accounts", "create", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    member = json.loads(made.stdout)
    member_root = {"AccessKeyId": member["root"]["access_key_id"],
                   "SecretAccessKey": member["root"]["secret_access_key"]}
    orgs = client(a.url, "organizations", management_root)
    orgs.create_organization(FeatureSet="ALL")  # type: ignore[attr-defined]
    root_id = orgs.list_roots()["Roots"][0]["Id"]  # type: ignore[attr-defined]
    orgs.enable_policy_type(RootId=root_id,  # type: ignore[attr-defined]
                            PolicyType="SERVICE_CONTROL_POLICY")
    handshake = orgs.invite_account_to_organization(  # type: ignore[attr-defined]
        Target={"Id": member["account_id"], "Type": "ACCOUNT"})["Handshake"]
    client(b.url, "organizations", member_root).accept_handshake(  # type: ignore
        HandshakeId=handshake["Id"])
    ou = orgs.create_organizational_unit(  # type: ignore[attr-defined]
        ParentId=root_id, Name="Workloads")["OrganizationalUnit"]["Id"]
    orgs.move_account(AccountId=member["account_id"],  # type: ignore[attr-defined]
                      SourceParentId=root_id, DestinationParentId=ou)
    policy = orgs.create_policy(  # type: ignore[attr-defined]
        Name="deny-create-user", Description="no new users", Type="SERVICE_CONTROL_POLICY",
        Content=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]}))
    policy_id = policy["Policy"]["PolicySummary"]["Id"]
    iam_b_member = client(b.url, "iam", member_root)
    names = iter(f"u{i}" for i in range(1000))

    def member_may() -> bool:
        try:
            iam_b_member.create_user(UserName=next(names))  # type: ignore[attr-defined]
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied"
            assert "explicit deny in a service control policy" in \
                exc.response["Error"]["Message"]
            return False
        return True

    assert member_may()  # the control: nothing attached yet
    orgs.attach_policy(PolicyId=policy_id, TargetId=ou)  # type: ignore[attr-defined]
    settles(member_may, False)
    orgs.attach_policy(PolicyId=policy_id, TargetId=root_id)  # type: ignore[attr-defined]
    client(b.url, "iam", management_root).create_user(  # type: ignore[attr-defined]
        UserName="management-is-never-bound")
    orgs.detach_policy(PolicyId=policy_id, TargetId=ou)  # type: ignore[attr-defined]
    orgs.detach_policy(PolicyId=policy_id, TargetId=root_id)  # type: ignore[attr-defined]
    settles(member_may, True)


def test_concurrent_acceptances_on_two_processes_leave_one_membership(
        cluster: tuple[BrokerProcess, BrokerProcess, dict[str, str], dict[str, str]]) -> None:
    """An account invited by two organizations accepts both at once, one acceptance through
    each process: it ends up in exactly one organization's tree, the other acceptance is
    refused and its handshake open again — on PostgreSQL, whose writers really interleave."""
    a, b, _, env = cluster

    def account() -> dict[str, str]:
        made = subprocess.run([str(BIN / "broker"), "accounts", "create", "--json"], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        found = json.loads(made.stdout)
        return {"id": found["account_id"], "AccessKeyId": found["root"]["access_key_id"],
                "SecretAccessKey": found["root"]["secret_access_key"]}

    member = account()
    creds = {k: member[k] for k in ("AccessKeyId", "SecretAccessKey")}
    invitations = []
    for _ in range(2):
        management = account()
        orgs = client(a.url, "organizations",
                      {k: management[k] for k in ("AccessKeyId", "SecretAccessKey")})
        orgs.create_organization()  # type: ignore[attr-defined]
        handshake = orgs.invite_account_to_organization(  # type: ignore[attr-defined]
            Target={"Id": member["id"], "Type": "ACCOUNT"})["Handshake"]["Id"]
        invitations.append((orgs, handshake))

    def accept(url: str, handshake: str) -> str:
        try:
            client(url, "organizations", creds).accept_handshake(  # type: ignore
                HandshakeId=handshake)
        except botocore.exceptions.ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ACCEPTED"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(accept, (a.url, b.url), [h for _, h in invitations]))
    assert outcomes.count("ACCEPTED") == 1, outcomes
    assert set(outcomes) - {"ACCEPTED"} <= {"HandshakeConstraintViolationException",
                                            "ConcurrentModificationException"}, outcomes
    trees = [[x["Id"] for x in orgs.list_accounts()["Accounts"]]  # type: ignore[attr-defined]
             for orgs, _ in invitations]
    assert sum(member["id"] in ids for ids in trees) == 1, trees
    states = sorted(orgs.describe_handshake(  # type: ignore[attr-defined]
        HandshakeId=h)["Handshake"]["State"] for orgs, h in invitations)
    assert states == ["ACCEPTED", "OPEN"]
