"""The identity store over boto3's ``identitystore`` client: users, groups and memberships,
each refusal beside the honest request that succeeds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from broker.identitycenter.directory import MEMBERSHIP, USER, StoreError
from tests.helpers import Broker, Creds
from tests.integration.test_organizations import conforms

MODEL = botocore.session.get_session().get_service_model("identitystore")
ClientError = botocore.exceptions.ClientError


ERRORS: dict[str, set[str]] = {}  # action → the error codes its answers were seen with


def strict(client: Any) -> Any:
    """A client whose answers are checked against the model's output shapes, and whose
    errors against the errors the model lists for the action (members too)."""
    def check(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        op = operation_model
        body = json.loads(response_dict["body"] or b"{}")
        if response_dict["status_code"] == 200:
            if op.output_shape is not None:
                conforms(body, op.output_shape, op.name)
            return
        shapes = {e.name: e for e in op.error_shapes}
        code = body.pop("__type")
        assert code in shapes, (op.name, code, body)
        conforms(body, shapes[code], f"{op.name} {code}")
        ERRORS.setdefault(op.name, set()).add(code)

    client.meta.events.register("before-parse.identitystore.*", check)
    return client


def refused(call: Callable[..., Any], code: str, **params: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    error = caught.value.response["Error"]
    assert error["Code"] == code, caught.value.response
    body: dict[str, Any] = caught.value.response
    return body


def _store(broker: Broker, creds: Creds) -> str:
    arn = broker.client("sso-admin", creds).create_instance()["InstanceArn"]
    return str(broker.client("sso-admin", creds).describe_instance(
        InstanceArn=arn)["IdentityStoreId"])


@pytest.fixture
def world(broker: Broker) -> tuple[Any, str, Creds]:
    """A new account with an instance: its strict identitystore client and store id."""
    _, root = broker.new_account()
    return strict(broker.client("identitystore", root)), _store(broker, root), root


def person(store: str, name: str, **more: Any) -> dict[str, Any]:
    return {"IdentityStoreId": store, "UserName": name, "DisplayName": f"{name} Person",
            "Name": {"GivenName": name, "FamilyName": "Person"}, **more}


def test_a_user_from_creation_to_deletion(world: tuple[Any, str, Creds]) -> None:
    ids, store, _ = world
    made = ids.create_user(**person(store, "alice", Emails=[
        {"Value": "Alice@Example.com", "Type": "work", "Primary": True}], NickName="al"))
    user_id = made["UserId"]
    prefix, _, rest = user_id.partition("-")
    assert prefix == store.removeprefix("d-") and len(rest) == 36
    assert made["IdentityStoreId"] == store
    shown = ids.describe_user(IdentityStoreId=store, UserId=user_id)
    assert shown["UserName"] == "alice" and shown["NickName"] == "al"
    assert shown["UserArn"] == f"arn:aws:identitystore:::user/{user_id}"
    assert shown["UserStatus"] == "ENABLED" and shown["Revision"] == "1"
    assert shown["Emails"] == [{"Value": "Alice@Example.com", "Type": "work", "Primary": True}]
    # By unique attribute: the user name in any case, and the email address.
    for path, value in (("userName", "ALICE"), ("UserName", "alice"),
                        ("emails.value", "alice@example.com")):
        found = ids.get_user_id(IdentityStoreId=store, AlternateIdentifier={
            "UniqueAttribute": {"AttributePath": path, "AttributeValue": value}})
        assert found["UserId"] == user_id, path
    refused(ids.get_user_id, "ResourceNotFoundException", IdentityStoreId=store,
            AlternateIdentifier={"UniqueAttribute": {"AttributePath": "userName",
                                                     "AttributeValue": "nobody"}})
    refused(ids.get_user_id, "ValidationException", IdentityStoreId=store,
            AlternateIdentifier={"UniqueAttribute": {"AttributePath": "nickName",
                                                     "AttributeValue": "al"}})
    refused(ids.get_user_id, "ResourceNotFoundException", IdentityStoreId=store,
            AlternateIdentifier={"ExternalId": {"Issuer": "scim", "Id": "x"}})
    # Updates: AWS's attribute paths, an absent value removes, member names in any case.
    ids.update_user(IdentityStoreId=store, UserId=user_id, Operations=[
        {"AttributePath": "displayName", "AttributeValue": "Alice A."},
        {"AttributePath": "name.givenName", "AttributeValue": "Alicia"},
        {"AttributePath": "nickName"},
        {"AttributePath": "emails", "AttributeValue": [{"value": "a@example.org",
                                                        "primary": True}]}])
    shown = ids.describe_user(IdentityStoreId=store, UserId=user_id)
    assert shown["DisplayName"] == "Alice A." and "NickName" not in shown
    assert shown["Name"] == {"GivenName": "Alicia", "FamilyName": "Person"}
    assert shown["Emails"] == [{"Value": "a@example.org", "Primary": True}]
    assert shown["Revision"] == "2"
    for operation, code in (
            ({"AttributePath": "favouriteColour", "AttributeValue": "blue"},
             "ValidationException"),  # no such attribute
            ({"AttributePath": "displayName", "AttributeValue": 7}, "ValidationException"),
            ({"AttributePath": "emails", "AttributeValue": [{"colour": "x"}]},
             "ValidationException"),
            ({"AttributePath": "userName"}, "ValidationException"),  # required
            ({"AttributePath": "name.familyName"}, "ValidationException")):
        refused(ids.update_user, code, IdentityStoreId=store, UserId=user_id,
                Operations=[operation])
    assert ids.describe_user(IdentityStoreId=store, UserId=user_id)["Revision"] == "2"
    # Revision: the update is conditional on it.
    stale = refused(ids.update_user, "ConflictException", IdentityStoreId=store,
                    UserId=user_id, Revision="1", Operations=[
                        {"AttributePath": "title", "AttributeValue": "Dr"}])
    assert stale["Reason"] == "CONCURRENT_MODIFICATION" and stale["RequestId"]
    ids.update_user(IdentityStoreId=store, UserId=user_id, Revision="2", Operations=[
        {"AttributePath": "title", "AttributeValue": "Dr"}])
    # The user's ARN stands for its id.
    arn = f"arn:aws:identitystore:::user/{user_id}"
    assert ids.describe_user(IdentityStoreId=store, UserId=arn)["Title"] == "Dr"
    ids.delete_user(IdentityStoreId=store, UserId=user_id)
    gone = refused(ids.describe_user, "ResourceNotFoundException", IdentityStoreId=store,
                   UserId=user_id)
    assert gone["ResourceType"] == "USER" and gone["ResourceId"] == user_id
    refused(ids.delete_user, "ResourceNotFoundException", IdentityStoreId=store,
            UserId=user_id)
    # The name is free again.
    ids.create_user(**person(store, "Alice"))


def test_user_names_are_unique_without_regard_to_case(world: tuple[Any, str, Creds]) -> None:
    ids, store, _ = world
    first = ids.create_user(**person(store, "bob"))["UserId"]
    taken = refused(ids.create_user, "ConflictException", **person(store, "BOB"))
    assert taken["Reason"] == "UNIQUENESS_CONSTRAINT_VIOLATION"
    other = ids.create_user(**person(store, "carol"))["UserId"]  # the control
    refused(ids.update_user, "ConflictException", IdentityStoreId=store, UserId=other,
            Operations=[{"AttributePath": "userName", "AttributeValue": "Bob"}])
    ids.update_user(IdentityStoreId=store, UserId=other, Operations=[
        {"AttributePath": "userName", "AttributeValue": "dave"}])
    assert ids.describe_user(IdentityStoreId=store, UserId=other)["UserName"] == "dave"
    ids.create_user(**person(store, "Carol"))  # the old name is free
    ids.update_user(IdentityStoreId=store, UserId=first, Operations=[
        {"AttributePath": "userName", "AttributeValue": "BOB"}])  # its own name, recased
    # What Identity Center asks of a user, and the reserved names.
    for params in ({"IdentityStoreId": store, "UserName": "eve"},
                   {**person(store, "eve"), "Name": {"GivenName": "Eve"}},
                   person(store, "Administrator")):
        refused(ids.create_user, "ValidationException", **params)
    ids.create_user(**person(store, "eve"))


def test_two_concurrent_creations_of_one_name_one_wins(broker: Broker,
                                                       world: tuple[Any, str, Creds]) -> None:
    ids, store, root = world
    account = broker.client("sts", root).get_caller_identity()["Account"]
    directory = broker.runtime.identity_center.directory

    async def race() -> list[Any]:
        instance = await directory.instance(account, store)
        attrs = {"UserName": "racer", "DisplayName": "R", "Name": {
            "GivenName": "R", "FamilyName": "R"}}
        return await asyncio.gather(
            *(directory.create_user(instance, dict(attrs), "test") for _ in range(4)),
            return_exceptions=True)

    results = broker.server.call(race())
    made = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, StoreError)]
    assert len(made) == 1 and len(lost) == 3, results
    assert all(e.code == "ConflictException" for e in lost)
    listed = ids.list_users(IdentityStoreId=store)["Users"]
    assert [u["UserId"] for u in listed] == [made[0].user_id]


def test_groups(world: tuple[Any, str, Creds]) -> None:
    ids, store, _ = world
    made = ids.create_group(IdentityStoreId=store, DisplayName="Engineers",
                            Description="builders")
    group_id = made["GroupId"]
    taken = refused(ids.create_group, "ConflictException", IdentityStoreId=store,
                    DisplayName="engineers")
    assert taken["Reason"] == "UNIQUENESS_CONSTRAINT_VIOLATION"
    refused(ids.create_group, "ValidationException", IdentityStoreId=store)
    other = ids.create_group(IdentityStoreId=store, DisplayName="Ops\tteam")["GroupId"]
    shown = ids.describe_group(IdentityStoreId=store, GroupId=group_id)
    assert (shown["DisplayName"], shown["Description"]) == ("Engineers", "builders")
    assert shown["GroupArn"] == f"arn:aws:identitystore:::group/{group_id}"
    found = ids.get_group_id(IdentityStoreId=store, AlternateIdentifier={
        "UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": "ENGINEERS"}})
    assert found["GroupId"] == group_id
    refused(ids.get_group_id, "ValidationException", IdentityStoreId=store,
            AlternateIdentifier={"UniqueAttribute": {"AttributePath": "description",
                                                     "AttributeValue": "builders"}})
    filtered = ids.list_groups(IdentityStoreId=store, Filters=[
        {"AttributePath": "DisplayName", "AttributeValue": "Ops\tteam"}])["Groups"]
    assert [g["GroupId"] for g in filtered] == [other]
    refused(ids.list_groups, "ValidationException", IdentityStoreId=store, Filters=[
        {"AttributePath": "description", "AttributeValue": "builders"}])
    assert {g["GroupId"] for g in ids.list_groups(IdentityStoreId=store)["Groups"]} == {
        group_id, other}
    refused(ids.update_group, "ConflictException", IdentityStoreId=store, GroupId=other,
            Operations=[{"AttributePath": "displayName", "AttributeValue": "Engineers"}])
    refused(ids.update_group, "ValidationException", IdentityStoreId=store, GroupId=other,
            Operations=[{"AttributePath": "members", "AttributeValue": "x"}])
    ids.update_group(IdentityStoreId=store, GroupId=other, Operations=[
        {"AttributePath": "displayName", "AttributeValue": "Operations"},
        {"AttributePath": "description", "AttributeValue": "runners"}])
    shown = ids.describe_group(IdentityStoreId=store, GroupId=other)
    assert (shown["DisplayName"], shown["Description"], shown["Revision"]) == (
        "Operations", "runners", "2")
    ids.delete_group(IdentityStoreId=store, GroupId=other)
    gone = refused(ids.describe_group, "ResourceNotFoundException", IdentityStoreId=store,
                   GroupId=other)
    assert gone["ResourceType"] == "GROUP"
    ids.create_group(IdentityStoreId=store, DisplayName="Ops\tTeam")  # free again


def test_memberships(broker: Broker, world: tuple[Any, str, Creds]) -> None:
    ids, store, root = world
    alice = ids.create_user(**person(store, "alice"))["UserId"]
    bob = ids.create_user(**person(store, "bob"))["UserId"]
    devs = ids.create_group(IdentityStoreId=store, DisplayName="devs")["GroupId"]
    ops = ids.create_group(IdentityStoreId=store, DisplayName="ops")["GroupId"]
    made = ids.create_group_membership(IdentityStoreId=store, GroupId=devs,
                                       MemberId={"UserId": alice})
    membership = made["MembershipId"]
    assert made["MembershipArn"] == f"arn:aws:identitystore:::membership/{membership}"
    twice = refused(ids.create_group_membership, "ConflictException", IdentityStoreId=store,
                    GroupId=devs, MemberId={"UserId": alice})
    assert twice["Reason"] == "UNIQUENESS_CONSTRAINT_VIOLATION"
    ids.create_group_membership(IdentityStoreId=store, GroupId=ops, MemberId={"UserId": alice})
    ids.create_group_membership(IdentityStoreId=store, GroupId=devs, MemberId={"UserId": bob})
    nobody = f"{store.removeprefix('d-')}-00000000-0000-4000-8000-000000000000"
    assert refused(ids.create_group_membership, "ResourceNotFoundException",
                   IdentityStoreId=store, GroupId=devs,
                   MemberId={"UserId": nobody})["ResourceType"] == "USER"
    assert refused(ids.create_group_membership, "ResourceNotFoundException",
                   IdentityStoreId=store, GroupId=nobody,
                   MemberId={"UserId": bob})["ResourceType"] == "GROUP"
    shown = ids.describe_group_membership(IdentityStoreId=store, MembershipId=membership)
    assert (shown["GroupId"], shown["MemberId"]) == (devs, {"UserId": alice})
    assert ids.get_group_membership_id(IdentityStoreId=store, GroupId=devs, MemberId={
        "UserId": alice})["MembershipId"] == membership
    refused(ids.get_group_membership_id, "ResourceNotFoundException", IdentityStoreId=store,
            GroupId=ops, MemberId={"UserId": bob})
    members = ids.list_group_memberships(IdentityStoreId=store, GroupId=devs)
    assert {m["MemberId"]["UserId"] for m in members["GroupMemberships"]} == {alice, bob}
    of_alice = ids.list_group_memberships_for_member(IdentityStoreId=store,
                                                     MemberId={"UserId": alice})
    assert {m["GroupId"] for m in of_alice["GroupMemberships"]} == {devs, ops}
    answered = ids.is_member_in_groups(IdentityStoreId=store, MemberId={"UserId": bob},
                                       GroupIds=[devs, ops])["Results"]
    assert [(r["GroupId"], r["MembershipExists"]) for r in answered] == [
        (devs, True), (ops, False)]
    account = broker.client("sts", root).get_caller_identity()["Account"]
    directory = broker.runtime.identity_center.directory
    assert sorted(broker.server.call(directory.group_ids_of(account, store, alice))) == \
        sorted([devs, ops])
    # Deleting a user removes its memberships; deleting a group removes its own.
    ids.delete_user(IdentityStoreId=store, UserId=alice)
    refused(ids.describe_group_membership, "ResourceNotFoundException", IdentityStoreId=store,
            MembershipId=membership)
    members = ids.list_group_memberships(IdentityStoreId=store, GroupId=devs)
    assert [m["MemberId"]["UserId"] for m in members["GroupMemberships"]] == [bob]
    ids.delete_group(IdentityStoreId=store, GroupId=devs)
    rows = broker.server.call(broker.runtime.store.list(MEMBERSHIP, account))
    assert [r for r in rows if r.key.startswith(store)] == []
    assert ids.list_group_memberships_for_member(
        IdentityStoreId=store, MemberId={"UserId": bob})["GroupMemberships"] == []
    membership = ids.create_group_membership(IdentityStoreId=store, GroupId=ops, MemberId={
        "UserId": bob})["MembershipId"]  # the control: bob joins what is left
    ids.delete_group_membership(IdentityStoreId=store, MembershipId=membership)
    refused(ids.delete_group_membership, "ResourceNotFoundException", IdentityStoreId=store,
            MembershipId=membership)


def test_pages(world: tuple[Any, str, Creds]) -> None:
    ids, store, _ = world
    made = {ids.create_user(**person(store, f"page{i}"))["UserId"] for i in range(5)}
    seen: list[str] = []
    token = None
    while True:
        page = ids.list_users(IdentityStoreId=store, MaxResults=2,
                              **({"NextToken": token} if token else {}))
        assert len(page["Users"]) <= 2
        seen += [u["UserId"] for u in page["Users"]]
        token = page.get("NextToken")
        if token is None:
            break
    assert sorted(seen) == sorted(made)
    refused(ids.list_users, "ValidationException", IdentityStoreId=store, NextToken="forged")
    refused(ids.list_groups, "ValidationException", IdentityStoreId=store,
            NextToken="u:" + seen[0])  # another listing's token
    by_name = ids.list_users(IdentityStoreId=store, Filters=[
        {"AttributePath": "UserName", "AttributeValue": "PAGE3"}])["Users"]
    assert [u["UserName"] for u in by_name] == ["page3"]
    refused(ids.list_users, "ValidationException", IdentityStoreId=store, Filters=[
        {"AttributePath": "displayName", "AttributeValue": "x"}])


def test_the_enterprise_extension(world: tuple[Any, str, Creds]) -> None:
    ids, store, _ = world
    ext = "aws:identitystore:enterprise"
    user_id = ids.create_user(**person(store, "erin", Extensions={
        ext: {"costCenter": "42", "manager": {"value": "boss"}}}))["UserId"]
    assert "Extensions" not in ids.describe_user(IdentityStoreId=store, UserId=user_id)
    shown = ids.describe_user(IdentityStoreId=store, UserId=user_id, Extensions=[ext])
    assert shown["Extensions"] == {ext: {"costCenter": "42", "manager": {"value": "boss"}}}
    ids.update_user(IdentityStoreId=store, UserId=user_id, Operations=[
        {"AttributePath": f"{ext}.department", "AttributeValue": "R&D"}])
    shown = ids.describe_user(IdentityStoreId=store, UserId=user_id, Extensions=[ext])
    assert shown["Extensions"][ext]["department"] == "R&D"
    refused(ids.create_user, "ValidationException", **person(store, "frank", Extensions={
        "aws:identitystore:other": {"x": "y"}}))
    refused(ids.update_user, "ValidationException", IdentityStoreId=store, UserId=user_id,
            Operations=[{"AttributePath": f"{ext}.shoeSize", "AttributeValue": "9"}])


def test_another_account_cannot_reach_the_store(broker: Broker,
                                                world: tuple[Any, str, Creds]) -> None:
    ids, store, root = world
    user_id = ids.create_user(**person(store, "owned"))["UserId"]
    group_id = ids.create_group(IdentityStoreId=store, DisplayName="owned")["GroupId"]
    _, other_root = broker.new_account()
    _store(broker, other_root)  # an instance of its own does not help
    theirs = strict(broker.client("identitystore", other_root))
    for action, params in (
            ("describe_user", {"UserId": user_id}), ("list_users", {}),
            ("list_groups", {}), ("describe_group", {"GroupId": group_id}),
            ("update_user", {"UserId": user_id, "Operations": [
                {"AttributePath": "displayName", "AttributeValue": "mine"}]}),
            ("delete_user", {"UserId": user_id}), ("delete_group", {"GroupId": group_id}),
            ("create_user", person(store, "intruder")),
            ("create_group_membership", {"GroupId": group_id,
                                         "MemberId": {"UserId": user_id}})):
        answer = refused(getattr(theirs, action), "ResourceNotFoundException",
                         **{"IdentityStoreId": store, **params})
        assert answer["ResourceType"] == "IDENTITY_STORE", action
    # The store's ARN with the owner's account is no way in either.
    owner = broker.client("sts", root).get_caller_identity()["Account"]
    refused(theirs.list_users, "ResourceNotFoundException",
            IdentityStoreId=f"arn:aws:identitystore::{owner}:identitystore/{store}")
    # The owner's, unchanged: the control (and its ARN works for the owner).
    shown = ids.describe_user(IdentityStoreId=f"arn:aws:identitystore::{owner}:identitystore/"
                              f"{store}", UserId=user_id)
    assert shown["DisplayName"] == "owned Person"
    assert [g["GroupId"] for g in ids.list_groups(IdentityStoreId=store)["Groups"]] == [group_id]


def test_actions_are_authorized(broker: Broker, world: tuple[Any, str, Creds]) -> None:
    _, store, root = world
    name, user = broker.new_user(root)
    ids = strict(broker.client("identitystore", user))
    refused(ids.list_users, "AccessDeniedException", IdentityStoreId=store)
    account = broker.client("sts", root).get_caller_identity()["Account"]
    broker.client("iam", root).put_user_policy(
        UserName=name, PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["identitystore:List*",
                                              "identitystore:Describe*"],
                "Resource": f"arn:aws:identitystore::{account}:identitystore/{store}"}]}))
    assert ids.list_users(IdentityStoreId=store)["Users"] == []  # the control
    refused(ids.create_user, "AccessDeniedException", **person(store, "sneaky"))
    refused(ids.list_users, "ValidationException", IdentityStoreId="d-" + "x" * 10)


def test_a_deleted_instance_leaves_no_directory(broker: Broker,
                                                world: tuple[Any, str, Creds]) -> None:
    ids, store, root = world
    user_id = ids.create_user(**person(store, "left"))["UserId"]
    group_id = ids.create_group(IdentityStoreId=store, DisplayName="left")["GroupId"]
    ids.create_group_membership(IdentityStoreId=store, GroupId=group_id,
                                MemberId={"UserId": user_id})
    sso = broker.client("sso-admin", root)
    sso.delete_instance(InstanceArn=sso.list_instances()["Instances"][0]["InstanceArn"])
    refused(ids.list_users, "ResourceNotFoundException", IdentityStoreId=store)
    new_store = _store(broker, root)
    assert new_store != store
    assert ids.list_users(IdentityStoreId=new_store)["Users"] == []
    account = broker.client("sts", root).get_caller_identity()["Account"]
    directory = broker.runtime.identity_center.directory
    assert broker.server.call(directory.user(account, store, user_id)) is None
    rows = broker.server.call(broker.runtime.store.list(USER, account))
    assert rows == []


def test_the_directory_for_the_rest_of_identity_center(broker: Broker,
                                                       world: tuple[Any, str, Creds]) -> None:
    ids, store, root = world
    account = broker.client("sts", root).get_caller_identity()["Account"]
    user_id = ids.create_user(**person(store, "Grace", Emails=[
        {"Value": "grace@example.com", "Primary": True}]))["UserId"]
    group_id = ids.create_group(IdentityStoreId=store, DisplayName="g")["GroupId"]
    directory = broker.runtime.identity_center.directory
    found = broker.server.call(directory.user_by_name(account, store, "grace"))
    assert found is not None and found.user_id == user_id
    assert found.primary_email == "grace@example.com" and found.display_name == "Grace Person"
    assert broker.server.call(directory.user(account, store, user_id)) == found
    _, other_root = broker.new_account()
    other = broker.client("sts", other_root).get_caller_identity()["Account"]
    assert broker.server.call(directory.user(other, store, user_id)) is None
    for kind, principal, exists in (("USER", user_id, True), ("GROUP", group_id, True),
                                    ("GROUP", user_id, False), ("ROLE", user_id, False)):
        assert broker.server.call(directory.principal_exists(
            account, store, kind, principal)) is exists, (kind, principal)


def test_every_action_answers_its_documented_errors(broker: Broker,
                                                    world: tuple[Any, str, Creds]) -> None:
    """Each action refused (an identity store that is not the caller's) beside its honest
    call; the actions covered are every identitystore action the broker serves."""
    ids, store, _ = world
    user_id = ids.create_user(**person(store, "every"))["UserId"]
    group_id = ids.create_group(IdentityStoreId=store, DisplayName="every")["GroupId"]
    membership = ids.create_group_membership(IdentityStoreId=store, GroupId=group_id,
                                             MemberId={"UserId": user_id})["MembershipId"]
    member = {"UserId": user_id}
    calls: dict[str, dict[str, Any]] = {
        "CreateUser": {k: v for k, v in person(store, "every2").items()
                       if k != "IdentityStoreId"},
        "DescribeUser": {"UserId": user_id},
        "UpdateUser": {"UserId": user_id, "Operations": [
            {"AttributePath": "title", "AttributeValue": "x"}]},
        "ListUsers": {},
        "GetUserId": {"AlternateIdentifier": {"UniqueAttribute": {
            "AttributePath": "userName", "AttributeValue": "every"}}},
        "CreateGroup": {"DisplayName": "every2"},
        "DescribeGroup": {"GroupId": group_id},
        "UpdateGroup": {"GroupId": group_id, "Operations": [
            {"AttributePath": "description", "AttributeValue": "x"}]},
        "ListGroups": {},
        "GetGroupId": {"AlternateIdentifier": {"UniqueAttribute": {
            "AttributePath": "displayName", "AttributeValue": "every"}}},
        "DescribeGroupMembership": {"MembershipId": membership},
        "ListGroupMemberships": {"GroupId": group_id},
        "ListGroupMembershipsForMember": {"MemberId": member},
        "IsMemberInGroups": {"MemberId": member, "GroupIds": [group_id]},
        "GetGroupMembershipId": {"GroupId": group_id, "MemberId": member},
        "DeleteGroupMembership": {"MembershipId": membership},
        "CreateGroupMembership": {"GroupId": group_id, "MemberId": member},
        "DeleteUser": {"UserId": user_id},
        "DeleteGroup": {"GroupId": group_id},
    }
    served = {op.name for op in broker.runtime.json_protocol.operations
              if op.service.target == "AWSIdentityStore"}
    assert set(calls) == served and served <= set(MODEL.operation_names)
    elsewhere = "d-0000000000"
    for action, params in calls.items():
        method = getattr(ids, _snake(action))
        ERRORS.pop(action, None)
        refused(method, "ResourceNotFoundException", IdentityStoreId=elsewhere, **params)
        assert ERRORS[action] == {"ResourceNotFoundException"}
        method(IdentityStoreId=store, **params)  # the control


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
