"""The Organizations actions (JSON 1.1, target ``AWSOrganizationsV20161128``).

Each action authorizes ``organizations:ACTION`` for the caller (on the ARN of the root, OU,
account, policy or handshake it acts on, ``*`` where there is none), then runs the use case in
service.py and answers in the shapes of botocore's model. Only the management account may
change or read the organization's structure; members may describe their organization, leave it,
and answer the invitations sent to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker.authz import Authorizer
from broker.aws.jsonproto import JsonOperation, JsonRegistry, JsonService
from broker.aws.query import Call, Result
from broker.organizations import errors, model
from broker.organizations.document import AWS_MANAGED, Org, when
from broker.organizations.errors import invalid_input
from broker.organizations.service import OrganizationsService

ORGANIZATIONS = JsonService("organizations", "AWSOrganizationsV20161128",
                            invalid_input=errors.from_faults, internal_error="ServiceException")

Handler = Callable[[Call], Awaitable[Result]]
MAX_RESULTS = 20


def page(items: list[Any], params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One page: NextToken is the index of the first item not shown yet."""
    token = params.get("NextToken")
    start = 0
    if token is not None:
        if not (token.isascii() and token.isdigit() and len(token) < 10):
            raise invalid_input("The NextToken is not one this service returned.",
                                "INVALID_NEXT_TOKEN")
        start = int(token)
    limit = params.get("MaxResults") or MAX_RESULTS
    out: dict[str, Any] = {name: items[start:start + limit]}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out


