"""Policy evaluation, as AWS documents it.

1. An explicit Deny in any applicable policy wins: service control policies, resource control
   policies, resource-based policies, identity-based policies, the permissions boundary,
   session policies.
2. Service control policies, when the principal's account has them, must allow (the root user
   included) — at every level of the organization: the root, each OU on the path to the
   account, and the account itself each need an Allow of their own.
3. Resource control policies, when the resource's account has them, must allow likewise at
   every level.
4. Within one account, a resource-based policy that names the caller directly (the user, the
   session, everyone) allows on its own; one that names the caller's role allows within the
   session's boundary and session policies; one that names the whole account delegates to the
   account, whose identity-based policies must then allow. Otherwise the identity-based
   policies must allow, and the permissions boundary and session policies (where there are any)
   too.
5. Across accounts both sides must allow: the caller's identity side (with its boundary and
   session policies) and the resource's resource-based policy.

Some resources can only be used through their resource-based policy (a role through its trust
policy): for them ``Request.requires_resource_policy`` makes a missing grant an implicit deny
even within the account.

The Decision says which statements decided, and why, in the words AWS's AccessDenied uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from broker.frozen import frozen
from broker.policy.context import Context
from broker.policy.document import Effect, Grant, Policy, PolicyKind, RequestPrincipal, Statement


class Outcome(StrEnum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


_PHRASE = {
    PolicyKind.IDENTITY: "identity-based policy",
    PolicyKind.RESOURCE: "resource-based policy",
    PolicyKind.TRUST: "resource-based policy",
    PolicyKind.BOUNDARY: "permissions boundary",
    PolicyKind.SESSION: "session policy",
    PolicyKind.SCP: "service control policy",
    PolicyKind.RCP: "resource control policy",
}


@frozen
class Matched:
    """A statement that took part in a decision."""

    policy: str
    kind: PolicyKind
    index: int
    sid: str | None
    effect: Effect


@frozen
class Decision:
    outcome: Outcome
    statements: tuple[Matched, ...] = ()
    decided_by: PolicyKind | None = None  # the policy type that denied (explicitly or not)
    missing: frozenset[str] = frozenset()  # condition keys the request did not have

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def reason(self, action: str) -> str:
        """AWS's words for why a request was denied, to follow the AccessDenied sentence."""
        if self.decided_by is None:
            return ""
        phrase = _PHRASE[self.decided_by]
        article = "an" if phrase[0] in "aeiou" else "a"
        if self.outcome is Outcome.EXPLICIT_DENY:
            return f"with an explicit deny in {article} {phrase}"
        return f"because no {phrase} allows the {action} action"


@dataclass(frozen=True)
class PolicySet:
    """Every policy that applies to one principal (and, per request, to one resource)."""

    identity: tuple[Policy, ...] = ()
    boundary: Policy | None = None
    session: tuple[Policy, ...] | None = None  # None: not a session with session policies
    # Service control policies by level (the root, each OU down the path, the account):
    # None when the principal's account is governed by none (no organization, the management
    # account, SCPs not enabled).
    scp: tuple[tuple[Policy, ...], ...] | None = None
    # Resource control policies of the resource's account, by level likewise.
    rcp: tuple[tuple[Policy, ...], ...] | None = None
    root: bool = False  # the account's root user: its identity side allows everything
    resource: tuple[Policy, ...] = ()


@frozen
class Request:
    principal: RequestPrincipal
    action: str
    resource: str
    context: Context = field(default_factory=Context)
    resource_account: str | None = None  # default: the principal's account
    requires_resource_policy: bool = False


