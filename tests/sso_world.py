"""A world for the sso-oidc and sso tests: a broker on a clock the tests move, two accounts
each with an Identity Center instance, a directory user, and a permission set assigned to
that user in its own account; boto3's unsigned ``sso-oidc`` and ``sso`` clients, checked
strictly against botocore's models."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
import pytest

from broker.identitycenter.directory import USER
from broker.identitycenter.oauth import OAuth
from broker.store.base import Record, Ref
from tests.helpers import Broker, Creds
from tests.integration.test_organizations import conforms


class MovableClock:
    """The real time, plus an offset a test may move forward for a while."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @contextmanager
    def later(self, seconds: float) -> Iterator[None]:
        """Within the block, the broker's time is ``seconds`` ahead (only unsigned calls: a
        SigV4 signature would be too old). What expires while ahead is gone for good: the
        in-memory store drops entries it finds expired."""
        before = self.offset
        self.offset += timedelta(seconds=seconds)
        try:
            yield
        finally:
            self.offset = before


def strict(client: Any) -> Any:
    """A client whose answers are checked against the model's output shapes, and whose
    errors against the errors the model lists for the action, in rest-json's form (the code
    in x-amzn-ErrorType, the body the error shape's members)."""
    service = client.meta.service_model

    def check(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        op = operation_model
        body = json.loads(response_dict["body"] or b"{}")
        assert response_dict["headers"]["content-type"] == "application/json", op.name
        if response_dict["status_code"] == 200:
            if op.output_shape is not None:
                conforms(body, op.output_shape, op.name)
            return
        code = response_dict["headers"]["x-amzn-errortype"]
        documented = {e.name: e for e in op.error_shapes}
        assert code in documented, (op.name, code, body)
        shape = documented[code]
        assert response_dict["status_code"] == shape.metadata["error"]["httpStatusCode"], \
            (op.name, code, response_dict["status_code"])
        assert set(body) <= set(shape.members), (op.name, body)
        assert body, (op.name, code)

    # First: botocore copies sso-oidc's error_description into a Message of its own after.
    client.meta.events.register_first(f"before-parse.{service.service_id.hyphenize()}.*",
                                      check)
    return client


def code_of(refused: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(refused.value.response["Error"]["Code"])


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Tenant:
    """An account with an instance, a directory user and a role assigned to them."""

    account_id: str
    root: Creds
    instance_arn: str
    identity_store_id: str
    user_id: str
    user_name: str
    role_name: str
    start_url: str
    permission_set_arn: str = ""


@dataclass
class SsoWorld:
    broker: Broker
    clock: MovableClock
    one: Tenant
    two: Tenant

    @property
    def oauth(self) -> OAuth:
        oauth: OAuth = self.broker.runtime.oauth
        return oauth

    def client(self, service: str) -> Any:
        return strict(boto3.client(
            service, endpoint_url=self.broker.url, region_name="us-east-1",
            config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                          retries={"max_attempts": 1, "mode": "standard"})))

    def raw_client(self, service: str) -> Any:
        """Without botocore's parameter validation (for values it would refuse itself)."""
        return strict(boto3.client(
            service, endpoint_url=self.broker.url, region_name="us-east-1",
            config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                          parameter_validation=False,
                                          retries={"max_attempts": 1, "mode": "standard"})))

    def register(self, **extra: Any) -> dict[str, Any]:
        made: dict[str, Any] = self.client("sso-oidc").register_client(
            clientName="tests", clientType="public", scopes=["sso:account:access"], **extra)
        return made

    def register_for_code(self, tenant: Tenant) -> dict[str, Any]:
        return self.register(grantTypes=["authorization_code", "refresh_token"],
                             redirectUris=["http://127.0.0.1/oauth/callback"],
                             issuerUrl=tenant.start_url)

    def approve(self, user_code: str, tenant: Tenant, user_id: str | None = None) -> None:
        """What the portal does when the person, signed in, allows the request."""
        self.broker.server.call(self.oauth.approve_device(
            user_code, account_id=tenant.account_id,
            identity_store_id=tenant.identity_store_id, user_id=user_id or tenant.user_id))

    def device_tokens(self, tenant: Tenant, client: dict[str, Any] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(client, tokens) of a device flow approved honestly."""
        client = client or self.register()
        oidc = self.client("sso-oidc")
        started = oidc.start_device_authorization(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            startUrl=tenant.start_url)
        self.approve(started["userCode"], tenant)
        tokens = oidc.create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="urn:ietf:params:oauth:grant-type:device_code",
            deviceCode=started["deviceCode"])
        return client, tokens

    def code_tokens(self, tenant: Tenant) -> tuple[dict[str, Any], dict[str, Any]]:
        """(client, tokens) of an authorization-code flow with PKCE, approved honestly."""
        client = self.register_for_code(tenant)
        verifier, challenge = pkce()
        redirect = "http://127.0.0.1:43111/oauth/callback"
        code = self.issue_code(client, tenant, challenge, redirect)
        tokens = self.client("sso-oidc").create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="authorization_code", code=code, redirectUri=redirect,
            codeVerifier=verifier)
        return client, tokens

    def issue_code(self, client: dict[str, Any], tenant: Tenant, challenge: str,
                   redirect: str) -> str:
        """What the portal does at /authorize for a signed-in person."""
        async def run() -> str:
            request = await self.oauth.authorization_request(
                client_id=client["clientId"], redirect_uri=redirect, code_challenge=challenge,
                code_challenge_method="S256", scopes=["sso:account:access"], state="s")
            return await self.oauth.issue_code(
                request, account_id=tenant.account_id,
                identity_store_id=tenant.identity_store_id, user_id=tenant.user_id)
        return self.broker.server.call(run())


def make_world(broker: Broker, clock: MovableClock) -> SsoWorld:
    return SsoWorld(broker, clock, make_tenant(broker, "ReadOnly"),
                    make_tenant(broker, "Other"))


def new_user(broker: Broker, account_id: str, store_id: str, user_name: str) -> str:
    """A directory user, made as the identitystore API makes them."""
    runtime = broker.runtime

    async def run() -> str:
        instance = await runtime.identity_center.instances.by_store(store_id)
        assert instance is not None and instance.account_id == account_id
        user = await runtime.identity_center.directory.create_user(instance, {
            "UserName": user_name, "DisplayName": "A Person",
            "Name": {"GivenName": "A", "FamilyName": "Person"}}, "tests")
        return user.user_id
    return broker.server.call(run())


def set_status(broker: Broker, account_id: str, store_id: str, user_id: str,
               status: str) -> None:
    """Set a directory user's status (ENABLED / DISABLED) in their record, as the directory
    keeps it: no API sets it yet."""
    def change(record: Record) -> dict[str, Any]:
        return {**record.data, "meta": {**record.data["meta"], "status": status}}
    broker.server.call(broker.runtime.store.update(
        Ref(USER, account_id, f"{store_id}/{user_id}"), change))


def assign(broker: Broker, tenant: Tenant, user_id: str,
           principal_type: str = "USER") -> None:
    """Give a user (or a group: ``principal_type`` GROUP) the tenant's permission set in its
    account, as sso-admin does, and wait for the assignment to be provisioned."""
    admin = broker.client("sso-admin", tenant.root)
    status = admin.create_account_assignment(
        InstanceArn=tenant.instance_arn, TargetId=tenant.account_id, TargetType="AWS_ACCOUNT",
        PermissionSetArn=tenant.permission_set_arn, PrincipalType=principal_type,
        PrincipalId=user_id)["AccountAssignmentCreationStatus"]
    for _ in range(200):
        status = admin.describe_account_assignment_creation_status(
            InstanceArn=tenant.instance_arn,
            AccountAssignmentCreationRequestId=status["RequestId"]
        )["AccountAssignmentCreationStatus"]
        if status["Status"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
    assert status["Status"] == "SUCCEEDED", status


def make_tenant(broker: Broker, role_name: str) -> Tenant:
    account_id, root = broker.new_account()
    admin = broker.client("sso-admin", root)
    instance_arn = admin.create_instance(Name=f"corp-{account_id}")["InstanceArn"]
    store_id = admin.describe_instance(InstanceArn=instance_arn)["IdentityStoreId"]
    user_name = f"person-{secrets.token_hex(3)}"
    user_id = broker.client("identitystore", root).create_user(  # as an administrator does
        IdentityStoreId=store_id, UserName=user_name, DisplayName="A Person",
        Name={"GivenName": "A", "FamilyName": "Person"})["UserId"]
    ps = admin.create_permission_set(InstanceArn=instance_arn, Name=role_name,
                                     SessionDuration="PT2H")["PermissionSet"]
    admin.put_inline_policy_to_permission_set(
        InstanceArn=instance_arn, PermissionSetArn=ps["PermissionSetArn"],
        InlinePolicy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}))
    tenant = Tenant(account_id, root, instance_arn, store_id, user_id, user_name, role_name,
                    f"{broker.url}/start/{store_id}", ps["PermissionSetArn"])
    assign(broker, tenant, user_id)
    return tenant
