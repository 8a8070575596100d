"""IAM actions on roles: trust policies, descriptions, durations, tags, boundaries."""

from __future__ import annotations

from typing import Any

from broker.aws import arn
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import (
    IamContext,
    Registry,
    boundary_key,
    listing_arn,
    paged,
    register_tags_and_boundary,
    request_tags,
    tags_of,
)
from broker.iam.entities import ROLE


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def allow_on_role(call: Call, action: str, name: str,
                            extra: dict[str, Any] | None = None) -> str:
        return await ctx.allow_on(call, ROLE, action, name, extra)

    @ops.action("CreateRole")
    async def create_role(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        path, tags = p.get("Path", "/"), tags_of(p)
        await ctx.allow(call, "CreateRole", arn.role(account, path, p["RoleName"]),
                        {**request_tags(tags), **boundary_key(p.get("PermissionsBoundary"))})
        boundary = None
        if "PermissionsBoundary" in p:
            boundary = await iam.policies.reference(account, p["PermissionsBoundary"])
        role = await iam.roles.create(
            account, p["RoleName"], p["AssumeRolePolicyDocument"], path=path,
            description=p.get("Description"), max_session=p.get("MaxSessionDuration", 3600),
            boundary=boundary, tags=tags)
        out = role.wire()
        out.pop("RoleLastUsed", None)
        return {"Role": out}

    @ops.action("GetRole")
    async def get_role(call: Call) -> Result:
        name = await allow_on_role(call, "GetRole", call.params["RoleName"])
        return {"Role": (await iam.roles.get(call.principal.account_id, name)).wire()}

    @ops.action("ListRoles")
    async def list_roles(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await ctx.allow(call, "ListRoles", listing_arn(account, "role"))
        page = await iam.roles.listing(account, path_prefix=p.get("PathPrefix", "/"),
                                       marker=p.get("Marker"), max_items=p.get("MaxItems"))
        return paged(page, "Roles", lambda r: r.wire(listing=True))

    @ops.action("UpdateRole")
    async def update_role(call: Call) -> Result:
        p = call.params
        name = await allow_on_role(call, "UpdateRole", p["RoleName"])
        fields: dict[str, Any] = {}
        if "Description" in p:
            fields["description"] = p["Description"]
        if "MaxSessionDuration" in p:
            fields["max_session"] = p["MaxSessionDuration"]
        await iam.roles.change(call.principal.account_id, name, **fields)
        return {}

    @ops.action("UpdateRoleDescription")
    async def update_role_description(call: Call) -> Result:
        p = call.params
        name = await allow_on_role(call, "UpdateRoleDescription", p["RoleName"])
        role = await iam.roles.change(call.principal.account_id, name,
                                      description=p["Description"])
        return {"Role": role.wire()}

    @ops.action("UpdateAssumeRolePolicy")
    async def update_assume_role_policy(call: Call) -> Result:
        p = call.params
        name = await allow_on_role(call, "UpdateAssumeRolePolicy", p["RoleName"])
        await iam.roles.update_trust(call.principal.account_id, name, p["PolicyDocument"])
        return None

    @ops.action("DeleteRole")
    async def delete_role(call: Call) -> Result:
        name = await allow_on_role(call, "DeleteRole", call.params["RoleName"])
        await iam.roles.delete(call.principal.account_id, name)
        return None

    register_tags_and_boundary(ops, ctx, ROLE)

    return ops.operations
