"""IAM actions on users, their access keys, tags, boundaries and login profiles."""

from __future__ import annotations

from typing import Any

from broker.aws import arn
from broker.aws.errors import AccessDenied, InvalidInput, ValidationError
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import (
    IamContext,
    Registry,
    boundary_key,
    entity_context,
    listing_arn,
    paged,
    register_tags_and_boundary,
    request_tags,
    tags_of,
)
from broker.iam.entities import ACTIVE, INACTIVE, USER, AccessKey
from broker.principal import Principal, PrincipalType
from broker.sts.tokens import SessionKind


def _key_metadata(key: AccessKey) -> dict[str, Any]:
    return {
        "UserName": key.owner_name,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created,
    }


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def allow_on_user(call: Call, action: str, name: str,
                            extra: dict[str, Any] | None = None) -> str:
        return await ctx.allow_on(call, USER, action, name, extra)

    async def target(call: Call, action: str, user_name: str | None) -> str | None:
        """The user an access-key or login action is about: the named user, else the caller
        (None for the root user). Authorized."""
        caller: Principal = call.principal
        if user_name is not None:
            return await allow_on_user(call, action, user_name)
        if caller.type is PrincipalType.USER:
            await ctx.allow(call, action, caller.arn)
            return caller.name
        if caller.is_root:
            await ctx.allow(call, action, caller.arn)
            return None
        raise ValidationError("Must specify userName when calling with non-User credentials")

    # -- users ----------------------------------------------------------------------------------

    @ops.action("CreateUser")
    async def create_user(call: Call) -> Result:
        caller, p = call.principal, call.params
        path, tags = p.get("Path", "/"), tags_of(p)
        await ctx.allow(call, "CreateUser", arn.user(caller.account_id, path, p["UserName"]),
                        {**request_tags(tags), **boundary_key(p.get("PermissionsBoundary"))})
        boundary = None
        if "PermissionsBoundary" in p:
            boundary = await iam.policies.reference(caller.account_id, p["PermissionsBoundary"])
        user = await iam.create_user(caller.account_id, p["UserName"], path=path, tags=tags,
                                     boundary=boundary)
        return {"User": user.wire()}

    @ops.action("GetUser")
    async def get_user(call: Call) -> Result:
        caller, name = call.principal, call.params.get("UserName")
        if name is None:
            if not caller.is_root and caller.type is not PrincipalType.USER:
                # No user to be: AWS says so before it asks for any permission.
                raise ValidationError(
                    "Must specify userName when calling with non-User credentials")
            await ctx.allow(call, "GetUser", caller.arn)
            if caller.is_root:
                account = await iam.get_account(caller.account_id)
                return {"User": {"UserId": caller.account_id, "Arn": caller.arn,
                                 "CreateDate": account.created}}
            name = caller.name
        else:
            name = await allow_on_user(call, "GetUser", name)
        return {"User": (await iam.get_user(caller.account_id, name)).wire()}

    @ops.action("ListUsers")
    async def list_users(call: Call) -> Result:
        caller, p = call.principal, call.params
        await ctx.allow(call, "ListUsers", listing_arn(caller.account_id, "user"))
        page = await iam.list_users(caller.account_id, path_prefix=p.get("PathPrefix", "/"),
                                    marker=p.get("Marker"), max_items=p.get("MaxItems", 100))
        return paged(page, "Users", lambda u: u.wire(listing=True))

    @ops.action("UpdateUser")
    async def update_user(call: Call) -> Result:
        caller, p = call.principal, call.params
        name = await allow_on_user(call, "UpdateUser", p["UserName"])
        if "NewPath" in p or "NewUserName" in p:
            # AWS: the caller needs the action on the user as it is and as it will be, so that
            # a path it may manage cannot move a user into one it may not.
            user = await iam.get_user(caller.account_id, name)
            target = arn.user(caller.account_id, p.get("NewPath", user.path),
                              p.get("NewUserName", user.name))
            await ctx.allow(call, "UpdateUser", target,
                            entity_context("UpdateUser", user.tags, user.boundary))
        await iam.update_user(caller.account_id, name, path=p.get("NewPath"),
                              new_name=p.get("NewUserName"))
        return None

    @ops.action("DeleteUser")
    async def delete_user(call: Call) -> Result:
        name = await allow_on_user(call, "DeleteUser", call.params["UserName"])
        await iam.delete_user(call.principal.account_id, name)
        return None

    register_tags_and_boundary(ops, ctx, USER)

    # -- access keys ----------------------------------------------------------------------------

    def new_key(result: Any) -> tuple[str | None, str | None]:
        key = result["AccessKey"]
        return key["AccessKeyId"], key["UserName"]

    @ops.action("CreateAccessKey", issued=new_key)
    async def create_access_key(call: Call) -> Result:
        name = await target(call, "CreateAccessKey", call.params.get("UserName"))
        created = await iam.create_access_key(call.principal.account_id, name)
        return {"AccessKey": {**_key_metadata(created.key),
                              "SecretAccessKey": created.secret_access_key}}

    @ops.action("ListAccessKeys")
    async def list_access_keys(call: Call) -> Result:
        p = call.params
        name = await target(call, "ListAccessKeys", p.get("UserName"))
        page = await iam.list_access_keys(call.principal.account_id, name,
                                          marker=p.get("Marker"),
                                          max_items=p.get("MaxItems", 100))
        return paged(page, "AccessKeyMetadata", _key_metadata)

    @ops.action("UpdateAccessKey")
    async def update_access_key(call: Call) -> Result:
        p = call.params
        name = await target(call, "UpdateAccessKey", p.get("UserName"))
        if p["Status"] not in (ACTIVE, INACTIVE):
            raise InvalidInput("An access key's status can only be Active or Inactive.")
        await iam.update_access_key(call.principal.account_id, p["AccessKeyId"], p["Status"],
                                    name)
        return None

    @ops.action("DeleteAccessKey")
    async def delete_access_key(call: Call) -> Result:
        p = call.params
        name = await target(call, "DeleteAccessKey", p.get("UserName"))
        await iam.delete_access_key(call.principal.account_id, p["AccessKeyId"], name)
        return None

    @ops.action("GetAccessKeyLastUsed")
    async def get_access_key_last_used(call: Call) -> Result:
        caller, key_id = call.principal, call.params["AccessKeyId"]
        # This process's note is read before the store: at that moment the note is still
        # this process's (noted, or being written) or already in the store. Read after, a
        # flush finishing in between would leave it in neither place.
        noted = ctx.last_used.pending(caller.account_id, key_id)
        key = await iam.find_access_key(key_id)
        if key is None or key.account_id != caller.account_id:
            # Say nothing about keys of other accounts, or whether they exist.
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: iam:GetAccessKeyLastUsed "
                f"on resource: access key {key_id}"
            )
        if key.user_name is None:
            await ctx.allow(call, "GetAccessKeyLastUsed", arn.root(key.account_id))
        else:
            await allow_on_user(call, "GetAccessKeyLastUsed", key.user_name)
        used = noted or key.last_used
        if used is None:
            detail: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
        else:
            detail = {"LastUsedDate": used.at, "ServiceName": used.service,
                      "Region": used.region}
        return {"UserName": key.owner_name, "AccessKeyLastUsed": detail}

    # -- login profiles -------------------------------------------------------------------------

    def own_name(call: Call) -> str:
        """The user a login action is about when it names none: the calling IAM user."""
        name = call.params.get("UserName")
        if name is not None:
            return str(name)
        if call.principal.type is not PrincipalType.USER:
            raise ValidationError("Must specify userName when calling with non-User credentials")
        return call.principal.name

    def for_root(call: Call) -> bool:
        """A login action naming no user in an AssumeRoot session: about the root user's own
        password (the audit and delete tasks)."""
        session = call.principal.session
        return call.params.get("UserName") is None and session is not None and \
            session.kind is SessionKind.ROOT_TASK

    @ops.action("CreateLoginProfile")
    async def create_login_profile(call: Call) -> Result:
        p = call.params
        name = await allow_on_user(call, "CreateLoginProfile", own_name(call))
        if "Password" not in p:
            raise InvalidInput("A password is required: this broker does not make them up.")
        user = await iam.logins.create(call.principal.account_id, name, p["Password"],
                                       p.get("PasswordResetRequired", False))
        assert user.login is not None
        return {"LoginProfile": {"UserName": user.name, "CreateDate": user.login.created,
                                 "PasswordResetRequired": user.login.reset_required}}

    @ops.action("GetLoginProfile")
    async def get_login_profile(call: Call) -> Result:
        caller = call.principal
        if for_root(call):
            await ctx.allow(call, "GetLoginProfile", caller.arn)
            root = await iam.logins.root_profile(caller.account_id)
            return {"LoginProfile": {"UserName": "",
                                     "CreateDate": root.password_changed or root.created,
                                     "PasswordResetRequired": False}}
        name = await allow_on_user(call, "GetLoginProfile", own_name(call))
        user, profile = await iam.logins.get(caller.account_id, name)
        return {"LoginProfile": {"UserName": user.name, "CreateDate": profile.created,
                                 "PasswordResetRequired": profile.reset_required}}

    @ops.action("UpdateLoginProfile")
    async def update_login_profile(call: Call) -> Result:
        p = call.params
        name = await allow_on_user(call, "UpdateLoginProfile", own_name(call))
        await iam.logins.update(call.principal.account_id, name, p.get("Password"),
                                p.get("PasswordResetRequired"))
        return None

    @ops.action("DeleteLoginProfile")
    async def delete_login_profile(call: Call) -> Result:
        if for_root(call):
            await ctx.allow(call, "DeleteLoginProfile", call.principal.arn)
            await iam.logins.delete_root(call.principal.account_id)
            return None
        name = await allow_on_user(call, "DeleteLoginProfile", own_name(call))
        await iam.logins.delete(call.principal.account_id, name)
        return None

    @ops.action("ChangePassword")
    async def change_password(call: Call) -> Result:
        caller, p = call.principal, call.params
        # The user's own long-term keys, or its console session (the console changes a
        # password this way); no other temporary credentials.
        console = caller.session is not None and caller.session.kind is SessionKind.CONSOLE
        if caller.type is not PrincipalType.USER or (caller.temporary and not console):
            raise InvalidInput("Only IAM users can change their own password with "
                               "ChangePassword.")
        await ctx.allow(call, "ChangePassword", caller.arn)
        await iam.logins.change_password(caller.account_id, caller.name, p["OldPassword"],
                                         p["NewPassword"])
        return None

    return ops.operations
