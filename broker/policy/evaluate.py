"""Policy evaluation, as AWS documents it.

1. An explicit Deny in any applicable policy wins: service control policies, resource-based
   policies, identity-based policies, the permissions boundary, session policies.
2. Service control policies, when the account has them, must allow (the root user included).
3. Within one account, a resource-based policy that names the caller directly (the user, the
   session, everyone) allows on its own; one that names the caller's role allows within the
   session's boundary and session policies; one that names the whole account delegates to the
   account, whose identity-based policies must then allow. Otherwise the identity-based
   policies must allow, and the permissions boundary and session policies (where there are any)
   too.
4. Across accounts both sides must allow: the caller's identity side (with its boundary and
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
        # AWS words a service control policy's refusal alike, explicit or not.
        if self.outcome is Outcome.EXPLICIT_DENY or self.decided_by is PolicyKind.SCP:
            return f"with an explicit deny in {article} {phrase}"
        return f"because no {phrase} allows the {action} action"


@dataclass(frozen=True)
class PolicySet:
    """Every policy that applies to one principal (and, per request, to one resource)."""

    identity: tuple[Policy, ...] = ()
    boundary: Policy | None = None
    session: tuple[Policy, ...] | None = None  # None: not a session with session policies
    scp: tuple[Policy, ...] | None = None  # None: the account belongs to no organization
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
    missing: set[str] = set()

    def decide(outcome: Outcome, statements: Iterable[Matched] = (),
               by: PolicyKind | None = None) -> Decision:
        return Decision(outcome, tuple(statements), by, frozenset(missing))

    groups: list[tuple[PolicyKind, tuple[Policy, ...]]] = [
        (PolicyKind.SCP, policies.scp or ()),
        (PolicyKind.RESOURCE, policies.resource),
        (PolicyKind.IDENTITY, policies.identity),
        (PolicyKind.BOUNDARY, (policies.boundary,) if policies.boundary else ()),
        (PolicyKind.SESSION, policies.session or ()),
    ]
    denies: list[Matched] = []
    denied_by: PolicyKind | None = None
    for kind, group in groups:
        if not group:
            continue
        found = [m for m, _ in _matching(group, request, Effect.DENY, missing)]
        if found and denied_by is None:
            denied_by = kind
        denies += found
    if denies:
        return decide(Outcome.EXPLICIT_DENY, denies, denied_by)

    if policies.scp is not None:
        allowed = list(_matching(policies.scp, request, Effect.ALLOW, missing))
        if not allowed:
            return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.SCP)

    grants = list(_matching(policies.resource, request, Effect.ALLOW, missing))
    direct = [m for m, g in grants if g is Grant.DIRECT]
    via_role = [m for m, g in grants if g is Grant.ROLE]

    identity = [m for m, _ in _matching(policies.identity, request, Effect.ALLOW, missing)] \
        if policies.identity else []
    boundary_ok = policies.boundary is None or bool(
        list(_matching((policies.boundary,), request, Effect.ALLOW, missing)))
    session_ok = policies.session is None or bool(
        list(_matching(policies.session, request, Effect.ALLOW, missing)))
    identity_ok = (policies.root or bool(identity)) and boundary_ok and session_ok

    def identity_denial() -> Decision:
        if not (policies.root or identity):
            return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.IDENTITY)
        if not boundary_ok:
            return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.BOUNDARY)
        return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.SESSION)

    allowing = [*identity, *(m for m, _ in grants)]  # every Allow that matched
    account = request.resource_account or request.principal.account
    if account == request.principal.account:
        if direct:
            return decide(Outcome.ALLOW, allowing)
        if via_role and boundary_ok and session_ok:
            return decide(Outcome.ALLOW, allowing)
        if request.requires_resource_policy and not grants:
            return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.RESOURCE)
        if identity_ok:
            return decide(Outcome.ALLOW, allowing)
        return identity_denial()
    if not identity_ok:
        return identity_denial()
    if not grants:
        return decide(Outcome.IMPLICIT_DENY, by=PolicyKind.RESOURCE)
    return decide(Outcome.ALLOW, allowing)


def _matching(policies: Iterable[Policy], request: Request, effect: Effect,
              missing: set[str]) -> Iterable[tuple[Matched, Grant | None]]:
    for policy in policies:
        for statement in policy.statements:
            if statement.effect is not effect:
                continue
            grant = None
            if policy.kind.names_principal:
                grant = statement.grant(request.principal)
                if grant is None:
                    continue
            if statement.applies(request.action, request.resource, request.context, missing):
                yield _matched(policy, statement), grant


def _matched(policy: Policy, statement: Statement) -> Matched:
    return Matched(policy.name, policy.kind, statement.index, statement.sid, statement.effect)
