"""Authorization of every IAM and STS action, by AWS's policy evaluation logic.

``Authorizer.check`` gathers what applies to the caller — its identity-based policies, its
permissions boundary, its session policies — and, for actions on a resource with a policy of its
own (a role's trust policy), that policy; builds the request context; evaluates; and raises
AccessDenied with AWS's message and an encoded authorization message that
DecodeAuthorizationMessage opens for whoever may read it.

Before any policy, the rules AWS fixes for temporary credentials apply:

* no session credentials may call GetSessionToken or GetFederationToken;
* GetSessionToken credentials may not call IAM without multi-factor authentication, nor any
  STS action but AssumeRole and GetCallerIdentity;
* GetFederationToken credentials may call no IAM action and no STS action but
  GetCallerIdentity.

A console session of the broker's own sign-in (``SessionKind.CONSOLE``) acts as its user, as
AWS's console does: the user's policies decide, with aws:MultiFactorAuthPresent saying whether
the sign-in used MFA.

The account's root user may do everything in its account — but service control policies bind
it: a member account of an organization with SCPs enabled has, for every principal, root
included, the SCPs of each level from the organization's root down to the account (never the
management account's). Requests on a role (STS's AssumeRole*) meet the resource control
policies of the role's account likewise. The organization condition keys (aws:PrincipalOrgID,
aws:PrincipalOrgPaths, aws:ResourceOrgID, aws:ResourceOrgPaths, aws:ResourceAccount) are in
every request's context where they apply.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from broker.aws.errors import AccessDenied
from broker.clock import Clock, iso8601
from broker.errors import SealError
from broker.iam.permissions import IdentitySide, Permissions
from broker.keyring import Keyring
from broker.organizations import root_tasks
from broker.policy.context import Context
from broker.policy.document import Policy, PolicyKind, RequestPrincipal
from broker.policy.evaluate import Decision, Outcome, PolicySet, Request, evaluate
from broker.principal import Principal, PrincipalType
from broker.sts.tokens import Session, SessionKind

if TYPE_CHECKING:
    from broker.organizations.guard import Governed, OrgGuard

UNCHECKED = frozenset({"sts:GetCallerIdentity", "sts:GetSessionToken"})
NOT_WITH_SESSIONS = frozenset({"sts:GetSessionToken", "sts:GetFederationToken"})
SESSION_TOKEN_STS = frozenset({"sts:GetCallerIdentity", "sts:AssumeRole"})
MESSAGE_PURPOSE = "authorization-message"


class Authorizer:
    def __init__(self, permissions: Permissions, keyring: Keyring, clock: Clock) -> None:
        self.permissions = permissions
        self._keyring = keyring
        self._clock = clock
        # Organizations' answers (SCPs, RCPs, the organization keys); None: no organizations.
        self.guard: OrgGuard | None = None

    async def governed(self, account: str) -> Governed | None:
        """The account's place in an organization, if it has one."""
        return None if self.guard is None else await self.guard.of(account)

    async def check(self, caller: Principal, action: str, resource: str, *,
                    source_ip: str | None = None, user_agent: str | None = None,
                    secure: bool = False, context: Mapping[str, str | list[str]] | None = None,
                    resource_policies: tuple[Policy, ...] = (),
                    resource_account: str | None = None,
                    requires_resource_policy: bool = False) -> Decision:
        """The decision, if it allows; AccessDenied otherwise."""
        _fixed_rules(caller, action, resource)
        if action in UNCHECKED and not resource_policies:
            return Decision(Outcome.ALLOW)
        found = await self.policy_set(caller)
        if found is None:
            # The user or role the credentials speak for was deleted (or deleted and made
            # again: another unique id): its sessions keep nothing, whatever any policy says.
            raise AccessDenied(f"User: {caller.arn} is not authorized to perform: {action} on "
                               f"resource: {resource} because no identity-based policy allows "
                               f"the {action} action")
        policies, tags = found
        ctx = request_context(caller, self._clock.now(), tags, source_ip=source_ip,
                              user_agent=user_agent, secure=secure)
        rcp = None
        if self.guard is not None:
            ctx = ctx.with_values(await self._org_keys(caller, resource_account))
            if action.startswith("sts:") and ":role/" in resource:
                owner = await self.governed(resource_account or caller.account_id)
                rcp = owner.rcp if owner is not None else None
        if context:
            ctx = ctx.with_values(context)
        request = Request(principal=request_principal(caller), action=action,
                          resource=resource, context=ctx, resource_account=resource_account,
                          requires_resource_policy=requires_resource_policy)
        policies = PolicySet(identity=policies.identity, boundary=policies.boundary,
                             session=policies.session, scp=policies.scp, rcp=rcp,
                             root=policies.root, resource=resource_policies)
        decision = evaluate(policies, request)
        if not decision.allowed:
            raise self.denied(caller, request, decision)
        return decision

    async def revoked(self, caller: Principal, action: str = "signin:UseConsole",
                      resource: str = "*", *, source_ip: str | None = None,
                      user_agent: str | None = None, secure: bool = False) -> bool:
        """Whether the caller may no longer act at all through ``action``: the user or role it
        speaks for is gone, or a policy denies the action explicitly — as AWS's revoke-sessions
        policy does for every action of sessions issued before a time. No allow is needed:
        this is how the console and the gateway tell a live session from a revoked one."""
        found = await self.policy_set(caller)
        if found is None:
            return True
        policies, tags = found
        ctx = request_context(caller, self._clock.now(), tags, source_ip=source_ip,
                              user_agent=user_agent, secure=secure)
        if self.guard is not None:
            ctx = ctx.with_values(await self._org_keys(caller, None))
        decision = evaluate(policies, Request(principal=request_principal(caller),
                                              action=action, resource=resource, context=ctx))
        # Only an explicit deny revokes, an SCP's included: signin:UseConsole is the broker's
        # own action, which no allow-list SCP written for AWS names (and AWS's SCPs do not
        # govern authentication either).
        return decision.outcome is Outcome.EXPLICIT_DENY

    async def _org_keys(self, caller: Principal, resource_account: str | None
                        ) -> dict[str, str | list[str]]:
        """aws:PrincipalOrgID and …Paths, aws:ResourceAccount, aws:ResourceOrgID and …Paths."""
        keys: dict[str, str | list[str]] = {}
        mine = await self.governed(caller.account_id)
        if mine is not None:
            keys.update(mine.principal_keys())
        owner_account = resource_account or caller.account_id
        keys["aws:ResourceAccount"] = owner_account
        owner = mine if owner_account == caller.account_id else \
            await self.governed(owner_account)
        if owner is not None:
            keys.update(owner.resource_keys())
        return keys

    async def policy_set(self, caller: Principal
                         ) -> tuple[PolicySet, tuple[tuple[str, str], ...]] | None:
        """The caller's identity side as a PolicySet, and the tags aws:PrincipalTag reads;
        None when the user or role the caller speaks for no longer exists."""
        found = await self._identity_set(caller)
        if found is None or self.guard is None:
            return found
        governed = await self.governed(caller.account_id)
        if governed is None or governed.scp is None:
            return found
        return replace(found[0], scp=governed.scp), found[1]

    async def _identity_set(self, caller: Principal
                            ) -> tuple[PolicySet, tuple[tuple[str, str], ...]] | None:
        session = caller.session
        if caller.type is PrincipalType.ACCOUNT and (
                session is None or session.kind is not SessionKind.ROOT_TASK):
            return PolicySet(root=True), ()
        if session is None:
            side = await self.permissions.of_user(caller.account_id, caller.user_id)
            return (_set(side), _tags(side)) if side.exists else None
        if session.kind in (SessionKind.SESSION_TOKEN, SessionKind.CONSOLE):
            side = await self.permissions.of_user(caller.account_id, session.source_id)
            return (_set(side), _tags(side)) if side.exists else None
        if session.kind is SessionKind.ROOT_TASK:
            # The member account's root user, narrowed to its task policy.
            task = root_tasks.TASKS.get(session.policy_arns[0]) if session.policy_arns else None
            if task is None:
                return None
            return (PolicySet(root=True, session=(self.permissions.compile(
                task, PolicyKind.SESSION, session.policy_arns[0]),)), ())
        if session.kind is SessionKind.FEDERATED_USER:
            if session.source_id == session.account_id:  # made by the root user
                base = PolicySet(root=True)
            else:
                side = await self.permissions.of_user(session.account_id, session.source_id)
                if not side.exists:
                    return None
                base = _set(side)
            return (PolicySet(identity=base.identity, boundary=base.boundary, root=base.root,
                              session=await self._session_policies(session)),
                    tuple(session.tags))
        # An assumed role: the role's policies, narrowed by the session's.
        role_name = session.source_arn.rsplit("/", 1)[-1]
        side = await self.permissions.of_role(session.account_id, role_name, session.source_id)
        if not side.exists:
            return None
        session_policies = await self._session_policies(session) \
            if session.policy is not None or session.policy_arns else None
        tags = {k.lower(): (k, v) for k, v in _tags(side)}
        tags.update({k.lower(): (k, v) for k, v in session.tags})  # session tags win
        return (PolicySet(identity=side.policies, boundary=side.boundary,
                          session=session_policies), tuple(tags.values()))

    async def _session_policies(self, session: Session) -> tuple[Policy, ...]:
        found = []
        if session.policy is not None:
            found.append(self.permissions.compile(session.policy, PolicyKind.SESSION,
                                                  "session/inline"))
        for arn in session.policy_arns:
            managed = await self.permissions.managed_by_arn(session.account_id, arn,
                                                            PolicyKind.SESSION)
            if managed is not None:
                found.append(managed)
        return tuple(found)

    # -- refusals -------------------------------------------------------------------------------

    def denied(self, caller: Principal, request: Request, decision: Decision) -> AccessDenied:
        reason = decision.reason(request.action)
        encoded = self.encode(caller, request, decision)
        return AccessDenied(
            f"User: {caller.arn} is not authorized to perform: {request.action} on resource: "
            f"{request.resource} {reason}. Encoded authorization failure message: {encoded}"
        )

    def encode(self, caller: Principal, request: Request, decision: Decision) -> str:
        """The decision, sealed: only DecodeAuthorizationMessage in this account opens it."""
        doc = {
            "allowed": decision.allowed,
            "explicitDeny": decision.outcome is Outcome.EXPLICIT_DENY,
            "decidedBy": decision.decided_by.value if decision.decided_by else None,
            "reason": decision.reason(request.action),
            "matchedStatements": {"items": [
                {"policy": m.policy, "policyType": m.kind.value, "statementIndex": m.index,
                 "sid": m.sid, "effect": m.effect.value} for m in decision.statements]},
            "missingContextKeys": sorted(decision.missing),
            "context": {
                "principal": {"id": caller.user_id, "name": caller.name, "arn": caller.arn},
                "action": request.action,
                "resource": request.resource,
                "conditions": {"items": [
                    {"key": key, "values": {"items": [{"value": v} for v in values]}}
                    for key, values in ((k, request.context[k]) for k in request.context)]},
            },
        }
        plaintext = json.dumps(doc, separators=(",", ":")).encode()
        blob = self._keyring.seal(plaintext, purpose=MESSAGE_PURPOSE, aad=caller.account_id)
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def decode(self, encoded: str, account: str) -> str | None:
        """The decoded message, if it was encoded for this account; None otherwise."""
        try:
            blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            plaintext = self._keyring.unseal(blob, purpose=MESSAGE_PURPOSE, aad=account)
        except (ValueError, SealError):
            return None
        return plaintext.decode()


