"""The identity store's actions (``identitystore``: JSON 1.1, target ``AWSIdentityStore``,
SigV4 service ``identitystore``): parse what the model leaves open (attribute paths and their
JSON values, alternate identifiers, filters, page tokens), call the Directory, render.

Every action is authorized as ``identitystore:ACTION`` on the identity store's ARN
(``arn:aws:identitystore::ACCOUNT:identitystore/d-…``, the caller's account), then needs the
store to be the caller's account's instance's (ResourceNotFoundException otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from broker.authz import Authorizer
from broker.aws import arn, shapes
from broker.aws.jsonproto import JsonOperation, JsonRegistry, JsonService
from broker.aws.query import Call, Result
from broker.identitycenter import store_model as model
from broker.identitycenter.directory import (
    Change,
    Directory,
    DirectoryGroup,
    DirectoryUser,
    Membership,
    StoreError,
    invalid,
    missing,
)
from broker.identitycenter.instances import Instance


def _invalid(faults: shapes.ShapeFaults) -> StoreError:
    return invalid(faults.message())


IDENTITY_STORE = JsonService("identitystore", "AWSIdentityStore", invalid_input=_invalid,
                             internal_error="InternalServerException")

# -- attribute paths: AWS's names (compared without regard to case) → the model's ------------

_STRING = model.SensitiveStringType
_USER_PATHS: dict[str, tuple[tuple[str, ...], shapes.Shape]] = {
    "username": (("UserName",), model.UserName),
    "name": (("Name",), model.Name),
    **{f"name.{m.name.lower()}": (("Name", m.name), m.shape) for m in model.Name.members},
    "emails": (("Emails",), model.Emails),
    "addresses": (("Addresses",), model.Addresses),
    "phonenumbers": (("PhoneNumbers",), model.PhoneNumbers),
    "photos": (("Photos",), model.Photos),
    "roles": (("Roles",), model.Roles),
    **{m.name.lower(): ((m.name,), m.shape) for m in model.CreateUserRequest.members
       if m.shape is _STRING},
}
_GROUP_PATHS: dict[str, tuple[tuple[str, ...], shapes.Shape]] = {
    "displayname": (("DisplayName",), model.GroupDisplayName),
    "description": (("Description",), _STRING),
}
ENTERPRISE = "aws:identitystore:enterprise"  # the one extension AWS has
_ENTERPRISE = {n.lower(): n for n in (
    "employeeNumber", "costCenter", "organization", "division", "department", "manager")}
_ID = re.compile(r"(?:[0-9a-f]{10}-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ARN_ID = re.compile(r"arn:aws[a-z-]*:identitystore:::(user|group|membership)/(.+)")


def _normalized(shape: shapes.Shape, value: Any, at: str) -> Any:
    """A JSON value with its member names spelled as the model spells them (AWS takes
    ``value`` for ``Value``); unknown members are refused."""
    if isinstance(shape, shapes.ListOf) and isinstance(value, list):
        return [_normalized(shape.member, v, at) for v in value]
    if isinstance(shape, shapes.Structure) and isinstance(value, dict):
        names = {m.name.lower(): m.name for m in shape.members}
        out = {}
        for key, item in value.items():
            name = names.get(key.lower()) if isinstance(key, str) else None
            if name is None:
                raise invalid(f"{at} has no attribute {str(key)[:64]}.")
            member = shape.member(name)
            assert member is not None
            out[name] = _normalized(member.shape, item, f"{at}.{name}")
        return out
    return value


def _checked(shape: shapes.Shape, value: Any, at: str) -> Any:
    holder = shapes.struct(shapes.required(at, shape))
    try:
        return shapes.parse_document(holder, {at: _normalized(shape, value, at)})[at]
    except shapes.SerializationFault as exc:
        raise invalid(f"The value of {at} is not valid: {exc}") from None
    except shapes.ShapeFaults as exc:
        raise invalid(exc.message()) from None


def _enterprise(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{at} must be an object of enterprise attributes.")
    return {_ENTERPRISE.get(k.lower(), k) if isinstance(k, str) else k:
            _enterprise_value(k, v, at) for k, v in value.items()}


def _enterprise_value(key: Any, value: Any, at: str) -> Any:
    name = _ENTERPRISE.get(key.lower()) if isinstance(key, str) else None
    if name is None:
        raise invalid(f"{at} has no attribute {str(key)[:64]}.")
    if name == "manager":
        if not isinstance(value, dict) or set(value) - {"value"}:
            raise invalid(f"{at}.manager must be an object with a value.")
        return {"value": _checked(_STRING, value.get("value"), f"{at}.manager.value")}
    return _checked(_STRING, value, f"{at}.{name}")


def _extensions(given: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in given.items():
        if name != ENTERPRISE:
            raise invalid(f"The extension {name} is not supported; {ENTERPRISE} is.")
        out[name] = _enterprise(value, name)
    return out


def changes(operations: Sequence[dict[str, Any]], user: bool) -> list[Change]:
    """UpdateUser's / UpdateGroup's Operations as changes under the model's names."""
    paths = _USER_PATHS if user else _GROUP_PATHS
    out: list[Change] = []
    for op in operations:
        path = op["AttributePath"]
        value = op.get("AttributeValue")
        lowered = path.lower()
        if user and lowered.split(".", 1)[0] == ENTERPRISE:
            rest = path[len(ENTERPRISE) + 1:]
            if not rest:
                out.append((("Extensions", ENTERPRISE),
                            None if value is None else _enterprise(value, ENTERPRISE)))
                continue
            name = _ENTERPRISE.get(rest.lower())
            if name is None or "." in rest:
                raise invalid(f"The attribute path {path[:255]} is not valid.")
            out.append((("Extensions", ENTERPRISE, name), None if value is None else
                        _enterprise_value(name, value, ENTERPRISE)))
            continue
        found = paths.get(lowered)
        if found is None:
            raise invalid(f"The attribute path {path[:255]} is not valid.")
        target, shape = found
        out.append((target, None if value is None else _checked(shape, value, path)))
    return out


