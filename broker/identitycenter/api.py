"""IAM Identity Center's administration actions (``sso-admin``: JSON 1.1, target
``SWBExternalService``, SigV4 service ``sso``), authorized as ``sso:ACTION`` on the
instance's ARN (``*`` to create or list instances), or on the permission set's ARN for the
actions of one permission set.

Every action names an instance; only the caller's account's own instance is found (another
account's is ResourceNotFoundException, or AccessDeniedException where the model has no
ResourceNotFoundException)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from broker.authz import Authorizer
from broker.aws import shapes
from broker.aws.jsonproto import JsonOperation, JsonRegistry, JsonService
from broker.aws.query import Call, Result
from broker.iam.entities import Tag
from broker.identitycenter import model
from broker.identitycenter.abac import AccessControl, parse_attributes
from broker.identitycenter.assignments import Assignments, RequestStatus
from broker.identitycenter.instances import Instance, Instances, SsoError, merge_tags
from broker.identitycenter.paging import page
from broker.identitycenter.permission_sets import (
    Boundary,
    PermissionSet,
    PermissionSets,
    PolicyReference,
)


def _invalid(faults: shapes.ShapeFaults) -> SsoError:
    return SsoError("ValidationException", faults.message())


SSO_ADMIN = JsonService("sso", "SWBExternalService", invalid_input=_invalid,
                        internal_error="InternalServerException")

def _tags(params: Mapping[str, Any]) -> tuple[Tag, ...]:
    return tuple(Tag(t["Key"], t["Value"]) for t in params.get("Tags", []))


def operations(instances: Instances, authz: Authorizer,
               manages_organization: Callable[[str], Awaitable[bool]],
               permission_sets: PermissionSets | None = None,
               assignments: Assignments | None = None,
               access_control: AccessControl | None = None) -> list[JsonOperation]:
    registry = JsonRegistry(SSO_ADMIN, model)
    action = registry.action
    sets: PermissionSets = permission_sets  # type: ignore[assignment]  # None: models only
    assigned: Assignments = assignments  # type: ignore[assignment]
    control: AccessControl = access_control  # type: ignore[assignment]

    async def allow(call: Call, resource: str = "*") -> None:
        await authz.check(call.principal, f"sso:{call.action}", resource,
                          source_ip=call.source_ip, user_agent=call.user_agent,
                          secure=call.secure)

    async def instance_of(call: Call) -> Instance:
        """The instance the call names, once the caller may act on it."""
        await allow(call, call.params["InstanceArn"])
        return await instances.get(call.principal.account_id, call.params["InstanceArn"])

    async def permission_set_of(call: Call) -> tuple[Instance, PermissionSet]:
        """The permission set the call names (authorized on its ARN and its instance's)."""
        instance = await instance_of(call)
        arn = call.params["PermissionSetArn"]
        await allow(call, arn)
        return instance, await sets.get(instance, arn)

    @action("CreateInstance")
    async def create(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await allow(call)
        instance = await instances.create(
            account, name=p.get("Name"), client_token=p.get("ClientToken"),
            tags=_tags(p),
            organization=await manages_organization(account))
        return {"InstanceArn": instance.arn}

    @action("ListInstances")
    async def listing(call: Call) -> Result:
        await allow(call)
        found = await instances.of_account(call.principal.account_id)
        return page([found.wire()] if found else [], call.params, "Instances")

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
        arn = call.params["InstanceArn"]
        await allow(call, arn)
        instance = await instances.get(call.principal.account_id, arn,
                                       missing="AccessDeniedException")
        if assigned is not None:
            # Every role it provisioned goes first: none is left that nobody could remove.
            await assigned.deprovision(instance)
        await instances.delete(call.principal.account_id, arn)
        return None

    # -- permission sets ------------------------------------------------------------------------

    @action("CreatePermissionSet")
    async def create_set(call: Call) -> Result:
        p = call.params
        instance = await instance_of(call)
        made = await sets.create(instance, p["Name"], description=p.get("Description"),
                                 session_duration=p.get("SessionDuration"),
                                 relay_state=p.get("RelayState"), tags=_tags(p))
        return {"PermissionSet": made.wire()}

    @action("DescribePermissionSet")
    async def describe_set(call: Call) -> Result:
        _, found = await permission_set_of(call)
        return {"PermissionSet": found.wire()}

    @action("UpdatePermissionSet")
    async def update_set(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        await sets.update(instance, found.arn, description=p.get("Description"),
                          session_duration=p.get("SessionDuration"),
                          relay_state=p.get("RelayState"))
        return None

    @action("DeletePermissionSet")
    async def delete_set(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.delete(instance, found.arn, blocked_by=("sso_assignment",))
        return None

    @action("ListPermissionSets")
    async def list_sets(call: Call) -> Result:
        instance = await instance_of(call)
        found = sorted(await sets.listing(instance), key=lambda p: (p.created, p.arn))
        return page([p.arn for p in found], call.params, "PermissionSets")

    @action("PutInlinePolicyToPermissionSet")
    async def put_inline(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.put_inline(instance, found.arn, call.params["InlinePolicy"])
        return None

    @action("GetInlinePolicyForPermissionSet")
    async def get_inline(call: Call) -> Result:
        _, found = await permission_set_of(call)
        return {"InlinePolicy": found.inline_policy or ""}

    @action("DeleteInlinePolicyFromPermissionSet")
    async def delete_inline(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.change(instance, found.arn, lambda p: replace(p, inline_policy=None))
        return None

    @action("AttachManagedPolicyToPermissionSet")
    async def attach_managed(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.attach_managed(instance, found.arn, call.params["ManagedPolicyArn"])
        return None

    @action("DetachManagedPolicyFromPermissionSet")
    async def detach_managed(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.detach_managed(instance, found.arn, call.params["ManagedPolicyArn"])
        return None

    @action("ListManagedPoliciesInPermissionSet")
    async def list_managed(call: Call) -> Result:
        _, found = await permission_set_of(call)
        return page([{"Name": a.rsplit("/", 1)[-1], "Arn": a} for a in found.managed],
                    call.params, "AttachedManagedPolicies")

    def reference(params: Mapping[str, Any]) -> PolicyReference:
        given = params["CustomerManagedPolicyReference"]
        return PolicyReference(given["Name"], given.get("Path") or "/")

    @action("AttachCustomerManagedPolicyReferenceToPermissionSet")
    async def attach_reference(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.attach_reference(instance, found.arn, reference(call.params))
        return None

    @action("DetachCustomerManagedPolicyReferenceFromPermissionSet")
    async def detach_reference(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        await sets.detach_reference(instance, found.arn, reference(call.params))
        return None

    @action("ListCustomerManagedPolicyReferencesInPermissionSet")
    async def list_references(call: Call) -> Result:
        _, found = await permission_set_of(call)
        return page([r.wire() for r in found.customer_managed], call.params,
                    "CustomerManagedPolicyReferences")

    @action("PutPermissionsBoundaryToPermissionSet")
    async def put_boundary(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        given = call.params["PermissionsBoundary"]
        ref, managed = given.get("CustomerManagedPolicyReference"), given.get("ManagedPolicyArn")
        if (ref is None) == (managed is None):
            raise SsoError("ValidationException", "A permissions boundary is either a "
                           "CustomerManagedPolicyReference or a ManagedPolicyArn.")
        boundary = Boundary(managed_policy_arn=managed) if ref is None else \
            Boundary(reference=PolicyReference(ref["Name"], ref.get("Path") or "/"))
        await sets.change(instance, found.arn, lambda p: replace(p, boundary=boundary))
        return None

    @action("GetPermissionsBoundaryForPermissionSet")
    async def get_boundary(call: Call) -> Result:
        _, found = await permission_set_of(call)
        if found.boundary is None:
            raise SsoError("ResourceNotFoundException",
                           "The permission set has no permissions boundary.")
        return {"PermissionsBoundary": found.boundary.wire()}

    @action("DeletePermissionsBoundaryFromPermissionSet")
    async def delete_boundary(call: Call) -> Result:
        instance, found = await permission_set_of(call)
        if found.boundary is None:
            raise SsoError("ResourceNotFoundException",
                           "The permission set has no permissions boundary.")
        await sets.change(instance, found.arn, lambda p: replace(p, boundary=None))
        return None

    # -- assignments and provisioning -----------------------------------------------------------

    def target(params: Mapping[str, Any]) -> str:
        if params.get("TargetType", "AWS_ACCOUNT") != "AWS_ACCOUNT":
            raise SsoError("ValidationException", "TargetType must be AWS_ACCOUNT.")
        return str(params["TargetId"])

    @action("CreateAccountAssignment")
    async def create_assignment(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        status = await assigned.create(instance, found.arn, target(p), p["PrincipalType"],
                                       p["PrincipalId"])
        return {"AccountAssignmentCreationStatus": status.assignment_wire()}

    @action("DeleteAccountAssignment")
    async def delete_assignment(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        status = await assigned.delete(instance, found.arn, target(p), p["PrincipalType"],
                                       p["PrincipalId"])
        return {"AccountAssignmentDeletionStatus": status.assignment_wire()}

    @action("DescribeAccountAssignmentCreationStatus")
    async def describe_creation(call: Call) -> Result:
        instance = await instance_of(call)
        status = await assigned.status(
            instance, call.params["AccountAssignmentCreationRequestId"], "CREATE")
        return {"AccountAssignmentCreationStatus": status.assignment_wire()}

    @action("DescribeAccountAssignmentDeletionStatus")
    async def describe_deletion(call: Call) -> Result:
        instance = await instance_of(call)
        status = await assigned.status(
            instance, call.params["AccountAssignmentDeletionRequestId"], "DELETE")
        return {"AccountAssignmentDeletionStatus": status.assignment_wire()}

    async def statuses(call: Call, operation: str) -> list[RequestStatus]:
        instance = await instance_of(call)
        wanted = (call.params.get("Filter") or {}).get("Status")
        return await assigned.requests(instance, (operation,), wanted)

    @action("ListAccountAssignmentCreationStatus")
    async def list_creations(call: Call) -> Result:
        found = await statuses(call, "CREATE")
        return page([s.metadata() for s in found], call.params,
                    "AccountAssignmentsCreationStatus")

    @action("ListAccountAssignmentDeletionStatus")
    async def list_deletions(call: Call) -> Result:
        found = await statuses(call, "DELETE")
        return page([s.metadata() for s in found], call.params,
                    "AccountAssignmentsDeletionStatus")

    @action("ProvisionPermissionSet")
    async def provision(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        if p["TargetType"] == "ALL_PROVISIONED_ACCOUNTS":
            if p.get("TargetId"):
                raise SsoError("ValidationException", "TargetId is not given with "
                               "ALL_PROVISIONED_ACCOUNTS.")
            account = None
        elif not p.get("TargetId"):
            raise SsoError("ValidationException", "TargetId is required with AWS_ACCOUNT.")
        else:
            account = target(p)
        status = await assigned.provision(instance, found.arn, account)
        return {"PermissionSetProvisioningStatus": status.provisioning_wire()}

    @action("DescribePermissionSetProvisioningStatus")
    async def describe_provisioning(call: Call) -> Result:
        instance = await instance_of(call)
        status = await assigned.status(instance, call.params["ProvisionPermissionSetRequestId"],
                                       "PROVISION")
        return {"PermissionSetProvisioningStatus": status.provisioning_wire()}

    @action("ListPermissionSetProvisioningStatus")
    async def list_provisioning(call: Call) -> Result:
        found = await statuses(call, "PROVISION")
        return page([s.metadata() for s in found], call.params,
                    "PermissionSetsProvisioningStatus")

    @action("ListAccountAssignments")
    async def list_assignments(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        principals = await assigned.principals_of(instance, found, p["AccountId"])
        return page([{"AccountId": p["AccountId"], "PermissionSetArn": found.arn,
                      "PrincipalType": kind, "PrincipalId": pid} for kind, pid in principals],
                    call.params, "AccountAssignments")

    @action("ListAccountAssignmentsForPrincipal")
    async def list_for_principal(call: Call) -> Result:
        p = call.params
        instance = await instance_of(call)
        account = (p.get("Filter") or {}).get("AccountId")
        arns = {s.permission_set_id: s.arn for s in await sets.listing(instance)}
        found = [a for a in await assigned.of_principals(
            instance, [(p["PrincipalType"], p["PrincipalId"])])
            if account is None or a.account_id == account]
        return page([{"AccountId": a.account_id, "PermissionSetArn": arns[a.permission_set_id],
                      "PrincipalId": a.principal_id, "PrincipalType": a.principal_type}
                     for a in found if a.permission_set_id in arns],
                    call.params, "AccountAssignments")

    def up_to_date(wanted: str | None, latest: bool) -> bool:
        return wanted is None or latest == (wanted == "LATEST_PERMISSION_SET_PROVISIONED")

    @action("ListPermissionSetsProvisionedToAccount")
    async def list_provisioned_sets(call: Call) -> Result:
        p = call.params
        instance = await instance_of(call)
        arns = {s.permission_set_id: s.arn for s in await sets.listing(instance)}
        found = [arns[ps] for account, ps, latest in await assigned.provisioned(instance)
                 if account == p["AccountId"] and ps in arns
                 and up_to_date(p.get("ProvisioningStatus"), latest)]
        return page(sorted(found), call.params, "PermissionSets")

    @action("ListAccountsForProvisionedPermissionSet")
    async def list_provisioned_accounts(call: Call) -> Result:
        p = call.params
        instance, found = await permission_set_of(call)
        accounts = [account for account, ps, latest in await assigned.provisioned(instance)
                    if ps == found.permission_set_id
                    and up_to_date(p.get("ProvisioningStatus"), latest)]
        return page(sorted(accounts), call.params, "AccountIds")

    # -- attributes for access control (abac.py) -------------------------------------------------

    def attributes(params: Mapping[str, Any]) -> Any:
        given = params["InstanceAccessControlAttributeConfiguration"]
        return parse_attributes(given["AccessControlAttributes"])

    @action("CreateInstanceAccessControlAttributeConfiguration")
    async def create_abac(call: Call) -> Result:
        instance = await instance_of(call)
        await control.create(instance, attributes(call.params))
        return None

    @action("DescribeInstanceAccessControlAttributeConfiguration")
    async def describe_abac(call: Call) -> Result:
        instance = await instance_of(call)
        return (await control.describe(instance)).wire()

    @action("UpdateInstanceAccessControlAttributeConfiguration")
    async def update_abac(call: Call) -> Result:
        instance = await instance_of(call)
        await control.update(instance, attributes(call.params))
        return None

    @action("DeleteInstanceAccessControlAttributeConfiguration")
    async def delete_abac(call: Call) -> Result:
        instance = await instance_of(call)
        await control.delete(instance)
        return None

    # -- tags -----------------------------------------------------------------------------------

    async def tagged(call: Call, change: Callable[[tuple[Tag, ...]], tuple[Tag, ...]] | None
                     ) -> tuple[Tag, ...]:
        """The tags of the resource the call names (an instance or one of its permission
        sets), after ``change``."""
        p = call.params
        resource = p["ResourceArn"]
        await allow(call, resource)
        instance_arn = p.get("InstanceArn")
        if instance_arn is None:  # the instance, or one of the caller's account's
            own = await instances.of_account(call.principal.account_id)
            if own is None:
                raise SsoError("ResourceNotFoundException",
                               f"Resource {resource[:1224]} does not exist.")
            instance_arn = own.arn
        instance = await instances.get(call.principal.account_id, instance_arn)
        if resource == instance.arn:
            if change is not None:
                await instances.retag(instance.account_id, instance.arn, change)
                instance = await instances.get(call.principal.account_id, instance_arn)
            return instance.tags
        found = await sets.get(instance, resource)
        if change is not None:
            found = await sets.change(instance, found.arn,
                                      lambda s: replace(s, tags=change(s.tags)))
        return found.tags

    @action("TagResource")
    async def tag(call: Call) -> Result:
        add = _tags(call.params)
        await tagged(call, lambda tags: merge_tags(tags, add))
        return None

    @action("UntagResource")
    async def untag(call: Call) -> Result:
        keys = tuple(call.params["TagKeys"])
        await tagged(call, lambda tags: merge_tags(tags, remove=keys))
        return None

    @action("ListTagsForResource")
    async def list_tags(call: Call) -> Result:
        tags = await tagged(call, None)
        return page([{"Key": t.key, "Value": t.value} for t in tags], call.params, "Tags",
                    default=50)

    return registry.operations
