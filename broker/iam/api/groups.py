"""IAM actions on groups and their members."""

from __future__ import annotations

from broker.aws import arn
from broker.aws.errors import NoSuchEntity
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import IamContext, Registry, listing_arn, paged
from broker.iam.entities import GROUP, Group
from broker.iam.records import paginate


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def allow_on_group(call: Call, action: str, name: str) -> str:
        return await ctx.allow_on(call, GROUP, action, name)

    @ops.action("CreateGroup")
    async def create_group(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        path = p.get("Path", "/")
        await ctx.allow(call, "CreateGroup", arn.group(account, path, p["GroupName"]))
        group = await iam.groups.create(account, p["GroupName"], path)
        return {"Group": group.wire()}

    @ops.action("GetGroup")
    async def get_group(call: Call) -> Result:
        p = call.params
        name = await allow_on_group(call, "GetGroup", p["GroupName"])
        group, page = await iam.groups.members(call.principal.account_id, name,
                                               marker=p.get("Marker"),
                                               max_items=p.get("MaxItems"))
        return {"Group": group.wire(), **paged(page, "Users", lambda u: u.wire(listing=True))}

    @ops.action("ListGroups")
    async def list_groups(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await ctx.allow(call, "ListGroups", listing_arn(account, "group"))
        page = await iam.groups.listing(account, path_prefix=p.get("PathPrefix", "/"),
                                        marker=p.get("Marker"), max_items=p.get("MaxItems"))
        return paged(page, "Groups", Group.wire)

    @ops.action("UpdateGroup")
    async def update_group(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        name = await allow_on_group(call, "UpdateGroup", p["GroupName"])
        if "NewPath" in p or "NewGroupName" in p:
            # AWS: the action on the group as it is and as it will be.
            group = await iam.groups.get(account, name)
            await ctx.allow(call, "UpdateGroup", arn.group(account, p.get("NewPath", group.path),
                                                           p.get("NewGroupName", group.name)))
        await iam.groups.update(call.principal.account_id, name, new_path=p.get("NewPath"),
                                new_name=p.get("NewGroupName"))
        return None

    @ops.action("DeleteGroup")
    async def delete_group(call: Call) -> Result:
        name = await allow_on_group(call, "DeleteGroup", call.params["GroupName"])
        await iam.groups.delete(call.principal.account_id, name)
        return None

    @ops.action("AddUserToGroup")
    async def add_user_to_group(call: Call) -> Result:
        p = call.params
        name = await allow_on_group(call, "AddUserToGroup", p["GroupName"])
        await iam.groups.add_user(call.principal.account_id, name, p["UserName"])
        return None

    @ops.action("RemoveUserFromGroup")
    async def remove_user_from_group(call: Call) -> Result:
        p = call.params
        name = await allow_on_group(call, "RemoveUserFromGroup", p["GroupName"])
        await iam.groups.remove_user(call.principal.account_id, name, p["UserName"])
        return None

    @ops.action("ListGroupsForUser")
    async def list_groups_for_user(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        try:
            user = await iam.get_user(account, p["UserName"])
        except NoSuchEntity:
            await ctx.allow(call, "ListGroupsForUser", arn.user(account, "/", p["UserName"]))
            raise
        await ctx.allow(call, "ListGroupsForUser", user.arn)
        groups = sorted(await iam.groups.of_user(user), key=lambda g: g.name.lower())
        page = paginate(groups, lambda g: g.name.lower(), p.get("Marker"), p.get("MaxItems"))
        return paged(page, "Groups", Group.wire)

    return ops.operations
