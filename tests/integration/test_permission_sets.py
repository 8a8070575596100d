"""Permission sets, account assignments and real provisioning, over boto3's ``sso-admin``: an
assignment makes the AWSReservedSSO role in the member account, provisioning again updates
it, the last assignment removed removes it, and nobody in the account can change it. Each
refusal beside the honest request that succeeds."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import pytest

from broker.identitycenter.access import NotAssigned
from broker.identitycenter.assignments import RESERVED_PATH
from tests.helpers import Broker, Creds
from tests.integration.test_identity_center import strict

READ_S3 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})
READ_ALL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:*", "iam:Get*"], "Resource": "*"}]})
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
READ_IAM = "arn:aws:iam::aws:policy/IAMReadOnlyAccess"


def code_of(refused: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(refused.value.response["Error"]["Code"])


@dataclass
class Estate:
    broker: Broker
    management: str
    management_root: Creds
    member: str
    member_root: Creds
    instance_arn: str
    store_id: str

    def sso(self, creds: Creds | None = None) -> Any:
        return strict(self.broker.client("sso-admin", creds or self.management_root))

    def iam(self, creds: Creds) -> Any:
        return self.broker.client("iam", creds)

    def user(self, name: str | None = None) -> str:
        store = self.broker.client("identitystore", self.management_root)
        made = store.create_user(
            IdentityStoreId=self.store_id, UserName=name or f"u-{uuid.uuid4().hex[:8]}",
            DisplayName="A Person", Name={"GivenName": "A", "FamilyName": "Person"})
        return str(made["UserId"])

    def group(self, members: list[str]) -> str:
        store = self.broker.client("identitystore", self.management_root)
        group = store.create_group(IdentityStoreId=self.store_id,
                                   DisplayName=f"g-{uuid.uuid4().hex[:8]}")["GroupId"]
        for user_id in members:
            store.create_group_membership(IdentityStoreId=self.store_id, GroupId=group,
                                          MemberId={"UserId": user_id})
        return str(group)

    def permission_set(self, name: str | None = None, **extra: Any) -> str:
        made = self.sso().create_permission_set(
            InstanceArn=self.instance_arn, Name=name or f"ps{uuid.uuid4().hex[:8]}", **extra)
        return str(made["PermissionSet"]["PermissionSetArn"])

    def assign(self, ps: str, principal: str, *, kind: str = "USER",
               account: str | None = None, creds: Creds | None = None) -> dict[str, Any]:
        status = self.sso(creds).create_account_assignment(
            InstanceArn=self.instance_arn, TargetId=account or self.member,
            TargetType="AWS_ACCOUNT", PermissionSetArn=ps, PrincipalType=kind,
            PrincipalId=principal)["AccountAssignmentCreationStatus"]
        return dict(status)

    def unassign(self, ps: str, principal: str, *, kind: str = "USER",
                 account: str | None = None) -> dict[str, Any]:
        status = self.sso().delete_account_assignment(
            InstanceArn=self.instance_arn, TargetId=account or self.member,
            TargetType="AWS_ACCOUNT", PermissionSetArn=ps, PrincipalType=kind,
            PrincipalId=principal)["AccountAssignmentDeletionStatus"]
        return dict(status)

    def reserved_roles(self, account_creds: Creds | None = None) -> list[dict[str, Any]]:
        iam = self.iam(account_creds or self.member_root)
        return list(iam.list_roles(PathPrefix=RESERVED_PATH)["Roles"])


@pytest.fixture(scope="module")
def estate(broker: Broker) -> Estate:
    management, management_root = broker.new_account()
    orgs = broker.client("organizations", management_root)
    orgs.create_organization(FeatureSet="ALL")
    member, member_root = broker.new_account()
    handshake = orgs.invite_account_to_organization(
        Target={"Id": member, "Type": "ACCOUNT"})["Handshake"]["Id"]
    broker.client("organizations", member_root).accept_handshake(HandshakeId=handshake)
    sso = broker.client("sso-admin", management_root)
    instance = sso.create_instance(Name="estate")["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=instance)["IdentityStoreId"]
    return Estate(broker, management, management_root, member, member_root, instance,
                  store_id)


def test_an_assignment_provisions_the_role(estate: Estate) -> None:
    sso = estate.sso()
    ps = estate.permission_set("Readers", SessionDuration="PT2H", RelayState="/console",
                               Description="read things")
    sso.put_inline_policy_to_permission_set(InstanceArn=estate.instance_arn,
                                            PermissionSetArn=ps, InlinePolicy=READ_S3)
    sso.attach_managed_policy_to_permission_set(InstanceArn=estate.instance_arn,
                                                PermissionSetArn=ps, ManagedPolicyArn=READ_IAM)
    user = estate.user()
    assert estate.reserved_roles() == []
    status = estate.assign(ps, user)
    assert status["Status"] == "SUCCEEDED", status
    assert status["TargetId"] == estate.member and status["PrincipalId"] == user
    [role] = estate.reserved_roles()
    name = role["RoleName"]
    assert name.startswith("AWSReservedSSO_Readers_") and len(name.rsplit("_", 1)[1]) == 16
    assert role["Path"] == RESERVED_PATH and role["MaxSessionDuration"] == 7200
    iam = estate.iam(estate.member_root)
    trust = role["AssumeRolePolicyDocument"]
    [statement] = trust["Statement"]
    provider = statement["Principal"]["Federated"]
    hexpart = estate.instance_arn.rsplit("ssoins-", 1)[1]
    assert provider == (f"arn:aws:iam::{estate.member}:saml-provider/"
                        f"AWSSSO_{hexpart}_DO_NOT_DELETE")
    assert "sts:AssumeRoleWithSAML" in statement["Action"]
    assert iam.get_saml_provider(SAMLProviderArn=provider)["SAMLMetadataDocument"]
    assert [p["PolicyArn"] for p in iam.list_attached_role_policies(
        RoleName=name)["AttachedPolicies"]] == [READ_IAM]
    inline = iam.get_role_policy(RoleName=name, PolicyName="AwsSSOInlinePolicy")
    assert inline["PolicyDocument"]["Statement"][0]["Action"] == "s3:GetObject"
    described = sso.describe_account_assignment_creation_status(
        InstanceArn=estate.instance_arn,
        AccountAssignmentCreationRequestId=status["RequestId"])
    assert described["AccountAssignmentCreationStatus"]["Status"] == "SUCCEEDED"
    listed = sso.list_account_assignments(InstanceArn=estate.instance_arn,
                                          AccountId=estate.member, PermissionSetArn=ps)
    assert [(a["PrincipalType"], a["PrincipalId"]) for a in listed["AccountAssignments"]] == \
        [("USER", user)]
    assert sso.list_accounts_for_provisioned_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps)["AccountIds"] == [estate.member]


def test_provisioning_again_updates_every_role_and_the_last_assignment_removes_it(
        estate: Estate) -> None:
    sso = estate.sso()
    ps = estate.permission_set("Changing")
    sso.put_inline_policy_to_permission_set(InstanceArn=estate.instance_arn,
                                            PermissionSetArn=ps, InlinePolicy=READ_S3)
    alice, bob = estate.user(), estate.user()
    group = estate.group([bob])
    assert estate.assign(ps, alice)["Status"] == "SUCCEEDED"
    assert estate.assign(ps, group, kind="GROUP")["Status"] == "SUCCEEDED"
    # The management account too (an organization's instance assigns it as well).
    assert estate.assign(ps, alice, account=estate.management)["Status"] == "SUCCEEDED"
    roles = {estate.member: [r for r in estate.reserved_roles()
                             if r["RoleName"].startswith("AWSReservedSSO_Changing_")],
             estate.management: [r for r in estate.reserved_roles(estate.management_root)
                                 if r["RoleName"].startswith("AWSReservedSSO_Changing_")]}
    assert [len(v) for v in roles.values()] == [1, 1]
    sso.update_permission_set(InstanceArn=estate.instance_arn, PermissionSetArn=ps,
                              SessionDuration="PT4H")
    sso.put_inline_policy_to_permission_set(InstanceArn=estate.instance_arn,
                                            PermissionSetArn=ps, InlinePolicy=READ_ALL)
    stale = sso.list_permission_sets_provisioned_to_account(
        InstanceArn=estate.instance_arn, AccountId=estate.member,
        ProvisioningStatus="LATEST_PERMISSION_SET_NOT_PROVISIONED")["PermissionSets"]
    assert ps in stale
    # Not yet provisioned: the roles are as they were.
    name = roles[estate.member][0]["RoleName"]
    member_iam = estate.iam(estate.member_root)
    assert member_iam.get_role(RoleName=name)["Role"]["MaxSessionDuration"] == 3600
    status = sso.provision_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps,
        TargetType="ALL_PROVISIONED_ACCOUNTS")["PermissionSetProvisioningStatus"]
    assert status["Status"] == "SUCCEEDED", status
    assert sso.describe_permission_set_provisioning_status(
        InstanceArn=estate.instance_arn, ProvisionPermissionSetRequestId=status["RequestId"]
    )["PermissionSetProvisioningStatus"]["Status"] == "SUCCEEDED"
    for account, creds in ((estate.member, estate.member_root),
                           (estate.management, estate.management_root)):
        role_name = roles[account][0]["RoleName"]
        iam = estate.iam(creds)
        assert iam.get_role(RoleName=role_name)["Role"]["MaxSessionDuration"] == 4 * 3600
        doc = iam.get_role_policy(RoleName=role_name, PolicyName="AwsSSOInlinePolicy")
        assert doc["PolicyDocument"]["Statement"][0]["Action"] == ["s3:*", "iam:Get*"]
    assert ps in sso.list_permission_sets_provisioned_to_account(
        InstanceArn=estate.instance_arn, AccountId=estate.member,
        ProvisioningStatus="LATEST_PERMISSION_SET_PROVISIONED")["PermissionSets"]
    # Removing alice keeps the role (the group is still assigned); removing the group too
    # removes it.
    assert estate.unassign(ps, alice)["Status"] == "SUCCEEDED"
    member_iam.get_role(RoleName=name)
    assert estate.unassign(ps, group, kind="GROUP")["Status"] == "SUCCEEDED"
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        member_iam.get_role(RoleName=name)
    assert code_of(gone) == "NoSuchEntity"
    assert sso.list_accounts_for_provisioned_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps)["AccountIds"] == \
        [estate.management]
    # A permission set still assigned cannot be deleted; unassigned, it can.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.delete_permission_set(InstanceArn=estate.instance_arn, PermissionSetArn=ps)
    assert code_of(refused) == "ConflictException"
    estate.unassign(ps, alice, account=estate.management)
    sso.delete_permission_set(InstanceArn=estate.instance_arn, PermissionSetArn=ps)
    assert ps not in sso.list_permission_sets(InstanceArn=estate.instance_arn)[
        "PermissionSets"]


def test_administrators_of_the_account_cannot_change_the_role(estate: Estate) -> None:
    ps = estate.permission_set("Guarded")
    estate.assign(ps, estate.user())
    [role] = [r for r in estate.reserved_roles()
              if r["RoleName"].startswith("AWSReservedSSO_Guarded_")]
    name = role["RoleName"]
    iam = estate.iam(estate.member_root)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{estate.member}:root"},
        "Action": "sts:AssumeRole"}]})
    changes = [
        ("update_assume_role_policy", {"PolicyDocument": trust}),
        ("put_role_policy", {"PolicyName": "more", "PolicyDocument": READ_ALL}),
        ("attach_role_policy", {"PolicyArn": ADMIN}),
        ("update_role", {"MaxSessionDuration": 43200}),
        ("update_role_description", {"Description": "mine now"}),
        ("put_role_permissions_boundary", {"PermissionsBoundary": ADMIN}),
        ("delete_role", {}),
    ]
    for method, params in changes:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            getattr(iam, method)(RoleName=name, **params)
        assert code_of(refused) == "UnmodifiableEntity", method
        ordinary = f"ordinary-{method.replace('_', '-')}"  # the control: another role
        iam.create_role(RoleName=ordinary, AssumeRolePolicyDocument=trust)
        getattr(iam, method)(RoleName=ordinary, **params)
    assert iam.get_role(RoleName=name)["Role"]["MaxSessionDuration"] == 3600
    # Nor make a role of their own under the reserved path.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.create_role(RoleName="squatter", Path=RESERVED_PATH, AssumeRolePolicyDocument=trust)
    assert code_of(refused) == "InvalidInput"
    iam.create_role(RoleName="squatter", Path="/mine/", AssumeRolePolicyDocument=trust)


def test_an_assignment_outside_the_organization_is_refused(estate: Estate) -> None:
    outsider, _ = estate.broker.new_account()
    ps = estate.permission_set()
    user = estate.user()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.assign(ps, user, account=outsider)
    assert code_of(refused) == "ValidationException"
    assert estate.assign(ps, user)["Status"] == "SUCCEEDED"  # the control: a member
    # A principal that is not in the identity store: ResourceNotFoundException.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.assign(ps, str(uuid.uuid4()))
    assert code_of(refused) == "ResourceNotFoundException"


def test_an_account_instance_assigns_only_its_own_account(broker: Broker) -> None:
    alone, alone_root = broker.new_account()
    other, _ = broker.new_account()
    sso = strict(broker.client("sso-admin", alone_root))
    instance = sso.create_instance()["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=instance)["IdentityStoreId"]
    user = broker.client("identitystore", alone_root).create_user(
        IdentityStoreId=store_id, UserName="solo", DisplayName="Solo",
        Name={"GivenName": "S", "FamilyName": "Olo"})["UserId"]
    ps = sso.create_permission_set(InstanceArn=instance, Name="Own")[
        "PermissionSet"]["PermissionSetArn"]
    params = {"InstanceArn": instance, "TargetType": "AWS_ACCOUNT", "PermissionSetArn": ps,
              "PrincipalType": "USER", "PrincipalId": user}
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.create_account_assignment(TargetId=other, **params)
    assert code_of(refused) == "ValidationException"
    made = sso.create_account_assignment(TargetId=alone, **params)
    assert made["AccountAssignmentCreationStatus"]["Status"] == "SUCCEEDED"


def test_a_missing_customer_managed_policy_fails_the_assignment(estate: Estate) -> None:
    sso = estate.sso()
    ps = estate.permission_set("Custom")
    sso.attach_customer_managed_policy_reference_to_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps,
        CustomerManagedPolicyReference={"Name": "team-policy", "Path": "/teams/"})
    user = estate.user()
    failed = estate.assign(ps, user)
    assert failed["Status"] == "FAILED" and "team-policy" in failed["FailureReason"]
    assert not [r for r in estate.reserved_roles()
                if r["RoleName"].startswith("AWSReservedSSO_Custom_")]
    assert sso.list_account_assignments(InstanceArn=estate.instance_arn,
                                        AccountId=estate.member,
                                        PermissionSetArn=ps)["AccountAssignments"] == []
    failures = sso.list_account_assignment_creation_status(
        InstanceArn=estate.instance_arn, Filter={"Status": "FAILED"})
    assert failed["RequestId"] in [s["RequestId"] for s in
                                   failures["AccountAssignmentsCreationStatus"]]
    # The control: with the policy in the account, the same assignment succeeds.
    made = estate.iam(estate.member_root).create_policy(
        PolicyName="team-policy", Path="/teams/", PolicyDocument=READ_S3)["Policy"]
    assert estate.assign(ps, user)["Status"] == "SUCCEEDED"
    [role] = [r for r in estate.reserved_roles()
              if r["RoleName"].startswith("AWSReservedSSO_Custom_")]
    attached = estate.iam(estate.member_root).list_attached_role_policies(
        RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [made["Arn"]]


def test_the_assigned_role_gives_the_person_credentials(estate: Estate) -> None:
    ps = estate.permission_set("Workers", SessionDuration="PT3H")
    estate.sso().put_inline_policy_to_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps, InlinePolicy=READ_ALL)
    name = f"worker-{uuid.uuid4().hex[:6]}"
    user_id = estate.user(name)
    group = estate.group([user_id])
    estate.assign(ps, group, kind="GROUP")
    runtime = estate.broker.runtime
    ic = runtime.identity_center
    instance = estate.broker.server.call(ic.instances.by_store(estate.store_id))
    user = estate.broker.server.call(ic.directory.user(estate.management, estate.store_id,
                                                       user_id))
    assert instance is not None and user is not None
    access = ic.access
    assert [a.account_id for a in estate.broker.server.call(
        access.accounts(instance, user_id))] == [estate.member]
    assert estate.broker.server.call(access.roles(instance, user_id, estate.member)) == \
        ["Workers"]
    issued = estate.broker.server.call(access.credentials(instance, user, estate.member,
                                                          "Workers"))
    creds = Creds(issued.session.access_key_id, issued.session.secret_access_key,
                  issued.token)
    me = estate.broker.client("sts", creds).get_caller_identity()
    assert me["Account"] == estate.member
    assert me["Arn"].startswith(f"arn:aws:sts::{estate.member}:assumed-role/AWSReservedSSO_"
                                f"Workers_") and me["Arn"].endswith(f"/{name}")
    assert issued.session.expires_at - issued.session.issued_at == 3 * 3600
    # The permission set's policy is the session's: it reads IAM, and may not write it.
    iam = estate.broker.client("iam", creds)
    iam.get_role(RoleName=me["Arn"].split("/")[1])
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.create_user(UserName="not-allowed")
    assert code_of(refused) == "AccessDenied"
    # Another person, not assigned: NotAssigned. And another role name: NotAssigned.
    stranger_id = estate.user()
    stranger = estate.broker.server.call(ic.directory.user(estate.management, estate.store_id,
                                                           stranger_id))
    assert stranger is not None
    for who, role in ((stranger, "Workers"), (user, "Admins")):
        with pytest.raises(NotAssigned):
            estate.broker.server.call(access.credentials(instance, who, estate.member, role))
    # Leaving the group loses the role at once.
    store = estate.broker.client("identitystore", estate.management_root)
    membership = store.get_group_membership_id(
        IdentityStoreId=estate.store_id, GroupId=group,
        MemberId={"UserId": user_id})["MembershipId"]
    store.delete_group_membership(IdentityStoreId=estate.store_id, MembershipId=membership)
    with pytest.raises(NotAssigned):
        estate.broker.server.call(access.credentials(instance, user, estate.member, "Workers"))


def test_concurrent_assignments_and_removals_converge(estate: Estate) -> None:
    """Many assignments and removals of one permission set in one account at once: the role
    exists exactly when an assignment is left."""
    ps = estate.permission_set("Busy")
    users = [estate.user() for _ in range(6)]
    ic = estate.broker.runtime.identity_center
    instance = estate.broker.server.call(ic.instances.by_store(estate.store_id))
    assert instance is not None

    async def churn(keep: str) -> list[str]:
        made = await asyncio.gather(*(ic.assignments.create(
            instance, ps, estate.member, "USER", u) for u in users))
        removed = await asyncio.gather(*(ic.assignments.delete(
            instance, ps, estate.member, "USER", u) for u in users if u != keep))
        return [s.status for s in (*made, *removed)]

    statuses = estate.broker.server.call(churn(users[0]))
    assert set(statuses) == {"SUCCEEDED"}
    busy = [r for r in estate.reserved_roles() if r["RoleName"].startswith("AWSReservedSSO_Busy_")]
    assert len(busy) == 1  # one assignment left: the role stays
    estate.broker.server.call(ic.assignments.delete(instance, ps, estate.member, "USER",
                                                    users[0]))
    assert not [r for r in estate.reserved_roles()
                if r["RoleName"].startswith("AWSReservedSSO_Busy_")]


def test_permission_sets_of_another_account_are_not_seen(estate: Estate) -> None:
    ps = estate.permission_set("Private")
    _, other_root = estate.broker.new_account()
    theirs = estate.sso(other_root)
    for method, params in (
            ("describe_permission_set", {"PermissionSetArn": ps}),
            ("list_permission_sets", {}),
            ("create_account_assignment", {
                "PermissionSetArn": ps, "TargetId": estate.member, "TargetType": "AWS_ACCOUNT",
                "PrincipalType": "USER", "PrincipalId": str(uuid.uuid4())})):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            getattr(theirs, method)(InstanceArn=estate.instance_arn, **params)
        assert code_of(refused) == "ResourceNotFoundException", method
    # The owner sees it: the control.
    assert estate.sso().describe_permission_set(
        InstanceArn=estate.instance_arn, PermissionSetArn=ps)["PermissionSet"]["Name"] == \
        "Private"


def test_the_policies_of_a_permission_set(estate: Estate) -> None:
    sso = estate.sso()
    arn = estate.instance_arn
    ps = estate.permission_set("Policies")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.put_inline_policy_to_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                                InlinePolicy='{"Version": "2012-10-17"}')
    assert code_of(refused) == "ValidationException"
    sso.put_inline_policy_to_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                            InlinePolicy=READ_S3)
    assert json.loads(sso.get_inline_policy_for_permission_set(
        InstanceArn=arn, PermissionSetArn=ps)["InlinePolicy"]) == json.loads(READ_S3)
    sso.delete_inline_policy_from_permission_set(InstanceArn=arn, PermissionSetArn=ps)
    assert sso.get_inline_policy_for_permission_set(InstanceArn=arn, PermissionSetArn=ps)[
        "InlinePolicy"] == ""
    sso.attach_managed_policy_to_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                                ManagedPolicyArn=READ_IAM)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.attach_managed_policy_to_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                                    ManagedPolicyArn=READ_IAM)
    assert code_of(refused) == "ConflictException"
    assert sso.list_managed_policies_in_permission_set(InstanceArn=arn, PermissionSetArn=ps)[
        "AttachedManagedPolicies"] == [{"Name": "IAMReadOnlyAccess", "Arn": READ_IAM}]
    sso.detach_managed_policy_from_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                                  ManagedPolicyArn=READ_IAM)
    ref = {"Name": "team", "Path": "/"}
    sso.attach_customer_managed_policy_reference_to_permission_set(
        InstanceArn=arn, PermissionSetArn=ps, CustomerManagedPolicyReference=ref)
    assert sso.list_customer_managed_policy_references_in_permission_set(
        InstanceArn=arn, PermissionSetArn=ps)["CustomerManagedPolicyReferences"] == [ref]
    sso.detach_customer_managed_policy_reference_from_permission_set(
        InstanceArn=arn, PermissionSetArn=ps, CustomerManagedPolicyReference=ref)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.get_permissions_boundary_for_permission_set(InstanceArn=arn, PermissionSetArn=ps)
    assert code_of(refused) == "ResourceNotFoundException"
    sso.put_permissions_boundary_to_permission_set(
        InstanceArn=arn, PermissionSetArn=ps, PermissionsBoundary={"ManagedPolicyArn": ADMIN})
    assert sso.get_permissions_boundary_for_permission_set(
        InstanceArn=arn, PermissionSetArn=ps)["PermissionsBoundary"] == {
            "ManagedPolicyArn": ADMIN}
    sso.delete_permissions_boundary_from_permission_set(InstanceArn=arn, PermissionSetArn=ps)
    # Names are unique in the instance; session durations are 1 to 12 hours.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.create_permission_set(InstanceArn=arn, Name="Policies")
    assert code_of(refused) == "ConflictException"
    for duration in ("PT13H", "PT30M", "P1M", "PTXH"):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sso.update_permission_set(InstanceArn=arn, PermissionSetArn=ps,
                                      SessionDuration=duration)
        assert code_of(refused) == "ValidationException", duration
    sso.update_permission_set(InstanceArn=arn, PermissionSetArn=ps, SessionDuration="PT12H")
    # Tags, of the permission set and of the instance.
    for resource in (ps, arn):
        sso.tag_resource(InstanceArn=arn, ResourceArn=resource,
                         Tags=[{"Key": "team", "Value": "a"}, {"Key": "cost", "Value": "1"}])
        sso.untag_resource(InstanceArn=arn, ResourceArn=resource, TagKeys=["cost"])
        assert sso.list_tags_for_resource(InstanceArn=arn, ResourceArn=resource)["Tags"] == [
            {"Key": "team", "Value": "a"}]
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sso.tag_resource(InstanceArn=arn, ResourceArn=resource,
                             Tags=[{"Key": "aws:x", "Value": "a"}])
        assert code_of(refused) == "ValidationException"


def test_assignments_for_a_principal(estate: Estate) -> None:
    sso = estate.sso()
    first, second = estate.permission_set(), estate.permission_set()
    user = estate.user()
    estate.assign(first, user)
    estate.assign(second, user, account=estate.management)
    found = sso.list_account_assignments_for_principal(
        InstanceArn=estate.instance_arn, PrincipalId=user, PrincipalType="USER")
    assert sorted((a["AccountId"], a["PermissionSetArn"]) for a in found["AccountAssignments"]) \
        == sorted([(estate.member, first), (estate.management, second)])
    only = sso.list_account_assignments_for_principal(
        InstanceArn=estate.instance_arn, PrincipalId=user, PrincipalType="USER",
        Filter={"AccountId": estate.member})
    assert [a["PermissionSetArn"] for a in only["AccountAssignments"]] == [first]
    paged = sso.list_account_assignments_for_principal(
        InstanceArn=estate.instance_arn, PrincipalId=user, PrincipalType="USER", MaxResults=1)
    assert len(paged["AccountAssignments"]) == 1 and "NextToken" in paged
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.list_account_assignments_for_principal(
            InstanceArn=estate.instance_arn, PrincipalId=user, PrincipalType="USER",
            NextToken="not-a-token")
    assert code_of(refused) == "ValidationException"
    deletions = sso.list_account_assignment_deletion_status(InstanceArn=estate.instance_arn)
    assert "AccountAssignmentsDeletionStatus" in deletions
    assert sso.list_permission_set_provisioning_status(
        InstanceArn=estate.instance_arn)["PermissionSetsProvisioningStatus"] is not None


def test_every_action_refuses_with_an_error_its_model_lists(estate: Estate) -> None:
    """Each sso-admin action, called by another account on this instance (or with a request
    id nobody made), is refused with an error botocore's model lists for that action — and
    the set of actions tried is every sso-admin action the broker answers."""
    import botocore

    from tests.integration.test_identity_center import MODEL

    ps = estate.permission_set("Errors")
    user = estate.user()
    _, other_root = estate.broker.new_account()
    theirs = estate.broker.client("sso-admin", other_root)
    mine = estate.broker.client("sso-admin", estate.management_root)
    i = {"InstanceArn": estate.instance_arn}
    p = {**i, "PermissionSetArn": ps}
    assignment = {**p, "TargetId": estate.member, "TargetType": "AWS_ACCOUNT",
                  "PrincipalType": "USER", "PrincipalId": user}
    ref = {"CustomerManagedPolicyReference": {"Name": "x", "Path": "/"}}
    nobody = "11111111-2222-4333-8444-555555555555"
    abac = {"InstanceAccessControlAttributeConfiguration": {"AccessControlAttributes": [
        {"Key": "Department", "Value": {"Source": ["${path:enterprise.department}"]}}]}}
    wrong = [
        (theirs, "CreateInstance", {}),  # the other account has one already (made below)
        (theirs, "ListInstances", {"NextToken": "not-a-token"}),
        (theirs, "DescribeInstance", i), (theirs, "UpdateInstance", {**i, "Name": "x"}),
        (theirs, "DeleteInstance", i),
        (theirs, "CreatePermissionSet", {**i, "Name": "x"}),
        (theirs, "DescribePermissionSet", p), (theirs, "UpdatePermissionSet", p),
        (theirs, "DeletePermissionSet", p), (theirs, "ListPermissionSets", i),
        (theirs, "PutInlinePolicyToPermissionSet", {**p, "InlinePolicy": READ_S3}),
        (theirs, "GetInlinePolicyForPermissionSet", p),
        (theirs, "DeleteInlinePolicyFromPermissionSet", p),
        (theirs, "AttachManagedPolicyToPermissionSet", {**p, "ManagedPolicyArn": READ_IAM}),
        (theirs, "DetachManagedPolicyFromPermissionSet", {**p, "ManagedPolicyArn": READ_IAM}),
        (theirs, "ListManagedPoliciesInPermissionSet", p),
        (theirs, "AttachCustomerManagedPolicyReferenceToPermissionSet", {**p, **ref}),
        (theirs, "DetachCustomerManagedPolicyReferenceFromPermissionSet", {**p, **ref}),
        (theirs, "ListCustomerManagedPolicyReferencesInPermissionSet", p),
        (theirs, "PutPermissionsBoundaryToPermissionSet",
         {**p, "PermissionsBoundary": {"ManagedPolicyArn": ADMIN}}),
        (theirs, "GetPermissionsBoundaryForPermissionSet", p),
        (theirs, "DeletePermissionsBoundaryFromPermissionSet", p),
        (theirs, "CreateAccountAssignment", assignment),
        (mine, "DeleteAccountAssignment", assignment),  # never made
        (mine, "DescribeAccountAssignmentCreationStatus",
         {**i, "AccountAssignmentCreationRequestId": nobody}),
        (mine, "DescribeAccountAssignmentDeletionStatus",
         {**i, "AccountAssignmentDeletionRequestId": nobody}),
        (theirs, "ListAccountAssignmentCreationStatus", i),
        (theirs, "ListAccountAssignmentDeletionStatus", i),
        (theirs, "ProvisionPermissionSet", {**p, "TargetType": "ALL_PROVISIONED_ACCOUNTS"}),
        (mine, "DescribePermissionSetProvisioningStatus",
         {**i, "ProvisionPermissionSetRequestId": nobody}),
        (theirs, "ListPermissionSetProvisioningStatus", i),
        (theirs, "ListAccountAssignments", {**p, "AccountId": estate.member}),
        (theirs, "ListAccountAssignmentsForPrincipal",
         {**i, "PrincipalId": user, "PrincipalType": "USER"}),
        (theirs, "ListPermissionSetsProvisionedToAccount", {**i, "AccountId": estate.member}),
        (theirs, "ListAccountsForProvisionedPermissionSet", p),
        (theirs, "TagResource", {**i, "ResourceArn": ps, "Tags": [{"Key": "k", "Value": "v"}]}),
        (theirs, "UntagResource", {**i, "ResourceArn": ps, "TagKeys": ["k"]}),
        (theirs, "ListTagsForResource", {**i, "ResourceArn": ps}),
        (theirs, "CreateInstanceAccessControlAttributeConfiguration", {**i, **abac}),
        (mine, "DescribeInstanceAccessControlAttributeConfiguration", i),  # none made
        (theirs, "UpdateInstanceAccessControlAttributeConfiguration", {**i, **abac}),
        (mine, "DeleteInstanceAccessControlAttributeConfiguration", i),
    ]
    theirs.create_instance()
    assert {action for _, action, _ in wrong} == \
        {op.name for op in estate.broker.runtime.json_protocol.operations
         if op.service.target == MODEL.metadata["targetPrefix"]}
    for client, action, params in wrong:
        try:
            getattr(client, botocore.xform_name(action))(**params)
        except botocore.exceptions.ClientError as exc:
            code = exc.response["Error"]["Code"]
        else:
            raise AssertionError(f"{action} was not refused")
        documented = {e.name for e in MODEL.operation_model(action).error_shapes}
        assert code in documented, (action, code, sorted(documented))
    # The control: the owner's own calls of the same kind succeed.
    assert mine.describe_permission_set(**p)["PermissionSet"]["Name"] == "Errors"
    assert estate.assign(ps, user)["Status"] == "SUCCEEDED"


def _reserved_role(estate: Estate, prefix: str) -> dict[str, Any]:
    [role] = [r for r in estate.reserved_roles() if r["RoleName"].startswith(prefix)]
    return role


def test_the_instances_saml_provider_is_not_the_accounts_to_make_or_change(
        estate: Estate) -> None:
    """A member's administrator cannot put their own identity provider behind the reserved
    roles: the AWSSSO_… provider cannot be made or changed through IAM, an assertion — even
    one the provider's metadata would accept — never opens a reserved role through STS, and
    provisioning puts the instance's own metadata back."""
    from tests.saml_idp import TestIdp, encode
    from tests.saml_world import trust_policy

    ps = estate.permission_set("Takeover")
    estate.assign(ps, estate.user())
    role = _reserved_role(estate, "AWSReservedSSO_Takeover_")
    provider = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Federated"]
    name = provider.rsplit("/", 1)[1]
    iam = estate.iam(estate.member_root)
    attacker = TestIdp("https://attacker.example.test/metadata")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.update_saml_provider(SAMLProviderArn=provider,
                                 SAMLMetadataDocument=attacker.metadata())
    assert code_of(refused) == "InvalidInput"
    iam.delete_saml_provider(SAMLProviderArn=provider)  # allowed, as on AWS
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.create_saml_provider(Name=name, SAMLMetadataDocument=attacker.metadata())
    assert code_of(refused) == "InvalidInput"
    own = iam.create_saml_provider(Name="attacker-idp",  # the control: any other name
                                   SAMLMetadataDocument=attacker.metadata())["SAMLProviderArn"]
    # Suppose the provider were the attacker's all the same (written past the API): their
    # assertion still opens no reserved role — beside the control, an ordinary role that
    # trusts the same provider, which it opens.
    runtime = estate.broker.runtime
    estate.broker.server.call(runtime.iam.saml_providers.create(
        estate.member, name, attacker.metadata()))
    ordinary = iam.create_role(RoleName="trusts-the-provider", AssumeRolePolicyDocument=(
        trust_policy(provider, estate.broker.settings.acs_url)))["Role"]["Arn"]
    sts = estate.broker.client("sts", validate=False)

    def assertion(role_arn: str) -> str:
        return encode(attacker.response(
            acs_url=estate.broker.settings.acs_url,
            audience=estate.broker.settings.sp_entity_id, roles=[(role_arn, provider)],
            session_name="victim-person"))

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_role_with_saml(RoleArn=role["Arn"], PrincipalArn=provider,
                                  SAMLAssertion=assertion(role["Arn"]))
    assert code_of(refused) == "AccessDenied"
    opened = sts.assume_role_with_saml(RoleArn=ordinary, PrincipalArn=provider,
                                       SAMLAssertion=assertion(ordinary))
    assert opened["AssumedRoleUser"]["Arn"].endswith("/victim-person")
    # Provisioning again makes the provider the instance's own again.
    estate.sso().provision_permission_set(InstanceArn=estate.instance_arn,
                                          PermissionSetArn=ps, TargetType="AWS_ACCOUNT",
                                          TargetId=estate.member)
    metadata = iam.get_saml_provider(SAMLProviderArn=provider)["SAMLMetadataDocument"]
    assert "attacker.example.test" not in metadata and estate.store_id in metadata
    iam.delete_saml_provider(SAMLProviderArn=own)