def _fixed_rules(caller: Principal, action: str, resource: str) -> None:
    session = caller.session
    if session is not None and action in NOT_WITH_SESSIONS:
        raise AccessDenied(f"Cannot call {action.split(':', 1)[1]} with session credentials")
    service = action.split(":", 1)[0]
    if session is None or action == "sts:GetCallerIdentity":
        return
    if session.kind is SessionKind.ROOT_TASK and service == "iam" and \
            resource not in ("*", f"arn:aws:iam::{caller.account_id}:root"):
        # A root task is about the root user's own credentials, whatever its policy names.
        raise AccessDenied(f"User: {caller.arn} is not authorized to perform: {action} on "
                           f"resource: {resource} because an AssumeRoot session acts on the "
                           "root user's own credentials only")
    if session.kind is SessionKind.FEDERATED_USER and service in ("iam", "sts"):
        raise AccessDenied(f"User: {caller.arn} is not authorized to perform: {action} on "
                           f"resource: {resource}")
    if session.kind is SessionKind.SESSION_TOKEN:
        if service == "iam" and not session.mfa:
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: {action} on resource: "
                f"{resource} because session credentials from GetSessionToken cannot call IAM "
                "without multi-factor authentication")
        if service == "sts" and action not in SESSION_TOKEN_STS:
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: {action} on resource: "
                f"{resource} because session credentials from GetSessionToken may call no STS "
                "action but AssumeRole and GetCallerIdentity")


