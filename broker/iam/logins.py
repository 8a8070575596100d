"""Console passwords: login profiles, the account's password policy, ChangePassword.

Passwords are hashed with argon2 and never kept or logged in clear. A password is checked
against the account's password policy, or, when the account has none, against AWS's default
(at least eight characters, of at least three of the four kinds).
"""

from __future__ import annotations

import string
from dataclasses import replace

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from broker.aws.errors import (
    EntityAlreadyExists,
    InvalidInput,
    NoSuchEntity,
    PasswordPolicyViolation,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import LoginProfile, PasswordPolicy, RootUser, User, decode, encode
from broker.iam.records import Entities, missing_user
from broker.store.base import Record

_HASHER = PasswordHasher()
MAX_HISTORY = 24  # PasswordReusePrevention's maximum


class Logins:
    def __init__(self, entities: Entities, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    # -- login profiles -------------------------------------------------------------------------

    async def create(self, account: str, user_name: str, password: str,
                     reset_required: bool = False) -> User:
        await self.check_password(account, password)
        profile = LoginProfile(_HASHER.hash(password), self._clock.now(), reset_required)

        def add(user: User) -> User:
            if user.login is not None:
                raise EntityAlreadyExists(f"Login Profile for user {user.name} already exists.")
            return replace(user, login=profile)

        return await self._change(account, user_name, add)

    async def get(self, account: str, user_name: str) -> tuple[User, LoginProfile]:
        user = await self._entities.get(User, User.ref(account, user_name),
                                        lambda: missing_user(user_name))
        if user.login is None:
            raise _no_profile(user_name)
        return user, user.login

    async def update(self, account: str, user_name: str, password: str | None,
                     reset_required: bool | None) -> None:
        policy = await self.policy(account)
        if password is not None:
            check_against(policy, password)
            if policy is not None and policy.reuse_prevention:
                _, current = await self.get(account, user_name)
                earlier = (current.password_hash, *current.history)
                if any(verify(h, password) for h in earlier[:policy.reuse_prevention]):
                    raise PasswordPolicyViolation(
                        "Password should meet 1 more of the following requirement: Password "
                        f"should not be one of your {policy.reuse_prevention} previous "
                        "passwords")
        hashed = _HASHER.hash(password) if password is not None else None
        now = self._clock.now()

        def change(user: User) -> User:
            if user.login is None:
                raise _no_profile(user_name)
            login = user.login
            if hashed is not None:
                login = replace(login, password_hash=hashed, changed=now,
                                history=(login.password_hash, *login.history)[:MAX_HISTORY])
            if reset_required is not None:
                login = replace(login, reset_required=reset_required)
            return replace(user, login=login)

        await self._change(account, user_name, change)

    async def delete(self, account: str, user_name: str) -> None:
        def drop(user: User) -> User:
            if user.login is None:
                raise _no_profile(user_name)
            return replace(user, login=None)

        await self._change(account, user_name, drop)

    # -- the root user's password (centralized root access's tasks) ----------------------------

    async def root_profile(self, account: str) -> RootUser:
        """The root user, if it has a password; NoSuchEntity otherwise."""
        root = await self._entities.get(RootUser, RootUser.ref(account),
                                        lambda: _no_profile("root"))
        if root.password_hash is None:
            raise _no_profile("root")
        return root

    async def delete_root(self, account: str) -> None:
        def drop(root: RootUser) -> RootUser:
            if root.password_hash is None:
                raise _no_profile("root")
            return replace(root, password_hash=None, password_changed=None)

        await self._entities.change(RootUser, RootUser.ref(account), drop,
                                    lambda: _no_profile("root"))

    async def change_password(self, account: str, user_name: str, old: str, new: str) -> None:
        _, profile = await self.get(account, user_name)
        if not verify(profile.password_hash, old):
            raise InvalidInput("The old password was incorrect.")
        await self.update(account, user_name, new, False)

    async def used(self, account: str, user_name: str) -> None:
        """Note a console sign-in with the user's password (PasswordLastUsed)."""
        now = self._clock.now()

        def note(user: User) -> User:
            if user.login is None:
                return user
            return replace(user, login=replace(user.login, last_used=now))

        await self._change(account, user_name, note)

    async def _change(self, account: str, user_name: str, change: object) -> User:
        return await self._entities.change(User, User.ref(account, user_name),
                                           change,  # type: ignore[arg-type]
                                           lambda: missing_user(user_name))

    # -- the password policy --------------------------------------------------------------------

    async def policy(self, account: str) -> PasswordPolicy | None:
        try:
            record = await self._entities.store.get(PasswordPolicy.ref(account))
        except NotFound:
            return None
        return decode(PasswordPolicy, record.data)

    async def set_policy(self, account: str, policy: PasswordPolicy) -> None:
        ref = PasswordPolicy.ref(account)
        data = encode(policy)
        try:
            await self._entities.store.create(
                Record(kind=ref.kind, account=account, key=ref.key, data=data))
        except AlreadyExists:
            await self._entities.store.update(ref, lambda _: data)

    async def delete_policy(self, account: str) -> None:
        try:
            await self._entities.store.delete(PasswordPolicy.ref(account))
        except NotFound:
            raise NoSuchEntity(
                f"The Password Policy with domain name {account} cannot be found.") from None

    async def check_password(self, account: str, password: str) -> None:
        check_against(await self.policy(account), password)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_against(policy: PasswordPolicy | None, password: str) -> None:
    """PasswordPolicyViolation unless the password meets the policy (None: AWS's default,
    which is also the root user's rule: eight characters of three of the four kinds)."""
    faults = []
    if policy is None:
        kinds = sum((_has(password, UPPERCASE), _has(password, LOWERCASE),
                     _has(password, NUMBERS), _has(password, SYMBOLS)))
        if len(password) < 8:
            faults.append("Password should have a minimum length of 8")
        if kinds < 3:
            faults.append("Password should have at least three of: uppercase letters, "
                          "lowercase letters, numbers, symbols")
    else:
        if len(password) < policy.minimum_length:
            faults.append(f"Password should have a minimum length of "
                          f"{policy.minimum_length}")
        if policy.require_uppercase and not _has(password, UPPERCASE):
            faults.append("Password should have at least one uppercase letter")
        if policy.require_lowercase and not _has(password, LOWERCASE):
            faults.append("Password should have at least one lowercase letter")
        if policy.require_numbers and not _has(password, NUMBERS):
            faults.append("Password should have at least one number")
        if policy.require_symbols and not _has(password, SYMBOLS):
            faults.append("Password should have at least one symbol")
    if faults:
        noun = "requirement" if len(faults) == 1 else "requirements"
        raise PasswordPolicyViolation(
            f"Password should meet {len(faults)} more of the following {noun}: "
            + ", ".join(faults))


# The characters each Require* setting asks for, as UpdateAccountPasswordPolicy documents
# them: the ISO basic Latin letters, the digits 0 to 9, and these symbols only.
UPPERCASE = frozenset(string.ascii_uppercase)
LOWERCASE = frozenset(string.ascii_lowercase)
NUMBERS = frozenset(string.digits)
SYMBOLS = frozenset("!@#$%^&*()_+-=[]{}|'")


def _has(password: str, kind: frozenset[str]) -> bool:
    return not kind.isdisjoint(password)


def verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _no_profile(user_name: str) -> NoSuchEntity:
    return NoSuchEntity(f"Login Profile for User {user_name} cannot be found.")
