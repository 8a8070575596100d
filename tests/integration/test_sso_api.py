"""The access portal's API over boto3's real ``sso`` client — ListAccounts, ListAccountRoles,
GetRoleCredentials, Logout — with tokens of the real OAuth server, and botocore's own SSO
credential provider (with its token refresh) reaching a role; each refusal beside the honest
call that succeeds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
import pytest
from botocore.credentials import SSOProvider
from botocore.tokens import SSOTokenProvider

from broker.identitycenter import portal_api
from tests.helpers import start_broker
from tests.sso_world import (
    MovableClock,
    SsoWorld,
    assign,
    code_of,
    make_world,
    new_user,
    set_status,
)

MODEL = botocore.session.get_session().get_service_model("sso")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoWorld]:
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("sso-api"), clock=clock)
    try:
        yield make_world(broker, clock)
    finally:
        broker.stop()


def refused(call: Any, **params: Any) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**params)
    return code_of(caught), caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def audit_events(world: SsoWorld) -> list[dict[str, Any]]:
    path = world.broker.settings.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_the_error_statuses_are_the_models() -> None:
    for op in MODEL.operation_names:
        for e in MODEL.operation_model(op).error_shapes:
            assert portal_api.STATUSES[e.name] == e.metadata["error"]["httpStatusCode"]


def test_accounts_roles_and_credentials(world: SsoWorld) -> None:
    _, tokens = world.device_tokens(world.one)
    sso, token = world.client("sso"), tokens["accessToken"]
    accounts = sso.list_accounts(accessToken=token)["accountList"]
    assert [a["accountId"] for a in accounts] == [world.one.account_id]
    roles = sso.list_account_roles(accessToken=token, accountId=world.one.account_id)
    assert roles["roleList"] == [{"roleName": "ReadOnly", "accountId": world.one.account_id}]
    creds = sso.get_role_credentials(accessToken=token, accountId=world.one.account_id,
                                     roleName="ReadOnly")["roleCredentials"]
    expiration = datetime.fromtimestamp(creds["expiration"] / 1000, UTC)
    assert timedelta(hours=1, minutes=59) < expiration - datetime.now(UTC) <= timedelta(hours=2)
    caller = boto3.client(
        "sts", endpoint_url=world.broker.url, region_name="us-east-1",
        aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
        aws_session_token=creds["sessionToken"]).get_caller_identity()
    assert caller["Account"] == world.one.account_id
    assert ":assumed-role/AWSReservedSSO_ReadOnly_" in caller["Arn"]
    assert caller["Arn"].endswith(f"/{world.one.user_name}")
    issued = [e for e in audit_events(world) if e["eventName"] == "GetRoleCredentials"
              and e.get("additionalEventData", {}).get("IssuedAccessKeyId") ==
              creds["accessKeyId"]]
    assert [e.get("errorCode") for e in issued] == [None]
    assert issued[0]["recipientAccountId"] == world.one.account_id
    # The caller is the Identity Center user, not an ARN; the session issued is IssuedTo.
    assert issued[0]["userIdentity"] == {
        "type": "Unknown", "accountId": world.one.account_id, "userName": world.one.user_name,
        "onBehalfOf": {"userId": world.one.user_id, "identityStoreArn":
                       f"arn:aws:identitystore::{world.one.account_id}:identitystore/"
                       f"{world.one.identity_store_id}"}}
    assert issued[0]["additionalEventData"]["IssuedTo"] == caller["Arn"]
    # Paging: one at a time.
    page = sso.list_accounts(accessToken=token, maxResults=1)
    assert len(page["accountList"]) == 1 and "nextToken" not in page
    assert refused(sso.list_accounts, accessToken=token,
                   nextToken="nope") == ("InvalidRequestException", 400)


def test_a_role_not_assigned_is_not_found(world: SsoWorld) -> None:
    _, tokens = world.device_tokens(world.one)
    sso, token = world.client("sso"), tokens["accessToken"]
    for account, role in ((world.one.account_id, "Other"), (world.two.account_id, "Other"),
                          (world.two.account_id, "ReadOnly"), ("000000000000", "ReadOnly")):
        assert refused(sso.get_role_credentials, accessToken=token, accountId=account,
                       roleName=role) == ("ResourceNotFoundException", 404), (account, role)
    sso.get_role_credentials(accessToken=token, accountId=world.one.account_id,
                             roleName="ReadOnly")  # the control
    refusals = [e for e in audit_events(world) if e["eventName"] == "GetRoleCredentials"
                and "errorCode" in e]
    assert {e["errorCode"] for e in refusals} >= {"ResourceNotFoundException"}
    assert not any("additionalEventData" in e for e in refusals)  # nothing issued
    assert not any("arn" in e["userIdentity"] for e in refusals)  # no ARN it does not have
    assert {e["userIdentity"].get("userName") for e in refusals} >= {world.one.user_name}


def test_a_token_of_another_instance_reads_nothing_of_this_one(world: SsoWorld) -> None:
    _, theirs = world.device_tokens(world.two)
    sso, token = world.client("sso"), theirs["accessToken"]
    assert [a["accountId"] for a in sso.list_accounts(accessToken=token)["accountList"]] == \
        [world.two.account_id]
    assert sso.list_account_roles(accessToken=token,
                                  accountId=world.one.account_id)["roleList"] == []
    assert refused(sso.get_role_credentials, accessToken=token,
                   accountId=world.one.account_id, roleName="ReadOnly")[0] == \
        "ResourceNotFoundException"
    # The control: their own role.
    sso.get_role_credentials(accessToken=token, accountId=world.two.account_id,
                             roleName="Other")


def test_unknown_expired_and_logged_out_tokens_are_unauthorized(world: SsoWorld) -> None:
    sso = world.client("sso")
    raw = world.raw_client("sso")
    for bad in ("nope", "aoa" + "x" * 64, "é" * 20):
        assert refused(raw.list_accounts, accessToken=bad) == ("UnauthorizedException", 401)
    _, tokens = world.device_tokens(world.one)
    token = tokens["accessToken"]
    sso.list_accounts(accessToken=token)  # the control: within its hour
    with world.clock.later(3601):
        assert refused(sso.list_accounts, accessToken=token) == ("UnauthorizedException", 401)
    _, tokens = world.device_tokens(world.one)
    token = tokens["accessToken"]
    sso.logout(accessToken=token)
    for call, params in ((sso.list_accounts, {}),
                         (sso.list_account_roles, {"accountId": world.one.account_id}),
                         (sso.get_role_credentials, {"accountId": world.one.account_id,
                                                     "roleName": "ReadOnly"}),
                         (sso.logout, {})):
        assert refused(call, accessToken=token, **params) == ("UnauthorizedException", 401)
    # Logout ended the sign-in: its refresh token is refused too.
    client, tokens = world.device_tokens(world.one)
    sso.logout(accessToken=tokens["accessToken"])
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        world.client("sso-oidc").create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="refresh_token", refreshToken=tokens["refreshToken"])
    assert code_of(caught) == "InvalidGrantException"


def test_a_deleted_users_token_stops_working(world: SsoWorld) -> None:
    tenant = world.one
    user_id = new_user(world.broker, tenant.account_id, tenant.identity_store_id,
                       "short-lived")
    client = world.register()
    oidc, sso = world.client("sso-oidc"), world.client("sso")
    started = oidc.start_device_authorization(clientId=client["clientId"],
                                              clientSecret=client["clientSecret"],
                                              startUrl=tenant.start_url)
    world.approve(started["userCode"], tenant, user_id)
    tokens = oidc.create_token(clientId=client["clientId"], clientSecret=client["clientSecret"],
                               grantType="urn:ietf:params:oauth:grant-type:device_code",
                               deviceCode=started["deviceCode"])
    assert sso.list_accounts(accessToken=tokens["accessToken"])["accountList"] == []  # control
    runtime = world.broker.runtime

    async def delete() -> None:
        instance = await runtime.identity_center.instances.by_store(tenant.identity_store_id)
        assert instance is not None
        await runtime.identity_center.directory.delete_user(instance, user_id, None)
    world.broker.server.call(delete())
    assert refused(sso.list_accounts, accessToken=tokens["accessToken"]) == \
        ("UnauthorizedException", 401)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        oidc.create_token(clientId=client["clientId"], clientSecret=client["clientSecret"],
                          grantType="refresh_token", refreshToken=tokens["refreshToken"])
    assert code_of(caught) == "InvalidGrantException"


def test_a_disabled_users_tokens_stop_working(world: SsoWorld) -> None:
    """Disabled in the directory, a user's access token, refresh token and pending approval
    are refused on every path, and enabling them again revives none of it; another user of
    the same instance, with the same role, goes on."""
    tenant = world.one
    user_id = new_user(world.broker, tenant.account_id, tenant.identity_store_id,
                       "leaver-" + hashlib.sha256(tenant.user_id.encode()).hexdigest()[:6])
    assign(world.broker, tenant, user_id)
    oidc, sso = world.client("sso-oidc"), world.client("sso")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    role = {"accountId": tenant.account_id, "roleName": tenant.role_name}

    def approved(user: str) -> str:
        started = oidc.start_device_authorization(**secret, startUrl=tenant.start_url)
        world.approve(started["userCode"], tenant, user)
        return str(started["deviceCode"])

    def redeem(device_code: str) -> dict[str, Any]:
        tokens: dict[str, Any] = oidc.create_token(
            **secret, grantType="urn:ietf:params:oauth:grant-type:device_code",
            deviceCode=device_code)
        return tokens

    def refresh(tokens: dict[str, Any]) -> dict[str, Any]:
        rotated: dict[str, Any] = oidc.create_token(
            **secret, grantType="refresh_token", refreshToken=tokens["refreshToken"])
        return rotated

    used, refreshed = redeem(approved(user_id)), redeem(approved(user_id))
    pending, control = approved(user_id), redeem(approved(tenant.user_id))
    for tokens in (used, refreshed, control):  # all of them work, first
        sso.get_role_credentials(accessToken=tokens["accessToken"], **role)
    set_status(world.broker, tenant.account_id, tenant.identity_store_id, user_id, "DISABLED")
    for call, params in ((sso.get_role_credentials, role), (sso.list_accounts, {})):
        assert refused(call, accessToken=used["accessToken"], **params) == \
            ("UnauthorizedException", 401)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        refresh(refreshed)  # its access token not used since: the refresh path refuses
    assert code_of(caught) == "InvalidGrantException"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        redeem(pending)  # approved before, redeemed after
    assert code_of(caught) == "InvalidGrantException"
    # Enabled again: the sign-ins stay ended.
    set_status(world.broker, tenant.account_id, tenant.identity_store_id, user_id, "ENABLED")
    for tokens in (used, refreshed):
        assert refused(sso.get_role_credentials, accessToken=tokens["accessToken"],
                       **role) == ("UnauthorizedException", 401)
    # The control: the other user's token, refreshed, still reaches the role.
    sso.get_role_credentials(accessToken=refresh(control)["accessToken"], **role)


def test_botocores_sso_credential_provider(world: SsoWorld, tmp_path: Path) -> None:
    """botocore's own provider, given a profile with an sso_session and the token in its
    cache, reaches the role; with the token about to expire it refreshes it first."""
    client, tokens = world.device_tokens(world.one)
    config = tmp_path / "config"
    config.write_text(
        "[profile corp]\n"
        "sso_session = corp\n"
        f"sso_account_id = {world.one.account_id}\n"
        "sso_role_name = ReadOnly\n"
        "region = us-east-1\n"
        f"endpoint_url = {world.broker.url}\n"
        "[sso-session corp]\n"
        f"sso_start_url = {world.one.start_url}\n"
        "sso_region = us-east-1\n"
        "sso_registration_scopes = sso:account:access\n")
    session = botocore.session.Session(profile="corp")
    session.set_config_variable("config_file", str(config))
    cache: dict[str, Any] = {}
    soon = datetime.now(UTC) + timedelta(minutes=1)  # within botocore's refresh window
    cache[hashlib.sha1(b"corp").hexdigest()] = {
        "startUrl": world.one.start_url, "region": "us-east-1",
        "accessToken": tokens["accessToken"], "expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clientId": client["clientId"], "clientSecret": client["clientSecret"],
        "registrationExpiresAt": datetime.fromtimestamp(
            client["clientSecretExpiresAt"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "refreshToken": tokens["refreshToken"]}
    provider = SSOProvider(load_config=lambda: session.full_config,
                           client_creator=session.create_client, profile_name="corp",
                           cache={}, token_cache=cache,
                           token_provider=SSOTokenProvider(session, cache=cache,
                                                           profile_name="corp"))
    creds = provider.load().get_frozen_credentials()
    refreshed = cache[hashlib.sha1(b"corp").hexdigest()]
    assert refreshed["accessToken"] != tokens["accessToken"]  # botocore refreshed it
    assert refreshed["refreshToken"] != tokens["refreshToken"]  # rotated
    caller = boto3.client(
        "sts", endpoint_url=world.broker.url, region_name="us-east-1",
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token).get_caller_identity()
    assert caller["Account"] == world.one.account_id