def _set(side: IdentitySide) -> PolicySet:
    return PolicySet(identity=side.policies, boundary=side.boundary)


def _tags(side: IdentitySide) -> tuple[tuple[str, str], ...]:
    return tuple((t.key, t.value) for t in side.tags)


def request_principal(caller: Principal) -> RequestPrincipal:
    session = caller.session
    role_arn = None
    if session is not None and session.kind is SessionKind.ASSUMED_ROLE:
        role_arn = session.source_arn
    # The unique id behind the caller: the user's (also for its sessions), or the role's.
    unique_id = caller.user_id if session is None else session.source_id
    return RequestPrincipal(arn=caller.arn, account=caller.account_id, type=caller.type.value,
                            role_arn=role_arn, ids=frozenset({unique_id}))


def request_context(caller: Principal, now: datetime,
                    principal_tags: Iterable[tuple[str, str]], *,
                    source_ip: str | None = None, user_agent: str | None = None,
                    secure: bool = False) -> Context:
    """The global condition keys AWS puts in every request's context."""
    ctx = Context({
        "aws:CurrentTime": iso8601(now),
        "aws:EpochTime": str(int(now.timestamp())),
        "aws:SecureTransport": "true" if secure else "false",
        "aws:PrincipalAccount": caller.account_id,
        "aws:PrincipalType": caller.type.value,
        "aws:userid": caller.user_id,
    })
    session = caller.session
    principal_arn = caller.arn
    if session is not None and session.kind is SessionKind.ASSUMED_ROLE:
        principal_arn = session.source_arn  # aws:PrincipalArn of a role session is the role
    ctx.set("aws:PrincipalArn", principal_arn)
    if caller.type is PrincipalType.USER:
        ctx.set("aws:username", caller.name)
    if source_ip:
        ctx.set("aws:SourceIp", source_ip)
    if user_agent:
        ctx.set("aws:UserAgent", user_agent)
    for key, value in principal_tags:
        ctx.set(f"aws:PrincipalTag/{key}", value)
    if session is not None:
        ctx.set("aws:TokenIssueTime", iso8601(session.issued))
        ctx.set("aws:MultiFactorAuthPresent", "true" if session.mfa else "false")
        if session.mfa:
            ctx.set("aws:MultiFactorAuthAge", str(int(now.timestamp()) - session.issued_at))
        if session.source_identity:
            ctx.set("aws:SourceIdentity", session.source_identity)
        if session.kind is SessionKind.ROOT_TASK:
            ctx.set("aws:AssumedRoot", "true")
    return ctx
