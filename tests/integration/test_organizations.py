"""AWS Organizations over boto3: the tree, SCPs that bind even root, RCPs, the organization
keys and centralized root access, each refusal beside the honest request that succeeds."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import botocore.exceptions
import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.organizations.service import CLAIM_STALE, CREATE_ACCOUNT, MEMBER
from broker.principal import Principal, PrincipalType
from broker.settings import Application
from broker.store.base import GLOBAL, Record, Ref
from broker.sts.tokens import open_token
from tests.helpers import Broker, Creds, allow_policy, creds_of
from tests.oidc_issuer import TestIssuer
from tests.oidc_world import OidcWorld, identifier

SCP = "SERVICE_CONTROL_POLICY"
RCP = "RESOURCE_CONTROL_POLICY"
MODEL = botocore.session.get_session().get_service_model("organizations")


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


DENY_CREATE_USER = doc({"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"})


def code_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def conforms(value: Any, shape: Any, where: str) -> None:
    """A JSON value of an answer holds only what botocore's output shape has, typed so, with
    every member the shape requires (a document member is any JSON)."""
    kind = shape.type_name
    if kind == "structure" and getattr(shape, "is_document_type", False):
        return
    if kind == "structure":
        assert isinstance(value, dict), where
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{where}: members the model does not have: {unknown}"
        for name in shape.required_members:
            assert name in value, f"{where}: the required member {name} is missing"
        for name, item in value.items():
            conforms(item, shape.members[name], f"{where}.{name}")
    elif kind == "map":
        assert isinstance(value, dict), where
        for key, item in value.items():
            conforms(key, shape.key, f"{where}.key")
            conforms(item, shape.value, f"{where}.{key}")
    elif kind == "list":
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            conforms(item, shape.member, f"{where}[{i}]")
    elif kind == "timestamp":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), where
    else:
        assert isinstance(value, str), where
        if shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in the model's enum"


def strict(client: Any) -> Any:
    """A client whose every successful answer is checked against the model's output shape."""
    def check(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        if response_dict["status_code"] == 200 and operation_model.output_shape is not None:
            body = json.loads(response_dict["body"] or b"{}")
            conforms(body, operation_model.output_shape, operation_model.name)
            CHECKED.add(operation_model.name)

    client.meta.events.register("before-parse.organizations.*", check)
    return client


CHECKED: set[str] = set()  # the actions whose answers were checked against the model


@dataclass
class Estate:
    """A management account with an organization (SCPs enabled), and one member account that
    joined by invitation, with its root user's access key."""

    broker: Broker
    management: str
    management_root: Creds
    member: str
    member_root: Creds
    org_id: str
    root_id: str

    def orgs(self, creds: Creds | None = None) -> Any:
        return strict(self.broker.client("organizations", creds or self.management_root))

    def iam(self, creds: Creds) -> Any:
        return self.broker.client("iam", creds)

    def ou(self, name: str, parent: str | None = None) -> str:
        found = self.orgs().create_organizational_unit(ParentId=parent or self.root_id,
                                                       Name=name)
        return str(found["OrganizationalUnit"]["Id"])

    def policy(self, content: str, policy_type: str = SCP, name: str | None = None) -> str:
        created = self.orgs().create_policy(
            Name=name or f"p{time.monotonic_ns()}", Description="test", Type=policy_type,
            Content=content)
        return str(created["Policy"]["PolicySummary"]["Id"])


def make_estate(broker: Broker, *, rcp: bool = False) -> Estate:
    management, management_root = broker.new_account()
    member, member_root = broker.new_account()
    orgs = strict(broker.client("organizations", management_root))
    org = orgs.create_organization(FeatureSet="ALL")["Organization"]
    root_id = orgs.list_roots()["Roots"][0]["Id"]
    orgs.enable_policy_type(RootId=root_id, PolicyType=SCP)
    if rcp:
        orgs.enable_policy_type(RootId=root_id, PolicyType=RCP)
    handshake = orgs.invite_account_to_organization(
        Target={"Id": member, "Type": "ACCOUNT"})["Handshake"]
    strict(broker.client("organizations", member_root)).accept_handshake(
        HandshakeId=handshake["Id"])
    return Estate(broker, management, management_root, member, member_root, org["Id"],
                  root_id)


@pytest.fixture
def estate(broker: Broker) -> Estate:
    return make_estate(broker)


# -- the walk-through ---------------------------------------------------------------------------


def test_an_scp_on_an_ou_binds_the_member_root_and_never_the_management(estate: Estate) -> None:
    ou = estate.ou("Workloads")
    estate.orgs().move_account(AccountId=estate.member, SourceParentId=estate.root_id,
                               DestinationParentId=ou)
    policy = estate.policy(DENY_CREATE_USER)
    estate.orgs().attach_policy(PolicyId=policy, TargetId=ou)

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(estate.member_root).create_user(UserName="blocked")
    assert code_of(refused) == "AccessDenied"
    message = refused.value.response["Error"]["Message"]
    assert f"arn:aws:iam::{estate.member}:root is not authorized to perform: iam:CreateUser" \
        in message
    assert "with an explicit deny in a service control policy" in message
    # What the SCP does not deny, the member's root still may.
    estate.iam(estate.member_root).list_users()
    # The management account is never bound, whatever is attached above it.
    estate.orgs().attach_policy(PolicyId=policy, TargetId=estate.root_id)
    estate.iam(estate.management_root).create_user(UserName="management-may")

    estate.orgs().detach_policy(PolicyId=policy, TargetId=ou)
    estate.orgs().detach_policy(PolicyId=policy, TargetId=estate.root_id)
    estate.iam(estate.member_root).create_user(UserName="allowed-again")


def test_the_scp_binds_every_principal_of_the_member_account(estate: Estate) -> None:
    admin_name, admin = estate.broker.new_user(estate.member_root)
    estate.iam(estate.member_root).put_user_policy(
        UserName=admin_name, PolicyName="admin", PolicyDocument=allow_policy("*", "*"))
    estate.iam(admin).create_user(UserName="before-the-scp")  # control
    estate.orgs().attach_policy(PolicyId=estate.policy(DENY_CREATE_USER),
                                TargetId=estate.member)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(admin).create_user(UserName="after-the-scp")
    assert "explicit deny in a service control policy" in \
        refused.value.response["Error"]["Message"]


def test_every_level_must_allow(estate: Estate) -> None:
    """An allow-list SCP on the OU: what it does not allow is refused even though the root and
    the account allow everything (FullAWSAccess)."""
    ou = estate.ou("ListOnly")
    estate.orgs().move_account(AccountId=estate.member, SourceParentId=estate.root_id,
                               DestinationParentId=ou)
    only_list = estate.policy(doc({"Effect": "Allow", "Action": ["iam:List*", "iam:Get*"],
                                   "Resource": "*"}))
    estate.orgs().attach_policy(PolicyId=only_list, TargetId=ou)
    iam = estate.iam(estate.member_root)
    iam.create_user(UserName="while-full-access")  # FullAWSAccess still on the OU: control
    estate.orgs().detach_policy(PolicyId="p-FullAWSAccess", TargetId=ou)
    iam.list_users()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.create_user(UserName="not-allowed")
    assert "because no service control policy allows the iam:CreateUser action" in \
        refused.value.response["Error"]["Message"]


def test_the_last_scp_of_a_target_cannot_be_detached(estate: Estate) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.orgs().detach_policy(PolicyId="p-FullAWSAccess", TargetId=estate.member)
    assert code_of(refused) == "ConstraintViolationException"
    assert refused.value.response["Reason"] == "MIN_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED"
    other = estate.policy(doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    estate.orgs().attach_policy(PolicyId=other, TargetId=estate.member)
    estate.orgs().detach_policy(PolicyId="p-FullAWSAccess", TargetId=estate.member)


def test_decode_and_the_simulator_name_the_scp(estate: Estate) -> None:
    admin_name, admin = estate.broker.new_user(estate.member_root)
    estate.iam(estate.member_root).put_user_policy(
        UserName=admin_name, PolicyName="admin", PolicyDocument=allow_policy("*", "*"))
    policy = estate.policy(DENY_CREATE_USER)
    estate.orgs().attach_policy(PolicyId=policy, TargetId=estate.member)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(admin).create_user(UserName="x")
    encoded = refused.value.response["Error"]["Message"].rsplit(": ", 1)[1]
    decoded = json.loads(estate.broker.client("sts", admin).decode_authorization_message(
        EncodedMessage=encoded)["DecodedMessage"])
    assert decoded["explicitDeny"] is True
    assert decoded["matchedStatements"]["items"][0]["policyType"] == "scp"
    assert policy in decoded["matchedStatements"]["items"][0]["policy"]

    simulated = estate.iam(estate.member_root).simulate_principal_policy(
        PolicySourceArn=f"arn:aws:iam::{estate.member}:user/{admin_name}",
        ActionNames=["iam:CreateUser", "iam:ListUsers"])["EvaluationResults"]
    by_action = {r["EvalActionName"]: r for r in simulated}
    assert by_action["iam:CreateUser"]["EvalDecision"] == "explicitDeny"
    assert by_action["iam:CreateUser"]["OrganizationsDecisionDetail"] == {
        "AllowedByOrganizations": False}
    assert by_action["iam:ListUsers"]["EvalDecision"] == "allowed"
    assert by_action["iam:ListUsers"]["OrganizationsDecisionDetail"] == {
        "AllowedByOrganizations": True}


def test_an_scp_denying_console_use_revokes_console_sessions(estate: Estate) -> None:
    runtime = estate.broker.runtime
    who = Principal(type=PrincipalType.ACCOUNT, account_id=estate.member,
                    arn=f"arn:aws:iam::{estate.member}:root", user_id=estate.member,
                    name=estate.member, access_key_id="")
    assert not estate.broker.server.call(runtime.authz.revoked(who))  # control
    # An allow-list SCP written for AWS names no signin:UseConsole; it does not revoke.
    estate.orgs().attach_policy(PolicyId=estate.policy(doc(
        {"Effect": "Allow", "Action": ["iam:*", "sts:*"], "Resource": "*"})),
        TargetId=estate.member)
    estate.orgs().detach_policy(PolicyId="p-FullAWSAccess", TargetId=estate.member)
    assert not estate.broker.server.call(runtime.authz.revoked(who))
    estate.orgs().attach_policy(
        PolicyId=estate.policy(doc({"Effect": "Deny", "Action": "signin:UseConsole",
                                    "Resource": "*"})), TargetId=estate.member)
    assert estate.broker.server.call(runtime.authz.revoked(who))


# -- resource control policies and the organization keys ---------------------------------------


def perimeter(org_id: str) -> str:
    return doc({"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole",
                "Resource": "*",
                "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": org_id}}})


