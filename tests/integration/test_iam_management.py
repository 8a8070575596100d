"""The IAM management API (groups, roles, managed and inline policies, attachments, login
profiles, the password policy, the account alias, GetAccountAuthorizationDetails) through boto3
against a real uvicorn server, compared with what AWS documents."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.helpers import Broker

ClientError = botocore.exceptions.ClientError


# -- helpers --------------------------------------------------------------------------------------


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def identity_doc(action: str | list[str] = "s3:GetObject", resource: str = "*",
                 **extra: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource, **extra}]}


def policy_text(action: str | list[str] = "s3:GetObject", resource: str = "*") -> str:
    return json.dumps(identity_doc(action, resource))


SERVICE_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def trust_for(principal_arn: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"}]}


_SIZED = ('{"Version":"2012-10-17","Statement":[{"Sid":"%s","Effect":"Allow",'
          '"Action":"s3:GetObject","Resource":"*"}]}')


def sized_doc(size: int) -> str:
    """A valid identity policy of exactly ``size`` characters, none of them white space."""
    pad = size - len(_SIZED % "")
    assert pad >= 0, size
    text = _SIZED % ("S" * pad)
    assert len(text) == size
    return text


def every_page(list_call: Callable[..., Any], result_key: str, page_size: int,
               **params: Any) -> list[Any]:
    """Every item of a listing, following its Marker page by page as a client does."""
    items: list[Any] = []
    marker: str | None = None
    for _ in range(20):
        page = list_call(MaxItems=page_size, **params, **({"Marker": marker} if marker else {}))
        items += page[result_key]
        if not page["IsTruncated"]:
            return items
        marker = page["Marker"]
    raise AssertionError(f"still truncated after 20 pages; the first held: {items[:6]}")


def account_iam(broker: Broker) -> tuple[str, Any]:
    """A fresh account (so that listings hold only what the test makes) and its root's client."""
    account_id, root = broker.new_account()
    return account_id, broker.client("iam", root)


def make_user(iam: Any, path: str = "/") -> str:
    name = unique("user")
    iam.create_user(UserName=name, Path=path)
    return name


def make_group(iam: Any, path: str = "/") -> str:
    name = unique("group")
    iam.create_group(GroupName=name, Path=path)
    return name


def make_role(iam: Any, path: str = "/") -> str:
    name = unique("role")
    iam.create_role(RoleName=name, Path=path,
                    AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))
    return name


def make_policy(iam: Any, name: str | None = None, path: str = "/",
                document: str | None = None) -> str:
    created = iam.create_policy(PolicyName=name or unique("policy"), Path=path,
                                PolicyDocument=document or policy_text())
    return str(created["Policy"]["Arn"])


# The three kinds of principal that hold attached and inline policies, told apart by the noun
# of their actions ("User" -> AttachUserPolicy, PutUserPolicy, ...).
KINDS = {
    "User": ("user", make_user, 2048),
    "Group": ("group", make_group, 5120),
    "Role": ("role", make_role, 10240),
}


def call(iam: Any, operation: str, noun: str, name: str, **params: Any) -> Any:
    """iam.<operation with the noun filled in>(<Noun>Name=name, **params)."""
    method = getattr(iam, operation.format(noun=noun.lower()))
    return method(**{f"{noun}Name": name}, **params)


# -- groups ---------------------------------------------------------------------------------------


def test_group_lifecycle_with_members(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("Group")
    created = iam.create_group(GroupName=name, Path="/eng/")["Group"]
    assert created["Arn"] == f"arn:aws:iam::{broker.account_id}:group/eng/{name}"
    assert created["GroupId"].startswith("AGPA") and created["Path"] == "/eng/"
    assert created["GroupName"] == name and "CreateDate" in created

    alice, bob = sorted([make_user(iam), make_user(iam)])
    iam.add_user_to_group(GroupName=name, UserName=bob)
    iam.add_user_to_group(GroupName=name.lower(), UserName=alice)  # names in any case
    got = iam.get_group(GroupName=name.upper())
    assert got["Group"]["GroupName"] == name and got["Group"]["GroupId"] == created["GroupId"]
    assert [u["UserName"] for u in got["Users"]] == [alice, bob]
    assert got["Users"][0]["Arn"] == f"arn:aws:iam::{broker.account_id}:user/{alice}"
    assert got["IsTruncated"] is False

    for_alice = iam.list_groups_for_user(UserName=alice)["Groups"]
    assert [(g["GroupName"], g["Arn"]) for g in for_alice] == [(name, created["Arn"])]

    iam.remove_user_from_group(GroupName=name, UserName=alice)
    assert [u["UserName"] for u in iam.get_group(GroupName=name)["Users"]] == [bob]
    assert iam.list_groups_for_user(UserName=alice)["Groups"] == []
    iam.remove_user_from_group(GroupName=name, UserName=bob)

    iam.delete_group(GroupName=name)
    with pytest.raises(ClientError) as info:
        iam.get_group(GroupName=name)
    assert error_of(info) == ("NoSuchEntity",
                              f"The group with name {name} cannot be found.", 404)


def test_get_group_pages_its_members(broker: Broker) -> None:
    iam = broker.client("iam")
    group = make_group(iam)
    users = sorted(make_user(iam) for _ in range(5))
    for user in users:
        iam.add_user_to_group(GroupName=group, UserName=user)
    first = iam.get_group(GroupName=group, MaxItems=2)
    assert first["IsTruncated"] and [u["UserName"] for u in first["Users"]] == users[:2]
    paged = [u["UserName"] for page in iam.get_paginator("get_group").paginate(
        GroupName=group, PaginationConfig={"PageSize": 2}) for u in page["Users"]]
    assert paged == users


def test_list_groups_by_path_prefix_and_in_pages(broker: Broker) -> None:
    _, iam = account_iam(broker)
    under_a = sorted(make_group(iam, "/a/") for _ in range(5))
    under_b = sorted(make_group(iam, "/b/x/") for _ in range(2))

    assert [g["GroupName"] for g in iam.list_groups(PathPrefix="/a/")["Groups"]] == under_a
    assert [g["GroupName"] for g in iam.list_groups(PathPrefix="/b/")["Groups"]] == under_b
    assert iam.list_groups(PathPrefix="/c/")["Groups"] == []

    everything = sorted(under_a + under_b)
    first = iam.list_groups(MaxItems=3)
    assert first["IsTruncated"] is True and "Marker" in first
    assert [g["GroupName"] for g in first["Groups"]] == everything[:3]
    second = iam.list_groups(MaxItems=3, Marker=first["Marker"])
    assert [g["GroupName"] for g in second["Groups"]] == everything[3:6]
    paged = [g["GroupName"] for page in iam.get_paginator("list_groups").paginate(
        PaginationConfig={"PageSize": 2}) for g in page["Groups"]]
    assert paged == everything
    limited = iam.get_paginator("list_groups").paginate(
        PaginationConfig={"PageSize": 2, "MaxItems": 3}).build_full_result()
    assert [g["GroupName"] for g in limited["Groups"]] == everything[:3]
    assert "NextToken" in limited


def test_group_names_are_unique_regardless_of_case(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("Dup")
    iam.create_group(GroupName=name)
    with pytest.raises(ClientError) as info:
        iam.create_group(GroupName=name.upper())
    assert error_of(info) == ("EntityAlreadyExists",
                              f"Group with name {name.upper()} already exists.", 409)
    with pytest.raises(ClientError) as info:
        iam.create_group(GroupName=name, Path="/other/")  # the path does not make it another
    assert error_of(info)[0] == "EntityAlreadyExists"
    iam.create_group(GroupName=name + "-2")  # the control: another name is fine


def test_missing_groups_and_users_are_no_such_entity(broker: Broker) -> None:
    iam = broker.client("iam")
    group, user = make_group(iam), make_user(iam)
    missing_group, missing_user = unique("nogroup"), unique("nouser")
    for attempt in (lambda: iam.get_group(GroupName=missing_group),
                    lambda: iam.delete_group(GroupName=missing_group),
                    lambda: iam.add_user_to_group(GroupName=missing_group, UserName=user),
                    lambda: iam.remove_user_from_group(GroupName=missing_group, UserName=user)):
        with pytest.raises(ClientError) as info:
            attempt()
        assert error_of(info) == ("NoSuchEntity",
                                  f"The group with name {missing_group} cannot be found.", 404)
    for attempt in (lambda: iam.add_user_to_group(GroupName=group, UserName=missing_user),
                    lambda: iam.list_groups_for_user(UserName=missing_user)):
        with pytest.raises(ClientError) as info:
            attempt()
        assert error_of(info) == ("NoSuchEntity",
                                  f"The user with name {missing_user} cannot be found.", 404)
    iam.add_user_to_group(GroupName=group, UserName=user)  # the control
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=user)["Groups"]] == [group]


