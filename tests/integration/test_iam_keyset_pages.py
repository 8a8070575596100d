"""IAM's listings read one page from the store at a time (keyset pagination, so that the last
page of 100,000 users costs what the first does: benchmarks/estate_growth.py): paging through
ListUsers, ListRoles and GetAccountAuthorizationDetails a few items at a time gives exactly
the one-page answer — the control — also when a PathPrefix keeps few of the records read and
when a page spans the boundary between two of GetAccountAuthorizationDetails' lists."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests.helpers import Broker

TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})


def pages(call: Callable[..., Any], size: int, **params: Any) -> list[dict[str, Any]]:
    """Every page, following the Marker as a client does."""
    found: list[dict[str, Any]] = []
    marker = None
    for _ in range(200):
        page = call(MaxItems=size, **params, **({"Marker": marker} if marker else {}))
        found.append(page)
        if not page["IsTruncated"]:
            assert "Marker" not in page
            return found
        marker = page["Marker"]
    raise AssertionError("still truncated after 200 pages")


def account(broker: Broker) -> Any:
    _, root = broker.new_account()
    return broker.client("iam", root)


def test_list_users_pages_through_a_sparse_path_prefix(broker: Broker) -> None:
    iam = account(broker)
    # One user in five under /match/, spread through the names: most records read for a page
    # are refused by the prefix, so a page needs several reads of the store.
    for i in range(25):
        iam.create_user(UserName=f"u{i:02d}", Path="/match/" if i % 5 == 2 else "/other/")
    whole = iam.list_users(PathPrefix="/match/", MaxItems=1000)
    assert [u["UserName"] for u in whole["Users"]] == ["u02", "u07", "u12", "u17", "u22"]
    assert whole["IsTruncated"] is False  # the control: one page
    paged = pages(iam.list_users, 2, PathPrefix="/match/")
    assert [u["UserName"] for p in paged for u in p["Users"]] == \
        [u["UserName"] for u in whole["Users"]]
    assert [len(p["Users"]) for p in paged] == [2, 2, 1]
    everyone = pages(iam.list_users, 7)
    assert [u["UserName"] for p in everyone for u in p["Users"]] == \
        [f"u{i:02d}" for i in range(25)]
    # The last item of a listing ends it: no page after it, empty or not.
    exact = pages(iam.list_users, 5)
    assert [len(p["Users"]) for p in exact] == [5, 5, 5, 5, 5]


def test_list_roles_pages_through_a_path_prefix(broker: Broker) -> None:
    iam = account(broker)
    for i in range(9):
        iam.create_role(RoleName=f"r{i}", Path="/keep/" if i % 3 == 0 else "/",
                        AssumeRolePolicyDocument=TRUST)
    whole = iam.list_roles(PathPrefix="/keep/", MaxItems=1000)["Roles"]
    assert [r["RoleName"] for r in whole] == ["r0", "r3", "r6"]
    paged = pages(iam.list_roles, 1, PathPrefix="/keep/")
    assert [r["RoleName"] for p in paged for r in p["Roles"]] == ["r0", "r3", "r6"]


def test_authorization_details_pages_give_the_whole_answer(broker: Broker) -> None:
    iam = account(broker)
    tag = uuid.uuid4().hex[:6]
    policy = iam.create_policy(PolicyName=f"p-{tag}", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                "Resource": "*"}]}))["Policy"]["Arn"]
    for i in range(5):
        iam.create_user(UserName=f"user{i}")
        iam.attach_user_policy(UserName=f"user{i}", PolicyArn=policy)
    for i in range(3):
        iam.create_group(GroupName=f"group{i}")
    iam.add_user_to_group(GroupName="group1", UserName="user3")
    for i in range(4):
        iam.create_role(RoleName=f"role{i}", AssumeRolePolicyDocument=TRUST)
    iam.attach_role_policy(RoleName="role2", PolicyArn=policy)
    sections = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")
    whole = iam.get_account_authorization_details(MaxItems=1000)
    assert whole["IsTruncated"] is False  # the control: one page
    assert [len(whole[s]) for s in sections[:3]] == [5, 3, 4]
    mine = [p for p in whole["Policies"] if p["Arn"] == policy]
    assert mine and mine[0]["AttachmentCount"] == 6
    for size in (1, 2, 3, 4):  # pages ending inside a list and on its boundary
        paged = pages(iam.get_account_authorization_details, size)
        assert all(sum(len(p.get(s, [])) for s in sections) == size for p in paged[:-1])
        for section in sections:
            assert [x for p in paged for x in p.get(section, [])] == whole[section], \
                (size, section)
    users = pages(iam.get_account_authorization_details, 2, Filter=["User"])
    assert [u["UserName"] for p in users for u in p["UserDetailList"]] == \
        [f"user{i}" for i in range(5)]
    assert [u["GroupList"] for p in users for u in p["UserDetailList"]][3] == ["group1"]
