"""Policy documents: the JSON grammar, validated and compiled once, evaluated many times.

``parse(text, kind)`` returns a ``Policy`` or raises MalformedPolicyDocument with a message that
names the fault (AWS's wording where AWS has one). The kind decides what a statement may hold:
identity-based policies (and permissions boundaries, session policies, service control
policies) name resources and never a principal; resource-based policies name a principal; a
role's trust policy names a principal, only STS actions, and no resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from broker import jsontext
from broker.aws.errors import MalformedPolicyDocument
from broker.policy import conditions, matching
from broker.policy.conditions import Clause, ConditionError
from broker.policy.context import Context
from broker.policy.variables import Template, template

VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_FIELDS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                     "Resource", "NotResource", "Condition"}
_SID = re.compile(r"[0-9A-Za-z]*")
_ACCOUNT = re.compile(r"\d{12}")
_SERVICE_ACTION = re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9*?_.-]*")


class PolicyKind(StrEnum):
    IDENTITY = "identity"  # inline or managed policy of a user, group or role
    BOUNDARY = "boundary"  # permissions boundary
    SESSION = "session"  # session policy passed to an STS action
    SCP = "scp"  # service control policy
    RCP = "rcp"  # resource control policy (Principal "*" only)
    RESOURCE = "resource"  # resource-based policy
    TRUST = "trust"  # a role's trust policy (a resource-based policy for sts:AssumeRole*)

    @property
    def names_principal(self) -> bool:
        return self in (PolicyKind.RESOURCE, PolicyKind.TRUST, PolicyKind.RCP)


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True)
class RequestPrincipal:
    """Who is asking, as resource-based policies see it."""

    arn: str
    account: str
    type: str  # aws:PrincipalType: Account, User, AssumedRole, FederatedUser, WebIdentityUser...
    role_arn: str | None = None  # for role sessions: the role
    federated: str | None = None  # for web identity and SAML sessions: the identity provider
    service: str | None = None  # for AWS service principals
    # The unique ids behind the ARNs (AIDA... of a user, AROA... of a session's role): a
    # principal a policy bound to an id (a role's trust policy) matches only with that id.
    ids: frozenset[str] = frozenset()


class Grant(StrEnum):
    """How a resource-based policy's Principal element named the caller."""

    DIRECT = "direct"  # the user, the session, or everyone
    ROLE = "role"  # the role whose session is calling
    ACCOUNT = "account"  # the caller's whole account: the account's own policies decide too


@dataclass(frozen=True)
class Principals:
    everyone: bool = False
    aws: tuple[str, ...] = ()  # account ids and ARNs; root ARNs held as account ids
    federated: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    canonical: tuple[str, ...] = ()
    # User and role ARNs bound to the unique id they had when the policy was saved (a role's
    # trust policy, as AWS does): such an entry names that identity only, not a later one of
    # the same name.
    bound: tuple[tuple[str, str], ...] = ()

    def _names(self, value: str, who: RequestPrincipal, *, role: bool) -> bool:
        """Whether an AWS principal entry names the caller itself (``role=False``: the user,
        or the session by its ARN) or the role of its session (``role=True``). An entry bound
        to a unique id names the identity with that id, whatever its ARN has become since (a
        move, a change of case), and nothing else — as AWS matches saved trust policies."""
        for bound_arn, unique_id in self.bound:
            if bound_arn == value:
                if role:
                    return who.role_arn is not None and ":role/" in value \
                        and unique_id in who.ids
                return who.role_arn is None and who.type == "User" and ":user/" in value \
                    and unique_id in who.ids
        target = who.role_arn if role else who.arn
        return target is not None and value == target

    def grant(self, who: RequestPrincipal) -> Grant | None:
        if self.everyone:
            return Grant.DIRECT
        found: Grant | None = None
        for value in self.aws:
            if self._names(value, who, role=False):
                return Grant.DIRECT
            if self._names(value, who, role=True):
                found = Grant.ROLE
            elif value == who.account and found is None:
                found = Grant.ACCOUNT
        if who.federated is not None and who.federated in self.federated:
            return Grant.DIRECT
        if who.service is not None and who.service in self.service:
            return Grant.DIRECT
        return found

    def names(self, who: RequestPrincipal) -> bool:
        """Whether the caller is excluded by a NotPrincipal listing these principals: every
        identity it acts as must be listed — its account, and its user or session ARN, and for
        a role session the role's ARN — as AWS documents (a Deny with NotPrincipal that lists a
        user but not the user's account applies to that user)."""
        if self.everyone:
            return True
        if who.federated is not None and who.federated in self.federated:
            return True
        if who.service is not None and who.service in self.service:
            return True
        if who.account not in self.aws:
            return False
        if who.type != "Account" and not any(self._names(v, who, role=False)
                                             for v in self.aws):
            return False
        return who.role_arn is None or any(self._names(v, who, role=True) for v in self.aws)

    def arns(self) -> Iterable[str]:
        return (v for v in self.aws if v.startswith("arn:"))