def test_removing_a_user_who_is_not_a_member(broker: Broker) -> None:
    iam = broker.client("iam")
    group, member, stranger = make_group(iam), make_user(iam), make_user(iam)
    iam.add_user_to_group(GroupName=group, UserName=member)
    with pytest.raises(ClientError) as info:
        iam.remove_user_from_group(GroupName=group, UserName=stranger)
    code, _, status = error_of(info)
    assert (code, status) == ("NoSuchEntity", 404)
    iam.remove_user_from_group(GroupName=group, UserName=member)  # the control


def test_delete_group_refused_while_it_has_members(broker: Broker) -> None:
    iam = broker.client("iam")
    group, user = make_group(iam), make_user(iam)
    iam.add_user_to_group(GroupName=group, UserName=user)
    with pytest.raises(ClientError) as info:
        iam.delete_group(GroupName=group)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must remove users from group first.", 409)
    iam.get_group(GroupName=group)  # still there
    iam.remove_user_from_group(GroupName=group, UserName=user)
    iam.delete_group(GroupName=group)
    assert iam.list_groups_for_user(UserName=user)["Groups"] == []


def test_delete_group_refused_while_it_has_policies(broker: Broker) -> None:
    iam = broker.client("iam")
    group, policy = make_group(iam), make_policy(iam)
    iam.attach_group_policy(GroupName=group, PolicyArn=policy)
    iam.put_group_policy(GroupName=group, PolicyName="inline", PolicyDocument=policy_text())
    with pytest.raises(ClientError) as info:
        iam.delete_group(GroupName=group)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must detach all policies first.", 409)
    iam.detach_group_policy(GroupName=group, PolicyArn=policy)
    with pytest.raises(ClientError) as info:
        iam.delete_group(GroupName=group)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must delete policies first.", 409)
    iam.delete_group_policy(GroupName=group, PolicyName="inline")
    iam.delete_group(GroupName=group)
    with pytest.raises(ClientError) as info:
        iam.get_group(GroupName=group)
    assert error_of(info)[0] == "NoSuchEntity"


def test_a_user_is_in_at_most_ten_groups(broker: Broker) -> None:
    iam = broker.client("iam")
    user = make_user(iam)
    groups = [make_group(iam) for _ in range(11)]
    for group in groups[:10]:
        iam.add_user_to_group(GroupName=group, UserName=user)
    with pytest.raises(ClientError) as info:
        iam.add_user_to_group(GroupName=groups[10], UserName=user)
    assert error_of(info) == ("LimitExceeded", "Cannot exceed quota for GroupsPerUser: 10", 409)
    assert len(iam.list_groups_for_user(UserName=user)["Groups"]) == 10
    assert iam.get_group(GroupName=groups[10])["Users"] == []
    iam.remove_user_from_group(GroupName=groups[0], UserName=user)
    iam.add_user_to_group(GroupName=groups[10], UserName=user)  # the control: room again
    listed = {g["GroupName"] for g in iam.list_groups_for_user(UserName=user)["Groups"]}
    assert listed == set(groups[1:])


# -- roles ----------------------------------------------------------------------------------------


def test_role_lifecycle(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("Role")
    created = iam.create_role(
        RoleName=name, Path="/svc/", AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST),
        Description="runs the batch jobs", MaxSessionDuration=7200,
        Tags=[{"Key": "team", "Value": "blue"}])["Role"]
    assert created["Arn"] == f"arn:aws:iam::{broker.account_id}:role/svc/{name}"
    assert created["RoleId"].startswith("AROA") and created["Path"] == "/svc/"
    assert created["AssumeRolePolicyDocument"] == SERVICE_TRUST  # decoded by boto3
    assert created["Description"] == "runs the batch jobs"
    assert created["MaxSessionDuration"] == 7200

    got = iam.get_role(RoleName=name.lower())["Role"]  # names in any case
    assert got["RoleName"] == name and got["RoleId"] == created["RoleId"]
    assert got["AssumeRolePolicyDocument"] == SERVICE_TRUST
    assert got["Tags"] == [{"Key": "team", "Value": "blue"}]
    assert (got["Description"], got["MaxSessionDuration"]) == ("runs the batch jobs", 7200)

    listed = iam.list_roles(PathPrefix="/svc/")["Roles"]
    mine = [r for r in listed if r["RoleName"] == name]
    assert len(mine) == 1 and mine[0]["Arn"] == created["Arn"]
    assert mine[0]["AssumeRolePolicyDocument"] == SERVICE_TRUST
    assert "Tags" not in mine[0]  # ListRoles leaves tags out, as AWS's does
    assert all(r["Path"].startswith("/svc/") for r in listed)

    iam.delete_role(RoleName=name.upper())
    with pytest.raises(ClientError) as info:
        iam.get_role(RoleName=name)
    assert error_of(info) == ("NoSuchEntity", f"The role with name {name} cannot be found.", 404)


def test_role_defaults(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("role")
    created = iam.create_role(RoleName=name,
                              AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))["Role"]
    assert created["Path"] == "/" and created["MaxSessionDuration"] == 3600
    assert created["Arn"] == f"arn:aws:iam::{broker.account_id}:role/{name}"
    assert "Description" not in created and "Tags" not in created


def test_list_roles_in_pages(broker: Broker) -> None:
    _, iam = account_iam(broker)
    names = sorted(make_role(iam) for _ in range(5))
    first = iam.list_roles(MaxItems=2)
    assert first["IsTruncated"] is True
    assert [r["RoleName"] for r in first["Roles"]] == names[:2]
    rest = iam.list_roles(MaxItems=10, Marker=first["Marker"])
    assert rest["IsTruncated"] is False and "Marker" not in rest
    assert [r["RoleName"] for r in rest["Roles"]] == names[2:]
    paged = [r["RoleName"] for page in iam.get_paginator("list_roles").paginate(
        PaginationConfig={"PageSize": 2}) for r in page["Roles"]]
    assert paged == names


def test_role_names_are_unique_regardless_of_case(broker: Broker) -> None:
    iam = broker.client("iam")
    name = make_role(iam)
    with pytest.raises(ClientError) as info:
        iam.create_role(RoleName=name.upper(), AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))
    assert error_of(info) == ("EntityAlreadyExists",
                              f"Role with name {name.upper()} already exists.", 409)
    iam.create_role(RoleName=name + "-2",  # the control
                    AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))


def test_update_role_and_its_description(broker: Broker) -> None:
    iam = broker.client("iam")
    name = make_role(iam)
    iam.update_role(RoleName=name, Description="first", MaxSessionDuration=43200)
    got = iam.get_role(RoleName=name)["Role"]
    assert (got["Description"], got["MaxSessionDuration"]) == ("first", 43200)
    iam.update_role(RoleName=name, MaxSessionDuration=3600)  # the description stays
    got = iam.get_role(RoleName=name)["Role"]
    assert (got["Description"], got["MaxSessionDuration"]) == ("first", 3600)
    answered = iam.update_role_description(RoleName=name, Description="second")["Role"]
    assert answered["RoleName"] == name and answered["Description"] == "second"
    assert iam.get_role(RoleName=name)["Role"]["Description"] == "second"
    with pytest.raises(ClientError) as info:
        iam.update_role(RoleName=unique("norole"), Description="x")
    assert error_of(info)[0] == "NoSuchEntity"


