"""The broker's own sign-in: an IAM user (account id or alias, user name, password) or a root
user (email address, password), then, when the user has an MFA device, a code of it; then a
console session of that user.

Guessing is slow and tells nothing:

* every refusal of the first step is the same sentence (``REFUSED``), whether the account, the
  user or the login profile does not exist, the password is wrong or the user is locked out; an
  unknown user costs the same Argon2id verification as a known one (against a hash made once);
* failures are counted in the ephemeral store, which every process shares, per user and per
  source address, for ``lock_seconds``; at ``max_failures`` for a user (ten times that for an
  address) sign-in is refused until the window ends, the right password included;
* the half-signed-in state between the password and the code is not a session: it is a record
  behind a random handle, bound to the browser's sign-in cookie, taken once, for five minutes.

A login profile that requires a reset, or a password older than the policy's MaxPasswordAge,
leads to a forced change (the current password again, the new one twice, ChangePassword's own
checks) before the MFA step; with HardExpiry an expired password is refused. A root user
without a device, where ``root_mfa_required``, registers one before reaching the console: a
new virtual device, its seed shown once, enabled by two consecutive codes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import (
    AccessDenied,
    InvalidAuthenticationCode,
    InvalidInput,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import NotFound
from broker.iam.entities import ALIAS, ROOT_EMAIL, RootUser, decode
from broker.iam.logins import hash_password, verify
from broker.iam.mfa import otpauth_uri
from broker.iam.service import IamService
from broker.metrics import throttled
from broker.principal import Principal, PrincipalType
from broker.signin.sessions import ConsoleSessions
from broker.signin.webauthn import SecurityKeys
from broker.store.base import GLOBAL, EphemeralStore, Ref
from broker.sts.service import IssuedCredentials, StsService

REFUSED = "Your authentication information is incorrect. Please try again."
MFA_REFUSED = "The MFA code is not valid. Please try again."
EXPIRED = "The sign-in has expired or was already completed: sign in again."
HARD_EXPIRED = ("Your password has expired, and only an administrator can reset it "
                "(the account's password policy has HardExpiry).")
PENDING_SECONDS = 300
SESSION_SECONDS = 12 * 3600  # an IAM user's console session, as AWS's
_PENDING = "signin-mfa:"
_CHANGE = "signin-change:"
_ENROL = "signin-enrol:"
_FAILED = "signin-failed:"
_LOCKED = "signin-locked:"
# Verified against when there is no user, so that an unknown name costs what a known one does.
_NOBODY = hash_password(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class Who:
    """A signed-in (or half-signed-in) person: an IAM user, or a root user (name None)."""

    account_id: str
    user_name: str | None

    @property
    def key(self) -> str:
        return f"{self.account_id}:{(self.user_name or '').lower()}"


@dataclass(frozen=True)
class Step:
    """The first step's outcome: a console session at once, or an MFA code to ask for."""

    who: Who
    pending: str | None = None  # the MFA step's handle, when a code is needed
    change: str | None = None  # the forced password change's handle
    enrol: str | None = None  # the root user's MFA registration's handle
    seed: str | None = None  # the new device's Base32 seed, shown once (enrolment)
    uri: str | None = None  # its otpauth:// URI (enrolment)
    started: tuple[str, int] | None = None  # (console cookie, seconds), when signed in
    arn: str = ""
    access_key_id: str | None = None
    totp: bool = False  # the MFA step may take a code (the user has a virtual device)
    webauthn: str | None = None  # the MFA step's security key options (JSON), if any


