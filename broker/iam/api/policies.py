"""IAM actions on managed policies and their versions, attachments and inline policies.

Attach/Detach/ListAttached and Put/Get/List/Delete of inline policies exist for users, groups
and roles alike; one handler each serves the three, told apart by the action's noun.
"""

from __future__ import annotations

from typing import Any

from broker.aws import arn
from broker.aws.errors import NoSuchEntity
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import (
    IamContext,
    Registry,
    listing_arn,
    paged,
    request_tags,
    resource_tags,
    tags_of,
)
from broker.iam.entities import GROUP, ROLE, USER, PolicyVersion
from broker.iam.policies import encoded
from broker.iam.records import paginate

_NOUN = {USER: "User", GROUP: "Group", ROLE: "Role"}


def _version(version: PolicyVersion, default: str, *, document: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"VersionId": version.id, "IsDefaultVersion": version.id == default,
                           "CreateDate": version.created}
    if document:
        out["Document"] = encoded(version.document)
    return out


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def allow_on_policy(call: Call, action: str, policy_arn: str,
                              extra: dict[str, Any] | None = None) -> None:
        try:
            policy = await iam.policies.get(call.principal.account_id, policy_arn)
        except NoSuchEntity:
            await ctx.allow(call, action, policy_arn, extra)
            return
        await ctx.allow(call, action, policy.arn, {**resource_tags(policy.tags), **(extra or {})})

    # -- managed policies -----------------------------------------------------------------------

    @ops.action("CreatePolicy")
    async def create_policy(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        path, tags = p.get("Path", "/"), tags_of(p)
        await ctx.allow(call, "CreatePolicy", arn.policy(account, path, p["PolicyName"]),
                        request_tags(tags))
        policy = await iam.policies.create(account, p["PolicyName"], p["PolicyDocument"],
                                           path=path, description=p.get("Description"),
                                           tags=tags)
        return {"Policy": policy.wire(0)}

    @ops.action("GetPolicy")
    async def get_policy(call: Call) -> Result:
        account, policy_arn = call.principal.account_id, call.params["PolicyArn"]
        await allow_on_policy(call, "GetPolicy", policy_arn)
        policy = await iam.policies.get(account, policy_arn)
        attached, bounding = await iam.policies.usage_counts(account)
        return {"Policy": policy.wire(attached.get(policy.policy_id, 0),
                                      bounding.get(policy.policy_id, 0))}

    @ops.action("ListPolicies")
    async def list_policies(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await ctx.allow(call, "ListPolicies", listing_arn(account, "policy"))
        page = await iam.policies.listing(
            account, scope=p.get("Scope", "All"), only_attached=p.get("OnlyAttached", False),
            path_prefix=p.get("PathPrefix", "/"), marker=p.get("Marker"),
            max_items=p.get("MaxItems"))
        attached, bounding = await iam.policies.usage_counts(account)
        return paged(page, "Policies",
                     lambda pol: pol.wire(attached.get(pol.policy_id, 0),
                                          bounding.get(pol.policy_id, 0), listing=True))

    @ops.action("DeletePolicy")
    async def delete_policy(call: Call) -> Result:
        policy_arn = call.params["PolicyArn"]
        await allow_on_policy(call, "DeletePolicy", policy_arn)
        await iam.policies.delete(call.principal.account_id, policy_arn)
        return None

    @ops.action("CreatePolicyVersion")
    async def create_policy_version(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "CreatePolicyVersion", p["PolicyArn"])
        set_default = p.get("SetAsDefault", False)
        version = await iam.policies.create_version(call.principal.account_id, p["PolicyArn"],
                                                    p["PolicyDocument"], set_default)
        return {"PolicyVersion": _version(version, version.id if set_default else "",
                                          document=False)}

    @ops.action("GetPolicyVersion")
    async def get_policy_version(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "GetPolicyVersion", p["PolicyArn"])
        policy, version = await iam.policies.version(call.principal.account_id,
                                                     p["PolicyArn"], p["VersionId"])
        return {"PolicyVersion": _version(version, policy.default_version)}

    @ops.action("ListPolicyVersions")
    async def list_policy_versions(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "ListPolicyVersions", p["PolicyArn"])
        policy = await iam.policies.get(call.principal.account_id, p["PolicyArn"])
        versions = sorted(policy.versions, key=lambda v: int(v.id[1:]), reverse=True)
        page = paginate(versions, lambda v: f"{10**9 - int(v.id[1:]):010d}", p.get("Marker"),
                        p.get("MaxItems"))
        return paged(page, "Versions",
                     lambda v: _version(v, policy.default_version, document=False))

    @ops.action("DeletePolicyVersion")
    async def delete_policy_version(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "DeletePolicyVersion", p["PolicyArn"])
        await iam.policies.delete_version(call.principal.account_id, p["PolicyArn"],
                                          p["VersionId"])
        return None

    @ops.action("SetDefaultPolicyVersion")
    async def set_default_policy_version(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "SetDefaultPolicyVersion", p["PolicyArn"])
        await iam.policies.set_default(call.principal.account_id, p["PolicyArn"],
                                       p["VersionId"])
        return None

    @ops.action("TagPolicy")
    async def tag_policy(call: Call) -> Result:
        tags = tags_of(call.params)
        await allow_on_policy(call, "TagPolicy", call.params["PolicyArn"], request_tags(tags))
        await iam.policies.retag(call.principal.account_id, call.params["PolicyArn"], add=tags)
        return None

    @ops.action("UntagPolicy")
    async def untag_policy(call: Call) -> Result:
        keys = tuple(call.params["TagKeys"])
        await allow_on_policy(call, "UntagPolicy", call.params["PolicyArn"],
                              {"aws:TagKeys": list(keys)})
        await iam.policies.retag(call.principal.account_id, call.params["PolicyArn"],
                                 remove=keys)
        return None

    @ops.action("ListPolicyTags")
    async def list_policy_tags(call: Call) -> Result:
        p = call.params
        await allow_on_policy(call, "ListPolicyTags", p["PolicyArn"])
        policy = await iam.policies.get(call.principal.account_id, p["PolicyArn"])
        page = paginate(list(policy.tags), lambda t: t.key, p.get("Marker"), p.get("MaxItems"))
        return paged(page, "Tags", lambda t: t.wire())

    @ops.action("ListEntitiesForPolicy")
    async def list_entities_for_policy(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await allow_on_policy(call, "ListEntitiesForPolicy", p["PolicyArn"])
        users, groups, roles = await iam.policies.entities_for(account, p["PolicyArn"])
        wanted = p.get("EntityFilter")
        prefix = p.get("PathPrefix", "/")
        # One page across the three lists, in this order, with one marker.
        entries: list[tuple[str, str, dict[str, str]]] = []
        if wanted in (None, "Group"):
            entries += [(f"1/{g.name.lower()}", "PolicyGroups",
                         {"GroupName": g.name, "GroupId": g.group_id})
                        for g in groups if g.path.startswith(prefix)]
        if wanted in (None, "User"):
            entries += [(f"2/{u.name.lower()}", "PolicyUsers",
                         {"UserName": u.name, "UserId": u.user_id})
                        for u in users if u.path.startswith(prefix)]
        if wanted in (None, "Role"):
            entries += [(f"3/{r.name.lower()}", "PolicyRoles",
                         {"RoleName": r.name, "RoleId": r.role_id})
                        for r in roles if r.path.startswith(prefix)]
        page = paginate(entries, lambda e: e[0], p.get("Marker"), p.get("MaxItems"))
        out: dict[str, Any] = {"PolicyGroups": [], "PolicyUsers": [], "PolicyRoles": [],
                               "IsTruncated": page.marker is not None}
        if page.marker is not None:
            out["Marker"] = page.marker
        for _, section, entity in page.items:
            out[section].append(entity)
        return out

    # -- attachments and inline policies, for users, groups and roles ---------------------------

    for kind in (USER, GROUP, ROLE):
        _register_principal_actions(ops, ctx, kind)

    return ops.operations


def _register_principal_actions(ops: Registry, ctx: IamContext, kind: str) -> None:
    iam = ctx.iam
    noun = _NOUN[kind]
    name_param = f"{noun}Name"

    @ops.action(f"Attach{noun}Policy")
    async def attach(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Attach{noun}Policy", p[name_param],
                                        {"iam:PolicyARN": p["PolicyArn"]})
        await iam.policies.attach(kind, call.principal.account_id, name, p["PolicyArn"])
        return None

    @ops.action(f"Detach{noun}Policy")
    async def detach(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Detach{noun}Policy", p[name_param],
                                        {"iam:PolicyARN": p["PolicyArn"]})
        await iam.policies.detach(kind, call.principal.account_id, name, p["PolicyArn"])
        return None

    @ops.action(f"ListAttached{noun}Policies")
    async def list_attached(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"ListAttached{noun}Policies",
                                        p[name_param])
        page = await iam.policies.attached(kind, call.principal.account_id, name,
                                           path_prefix=p.get("PathPrefix", "/"),
                                           marker=p.get("Marker"), max_items=p.get("MaxItems"))
        return paged(page, "AttachedPolicies", lambda ref: ref.wire())

    @ops.action(f"Put{noun}Policy")
    async def put_inline(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Put{noun}Policy", p[name_param])
        await iam.policies.put_inline(kind, call.principal.account_id, name, p["PolicyName"],
                                      p["PolicyDocument"])
        return None

    @ops.action(f"Get{noun}Policy")
    async def get_inline(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Get{noun}Policy", p[name_param])
        inline = await iam.policies.get_inline(kind, call.principal.account_id, name,
                                               p["PolicyName"])
        entity = await iam.policies.principal(kind, call.principal.account_id, name)
        return {name_param: entity.name, "PolicyName": inline.name,
                "PolicyDocument": encoded(inline.document)}

    @ops.action(f"List{noun}Policies")
    async def list_inline(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"List{noun}Policies", p[name_param])
        page = await iam.policies.inline_names(kind, call.principal.account_id, name,
                                               marker=p.get("Marker"),
                                               max_items=p.get("MaxItems"))
        return paged(page, "PolicyNames", lambda n: n)

    @ops.action(f"Delete{noun}Policy")
    async def delete_inline(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Delete{noun}Policy", p[name_param])
        await iam.policies.delete_inline(kind, call.principal.account_id, name,
                                         p["PolicyName"])
        return None