@pytest.mark.parametrize(("duration", "constraint"), [
    (3599, "Member must have value greater than or equal to 3600"),
    (43201, "Member must have value less than or equal to 43200"),
])
def test_max_session_duration_out_of_range_is_a_validation_error(
        broker: Broker, duration: int, constraint: str) -> None:
    iam = broker.client("iam", validate=False)
    name = unique("role")
    expected = ("ValidationError",
                f"1 validation error detected: Value '{duration}' at 'maxSessionDuration' "
                f"failed to satisfy constraint: {constraint}", 400)
    with pytest.raises(ClientError) as info:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST),
                        MaxSessionDuration=duration)
    assert error_of(info) == expected
    with pytest.raises(ClientError) as info:
        iam.get_role(RoleName=name)
    assert error_of(info)[0] == "NoSuchEntity"  # nothing was created
    in_range = 3600 if duration < 3600 else 43200
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST),
                    MaxSessionDuration=in_range)  # the control: the bound itself is allowed
    with pytest.raises(ClientError) as info:
        iam.update_role(RoleName=name, MaxSessionDuration=duration)
    assert error_of(info) == expected
    assert iam.get_role(RoleName=name)["Role"]["MaxSessionDuration"] == in_range


def test_update_assume_role_policy(broker: Broker) -> None:
    iam = broker.client("iam")
    name = make_role(iam)
    user = make_user(iam)
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{user}"
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust_for(user_arn)))
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == trust_for(user_arn)

    with pytest.raises(ClientError) as info:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument='{"Version": "2012-10-17",')
    assert error_of(info) == ("MalformedPolicyDocument", "Syntax errors in policy.", 400)
    # the refused document changed nothing
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == trust_for(user_arn)
    with pytest.raises(ClientError) as info:
        iam.update_assume_role_policy(RoleName=unique("norole"),
                                      PolicyDocument=json.dumps(SERVICE_TRUST))
    assert error_of(info)[0] == "NoSuchEntity"


def test_a_trust_policy_must_name_principals_that_exist(broker: Broker) -> None:
    iam = broker.client("iam")
    existing = f"arn:aws:iam::{broker.account_id}:user/{make_user(iam)}"
    missing = f"arn:aws:iam::{broker.account_id}:user/{unique('nobody')}"
    name = unique("role")
    with pytest.raises(ClientError) as info:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust_for(missing)))
    assert error_of(info) == ("MalformedPolicyDocument",
                              f'Invalid principal in policy: "AWS":"{missing}"', 400)
    iam.create_role(RoleName=name,  # the control: the same trust policy, a user that exists
                    AssumeRolePolicyDocument=json.dumps(trust_for(existing)))
    with pytest.raises(ClientError) as info:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust_for(missing)))
    assert error_of(info) == ("MalformedPolicyDocument",
                              f'Invalid principal in policy: "AWS":"{missing}"', 400)
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == trust_for(existing)


@pytest.mark.parametrize("half", [chr(0xD800), chr(0xDC00)], ids=["high", "low"])
@pytest.mark.parametrize("kind", ["user", "role", "Service", "Federated"])
def test_a_lone_surrogate_in_a_principal_is_a_malformed_policy(broker: Broker, kind: str,
                                                               half: str) -> None:
    """A principal that names a real user or role, followed by half a surrogate pair as JSON
    writes it: MalformedPolicyDocument, as AWS answers it (it answered 500, a stack trace in the
    log, when the principal reached the lookup of its unique id). The control: the same
    principal without it makes the role."""
    iam = broker.client("iam")
    honest = {"user": f"arn:aws:iam::{broker.account_id}:user/{make_user(iam)}",
              "role": iam.get_role(RoleName=make_role(iam))["Role"]["Arn"],
              "Service": "ec2.amazonaws.com",
              "Federated": "cognito-identity.amazonaws.com"}[kind]
    key = "AWS" if kind in ("user", "role") else kind

    def trust(principal: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {key: principal},
            "Action": "sts:AssumeRoleWithWebIdentity" if kind == "Federated"
            else "sts:AssumeRole"}]})

    name = unique("role")
    spoiled = trust(honest + half)
    assert "\\ud" in spoiled
    with pytest.raises(ClientError) as info:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=spoiled)
    assert error_of(info)[0::2] == ("MalformedPolicyDocument", 400)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust(honest))  # the control
    with pytest.raises(ClientError) as info:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=spoiled)
    assert error_of(info)[0::2] == ("MalformedPolicyDocument", 400)
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == \
        json.loads(trust(honest))


def test_trust_policy_grammar(broker: Broker) -> None:
    iam = broker.client("iam")
    with_resource = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole", "Resource": "*"}]}
    not_sts = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "s3:GetObject"}]}
    for document, message in ((with_resource, "Has prohibited field Resource"),
                              (not_sts, "AssumeRole policy may only specify STS AssumeRole "
                                        "actions.")):
        with pytest.raises(ClientError) as info:
            iam.create_role(RoleName=unique("role"),
                            AssumeRolePolicyDocument=json.dumps(document))
        assert error_of(info) == ("MalformedPolicyDocument", message, 400)
    make_role(iam)  # the control: the service trust policy those two were made from


def test_role_tags(broker: Broker) -> None:
    iam = broker.client("iam")
    name = make_role(iam)
    iam.tag_role(RoleName=name, Tags=[{"Key": "team", "Value": "blue"},
                                      {"Key": "env", "Value": "prod"}])
    tags = iam.list_role_tags(RoleName=name)
    assert sorted((t["Key"], t["Value"]) for t in tags["Tags"]) == [("env", "prod"),
                                                                      ("team", "blue")]
    assert tags["IsTruncated"] is False
    iam.tag_role(RoleName=name, Tags=[{"Key": "team", "Value": "red"}])  # replaces the value
    iam.untag_role(RoleName=name, TagKeys=["env"])
    assert iam.list_role_tags(RoleName=name)["Tags"] == [{"Key": "team", "Value": "red"}]
    assert iam.get_role(RoleName=name)["Role"]["Tags"] == [{"Key": "team", "Value": "red"}]
    with pytest.raises(ClientError) as info:
        iam.tag_role(RoleName=name, Tags=[{"Key": "aws:reserved", "Value": "x"}])
    assert error_of(info)[0] == "InvalidInput"
    with pytest.raises(ClientError) as info:
        iam.list_role_tags(RoleName=unique("norole"))
    assert error_of(info)[0] == "NoSuchEntity"


@pytest.mark.parametrize("noun", ["Role", "Policy", "User"])
def test_tags_come_in_pages(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    if noun == "Policy":
        target = {"PolicyArn": make_policy(iam)}
    else:
        target = {f"{noun}Name": (make_role if noun == "Role" else make_user)(iam)}
    # Tagged out of alphabetical order; tag keys may hold spaces and letters of any script,
    # and a marker must carry them.
    keys = ["zeta", "alpha", "mid key", "beta", "ωmega"]
    getattr(iam, f"tag_{noun.lower()}")(
        **target, Tags=[{"Key": k, "Value": k.upper()} for k in keys])
    list_tags = getattr(iam, f"list_{noun.lower()}_tags")
    whole = list_tags(**target)
    assert whole["IsTruncated"] is False  # the control: one page holds every tag
    assert sorted(t["Key"] for t in whole["Tags"]) == sorted(keys)
    paged = [t["Key"] for t in every_page(list_tags, "Tags", 2, **target)]
    assert sorted(paged) == sorted(keys)


def test_role_permissions_boundary(broker: Broker) -> None:
    iam = broker.client("iam")
    name, boundary = make_role(iam), make_policy(iam)
    assert iam.get_policy(PolicyArn=boundary)["Policy"]["PermissionsBoundaryUsageCount"] == 0
    iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=boundary)
    assert iam.get_role(RoleName=name)["Role"]["PermissionsBoundary"] == {
        "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
        "PermissionsBoundaryArn": boundary}
    got = iam.get_policy(PolicyArn=boundary)["Policy"]
    assert (got["PermissionsBoundaryUsageCount"], got["AttachmentCount"]) == (1, 0)
    iam.delete_role_permissions_boundary(RoleName=name)
    assert iam.get_policy(PolicyArn=boundary)["Policy"]["PermissionsBoundaryUsageCount"] == 0
    assert "PermissionsBoundary" not in iam.get_role(RoleName=name)["Role"]

    missing = f"arn:aws:iam::{broker.account_id}:policy/{unique('nopolicy')}"
    with pytest.raises(ClientError) as info:
        iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=missing)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {missing} does not exist or is not attachable.", 404)
    assert "PermissionsBoundary" not in iam.get_role(RoleName=name)["Role"]

    aws_boundary = "arn:aws:iam::aws:policy/IAMReadOnlyAccess"
    bounded = unique("role")
    created = iam.create_role(RoleName=bounded, PermissionsBoundary=aws_boundary,
                              AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))["Role"]
    assert created["PermissionsBoundary"]["PermissionsBoundaryArn"] == aws_boundary