class PasswordSignIn:
    def __init__(self, iam: IamService, sts: StsService, authz: Authorizer,
                 sessions: ConsoleSessions, ephemeral: EphemeralStore, clock: Clock,
                 keys: SecurityKeys, *, root_mfa_required: bool,
                 max_failures: int, lock_seconds: int) -> None:
        self._iam = iam
        self._sts = sts
        self._authz = authz
        self._sessions = sessions
        self._ephemeral = ephemeral
        self._clock = clock
        self._keys = keys
        self._root_mfa_required = root_mfa_required
        self.throttle = Throttle(ephemeral, max_failures=max_failures,
                                 lock_seconds=lock_seconds)

    # -- the first step: the password ----------------------------------------------------------

    async def password(self, *, account: str | None, user_name: str | None,
                       email: str | None, password: str, source: str | None,
                       browser: str) -> Step:
        """Check the password; AccessDenied(REFUSED) for every failure alike."""
        found = await self._find(account, user_name, email)
        who = found[0] if found else Who(account or "", user_name if email is None else None)
        locked = await self.throttle.locked(who, source)
        hashed = found[1] if found and found[1] else _NOBODY
        matches = verify(hashed, password)  # always run, so that every refusal costs the same
        if locked or not found or not found[1] or not matches:
            await self.throttle.failed(who, source)
            raise AccessDenied(REFUSED)
        if who.user_name is not None and await self._must_change(who):
            handle = secrets.token_urlsafe(32)
            record = {"account": who.account_id, "user": who.user_name,
                      "browser": _digest(browser)}
            await self._ephemeral.set(_CHANGE + _digest(handle), json.dumps(record).encode(),
                                      PENDING_SECONDS)
            return Step(who, change=handle)
        return await self._after_password(who, browser)

    async def _after_password(self, who: Who, browser: str) -> Step:
        """The password is right (and current): the MFA step, or a session at once."""
        devices = await self._iam.mfa.of_owner(who.account_id, who.user_name)
        keys = await self._keys.authentication_options(who.account_id, who.user_name)
        if who.user_name is None and not devices and keys is None and self._root_mfa_required:
            return await self._enrolment(who, browser)
        if devices or keys is not None:
            handle = secrets.token_urlsafe(32)
            record = {"account": who.account_id, "user": who.user_name,
                      "browser": _digest(browser),
                      # A security key's assertion must sign this challenge: it is used at
                      # most once, as the record is taken once.
                      "challenge": keys[1] if keys else ""}
            await self._ephemeral.set(_PENDING + _digest(handle), json.dumps(record).encode(),
                                      PENDING_SECONDS)
            return Step(who, pending=handle, arn=_arn(who), totp=bool(devices),
                        webauthn=keys[0] if keys else None)
        return await self._signed_in(who, mfa=False)

    # -- a root user's MFA device, registered at sign-in ------------------------------------------

    async def _enrolment(self, who: Who, browser: str) -> Step:
        """A root user without a device, where one is required: a new virtual device to
        register before the console (AWS's rule for root users). Its seed is shown once."""
        name = f"root-{who.account_id}"
        serial = arn.mfa(who.account_id, "/", name)
        with contextlib.suppress(NoSuchEntity):  # an enrolment begun earlier and left
            old = await self._iam.mfa.get(who.account_id, serial)
            if not old.assigned:
                await self._iam.mfa.delete(who.account_id, serial)
        device, seed, _ = await self._iam.mfa.create_virtual(who.account_id, name, "/")
        handle = secrets.token_urlsafe(32)
        record = {"account": who.account_id, "user": None, "browser": _digest(browser),
                  "serial": device.serial}
        await self._ephemeral.set(_ENROL + _digest(handle), json.dumps(record).encode(),
                                  PENDING_SECONDS)
        return Step(who, enrol=handle, seed=seed, uri=otpauth_uri(seed, f"root@{who.account_id}"))

    async def enrol(self, handle: str | None, browser: str | None, code1: str,
                    code2: str) -> Step:
        """Two consecutive codes of the device the enrolment made: it is enabled for the root
        user, and the root user is signed in with MFA."""
        key, who = await self._pending(_ENROL, handle, browser)
        raw = await self._ephemeral.get(key)
        serial = json.loads(raw)["serial"] if raw else ""
        try:
            await self._iam.mfa.enable(who.account_id, None, serial, code1, code2)
        except InvalidAuthenticationCode:
            await self.throttle.failed(who, None)
            raise AccessDenied("Those are not two consecutive codes of the new device: "
                               "enter the code it shows, then the next one.") from None
        if await self._ephemeral.take(key) is None:
            raise AccessDenied(EXPIRED)
        return await self._signed_in(who, mfa=True)

    # -- a forced password change ---------------------------------------------------------------

    async def _must_change(self, who: Who) -> bool:
        """Whether the user must choose a new password before signing in: the login profile
        requires a reset, or the password is older than the policy's MaxPasswordAge (with
        HardExpiry: refused, only an administrator can reset it)."""
        assert who.user_name is not None
        _, profile = await self._iam.logins.get(who.account_id, who.user_name)
        policy = await self._iam.logins.policy(who.account_id)
        expired = policy is not None and policy.max_age is not None and \
            self._clock.now() >= profile.password_changed + timedelta(days=policy.max_age)
        if expired and policy is not None and policy.hard_expiry and not profile.reset_required:
            raise AccessDenied(HARD_EXPIRED)
        return profile.reset_required or expired

    async def change(self, handle: str | None, browser: str | None, current: str, new: str,
                     confirm: str) -> Step:
        """The forced password change of this browser's pending sign-in: the current
        password again, the new one twice; then the MFA step or a session."""
        key, who = await self._pending(_CHANGE, handle, browser)
        assert browser is not None
        if new != confirm:
            raise InvalidInput("The new password and its confirmation differ.")
        policy = await self._iam.logins.policy(who.account_id)
        # AllowUsersToChangePassword, or the user's own iam:ChangePassword (AWS's rule; with
        # no password policy, only the permission).
        if not (policy is not None and policy.allow_users_to_change) and \
                not await self._may_change(who):
            raise AccessDenied("Your password must be changed, but you may not change it: "
                               "ask your administrator to reset it.")
        # ChangePassword's own checks: the current password, the policy, earlier passwords.
        assert who.user_name is not None
        await self._iam.logins.change_password(who.account_id, who.user_name, current, new)
        if await self._ephemeral.take(key) is None:
            raise AccessDenied(EXPIRED)
        return await self._after_password(who, browser)

    async def _may_change(self, who: Who) -> bool:
        """iam:ChangePassword on the user's own ARN, by the user's policies."""
        principal = await self._principal(who)
        try:
            await self._authz.check(principal, "iam:ChangePassword", principal.arn)
        except AccessDenied:
            return False
        return True

    # -- the second step: the code --------------------------------------------------------------

    async def code(self, handle: str | None, browser: str | None, code: str,
                   source: str | None, assertion: str = "") -> Step:
        """A code of one of the user's devices, or a security key's assertion over the
        step's challenge, for the pending sign-in of this browser."""
        key, who = await self._pending(_PENDING, handle, browser)
        if await self.throttle.locked(who, source):
            await self._ephemeral.delete(key)
            raise AccessDenied(MFA_REFUSED)
        if assertion:
            raw = await self._ephemeral.get(key)
            challenge = str(json.loads(raw).get("challenge", "")) if raw else ""
            try:
                await self._keys.verify(who.account_id, who.user_name, assertion, challenge)
            except AccessDenied:
                await self.throttle.failed(who, source)
                raise AccessDenied(MFA_REFUSED) from None
            if await self._ephemeral.take(key) is None:  # taken once
                raise AccessDenied(EXPIRED)
            return await self._signed_in(who, mfa=True)
        for device in await self._iam.mfa.of_owner(who.account_id, who.user_name):
            try:
                await self._iam.mfa.check_code(who.account_id, who.user_name, device.serial,
                                               code)
            except AccessDenied:
                continue
            if await self._ephemeral.take(key) is None:  # taken once
                raise AccessDenied(EXPIRED)
            return await self._signed_in(who, mfa=True)
        await self.throttle.failed(who, source)
        raise AccessDenied(MFA_REFUSED)

    # -- helpers --------------------------------------------------------------------------------

    async def _pending(self, prefix: str, handle: str | None,
                       browser: str | None) -> tuple[str, Who]:
        """(its key, who) of this browser's pending step behind ``handle``; EXPIRED for a
        missing handle, one that is gone, or one another browser began."""
        if not handle or not browser or len(handle) > 128:
            raise AccessDenied(EXPIRED)
        key = prefix + _digest(handle)
        raw = await self._ephemeral.get(key)
        pending = json.loads(raw) if raw is not None else None
        if pending is None or not hmac.compare_digest(str(pending.get("browser")),
                                                      _digest(browser)):
            raise AccessDenied(EXPIRED)
        return key, Who(pending["account"], pending["user"])

    async def _find(self, account: str | None, user_name: str | None,
                    email: str | None) -> tuple[Who, str | None] | None:
        """(who, password hash or None) for the named person, or None if there is none."""
        store = self._iam.store
        if email is not None:
            try:
                owner = (await store.get(Ref(ROOT_EMAIL, GLOBAL, email.strip().lower())))
                account_id = str(owner.data["account"])
                root = decode(RootUser, {**(await store.get(RootUser.ref(account_id))).data,
                                         "account_id": account_id})
            except NotFound:
                return None
            return Who(account_id, None), root.password_hash
        if not account or not user_name:
            return None
        account_id = account
        if not (account.isdigit() and len(account) == 12):
            try:
                account_id = str((await store.get(Ref(ALIAS, GLOBAL, account.lower()))).data[
                    "account"])
            except NotFound:
                return None
        try:
            user = await self._iam.get_user(account_id, user_name)
        except NoSuchEntity:
            return None
        return Who(account_id, user.name), user.login.password_hash if user.login else None

    async def _signed_in(self, who: Who, *, mfa: bool) -> Step:
        principal = await self._principal(who)
        await self._note_used(who)
        issued: IssuedCredentials = await self._sts.console_session(principal, mfa=mfa,
                                                                    seconds=SESSION_SECONDS)
        cookie = await self._sessions.create(issued, issuer="signin")
        return Step(who, started=(cookie, SESSION_SECONDS), arn=principal.arn,
                    access_key_id=issued.session.access_key_id)

    async def _note_used(self, who: Who) -> None:
        """PasswordLastUsed (GetUser, the credential report): this sign-in."""
        if who.user_name is not None:
            await self._iam.logins.used(who.account_id, who.user_name)
            return
        now = self._clock.now().isoformat()
        await self._iam.store.update(RootUser.ref(who.account_id),
                                     lambda record: {**record.data, "password_last_used": now})

    async def _principal(self, who: Who) -> Principal:
        if who.user_name is None:
            return Principal(type=PrincipalType.ACCOUNT, account_id=who.account_id,
                             arn=arn.root(who.account_id), user_id=who.account_id,
                             name="root", access_key_id="")
        user = await self._iam.get_user(who.account_id, who.user_name)
        return Principal(type=PrincipalType.USER, account_id=who.account_id, arn=user.arn,
                         user_id=user.user_id, name=user.name, access_key_id="")