def test_tags_of_a_reserved_role_cannot_be_changed(estate: Estate) -> None:
    ps = estate.permission_set("Tagless")
    estate.assign(ps, estate.user())
    name = _reserved_role(estate, "AWSReservedSSO_Tagless_")["RoleName"]
    iam = estate.iam(estate.member_root)
    for method, params in (("tag_role", {"Tags": [{"Key": "team", "Value": "mine"}]}),
                           ("untag_role", {"TagKeys": ["team"]})):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            getattr(iam, method)(RoleName=name, **params)
        assert code_of(refused) == "UnmodifiableEntity", method
    assert iam.list_role_tags(RoleName=name)["Tags"] == []
    iam.create_role(RoleName="tagged", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
            "AWS": f"arn:aws:iam::{estate.member}:root"}, "Action": "sts:AssumeRole"}]}))
    iam.tag_role(RoleName="tagged", Tags=[{"Key": "team", "Value": "mine"}])  # the control


def test_an_account_that_leaves_the_organization_loses_the_instances_roles(
        broker: Broker) -> None:
    management, management_root = broker.new_account()
    orgs = broker.client("organizations", management_root)
    orgs.create_organization(FeatureSet="ALL")
    leaving, leaving_root = broker.new_account()
    staying, staying_root = broker.new_account()
    for account, root in ((leaving, leaving_root), (staying, staying_root)):
        handshake = orgs.invite_account_to_organization(
            Target={"Id": account, "Type": "ACCOUNT"})["Handshake"]["Id"]
        broker.client("organizations", root).accept_handshake(HandshakeId=handshake)
    sso = broker.client("sso-admin", management_root)
    instance_arn = sso.create_instance()["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=instance_arn)["IdentityStoreId"]
    estate = Estate(broker, management, management_root, leaving, leaving_root, instance_arn,
                    store_id)
    ps = estate.permission_set("Leavers")
    user_id = estate.user()
    estate.assign(ps, user_id)
    estate.assign(ps, user_id, account=staying)
    ic = broker.runtime.identity_center
    instance = broker.server.call(ic.instances.by_store(store_id))
    assert instance is not None
    assert [a.account_id for a in broker.server.call(ic.access.accounts(instance, user_id))] \
        == sorted([leaving, staying])
    broker.client("organizations", leaving_root).leave_organization()
    # Gone from the account that left (its assignments too), kept where the account stayed.
    assert estate.reserved_roles(leaving_root) == []
    assert len(estate.reserved_roles(staying_root)) == 1
    assert [a.account_id for a in broker.server.call(ic.access.accounts(instance, user_id))] \
        == [staying]
    assert sso.list_account_assignments(InstanceArn=instance_arn, AccountId=leaving,
                                        PermissionSetArn=ps)["AccountAssignments"] == []
    # Nor can the organization reach into it again.
    sso.attach_managed_policy_to_permission_set(InstanceArn=instance_arn, PermissionSetArn=ps,
                                                ManagedPolicyArn=ADMIN)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.provision_permission_set(InstanceArn=instance_arn, PermissionSetArn=ps,
                                     TargetType="AWS_ACCOUNT", TargetId=leaving)
    assert code_of(refused) == "ValidationException"
    status = sso.provision_permission_set(InstanceArn=instance_arn, PermissionSetArn=ps,
                                          TargetType="ALL_PROVISIONED_ACCOUNTS")
    assert status["PermissionSetProvisioningStatus"]["Status"] == "SUCCEEDED"
    assert estate.reserved_roles(leaving_root) == []
    [kept] = estate.reserved_roles(staying_root)
    attached = estate.iam(staying_root).list_attached_role_policies(
        RoleName=kept["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [ADMIN]


def test_deleting_the_instance_takes_back_its_roles(broker: Broker) -> None:
    account, root = broker.new_account()
    sso = broker.client("sso-admin", root)
    instance_arn = sso.create_instance()["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=instance_arn)["IdentityStoreId"]
    estate = Estate(broker, account, root, account, root, instance_arn, store_id)
    ps = estate.permission_set("Doomed")
    estate.assign(ps, estate.user())
    assert len(estate.reserved_roles(root)) == 1
    sso.delete_instance(InstanceArn=instance_arn)
    assert estate.reserved_roles(root) == []
    # A new instance starts clean, and provisions again: the control.
    again = sso.create_instance()["InstanceArn"]
    store = sso.describe_instance(InstanceArn=again)["IdentityStoreId"]
    fresh = Estate(broker, account, root, account, root, again, store)
    assert fresh.assign(fresh.permission_set("Reborn"), fresh.user())["Status"] == "SUCCEEDED"
    assert len(fresh.reserved_roles(root)) == 1
