"""Nested groups in the identity store (which AWS refuses and SCIM makes): effective membership
is transitive for IsMemberInGroups and for what assignments give; cycles are refused, also
when two requests would close one between them; deleting a group cuts what came through it.
Each refusal beside the honest request that succeeds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.identitycenter.directory import NESTING, Directory, StoreError
from broker.identitycenter.instances import Instance
from tests.helpers import Broker
from tests.integration.test_identitystore import strict
from tests.sso_world import Tenant, assign, make_tenant


@pytest.fixture(scope="module")
def tenant(broker: Broker) -> Tenant:
    return make_tenant(broker, "Nested")


def _directory(broker: Broker) -> Directory:
    directory: Directory = broker.runtime.identity_center.directory
    return directory


def _instance(broker: Broker, tenant: Tenant) -> Instance:
    found = broker.server.call(
        broker.runtime.identity_center.instances.by_store(tenant.identity_store_id))
    assert found is not None
    return found


def _ids(broker: Broker, tenant: Tenant) -> Any:
    return strict(broker.client("identitystore", tenant.root))


def _group(broker: Broker, tenant: Tenant, name: str) -> str:
    return str(_ids(broker, tenant).create_group(
        IdentityStoreId=tenant.identity_store_id, DisplayName=name)["GroupId"])


def _user(broker: Broker, tenant: Tenant, name: str) -> str:
    return str(_ids(broker, tenant).create_user(
        IdentityStoreId=tenant.identity_store_id, UserName=name, DisplayName=name,
        Name={"GivenName": name, "FamilyName": "Person"})["UserId"])


def _join(broker: Broker, tenant: Tenant, group_id: str, user_id: str) -> str:
    return str(_ids(broker, tenant).create_group_membership(
        IdentityStoreId=tenant.identity_store_id, GroupId=group_id,
        MemberId={"UserId": user_id})["MembershipId"])


def _nest(broker: Broker, tenant: Tenant, group_id: str, member: str) -> None:
    broker.server.call(_directory(broker).add_group_member(
        _instance(broker, tenant), group_id, member, "tests"))


def _refused(broker: Broker, tenant: Tenant, group_id: str, member: str) -> StoreError:
    with pytest.raises(StoreError) as caught:
        _nest(broker, tenant, group_id, member)
    return caught.value


def _member_of(broker: Broker, tenant: Tenant, user_id: str, *groups: str) -> list[bool]:
    results = _ids(broker, tenant).is_member_in_groups(
        IdentityStoreId=tenant.identity_store_id, MemberId={"UserId": user_id},
        GroupIds=list(groups))["Results"]
    return [r["MembershipExists"] for r in results]


def _roles(broker: Broker, tenant: Tenant, user_id: str) -> list[str]:
    access = broker.runtime.identity_center.access
    roles = broker.server.call(access.portal_roles(_instance(broker, tenant), user_id))
    return [r.role_name for r in roles]


def _assign_group(broker: Broker, tenant: Tenant, group_id: str) -> None:
    assign(broker, tenant, group_id, "GROUP")


def test_membership_and_assignments_reach_through_nested_groups(broker: Broker,
                                                                tenant: Tenant) -> None:
    top, middle, bottom = (_group(broker, tenant, f"g-{n}") for n in ("top", "mid", "bot"))
    _nest(broker, tenant, top, middle)
    _nest(broker, tenant, middle, bottom)
    person, outsider = _user(broker, tenant, "nested-person"), _user(broker, tenant, "outsider")
    _join(broker, tenant, bottom, person)
    assert _member_of(broker, tenant, person, top, middle, bottom) == [True, True, True]
    assert _member_of(broker, tenant, outsider, top, middle, bottom) == [False] * 3

    assert _roles(broker, tenant, person) == []
    _assign_group(broker, tenant, top)  # an assignment to the top group reaches the bottom's
    assert _roles(broker, tenant, person) == ["Nested"]
    assert _roles(broker, tenant, outsider) == []

    # Taking the middle group out of the top one takes the role away at the next request.
    broker.server.call(_directory(broker).remove_group_member(
        _instance(broker, tenant), top, middle))
    assert _member_of(broker, tenant, person, top, middle) == [False, True]
    assert _roles(broker, tenant, person) == []
    _nest(broker, tenant, top, middle)
    assert _roles(broker, tenant, person) == ["Nested"]

    # Deleting the middle group cuts the path: its edges up and down go with it.
    _ids(broker, tenant).delete_group(IdentityStoreId=tenant.identity_store_id,
                                      GroupId=middle)
    assert _member_of(broker, tenant, person, top, bottom) == [False, True]
    assert _roles(broker, tenant, person) == []
    directory, instance = _directory(broker), _instance(broker, tenant)
    assert broker.server.call(directory.parent_group_ids(
        tenant.account_id, tenant.identity_store_id, bottom)) == []
    assert broker.server.call(directory.member_groups(instance, top)) == []


def test_cycles_are_refused(broker: Broker, tenant: Tenant) -> None:
    a, b, c = (_group(broker, tenant, f"cycle-{n}") for n in "abc")
    _nest(broker, tenant, a, b)
    _nest(broker, tenant, b, c)
    for group_id, member in ((c, a), (b, a), (a, a)):
        refused = _refused(broker, tenant, group_id, member)
        assert (refused.code, refused.reason) == ("ValidationException", "GROUP_CYCLE")
    # The control: a diamond is no cycle, and a group already a member is a conflict.
    _nest(broker, tenant, a, c)
    assert sorted(broker.server.call(_directory(broker).member_groups(
        _instance(broker, tenant), a))) == sorted([b, c])
    assert _refused(broker, tenant, a, b).code == "ConflictException"


def test_two_requests_closing_one_cycle_leave_none(broker: Broker, tenant: Tenant) -> None:
    directory, instance = _directory(broker), _instance(broker, tenant)
    for _ in range(5):
        a, b = _group(broker, tenant, f"race-a-{_}"), _group(broker, tenant, f"race-b-{_}")

        async def race(a: str = a, b: str = b) -> list[BaseException | None]:
            return await asyncio.gather(directory.add_group_member(instance, a, b, "one"),
                                        directory.add_group_member(instance, b, a, "two"),
                                        return_exceptions=True)

        outcomes = broker.server.call(race())
        assert all(o is None or (isinstance(o, StoreError) and o.reason == "GROUP_CYCLE")
                   for o in outcomes), outcomes
        edges = [r.key for r in broker.server.call(broker.runtime.store.list(
            NESTING, tenant.account_id)) if a in r.key and b in r.key]
        assert len(edges) == outcomes.count(None) <= 1, edges


def test_groups_of_another_store_are_not_found(broker: Broker, tenant: Tenant) -> None:
    other = make_tenant(broker, "Elsewhere")
    theirs = _group(broker, other, "theirs")
    ours = _group(broker, tenant, "ours")
    refused = _refused(broker, tenant, ours, theirs)
    assert (refused.code, refused.resource_id) == ("ResourceNotFoundException", theirs)
    control = _group(broker, tenant, "ours-too")
    _nest(broker, tenant, ours, control)


def test_external_ids_and_status_as_scim_sets_them(broker: Broker, tenant: Tenant) -> None:
    directory, instance = _directory(broker), _instance(broker, tenant)
    made = broker.server.call(directory.create_user(instance, {
        "UserName": "from-scim", "DisplayName": "From Scim",
        "Name": {"GivenName": "From", "FamilyName": "Scim"}}, "scim",
        external_ids=[("scim", "00u1")], active=False))
    described = _ids(broker, tenant).describe_user(IdentityStoreId=tenant.identity_store_id,
                                                   UserId=made.user_id)
    assert described["UserStatus"] == "DISABLED"
    assert described["ExternalIds"] == [{"Issuer": "scim", "Id": "00u1"}]
    assert _ids(broker, tenant).get_user_id(
        IdentityStoreId=tenant.identity_store_id,
        AlternateIdentifier={"ExternalId": {"Issuer": "scim", "Id": "00u1"}}
    )["UserId"] == made.user_id
    broker.server.call(directory.update_user(instance, made.user_id, [], None, "scim",
                                             active=True))
    described = _ids(broker, tenant).describe_user(IdentityStoreId=tenant.identity_store_id,
                                                   UserId=made.user_id)
    assert described["UserStatus"] == "ENABLED"
    assert described["ExternalIds"] == [{"Issuer": "scim", "Id": "00u1"}]
