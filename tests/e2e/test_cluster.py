"""The cluster as production runs it: three nodes (one with two workers) behind nginx on this
machine's PostgreSQL and Redis (tests/cluster.py). Every single-use value and every count is
raced through the load balancer, so the attempts land on different nodes at once: one SAML
assertion, one sign-in token, one TOTP code, one device code each open once, one refresh token
rotates once (and its reuse ends the sign-in); failed sign-ins add up to one
lock-out; a user gets two access keys and no more. Every IAM and Organizations change reaches
every node (each polled directly, not through the load balancer) within
``iam.policy_cache_seconds``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.cluster import Cluster
from tests.load.run import prepare
from tests.saml_idp import TestIdp, encode
from tests.saml_world import trust_policy

POLICY_CACHE_SECONDS = 2  # iam.policy_cache_seconds, the default
MARGIN = 1.5  # a poll's own round trip on a busy machine
RACERS = 12


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\nFIGURES {line}")


def code_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "issued"


def race(attempt: Callable[[], str], n: int = RACERS) -> list[str]:
    """``n`` simultaneous attempts through the load balancer (round robin: every node)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: attempt(), range(n)))


def reaches_every_node(probe: Callable[[int], bool], *, limit: float = 15) -> list[float]:
    """Seconds until ``probe(i)`` holds on each node i, polled on all three at once."""
    started = time.monotonic()

    def until(i: int) -> float:
        while time.monotonic() - started < limit:
            if probe(i):
                return time.monotonic() - started
            time.sleep(0.1)
        return float("inf")

    with ThreadPoolExecutor(3) as pool:
        return [round(s, 2) for s in pool.map(until, range(3))]


@pytest.fixture(scope="module")
def world(machine_cluster: Cluster) -> dict[str, Any]:
    """The load's world (a user, a role it may assume, temporary credentials)."""
    return prepare(machine_cluster)


def test_the_load_balancer_spreads_over_every_node(machine_cluster: Cluster) -> None:
    seen = {httpx.get(machine_cluster.url + "/readyz").headers["x-upstream"]
            for _ in range(9)}
    assert seen == {f"127.0.0.1:{p}" for p in machine_cluster.ports}
    # Every node publishes the same SP key: the one made at init, kept in the database.
    assert len({httpx.get(url + "/saml/metadata").text
                for url in machine_cluster.node_urls}) == 1


def test_a_saml_assertion_is_accepted_once(machine_cluster: Cluster,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cluster = machine_cluster
    idp = TestIdp(f"https://idp-{uuid.uuid4().hex[:6]}.cluster.example.test/metadata")
    iam = cluster.client("iam")
    provider = iam.create_saml_provider(Name=f"corp-{uuid.uuid4().hex[:6]}",
                                        SAMLMetadataDocument=idp.metadata())["SAMLProviderArn"]
    role = iam.create_role(RoleName=f"engineers-{uuid.uuid4().hex[:6]}",
                           AssumeRolePolicyDocument=trust_policy(
                               provider, f"{cluster.url}/saml"))["Role"]["Arn"]

    def assertion() -> str:
        return encode(idp.response(acs_url=f"{cluster.url}/saml",
                                   audience=f"{cluster.url}/saml/metadata",
                                   roles=[(role, provider)]))

    def attempt(saml: str, url: str | None = None) -> str:
        return code_of(lambda: cluster.client("sts", url=url).assume_role_with_saml(
            RoleArn=role, PrincipalArn=provider, SAMLAssertion=saml))

    # The new provider and role reach every node (each with a fresh assertion).
    seconds = reaches_every_node(
        lambda i: attempt(assertion(), cluster.node_urls[i]) == "issued")
    assert max(seconds) <= POLICY_CACHE_SECONDS + MARGIN, seconds
    saml = assertion()
    outcomes = race(lambda: attempt(saml))
    report(capsys, f"one SAML assertion raced {RACERS} times through the LB: "
           f"{outcomes.count('issued')} issued; a new provider on every node after {seconds} s")
    assert outcomes.count("issued") == 1, outcomes
    assert set(outcomes) == {"issued", "InvalidIdentityToken"}, outcomes  # already used
    # And afterwards on each node directly: spent everywhere.
    assert {attempt(saml, url) for url in cluster.node_urls} == {"InvalidIdentityToken"}


def test_a_sign_in_token_opens_one_console_session(machine_cluster: Cluster,
                                                   world: dict[str, Any]) -> None:
    cluster = machine_cluster
    federated = world["federated"]
    session = json.dumps({"sessionId": federated["AccessKeyId"],
                          "sessionKey": federated["SecretAccessKey"],
                          "sessionToken": federated["SessionToken"]})
    got = httpx.get(f"{cluster.url}/federation",
                    params={"Action": "getSigninToken", "Session": session})
    assert got.status_code == 200, got.text
    login = {"Action": "login", "SigninToken": got.json()["SigninToken"],
             "Destination": f"{cluster.url}/console"}

    def attempt() -> str:
        answer = httpx.get(f"{cluster.url}/federation", params=login)
        return str(answer.status_code)

    outcomes = race(attempt)
    assert outcomes.count("303") == 1, outcomes
    assert set(outcomes) == {"303", "400"}, outcomes


def test_a_totp_code_opens_once(machine_cluster: Cluster) -> None:
    """One code, twelve simultaneous GetSessionToken calls across the three nodes (both
    workers of node 0 among them): one issues, the others are AWS's AccessDenied."""
    import pyotp

    cluster = machine_cluster
    iam = cluster.client("iam")
    name = f"mfa-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"]
    totp, now = pyotp.TOTP(device["Base32StringSeed"].decode("ascii")), time.time()
    iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"],
                          AuthenticationCode1=totp.at(now, counter_offset=-1),
                          AuthenticationCode2=totp.at(now))
    user = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    code = totp.at(now, counter_offset=1)
    outcomes = race(lambda: code_of(lambda: cluster.client("sts", user).get_session_token(
        SerialNumber=device["SerialNumber"], TokenCode=code)))
    assert outcomes.count("issued") == 1, outcomes
    assert set(outcomes) == {"issued", "AccessDenied"}, outcomes


