"""The trust-policy decision of AssumeRoleWithSAML and AssumeRoleWithWebIdentity: the identity
provider as the principal (``Principal: {"Federated": provider ARN}``), the provider's condition
keys, the session tags and source identity the provider asserted — and sts:TagSession and
sts:SetSourceIdentity asked of the trust policy too when those are set, as AWS does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.aws.errors import AccessDenied
from broker.clock import iso8601
from broker.iam.entities import Role
from broker.iam.permissions import Permissions
from broker.organizations.guard import Governed
from broker.policy.context import Context
from broker.policy.document import Policy, RequestPrincipal
from broker.policy.evaluate import PolicySet, Request, evaluate


def authorize(permissions: Permissions, role: Role, *, provider_arn: str, provider_account: str,
              principal_type: str, action: str, refusal: str, now: datetime,
              keys: Mapping[str, str | list[str]], tags: Sequence[tuple[str, str]],
              transitive: Sequence[str], identity: str | None,
              organization: Governed | None = None) -> None:
    """AccessDenied(``refusal``) unless the role's trust policy allows ``action`` (and the
    tagging and source-identity actions the session needs) for the provider, with ``keys`` —
    and, when the role's account is in an organization, its resource control policies too."""
    context: dict[str, str | list[str]] = {
        "aws:CurrentTime": iso8601(now), "aws:EpochTime": str(int(now.timestamp())),
        "aws:FederatedProvider": provider_arn, "aws:ResourceAccount": role.account_id,
        **(organization.resource_keys() if organization is not None else {}), **keys}
    if tags:
        context["aws:TagKeys"] = [k for k, _ in tags]
        context.update({f"aws:RequestTag/{k}": v for k, v in tags})
    if transitive:
        context["sts:TransitiveTagKeys"] = list(transitive)
    if identity is not None:
        context["sts:SourceIdentity"] = identity
    compiled = Context(context)
    who = _principal(provider_arn, provider_account, principal_type)
    policies = _trust_set(permissions.trust_of(role))
    if organization is not None and organization.rcp is not None:
        policies = PolicySet(resource=policies.resource, rcp=organization.rcp)
    needed = [action]
    if tags:
        needed.append("sts:TagSession")
    if identity is not None:
        needed.append("sts:SetSourceIdentity")
    for each in needed:
        decision = evaluate(policies, Request(
            principal=who, action=each, resource=role.arn, context=compiled,
            resource_account=role.account_id, requires_resource_policy=True))
        if not decision.allowed:
            raise AccessDenied(refusal)


# Both made once and reused: the identity provider as a principal, and the policy set of a
# trust policy (each compiled trust policy is one object, kept by Permissions). Bounded; the
# set is keyed by the policy's identity and holds the policy, so the key cannot be reused.
_PRINCIPALS: dict[tuple[str, str, str], RequestPrincipal] = {}
_TRUST_SETS: dict[int, tuple[Policy, PolicySet]] = {}


def _principal(provider_arn: str, account: str, principal_type: str) -> RequestPrincipal:
    key = (provider_arn, account, principal_type)
    found = _PRINCIPALS.get(key)
    if found is None:
        if len(_PRINCIPALS) >= 1024:
            _PRINCIPALS.clear()
        found = _PRINCIPALS[key] = RequestPrincipal(arn=provider_arn, account=account,
                                                    type=principal_type,
                                                    federated=provider_arn)
    return found


def _trust_set(trust: Policy) -> PolicySet:
    found = _TRUST_SETS.get(id(trust))
    if found is None or found[0] is not trust:
        if len(_TRUST_SETS) >= 1024:
            _TRUST_SETS.clear()
        found = _TRUST_SETS[id(trust)] = (trust, PolicySet(resource=(trust,)))
    return found[1]