def test_delete_role_refused_while_it_has_policies(broker: Broker) -> None:
    iam = broker.client("iam")
    name, policy = make_role(iam), make_policy(iam)
    iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    with pytest.raises(ClientError) as info:
        iam.delete_role(RoleName=name)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must detach all policies first.", 409)
    iam.detach_role_policy(RoleName=name, PolicyArn=policy)
    iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=policy_text())
    with pytest.raises(ClientError) as info:
        iam.delete_role(RoleName=name)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must delete policies first.", 409)
    iam.get_role(RoleName=name)  # still there
    iam.delete_role_policy(RoleName=name, PolicyName="inline")
    iam.delete_role(RoleName=name)
    with pytest.raises(ClientError) as info:
        iam.delete_role(RoleName=name)
    assert error_of(info)[0] == "NoSuchEntity"


# -- managed policies -----------------------------------------------------------------------------


def test_managed_policy_lifecycle(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("Policy")
    document = identity_doc(["s3:GetObject", "s3:ListBucket"], "arn:aws:s3:::bucket/*")
    created = iam.create_policy(PolicyName=name, Path="/team/", PolicyDocument=json.dumps(document),
                                Description="reads the bucket",
                                Tags=[{"Key": "owner", "Value": "data"}])["Policy"]
    arn = f"arn:aws:iam::{broker.account_id}:policy/team/{name}"
    assert created["Arn"] == arn and created["PolicyName"] == name
    assert created["PolicyId"].startswith("ANPA") and created["Path"] == "/team/"
    assert created["DefaultVersionId"] == "v1" and created["AttachmentCount"] == 0
    assert created["IsAttachable"] is True

    got = iam.get_policy(PolicyArn=arn)["Policy"]
    assert got["PolicyId"] == created["PolicyId"] and got["Description"] == "reads the bucket"
    assert got["Tags"] == [{"Key": "owner", "Value": "data"}]
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == document  # decoded by boto3
    assert version["IsDefaultVersion"] is True and version["VersionId"] == "v1"

    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(ClientError) as info:
        iam.get_policy(PolicyArn=arn)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {arn} does not exist or is not attachable.", 404)
    with pytest.raises(ClientError) as info:
        iam.get_policy(PolicyArn=f"arn:aws:iam::{broker.account_id}:policy/{name}")  # wrong path
    assert error_of(info)[0] == "NoSuchEntity"


def test_policy_names_are_unique(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique("Dup")
    make_policy(iam, name)
    for duplicate in (name, name.upper()):
        with pytest.raises(ClientError) as info:
            make_policy(iam, duplicate, path="/elsewhere/")
        assert error_of(info) == (
            "EntityAlreadyExists",
            f"A policy called {duplicate} already exists. Duplicate names are not allowed.", 409)
    make_policy(iam, name + "-2")  # the control


def test_policy_versions(broker: Broker) -> None:
    iam = broker.client("iam")
    arn = make_policy(iam)
    documents = {f"v{i}": identity_doc(f"s3:Action{i}") for i in range(2, 6)}
    for version_id, document in documents.items():
        created = iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document),
                                            SetAsDefault=version_id == "v3")["PolicyVersion"]
        assert created["VersionId"] == version_id
        assert created["IsDefaultVersion"] is (version_id == "v3")
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v3"
    listed = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert sorted(v["VersionId"] for v in listed) == ["v1", "v2", "v3", "v4", "v5"]
    assert [v["VersionId"] for v in listed if v["IsDefaultVersion"]] == ["v3"]

    with pytest.raises(ClientError) as info:
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=policy_text("s3:Sixth"))
    assert error_of(info) == (
        "LimitExceeded", "A managed policy can have up to 5 versions. Before you create a new "
        "version, you must delete an existing version.", 409)

    with pytest.raises(ClientError) as info:
        iam.delete_policy_version(PolicyArn=arn, VersionId="v3")
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete the default version of a policy.", 409)
    iam.delete_policy_version(PolicyArn=arn, VersionId="v1")  # the control: not the default
    with pytest.raises(ClientError) as info:
        iam.get_policy_version(PolicyArn=arn, VersionId="v1")
    assert error_of(info) == (
        "NoSuchEntity", f"Policy {arn} version v1 does not exist or is not attachable.", 404)

    sixth = iam.create_policy_version(PolicyArn=arn, PolicyDocument=policy_text("s3:Sixth"))
    assert sixth["PolicyVersion"]["VersionId"] == "v6"  # ids are never reused
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v6")
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v6"
    v6 = iam.get_policy_version(PolicyArn=arn, VersionId="v6")["PolicyVersion"]
    assert v6["Document"] == identity_doc("s3:Sixth") and v6["IsDefaultVersion"] is True
    v3 = iam.get_policy_version(PolicyArn=arn, VersionId="v3")["PolicyVersion"]
    assert v3["Document"] == documents["v3"] and v3["IsDefaultVersion"] is False
    with pytest.raises(ClientError) as info:
        iam.set_default_policy_version(PolicyArn=arn, VersionId="v9")
    assert error_of(info)[0] == "NoSuchEntity"


def test_delete_policy_refused_while_attached_or_versioned(broker: Broker) -> None:
    iam = broker.client("iam")
    arn, user = make_policy(iam), make_user(iam)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    with pytest.raises(ClientError) as info:
        iam.delete_policy(PolicyArn=arn)
    assert error_of(info) == ("DeleteConflict", "Cannot delete a policy attached to entities.",
                              409)
    iam.detach_user_policy(UserName=user, PolicyArn=arn)
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=policy_text("s3:PutObject"))
    with pytest.raises(ClientError) as info:
        iam.delete_policy(PolicyArn=arn)
    assert error_of(info) == (
        "DeleteConflict", "This policy has more than one version. Before you delete a policy, "
        "you must delete the policy's versions. The default version is deleted with the "
        "policy.", 409)
    iam.get_policy(PolicyArn=arn)  # still there
    iam.delete_policy_version(PolicyArn=arn, VersionId="v2")
    iam.delete_policy(PolicyArn=arn)  # the control: detached, one version
    with pytest.raises(ClientError) as info:
        iam.delete_policy(PolicyArn=arn)
    assert error_of(info)[0] == "NoSuchEntity"