def _id(value: str, kind: str) -> str:
    """A user, group or membership id as the directory keys it (the model lets an ARN
    stand for it)."""
    found = _ARN_ID.fullmatch(value)
    if found is not None:
        if found.group(1) != kind:
            return ""
        value = found.group(2)
    return value.lower()


def _store_id(value: str) -> str:
    return value.rpartition("/")[2] if value.startswith("arn:") else value


def _token(value: str | None, kind: str) -> str | None:
    if value is None:
        return None
    tag, _, after = value.partition(":")
    if tag != kind or not _ID.fullmatch(after):
        raise invalid("The NextToken is not valid.")
    return after


def _limit(params: Any) -> int | None:
    value: int | None = params.get("MaxResults")
    return value


def _member(params: Any) -> str:
    user_id = params["MemberId"].get("UserId")
    if user_id is None:
        raise invalid("MemberId must name a UserId.")
    return _id(user_id, "user")


# -- rendering --------------------------------------------------------------------------------

def wire_user(user: DirectoryUser, extensions: Sequence[str] = ()) -> dict[str, Any]:
    attrs = user.attributes()
    stored = attrs.pop("Extensions", None) or {}
    out: dict[str, Any] = {
        **{k: v for k, v in attrs.items() if v not in (None, [])},
        "IdentityStoreId": user.identity_store_id, "UserId": user.user_id,
        "UserArn": user.arn, "Revision": str(user.revision), "UserStatus": user.status,
        "CreatedAt": user.created, "UpdatedAt": user.updated}
    wanted = {name: stored[name] for name in extensions if name in stored}
    if wanted:
        out["Extensions"] = wanted
    return out


def wire_group(group: DirectoryGroup) -> dict[str, Any]:
    out: dict[str, Any] = {
        "IdentityStoreId": group.identity_store_id, "GroupId": group.group_id,
        "GroupArn": group.arn, "Revision": str(group.revision),
        "DisplayName": group.display_name, "Description": group.description,
        "CreatedAt": group.created, "UpdatedAt": group.updated,
        "CreatedBy": group.created_by, "UpdatedBy": group.updated_by}
    if group.external_ids:
        out["ExternalIds"] = [{"Issuer": i, "Id": e} for i, e in group.external_ids]
    return out


def wire_membership(m: Membership) -> dict[str, Any]:
    return {"IdentityStoreId": m.identity_store_id, "MembershipId": m.membership_id,
            "MembershipArn": m.arn, "GroupId": m.group_id, "MemberId": {"UserId": m.user_id},
            "CreatedAt": m.created, "UpdatedAt": m.created, "CreatedBy": m.created_by,
            "UpdatedBy": m.created_by}


def _user_ids(user: DirectoryUser) -> dict[str, Any]:
    return {"UserId": user.user_id, "IdentityStoreId": user.identity_store_id,
            "UserArn": user.arn, "Revision": str(user.revision)}


def _group_ids(group: DirectoryGroup) -> dict[str, Any]:
    return {"GroupId": group.group_id, "IdentityStoreId": group.identity_store_id,
            "GroupArn": group.arn, "Revision": str(group.revision)}