@dataclass(frozen=True)
class Statement:
    index: int
    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_actions: bool
    resources: tuple[str | Template, ...] | None  # None: the policy names no resource (trust)
    not_resources: bool
    principals: Principals | None
    not_principals: bool
    conditions: tuple[Clause, ...] = ()
    text: str = field(default="", compare=False)  # the statement as written, for explanations

    def matches_action(self, action: str) -> bool:
        hit = any(matching.matches(p, action, ignore_case=True) for p in self.actions)
        return hit != self.not_actions

    def matches_resource(self, resource: str, context: Context) -> bool:
        if self.resources is None:
            return True
        hit = False
        for pattern in self.resources:
            rendered = pattern.render(context) if isinstance(pattern, Template) else pattern
            if rendered is not None and matching.matches(rendered, resource):
                hit = True
                break
        return hit != self.not_resources

    def grant(self, who: RequestPrincipal) -> Grant | None:
        """How this statement's Principal / NotPrincipal element covers the caller."""
        if self.principals is None:
            return None
        if self.not_principals:
            return None if self.principals.names(who) else Grant.DIRECT
        return self.principals.grant(who)

    def applies(self, action: str, resource: str, context: Context,
                missing: set[str] | None = None) -> bool:
        """Action, resource and conditions match (the principal is checked by the caller)."""
        return (self.matches_action(action)
                and self.matches_resource(resource, context)
                and conditions.holds(self.conditions, context, missing))


@dataclass(frozen=True)
class Policy:
    kind: PolicyKind
    name: str  # where it comes from: a policy ARN, "user/alice/inline/Name", "session", ...
    version: str
    statements: tuple[Statement, ...]
    text: str = field(default="", compare=False)
    id: str | None = None

    def bind(self, bound: tuple[tuple[str, str], ...]) -> Policy:
        """This policy with its user and role principals bound to unique ids (ARN, id)."""
        if not bound:
            return self
        return replace(self, statements=tuple(
            s if s.principals is None else replace(s, principals=replace(s.principals,
                                                                         bound=bound))
            for s in self.statements))


def parse(text: str, kind: PolicyKind, *, name: str = "") -> Policy:
    """Validate and compile a policy document, or raise MalformedPolicyDocument."""
    try:
        doc = jsontext.loads(text)
    except jsontext.JsonRefused:
        raise MalformedPolicyDocument("Syntax errors in policy.") from None
    return compile_document(doc, kind, name=name, text=text)


def compile_document(doc: Any, kind: PolicyKind, *, name: str = "",
                     text: str = "") -> Policy:
    if not isinstance(doc, dict):
        raise MalformedPolicyDocument("Syntax errors in policy.")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise MalformedPolicyDocument(
            f"Syntax errors in policy. Unknown field {sorted(unknown)[0]}.")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise MalformedPolicyDocument("The policy failed legacy parsing")
    if "Id" in doc and not isinstance(doc["Id"], str):
        raise MalformedPolicyDocument("Syntax errors in policy.")
    raw = doc.get("Statement")
    if raw is None:
        raise MalformedPolicyDocument("Syntax errors in policy. Missing required field Statement.")
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicyDocument("Syntax errors in policy. The Statement element is empty.")
    statements = []
    sids: set[str] = set()
    for index, item in enumerate(items):
        statement = _statement(item, index, kind, variables=version == "2012-10-17")
        if statement.sid:
            if statement.sid in sids:
                raise MalformedPolicyDocument(
                    "Statement IDs (SID) in a single policy must be unique.")
            sids.add(statement.sid)
        statements.append(statement)
    return Policy(kind=kind, name=name, version=version, statements=tuple(statements), text=text,
                  id=doc.get("Id"))


