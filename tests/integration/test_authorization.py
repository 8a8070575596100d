"""Every IAM and STS call is authorized by the policy engine, through boto3 against a real server.

Each refusal has its control: the same caller, the same fixture, allowed by the policy that the
refusal lacks."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import botocore.exceptions
import pytest

from tests.helpers import Broker, Creds, creds_of

ALLOW_ALL = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(*args, **kwargs)
    error = info.value.response["Error"]
    assert error["Code"] == "AccessDenied", error
    return str(error["Message"])


def sentence(message: str) -> str:
    return message.split(". Encoded authorization failure message: ", 1)[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_managed_policy_grants_and_its_removal_takes_it_away(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    user_iam = broker.client("iam", creds)
    message = refused(user_iam.list_users)
    assert sentence(message).endswith("because no identity-based policy allows the "
                                      "iam:ListUsers action")
    iam.attach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    assert user_iam.list_users()["Users"]  # the control: now allowed
    refused(user_iam.create_user, UserName=unique("x"))  # read-only: no writes
    iam.detach_user_policy(UserName=name,
                           PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    refused(user_iam.list_users)


def test_inline_policy_with_resource_and_variable(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="own-keys", PolicyDocument=doc({
        "Effect": "Allow", "Action": ["iam:ListAccessKeys", "iam:CreateAccessKey"],
        "Resource": "arn:aws:iam::*:user/${aws:username}"}))
    user_iam = broker.client("iam", creds)
    assert len(user_iam.list_access_keys()["AccessKeyMetadata"]) == 1  # its own: allowed
    other, _ = broker.new_user()
    message = refused(user_iam.list_access_keys, UserName=other)
    assert f"iam:ListAccessKeys on resource: arn:aws:iam::{broker.account_id}:user/{other}" \
        in message


def test_explicit_deny_wins_over_allow(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="all",
                        PolicyDocument=json.dumps(ALLOW_ALL))
    user_iam = broker.client("iam", creds)
    user_iam.list_roles()  # the control
    iam.put_user_policy(UserName=name, PolicyName="no-roles", PolicyDocument=doc(
        {"Sid": "NoRoles", "Effect": "Deny", "Action": "iam:*Role*", "Resource": "*"}))
    message = refused(user_iam.list_roles)
    assert sentence(message).endswith("with an explicit deny in an identity-based policy")
    user_iam.list_users()


def test_group_policies_apply_to_members(broker: Broker) -> None:
    iam = broker.client("iam")
    group = unique("g")
    iam.create_group(GroupName=group)
    iam.put_group_policy(GroupName=group, PolicyName="list", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "iam:ListGroups", "Resource": "*"}))
    name, creds = broker.new_user()
    user_iam = broker.client("iam", creds)
    refused(user_iam.list_groups)
    iam.add_user_to_group(GroupName=group, UserName=name)
    assert group in [g["GroupName"] for g in user_iam.list_groups()["Groups"]]
    iam.remove_user_from_group(GroupName=group, UserName=name)
    refused(user_iam.list_groups)


def test_permissions_boundary_limits_what_policies_grant(broker: Broker) -> None:
    iam = broker.client("iam")
    boundary = iam.create_policy(PolicyName=unique("bound"), PolicyDocument=doc(
        {"Effect": "Allow", "Action": "iam:List*", "Resource": "*"}))["Policy"]["Arn"]
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    iam.put_user_permissions_boundary(UserName=name, PermissionsBoundary=boundary)
    user_iam = broker.client("iam", creds)
    user_iam.list_users()  # within the boundary
    message = refused(user_iam.create_group, GroupName=unique("g"))
    assert sentence(message).endswith("because no permissions boundary allows the "
                                      "iam:CreateGroup action")
    iam.delete_user_permissions_boundary(UserName=name)
    user_iam.create_group(GroupName=unique("g"))  # the control: no boundary, allowed


def test_delegated_administration_through_iam_permissions_boundary(broker: Broker) -> None:
    """AWS's delegated-administrator pattern: an administrator may create users and roles and
    give them policies only when they carry a given boundary, and may not remove it."""
    iam = broker.client("iam")
    boundary = iam.create_policy(PolicyName=unique("fence"), PolicyDocument=doc(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))["Policy"]["Arn"]
    other = iam.create_policy(PolicyName=unique("other"), PolicyDocument=doc(
        {"Effect": "Allow", "Action": "*", "Resource": "*"}))["Policy"]["Arn"]
    name, creds = broker.new_user()
    bounded = {"StringEquals": {"iam:PermissionsBoundary": boundary}}
    iam.put_user_policy(UserName=name, PolicyName="delegate", PolicyDocument=doc(
        {"Effect": "Allow", "Resource": "*", "Condition": bounded,
         "Action": ["iam:CreateUser", "iam:CreateRole", "iam:PutUserPolicy",
                    "iam:PutUserPermissionsBoundary", "iam:AttachRolePolicy"]},
        {"Effect": "Allow", "Action": "iam:DeleteUserPermissionsBoundary", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:DeleteUserPermissionsBoundary", "Resource": "*",
         "Condition": bounded}))
    admin = broker.client("iam", creds)
    trust = doc({"Effect": "Allow", "Principal": {"AWS": broker.account_id},
                 "Action": "sts:AssumeRole"})
    # Creating: with the boundary allowed, without it or with another refused.
    user = unique("hire")
    admin.create_user(UserName=user, PermissionsBoundary=boundary)
    refused(admin.create_user, UserName=unique("hire"))
    refused(admin.create_user, UserName=unique("hire"), PermissionsBoundary=other)
    role = unique("svc")
    admin.create_role(RoleName=role, AssumeRolePolicyDocument=trust,
                      PermissionsBoundary=boundary)
    refused(admin.create_role, RoleName=unique("svc"), AssumeRolePolicyDocument=trust)
    # Acting on an entity that has the boundary: allowed; on one without it: refused.
    admin.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(ALLOW_ALL))
    admin.attach_role_policy(RoleName=role, PolicyArn=other)
    unbounded = unique("free")
    iam.create_user(UserName=unbounded)
    refused(admin.put_user_policy, UserName=unbounded, PolicyName="p",
            PolicyDocument=json.dumps(ALLOW_ALL))
    # Swapping the boundary: only for the same one; removing it: the deny wins.
    admin.put_user_permissions_boundary(UserName=user, PermissionsBoundary=boundary)
    refused(admin.put_user_permissions_boundary, UserName=user, PermissionsBoundary=other)
    refused(admin.delete_user_permissions_boundary, UserName=user)
    iam.put_user_permissions_boundary(UserName=unbounded, PermissionsBoundary=other)
    admin.delete_user_permissions_boundary(UserName=unbounded)  # the control: not the fence


def test_moving_a_user_or_group_needs_the_action_on_both_paths(broker: Broker) -> None:
    """A delegated administrator of /sandbox/ cannot move a user or a group out of it into a
    path that other policies trust (AWS: the action on the source and the target)."""
    iam = broker.client("iam")
    name, creds = broker.new_user()
    sandbox = f"arn:aws:iam::{broker.account_id}:%s/sandbox/*"
    iam.put_user_policy(UserName=name, PolicyName="sandbox", PolicyDocument=doc(
        {"Effect": "Allow", "Action": ["iam:CreateUser", "iam:UpdateUser"],
         "Resource": sandbox % "user"},
        {"Effect": "Allow", "Action": ["iam:CreateGroup", "iam:UpdateGroup"],
         "Resource": sandbox % "group"}))
    admin = broker.client("iam", creds)
    bob, team = unique("bob"), unique("team")
    admin.create_user(UserName=bob, Path="/sandbox/")
    admin.create_group(GroupName=team, Path="/sandbox/")
    refused(admin.update_user, UserName=bob, NewPath="/admins/")
    refused(admin.update_group, GroupName=team, NewPath="/admins/")
    assert iam.get_user(UserName=bob)["User"]["Path"] == "/sandbox/"
    # The control: within the sandbox, moving is allowed.
    admin.update_user(UserName=bob, NewPath="/sandbox/deeper/")
    admin.update_group(GroupName=team, NewPath="/sandbox/deeper/")
    assert iam.get_user(UserName=bob)["User"]["Path"] == "/sandbox/deeper/"


def test_self_service_key_policy_covers_only_the_users_own_keys(broker: Broker) -> None:
    """AWS's self-service policy (access keys on user/${aws:username}) reaches the user's own
    keys, not the root user's."""
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="own-keys", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "iam:*AccessKey*",
         "Resource": f"arn:aws:iam::{broker.account_id}:user/${{aws:username}}"}))
    me = broker.client("iam", creds)
    assert me.get_access_key_last_used(AccessKeyId=creds.access_key_id)["UserName"] == name
    message = refused(me.get_access_key_last_used, AccessKeyId=broker.root.access_key_id)
    assert f"on resource: arn:aws:iam::{broker.account_id}:root" in message


