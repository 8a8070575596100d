"""Development mode's demo identity provider: a few demo people and roles, so that a newcomer can
click from sign-in to role chooser to console to credentials on a laptop.

The demo people are IAM users of a demo account with console passwords (argon2-hashed, as any
login profile); signing in checks the password, and the role chooser lists the demo roles the
person may assume — decided by the same policy evaluation as AssumeRole (the role's trust
policy and the person's own policy). The chosen role is assumed by AssumeRole's own
authorization. Nothing here bypasses a check: only the people, their passwords and their roles
are made up. ``ensure`` creates what is missing at every start (and changes nothing that is
there); the broker refuses to run in development mode unless it listens on loopback only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import AccessDenied, EntityAlreadyExists, NoSuchEntity
from broker.iam.logins import verify
from broker.iam.service import IamService
from broker.principal import Principal, PrincipalType
from broker.store.base import EphemeralStore
from broker.sts.api import authorized_assume_role
from broker.sts.service import IssuedCredentials, StsService

ACCOUNT = "111122223333"
ALIAS = "demo"
CHOICE_SECONDS = 300
_CHOICE = "demo-choice:"


@dataclass(frozen=True)
class DemoRole:
    name: str
    description: str
    policy_arn: str | None = None
    inline: str | None = None


@dataclass(frozen=True)
class DemoPerson:
    name: str
    display: str
    password: str  # shown on the demo sign-in page: this is development mode
    roles: tuple[str, ...]


ROLES = (
    DemoRole("Admin", "Everything", policy_arn="arn:aws:iam::aws:policy/AdministratorAccess"),
    DemoRole("Developer", "Read IAM, call STS", inline=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["iam:Get*", "iam:List*", "sts:*"],
            "Resource": "*"}]})),
    DemoRole("ReadOnly", "Read IAM", policy_arn="arn:aws:iam::aws:policy/IAMReadOnlyAccess"),
)
PEOPLE = (
    DemoPerson("alice", "Alice (platform admin)", "Demo-alice-1", ("Admin", "Developer",
                                                                   "ReadOnly")),
    DemoPerson("bob", "Bob (developer)", "Demo-bob-1", ("Developer", "ReadOnly")),
    DemoPerson("carol", "Carol (auditor)", "Demo-carol-1", ("ReadOnly",)),
)


def role_arn(name: str) -> str:
    return arn.role(ACCOUNT, "/", name)


class DemoIdentityProvider:
    def __init__(self, iam: IamService, sts: StsService, authz: Authorizer,
                 ephemeral: EphemeralStore) -> None:
        self._iam = iam
        self._sts = sts
        self._authz = authz
        self._ephemeral = ephemeral
        self.people = PEOPLE

    async def ensure(self) -> None:
        """The demo account, roles and people, made if missing."""
        iam = self._iam
        try:
            await iam.get_account(ACCOUNT)
        except NoSuchEntity:
            await iam.create_account(ACCOUNT)
        if (await iam.get_account(ACCOUNT)).alias is None:
            # Another account may hold the alias: the demo works without it.
            with contextlib.suppress(EntityAlreadyExists):
                await iam.set_alias(ACCOUNT, ALIAS)
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": arn.root(ACCOUNT)},
            "Action": ["sts:AssumeRole", "sts:TagSession"]}]})
        for role in ROLES:
            try:
                await iam.roles.get(ACCOUNT, role.name)
                continue
            except NoSuchEntity:
                pass
            await iam.roles.create(ACCOUNT, role.name, trust, description=role.description,
                                   max_session=43200)
            if role.policy_arn:
                await iam.policies.attach("role", ACCOUNT, role.name, role.policy_arn)
            if role.inline:
                await iam.policies.put_inline("role", ACCOUNT, role.name, "demo", role.inline)
        for person in PEOPLE:
            try:
                await iam.get_user(ACCOUNT, person.name)
                continue
            except NoSuchEntity:
                pass
            await iam.create_user(ACCOUNT, person.name)
            await iam.logins.create(ACCOUNT, person.name, person.password)
            policy = json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "sts:AssumeRole",
                "Resource": [role_arn(r) for r in person.roles]}]})
            await iam.policies.put_inline("user", ACCOUNT, person.name, "assume-demo-roles",
                                          policy)

    async def sign_in(self, name: str, password: str) -> Principal:
        """The person, if the password is theirs; one refusal for every failure."""
        refused = AccessDenied("Unknown person or wrong password.")
        if name not in {p.name for p in PEOPLE}:
            raise refused
        try:
            user, profile = await self._iam.logins.get(ACCOUNT, name)
        except NoSuchEntity:
            raise refused from None
        if not verify(profile.password_hash, password):
            raise refused
        return Principal(type=PrincipalType.USER, account_id=ACCOUNT, arn=user.arn,
                         user_id=user.user_id, name=user.name, access_key_id="")

    async def assumable(self, principal: Principal) -> list[str]:
        """The demo roles this person may assume, by the trust and identity policies."""
        allowed = []
        for role in ROLES:
            found = await self._sts.role(role_arn(role.name))
            if found is None:
                continue
            try:
                await self._authz.check(
                    principal, "sts:AssumeRole", found.arn,
                    context={"sts:RoleSessionName": principal.name},
                    resource_policies=(self._authz.permissions.trust_of(found),),
                    resource_account=found.account_id, requires_resource_policy=True)
            except AccessDenied:
                continue
            allowed.append(found.arn)
        return allowed

    async def hold(self, principal: Principal) -> tuple[str, str]:
        """Keep the signed-in person for the role chooser: (handle for a cookie, CSRF token)."""
        handle = secrets.token_urlsafe(32)
        await self._ephemeral.set(_key(handle), principal.name.encode(), CHOICE_SECONDS)
        return handle, csrf(handle)

    async def choose(self, handle: str | None, token: str | None,
                     chosen_role: str) -> IssuedCredentials:
        """The chosen role's session for the person held behind ``handle`` (once)."""
        if not handle or not token or len(handle) > 128 or \
                not hmac.compare_digest(token.encode(), csrf(handle).encode()):
            raise AccessDenied("The role chooser form is not this browser's (CSRF token "
                               "mismatch), or it has expired: sign in again.")
        name = await self._ephemeral.take(_key(handle))
        if name is None:
            raise AccessDenied("The role choice has expired or was already made: sign in "
                               "again.")
        user = await self._iam.get_user(ACCOUNT, name.decode())
        principal = Principal(type=PrincipalType.USER, account_id=ACCOUNT, arn=user.arn,
                              user_id=user.user_id, name=user.name, access_key_id="")
        return await authorized_assume_role(self._sts, self._authz, principal, chosen_role,
                                            principal.name)


def csrf(handle: str) -> str:
    return hmac.new(handle.encode(), b"demo-choice", hashlib.sha256).hexdigest()


def _key(handle: str) -> str:
    return _CHOICE + hashlib.sha256(handle.encode()).hexdigest()