def _statement(item: Any, index: int, kind: PolicyKind, *, variables: bool) -> Statement:
    if not isinstance(item, dict):
        raise MalformedPolicyDocument("Syntax errors in policy.")
    unknown = set(item) - _STATEMENT_FIELDS
    if unknown:
        raise MalformedPolicyDocument(
            f"Syntax errors in policy. Unknown field {sorted(unknown)[0]}.")
    sid = item.get("Sid")
    if sid is not None:
        if not isinstance(sid, str):
            raise MalformedPolicyDocument("Syntax errors in policy.")
        if kind is not PolicyKind.RESOURCE and not _SID.fullmatch(sid):
            raise MalformedPolicyDocument(
                "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the "
                "regular expression [0-9A-Za-z]*")
    effect = item.get("Effect")
    if effect not in (Effect.ALLOW.value, Effect.DENY.value):
        raise MalformedPolicyDocument("The policy failed legacy parsing")

    actions, not_actions = _one_of(item, "Action", "NotAction")
    if actions is None:
        raise MalformedPolicyDocument("Policy statement must contain actions.")
    if kind is PolicyKind.RCP and not_actions:
        raise MalformedPolicyDocument("A resource control policy cannot hold NotAction.")
    action_list = _strings(actions, "Action")
    for action in action_list:
        _check_action(action)
    if kind is PolicyKind.TRUST:
        for action in action_list:
            if not action.lower().startswith("sts:") and not_actions is False:
                raise MalformedPolicyDocument(
                    "AssumeRole policy may only specify STS AssumeRole actions.")

    principal_raw, not_principal = _one_of(item, "Principal", "NotPrincipal")
    principals = None
    if kind.names_principal:
        if principal_raw is None:
            raise MalformedPolicyDocument(
                "Invalid principal in policy: The passed in policy has a statement with no "
                "principals!")
        principals = _principals(principal_raw)
        if kind is PolicyKind.RCP and (not_principal or not principals.everyone
                                       or principal_raw != "*"):
            raise MalformedPolicyDocument(
                'The Principal element of a resource control policy must be "*".')
    elif principal_raw is not None:
        raise MalformedPolicyDocument("Policy document should not specify a principal.")

    resources_raw, not_resources = _one_of(item, "Resource", "NotResource")
    resources: tuple[str | Template, ...] | None = None
    if kind is PolicyKind.TRUST:
        if resources_raw is not None:
            raise MalformedPolicyDocument("Has prohibited field Resource")
    elif resources_raw is None:
        if kind is not PolicyKind.RESOURCE:
            raise MalformedPolicyDocument("Policy statement must contain resources.")
    else:
        shaped = []
        for resource in _strings(resources_raw, "Resource"):
            if resource != "*" and not resource.startswith("arn:"):
                raise MalformedPolicyDocument(
                    f'Resource {resource} must be in ARN format or "*".')
            shaped.append(template(resource) if variables else resource)
        resources = tuple(shaped)

    try:
        clauses = conditions.parse_block(item["Condition"], variables=variables) \
            if "Condition" in item else ()
    except ConditionError as exc:
        raise MalformedPolicyDocument(str(exc)) from None
    return Statement(
        index=index,
        sid=sid,
        effect=Effect(effect),
        actions=tuple(action_list),
        not_actions=bool(not_actions),
        resources=resources,
        not_resources=bool(not_resources),
        principals=principals,
        not_principals=bool(not_principal),
        conditions=clauses,
        text=json.dumps(item, separators=(",", ":")),
    )


def _one_of(item: dict[str, Any], positive: str, negative: str) -> tuple[Any, bool | None]:
    if positive in item and negative in item:
        raise MalformedPolicyDocument(
            f"Syntax errors in policy. A statement cannot hold both {positive} and {negative}.")
    if positive in item:
        return item[positive], False
    if negative in item:
        return item[negative], True
    return None, None


def _strings(value: Any, element: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise MalformedPolicyDocument(f"Syntax errors in policy. {element} must be a string or "
                                      "a list of strings.")
    return items


def _check_action(action: str) -> None:
    if action == "*":
        return
    if ":" not in action:
        raise MalformedPolicyDocument(
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
    vendor = action.split(":", 1)[0]
    if "*" in vendor or "?" in vendor:
        raise MalformedPolicyDocument(
            "Action vendors (e.g., aws, ec2, etc.) must not contain wildcards.")
    if not _SERVICE_ACTION.fullmatch(action):
        raise MalformedPolicyDocument(f"Syntax errors in policy. Invalid action {action}.")


def _principals(raw: Any) -> Principals:
    if raw == "*":
        return Principals(everyone=True)
    if not isinstance(raw, dict) or not raw:
        raise MalformedPolicyDocument("Invalid principal in policy")
    aws: list[str] = []
    federated: list[str] = []
    service: list[str] = []
    canonical: list[str] = []
    everyone = False
    for kind, values in raw.items():
        items = values if isinstance(values, list) else [values]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise MalformedPolicyDocument("Invalid principal in policy")
        if kind == "AWS":
            for value in items:
                if value == "*":
                    everyone = True
                    continue
                aws.append(_aws_principal(value))
        elif kind == "Federated":
            federated.extend(items)
        elif kind == "Service":
            service.extend(items)
        elif kind == "CanonicalUser":
            canonical.extend(items)
        else:
            raise MalformedPolicyDocument(f'Invalid principal in policy: "{kind}"')
    return Principals(everyone=everyone, aws=tuple(aws), federated=tuple(federated),
                      service=tuple(service), canonical=tuple(canonical))


def _aws_principal(value: str) -> str:
    if _ACCOUNT.fullmatch(value):
        return value
    parts = value.split(":", 5)
    if (len(parts) != 6 or parts[0] != "arn" or parts[2] not in ("iam", "sts")
            or not _ACCOUNT.fullmatch(parts[4]) or "*" in value or "?" in value):
        raise MalformedPolicyDocument(f'Invalid principal in policy: "AWS":"{value}"')
    if parts[2] == "iam" and parts[5] == "root":
        return parts[4]
    return value