def test_conditions_read_the_request_context(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.tag_user(UserName=name, Tags=[{"Key": "team", "Value": "blue"}])
    iam.put_user_policy(UserName=name, PolicyName="cond", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                       "StringEquals": {"aws:PrincipalTag/team": "blue"}}},
        {"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
        {"Effect": "Allow", "Action": "iam:ListGroups", "Resource": "*",
         "Condition": {"Bool": {"aws:SecureTransport": "true"}}}))
    user_iam = broker.client("iam", creds)
    user_iam.list_users()  # from 127.0.0.1, tagged blue: allowed
    refused(user_iam.list_roles)  # not from 10/8
    refused(user_iam.list_groups)  # not over TLS
    iam.tag_user(UserName=name, Tags=[{"Key": "team", "Value": "red"}])
    refused(user_iam.list_users)  # the tag changed


def test_request_tags_are_conditions_too(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="tagged", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "iam:CreateUser", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/owner": "${aws:username}"},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["owner"]}}}))
    user_iam = broker.client("iam", creds)
    user_iam.create_user(UserName=unique("ok"), Tags=[{"Key": "owner", "Value": name}])
    refused(user_iam.create_user, UserName=unique("no"), Tags=[{"Key": "owner", "Value": "x"}])
    refused(user_iam.create_user, UserName=unique("no"),
            Tags=[{"Key": "owner", "Value": name}, {"Key": "extra", "Value": "1"}])
    refused(user_iam.create_user, UserName=unique("no"))  # no tag at all


def test_decode_authorization_message(broker: Broker) -> None:
    _, creds = broker.new_user()
    message = refused(broker.client("iam", creds).list_policies)
    encoded = re.search(r"Encoded authorization failure message: (\S+)$", message)
    assert encoded is not None
    # The refused user may not decode it: that takes sts:DecodeAuthorizationMessage.
    refused(broker.client("sts", creds).decode_authorization_message,
            EncodedMessage=encoded.group(1))
    decoded = json.loads(broker.client("sts").decode_authorization_message(
        EncodedMessage=encoded.group(1))["DecodedMessage"])
    assert decoded["allowed"] is False and decoded["explicitDeny"] is False
    assert decoded["context"]["action"] == "iam:ListPolicies"
    assert decoded["reason"] == "because no identity-based policy allows the " \
        "iam:ListPolicies action"
    keys = {item["key"] for item in decoded["context"]["conditions"]["items"]}
    assert {"aws:SourceIp", "aws:username", "aws:PrincipalArn"} <= keys
    # Another account cannot read it, and nothing else decodes as one.
    _, other = broker.new_account()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", other).decode_authorization_message(
            EncodedMessage=encoded.group(1))
    assert info.value.response["Error"]["Code"] == "InvalidAuthorizationMessageException"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts").decode_authorization_message(EncodedMessage="bm90IGEgbWVzc2FnZQ")
    assert info.value.response["Error"]["Code"] == "InvalidAuthorizationMessageException"


