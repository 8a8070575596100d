"""SimulatePrincipalPolicy and SimulateCustomPolicy: the evaluation engine, on request.

The simulation evaluates exactly what authorization evaluates (broker.policy.evaluate), with the
context entries the caller gives and nothing else: keys the policies read that the caller did
not give are reported as MissingContextValues.
"""

from __future__ import annotations

from typing import Any

from broker.aws import arn as arns
from broker.aws.errors import InvalidInput, NoSuchEntity
from broker.aws.ids import ACCOUNT_ID
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import IamContext, Registry
from broker.iam.entities import Group, User
from broker.iam.permissions import IdentitySide
from broker.iam.records import paginate
from broker.policy.context import Context
from broker.policy.document import Policy, PolicyKind, RequestPrincipal
from broker.policy.evaluate import (
    Decision,
    Levels,
    Matched,
    Outcome,
    PolicySet,
    Request,
    evaluate,
)

_DECISION = {Outcome.ALLOW: "allowed", Outcome.EXPLICIT_DENY: "explicitDeny",
             Outcome.IMPLICIT_DENY: "implicitDeny"}


def _source(match: Matched) -> dict[str, str]:
    name = match.policy
    if match.kind in (PolicyKind.SCP, PolicyKind.RCP):
        # PolicySourceType has no value for an organization's policies: "none", by its ARN.
        return {"SourcePolicyId": name, "SourcePolicyType": "none"}
    if match.kind is PolicyKind.RESOURCE:
        return {"SourcePolicyId": "ResourcePolicy", "SourcePolicyType": "resource"}
    if name.startswith("PolicyInputList") or name.startswith("PermissionsBoundary"):
        return {"SourcePolicyId": name, "SourcePolicyType": "none"}
    if name.startswith("arn:"):
        kind = "aws-managed" if ":iam::aws:policy" in name else "user-managed"
        return {"SourcePolicyId": name, "SourcePolicyType": kind}
    owner, _, rest = name.partition("/")
    return {"SourcePolicyId": rest.rsplit("/", 1)[-1], "SourcePolicyType": owner}


def _context(entries: list[dict[str, Any]]) -> Context:
    return Context({e["ContextKeyName"]: list(e.get("ContextKeyValues", []))
                    for e in entries if "ContextKeyName" in e})


def operations(ctx: IamContext) -> list[Operation]:
    ops = Registry()

    def inputs(documents: list[str], kind: PolicyKind, label: str) -> tuple[Policy, ...]:
        return tuple(ctx.authz.permissions.compile(doc, kind, f"{label}.{i}")
                     for i, doc in enumerate(documents, 1))

    def simulate(call: Call, identity: tuple[Policy, ...], boundary: Policy | None,
                 principal_arn: str,
                 scp: Levels | None = None) -> Result:
        p = call.params
        account = call.principal.account_id
        resource_policy = None
        if "ResourcePolicy" in p:
            resource_policy = ctx.authz.permissions.compile(
                p["ResourcePolicy"], PolicyKind.RESOURCE, "ResourcePolicy")
        caller = p.get("CallerArn", principal_arn)
        parsed = arns.parse(caller)
        who = RequestPrincipal(arn=caller, account=parsed.account if parsed and parsed.account
                               else account, type="User")
        context = _context(p.get("ContextEntries", []))
        owner = None
        if "ResourceOwner" in p:
            parsed_owner = arns.parse(p["ResourceOwner"])
            if parsed_owner is None or not ACCOUNT_ID.fullmatch(parsed_owner.account):
                raise InvalidInput(f"Invalid ResourceOwner {p['ResourceOwner']}: it must be "
                                   "the ARN of an account, such as arn:aws:iam::ACCOUNT:root.")
            owner = parsed_owner.account
        policies = PolicySet(identity=identity, boundary=boundary, scp=scp,
                             resource=(resource_policy,) if resource_policy else ())
        results = []
        for action in p["ActionNames"]:
            for resource in p.get("ResourceArns") or ["*"]:
                decision: Decision = evaluate(policies, Request(
                    who, action, resource, context, resource_account=owner))
                results.append({
                    "EvalActionName": action,
                    "EvalResourceName": resource,
                    "EvalDecision": _DECISION[decision.outcome],
                    "MatchedStatements": [_source(m) for m in decision.statements],
                    "MissingContextValues": sorted(decision.missing),
                    "PermissionsBoundaryDecisionDetail": None if boundary is None else {
                        "AllowedByPermissionsBoundary":
                            decision.decided_by is not PolicyKind.BOUNDARY},
                    # The SCPs over the simulated principal's account (AWS's simulator
                    # includes them for SimulatePrincipalPolicy).
                    "OrganizationsDecisionDetail": None if scp is None else {
                        "AllowedByOrganizations": decision.decided_by is not PolicyKind.SCP},
                })
        page = paginate(list(enumerate(results)), lambda r: f"{r[0]:08d}", p.get("Marker"),
                        p.get("MaxItems"))
        out: dict[str, Any] = {"EvaluationResults": [r for _, r in page.items],
                               "IsTruncated": page.marker is not None}
        if page.marker is not None:
            out["Marker"] = page.marker
        return out

    @ops.action("SimulatePrincipalPolicy")
    async def simulate_principal(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        source = p["PolicySourceArn"]
        await ctx.allow(call, "SimulatePrincipalPolicy", source)
        side = await _side(ctx, account, source)
        identity = side.policies + inputs(p.get("PolicyInputList", []), PolicyKind.IDENTITY,
                                          "PolicyInputList")
        boundaries = inputs(p.get("PermissionsBoundaryPolicyInputList", []),
                            PolicyKind.BOUNDARY, "PermissionsBoundaryPolicyInputList")
        governed = await ctx.authz.governed(account)
        return simulate(call, identity, boundaries[0] if boundaries else side.boundary, source,
                        governed.scp if governed is not None else None)

    @ops.action("SimulateCustomPolicy")
    async def simulate_custom(call: Call) -> Result:
        p = call.params
        await ctx.allow(call, "SimulateCustomPolicy", "*")
        identity = inputs(p["PolicyInputList"], PolicyKind.IDENTITY, "PolicyInputList")
        boundaries = inputs(p.get("PermissionsBoundaryPolicyInputList", []),
                            PolicyKind.BOUNDARY, "PermissionsBoundaryPolicyInputList")
        return simulate(call, identity, boundaries[0] if boundaries else None,
                        call.principal.arn)

    return ops.operations


async def _side(ctx: IamContext, account: str, source: str) -> IdentitySide:
    """The identity side of the user, group or role a PolicySourceArn names."""
    iam, permissions = ctx.iam, ctx.authz.permissions
    parsed = arns.parse(source)
    if parsed is None or parsed.service != "iam" or parsed.account != account:
        raise InvalidInput(f"Invalid PolicySourceArn {source}: it must name a user, group or "
                           "role of this account.")
    kind, _, rest = parsed.resource.partition("/")
    name = rest.rsplit("/", 1)[-1]
    if kind == "user":
        user: User = await iam.get_user(account, name)
        return await permissions.of_user(account, user.user_id)
    if kind == "group":
        group: Group = await iam.groups.get(account, name)
        return await permissions.of_group(group)
    if kind == "role":
        role = await iam.roles.get(account, name)
        return await permissions.of_role(account, role.name, role.role_id)
    raise NoSuchEntity(f"The entity {source} cannot be found.")