def operations(orgs: OrganizationsService, authz: Authorizer) -> list[JsonOperation]:
    registry = JsonRegistry(ORGANIZATIONS, model)
    action = registry.action

    async def allow(call: Call, resource: str = "*") -> None:
        await authz.check(call.principal, f"organizations:{call.action}", resource,
                          source_ip=call.source_ip, user_agent=call.user_agent,
                          secure=call.secure)

    async def allow_on(call: Call, target: str) -> None:
        """Authorize the action on the ARN of the root, OU, account or policy it names in
        the caller's organization (``*`` when there is none such)."""
        org = await orgs.org_of(call.principal.account_id)
        resource = "*"
        if org is not None:
            with contextlib.suppress(errors.OrgError):
                resource = org.target_arn(target)
        await allow(call, resource)

    # -- the organization ----------------------------------------------------------------------

    @action("CreateOrganization")
    async def create_organization(call: Call) -> Result:
        await allow(call)
        org = await orgs.create_organization(call.principal.account_id,
                                             call.params.get("FeatureSet", "ALL"))
        return {"Organization": org.wire()}

    @action("DescribeOrganization")
    async def describe_organization(call: Call) -> Result:
        await allow(call)
        org = await orgs.require(call.principal.account_id)
        return {"Organization": org.wire()}

    @action("DeleteOrganization")
    async def delete_organization(call: Call) -> Result:
        org = await orgs.org_of(call.principal.account_id)
        await allow(call, org.arn if org else "*")
        await orgs.delete_organization(call.principal.account_id)
        return None

    @action("ListRoots")
    async def list_roots(call: Call) -> Result:
        await allow(call)
        org = await orgs.managed_by(call.principal.account_id)
        return page([org.root_wire()], call.params, "Roots")

    @action("EnableAWSServiceAccess")
    async def enable_service(call: Call) -> Result:
        await allow(call)
        await orgs.enable_service(call.principal.account_id, call.params["ServicePrincipal"])
        return None

    @action("DisableAWSServiceAccess")
    async def disable_service(call: Call) -> Result:
        await allow(call)
        await orgs.disable_service(call.principal.account_id, call.params["ServicePrincipal"])
        return None

    @action("ListAWSServiceAccessForOrganization")
    async def list_services(call: Call) -> Result:
        await allow(call)
        org = await orgs.managed_by(call.principal.account_id)
        services = [{"ServicePrincipal": name, "DateEnabled": when(at)}
                    for name, at in sorted(org.data["services"].items())]
        return page(services, call.params, "EnabledServicePrincipals")

    # -- organizational units ------------------------------------------------------------------

    @action("CreateOrganizationalUnit")
    async def create_ou(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["ParentId"])
        org, ou_id = await orgs.create_ou(call.principal.account_id, p["ParentId"], p["Name"],
                                          p.get("Tags", []))
        return {"OrganizationalUnit": org.ou_wire(ou_id)}

    @action("UpdateOrganizationalUnit")
    async def update_ou(call: Call) -> Result:
        p = call.params
        ou_id = p["OrganizationalUnitId"]
        await allow_on(call, ou_id)
        org = await orgs.rename_ou(call.principal.account_id, ou_id, p.get("Name"))
        return {"OrganizationalUnit": org.ou_wire(ou_id)}

    @action("DeleteOrganizationalUnit")
    async def delete_ou(call: Call) -> Result:
        ou_id = call.params["OrganizationalUnitId"]
        await allow_on(call, ou_id)
        await orgs.delete_ou(call.principal.account_id, ou_id)
        return None

    @action("DescribeOrganizationalUnit")
    async def describe_ou(call: Call) -> Result:
        ou_id = call.params["OrganizationalUnitId"]
        await allow_on(call, ou_id)
        org = await orgs.managed_by(call.principal.account_id)
        if ou_id not in org.ous:
            raise errors.ou_not_found()
        return {"OrganizationalUnit": org.ou_wire(ou_id)}

    def parent_of_listing(org: Org, parent: str) -> None:
        if not org.is_parent(parent):
            raise errors.parent_not_found()

    @action("ListOrganizationalUnitsForParent")
    async def list_ous(call: Call) -> Result:
        parent = call.params["ParentId"]
        await allow_on(call, parent)
        org = await orgs.managed_by(call.principal.account_id)
        parent_of_listing(org, parent)
        found = [org.ou_wire(ou) for ou in sorted(org.ous) if org.ous[ou]["parent"] == parent]
        return page(found, call.params, "OrganizationalUnits")

    @action("ListChildren")
    async def list_children(call: Call) -> Result:
        p = call.params
        parent = p["ParentId"]
        await allow_on(call, parent)
        org = await orgs.managed_by(call.principal.account_id)
        parent_of_listing(org, parent)
        if p["ChildType"] == "ACCOUNT":
            found = [{"Id": a, "Type": "ACCOUNT"} for a in sorted(org.accounts)
                     if org.accounts[a]["parent"] == parent]
        else:
            found = [{"Id": ou, "Type": "ORGANIZATIONAL_UNIT"} for ou in sorted(org.ous)
                     if org.ous[ou]["parent"] == parent]
        return page(found, p, "Children")

    @action("ListParents")
    async def list_parents(call: Call) -> Result:
        child = call.params["ChildId"]
        await allow_on(call, child)
        org = await orgs.managed_by(call.principal.account_id)
        parent = org.parent_of(child)
        kind = "ROOT" if parent == org.root_id else "ORGANIZATIONAL_UNIT"
        return page([{"Id": parent, "Type": kind}], call.params, "Parents")

    # -- accounts ------------------------------------------------------------------------------

    @action("CreateAccount")
    async def create_account(call: Call) -> Result:
        p = call.params
        await allow(call)
        request = await orgs.create_account(call.principal.account_id, p["Email"],
                                            p["AccountName"], p.get("RoleName"),
                                            p.get("Tags", []))
        return {"CreateAccountStatus": orgs.create_status_wire(request)}

    @action("DescribeCreateAccountStatus")
    async def describe_create(call: Call) -> Result:
        await allow(call)
        request = await orgs.create_status(call.principal.account_id,
                                           call.params["CreateAccountRequestId"])
        return {"CreateAccountStatus": orgs.create_status_wire(request)}

    @action("ListCreateAccountStatus")
    async def list_create(call: Call) -> Result:
        await allow(call)
        found = await orgs.create_statuses(call.principal.account_id,
                                           call.params.get("States", []))
        return page([orgs.create_status_wire(r) for r in found], call.params,
                    "CreateAccountStatuses")

    @action("InviteAccountToOrganization")
    async def invite(call: Call) -> Result:
        p = call.params
        await allow(call)
        handshake = await orgs.invite(call.principal.account_id, p["Target"], p.get("Notes"),
                                      p.get("Tags", []))
        return {"Handshake": orgs.handshake_wire(handshake)}

    async def handshake_arn(call: Call) -> str:
        try:
            found = await orgs.handshake(call.principal.account_id, call.params["HandshakeId"])
        except errors.OrgError:
            return "*"
        return str(orgs.handshake_wire(found)["Arn"])

    @action("AcceptHandshake")
    async def accept(call: Call) -> Result:
        await allow(call, await handshake_arn(call))
        found = await orgs.accept(call.principal.account_id, call.params["HandshakeId"])
        return {"Handshake": orgs.handshake_wire(found)}

    @action("DeclineHandshake")
    async def decline(call: Call) -> Result:
        await allow(call, await handshake_arn(call))
        found = await orgs.decline(call.principal.account_id, call.params["HandshakeId"])
        return {"Handshake": orgs.handshake_wire(found)}

    @action("CancelHandshake")
    async def cancel(call: Call) -> Result:
        await allow(call, await handshake_arn(call))
        found = await orgs.cancel(call.principal.account_id, call.params["HandshakeId"])
        return {"Handshake": orgs.handshake_wire(found)}

    @action("DescribeHandshake")
    async def describe_handshake(call: Call) -> Result:
        await allow(call, await handshake_arn(call))
        found = await orgs.handshake(call.principal.account_id, call.params["HandshakeId"])
        return {"Handshake": orgs.handshake_wire(found)}

    def handshake_filter(p: Mapping[str, Any], found: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
        wanted = p.get("Filter") or {}
        if wanted.get("ActionType") not in (None, "INVITE"):
            return []
        return [orgs.handshake_wire(h) for h in found]

    @action("ListHandshakesForAccount")
    async def list_handshakes(call: Call) -> Result:
        await allow(call)
        found = await orgs.handshakes_for(call.principal.account_id)
        return page(handshake_filter(call.params, found), call.params, "Handshakes")

    @action("ListHandshakesForOrganization")
    async def list_org_handshakes(call: Call) -> Result:
        await allow(call)
        org = await orgs.managed_by(call.principal.account_id)
        found = [h for h in await orgs.handshakes_for(call.principal.account_id)
                 if h["org"] == org.id]
        return page(handshake_filter(call.params, found), call.params, "Handshakes")

    @action("MoveAccount")
    async def move(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["AccountId"])
        await orgs.move(call.principal.account_id, p["AccountId"], p["SourceParentId"],
                        p["DestinationParentId"])
        return None

    @action("ListAccounts")
    async def list_accounts(call: Call) -> Result:
        await allow(call)
        org = await orgs.managed_by(call.principal.account_id)
        return page([org.account_wire(a) for a in sorted(org.accounts)], call.params,
                    "Accounts")

    @action("ListAccountsForParent")
    async def list_accounts_for_parent(call: Call) -> Result:
        parent = call.params["ParentId"]
        await allow_on(call, parent)
        org = await orgs.managed_by(call.principal.account_id)
        parent_of_listing(org, parent)
        return page([org.account_wire(a) for a in sorted(org.accounts)
                     if org.accounts[a]["parent"] == parent], call.params, "Accounts")

    @action("DescribeAccount")
    async def describe_account(call: Call) -> Result:
        account = call.params["AccountId"]
        await allow_on(call, account)
        org = await orgs.managed_by(call.principal.account_id)
        if account not in org.accounts:
            raise errors.account_not_found(account)
        return {"Account": org.account_wire(account)}

    @action("RemoveAccountFromOrganization")
    async def remove(call: Call) -> Result:
        account = call.params["AccountId"]
        await allow_on(call, account)
        await orgs.remove(call.principal.account_id, account)
        return None

    @action("LeaveOrganization")
    async def leave(call: Call) -> Result:
        await allow(call)
        await orgs.leave(call.principal.account_id)
        return None

    # -- policies ------------------------------------------------------------------------------

    @action("EnablePolicyType")
    async def enable_type(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["RootId"])
        org = await orgs.enable_type(call.principal.account_id, p["RootId"], p["PolicyType"])
        return {"Root": org.root_wire()}

    @action("DisablePolicyType")
    async def disable_type(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["RootId"])
        org = await orgs.disable_type(call.principal.account_id, p["RootId"], p["PolicyType"])
        return {"Root": org.root_wire()}

    def policy_wire(org: Org, policy_id: str) -> dict[str, Any]:
        return {"PolicySummary": org.policy_summary(policy_id),
                "Content": org.policy(policy_id)["content"]}

    @action("CreatePolicy")
    async def create_policy(call: Call) -> Result:
        p = call.params
        await allow(call)
        org, policy_id = await orgs.create_policy(
            call.principal.account_id, p["Name"], p["Description"], p["Content"], p["Type"],
            p.get("Tags", []))
        return {"Policy": policy_wire(org, policy_id)}

    @action("UpdatePolicy")
    async def update_policy(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["PolicyId"])
        org = await orgs.update_policy(call.principal.account_id, p["PolicyId"], p.get("Name"),
                                       p.get("Description"), p.get("Content"))
        return {"Policy": policy_wire(org, p["PolicyId"])}

    @action("DescribePolicy")
    async def describe_policy(call: Call) -> Result:
        policy_id = call.params["PolicyId"]
        await allow_on(call, policy_id)
        org = await orgs.managed_by(call.principal.account_id)
        return {"Policy": policy_wire(org, policy_id)}

    @action("DeletePolicy")
    async def delete_policy(call: Call) -> Result:
        policy_id = call.params["PolicyId"]
        await allow_on(call, policy_id)
        await orgs.delete_policy(call.principal.account_id, policy_id)
        return None

    def all_policies(org: Org, policy_type: str) -> list[str]:
        return sorted(pid for pid in (*AWS_MANAGED, *org.policies)
                      if org.policy(pid)["type"] == policy_type)

    @action("ListPolicies")
    async def list_policies(call: Call) -> Result:
        await allow(call)
        org = await orgs.managed_by(call.principal.account_id)
        found = [org.policy_summary(pid) for pid in all_policies(org, call.params["Filter"])]
        return page(found, call.params, "Policies")

    @action("AttachPolicy")
    async def attach(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["TargetId"])
        await orgs.attach(call.principal.account_id, p["PolicyId"], p["TargetId"])
        return None

    @action("DetachPolicy")
    async def detach(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["TargetId"])
        await orgs.detach(call.principal.account_id, p["PolicyId"], p["TargetId"])
        return None

    @action("ListPoliciesForTarget")
    async def list_for_target(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["TargetId"])
        org = await orgs.managed_by(call.principal.account_id)
        if not org.is_target(p["TargetId"]):
            raise errors.target_not_found()
        found = [org.policy_summary(pid) for pid in org.attached_of(p["TargetId"], p["Filter"])]
        return page(found, p, "Policies")

    @action("ListTargetsForPolicy")
    async def list_targets(call: Call) -> Result:
        policy_id = call.params["PolicyId"]
        await allow_on(call, policy_id)
        org = await orgs.managed_by(call.principal.account_id)
        org.policy(policy_id)
        return page([org.target_wire(t) for t in sorted(org.targets_of(policy_id))],
                    call.params, "Targets")

    # -- tags ----------------------------------------------------------------------------------

    @action("TagResource")
    async def tag(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["ResourceId"])
        await orgs.tag(call.principal.account_id, p["ResourceId"], p["Tags"])
        return None

    @action("UntagResource")
    async def untag(call: Call) -> Result:
        p = call.params
        await allow_on(call, p["ResourceId"])
        await orgs.untag(call.principal.account_id, p["ResourceId"], p["TagKeys"])
        return None

    @action("ListTagsForResource")
    async def list_tags(call: Call) -> Result:
        resource = call.params["ResourceId"]
        await allow_on(call, resource)
        org = await orgs.managed_by(call.principal.account_id)
        if not (org.is_target(resource) or resource in org.policies):
            raise errors.target_not_found()
        return page(org.tags(resource), call.params, "Tags")

    return registry.operations