def test_decoded_message_names_the_deciding_statement(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="deny", PolicyDocument=doc(
        {"Sid": "NoPolicies", "Effect": "Deny", "Action": "iam:*Polic*", "Resource": "*"}))
    message = refused(broker.client("iam", creds).list_policies)
    encoded = message.rsplit(" ", 1)[-1]
    decoded = json.loads(broker.client("sts").decode_authorization_message(
        EncodedMessage=encoded)["DecodedMessage"])
    assert decoded["explicitDeny"] is True
    assert decoded["matchedStatements"]["items"] == [{
        "policy": f"user/{name}/inline/deny", "policyType": "identity", "statementIndex": 0,
        "sid": "NoPolicies", "effect": "Deny"}]


def test_federated_users_get_the_intersection(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="fed", PolicyDocument=doc(
        {"Effect": "Allow", "Action": ["sts:GetFederationToken", "s3:*"], "Resource": "*"}))
    sts = broker.client("sts", creds)
    fed = sts.get_federation_token(Name="fed", Policy=doc(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}))
    assert fed["FederatedUser"]["Arn"].endswith(":federated-user/fed")
    simulated = iam.simulate_principal_policy(
        PolicySourceArn=f"arn:aws:iam::{broker.account_id}:user/{name}",
        ActionNames=["s3:GetObject", "iam:ListUsers"])["EvaluationResults"]
    assert [r["EvalDecision"] for r in simulated] == ["allowed", "implicitDeny"]