class Throttle:
    """Failed sign-ins, counted per user and per source address in the ephemeral store, and the
    lock-outs they lead to: what the sign-in checks, and what an administrator sees and
    clears (``broker signin status|unlock``)."""

    def __init__(self, ephemeral: EphemeralStore, *, max_failures: int,
                 lock_seconds: int) -> None:
        self._ephemeral = ephemeral
        self._max_failures = max_failures
        self._lock_seconds = lock_seconds

    async def locked(self, who: Who, source: str | None) -> bool:
        if await self._ephemeral.get(_LOCKED + _digest(who.key)) is not None:
            throttled("signin_user")
            return True
        if source is not None and \
                await self._ephemeral.get(_LOCKED + _digest("source:" + source)) is not None:
            throttled("signin_source")
            return True
        return False

    async def failed(self, who: Who, source: str | None) -> None:
        """Count a failure for the user and for the source address; lock at the limit."""
        ttl = self._lock_seconds
        count = await self._ephemeral.incr(_FAILED + _digest(who.key), ttl)
        await self._ephemeral.set(_FAILED + "count:" + _digest(who.key), str(count).encode(),
                                  ttl)
        if count >= self._max_failures:
            await self._ephemeral.put_if_absent(_LOCKED + _digest(who.key), b"1", ttl)
        if source is not None:
            key = _digest("source:" + source)
            if await self._ephemeral.incr(_FAILED + key, ttl) >= 10 * self._max_failures:
                await self._ephemeral.put_if_absent(_LOCKED + key, b"1", ttl)

    async def failures(self, account: str, user_name: str | None) -> tuple[int, bool]:
        """(failed sign-ins counted in the current window, whether the user is locked)."""
        who = Who(account, user_name)
        raw = await self._ephemeral.get(_LOCKED + _digest(who.key))
        count = await self._ephemeral.get(_FAILED + "count:" + _digest(who.key))
        return (int(count) if count else 0), raw is not None

    async def unlock(self, account: str, user_name: str | None) -> None:
        who = Who(account, user_name)
        for key in (_LOCKED + _digest(who.key), _FAILED + _digest(who.key),
                    _FAILED + "count:" + _digest(who.key)):
            await self._ephemeral.delete(key)


def _arn(who: Who) -> str:
    return arn.root(who.account_id) if who.user_name is None else ""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