def test_policy_tags(broker: Broker) -> None:
    iam = broker.client("iam")
    arn = make_policy(iam)
    iam.tag_policy(PolicyArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    listed = iam.list_policy_tags(PolicyArn=arn)
    assert sorted((t["Key"], t["Value"]) for t in listed["Tags"]) == [("a", "1"), ("b", "2")]
    iam.untag_policy(PolicyArn=arn, TagKeys=["a"])
    assert iam.list_policy_tags(PolicyArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["Tags"] == [{"Key": "b", "Value": "2"}]
    missing = f"arn:aws:iam::{broker.account_id}:policy/{unique('nopolicy')}"
    with pytest.raises(ClientError) as info:
        iam.tag_policy(PolicyArn=missing, Tags=[{"Key": "a", "Value": "1"}])
    assert error_of(info)[0] == "NoSuchEntity"


def test_list_policies_by_scope_and_attachment(broker: Broker) -> None:
    iam = broker.client("iam")
    arn, user = make_policy(iam), make_user(iam)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"

    def arns(**params: Any) -> set[str]:
        return {p["Arn"] for p in iam.list_policies(MaxItems=1000, **params)["Policies"]}

    local, aws, every = arns(Scope="Local"), arns(Scope="AWS"), arns(Scope="All")
    assert arn in local and admin not in local
    assert admin in aws and arn not in aws
    assert {arn, admin} <= every and every == arns()  # All is the default
    assert all(a.startswith("arn:aws:iam::aws:policy/") for a in aws)
    assert all(a.startswith(f"arn:aws:iam::{broker.account_id}:policy/") for a in local)

    assert arn not in arns(Scope="Local", OnlyAttached=True)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    assert arn in arns(Scope="Local", OnlyAttached=True)
    listed = [p for p in iam.list_policies(Scope="Local", MaxItems=1000)["Policies"]
              if p["Arn"] == arn]
    assert listed[0]["AttachmentCount"] == 1
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1


def test_list_policies_by_path_prefix(broker: Broker) -> None:
    iam = broker.client("iam")
    prefix = f"/{uuid.uuid4().hex[:8]}/"
    inside = make_policy(iam, path=prefix + "sub/")
    outside = make_policy(iam)
    found = {p["Arn"] for p in iam.list_policies(Scope="Local", PathPrefix=prefix)["Policies"]}
    assert found == {inside}
    assert outside not in found


def test_list_policies_pages_through_every_scope(broker: Broker) -> None:
    _, iam = account_iam(broker)
    local = {make_policy(iam) for _ in range(3)}
    whole = {p["Arn"] for p in iam.list_policies(Scope="All", MaxItems=1000)["Policies"]}
    assert local <= whole  # the control: one page holds every policy
    local_paged = [p["Arn"] for p in every_page(iam.list_policies, "Policies", 2, Scope="Local")]
    assert sorted(local_paged) == sorted(local)  # and the Local scope pages correctly
    paged = [p["Arn"] for p in every_page(iam.list_policies, "Policies", 2, Scope="All")]
    assert sorted(paged) == sorted(whole)


def test_list_entities_for_policy(broker: Broker) -> None:
    iam = broker.client("iam")
    arn = make_policy(iam)
    user, group, role = make_user(iam), make_group(iam), make_role(iam)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    iam.attach_group_policy(GroupName=group, PolicyArn=arn)
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    found = iam.list_entities_for_policy(PolicyArn=arn)
    assert [u["UserName"] for u in found["PolicyUsers"]] == [user]
    assert found["PolicyUsers"][0]["UserId"].startswith("AIDA")
    assert [g["GroupName"] for g in found["PolicyGroups"]] == [group]
    assert [r["RoleName"] for r in found["PolicyRoles"]] == [role]
    only_roles = iam.list_entities_for_policy(PolicyArn=arn, EntityFilter="Role")
    assert only_roles["PolicyUsers"] == [] and only_roles["PolicyGroups"] == []
    assert [r["RoleName"] for r in only_roles["PolicyRoles"]] == [role]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 3
    iam.detach_group_policy(GroupName=group, PolicyArn=arn)
    assert iam.list_entities_for_policy(PolicyArn=arn)["PolicyGroups"] == []
    missing = f"arn:aws:iam::{broker.account_id}:policy/{unique('nopolicy')}"
    with pytest.raises(ClientError) as info:
        iam.list_entities_for_policy(PolicyArn=missing)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {missing} does not exist or is not attachable.", 404)


def test_list_entities_for_policy_honours_max_items(broker: Broker) -> None:
    _, iam = account_iam(broker)
    arn = make_policy(iam)
    users = sorted(make_user(iam) for _ in range(3))
    for user in users:
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
    whole = iam.list_entities_for_policy(PolicyArn=arn)
    assert sorted(u["UserName"] for u in whole["PolicyUsers"]) == users  # the control
    first = iam.list_entities_for_policy(PolicyArn=arn, MaxItems=1)
    assert len(first["PolicyUsers"]) == 1
    assert first["IsTruncated"] is True and "Marker" in first


INVALID_DOCUMENTS = [
    pytest.param(identity_doc(Principal={"AWS": "*"}),
                 "Policy document should not specify a principal.", id="principal"),
    pytest.param({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                                                           "Action": "s3:GetObject"}]},
                 "Policy statement must contain resources.", id="no-resource"),
    pytest.param(identity_doc("GetObject"),
                 "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
                 id="no-vendor"),
    pytest.param(identity_doc(resource="bucket"),
                 'Resource bucket must be in ARN format or "*".', id="resource-not-arn"),
    pytest.param({"Version": "2012-10-17"},
                 "Syntax errors in policy. Missing required field Statement.", id="no-statement"),
    pytest.param({"Version": "2012-10-17", "Statement": [{**identity_doc()["Statement"][0],
                                                          "Effect": "Maybe"}]},
                 "The policy failed legacy parsing", id="bad-effect"),
    pytest.param("{not json", "Syntax errors in policy.", id="not-json"),
]


@pytest.mark.parametrize(("document", "message"), INVALID_DOCUMENTS)
def test_invalid_policy_documents_are_refused_precisely(broker: Broker, document: Any,
                                                       message: str) -> None:
    iam = broker.client("iam")
    text = document if isinstance(document, str) else json.dumps(document)
    name, user = unique("policy"), make_user(iam)
    with pytest.raises(ClientError) as info:
        iam.create_policy(PolicyName=name, PolicyDocument=text)
    assert error_of(info) == ("MalformedPolicyDocument", message, 400)
    with pytest.raises(ClientError) as info:
        iam.put_user_policy(UserName=user, PolicyName="inline", PolicyDocument=text)
    assert error_of(info) == ("MalformedPolicyDocument", message, 400)
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == []
    # the control: the same calls with a valid document
    arn = iam.create_policy(PolicyName=name, PolicyDocument=policy_text())["Policy"]["Arn"]
    with pytest.raises(ClientError) as info:
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=text)
    assert error_of(info) == ("MalformedPolicyDocument", message, 400)
    iam.put_user_policy(UserName=user, PolicyName="inline", PolicyDocument=policy_text())


def test_managed_policy_size_quota(broker: Broker) -> None:
    iam = broker.client("iam")
    arn = make_policy(iam, document=sized_doc(6144))  # the bound itself is allowed
    with pytest.raises(ClientError) as info:
        make_policy(iam, document=sized_doc(6145))
    assert error_of(info) == ("LimitExceeded", "Cannot exceed quota for PolicySize: 6144", 409)
    with pytest.raises(ClientError) as info:
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=sized_doc(6145))
    assert error_of(info) == ("LimitExceeded", "Cannot exceed quota for PolicySize: 6144", 409)
    # white space does not count against the quota
    spaced = sized_doc(6144).replace(",", ",\n    ")
    assert len(spaced) > 6144
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=spaced)


def test_aws_managed_policies(broker: Broker) -> None:
    _, iam = account_iam(broker)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    got = iam.get_policy(PolicyArn=admin)["Policy"]
    assert got["PolicyName"] == "AdministratorAccess" and got["Arn"] == admin
    assert got["DefaultVersionId"] == "v1" and got["AttachmentCount"] == 0
    document = iam.get_policy_version(PolicyArn=admin, VersionId="v1")["PolicyVersion"]["Document"]
    assert document == {"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

    user, role = make_user(iam), make_role(iam)
    iam.attach_user_policy(UserName=user, PolicyArn=admin)
    iam.attach_role_policy(RoleName=role, PolicyArn=admin)
    assert iam.list_attached_user_policies(UserName=user)["AttachedPolicies"] == [
        {"PolicyName": "AdministratorAccess", "PolicyArn": admin}]
    assert iam.get_policy(PolicyArn=admin)["Policy"]["AttachmentCount"] == 2
    attached = {p["Arn"] for p in iam.list_policies(Scope="AWS", OnlyAttached=True)["Policies"]}
    assert attached == {admin}
    iam.detach_user_policy(UserName=user, PolicyArn=admin)
    assert iam.get_policy(PolicyArn=admin)["Policy"]["AttachmentCount"] == 1

    missing = "arn:aws:iam::aws:policy/NoSuchManagedPolicy"
    with pytest.raises(ClientError) as info:
        iam.get_policy(PolicyArn=missing)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {missing} does not exist or is not attachable.", 404)


# -- attachments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("noun", list(KINDS))
def test_attach_detach_and_list_attached_policies(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    _, make, _ = KINDS[noun]
    name = make(iam)
    policy_name = unique("policy")
    arn = make_policy(iam, policy_name, path="/p/")
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"

    call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arn)
    call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arn)  # again: still once
    call(iam, "attach_{noun}_policy", noun, name.upper(), PolicyArn=admin)
    listed = call(iam, "list_attached_{noun}_policies", noun, name)
    assert sorted(listed["AttachedPolicies"], key=lambda p: p["PolicyArn"]) == sorted([
        {"PolicyName": "AdministratorAccess", "PolicyArn": admin},
        {"PolicyName": policy_name, "PolicyArn": arn}], key=lambda p: p["PolicyArn"])
    by_path = call(iam, "list_attached_{noun}_policies", noun, name, PathPrefix="/p/")
    assert by_path["AttachedPolicies"] == [{"PolicyName": policy_name, "PolicyArn": arn}]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1

    call(iam, "detach_{noun}_policy", noun, name, PolicyArn=arn)
    assert call(iam, "list_attached_{noun}_policies", noun, name)["AttachedPolicies"] == [
        {"PolicyName": "AdministratorAccess", "PolicyArn": admin}]
    with pytest.raises(ClientError) as info:
        call(iam, "detach_{noun}_policy", noun, name, PolicyArn=arn)  # no longer attached
    assert error_of(info) == ("NoSuchEntity", f"Policy {arn} was not found.", 404)

    missing = f"arn:aws:iam::{broker.account_id}:policy/{unique('nopolicy')}"
    with pytest.raises(ClientError) as info:
        call(iam, "attach_{noun}_policy", noun, name, PolicyArn=missing)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {missing} does not exist or is not attachable.", 404)
    kind = KINDS[noun][0]
    absent = unique("absent")
    with pytest.raises(ClientError) as info:
        call(iam, "attach_{noun}_policy", noun, absent, PolicyArn=arn)
    assert error_of(info) == ("NoSuchEntity",
                              f"The {kind} with name {absent} cannot be found.", 404)