def test_an_rcp_perimeter_refuses_a_principal_outside_the_organization(broker: Broker) -> None:
    estate = make_estate(broker, rcp=True)
    outsider_account, outsider_root = broker.new_account()
    insider_name, insider = broker.new_user(estate.management_root)
    outsider_name, outsider = broker.new_user(outsider_root)
    for creds, name in ((estate.management_root, insider_name),
                        (outsider_root, outsider_name)):
        broker.client("iam", creds).put_user_policy(
            UserName=name, PolicyName="assume", PolicyDocument=allow_policy("sts:AssumeRole",
                                                                            "*"))
    trust = doc({"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": [
        f"arn:aws:iam::{estate.management}:root", f"arn:aws:iam::{outsider_account}:root"]}})
    role = estate.iam(estate.member_root).create_role(
        RoleName="shared", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    # Before the perimeter the trust policy alone decides: both may.
    broker.client("sts", outsider).assume_role(RoleArn=role, RoleSessionName="before")
    estate.orgs().attach_policy(PolicyId=estate.policy(perimeter(estate.org_id), RCP),
                                TargetId=estate.member)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        broker.client("sts", outsider).assume_role(RoleArn=role, RoleSessionName="after")
    assert code_of(refused) == "AccessDenied"
    broker.client("sts", insider).assume_role(RoleArn=role, RoleSessionName="inside")


def test_rcpfullawsaccess_is_attached_and_cannot_be_detached(broker: Broker) -> None:
    estate = make_estate(broker, rcp=True)
    attached = estate.orgs().list_policies_for_target(TargetId=estate.member, Filter=RCP)
    assert [p["Id"] for p in attached["Policies"]] == ["p-RCPFullAWSAccess"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.orgs().detach_policy(PolicyId="p-RCPFullAWSAccess", TargetId=estate.member)
    assert refused.value.response["Reason"] == "NON_DETACHABLE_POLICY"


def test_principal_org_id_in_a_trust_policy(estate: Estate) -> None:
    _, outsider_root = estate.broker.new_account()
    trust = doc({"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": "*"},
                 "Condition": {"StringEquals": {"aws:PrincipalOrgID": estate.org_id}}})
    role = estate.iam(estate.member_root).create_role(
        RoleName="org-wide", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    name, insider = estate.broker.new_user(estate.management_root)
    estate.iam(estate.management_root).put_user_policy(
        UserName=name, PolicyName="assume",
        PolicyDocument=allow_policy("sts:AssumeRole", "*"))
    estate.broker.client("sts", insider).assume_role(RoleArn=role, RoleSessionName="in")
    out_name, outsider = estate.broker.new_user(outsider_root)
    estate.iam(outsider_root).put_user_policy(
        UserName=out_name, PolicyName="assume",
        PolicyDocument=allow_policy("sts:AssumeRole", "*"))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.broker.client("sts", outsider).assume_role(RoleArn=role, RoleSessionName="out")
    assert code_of(refused) == "AccessDenied"


def test_organization_paths_and_resource_keys_in_identity_policies(estate: Estate) -> None:
    ou = estate.ou("Paths")
    estate.orgs().move_account(AccountId=estate.member, SourceParentId=estate.root_id,
                               DestinationParentId=ou)
    name, user = estate.broker.new_user(estate.member_root)
    path = f"{estate.org_id}/{estate.root_id}/{ou}/"
    estate.iam(estate.member_root).put_user_policy(
        UserName=name, PolicyName="by-path", PolicyDocument=doc({
            "Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*",
            "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": [path + "*"]},
                          "StringEquals": {"aws:ResourceAccount": estate.member,
                                           "aws:ResourceOrgID": estate.org_id}}}))
    estate.iam(user).list_users()
    estate.orgs().move_account(AccountId=estate.member, SourceParentId=ou,
                               DestinationParentId=estate.root_id)
    with pytest.raises(botocore.exceptions.ClientError):
        estate.iam(user).list_users()


