"""What a signed-in directory user may reach: the accounts and roles their assignments give
them (directly or through their groups), and that role's credentials.

Everything is read on every call — the user, their groups, their assignments — so a user
deleted, removed from a group or unassigned loses access at the next request, on every
process. The credentials are a session of the provisioned AWSReservedSSO role, authorized as
AWS authorizes Identity Center's own sign-in: ``sts:AssumeRoleWithSAML`` by the account's
``AWSSSO_…_DO_NOT_DELETE`` provider, against the role's trust policy (which an account
administrator cannot change) and the account's resource control policies. The session is
named after the user, lasts the permission set's session duration, carries the user's
attributes for access control as session tags (abac.py: the instance's configuration, read
through the cache as everything else here, and what an external IdP's assertion passed), and
— as every session — is bound by the account's SCPs when it is used.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

from broker.aws import arn
from broker.aws.errors import AwsError
from broker.clock import Clock
from broker.iam.permissions import Permissions
from broker.identitycenter.abac import AccessControl, Configuration, Untaggable, session_tags
from broker.identitycenter.assignments import (
    RESERVED_PATH,
    Assignment,
    Assignments,
    provider_name,
    role_name,
)
from broker.identitycenter.directory import Directory, DirectoryUser
from broker.identitycenter.instances import Instance, start_url
from broker.identitycenter.permission_sets import PermissionSet, PermissionSets
from broker.identitycenter.reads import Reads
from broker.organizations.guard import OrgGuard
from broker.signin.federation import Federation
from broker.sts import federated
from broker.sts.service import IssuedCredentials, StsService

T = TypeVar("T")


class NotAssigned(Exception):
    """The user has no such role in that account."""


@dataclass(frozen=True)
class AccountEntry:
    account_id: str
    account_name: str
    email_address: str


@dataclass(frozen=True)
class PortalRole:
    account_id: str
    role_name: str  # the permission set's name, as the portal and the sso API show it
    role_arn: str
    permission_set: PermissionSet


_SESSION_NAME = re.compile(r"[^\w+=,.@-]")


def session_name(user_name: str) -> str:
    """The role session name of a directory user: their user name, in the characters and
    length a session name may have."""
    name = _SESSION_NAME.sub("-", user_name)[:64]
    return name if len(name) >= 2 else (name + "--")[:2]


class Access:
    def __init__(self, directory: Directory, assignments: Assignments,
                 permission_sets: PermissionSets, sts: StsService, permissions: Permissions,
                 guard: OrgGuard | None, clock: Clock, *, saml_audience: str,
                 account_entry: Callable[[Instance, str], Awaitable[AccountEntry]],
                 federation: Federation | None = None, public_url: str = "",
                 reads: Reads | None = None,
                 access_control: AccessControl | None = None) -> None:
        self._directory = directory
        self._assignments = assignments
        self._sets = permission_sets
        self._sts = sts
        self._permissions = permissions
        self._guard = guard
        self._clock = clock
        self._audience = saml_audience
        self._account_entry = account_entry
        self._federation = federation
        self._reads = reads
        self._access_control = access_control
        self._public_url = public_url.rstrip("/")

    async def _read(self, instance: Instance, key: tuple[str, ...],
                    load: Callable[[], Awaitable[T]]) -> T:
        if self._reads is None:
            return await load()
        return await self._reads.cached(instance.account_id, key, load)

    async def _assigned(self, instance: Instance, user_id: str) -> list[Assignment]:
        groups = await self._directory.group_ids_of(instance.account_id,
                                                    instance.identity_store_id, user_id)
        principals = [("USER", user_id), *(("GROUP", g) for g in groups)]
        return await self._read(
            instance, ("assignments", instance.instance_id, *(p for _, p in principals)),
            lambda: self._assignments.of_principals(instance, principals))

    async def portal_roles(self, instance: Instance, user_id: str) -> list[PortalRole]:
        """Every (account, role) the user reaches, once each, sorted."""
        assigned = await self._assigned(instance, user_id)
        if not assigned:
            return []
        # Only accounts the instance may still give access to (not one that has left its
        # organization, whatever is left of its assignments).
        reachable = {account: await self._read(
            instance, ("reachable", instance.instance_id, account),
            lambda account=account: self._assignments.can_assign(  # type: ignore[misc]
                instance, account))
            for account in {a.account_id for a in assigned}}
        assigned = [a for a in assigned if reachable[a.account_id]]
        listed = await self._read(instance, ("permission-sets", instance.instance_id),
                                  lambda: self._sets.listing(instance))
        sets = {p.permission_set_id: p for p in listed}
        found: dict[tuple[str, str], PortalRole] = {}
        for a in assigned:
            ps = sets.get(a.permission_set_id)
            if ps is None:
                continue
            name = role_name(instance, ps, a.account_id)
            found[(a.account_id, ps.name)] = PortalRole(
                a.account_id, ps.name, arn.role(a.account_id, RESERVED_PATH, name), ps)
        return [found[k] for k in sorted(found)]

    async def accounts(self, instance: Instance, user_id: str) -> list[AccountEntry]:
        accounts = sorted({r.account_id for r in await self.portal_roles(instance, user_id)})
        return [await self._account_entry(instance, a) for a in accounts]

    async def roles(self, instance: Instance, user_id: str, account_id: str) -> list[str]:
        return [r.role_name for r in await self.portal_roles(instance, user_id)
                if r.account_id == account_id]

    async def role(self, instance: Instance, user_id: str, account_id: str,
                   role_name: str) -> PortalRole:
        for r in await self.portal_roles(instance, user_id):
            if r.account_id == account_id and r.role_name == role_name:
                return r
        raise NotAssigned(f"No role {role_name} in account {account_id} is assigned to "
                          "this user.")

    async def _configuration(self, instance: Instance) -> Configuration | None:
        control = self._access_control
        if control is None:
            return None
        return await self._read(instance, ("access-control", instance.instance_id),
                                lambda: control.of(instance))

    async def session_tags(self, instance: Instance, user: DirectoryUser,
                           asserted: Mapping[str, str] | None = None
                           ) -> tuple[tuple[str, str], ...]:
        """The session tags the user's role sessions carry (abac.session_tags); NotAssigned
        when an attribute cannot be one."""
        configuration = await self._configuration(instance)
        if configuration is None:
            return ()
        try:
            return session_tags(configuration, user.attributes(), asserted)
        except Untaggable as exc:
            raise NotAssigned(str(exc)) from None

    async def credentials(self, instance: Instance, user: DirectoryUser, account_id: str,
                          role_name: str, *, asserted: Mapping[str, str] | None = None
                          ) -> IssuedCredentials:
        """The role's credentials for the user; NotAssigned when it is not theirs (or not
        provisioned as it should be). ``asserted``: the attributes for access control the
        external IdP's assertion carried (``…/SAML/Attributes/AccessControl:KEY``: KEY →
        value), when the person signed in through one."""
        chosen = await self.role(instance, user.user_id, account_id, role_name)
        role = await self._sts.role(chosen.role_arn)
        if role is None or role.path != RESERVED_PATH:
            raise NotAssigned(f"The role {role_name} is not provisioned in account "
                              f"{account_id}.")
        provider = f"arn:{arn.PARTITION}:iam::{account_id}:saml-provider/" \
            f"{provider_name(instance)}"
        organization = None if self._guard is None else await self._guard.of(account_id)
        name = session_name(user.user_name)
        tags = await self.session_tags(instance, user, asserted)
        try:
            federated.authorize(
                self._permissions, role, provider_arn=provider, provider_account=account_id,
                principal_type="SAMLUser", action="sts:AssumeRoleWithSAML",
                refusal="Not authorized to perform sts:AssumeRoleWithSAML",
                now=self._clock.now(),
                keys={"saml:aud": self._audience, "saml:sub": user.user_name,
                      "saml:doc": f"{account_id}/{provider_name(instance)}"},
                tags=tags, transitive=(), identity=None, organization=organization)
        except AwsError as exc:
            raise NotAssigned(exc.message) from None
        try:
            return await self._sts.federated_role_session(role, name, role.max_session,
                                                          tags=tags)
        except AwsError as exc:  # the attributes' tags beyond STS's packed size
            raise NotAssigned(exc.message) from None

    async def console_url(self, instance: Instance, user: DirectoryUser, account_id: str,
                          role_name: str, *, asserted: Mapping[str, str] | None = None) -> str:
        """Where "Management console" sends the browser: the federation endpoint's login with
        a sign-in token of the role's session (docs/console.md), back to the portal when the
        console signs out. NotAssigned as ``credentials``."""
        assert self._federation is not None
        issued = await self.credentials(instance, user, account_id, role_name,
                                        asserted=asserted)
        token = await self._federation.signin_token(issued.session, issued.token, None)
        portal = start_url(self._public_url, instance)
        return (f"{self._public_url}/federation?" + urlencode({
            "Action": "login", "Issuer": portal, "Destination": f"{self._public_url}/console",
            "SigninToken": token}))
