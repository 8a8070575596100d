"""The access portal's API (``sso``: rest-json, unsigned; the bearer token in
``x-amz-sso_bearer_token``) — ListAccounts, ListAccountRoles, GetRoleCredentials, Logout —
what botocore's SSO credential provider and ``aws sso`` call with an access token of
broker/identitycenter/oauth.py.

A token that is unknown, expired or logged out, whose grant ended, whose user was deleted or
disabled, or whose instance is gone is UnauthorizedException (401), as AWS's. A role the user
is not assigned is ResourceNotFoundException (404): the model's error for what does not
exist, and it says nothing of whether the account or the role exist for anyone else.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from broker.audit import AuditEvent, AuditSink
from broker.aws.query import Call, Result
from broker.aws.restjson import RestError, RestOperation, RestRegistry, RestService
from broker.clock import Clock
from broker.identitycenter import portal_model
from broker.identitycenter.access import Access, NotAssigned
from broker.identitycenter.directory import Directory
from broker.identitycenter.instances import Instance, Instances
from broker.identitycenter.oauth import Grant, OAuth
from broker.identitycenter.sources import IdentitySources

STATUSES = {"InvalidRequestException": 400, "UnauthorizedException": 401,
            "TooManyRequestsException": 429, "ResourceNotFoundException": 404,
            "InternalServerException": 500}
DEFAULT_PAGE = 20


def _body(error: RestError) -> dict[str, Any]:
    return {"message": error.message}


SSO = RestService("sso", STATUSES, _body)


def _unauthorized() -> RestError:
    return RestError("UnauthorizedException", "Session token not found or invalid")


def _page(items: Sequence[Any], params: dict[str, Any], name: str) -> dict[str, Any]:
    """``nextToken`` is the index of the first item not shown yet."""
    token = params.get("nextToken")
    start = 0
    if token is not None:
        if not (token.isascii() and token.isdigit() and len(token) < 10):
            raise RestError("InvalidRequestException",
                            "The nextToken is not one this service returned.")
        start = int(token)
    limit = params.get("maxResults") or DEFAULT_PAGE
    out: dict[str, Any] = {name: list(items[start:start + limit])}
    if start + limit < len(items):
        out["nextToken"] = str(start + limit)
    return out


def operations(oauth: OAuth, instances: Instances, directory: Directory, access: Access,
               audit: AuditSink, clock: Clock, *,
               sources: IdentitySources | None = None) -> list[RestOperation]:
    registry = RestRegistry(SSO, portal_model)
    action = registry.action

    def audited(call: Call, outcome: str, *, account: str | None, grant: Grant | None = None,
                user_name: str | None = None, session_arn: str | None = None,
                issued: str | None = None, error: RestError | None = None) -> None:
        """The line of credentials issued or refused. The caller is an Identity Center user,
        not an IAM principal: userIdentity is CloudTrail's for the portal's events (type
        Unknown, the user's name, the account of the instance) with the user's id and store
        (``onBehalfOf``), never an ARN it does not have; the session issued is IssuedTo."""
        identity: dict[str, Any] = {"type": "Unknown"}
        if grant is not None:
            identity["accountId"] = grant.account_id
            if user_name is not None:
                identity["userName"] = user_name
            identity["onBehalfOf"] = {
                "userId": grant.user_id,
                "identityStoreArn": f"arn:aws:identitystore::{grant.account_id}:identitystore/"
                                    f"{grant.identity_store_id}"}
        audit.emit(AuditEvent(
            time=clock.now(), event=call.action, outcome=outcome, request_id=call.request_id,
            source_ip=call.source_ip, user_agent=call.user_agent, identity=identity,
            account=account, access_key_id=issued, subject=session_arn,
            error_code=error.code if error else None,
            error_message=error.message if error else None, service="sso",
            parameters={k: v for k, v in call.params.items() if k != "accessToken"}))

    async def signed_in(call: Call) -> tuple[Grant, Instance]:
        grant = await oauth.resolve(call.params["accessToken"])
        if grant is None:
            raise _unauthorized()
        instance = await instances.by_store(grant.identity_store_id)
        if instance is None or instance.account_id != grant.account_id:
            raise _unauthorized()
        # A sign-in made under another identity source has ended, as its portal session has
        # (switching the source ends every sign-in of the instance).
        if sources is not None and not hmac.compare_digest(
                grant.source, (await sources.get(instance)).stamp):
            raise _unauthorized()
        return grant, instance

    @action("ListAccounts")
    async def list_accounts(call: Call) -> Result:
        grant, instance = await signed_in(call)
        accounts = await access.accounts(instance, grant.user_id)
        return _page([{"accountId": a.account_id, "accountName": a.account_name,
                       "emailAddress": a.email_address} for a in accounts],
                     dict(call.params), "accountList")

    @action("ListAccountRoles")
    async def list_account_roles(call: Call) -> Result:
        grant, instance = await signed_in(call)
        account = call.params["accountId"]
        roles = await access.roles(instance, grant.user_id, account)
        return _page([{"roleName": r, "accountId": account} for r in roles],
                     dict(call.params), "roleList")

    @action("GetRoleCredentials")
    async def get_role_credentials(call: Call) -> Result:
        account = call.params["accountId"]
        try:
            grant, instance = await signed_in(call)
        except RestError as exc:
            audited(call, "refused", account=None, error=exc)
            raise
        user = await directory.active_user(grant.account_id, grant.identity_store_id,
                                           grant.user_id)
        name = user.user_name if user else None
        try:
            if user is None:
                raise _unauthorized()
            try:
                issued = await access.credentials(instance, user, account,
                                                  call.params["roleName"],
                                                  asserted=grant.asserted)
            except NotAssigned as exc:
                raise RestError("ResourceNotFoundException",
                                f"No access: {exc}"[:1024]) from None
        except RestError as exc:
            audited(call, "refused", account=account, grant=grant, user_name=name, error=exc)
            raise
        session = issued.session
        audited(call, "issued", account=account, grant=grant, user_name=name,
                session_arn=session.arn, issued=session.access_key_id)
        return {"roleCredentials": {
            "accessKeyId": session.access_key_id,
            "secretAccessKey": session.secret_access_key,
            "sessionToken": issued.token,
            "expiration": session.expires_at * 1000}}

    @action("Logout")
    async def logout(call: Call) -> Result:
        await signed_in(call)
        await oauth.logout(call.params["accessToken"])
        return None

    return registry.operations