# -- accounts created by the organization ------------------------------------------------------


def test_create_account_gives_an_access_role_bound_by_the_scps(estate: Estate) -> None:
    orgs = estate.orgs()
    status = orgs.create_account(Email=f"new-{time.monotonic_ns()}@example.com",
                                 AccountName="workload")["CreateAccountStatus"]
    assert status["State"] in ("IN_PROGRESS", "SUCCEEDED")
    for _ in range(600):
        status = orgs.describe_create_account_status(
            CreateAccountRequestId=status["Id"])["CreateAccountStatus"]
        if status["State"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
    assert status["State"] == "SUCCEEDED"
    account = status["AccountId"]
    assert orgs.describe_account(AccountId=account)["Account"]["JoinedMethod"] == "CREATED"
    name, operator = estate.broker.new_user(estate.management_root)
    estate.iam(estate.management_root).put_user_policy(
        UserName=name, PolicyName="assume", PolicyDocument=allow_policy("sts:AssumeRole", "*"))
    session = creds_of(estate.broker.client("sts", operator).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
        RoleSessionName="admin"))
    estate.iam(session).create_user(UserName="made-by-the-role")  # control
    orgs.attach_policy(PolicyId=estate.policy(DENY_CREATE_USER), TargetId=account)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(session).create_user(UserName="refused")
    assert "service control policy" in refused.value.response["Error"]["Message"]


def test_create_account_with_a_used_email_fails(estate: Estate) -> None:
    email = f"dup-{time.monotonic_ns()}@example.com"
    orgs = estate.orgs()
    first = orgs.create_account(Email=email, AccountName="one")["CreateAccountStatus"]
    second = orgs.create_account(Email=email, AccountName="two")["CreateAccountStatus"]
    states = {}
    for _ in range(600):
        states = {s["Id"]: s for s in
                  orgs.list_create_account_status()["CreateAccountStatuses"]}
        if all(states[i]["State"] != "IN_PROGRESS" for i in (first["Id"], second["Id"])):
            break
        time.sleep(0.05)
    outcomes = sorted(states[i]["State"] for i in (first["Id"], second["Id"]))
    assert outcomes == ["FAILED", "SUCCEEDED"]
    failed = next(s for s in states.values() if s["State"] == "FAILED")
    assert failed["FailureReason"] == "EMAIL_ALREADY_EXISTS"


# -- centralized root access -------------------------------------------------------------------


def test_assume_root_scoped_by_its_task_policy(estate: Estate) -> None:
    iam = estate.iam(estate.management_root)
    name, operator = estate.broker.new_user(estate.management_root)
    iam.put_user_policy(UserName=name, PolicyName="root",
                        PolicyDocument=allow_policy("sts:AssumeRoot", "*"))
    sts = estate.broker.client("sts", operator)
    task = {"arn": "arn:aws:iam::aws:policy/root-task/IAMAuditRootUserCredentials"}
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_root(TargetPrincipal=estate.member, TaskPolicyArn=task)
    assert code_of(refused) == "AccessDenied"  # root sessions not enabled yet
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        iam.enable_organizations_root_sessions()
    assert code_of(refused) == "ServiceAccessNotEnabledException"
    estate.orgs().enable_aws_service_access(ServicePrincipal="iam.amazonaws.com")
    features = iam.enable_organizations_root_sessions()
    assert features["EnabledFeatures"] == ["RootSessions"]
    assert iam.list_organizations_features()["OrganizationId"] == estate.org_id

    audit = creds_of(sts.assume_root(TargetPrincipal=estate.member, TaskPolicyArn=task))
    who = estate.broker.client("sts", audit).get_caller_identity()
    assert who["Arn"] == f"arn:aws:iam::{estate.member}:root"
    keys = estate.iam(audit).list_access_keys()["AccessKeyMetadata"]
    assert estate.member_root.access_key_id in [k["AccessKeyId"] for k in keys]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(audit).create_user(UserName="not-a-task")
    assert code_of(refused) == "AccessDenied"

    delete = creds_of(sts.assume_root(TargetPrincipal=estate.member, TaskPolicyArn={
        "arn": "arn:aws:iam::aws:policy/root-task/IAMDeleteRootUserCredentials"}))
    estate.iam(delete).delete_access_key(AccessKeyId=estate.member_root.access_key_id)
    with pytest.raises(botocore.exceptions.ClientError):
        estate.broker.client("sts", estate.member_root).get_caller_identity()

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.broker.client("sts", estate.management_root).assume_root(
            TargetPrincipal=estate.member, TaskPolicyArn=task)
    assert code_of(refused) == "AccessDenied"  # never with root credentials
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_root(TargetPrincipal=estate.member, TaskPolicyArn={
            "arn": "arn:aws:iam::aws:policy/root-task/S3UnlockBucketPolicy"})
    assert code_of(refused) == "ValidationError"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_root(TargetPrincipal=estate.management, TaskPolicyArn=task)
    assert code_of(refused) == "AccessDenied"  # the management account is no member


