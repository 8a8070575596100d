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
from broker.policy import conditions
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


class Levels:
    """Service or resource control policies by organization level (the root, each OU down the
    path, the account), with what each action meets in them worked out once.

    Most of an organization's statements never concern a given action: for each action (any
    case) the levels keep which of their Deny statements name it, which Allow statements of
    each level name it, and whether a level allows it unconditionally (an Allow of it on ``*``
    with no condition, as FullAWSAccess is). A decision then reads only those statements. The
    views are bounded; ``OrgGuard`` keeps one Levels per account for
    ``iam.policy_cache_seconds``, so they are worked out again after every change."""

    __slots__ = ("_views", "levels")

    def __init__(self, levels: Iterable[Iterable[Policy]]) -> None:
        self.levels: tuple[tuple[Policy, ...], ...] = tuple(tuple(level) for level in levels)
        self._views: dict[str, _View] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Levels) and other.levels == self.levels

    def __hash__(self) -> int:
        return hash(self.levels)

    def __repr__(self) -> str:
        return f"Levels({self.levels!r})"

    def view(self, action: str) -> _View:
        key = action.lower()
        found = self._views.get(key)
        if found is None:
            if len(self._views) >= 512:
                self._views.clear()
            found = self._views[key] = _View.of(self.levels, action)
        return found


@dataclass(frozen=True)
class _View:
    denies: tuple[tuple[Policy, Statement], ...]
    allows: tuple[tuple[tuple[Policy, Statement], ...], ...]  # per level
    open: tuple[bool, ...]  # per level: an unconditional Allow of the action on everything

    @classmethod
    def of(cls, levels: tuple[tuple[Policy, ...], ...], action: str) -> _View:
        denies = []
        allows = []
        for level in levels:
            here = []
            for policy in level:
                for statement in policy.statements:
                    if not statement.matches_action(action):
                        continue
                    if statement.effect is Effect.DENY:
                        denies.append((policy, statement))
                    else:
                        here.append((policy, statement))
            allows.append(tuple(here))
        return cls(tuple(denies), tuple(allows),
                   tuple(any(_everywhere(s) for _, s in level) for level in allows))


def _everywhere(statement: Statement) -> bool:
    return (not statement.conditions and not statement.not_resources
            and statement.resources == ("*",)
            and (statement.principals is None or statement.principals.everyone))


@dataclass(frozen=True)
class PolicySet:
    """Every policy that applies to one principal (and, per request, to one resource)."""

    identity: tuple[Policy, ...] = ()
    boundary: Policy | None = None
    session: tuple[Policy, ...] | None = None  # None: not a session with session policies
    # Service control policies by level (the root, each OU down the path, the account):
    # None when the principal's account is governed by none (no organization, the management
    # account, SCPs not enabled). A tuple of levels is made into Levels.
    scp: Levels | None = None
    # Resource control policies of the resource's account, by level likewise.
    rcp: Levels | None = None
    root: bool = False  # the account's root user: its identity side allows everything
    resource: tuple[Policy, ...] = ()

    def __post_init__(self) -> None:
        for name in ("scp", "rcp"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Levels):
                object.__setattr__(self, name, Levels(value))


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
    views = []
    for kind, levels in ((PolicyKind.SCP, policies.scp), (PolicyKind.RCP, policies.rcp)):
        if levels is None:
            continue
        view = levels.view(request.action)
        views.append((kind, view))
        found_here = [_matched(policy, statement) for policy, statement in view.denies
                      if _statement_applies(policy, statement, request, missing)]
        if found_here:
            if denied_by is None:
                denied_by = kind
            denies += found_here
    for kind, group in (
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

    for kind, view in views:
        # Each level must allow. A level that allows the action unconditionally is not
        # searched further; every other level is evaluated in full (its missing keys are part
        # of the decision).
        allowed = [open_ or _level_allows(level, request, missing)
                   for open_, level in zip(view.open, view.allows, strict=True)]
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


def _level_allows(level: tuple[tuple[Policy, Statement], ...], request: Request,
                  missing: set[str]) -> bool:
    allowed = False
    for policy, statement in level:  # all of them: each one's missing keys are noted
        allowed = _statement_applies(policy, statement, request, missing) or allowed
    return allowed


def _statement_applies(policy: Policy, statement: Statement, request: Request,
                       missing: set[str]) -> bool:
    """A statement whose action already matched: its principal (an RCP's), resource and
    conditions."""
    if policy.kind in _NAMES_PRINCIPAL and statement.grant(request.principal) is None:
        return False
    return statement.matches_resource(request.resource, request.context) and \
        conditions.holds(statement.conditions, request.context, missing)


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
