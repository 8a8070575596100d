"""What authorization asks of Organizations: an account's place, and the SCPs and RCPs above it.

``OrgGuard.of(account)`` answers from ``Permissions.cached`` — kept for
``iam.policy_cache_seconds`` and dropped at once after any write by this process — so that
every broker process sees an SCP attached, detached or changed within that time, and a busy
principal costs no store read per request. The answer holds the policies compiled, level by
level (the root, each OU down the path, the account) as ``Levels``, which remember what each
action meets in them for as long as the answer is kept, and the organization condition keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.iam.permissions import Permissions
from broker.organizations.document import Standing
from broker.organizations.service import OrganizationsService
from broker.policy.document import PolicyKind
from broker.policy.evaluate import Levels


@dataclass(frozen=True)
class Governed:
    """An account in an organization, as a request's evaluation sees it."""

    account: str
    org_id: str
    management: str
    path: str
    scp: Levels | None  # None: the management account, or SCPs not enabled
    rcp: Levels | None
    root_features: tuple[str, ...]

    @property
    def is_management(self) -> bool:
        return self.account == self.management

    def principal_keys(self) -> dict[str, str | list[str]]:
        return {"aws:PrincipalOrgID": self.org_id, "aws:PrincipalOrgPaths": [self.path]}

    def resource_keys(self) -> dict[str, str | list[str]]:
        return {"aws:ResourceOrgID": self.org_id, "aws:ResourceOrgPaths": [self.path]}


class OrgGuard:
    def __init__(self, organizations: OrganizationsService, permissions: Permissions) -> None:
        self.organizations = organizations
        self._permissions = permissions

    async def of(self, account: str) -> Governed | None:
        governed: Governed | None = await self._permissions.cached(
            ("organization-standing", account), lambda: self._build(account))
        return governed

    async def _build(self, account: str) -> Governed | None:
        standing = await self.organizations.standing(account)
        if standing is None:
            return None
        return Governed(account, standing.org_id, standing.management, standing.path,
                        self._levels(standing, PolicyKind.SCP),
                        self._levels(standing, PolicyKind.RCP), standing.root_features)

    def _levels(self, standing: Standing, kind: PolicyKind) -> Levels | None:
        raw = standing.scp if kind is PolicyKind.SCP else standing.rcp
        if raw is None:
            return None
        return Levels(tuple(self._permissions.compile(content, kind, policy_arn)
                            for policy_arn, content in level) for level in raw)
