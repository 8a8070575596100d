"""IAM Identity Center's administration actions (``sso-admin``: JSON 1.1, target
``SWBExternalService``, SigV4 service ``sso``), authorized as ``sso:ACTION`` on the
instance's ARN (``*`` to create or list)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from broker.authz import Authorizer
from broker.aws import shapes
from broker.aws.jsonproto import JsonOperation, JsonRegistry, JsonService
from broker.aws.query import Call, Result
from broker.iam.entities import Tag
from broker.identitycenter import model
from broker.identitycenter.instances import Instances, SsoError


def _invalid(faults: shapes.ShapeFaults) -> SsoError:
    return SsoError("ValidationException", faults.message())


SSO_ADMIN = JsonService("sso", "SWBExternalService", invalid_input=_invalid,
                        internal_error="InternalServerException")

def operations(instances: Instances, authz: Authorizer,
               manages_organization: Callable[[str], Awaitable[bool]]) -> list[JsonOperation]:
    registry = JsonRegistry(SSO_ADMIN, model)
    action = registry.action

    async def allow(call: Call, resource: str = "*") -> None:
        await authz.check(call.principal, f"sso:{call.action}", resource,
                          source_ip=call.source_ip, user_agent=call.user_agent,
                          secure=call.secure)

    @action("CreateInstance")
    async def create(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await allow(call)
        instance = await instances.create(
            account, name=p.get("Name"), client_token=p.get("ClientToken"),
            tags=tuple(Tag(t["Key"], t["Value"]) for t in p.get("Tags", [])),
            organization=await manages_organization(account))
        return {"InstanceArn": instance.arn}

    @action("ListInstances")
    async def listing(call: Call) -> Result:
        await allow(call)
        found = await instances.of_account(call.principal.account_id)
        out: dict[str, Any] = {"Instances": [found.wire()] if found else []}
        return out

    @action("DescribeInstance")
    async def describe(call: Call) -> Result:
        instance_arn = call.params["InstanceArn"]
        await allow(call, instance_arn)
        instance = await instances.get(call.principal.account_id, instance_arn,
                                       missing="AccessDeniedException")
        return {**instance.wire(), "IdentityStoreArn": instance.identity_store_arn}

    @action("UpdateInstance")
    async def update(call: Call) -> Result:
        p = call.params
        await allow(call, p["InstanceArn"])
        await instances.rename(call.principal.account_id, p["InstanceArn"], p.get("Name"))
        return None

    @action("DeleteInstance")
    async def delete(call: Call) -> Result:
        await allow(call, call.params["InstanceArn"])
        await instances.delete(call.principal.account_id, call.params["InstanceArn"])
        return None

    return registry.operations