def root_operator(estate: Estate, **extra_policy: Any) -> Any:
    """An STS client of a management-account user allowed sts:AssumeRoot, with IAM's trusted
    access and both root-access features on."""
    estate.orgs().enable_aws_service_access(ServicePrincipal="iam.amazonaws.com")
    iam = estate.iam(estate.management_root)
    iam.enable_organizations_root_sessions()
    iam.enable_organizations_root_credentials_management()
    name, operator = estate.broker.new_user(estate.management_root)
    iam.put_user_policy(UserName=name, PolicyName="root",
                        PolicyDocument=allow_policy("sts:AssumeRoot", "*", **extra_policy))
    return estate.broker.client("sts", operator)


def task(estate: Estate, sts: Any, name: str, member: str | None = None) -> Creds:
    return creds_of(sts.assume_root(TargetPrincipal=member or estate.member, TaskPolicyArn={
        "arn": f"arn:aws:iam::aws:policy/root-task/{name}"}))


def test_root_password_tasks(broker: Broker) -> None:
    """The audit and delete tasks read and remove the member root's password; the password
    task, which on AWS opens email recovery, has no meaning here and is refused — the
    management account never chooses a member root's password."""
    management, management_root = broker.new_account()
    email = f"root-{time.monotonic_ns()}@example.com"
    account, key = broker.server.call(broker.runtime.iam.create_account(
        root_email=email, root_password="Member-Root-Passw0rd"))
    member_root = Creds(key.key.access_key_id, key.secret_access_key)
    orgs = strict(broker.client("organizations", management_root))
    org = orgs.create_organization()["Organization"]
    invited = orgs.invite_account_to_organization(
        Target={"Id": account.id, "Type": "ACCOUNT"})["Handshake"]
    strict(broker.client("organizations", member_root)).accept_handshake(
        HandshakeId=invited["Id"])
    estate = Estate(broker, management, management_root, account.id, member_root, org["Id"],
                    orgs.list_roots()["Roots"][0]["Id"])
    sts = root_operator(estate)

    audit = estate.iam(task(estate, sts, "IAMAuditRootUserCredentials"))
    assert audit.get_login_profile()["LoginProfile"]["CreateDate"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        task(estate, sts, "IAMCreateRootUserPassword")
    assert code_of(refused) == "ValidationError"
    # Long-term root keys naming no user are not a root task (the control of for_root).
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(member_root).get_login_profile()
    assert code_of(refused) == "ValidationError"
    estate.iam(task(estate, sts, "IAMDeleteRootUserCredentials")).delete_login_profile()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.iam(task(estate, sts, "IAMAuditRootUserCredentials")).get_login_profile()
    assert code_of(refused) == "NoSuchEntity"


def test_root_tasks_touch_only_the_root_users_credentials(estate: Estate) -> None:
    name, _ = estate.broker.new_user(estate.member_root)
    user_key = estate.iam(estate.member_root).create_access_key(UserName=name)["AccessKey"]
    delete = estate.iam(task(estate, root_operator(estate), "IAMDeleteRootUserCredentials"))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        delete.delete_access_key(UserName=name, AccessKeyId=user_key["AccessKeyId"])
    assert code_of(refused) == "AccessDenied"
    assert "the root user's own credentials only" in refused.value.response["Error"]["Message"]
    delete.delete_access_key(AccessKeyId=estate.member_root.access_key_id)  # the control


def test_assumed_root_is_in_the_context(estate: Estate) -> None:
    """aws:AssumedRoot is true in root-task sessions: an SCP can keep them from a task while
    the member's own root may still do it."""
    estate.orgs().attach_policy(PolicyId=estate.policy(doc({
        "Effect": "Deny", "Action": "iam:DeleteAccessKey", "Resource": "*",
        "Condition": {"Bool": {"aws:AssumedRoot": "true"}}})), TargetId=estate.member)
    spare = estate.iam(estate.member_root).create_access_key()["AccessKey"]
    delete = estate.iam(task(estate, root_operator(estate), "IAMDeleteRootUserCredentials"))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        delete.delete_access_key(AccessKeyId=spare["AccessKeyId"])
    assert "explicit deny in a service control policy" in \
        refused.value.response["Error"]["Message"]
    estate.iam(estate.member_root).delete_access_key(AccessKeyId=spare["AccessKeyId"])


def test_assume_root_is_judged_on_the_member(estate: Estate) -> None:
    """aws:ResourceAccount of sts:AssumeRoot is the target member's: an operator's policy may
    keep it from one member and not another; a user's ARN is no TargetPrincipal."""
    other, other_root = estate.broker.new_account()
    invited = estate.orgs().invite_account_to_organization(
        Target={"Id": other, "Type": "ACCOUNT"})["Handshake"]
    estate.orgs(other_root).accept_handshake(HandshakeId=invited["Id"])
    sts = root_operator(estate)
    name = "root-operator-limited"
    iam = estate.iam(estate.management_root)
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    iam.put_user_policy(UserName=name, PolicyName="root", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:AssumeRoot", "Resource": "*"},
        {"Effect": "Deny", "Action": "sts:AssumeRoot", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceAccount": estate.member}}}))
    limited = estate.broker.client("sts", Creds(key["AccessKeyId"], key["SecretAccessKey"]))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        task(estate, limited, "IAMAuditRootUserCredentials")
    assert code_of(refused) == "AccessDenied"
    task(estate, limited, "IAMAuditRootUserCredentials", member=other)  # the control
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_root(TargetPrincipal=f"arn:aws:iam::{estate.member}:user/alice",
                        TaskPolicyArn={"arn": "arn:aws:iam::aws:policy/root-task/"
                                              "IAMAuditRootUserCredentials"})
    assert code_of(refused) == "ValidationError"


def test_root_task_credentials_do_not_sign_in_to_the_console(estate: Estate) -> None:
    audit = task(estate, root_operator(estate), "IAMAuditRootUserCredentials")
    with httpx.Client(base_url=estate.broker.url) as client:
        refused = client.get("/federation", params={
            "Action": "getSigninToken", "Session": json.dumps({
                "sessionId": audit.access_key_id, "sessionKey": audit.secret_access_key,
                "sessionToken": audit.session_token})})
        assert refused.status_code == 403, refused.text
        assert refused.json()["Error"]["Code"] == "AccessDenied"
        # The control: role credentials of the same estate sign in.
        name, operator = estate.broker.new_user(estate.management_root)
        estate.iam(estate.management_root).put_user_policy(
            UserName=name, PolicyName="assume",
            PolicyDocument=allow_policy("sts:AssumeRole", "*"))
        estate.iam(estate.member_root).create_role(
            RoleName="console-role", AssumeRolePolicyDocument=doc({
                "Effect": "Allow", "Action": "sts:AssumeRole",
                "Principal": {"AWS": f"arn:aws:iam::{estate.management}:root"}}))
        role = creds_of(estate.broker.client("sts", operator).assume_role(
            RoleArn=f"arn:aws:iam::{estate.member}:role/console-role", RoleSessionName="console"))
        ok = client.get("/federation", params={
            "Action": "getSigninToken", "Session": json.dumps({
                "sessionId": role.access_key_id, "sessionKey": role.secret_access_key,
                "sessionToken": role.session_token})})
        assert ok.status_code == 200, ok.text


# -- the API's shapes, quotas and errors -------------------------------------------------------


def test_tree_listings_and_parents(estate: Estate) -> None:
    orgs = estate.orgs()
    prod = estate.ou("Prod")
    team = estate.ou("Team", prod)
    orgs.move_account(AccountId=estate.member, SourceParentId=estate.root_id,
                      DestinationParentId=team)
    assert [c["Id"] for c in orgs.list_children(ParentId=prod,
                                                ChildType="ORGANIZATIONAL_UNIT")["Children"]
            ] == [team]
    assert orgs.list_parents(ChildId=estate.member)["Parents"] == [
        {"Id": team, "Type": "ORGANIZATIONAL_UNIT"}]
    assert orgs.list_parents(ChildId=prod)["Parents"] == [{"Id": estate.root_id,
                                                          "Type": "ROOT"}]
    assert [a["Id"] for a in orgs.list_accounts_for_parent(ParentId=team)["Accounts"]] == [
        estate.member]
    ids = [a["Id"] for page in orgs.get_paginator("list_accounts").paginate(
        PaginationConfig={"PageSize": 1}) for a in page["Accounts"]]
    assert sorted(ids) == sorted([estate.management, estate.member])
    member = orgs.describe_account(AccountId=estate.member)["Account"]
    assert member["Arn"] == (f"arn:aws:organizations::{estate.management}:account/"
                             f"{estate.org_id}/{estate.member}")
    assert member["JoinedMethod"] == "INVITED"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.delete_organizational_unit(OrganizationalUnitId=team)
    assert code_of(refused) == "OrganizationalUnitNotEmptyException"
    # A member may describe its organization, and nothing of the tree.
    member_orgs = estate.orgs(estate.member_root)
    assert member_orgs.describe_organization()["Organization"]["Id"] == estate.org_id
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        member_orgs.list_accounts()
    assert code_of(refused) == "AccessDeniedException"


def test_ous_nest_five_deep_and_no_deeper(estate: Estate) -> None:
    parent = estate.root_id
    for depth in range(5):
        parent = estate.ou(f"level{depth}", parent)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        estate.ou("level5", parent)
    assert refused.value.response["Reason"] == "OU_DEPTH_LIMIT_EXCEEDED"


def test_policy_quotas_and_grammar(estate: Estate) -> None:
    orgs = estate.orgs()
    big = doc({"Sid": "A" * 5100, "Effect": "Deny", "Action": "iam:*", "Resource": "*"})
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.create_policy(Name="big", Description="", Type=SCP, Content=big)
    assert refused.value.response["Reason"] == "POLICY_CONTENT_LIMIT_EXCEEDED"
    with_principal = doc({"Effect": "Deny", "Principal": "*", "Action": "iam:*",
                          "Resource": "*"})
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.create_policy(Name="principal", Description="", Type=SCP, Content=with_principal)
    assert code_of(refused) == "MalformedPolicyDocumentException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.create_policy(Name="rcp-allow", Description="", Type=RCP, Content=doc(
            {"Effect": "Allow", "Principal": "*", "Action": "sts:*", "Resource": "*"}))
    assert code_of(refused) == "MalformedPolicyDocumentException"
    for index in range(4):  # FullAWSAccess is the first of five
        orgs.attach_policy(PolicyId=estate.policy(DENY_CREATE_USER, name=f"q{index}"),
                           TargetId=estate.member)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.attach_policy(PolicyId=estate.policy(DENY_CREATE_USER), TargetId=estate.member)
    assert refused.value.response["Reason"] == "MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.create_policy(Name="q0", Description="", Type=SCP, Content=DENY_CREATE_USER)
    assert code_of(refused) == "DuplicatePolicyException"


def test_policy_lifecycle_and_tags(estate: Estate) -> None:
    orgs = estate.orgs()
    policy = estate.policy(DENY_CREATE_USER, name="lifecycle")
    orgs.attach_policy(PolicyId=policy, TargetId=estate.member)
    targets = orgs.list_targets_for_policy(PolicyId=policy)["Targets"]
    assert [(t["TargetId"], t["Type"]) for t in targets] == [(estate.member, "ACCOUNT")]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.delete_policy(PolicyId=policy)
    assert code_of(refused) == "PolicyInUseException"
    updated = orgs.update_policy(PolicyId=policy, Name="renamed", Description="new")["Policy"]
    assert updated["PolicySummary"]["Name"] == "renamed"
    orgs.tag_resource(ResourceId=policy, Tags=[{"Key": "team", "Value": "platform"}])
    assert orgs.list_tags_for_resource(ResourceId=policy)["Tags"] == [
        {"Key": "team", "Value": "platform"}]
    orgs.untag_resource(ResourceId=policy, TagKeys=["team"])
    assert orgs.list_tags_for_resource(ResourceId=policy)["Tags"] == []
    orgs.detach_policy(PolicyId=policy, TargetId=estate.member)
    orgs.delete_policy(PolicyId=policy)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.describe_policy(PolicyId=policy)
    assert code_of(refused) == "PolicyNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.update_policy(PolicyId="p-FullAWSAccess", Name="mine")
    assert refused.value.response["Reason"] == "IMMUTABLE_POLICY"
    summaries = orgs.list_policies(Filter=SCP)["Policies"]
    assert any(p["Id"] == "p-FullAWSAccess" and p["AwsManaged"] for p in summaries)


def test_handshakes(broker: Broker) -> None:
    management, management_root = broker.new_account()
    invited, invited_root = broker.new_account()
    orgs = strict(broker.client("organizations", management_root))
    org = orgs.create_organization()["Organization"]
    handshake = orgs.invite_account_to_organization(
        Target={"Id": invited, "Type": "ACCOUNT"}, Notes="welcome")["Handshake"]
    assert handshake["State"] == "OPEN"
    assert handshake["Arn"].startswith(f"arn:aws:organizations::{management}:handshake/"
                                       f"{org['Id']}/invite/h-")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.invite_account_to_organization(Target={"Id": invited, "Type": "ACCOUNT"})
    assert code_of(refused) == "DuplicateHandshakeException"
    theirs = strict(broker.client("organizations", invited_root))
    listed = theirs.list_handshakes_for_account()["Handshakes"]
    assert [h["Id"] for h in listed] == [handshake["Id"]]
    declined = theirs.decline_handshake(HandshakeId=handshake["Id"])["Handshake"]
    assert declined["State"] == "DECLINED"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        theirs.accept_handshake(HandshakeId=handshake["Id"])
    assert code_of(refused) == "InvalidHandshakeTransitionException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        theirs.describe_organization()
    assert code_of(refused) == "AWSOrganizationsNotInUseException"
    again = orgs.invite_account_to_organization(Target={"Id": invited,
                                                        "Type": "ACCOUNT"})["Handshake"]
    # Only the invited account accepts; the management account cancels.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.accept_handshake(HandshakeId=again["Id"])
    assert code_of(refused) == "AccessDeniedException"
    theirs.accept_handshake(HandshakeId=again["Id"])
    assert theirs.describe_organization()["Organization"]["Id"] == org["Id"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.delete_organization()
    assert code_of(refused) == "OrganizationNotEmptyException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.leave_organization()
    assert code_of(refused) == "MasterCannotLeaveOrganizationException"
    theirs.leave_organization()
    orgs.delete_organization()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        orgs.describe_organization()
    assert code_of(refused) == "AWSOrganizationsNotInUseException"
    # Free again: the invited account can found an organization of its own.
    theirs.create_organization()


def test_an_account_belongs_to_one_organization(broker: Broker) -> None:
    _, first_root = broker.new_account()
    _, second_root = broker.new_account()
    strict(broker.client("organizations", first_root)).create_organization()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        strict(broker.client("organizations", first_root)).create_organization()
    assert code_of(refused) == "AlreadyInOrganizationException"
    strict(broker.client("organizations", second_root)).create_organization()  # control


def test_every_error_is_one_the_model_lists_for_its_action(estate: Estate) -> None:
    """A wrong request to every action, each answered with an error botocore's model
    documents for that action (a whole-surface check: a new refusal under another name fails
    here, and so does an action added without a wrong request of its own)."""
    orgs = estate.orgs()
    member = estate.orgs(estate.member_root)
    outsider = estate.orgs(estate.broker.new_account()[1])
    missing_ou = f"ou-{estate.root_id[2:]}-zzzzzzzz"
    wrong: list[tuple[Any, str, dict[str, Any]]] = [
        (orgs, "DescribeOrganizationalUnit", {"OrganizationalUnitId": missing_ou}),
        (orgs, "UpdateOrganizationalUnit", {"OrganizationalUnitId": missing_ou, "Name": "x"}),
        (orgs, "DeleteOrganizationalUnit", {"OrganizationalUnitId": missing_ou}),
        (orgs, "CreateOrganizationalUnit", {"ParentId": missing_ou, "Name": "x"}),
        (orgs, "ListChildren", {"ParentId": "r-zzzz", "ChildType": "ACCOUNT"}),
        (orgs, "ListParents", {"ChildId": "000000000000"}),
        (orgs, "ListAccountsForParent", {"ParentId": missing_ou}),
        (orgs, "ListOrganizationalUnitsForParent", {"ParentId": missing_ou}),
        (orgs, "DescribeAccount", {"AccountId": "000000000000"}),
        (orgs, "MoveAccount", {"AccountId": estate.member, "SourceParentId": missing_ou,
                               "DestinationParentId": estate.root_id}),
        (orgs, "MoveAccount", {"AccountId": estate.member, "SourceParentId": estate.root_id,
                               "DestinationParentId": missing_ou}),
        (orgs, "MoveAccount", {"AccountId": estate.member, "SourceParentId": estate.root_id,
                               "DestinationParentId": estate.root_id}),
        (orgs, "RemoveAccountFromOrganization", {"AccountId": estate.management}),
        (orgs, "RemoveAccountFromOrganization", {"AccountId": "000000000000"}),
        (orgs, "DescribePolicy", {"PolicyId": "p-zzzzzzzz"}),
        (orgs, "DeletePolicy", {"PolicyId": "p-FullAWSAccess"}),
        (orgs, "AttachPolicy", {"PolicyId": "p-FullAWSAccess", "TargetId": estate.member}),
        (orgs, "AttachPolicy", {"PolicyId": "p-zzzzzzzz", "TargetId": estate.member}),
        (orgs, "AttachPolicy", {"PolicyId": "p-RCPFullAWSAccess", "TargetId": estate.member}),
        (orgs, "DetachPolicy", {"PolicyId": "p-FullAWSAccess", "TargetId": "000000000000"}),
        (orgs, "ListPoliciesForTarget", {"TargetId": "000000000000", "Filter": SCP}),
        (orgs, "ListTargetsForPolicy", {"PolicyId": "p-zzzzzzzz"}),
        (orgs, "EnablePolicyType", {"RootId": estate.root_id, "PolicyType": SCP}),
        (orgs, "EnablePolicyType", {"RootId": "r-zzzz", "PolicyType": RCP}),
        (orgs, "EnablePolicyType", {"RootId": estate.root_id, "PolicyType": "TAG_POLICY"}),
        (orgs, "DisablePolicyType", {"RootId": estate.root_id, "PolicyType": RCP}),
        (orgs, "CreatePolicy", {"Name": "x", "Description": "", "Type": SCP,
                                "Content": "{not json"}),
        (orgs, "TagResource", {"ResourceId": "000000000000",
                               "Tags": [{"Key": "k", "Value": "v"}]}),
        (orgs, "TagResource", {"ResourceId": estate.member,
                               "Tags": [{"Key": "aws:k", "Value": "v"}]}),
        (orgs, "UntagResource", {"ResourceId": "000000000000", "TagKeys": ["k"]}),
        (orgs, "ListTagsForResource", {"ResourceId": "000000000000"}),
        (orgs, "DescribeHandshake", {"HandshakeId": "h-zzzzzzzzzz"}),
        (orgs, "CancelHandshake", {"HandshakeId": "h-zzzzzzzzzz"}),
        (orgs, "DescribeCreateAccountStatus", {"CreateAccountRequestId": "car-zzzzzzzz"}),
        (orgs, "InviteAccountToOrganization", {"Target": {"Id": "000000000000",
                                                          "Type": "ACCOUNT"}}),
        (orgs, "InviteAccountToOrganization", {"Target": {"Id": estate.member,
                                                          "Type": "ACCOUNT"}}),
        (orgs, "ListAccounts", {"NextToken": "not-a-token"}),
        (orgs, "CreateOrganization", {}),
        (orgs, "LeaveOrganization", {}),
        (member, "ListRoots", {}),
        (member, "CreatePolicy", {"Name": "x", "Description": "", "Type": SCP,
                                  "Content": DENY_CREATE_USER}),
        (member, "DeleteOrganization", {}),
        (member, "AcceptHandshake", {"HandshakeId": "h-zzzzzzzzzz"}),
        (member, "DeclineHandshake", {"HandshakeId": "h-zzzzzzzzzz"}),
        (member, "CreateAccount", {"Email": "x@example.com", "AccountName": "x"}),
        (member, "EnableAWSServiceAccess", {"ServicePrincipal": "iam.amazonaws.com"}),
        (member, "DisableAWSServiceAccess", {"ServicePrincipal": "iam.amazonaws.com"}),
        (member, "ListAWSServiceAccessForOrganization", {}),
        (member, "ListCreateAccountStatus", {}),
        (member, "ListHandshakesForOrganization", {}),
        (member, "ListPolicies", {"Filter": SCP}),
        (orgs, "UpdatePolicy", {"PolicyId": "p-zzzzzzzz", "Name": "x"}),
        (orgs, "ListHandshakesForAccount", {"NextToken": "not-a-token"}),
        (outsider, "DescribeOrganization", {}),
    ]
    assert {action for _, action, _ in wrong} == \
        {op.name for op in estate.broker.runtime.json_protocol.operations
         if op.service.target == MODEL.metadata["targetPrefix"]}
    for client, action, params in wrong:
        method = getattr(client, botocore.xform_name(action))
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            method(**params)
        code = code_of(refused)
        documented = {e.name for e in MODEL.operation_model(action).error_shapes}
        assert code in documented, f"{action}: {code} is not among {sorted(documented)}"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, action


def test_the_remaining_answers(estate: Estate) -> None:
    orgs = estate.orgs()
    orgs.enable_aws_service_access(ServicePrincipal="iam.amazonaws.com")
    services = orgs.list_aws_service_access_for_organization()["EnabledServicePrincipals"]
    assert [s["ServicePrincipal"] for s in services] == ["iam.amazonaws.com"]
    ou = estate.ou("Answers")
    assert orgs.describe_organizational_unit(OrganizationalUnitId=ou)[
        "OrganizationalUnit"]["Name"] == "Answers"
    orgs.update_organizational_unit(OrganizationalUnitId=ou, Name="Renamed")
    assert [o["Name"] for o in orgs.list_organizational_units_for_parent(
        ParentId=estate.root_id)["OrganizationalUnits"]] == ["Renamed"]
    _, other_root = estate.broker.new_account()
    other = estate.broker.client("sts", other_root).get_caller_identity()["Account"]
    sent = orgs.invite_account_to_organization(Target={"Id": other, "Type": "ACCOUNT"})
    handshake = sent["Handshake"]["Id"]
    assert orgs.describe_handshake(HandshakeId=handshake)["Handshake"]["State"] == "OPEN"
    assert [h["Id"] for h in orgs.list_handshakes_for_organization()["Handshakes"]
            if h["State"] == "OPEN"] == [handshake]
    assert orgs.cancel_handshake(HandshakeId=handshake)["Handshake"]["State"] == "CANCELED"
    orgs.list_create_account_status()
    orgs.list_tags_for_resource(ResourceId=ou)
    orgs.describe_policy(PolicyId="p-FullAWSAccess")
    root = orgs.disable_policy_type(RootId=estate.root_id, PolicyType=SCP)["Root"]
    assert root["PolicyTypes"] == []
    # With SCPs disabled nothing binds the member: the control of every SCP test.
    estate.iam(estate.member_root).create_user(UserName="no-scps")


def test_the_answers_of_every_action_were_checked_against_the_model(broker: Broker) -> None:
    """The control of ``strict``: every action with an answer was seen answering (this
    module's other tests run first), and each answer held only what the model has."""
    with_output = {op.name for op in broker.runtime.json_protocol.operations
                   if op.service.target == MODEL.metadata["targetPrefix"]
                   and MODEL.operation_model(op.name).output_shape is not None}
    assert with_output - CHECKED == set()


# -- the JSON 1.1 protocol on the one endpoint -------------------------------------------------


def _post(broker: Broker, target: str, body: bytes, creds: Creds | None,
          *, tamper: bool = False) -> httpx.Response:
    request = AWSRequest(method="POST", url=f"{broker.url}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    if creds is not None:
        SigV4Auth(Credentials(creds.access_key_id, creds.secret_access_key),
                  "organizations", "us-east-1").add_auth(request)
    sent = dict(request.headers.items())
    if tamper:
        body = body + b" "
    return httpx.post(f"{broker.url}/", content=body, headers=sent)


def test_the_json_protocol_answers_in_its_own_format(broker: Broker) -> None:
    target = "AWSOrganizationsV20161128.DescribeOrganization"
    _, root = broker.new_account()
    ok = _post(broker, target, b"{}", root)
    assert ok.status_code == 400  # no organization: the control reached the handler
    assert ok.json()["__type"] == "AWSOrganizationsNotInUseException"
    assert ok.headers["content-type"] == "application/x-amz-json-1.1"
    assert ok.headers["x-amzn-errortype"] == "AWSOrganizationsNotInUseException"
    assert ok.headers["x-amzn-requestid"]
    cases = [
        (_post(broker, target, b"{}", None), "MissingAuthenticationTokenException"),
        (_post(broker, target, b"{}", root, tamper=True), "InvalidSignatureException"),
        (_post(broker, target, b"{}", Creds("AKIAIOSFODNN7EXAMPLE", "x" * 40)),
         "UnrecognizedClientException"),
        (_post(broker, "AWSOrganizationsV20161128.Nothing", b"{}", root),
         "UnknownOperationException"),
        (_post(broker, "AWSOrganizationsV20161128.ListRoots", b'{"MaxResults": "5"}', root),
         "SerializationException"),
        (_post(broker, "AWSOrganizationsV20161128.ListRoots", b"{not json", root),
         "SerializationException"),
        (_post(broker, "AWSOrganizationsV20161128.ListRoots", b'{"MaxResults": 50}', root),
         "InvalidInputException"),
        (_post(broker, "AWSOrganizationsV20161128.DescribeAccount", b"{}", root),
         "InvalidInputException"),
    ]
    for response, code in cases:
        assert response.status_code in (400, 403), response.text
        assert response.json()["__type"] == code, response.text
    reasons = [r.json().get("Reason") for r, c in cases if c == "InvalidInputException"]
    assert reasons == ["MAX_VALUE_EXCEEDED", "INPUT_REQUIRED"]
    # The Query protocol is untouched beside it on the same URL.
    assert broker.client("sts", root).get_caller_identity()["Account"]


def test_an_rcp_binds_assume_role_with_web_identity(broker: Broker) -> None:
    """RCPs bind the roles of web identity federation too: the RCP refuses a token whose
    subject is not the one it names, whatever the role's trust policy (audience only) says."""
    _, management_root = broker.new_account()
    orgs = strict(broker.client("organizations", management_root))
    orgs.create_organization()
    root_id = orgs.list_roots()["Roots"][0]["Id"]
    orgs.enable_policy_type(RootId=root_id, PolicyType=RCP)
    invited = orgs.invite_account_to_organization(
        Target={"Id": broker.account_id, "Type": "ACCOUNT"})["Handshake"]
    strict(broker.client("organizations")).accept_handshake(HandshakeId=invited["Id"])
    with TestIssuer(path="/rcp") as issuer:
        world = OidcWorld.make(broker, issuer)
        world.assume(world.token(sub="deploy-bot"))  # before the RCP: the trust policy decides
        world.assume(world.token(sub="someone-else"))
        subject_key = f"{identifier(issuer.url)}:sub"
        rcp = orgs.create_policy(Name="only-the-bot", Description="", Type=RCP, Content=doc({
            "Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRoleWithWebIdentity",
            "Resource": "*",
            "Condition": {"StringNotEquals": {subject_key: "deploy-bot"}}}))
        orgs.attach_policy(PolicyId=rcp["Policy"]["PolicySummary"]["Id"],
                           TargetId=broker.account_id)
        world.assume(world.token(sub="deploy-bot"))
        code, _, status = world.refused(world.token(sub="someone-else"))
        assert (code, status) == ("AccessDenied", 403)
    strict(broker.client("organizations")).leave_organization()


def test_an_scp_binds_the_gateway(estate: Estate) -> None:
    """gateway:Access, the one action the broker's own console decides, is bound like any: a
    member's session the identity side allows loses the application under a denying SCP."""
    runtime = estate.broker.runtime
    name, user = estate.broker.new_user(estate.member_root)
    estate.iam(estate.member_root).put_user_policy(
        UserName=name, PolicyName="apps", PolicyDocument=allow_policy("gateway:Access", "*"))
    session = creds_of(estate.broker.client("sts", user).get_session_token())
    assert session.session_token is not None
    who = Principal.of_session(open_token(session.session_token, session.access_key_id,
                                          runtime.keyring, now=runtime.clock.now()))
    app = Application("wiki", "https://wiki.example.test", "arn:aws:gateway:::app/wiki")
    assert estate.broker.server.call(runtime.console.may_open(who, app))  # control
    estate.orgs().attach_policy(PolicyId=estate.policy(doc(
        {"Effect": "Deny", "Action": "gateway:Access", "Resource": "*"})),
        TargetId=estate.member)
    assert not estate.broker.server.call(runtime.console.may_open(who, app))


# -- one organization per account, under concurrent joins ---------------------------------------


def _invited_by_two(broker: Broker) -> tuple[str, Creds, list[tuple[Any, str]]]:
    """An account invited by two organizations: (its id, its root, [(their client,
    handshake id)])."""
    account, root = broker.new_account()
    invitations = []
    for _ in range(2):
        _, management_root = broker.new_account()
        orgs = strict(broker.client("organizations", management_root))
        orgs.create_organization()
        handshake = orgs.invite_account_to_organization(
            Target={"Id": account, "Type": "ACCOUNT"})["Handshake"]["Id"]
        invitations.append((orgs, handshake))
    return account, root, invitations


def test_concurrent_acceptances_leave_the_account_in_one_organization(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both acceptances claim the account before either writes its tree: the tree writes are
    slowed (50 ms, a busy database) so that the two joins really overlap."""
    account, _, invitations = _invited_by_two(broker)
    service = broker.runtime.organizations
    change = service._change

    async def slowly(org: Any, apply: Any) -> Any:
        await asyncio.sleep(0.05)
        return await change(org, apply)

    monkeypatch.setattr(service, "_change", slowly)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(service.accept(account, handshake) for _, handshake in invitations),
            return_exceptions=True)

    outcomes = broker.server.call(both())
    accepted = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if not isinstance(o, dict)]
    assert len(accepted) == 1, outcomes
    assert [getattr(o, "code", None) for o in refused] in (
        ["HandshakeConstraintViolationException"], ["ConcurrentModificationException"])
    trees = [[a["Id"] for a in orgs.list_accounts()["Accounts"]] for orgs, _ in invitations]
    assert sum(account in ids for ids in trees) == 1, trees
    # The refused handshake is open again, the accepted one accepted.
    states = sorted(orgs.describe_handshake(HandshakeId=h)["Handshake"]["State"]
                    for orgs, h in invitations)
    assert states == ["ACCEPTED", "OPEN"]


def test_a_join_under_way_is_not_taken_over_until_it_is_stale(broker: Broker) -> None:
    """A pending claim of another organization (a join cut short) blocks a join for
    CLAIM_STALE, then counts for nothing."""
    account, root, invitations = _invited_by_two(broker)
    runtime = broker.runtime
    now = runtime.clock.now()
    claim = {"org": "o-elsewhere0", "state": "pending", "at": now.isoformat()}
    broker.server.call(runtime.store.create(Record(MEMBER, GLOBAL, account, claim)))
    orgs, handshake = invitations[0]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        strict(broker.client("organizations", root)).accept_handshake(HandshakeId=handshake)
    assert code_of(refused) == "ConcurrentModificationException"
    stale = (now - CLAIM_STALE - timedelta(seconds=1)).isoformat()

    async def age(record: Any) -> None:
        await runtime.store.update(record, lambda r: {**r.data, "at": stale})

    broker.server.call(age(Ref(MEMBER, GLOBAL, account)))
    strict(broker.client("organizations", root)).accept_handshake(HandshakeId=handshake)
    assert account in [a["Id"] for a in orgs.list_accounts()["Accounts"]]


def test_an_account_creation_cut_short_after_its_join_completes(estate: Estate) -> None:
    """Each step of CreateAccount may run again: a request whose account already joined but
    whose status was never written completes on the next status request."""
    runtime = estate.broker.runtime
    orgs = estate.orgs()
    status = orgs.create_account(Email=f"cut-{time.monotonic_ns()}@example.com",
                                 AccountName="cut")["CreateAccountStatus"]
    estate.broker.server.call(runtime.organizations.wait())
    async def cut_short() -> None:
        await runtime.store.update(Ref(CREATE_ACCOUNT, GLOBAL, status["Id"]),
                                   lambda r: {**r.data, "state": "IN_PROGRESS"})

    estate.broker.server.call(cut_short())
    done = estate.broker.server.call(runtime.organizations.complete(status["Id"]))
    assert done["state"] == "SUCCEEDED"
    assert orgs.describe_account(AccountId=done["account"])["Account"]["Name"] == "cut"