def evaluate(policies: PolicySet, request: Request) -> Decision:
    # Every group is evaluated in full, in this order, before anything is decided: the
    # condition keys found missing along the way are part of the decision.
    missing: set[str] = set()
    denies: list[Matched] = []
    denied_by: PolicyKind | None = None
    for kind, group in (
        (PolicyKind.SCP, _flat(policies.scp)),
        (PolicyKind.RCP, _flat(policies.rcp)),
        (PolicyKind.RESOURCE, policies.resource),
        (PolicyKind.IDENTITY, policies.identity),
        (PolicyKind.BOUNDARY, (policies.boundary,) if policies.boundary else None),
        (PolicyKind.SESSION, policies.session),
    ):
        if not group:
            continue
        found = _matching(group, request, Effect.DENY, missing)
        if found:
            if denied_by is None:
                denied_by = kind
            denies += [m for m, _ in found]
    if denies:
        return _decision(Outcome.EXPLICIT_DENY, missing, denies, denied_by)

    for kind, levels in ((PolicyKind.SCP, policies.scp), (PolicyKind.RCP, policies.rcp)):
        if levels is None:
            continue
        # Every level is evaluated (its missing keys are part of the decision); each must allow.
        allowed = [bool(_matching(level, request, Effect.ALLOW, missing)) for level in levels]
        if not all(allowed):
            return _decision(Outcome.IMPLICIT_DENY, missing, by=kind)

    grants = _matching(policies.resource, request, Effect.ALLOW, missing)
    direct = any(g is Grant.DIRECT for _, g in grants)
    via_role = any(g is Grant.ROLE for _, g in grants)

    identity = [m for m, _ in _matching(policies.identity, request, Effect.ALLOW, missing)] \
        if policies.identity else []
    boundary_ok = policies.boundary is None or bool(
        _matching((policies.boundary,), request, Effect.ALLOW, missing))
    session_ok = policies.session is None or bool(
        _matching(policies.session, request, Effect.ALLOW, missing))
    identity_ok = (policies.root or bool(identity)) and boundary_ok and session_ok

    allowing = [*identity, *(m for m, _ in grants)]  # every Allow that matched
    account = request.resource_account or request.principal.account
    if account == request.principal.account:
        if direct:
            return _decision(Outcome.ALLOW, missing, allowing)
        if via_role and boundary_ok and session_ok:
            return _decision(Outcome.ALLOW, missing, allowing)
        if request.requires_resource_policy and not grants:
            return _decision(Outcome.IMPLICIT_DENY, missing, by=PolicyKind.RESOURCE)
        if identity_ok:
            return _decision(Outcome.ALLOW, missing, allowing)
        return _identity_denial(policies, bool(identity), boundary_ok, missing)
    if not identity_ok:
        return _identity_denial(policies, bool(identity), boundary_ok, missing)
    if not grants:
        return _decision(Outcome.IMPLICIT_DENY, missing, by=PolicyKind.RESOURCE)
    return _decision(Outcome.ALLOW, missing, allowing)


def _flat(levels: tuple[tuple[Policy, ...], ...] | None) -> tuple[Policy, ...] | None:
    if levels is None:
        return None
    return tuple(p for level in levels for p in level)


def _decision(outcome: Outcome, missing: set[str], statements: Iterable[Matched] = (),
              by: PolicyKind | None = None) -> Decision:
    return Decision(outcome, tuple(statements), by, frozenset(missing))


def _identity_denial(policies: PolicySet, identity: bool, boundary_ok: bool,
                     missing: set[str]) -> Decision:
    if not (policies.root or identity):
        return _decision(Outcome.IMPLICIT_DENY, missing, by=PolicyKind.IDENTITY)
    if not boundary_ok:
        return _decision(Outcome.IMPLICIT_DENY, missing, by=PolicyKind.BOUNDARY)
    return _decision(Outcome.IMPLICIT_DENY, missing, by=PolicyKind.SESSION)


_NAMES_PRINCIPAL = frozenset(kind for kind in PolicyKind if kind.names_principal)


def _matching(policies: Iterable[Policy], request: Request, effect: Effect,
              missing: set[str]) -> list[tuple[Matched, Grant | None]]:
    """Every statement of ``effect`` that applies to the request, with how its Principal
    element names the caller (resource-based policies) — all of them, in order."""
    found = []
    for policy in policies:
        names_principal = policy.kind in _NAMES_PRINCIPAL
        for statement in policy.statements:
            if statement.effect is not effect:
                continue
            grant = None
            if names_principal:
                grant = statement.grant(request.principal)
                if grant is None:
                    continue
            if statement.applies(request.action, request.resource, request.context, missing):
                found.append((_matched(policy, statement), grant))
    return found


def _matched(policy: Policy, statement: Statement) -> Matched:
    return Matched(policy.name, policy.kind, statement.index, statement.sid, statement.effect)
