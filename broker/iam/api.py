"""IAM actions of the Query protocol: input shapes (as in AWS's model) and result rendering.

Every action is authorized before it runs (broker/authz.py) against the resource ARN AWS uses
for it: the user for user and access-key actions, ``user/`` for ListUsers.
"""

from __future__ import annotations

from typing import Any

from broker.authz import authorize
from broker.aws import arn
from broker.aws.errors import AccessDenied, InvalidInput, NoSuchEntity
from broker.aws.query import IAM, Call, Operation, Result
from broker.aws.shapes import Integer, String, optional, required, struct
from broker.aws.tags import tagListType
from broker.iam.entities import ACTIVE, INACTIVE, AccessKey, Tag
from broker.iam.lastused import LastUsedRecorder
from broker.iam.service import IamService, Page
from broker.principal import Principal, PrincipalType

# AWS's shape names, with the constraints of the IAM service model.
pathType = String(min=1, max=512, pattern=r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)")
pathPrefixType = String(min=1, max=512, pattern=r"\u002F[\u0021-\u007F]*")
userNameType = String(min=1, max=64, pattern=r"[\w+=,.@-]+")
existingUserNameType = String(min=1, max=128, pattern=r"[\w+=,.@-]+")
arnType = String(min=20, max=2048)
markerType = String(min=1, max=320, pattern=r"[\u0020-\u00FF]+")
maxItemsType = Integer(min=1, max=1000)
accessKeyIdType = String(min=16, max=128, pattern=r"[\w]+")
statusType = String(enum=("Active", "Inactive", "Expired"))

CreateUserRequest = struct(
    optional("Path", pathType),
    required("UserName", userNameType),
    optional("PermissionsBoundary", arnType),
    optional("Tags", tagListType),
)
GetUserRequest = struct(optional("UserName", existingUserNameType))
ListUsersRequest = struct(
    optional("PathPrefix", pathPrefixType),
    optional("Marker", markerType),
    optional("MaxItems", maxItemsType),
)
DeleteUserRequest = struct(required("UserName", existingUserNameType))
CreateAccessKeyRequest = struct(optional("UserName", existingUserNameType))
ListAccessKeysRequest = struct(
    optional("UserName", existingUserNameType),
    optional("Marker", markerType),
    optional("MaxItems", maxItemsType),
)
UpdateAccessKeyRequest = struct(
    optional("UserName", existingUserNameType),
    required("AccessKeyId", accessKeyIdType),
    required("Status", statusType),
)
DeleteAccessKeyRequest = struct(
    optional("UserName", existingUserNameType),
    required("AccessKeyId", accessKeyIdType),
)
GetAccessKeyLastUsedRequest = struct(required("AccessKeyId", accessKeyIdType))


def _tags(params: dict[str, Any] | Any) -> tuple[Tag, ...]:
    return tuple(Tag(t["Key"], t["Value"]) for t in params.get("Tags", []))


def _paged(page: Page, name: str, render: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: [render(item) for item in page.items],
                           "IsTruncated": page.marker is not None}
    if page.marker is not None:
        out["Marker"] = page.marker
    return out


def _key_metadata(key: AccessKey) -> dict[str, Any]:
    return {
        "UserName": key.owner_name,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created,
    }


