"""IAM actions on the account: its alias, its password policy, and the whole picture
(GetAccountAuthorizationDetails)."""

from __future__ import annotations

import base64
from typing import Any

from broker.aws.errors import AwsError, NoSuchEntity
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import IamContext, Registry
from broker.iam.entities import (
    GROUP,
    ROLE,
    USER,
    Group,
    PasswordPolicy,
    Role,
    User,
    boundary_wire,
)
from broker.iam.policies import encoded
from broker.iam.records import paginate, unmark


def _inline(entity: User | Group | Role) -> list[dict[str, str]]:
    return [{"PolicyName": p.name, "PolicyDocument": encoded(p.document)}
            for p in entity.inline]


def _attached(entity: User | Group | Role) -> list[dict[str, str]]:
    return [ref.wire() for ref in entity.attached]


class _OrgFeatureError(AwsError):
    """The errors IAM's centralized root access actions share with no other action."""

    status = 400
    sender_fault = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    # -- the credential report ------------------------------------------------------------------

    @ops.action("GenerateCredentialReport")
    async def generate_report(call: Call) -> Result:
        await ctx.allow(call, "GenerateCredentialReport", "*")
        # The broker makes the report at once, so it is always COMPLETE (AWS may first say
        # STARTED; clients poll until COMPLETE either way).
        return {"State": await iam.reports.generate(call.principal.account_id)}

    @ops.action("GetCredentialReport")
    async def get_report(call: Call) -> Result:
        await ctx.allow(call, "GetCredentialReport", "*")
        report = await iam.reports.get(call.principal.account_id)
        return {"Content": base64.b64encode(report.content).decode("ascii"),
                "ReportFormat": "text/csv", "GeneratedTime": report.generated}

    # -- the alias ------------------------------------------------------------------------------

    @ops.action("CreateAccountAlias")
    async def create_alias(call: Call) -> Result:
        await ctx.allow(call, "CreateAccountAlias", "*")
        await iam.set_alias(call.principal.account_id, call.params["AccountAlias"])
        return None

    @ops.action("ListAccountAliases")
    async def list_aliases(call: Call) -> Result:
        await ctx.allow(call, "ListAccountAliases", "*")
        account = await iam.get_account(call.principal.account_id)
        return {"AccountAliases": [account.alias] if account.alias else [],
                "IsTruncated": False}

    @ops.action("DeleteAccountAlias")
    async def delete_alias(call: Call) -> Result:
        await ctx.allow(call, "DeleteAccountAlias", "*")
        await iam.delete_alias(call.principal.account_id, call.params["AccountAlias"])
        return None

    # -- the password policy --------------------------------------------------------------------

    @ops.action("UpdateAccountPasswordPolicy")
    async def update_password_policy(call: Call) -> Result:
        await ctx.allow(call, "UpdateAccountPasswordPolicy", "*")
        p = call.params
        policy = PasswordPolicy(
            minimum_length=p.get("MinimumPasswordLength", 6),
            require_symbols=p.get("RequireSymbols", False),
            require_numbers=p.get("RequireNumbers", False),
            require_uppercase=p.get("RequireUppercaseCharacters", False),
            require_lowercase=p.get("RequireLowercaseCharacters", False),
            allow_users_to_change=p.get("AllowUsersToChangePassword", False),
            max_age=p.get("MaxPasswordAge") or None,
            reuse_prevention=p.get("PasswordReusePrevention") or None,
            hard_expiry=p.get("HardExpiry", False),
        )
        await iam.logins.set_policy(call.principal.account_id, policy)
        return None

    @ops.action("GetAccountPasswordPolicy")
    async def get_password_policy(call: Call) -> Result:
        account = call.principal.account_id
        await ctx.allow(call, "GetAccountPasswordPolicy", "*")
        policy = await iam.logins.policy(account)
        if policy is None:
            raise NoSuchEntity(
                f"The Password Policy with domain name {account} cannot be found.")
        return {"PasswordPolicy": {
            "MinimumPasswordLength": policy.minimum_length,
            "RequireSymbols": policy.require_symbols,
            "RequireNumbers": policy.require_numbers,
            "RequireUppercaseCharacters": policy.require_uppercase,
            "RequireLowercaseCharacters": policy.require_lowercase,
            "AllowUsersToChangePassword": policy.allow_users_to_change,
            "ExpirePasswords": policy.max_age is not None,
            "MaxPasswordAge": policy.max_age,
            "PasswordReusePrevention": policy.reuse_prevention,
            "HardExpiry": policy.hard_expiry,
        }}

    @ops.action("DeleteAccountPasswordPolicy")
    async def delete_password_policy(call: Call) -> Result:
        await ctx.allow(call, "DeleteAccountPasswordPolicy", "*")
        await iam.logins.delete_policy(call.principal.account_id)
        return None

    # -- everything at once ---------------------------------------------------------------------

    @ops.action("GetAccountAuthorizationDetails")
    async def authorization_details(call: Call) -> Result:
        account = call.principal.account_id
        await ctx.allow(call, "GetAccountAuthorizationDetails", "*")
        wanted = set(call.params.get("Filter") or
                     ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"])
        groups = {g.group_id: g for g in await iam.entities.all(Group, GROUP, account)}
        # One page across the four lists, in this order, with one marker. Each list is read
        # from where the marker points and only as far as the page (and one more entry, which
        # says whether the listing goes on) can reach: keyset pagination, so the thousandth
        # page of a large account costs what its first does.
        after = unmark(call.params.get("Marker"))
        limit = call.params.get("MaxItems")
        wanted_entries = (100 if limit is None else limit) + 1
        entries: list[tuple[str, str, dict[str, Any]]] = []

        async def reach(number: int, cls: type[Any], kind: str) -> list[Any]:
            """The entities of a list the page reaches, from where the marker points."""
            prefix = f"{number}/"
            room = wanted_entries - len(entries)
            if room <= 0 or (after is not None and after >= prefix
                             and not after.startswith(prefix)):
                return []
            within = after[len(prefix):] if after and after.startswith(prefix) else None
            return await iam.entities.after(cls, kind, account, within, room)

        if "User" in wanted:
            entries += [(f"1/{u.name.lower()}", "UserDetailList", {
                "Path": u.path, "UserName": u.name, "UserId": u.user_id, "Arn": u.arn,
                "CreateDate": u.created, "UserPolicyList": _inline(u),
                "GroupList": [groups[g].name for g in u.groups if g in groups],
                "AttachedManagedPolicies": _attached(u),
                "PermissionsBoundary": boundary_wire(u.boundary) if u.boundary else None,
                "Tags": [t.wire() for t in u.tags],
            }) for u in await reach(1, User, USER)]
        if "Group" in wanted:
            entries += [(f"2/{g.name.lower()}", "GroupDetailList", {
                "Path": g.path, "GroupName": g.name, "GroupId": g.group_id, "Arn": g.arn,
                "CreateDate": g.created, "GroupPolicyList": _inline(g),
                "AttachedManagedPolicies": _attached(g),
            }) for g in groups.values()
                if after is None or f"2/{g.name.lower()}" > after]
        if "Role" in wanted:
            for r in await reach(3, Role, ROLE):
                if isinstance(r, Role):
                    detail = r.wire()
                    detail.pop("Description", None)
                    detail.pop("MaxSessionDuration", None)
                    detail.update({"InstanceProfileList": [], "RolePolicyList": _inline(r),
                                   "AttachedManagedPolicies": _attached(r)})
                    entries.append((f"3/{r.name.lower()}", "RoleDetailList", detail))
        scope = [s for s, f in (("Local", "LocalManagedPolicy"), ("AWS", "AWSManagedPolicy"))
                 if f in wanted]
        # The policies' attachment counts need every principal: read only for a page that
        # reaches the policies.
        if not scope or len(entries) >= wanted_entries:
            scope_read: list[str] = []
        else:
            scope_read = scope
            counts, bounding = await iam.policies.usage_counts(account)
        for s in scope_read:
            listing = await iam.policies.listing(account, scope=s, only_attached=s == "AWS",
                                                 max_items=10_000)
            entries += [(f"4/{p.arn.lower()}", "Policies", {
                **{k: v for k, v in p.wire(counts.get(p.policy_id, 0),
                                           bounding.get(p.policy_id, 0)).items() if k != "Tags"},
                "PolicyVersionList": [
                    {"Document": encoded(v.document), "VersionId": v.id,
                     "IsDefaultVersion": v.id == p.default_version, "CreateDate": v.created}
                    for v in p.versions],
            }) for p in listing.items]
        page = paginate(entries, lambda e: e[0], call.params.get("Marker"),
                        call.params.get("MaxItems"))
        out: dict[str, Any] = {"IsTruncated": page.marker is not None}
        if page.marker is not None:
            out["Marker"] = page.marker
        for section, filtered in (("UserDetailList", "User"), ("GroupDetailList", "Group"),
                                  ("RoleDetailList", "Role")):
            if filtered in wanted:
                out[section] = []
        if scope:
            out["Policies"] = []
        for _, section, detail in page.items:
            out[section].append(detail)
        return out

    # -- centralized root access ----------------------------------------------------------------

    async def features(call: Call, feature: str | None, enable: bool) -> Result:
        await ctx.allow(call, call.action, "*")
        guard = ctx.authz.guard
        account = call.principal.account_id
        org = await guard.organizations.org_of(account) if guard is not None else None
        if guard is None or org is None:
            raise _OrgFeatureError("OrganizationNotFoundException",
                                   "The request was rejected because no organization is "
                                   "associated with your account.")
        if org.management != account:
            code = "CallerIsNotManagementAccountException" if enable and feature \
                else "AccountNotManagementOrDelegatedAdministratorException"
            raise _OrgFeatureError(code, "The request was rejected because the account "
                                   "making the request is not the management account of "
                                   "the organization.")
        # The service checks IAM's trusted access (ServiceAccessNotEnabledException).
        written = await guard.organizations.root_features(account, feature, enable)
        return {"OrganizationId": written.id,
                "EnabledFeatures": list(written.data.get("root_features", []))}

    for name, feature, enable in (
            ("EnableOrganizationsRootCredentialsManagement", "RootCredentialsManagement", True),
            ("DisableOrganizationsRootCredentialsManagement", "RootCredentialsManagement",
             False),
            ("EnableOrganizationsRootSessions", "RootSessions", True),
            ("DisableOrganizationsRootSessions", "RootSessions", False),
            ("ListOrganizationsFeatures", None, False)):
        async def handler(call: Call, feature: str | None = feature,
                          enable: bool = enable) -> Result:
            return await features(call, feature, enable)

        ops.action(name)(handler)

    return ops.operations