@pytest.mark.parametrize("noun", list(KINDS))
def test_at_most_ten_attached_policies(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    _, make, _ = KINDS[noun]
    name = make(iam)
    arns = [make_policy(iam) for _ in range(11)]
    for arn in arns[:10]:
        call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arn)
    call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arns[0])  # already attached: fine
    with pytest.raises(ClientError) as info:
        call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arns[10])
    assert error_of(info) == ("LimitExceeded", f"Cannot exceed quota for PoliciesPer{noun}: 10",
                              409)
    assert iam.get_policy(PolicyArn=arns[10])["Policy"]["AttachmentCount"] == 0
    call(iam, "detach_{noun}_policy", noun, name, PolicyArn=arns[0])
    call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arns[10])  # the control: room again
    listed = call(iam, "list_attached_{noun}_policies", noun, name)["AttachedPolicies"]
    assert {p["PolicyArn"] for p in listed} == set(arns[1:])


@pytest.mark.parametrize("noun", list(KINDS))
def test_attached_policies_come_in_pages(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    name = KINDS[noun][1](iam)
    stem = unique("pg")
    arns = [make_policy(iam, f"{stem}-{letter}") for letter in "cadbe"]  # not in name order
    for arn in arns:
        call(iam, "attach_{noun}_policy", noun, name, PolicyArn=arn)
    list_attached = getattr(iam, f"list_attached_{noun.lower()}_policies")
    whole = list_attached(**{f"{noun}Name": name})
    assert whole["IsTruncated"] is False  # the control: one page holds them all
    assert sorted(p["PolicyArn"] for p in whole["AttachedPolicies"]) == sorted(arns)
    paged = [p["PolicyArn"] for p in every_page(list_attached, "AttachedPolicies", 2,
                                                **{f"{noun}Name": name})]
    assert sorted(paged) == sorted(arns)


# -- inline policies ------------------------------------------------------------------------------


@pytest.mark.parametrize("noun", list(KINDS))
def test_inline_policies(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    kind, make, _ = KINDS[noun]
    name = make(iam)
    first, second = identity_doc("s3:GetObject"), identity_doc("sqs:SendMessage")

    call(iam, "put_{noun}_policy", noun, name, PolicyName="b-policy",
         PolicyDocument=json.dumps(first))
    call(iam, "put_{noun}_policy", noun, name, PolicyName="a-policy",
         PolicyDocument=json.dumps(first))
    call(iam, "put_{noun}_policy", noun, name.upper(), PolicyName="b-policy",  # replaces
         PolicyDocument=json.dumps(second))
    listed = call(iam, "list_{noun}_policies", noun, name)
    assert listed["PolicyNames"] == ["a-policy", "b-policy"] and listed["IsTruncated"] is False
    got = call(iam, "get_{noun}_policy", noun, name, PolicyName="b-policy")
    assert got[f"{noun}Name"] == name and got["PolicyName"] == "b-policy"
    assert got["PolicyDocument"] == second  # decoded by boto3

    call(iam, "delete_{noun}_policy", noun, name, PolicyName="b-policy")
    assert call(iam, "list_{noun}_policies", noun, name)["PolicyNames"] == ["a-policy"]
    for operation in ("get_{noun}_policy", "delete_{noun}_policy"):
        with pytest.raises(ClientError) as info:
            call(iam, operation, noun, name, PolicyName="b-policy")
        assert error_of(info) == ("NoSuchEntity",
                                  f"The {kind} policy with name b-policy cannot be found.", 404)
    # the control: the one that is still there
    assert call(iam, "get_{noun}_policy", noun, name, PolicyName="a-policy")[
        "PolicyDocument"] == first
    absent = unique("absent")
    with pytest.raises(ClientError) as info:
        call(iam, "list_{noun}_policies", noun, absent)
    assert error_of(info) == ("NoSuchEntity",
                              f"The {kind} with name {absent} cannot be found.", 404)


@pytest.mark.parametrize("noun", list(KINDS))
def test_inline_policy_size_quota(broker: Broker, noun: str) -> None:
    iam = broker.client("iam")
    kind, make, limit = KINDS[noun]
    name = make(iam)
    message = f"Maximum policy size of {limit} bytes exceeded for {kind} {name}"

    with pytest.raises(ClientError) as info:
        call(iam, "put_{noun}_policy", noun, name, PolicyName="whole",
             PolicyDocument=sized_doc(limit + 1))
    assert error_of(info) == ("LimitExceeded", message, 409)
    call(iam, "put_{noun}_policy", noun, name, PolicyName="whole",  # the bound itself is fine
         PolicyDocument=sized_doc(limit))
    call(iam, "put_{noun}_policy", noun, name, PolicyName="whole",  # replacing counts once
         PolicyDocument=sized_doc(limit // 2))
    # the quota is on all of the entity's inline policies together
    call(iam, "put_{noun}_policy", noun, name, PolicyName="other",
         PolicyDocument=sized_doc(limit - limit // 2))
    with pytest.raises(ClientError) as info:
        call(iam, "put_{noun}_policy", noun, name, PolicyName="third",
             PolicyDocument=sized_doc(200))
    assert error_of(info) == ("LimitExceeded", message, 409)
    assert call(iam, "list_{noun}_policies", noun, name)["PolicyNames"] == ["other", "whole"]
    # white space does not count
    spaced = sized_doc(limit // 2).replace(",", ",\n   ")
    call(iam, "put_{noun}_policy", noun, name, PolicyName="whole", PolicyDocument=spaced)


# -- deleting users -------------------------------------------------------------------------------


def _with_login(iam: Any, user: str) -> Callable[[], None]:
    iam.create_login_profile(UserName=user, Password="Correct-Horse-9")
    return lambda: iam.delete_login_profile(UserName=user)


def _with_inline(iam: Any, user: str) -> Callable[[], None]:
    iam.put_user_policy(UserName=user, PolicyName="inline", PolicyDocument=policy_text())
    return lambda: iam.delete_user_policy(UserName=user, PolicyName="inline")


def _with_attached(iam: Any, user: str) -> Callable[[], None]:
    arn = make_policy(iam)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    return lambda: iam.detach_user_policy(UserName=user, PolicyArn=arn)


def _with_group(iam: Any, user: str) -> Callable[[], None]:
    group = make_group(iam)
    iam.add_user_to_group(GroupName=group, UserName=user)
    return lambda: iam.remove_user_from_group(GroupName=group, UserName=user)


@pytest.mark.parametrize(("holding", "message"), [
    pytest.param(_with_login, "Cannot delete entity, must delete login profile first.",
                 id="login-profile"),
    pytest.param(_with_inline, "Cannot delete entity, must delete policies first.",
                 id="inline-policy"),
    pytest.param(_with_attached, "Cannot delete entity, must detach all policies first.",
                 id="attached-policy"),
    pytest.param(_with_group, "Cannot delete entity, must remove users from group first.",
                 id="group-membership"),
])
def test_delete_user_refused_while_it_holds_something(
        broker: Broker, holding: Callable[[Any, str], Callable[[], None]], message: str) -> None:
    iam = broker.client("iam")
    user = make_user(iam)
    release = holding(iam, user)
    with pytest.raises(ClientError) as info:
        iam.delete_user(UserName=user)
    assert error_of(info) == ("DeleteConflict", message, 409)
    iam.get_user(UserName=user)  # still there
    release()
    iam.delete_user(UserName=user)  # the control: the same user, once released
    with pytest.raises(ClientError) as info:
        iam.get_user(UserName=user)
    assert error_of(info)[0] == "NoSuchEntity"


# -- login profiles and the password policy -------------------------------------------------------


def test_login_profile_lifecycle(broker: Broker) -> None:
    iam = broker.client("iam")
    user = make_user(iam)
    created = iam.create_login_profile(UserName=user, Password="Tr0ub4dor&3",
                                       PasswordResetRequired=True)["LoginProfile"]
    assert created["UserName"] == user and created["PasswordResetRequired"] is True
    assert "Password" not in created and "CreateDate" in created
    got = iam.get_login_profile(UserName=user.upper())["LoginProfile"]
    assert got["UserName"] == user and got["PasswordResetRequired"] is True

    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="Tr0ub4dor&3")
    assert error_of(info) == ("EntityAlreadyExists",
                              f"Login Profile for user {user} already exists.", 409)

    iam.update_login_profile(UserName=user, Password="N3w-Password!", PasswordResetRequired=False)
    assert iam.get_login_profile(UserName=user)["LoginProfile"]["PasswordResetRequired"] is False

    iam.delete_login_profile(UserName=user)
    for attempt in (lambda: iam.get_login_profile(UserName=user),
                    lambda: iam.update_login_profile(UserName=user, PasswordResetRequired=True),
                    lambda: iam.delete_login_profile(UserName=user)):
        with pytest.raises(ClientError) as info:
            attempt()
        assert error_of(info) == ("NoSuchEntity",
                                  f"Login Profile for User {user} cannot be found.", 404)
    missing = unique("nouser")
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=missing, Password="Tr0ub4dor&3")
    assert error_of(info) == ("NoSuchEntity",
                              f"The user with name {missing} cannot be found.", 404)


def test_weak_passwords_are_refused_under_the_default_policy(broker: Broker) -> None:
    _, iam = account_iam(broker)  # an account without a password policy of its own
    user = make_user(iam)
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="abc")
    assert error_of(info) == (
        "PasswordPolicyViolation",
        "Password should meet 2 more of the following requirements: Password should have a "
        "minimum length of 8, Password should have at least three of: uppercase letters, "
        "lowercase letters, numbers, symbols", 400)
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="alllowercase")
    assert error_of(info)[0] == "PasswordPolicyViolation"
    with pytest.raises(ClientError) as info:
        iam.get_login_profile(UserName=user)
    assert error_of(info)[0] == "NoSuchEntity"  # nothing was created
    iam.create_login_profile(UserName=user, Password="Abcdefg1")  # the control
    with pytest.raises(ClientError) as info:
        iam.update_login_profile(UserName=user, Password="abc")
    assert error_of(info)[0] == "PasswordPolicyViolation"


def test_account_password_policy(broker: Broker) -> None:
    account_id, iam = account_iam(broker)
    missing = ("NoSuchEntity",
               f"The Password Policy with domain name {account_id} cannot be found.", 404)
    with pytest.raises(ClientError) as info:
        iam.get_account_password_policy()
    assert error_of(info) == missing

    iam.update_account_password_policy(
        MinimumPasswordLength=12, RequireSymbols=True, RequireNumbers=True,
        RequireUppercaseCharacters=True, RequireLowercaseCharacters=True,
        AllowUsersToChangePassword=True, MaxPasswordAge=90, PasswordReusePrevention=5)
    policy = iam.get_account_password_policy()["PasswordPolicy"]
    assert policy == {
        "MinimumPasswordLength": 12, "RequireSymbols": True, "RequireNumbers": True,
        "RequireUppercaseCharacters": True, "RequireLowercaseCharacters": True,
        "AllowUsersToChangePassword": True, "ExpirePasswords": True, "MaxPasswordAge": 90,
        "PasswordReusePrevention": 5, "HardExpiry": False}

    user = make_user(iam)
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="Abcdefgh1234")  # no symbol
    assert error_of(info) == (
        "PasswordPolicyViolation", "Password should meet 1 more of the following requirement: "
        "Password should have at least one symbol", 400)
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="Abc-1")  # too short
    assert error_of(info)[0] == "PasswordPolicyViolation"
    assert "minimum length of 12" in error_of(info)[1]
    iam.create_login_profile(UserName=user, Password="Abcdefgh-1234")  # the control

    iam.update_account_password_policy(MinimumPasswordLength=8)  # the rest reverts to defaults
    policy = iam.get_account_password_policy()["PasswordPolicy"]
    assert policy["MinimumPasswordLength"] == 8 and policy["RequireSymbols"] is False
    assert policy["ExpirePasswords"] is False and "MaxPasswordAge" not in policy

    iam.delete_account_password_policy()
    with pytest.raises(ClientError) as info:
        iam.get_account_password_policy()
    assert error_of(info) == missing
    with pytest.raises(ClientError) as info:
        iam.delete_account_password_policy()
    assert error_of(info) == missing


def test_require_symbols_means_the_symbols_aws_lists(broker: Broker) -> None:
    _, iam = account_iam(broker)
    iam.update_account_password_policy(MinimumPasswordLength=8, RequireSymbols=True)
    user = make_user(iam)
    with pytest.raises(ClientError) as info:
        iam.create_login_profile(UserName=user, Password="Abcdefgh1234")  # no symbol at all
    assert error_of(info)[0] == "PasswordPolicyViolation"
    iam.create_login_profile(UserName=user, Password="Abcdefgh!1234")  # the control
    iam.delete_login_profile(UserName=user)
    try:
        iam.create_login_profile(UserName=user, Password="Abcdefgh.1234")  # '.' is not one
        outcome = "created"
    except ClientError as exc:
        outcome = exc.response["Error"]["Code"]
    assert outcome == "PasswordPolicyViolation"


def test_password_policy_bounds_are_validated(broker: Broker) -> None:
    _, root = broker.new_account()
    iam = broker.client("iam", root, validate=False)
    with pytest.raises(ClientError) as info:
        iam.update_account_password_policy(MinimumPasswordLength=5)
    assert error_of(info) == (
        "ValidationError", "1 validation error detected: Value '5' at 'minimumPasswordLength' "
        "failed to satisfy constraint: Member must have value greater than or equal to 6", 400)
    with pytest.raises(ClientError) as info:
        iam.get_account_password_policy()
    assert error_of(info)[0] == "NoSuchEntity"
    iam.update_account_password_policy(MinimumPasswordLength=6)  # the control
    assert iam.get_account_password_policy()["PasswordPolicy"]["MinimumPasswordLength"] == 6


# -- the account alias ----------------------------------------------------------------------------


def test_account_alias(broker: Broker) -> None:
    _, first = account_iam(broker)
    _, second = account_iam(broker)
    alias = f"alias-{uuid.uuid4().hex[:12]}"
    assert first.list_account_aliases()["AccountAliases"] == []
    first.create_account_alias(AccountAlias=alias)
    assert first.list_account_aliases()["AccountAliases"] == [alias]

    with pytest.raises(ClientError) as info:
        second.create_account_alias(AccountAlias=alias)
    assert error_of(info) == ("EntityAlreadyExists",
                              f"The account alias {alias} already exists.", 409)
    assert second.list_account_aliases()["AccountAliases"] == []

    with pytest.raises(ClientError) as info:
        second.delete_account_alias(AccountAlias=alias)  # not the second account's to delete
    assert error_of(info)[0] == "NoSuchEntity"
    assert first.list_account_aliases()["AccountAliases"] == [alias]

    first.delete_account_alias(AccountAlias=alias)
    assert first.list_account_aliases()["AccountAliases"] == []
    second.create_account_alias(AccountAlias=alias)  # the control: free again
    assert second.list_account_aliases()["AccountAliases"] == [alias]


# -- GetAccountAuthorizationDetails ---------------------------------------------------------------


def test_account_authorization_details(broker: Broker) -> None:
    account_id, iam = account_iam(broker)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    local_doc = identity_doc("dynamodb:GetItem")
    local = iam.create_policy(PolicyName=unique("local"), PolicyDocument=json.dumps(local_doc),
                              Path="/team/")["Policy"]
    unattached = make_policy(iam)
    user, group, role = make_user(iam, "/people/"), make_group(iam), make_role(iam)
    iam.add_user_to_group(GroupName=group, UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="user-inline",
                        PolicyDocument=policy_text("s3:GetObject"))
    iam.attach_user_policy(UserName=user, PolicyArn=local["Arn"])
    iam.put_group_policy(GroupName=group, PolicyName="group-inline",
                         PolicyDocument=policy_text("sqs:SendMessage"))
    iam.attach_group_policy(GroupName=group, PolicyArn=admin)
    iam.put_role_policy(RoleName=role, PolicyName="role-inline",
                        PolicyDocument=policy_text("sns:Publish"))
    iam.attach_role_policy(RoleName=role, PolicyArn=local["Arn"])

    details = iam.get_account_authorization_details()
    assert details["IsTruncated"] is False

    [u] = details["UserDetailList"]
    assert (u["UserName"], u["Path"]) == (user, "/people/")
    assert u["Arn"] == f"arn:aws:iam::{account_id}:user/people/{user}"
    assert u["GroupList"] == [group]
    assert u["UserPolicyList"] == [{"PolicyName": "user-inline",
                                    "PolicyDocument": identity_doc("s3:GetObject")}]
    assert u["AttachedManagedPolicies"] == [{"PolicyName": local["PolicyName"],
                                             "PolicyArn": local["Arn"]}]

    [g] = details["GroupDetailList"]
    assert g["GroupName"] == group
    assert g["GroupPolicyList"] == [{"PolicyName": "group-inline",
                                     "PolicyDocument": identity_doc("sqs:SendMessage")}]
    assert g["AttachedManagedPolicies"] == [{"PolicyName": "AdministratorAccess",
                                             "PolicyArn": admin}]

    [r] = details["RoleDetailList"]
    assert r["RoleName"] == role and r["AssumeRolePolicyDocument"] == SERVICE_TRUST
    assert r["RolePolicyList"] == [{"PolicyName": "role-inline",
                                    "PolicyDocument": identity_doc("sns:Publish")}]
    assert r["AttachedManagedPolicies"] == [{"PolicyName": local["PolicyName"],
                                             "PolicyArn": local["Arn"]}]

    policies = {p["Arn"]: p for p in details["Policies"]}
    # every local policy, and the AWS managed policies in use
    assert set(policies) == {local["Arn"], unattached, admin}
    mine = policies[local["Arn"]]
    assert mine["AttachmentCount"] == 2 and mine["DefaultVersionId"] == "v1"
    assert mine["PolicyVersionList"][0]["Document"] == local_doc
    assert mine["PolicyVersionList"][0]["IsDefaultVersion"] is True
    assert policies[unattached]["AttachmentCount"] == 0

    only_roles = iam.get_account_authorization_details(Filter=["Role"])
    assert [x["RoleName"] for x in only_roles["RoleDetailList"]] == [role]
    assert "UserDetailList" not in only_roles or only_roles["UserDetailList"] == []
    assert "Policies" not in only_roles or only_roles["Policies"] == []


def test_account_authorization_details_honours_max_items(broker: Broker) -> None:
    _, iam = account_iam(broker)
    users = sorted(make_user(iam) for _ in range(3))
    whole = iam.get_account_authorization_details(Filter=["User"])
    assert sorted(u["UserName"] for u in whole["UserDetailList"]) == users  # the control
    first = iam.get_account_authorization_details(Filter=["User"], MaxItems=1)
    assert len(first["UserDetailList"]) == 1
    assert first["IsTruncated"] is True and "Marker" in first


# -- isolation between accounts -------------------------------------------------------------------


def test_another_account_sees_none_of_these_entities(broker: Broker) -> None:
    iam = broker.client("iam")
    group, role, policy = make_group(iam), make_role(iam), make_policy(iam)
    alias = f"iso-{uuid.uuid4().hex[:12]}"
    iam.get_group(GroupName=group)  # the control: the owner sees them
    iam.get_role(RoleName=role)
    iam.get_policy(PolicyArn=policy)

    _, root = broker.new_account()
    other = broker.client("iam", root)
    assert other.list_groups()["Groups"] == []
    assert other.list_roles()["Roles"] == []
    assert other.list_policies(Scope="Local")["Policies"] == []
    assert "arn:aws:iam::aws:policy/AdministratorAccess" in {
        p["Arn"] for p in other.list_policies(Scope="AWS")["Policies"]}
    for attempt, message in (
            (lambda: other.get_group(GroupName=group),
             f"The group with name {group} cannot be found."),
            (lambda: other.get_role(RoleName=role),
             f"The role with name {role} cannot be found."),
            (lambda: other.get_policy(PolicyArn=policy),
             f"Policy {policy} does not exist or is not attachable."),
            (lambda: other.delete_role(RoleName=role),
             f"The role with name {role} cannot be found.")):
        with pytest.raises(ClientError) as info:
            attempt()
        assert error_of(info) == ("NoSuchEntity", message, 404)

    other_user = make_user(other)
    with pytest.raises(ClientError) as info:
        other.attach_user_policy(UserName=other_user, PolicyArn=policy)
    assert error_of(info) == ("NoSuchEntity",
                              f"Policy {policy} does not exist or is not attachable.", 404)
    other.create_group(GroupName=group)  # names are per account: the same name is free there
    details = other.get_account_authorization_details()
    assert [g["GroupName"] for g in details["GroupDetailList"]] == [group]
    assert details["RoleDetailList"] == [] and details["Policies"] == []
    assert details["GroupDetailList"][0]["Arn"] != iam.get_group(GroupName=group)["Group"]["Arn"]
    iam.create_account_alias(AccountAlias=alias)
    assert other.list_account_aliases()["AccountAliases"] == []
    iam.delete_account_alias(AccountAlias=alias)


def test_a_trust_policy_may_name_a_user_of_another_account(broker: Broker) -> None:
    other_id, root = broker.new_account()
    other_user = make_user(broker.client("iam", root))
    iam = broker.client("iam")
    existing = f"arn:aws:iam::{other_id}:user/{other_user}"
    role = unique("role")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust_for(existing)))
    missing = f"arn:aws:iam::{other_id}:user/{unique('nobody')}"
    with pytest.raises(ClientError) as info:
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(trust_for(missing)))
    assert error_of(info) == ("MalformedPolicyDocument",
                              f'Invalid principal in policy: "AWS":"{missing}"', 400)


def test_iam_users_without_policies_cannot_manage_groups_roles_or_policies(
        broker: Broker) -> None:
    name, creds = broker.new_user()
    as_user = broker.client("iam", creds)
    for attempt in (lambda: as_user.create_group(GroupName=unique("group")),
                    lambda: as_user.list_roles(),
                    lambda: as_user.create_policy(PolicyName=unique("p"),
                                                  PolicyDocument=policy_text())):
        with pytest.raises(ClientError) as info:
            attempt()
        code, message, status = error_of(info)
        assert (code, status) == ("AccessDenied", 403)
        assert message.startswith(f"User: arn:aws:iam::{broker.account_id}:user/{name} is not "
                                  "authorized to perform: iam:")
    # the control: once the user holds a policy that allows IAM, the same calls work
    broker.client("iam").put_user_policy(UserName=name, PolicyName="iam",
                                         PolicyDocument=policy_text("iam:*"))
    group = unique("group")
    as_user.create_group(GroupName=group)
    assert group in {g["GroupName"] for g in as_user.list_groups()["Groups"]}