def test_failed_sign_ins_add_up_to_one_lock_out(machine_cluster: Cluster) -> None:
    """Eight wrong passwords at once through the load balancer lock the user out on every
    node; the control: another user signs in on every node."""
    cluster = machine_cluster
    iam = cluster.client("iam")
    password = "Correct-Horse-9-Battery"
    suffix = uuid.uuid4().hex[:6]
    locked, other = f"lockme-{suffix}", f"other-{suffix}"
    for name in (locked, other):
        iam.create_user(UserName=name)
        iam.create_login_profile(UserName=name, Password=password)

    def attempt(url: str, user: str, secret: str) -> int:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as browser:
            page = browser.get("/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf, page.text
            return browser.post("/signin", data={
                "csrf": csrf.group(1), "kind": "iam", "account": cluster.account_id,
                "username": user, "password": secret}).status_code

    # Through the LB each sign-in is two requests (page, form): its cookie binds the CSRF
    # value to no node, so the form may land anywhere.
    failures = race(lambda: str(attempt(cluster.url, locked, "Wrong-Passw0rd-1")), 8)
    assert failures == ["403"] * 8
    for url in cluster.node_urls:
        assert attempt(url, locked, password) == 403  # locked everywhere
        assert attempt(url, other, password) == 303  # the control


def test_two_access_keys_at_most_when_eight_ask_at_once(machine_cluster: Cluster) -> None:
    cluster = machine_cluster
    name = f"quota-{uuid.uuid4().hex[:6]}"
    cluster.client("iam").create_user(UserName=name)
    outcomes = race(lambda: code_of(
        lambda: cluster.client("iam").create_access_key(UserName=name)), 8)
    assert sorted(outcomes) == ["LimitExceeded"] * 6 + ["issued"] * 2, outcomes
    for iam in cluster.clients("iam"):
        assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 2


def test_an_iam_change_reaches_every_node(machine_cluster: Cluster,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A policy attached through the load balancer governs every node within
    iam.policy_cache_seconds; a detach likewise."""
    cluster = machine_cluster
    iam = cluster.client("iam")
    name = f"propagated-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    user = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    nodes = cluster.clients("iam", user)

    def allowed(i: int) -> bool:
        outcome = code_of(lambda: nodes[i].list_users(MaxItems=1))
        assert outcome in ("issued", "AccessDenied")
        return outcome == "issued"

    assert not any(allowed(i) for i in range(3))  # the control: nothing granted yet
    arn = "arn:aws:iam::aws:policy/IAMReadOnlyAccess"
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    granted = reaches_every_node(allowed)
    iam.detach_user_policy(UserName=name, PolicyArn=arn)
    revoked = reaches_every_node(lambda i: not allowed(i))
    report(capsys, f"IAM attach on every node after {granted} s, detach after {revoked} s "
           f"(iam.policy_cache_seconds {POLICY_CACHE_SECONDS})")
    assert max(granted + revoked) <= POLICY_CACHE_SECONDS + MARGIN


def test_an_scp_reaches_every_node(machine_cluster: Cluster,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An SCP attached to the member account denies its root iam:CreateUser on every node
    within iam.policy_cache_seconds; detached, it may again."""
    cluster = machine_cluster
    member = json.loads(cluster.cli("accounts", "create", "--json"))
    member_root = {"AccessKeyId": member["root"]["access_key_id"],
                   "SecretAccessKey": member["root"]["secret_access_key"]}
    management = json.loads(cluster.cli("accounts", "create", "--json"))
    management_root = {"AccessKeyId": management["root"]["access_key_id"],
                       "SecretAccessKey": management["root"]["secret_access_key"]}
    orgs = cluster.client("organizations", management_root)
    orgs.create_organization(FeatureSet="ALL")
    root_id = orgs.list_roots()["Roots"][0]["Id"]
    orgs.enable_policy_type(RootId=root_id, PolicyType="SERVICE_CONTROL_POLICY")
    handshake = orgs.invite_account_to_organization(
        Target={"Id": member["account_id"], "Type": "ACCOUNT"})["Handshake"]
    cluster.client("organizations", member_root).accept_handshake(HandshakeId=handshake["Id"])
    policy_id = orgs.create_policy(
        Name="deny-create-user", Description="no new users", Type="SERVICE_CONTROL_POLICY",
        Content=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]})
    )["Policy"]["PolicySummary"]["Id"]
    nodes = cluster.clients("iam", member_root)
    names = iter(f"u{i}" for i in range(10_000))

    def member_may(i: int) -> bool:
        outcome = code_of(lambda: nodes[i].create_user(UserName=next(names)))
        assert outcome in ("issued", "AccessDenied")
        return outcome == "issued"

    assert all(member_may(i) for i in range(3))  # the control
    orgs.attach_policy(PolicyId=policy_id, TargetId=member["account_id"])
    denied = reaches_every_node(lambda i: not member_may(i))
    orgs.detach_policy(PolicyId=policy_id, TargetId=member["account_id"])
    allowed = reaches_every_node(member_may)
    report(capsys, f"SCP attach on every node after {denied} s, detach after {allowed} s")
    assert max(denied + allowed) <= POLICY_CACHE_SECONDS + MARGIN