def _next(result: dict[str, Any], tag: str, after: str | None) -> dict[str, Any]:
    if after is not None:
        result["NextToken"] = f"{tag}:{after}"
    return result


def _alternate(params: Any) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    given = params["AlternateIdentifier"]
    unique, external = given.get("UniqueAttribute"), given.get("ExternalId")
    if (unique is None) == (external is None):
        raise invalid("AlternateIdentifier takes exactly one of ExternalId and "
                      "UniqueAttribute.")
    return unique, None if external is None else (external["Issuer"], external["Id"])


def _unique_value(unique: dict[str, Any]) -> str:
    value = unique.get("AttributeValue")
    if not isinstance(value, str):
        raise invalid(f"The value of {unique['AttributePath'][:255]} must be a string.")
    return value


# -- the actions ------------------------------------------------------------------------------

def operations(directory: Directory, authz: Authorizer) -> list[JsonOperation]:
    registry = JsonRegistry(IDENTITY_STORE, model)

    def action(name: str) -> Callable[[Callable[[Call, Instance], Awaitable[Result]]], None]:
        """Register a handler that gets the caller's instance, authorized; every error it
        raises carries the request's id."""
        def register(handler: Callable[[Call, Instance], Awaitable[Result]]) -> None:
            async def run(call: Call) -> Result:
                try:
                    account = call.principal.account_id
                    store = _store_id(call.params["IdentityStoreId"])
                    await authz.check(
                        call.principal, f"identitystore:{call.action}",
                        f"arn:{arn.PARTITION}:identitystore::{account}:identitystore/{store}",
                        source_ip=call.source_ip, user_agent=call.user_agent,
                        secure=call.secure)
                    instance = await directory.instance(account, call.params["IdentityStoreId"])
                    return await handler(call, instance)
                except StoreError as exc:
                    exc.request_id = call.request_id
                    raise
            registry.action(name)(run)
        return register

    # Users.

    @action("CreateUser")
    async def create_user(call: Call, instance: Instance) -> Result:
        attrs = {k: v for k, v in call.params.items() if k != "IdentityStoreId"}
        if "Extensions" in attrs:
            attrs["Extensions"] = _extensions(attrs["Extensions"])
        user = await directory.create_user(instance, attrs, call.principal.arn)
        return _user_ids(user)

    @action("DescribeUser")
    async def describe_user(call: Call, instance: Instance) -> Result:
        user = await directory.describe_user(instance, _id(call.params["UserId"], "user"))
        return wire_user(user, call.params.get("Extensions", ()))

    @action("UpdateUser")
    async def update_user(call: Call, instance: Instance) -> Result:
        p = call.params
        return _user_ids(await directory.update_user(
            instance, _id(p["UserId"], "user"), changes(p["Operations"], user=True),
            p.get("Revision"), call.principal.arn))

    @action("DeleteUser")
    async def delete_user(call: Call, instance: Instance) -> Result:
        await directory.delete_user(instance, _id(call.params["UserId"], "user"),
                                    call.params.get("Revision"))
        return None

    @action("ListUsers")
    async def list_users(call: Call, instance: Instance) -> Result:
        p = call.params
        name = None
        for f in p.get("Filters", []):
            if f["AttributePath"].lower() != "username":
                raise invalid(f"ListUsers filters on userName, not {f['AttributePath'][:255]}.")
            name = f["AttributeValue"]
        users, after = await directory.list_users(
            instance, user_name=name, limit=_limit(p), after=_token(p.get("NextToken"), "u"))
        return _next({"Users": [wire_user(u, p.get("Extensions", ())) for u in users]},
                     "u", after)

    @action("GetUserId")
    async def get_user_id(call: Call, instance: Instance) -> Result:
        unique, external = _alternate(call.params)
        if unique is not None:
            path = unique["AttributePath"].lower()
            if path not in ("username", "emails.value"):
                raise invalid("A user's unique attribute is userName or emails.value.")
            user_id = await directory.user_id_by(
                instance, path="userName" if path == "username" else "emails.value",
                value=_unique_value(unique))
        else:
            user_id = await directory.user_id_by(instance, external=external)
        return {"UserId": user_id, "IdentityStoreId": instance.identity_store_id,
                "UserArn": f"arn:{arn.PARTITION}:identitystore:::user/{user_id}"}

    # Groups.

    @action("CreateGroup")
    async def create_group(call: Call, instance: Instance) -> Result:
        attrs = {k: v for k, v in call.params.items() if k != "IdentityStoreId"}
        group = await directory.create_group(instance, attrs, call.principal.arn)
        return _group_ids(group)

    @action("DescribeGroup")
    async def describe_group(call: Call, instance: Instance) -> Result:
        return wire_group(await directory.group(instance, _id(call.params["GroupId"], "group")))

    @action("UpdateGroup")
    async def update_group(call: Call, instance: Instance) -> Result:
        p = call.params
        return _group_ids(await directory.update_group(
            instance, _id(p["GroupId"], "group"), changes(p["Operations"], user=False),
            p.get("Revision"), call.principal.arn))

    @action("DeleteGroup")
    async def delete_group(call: Call, instance: Instance) -> Result:
        await directory.delete_group(instance, _id(call.params["GroupId"], "group"),
                                     call.params.get("Revision"))
        return None

    @action("ListGroups")
    async def list_groups(call: Call, instance: Instance) -> Result:
        p = call.params
        name = None
        for f in p.get("Filters", []):
            if f["AttributePath"].lower() != "displayname":
                raise invalid("ListGroups filters on displayName, not "
                              f"{f['AttributePath'][:255]}.")
            name = f["AttributeValue"]
        groups, after = await directory.list_groups(
            instance, display_name=name, limit=_limit(p), after=_token(p.get("NextToken"), "g"))
        return _next({"Groups": [wire_group(g) for g in groups]}, "g", after)

    @action("GetGroupId")
    async def get_group_id(call: Call, instance: Instance) -> Result:
        unique, external = _alternate(call.params)
        if unique is not None:
            if unique["AttributePath"].lower() != "displayname":
                raise invalid("A group's unique attribute is displayName.")
            group_id = await directory.group_id_by(instance,
                                                   display_name=_unique_value(unique))
        else:
            group_id = await directory.group_id_by(instance, external=external)
        return {"GroupId": group_id, "IdentityStoreId": instance.identity_store_id,
                "GroupArn": f"arn:{arn.PARTITION}:identitystore:::group/{group_id}"}

    # Memberships.

    @action("CreateGroupMembership")
    async def create_membership(call: Call, instance: Instance) -> Result:
        made = await directory.create_membership(
            instance, _id(call.params["GroupId"], "group"), _member(call.params),
            call.principal.arn)
        return {"MembershipId": made.membership_id, "IdentityStoreId": made.identity_store_id,
                "MembershipArn": made.arn}

    @action("DeleteGroupMembership")
    async def delete_membership(call: Call, instance: Instance) -> Result:
        await directory.delete_membership(
            instance, _id(call.params["MembershipId"], "membership"))
        return None

    @action("DescribeGroupMembership")
    async def describe_membership(call: Call, instance: Instance) -> Result:
        found = await directory.membership(
            instance, _id(call.params["MembershipId"], "membership"))
        return wire_membership(found)

    @action("ListGroupMemberships")
    async def list_memberships(call: Call, instance: Instance) -> Result:
        p = call.params
        found, after = await directory.members(instance, _id(p["GroupId"], "group"),
                                               _limit(p), _token(p.get("NextToken"), "m"))
        return _next({"GroupMemberships": [wire_membership(m) for m in found]}, "m", after)

    @action("ListGroupMembershipsForMember")
    async def memberships_of(call: Call, instance: Instance) -> Result:
        p = call.params
        found, after = await directory.memberships_of(instance, _member(p), _limit(p),
                                                      _token(p.get("NextToken"), "f"))
        return _next({"GroupMemberships": [wire_membership(m) for m in found]}, "f", after)

    @action("IsMemberInGroups")
    async def is_member(call: Call, instance: Instance) -> Result:
        user_id = _member(call.params)
        await directory.describe_user(instance, user_id)
        # Effective membership: in the group, or in a group nested in it (docs: nested
        # groups, which only SCIM makes).
        groups = set(await directory.group_ids_of(instance.account_id,
                                                  instance.identity_store_id, user_id))
        results = [{"GroupId": given, "MemberId": {"UserId": user_id},
                    "MembershipExists": _id(given, "group") in groups}
                   for given in call.params["GroupIds"]]
        return {"Results": results}

    @action("GetGroupMembershipId")
    async def membership_id(call: Call, instance: Instance) -> Result:
        group_id, user_id = _id(call.params["GroupId"], "group"), _member(call.params)
        found = await directory.membership_of(instance, group_id, user_id)
        if found is None:
            raise missing("GROUP_MEMBERSHIP")
        return {"MembershipId": found.membership_id,
                "IdentityStoreId": instance.identity_store_id, "MembershipArn": found.arn}

    return registry.operations