def operations(iam: IamService, last_used: LastUsedRecorder) -> list[Operation]:
    async def named_user(account: str, name: str) -> tuple[str, str]:
        """The user's name as created and its ARN, for authorization. For a user that does not
        exist, the name as given and the ARN it would have at the root path: the action then
        fails with NoSuchEntity, if the caller may perform it at all."""
        try:
            user = await iam.get_user(account, name)
        except NoSuchEntity:
            return name, arn.user(account, "/", name)
        return user.name, user.arn

    async def user_arn(account: str, name: str) -> str:
        return (await named_user(account, name))[1]

    async def target(caller: Principal, user_name: str | None) -> tuple[str | None, str]:
        """The user an access-key action is about, and its ARN: the named user, else the
        caller (None for the root user)."""
        if user_name is not None:
            return await named_user(caller.account_id, user_name)
        if caller.type is PrincipalType.USER:
            return caller.name, caller.arn
        if caller.is_root:
            return None, caller.arn
        raise InvalidInput("Must specify userName when calling with non-User credentials")

    async def create_user(call: Call) -> Result:
        caller, p = call.principal, call.params
        path = p.get("Path", "/")
        authorize(caller, "iam:CreateUser", arn.user(caller.account_id, path, p["UserName"]))
        user = await iam.create_user(
            caller.account_id, p["UserName"], path=path, tags=_tags(p),
            permissions_boundary=p.get("PermissionsBoundary"),
        )
        return {"User": user.wire()}

    async def get_user(call: Call) -> Result:
        caller, name = call.principal, call.params.get("UserName")
        if name is None:
            authorize(caller, "iam:GetUser", caller.arn)
            if caller.is_root:
                account = await iam.get_account(caller.account_id)
                return {"User": {"UserId": caller.account_id, "Arn": caller.arn,
                                 "CreateDate": account.created}}
            if caller.type is not PrincipalType.USER:
                raise InvalidInput("Must specify userName when calling with non-User credentials")
            name = caller.name
        authorize(caller, "iam:GetUser", await user_arn(caller.account_id, name))
        return {"User": (await iam.get_user(caller.account_id, name)).wire()}

    async def list_users(call: Call) -> Result:
        caller, p = call.principal, call.params
        authorize(caller, "iam:ListUsers", f"arn:aws:iam::{caller.account_id}:user/")
        page = await iam.list_users(caller.account_id, path_prefix=p.get("PathPrefix", "/"),
                                    marker=p.get("Marker"), max_items=p.get("MaxItems", 100))
        return _paged(page, "Users", lambda user: user.wire(listing=True))

    async def delete_user(call: Call) -> Result:
        caller, name = call.principal, call.params["UserName"]
        authorize(caller, "iam:DeleteUser", await user_arn(caller.account_id, name))
        await iam.delete_user(caller.account_id, name)
        return None

    async def create_access_key(call: Call) -> Result:
        caller = call.principal
        name, resource = await target(caller, call.params.get("UserName"))
        authorize(caller, "iam:CreateAccessKey", resource)
        created = await iam.create_access_key(caller.account_id, name)
        return {"AccessKey": {**_key_metadata(created.key),
                              "SecretAccessKey": created.secret_access_key}}

    async def list_access_keys(call: Call) -> Result:
        caller, p = call.principal, call.params
        name, resource = await target(caller, p.get("UserName"))
        authorize(caller, "iam:ListAccessKeys", resource)
        page = await iam.list_access_keys(caller.account_id, name, marker=p.get("Marker"),
                                          max_items=p.get("MaxItems", 100))
        return _paged(page, "AccessKeyMetadata", _key_metadata)

    async def update_access_key(call: Call) -> Result:
        caller, p = call.principal, call.params
        name, resource = await target(caller, p.get("UserName"))
        authorize(caller, "iam:UpdateAccessKey", resource)
        if p["Status"] not in (ACTIVE, INACTIVE):
            raise InvalidInput("An access key's status can only be Active or Inactive.")
        await iam.update_access_key(caller.account_id, p["AccessKeyId"], p["Status"], name)
        return None

    async def delete_access_key(call: Call) -> Result:
        caller, p = call.principal, call.params
        name, resource = await target(caller, p.get("UserName"))
        authorize(caller, "iam:DeleteAccessKey", resource)
        await iam.delete_access_key(caller.account_id, p["AccessKeyId"], name)
        return None

    async def get_access_key_last_used(call: Call) -> Result:
        caller, key_id = call.principal, call.params["AccessKeyId"]
        key = await iam.find_access_key(key_id)
        if key is None or key.account_id != caller.account_id:
            # Say nothing about keys of other accounts, or whether they exist.
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: iam:GetAccessKeyLastUsed "
                f"on resource: access key {key_id}"
            )
        owner = caller.arn if key.user_name is None else await user_arn(
            key.account_id, key.user_name)
        authorize(caller, "iam:GetAccessKeyLastUsed", owner)
        used = last_used.pending(key.account_id, key.access_key_id) or key.last_used
        if used is None:
            detail: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
        else:
            detail = {"LastUsedDate": used.at, "ServiceName": used.service,
                      "Region": used.region}
        return {"UserName": key.owner_name, "AccessKeyLastUsed": detail}

    def new_key(result: Any) -> tuple[str | None, str | None]:
        key = result["AccessKey"]
        return key["AccessKeyId"], key["UserName"]

    return [
        Operation(IAM, "CreateUser", CreateUserRequest, create_user),
        Operation(IAM, "GetUser", GetUserRequest, get_user),
        Operation(IAM, "ListUsers", ListUsersRequest, list_users),
        Operation(IAM, "DeleteUser", DeleteUserRequest, delete_user),
        Operation(IAM, "CreateAccessKey", CreateAccessKeyRequest, create_access_key,
                  issued=new_key),
        Operation(IAM, "ListAccessKeys", ListAccessKeysRequest, list_access_keys),
        Operation(IAM, "UpdateAccessKey", UpdateAccessKeyRequest, update_access_key),
        Operation(IAM, "DeleteAccessKey", DeleteAccessKeyRequest, delete_access_key),
        Operation(IAM, "GetAccessKeyLastUsed", GetAccessKeyLastUsedRequest,
                  get_access_key_last_used),
    ]