def test_an_identity_center_change_reaches_every_node(
        machine_cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory change (a user renamed, a group membership removed) and a new permission
    set, made through the load balancer, are read on every node (each asked directly)
    within iam.policy_cache_seconds."""
    cluster = machine_cluster
    sso = cluster.client("sso-admin")
    instances = sso.list_instances()["Instances"]
    arn = instances[0]["InstanceArn"] if instances else \
        sso.create_instance(Name="cluster")["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=arn)["IdentityStoreId"]
    store = cluster.client("identitystore")
    suffix = uuid.uuid4().hex[:6]
    user = store.create_user(IdentityStoreId=store_id, UserName=f"p-{suffix}",
                             DisplayName="Before", Name={"GivenName": "P", "FamilyName": "Q"}
                             )["UserId"]
    group = store.create_group(IdentityStoreId=store_id, DisplayName=f"g-{suffix}")["GroupId"]
    membership = store.create_group_membership(
        IdentityStoreId=store_id, GroupId=group, MemberId={"UserId": user})["MembershipId"]
    stores, admins = cluster.clients("identitystore"), cluster.clients("sso-admin")

    def named(i: int, name: str) -> bool:
        return bool(stores[i].describe_user(IdentityStoreId=store_id, UserId=user)
                    ["DisplayName"] == name)

    def members(i: int) -> int:
        return len(stores[i].list_group_memberships(
            IdentityStoreId=store_id, GroupId=group)["GroupMemberships"])

    assert all(named(i, "Before") and members(i) == 1 for i in range(3))  # read and kept
    store.update_user(IdentityStoreId=store_id, UserId=user, Operations=[
        {"AttributePath": "displayName", "AttributeValue": "After"}])
    store.delete_group_membership(IdentityStoreId=store_id, MembershipId=membership)
    permission_set = sso.create_permission_set(InstanceArn=arn, Name=f"ps-{suffix}")[
        "PermissionSet"]["PermissionSetArn"]
    renamed = reaches_every_node(lambda i: named(i, "After"))
    left = reaches_every_node(lambda i: members(i) == 0)
    created = reaches_every_node(lambda i: permission_set in admins[i].list_permission_sets(
        InstanceArn=arn)["PermissionSets"])
    report(capsys, f"Identity Center rename on every node after {renamed} s, membership "
           f"removed after {left} s, permission set after {created} s")
    assert max(renamed + left + created) <= POLICY_CACHE_SECONDS + MARGIN


# -- Identity Center's codes and tokens ---------------------------------------------------------

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture(scope="module")
def portal(machine_cluster: Cluster) -> Iterator[dict[str, Any]]:
    """An Identity Center instance with one person, and the portal's approval of a device
    code (the broker's own use case, on a runtime of the test's own over the cluster's
    stores: the person's browser sign-in is not what is raced here)."""
    import asyncio

    from broker.runtime import open_runtime
    from broker.settings import load

    cluster = machine_cluster
    sso = cluster.client("sso-admin")
    instances = sso.list_instances()["Instances"]
    arn = instances[0]["InstanceArn"] if instances else \
        sso.create_instance(Name="cluster")["InstanceArn"]
    described = sso.describe_instance(InstanceArn=arn)
    store_id = described["IdentityStoreId"]
    user_id = cluster.client("identitystore").create_user(
        IdentityStoreId=store_id, UserName=f"cli-{uuid.uuid4().hex[:6]}", DisplayName="CLI",
        Name={"GivenName": "C", "FamilyName": "L"})["UserId"]
    loop = asyncio.new_event_loop()
    settings = load(None, environ={k: v for k, v in cluster.env.items()
                                   if k.startswith("BROKER_")})
    runtime = loop.run_until_complete(open_runtime(settings, migrate=False))

    def approve(user_code: str) -> None:
        loop.run_until_complete(runtime.oauth.approve_device(
            user_code, account_id=described["OwnerAccountId"], identity_store_id=store_id,
            user_id=user_id))

    try:
        yield {"start_url": f"{cluster.url}/start/{store_id}", "approve": approve}
    finally:
        loop.run_until_complete(runtime.close())
        loop.close()


def unsigned(cluster: Cluster, service: str, url: str | None = None) -> Any:
    import boto3
    import botocore
    import botocore.config

    return boto3.client(service, endpoint_url=url or cluster.url, region_name="us-east-1",
                        config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                                      retries={"max_attempts": 1}))


def device_sign_in(cluster: Cluster, portal: dict[str, Any]) -> tuple[dict[str, str],
                                                                      dict[str, Any]]:
    """A client registered and a device code started through the LB, approved: (client's
    secret, the started authorization)."""
    oidc = unsigned(cluster, "sso-oidc")
    client = oidc.register_client(clientName="cluster", clientType="public",
                                  scopes=["sso:account:access"])
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    started = oidc.start_device_authorization(**secret, startUrl=portal["start_url"])
    portal["approve"](started["userCode"])
    return secret, started


def test_a_device_code_is_redeemed_once(machine_cluster: Cluster,
                                        portal: dict[str, Any]) -> None:
    cluster = machine_cluster
    secret, started = device_sign_in(cluster, portal)
    tokens: list[dict[str, Any]] = []

    def attempt() -> str:
        def redeem() -> None:
            tokens.append(unsigned(cluster, "sso-oidc").create_token(
                **secret, grantType=DEVICE, deviceCode=started["deviceCode"]))
        return code_of(redeem)

    outcomes = race(attempt)
    assert outcomes.count("issued") == 1, outcomes
    assert set(outcomes) - {"issued"} <= {"InvalidGrantException", "SlowDownException"}
    # The token one node issued reads on every node.
    for url in cluster.node_urls:
        assert unsigned(cluster, "sso", url).list_accounts(
            accessToken=tokens[0]["accessToken"])["accountList"] == []


def test_a_refresh_token_raced_rotates_once_and_ends_the_sign_in(
        machine_cluster: Cluster, portal: dict[str, Any]) -> None:
    """Twelve refreshes with one refresh token at once: one rotates; the rest are reuse,
    which ends the sign-in, so even the winner's new tokens are refused on every node. The
    control: another sign-in's refresh token rotates and its tokens read everywhere."""
    cluster = machine_cluster

    def signed_in() -> tuple[dict[str, str], dict[str, Any]]:
        secret, started = device_sign_in(cluster, portal)
        return secret, unsigned(cluster, "sso-oidc").create_token(
            **secret, grantType=DEVICE, deviceCode=started["deviceCode"])

    secret, first = signed_in()
    refresh = {**secret, "grantType": "refresh_token", "refreshToken": first["refreshToken"]}
    won: list[dict[str, Any]] = []

    def attempt() -> str:
        return code_of(lambda: won.append(
            unsigned(cluster, "sso-oidc").create_token(**refresh)))

    outcomes = race(attempt)
    assert outcomes.count("issued") == 1, outcomes
    assert set(outcomes) == {"issued", "InvalidGrantException"}, outcomes
    for url in cluster.node_urls:
        for access in (first["accessToken"], won[0]["accessToken"]):
            assert code_of(lambda url=url, access=access: unsigned(  # type: ignore[misc]
                cluster, "sso", url).list_accounts(accessToken=access)) == \
                "UnauthorizedException"
    secret, other = signed_in()  # the control
    fresh = unsigned(cluster, "sso-oidc").create_token(
        **secret, grantType="refresh_token", refreshToken=other["refreshToken"])
    for url in cluster.node_urls:
        assert unsigned(cluster, "sso", url).list_accounts(
            accessToken=fresh["accessToken"])["accountList"] == []