def test_simulate_custom_policy_reports_missing_context(broker: Broker) -> None:
    result = broker.client("iam").simulate_custom_policy(
        PolicyInputList=[doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                              "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}})],
        ActionNames=["s3:GetObject"],
        ContextEntries=[{"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.1.2.3"],
                         "ContextKeyType": "ip"}])["EvaluationResults"][0]
    assert result["EvalDecision"] == "allowed"
    missing = broker.client("iam").simulate_custom_policy(
        PolicyInputList=[doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                              "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}})],
        ActionNames=["s3:GetObject"])["EvaluationResults"][0]
    assert missing["EvalDecision"] == "implicitDeny"
    assert missing["MissingContextValues"] == ["aws:SourceIp"]


@pytest.mark.parametrize("owner", ["arn:x", "arn:aws", "arn:aws:iam::12345:root", "root"])
def test_simulation_refuses_a_resource_owner_that_is_not_an_account(broker: Broker,
                                                                   owner: str) -> None:
    iam = broker.client("iam")
    policy = [doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.simulate_custom_policy(PolicyInputList=policy, ActionNames=["s3:GetObject"],
                                   ResourceOwner=owner)
    error = info.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == \
        ("InvalidInput", 400)
    # The control: an account's ARN.
    result = iam.simulate_custom_policy(
        PolicyInputList=policy, ActionNames=["s3:GetObject"],
        ResourceOwner=f"arn:aws:iam::{broker.account_id}:root")["EvaluationResults"][0]
    assert result["EvalDecision"] == "allowed"


def test_simulation_results_come_in_pages(broker: Broker) -> None:
    """Three actions on two resources: six results, each once, two to a page."""
    iam = broker.client("iam")
    kwargs: dict[str, Any] = {
        "PolicyInputList": [doc({"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"})],
        "ActionNames": ["s3:GetObject", "s3:PutObject", "s3:GetBucketPolicy"],
        "ResourceArns": ["arn:aws:s3:::a/*", "arn:aws:s3:::b/*"]}
    whole = iam.simulate_custom_policy(**kwargs)
    assert whole["IsTruncated"] is False and len(whole["EvaluationResults"]) == 6  # control
    pages = list(iam.get_paginator("simulate_custom_policy").paginate(
        **kwargs, PaginationConfig={"PageSize": 2}))
    assert [len(page["EvaluationResults"]) for page in pages] == [2, 2, 2]
    paged = [(r["EvalActionName"], r["EvalResourceName"], r["EvalDecision"])
             for page in pages for r in page["EvaluationResults"]]
    assert paged == [(r["EvalActionName"], r["EvalResourceName"], r["EvalDecision"])
                     for r in whole["EvaluationResults"]]
    assert [d for _, _, d in paged].count("allowed") == 4


def test_session_credentials_keep_the_users_permissions(broker: Broker) -> None:
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="info", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:GetAccessKeyInfo", "Resource": "*"}))
    broker.client("sts", creds).get_access_key_info(AccessKeyId=creds.access_key_id)
    # GetSessionToken credentials: AWS's rule forbids STS but AssumeRole/GetCallerIdentity.
    session = creds_of(broker.client("sts", creds).get_session_token())
    refused(broker.client("sts", session).get_access_key_info,
            AccessKeyId=creds.access_key_id)
    assert broker.client("sts", session).get_caller_identity()["Arn"].endswith(f"/{name}")


def test_deleted_and_recreated_user_gets_nothing_from_old_policies(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("reborn")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    creds = Creds(key["AccessKeyId"], key["SecretAccessKey"])
    session = creds_of(broker.client("sts", creds).get_session_token())
    broker.client("iam", creds).list_users()  # the control
    iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    iam.delete_user_policy(UserName=name, PolicyName="all")
    iam.delete_user(UserName=name)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    # The old session belongs to the old user: the new one's policies are not its.
    message = refused(broker.client("sts", session).get_access_key_info,
                      AccessKeyId=creds.access_key_id)
    assert "GetSessionToken" in message
