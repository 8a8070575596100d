"""Identity Center's codes and tokens across broker processes on PostgreSQL and Redis: a client
registered on one is honoured by the other, a token issued by one reads on the other, a
device code or an authorization code presented to both at once is redeemed by one only, and a
refresh token presented to both at once rotates once and ends the sign-in (reuse)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
import pytest

from broker.runtime import Runtime, open_runtime
from broker.settings import load
from tests.e2e.support import BIN, BrokerProcess, clean_env
from tests.helpers import free_port

PUBLIC_URL = "http://broker.example.test"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


def unsigned(url: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                                      retries={"max_attempts": 1}))


@dataclass
class Cluster:
    a: BrokerProcess
    b: BrokerProcess
    loop: asyncio.AbstractEventLoop
    runtime: Runtime  # a third process's view: the portal's approvals, the directory
    account_id: str
    identity_store_id: str
    user_id: str
    root: dict[str, str] = field(default_factory=dict)

    def admin(self, service: str, url: str | None = None) -> Any:
        return boto3.client(service, endpoint_url=url or self.a.url, region_name="us-east-1",
                            aws_access_key_id=self.root["access_key_id"],
                            aws_secret_access_key=self.root["secret_access_key"])

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @property
    def start_url(self) -> str:
        return f"{PUBLIC_URL}/start/{self.identity_store_id}"


@pytest.fixture
def cluster(tmp_path: Path, postgres_databases: Callable[[], str],
            redis_url: str) -> Iterator[Cluster]:
    env = clean_env(
        BROKER_STORE_DATABASE_URL=postgres_databases(),
        BROKER_STORE_EPHEMERAL_URL=redis_url,
        BROKER_STORE_REDIS_PREFIX=f"broker-sso-e2e-{uuid.uuid4().hex[:8]}:",
        BROKER_SERVER_DATA_DIR=str(tmp_path / "shared"),
        BROKER_SERVER_PUBLIC_URL=PUBLIC_URL,
        # Long enough that nothing below is explained by a cache running out: every change
        # must be seen at once, on every process (identitycenter/reads.py).
        BROKER_IAM_POLICY_CACHE_SECONDS="60",
    )
    init = subprocess.run([str(BIN / "broker"), "init", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    root = json.loads(init.stdout)["root"]
    pa, pb = free_port(), free_port()
    a = BrokerProcess(["--port", str(pa), "--workers", "2"], env, pa, tmp_path / "a.log")
    b = BrokerProcess(["--port", str(pb)], env, pb, tmp_path / "b.log")
    admin = boto3.client("sso-admin", endpoint_url=a.url, region_name="us-east-1",
                         aws_access_key_id=root["access_key_id"],
                         aws_secret_access_key=root["secret_access_key"])
    arn = admin.create_instance(Name="shared")["InstanceArn"]
    described = admin.describe_instance(InstanceArn=arn)
    loop = asyncio.new_event_loop()
    settings = load(None, environ={k: v for k, v in env.items() if k.startswith("BROKER_")})
    runtime = loop.run_until_complete(open_runtime(settings, migrate=False))
    try:
        ic = runtime.identity_center

        async def person() -> str:
            instance = await ic.instances.by_store(described["IdentityStoreId"])
            assert instance is not None
            user = await ic.directory.create_user(instance, {
                "UserName": "shared-person", "DisplayName": "Shared",
                "Name": {"GivenName": "S", "FamilyName": "P"}}, "tests")
            return user.user_id

        user_id = loop.run_until_complete(person())
        yield Cluster(a, b, loop, runtime, described["OwnerAccountId"],
                      described["IdentityStoreId"], user_id, root)
    finally:
        loop.run_until_complete(runtime.close())
        loop.close()
        a.stop()
        b.stop()


def both(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[str]]:
    """Run the calls at once: (answers, error codes)."""
    def attempt(call: Callable[[], Any]) -> tuple[Any, str | None]:
        try:
            return call(), None
        except botocore.exceptions.ClientError as exc:
            return None, str(exc.response["Error"]["Code"])

    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(attempt, calls))
    return [r for r, _ in results if r is not None], [c for _, c in results if c is not None]


def register(url: str, **extra: Any) -> dict[str, Any]:
    made: dict[str, Any] = unsigned(url, "sso-oidc").register_client(
        clientName="e2e", clientType="public", scopes=["sso:account:access"], **extra)
    return made


def test_a_device_code_is_redeemed_once_across_processes(cluster: Cluster) -> None:
    client = register(cluster.a.url)  # registered on a, used on b: clients are stateless
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    started = unsigned(cluster.b.url, "sso-oidc").start_device_authorization(
        **secret, startUrl=cluster.start_url)
    cluster.run(cluster.runtime.oauth.approve_device(
        started["userCode"], account_id=cluster.account_id,
        identity_store_id=cluster.identity_store_id, user_id=cluster.user_id))
    won, lost = both([lambda url=url: unsigned(url, "sso-oidc").create_token(  # type: ignore[misc]
        **secret, grantType=DEVICE, deviceCode=started["deviceCode"])
        for url in (cluster.a.url, cluster.b.url, cluster.a.url, cluster.b.url)])
    assert len(won) == 1, (won, lost)
    assert set(lost) <= {"SlowDownException", "InvalidGrantException",
                         "AuthorizationPendingException"}, lost
    # The token one process issued reads on the other.
    for url in (cluster.a.url, cluster.b.url):
        accounts = unsigned(url, "sso").list_accounts(accessToken=won[0]["accessToken"])
        assert accounts["accountList"] == []  # no assignment: nothing, but signed in


def test_an_authorization_code_is_redeemed_once_across_processes(cluster: Cluster) -> None:
    client = register(cluster.b.url, grantTypes=["authorization_code", "refresh_token"],
                      redirectUris=["http://127.0.0.1/oauth/callback"],
                      issuerUrl=cluster.start_url)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:40123/oauth/callback"
    oauth = cluster.runtime.oauth

    async def approve() -> str:
        request = await oauth.authorization_request(
            client_id=client["clientId"], redirect_uri=redirect, code_challenge=challenge,
            code_challenge_method="S256")
        return await oauth.issue_code(request, account_id=cluster.account_id,
                                      identity_store_id=cluster.identity_store_id,
                                      user_id=cluster.user_id)

    code = cluster.run(approve())
    params = {"clientId": client["clientId"], "clientSecret": client["clientSecret"],
              "grantType": "authorization_code", "code": code, "redirectUri": redirect,
              "codeVerifier": verifier}
    won, lost = both([lambda url=url: unsigned(url, "sso-oidc").create_token(  # type: ignore[misc]
        **params) for url in (cluster.a.url, cluster.b.url, cluster.a.url, cluster.b.url)])
    assert len(won) == 1 and lost == ["InvalidGrantException"] * 3, (won, lost)


def device_tokens(cluster: Cluster, secret: dict[str, str]) -> dict[str, Any]:
    """Tokens of a device flow started on a, approved by the portal, redeemed on b."""
    started = unsigned(cluster.a.url, "sso-oidc").start_device_authorization(
        **secret, startUrl=cluster.start_url)
    cluster.run(cluster.runtime.oauth.approve_device(
        started["userCode"], account_id=cluster.account_id,
        identity_store_id=cluster.identity_store_id, user_id=cluster.user_id))
    tokens: dict[str, Any] = unsigned(cluster.b.url, "sso-oidc").create_token(
        **secret, grantType=DEVICE, deviceCode=started["deviceCode"])
    return tokens


def refused(call: Callable[..., Any], **params: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**params)
    return str(caught.value.response["Error"]["Code"])


def test_a_refresh_token_raced_across_processes_ends_the_sign_in(cluster: Cluster) -> None:
    client = register(cluster.a.url)
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    tokens = device_tokens(cluster, secret)
    refresh = {**secret, "grantType": "refresh_token", "refreshToken": tokens["refreshToken"]}
    won, lost = both([lambda url=url: unsigned(url, "sso-oidc").create_token(  # type: ignore[misc]
        **refresh) for url in (cluster.a.url, cluster.b.url)])
    # One rotated; the other was a reuse, which ended the sign-in: the winner's new tokens
    # are refused on both processes too.
    assert len(won) == 1 and lost == ["InvalidGrantException"], (won, lost)
    for url in (cluster.a.url, cluster.b.url):
        for access in (tokens["accessToken"], won[0]["accessToken"]):
            assert refused(unsigned(url, "sso").list_accounts,
                           accessToken=access) == "UnauthorizedException"
    for url, token in ((cluster.a.url, won[0]["refreshToken"]),
                       (cluster.b.url, tokens["refreshToken"])):
        assert refused(unsigned(url, "sso-oidc").create_token, **{
            **refresh, "refreshToken": token}) == "InvalidGrantException"
    # The control: another sign-in, refreshed on one process, reads on the other; logged out
    # on that one, it is refused on the first.
    other = device_tokens(cluster, secret)
    fresh = unsigned(cluster.a.url, "sso-oidc").create_token(
        **{**refresh, "refreshToken": other["refreshToken"]})
    sso_a, sso_b = unsigned(cluster.a.url, "sso"), unsigned(cluster.b.url, "sso")
    assert sso_b.list_accounts(accessToken=fresh["accessToken"])["accountList"] == []
    sso_b.logout(accessToken=fresh["accessToken"])
    assert refused(sso_a.list_accounts,
                   accessToken=fresh["accessToken"]) == "UnauthorizedException"


def test_a_membership_removed_on_one_process_ends_the_role_on_every_process(
        cluster: Cluster) -> None:
    """The portal's reads are cached per process (identitycenter/reads.py); a change made
    through one process is seen by the next request on every other — here with
    iam.policy_cache_seconds at 60, so no cache running out explains it."""
    store, sso = cluster.admin("identitystore"), cluster.admin("sso-admin")
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    group = store.create_group(IdentityStoreId=cluster.identity_store_id,
                               DisplayName="Distributed")["GroupId"]
    membership = store.create_group_membership(
        IdentityStoreId=cluster.identity_store_id, GroupId=group,
        MemberId={"UserId": cluster.user_id})["MembershipId"]
    ps = sso.create_permission_set(InstanceArn=instance, Name="Distributed")[
        "PermissionSet"]["PermissionSetArn"]
    status = sso.create_account_assignment(
        InstanceArn=instance, TargetId=cluster.account_id, TargetType="AWS_ACCOUNT",
        PermissionSetArn=ps, PrincipalType="GROUP", PrincipalId=group)
    assert status["AccountAssignmentCreationStatus"]["Status"] == "SUCCEEDED"
    client = register(cluster.a.url)
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    token = device_tokens(cluster, secret)["accessToken"]
    ask = {"accessToken": token, "accountId": cluster.account_id, "roleName": "Distributed"}
    portals = [unsigned(url, "sso") for url in (cluster.a.url, cluster.a.url, cluster.b.url)]
    for portal in portals:  # every process (a has two workers) has read and kept it
        assert portal.get_role_credentials(**ask)["roleCredentials"]["accessKeyId"]
    store.delete_group_membership(IdentityStoreId=cluster.identity_store_id,
                                  MembershipId=membership)
    for portal in portals:
        assert refused(portal.get_role_credentials, **ask) == "ResourceNotFoundException"
        assert portal.list_accounts(accessToken=token)["accountList"] == []
    # The control: the membership back, through b this time, and every process sees it.
    cluster.admin("identitystore", cluster.b.url).create_group_membership(
        IdentityStoreId=cluster.identity_store_id, GroupId=group,
        MemberId={"UserId": cluster.user_id})
    for portal in portals:
        assert portal.get_role_credentials(**ask)["roleCredentials"]["accessKeyId"]
