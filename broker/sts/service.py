"""STS use cases: session tokens, federation tokens, assumed roles, and whose key is this.

Plain Python. The Query API (sts/api.py) parses, authorizes and renders; these methods make
the credentials and hold AWS's rules for them (durations, chaining, tags, source identity).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from broker.aws import arn, ids
from broker.aws.errors import AccessDenied, InvalidParameterValue, ValidationError
from broker.clock import Clock
from broker.errors import NotFound
from broker.frozen import frozen
from broker.iam.entities import ROLE, Role, name_key
from broker.iam.permissions import Permissions
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.principal import Principal, PrincipalType
from broker.store.base import Ref
from broker.sts import sessions, tokens
from broker.sts.tokens import Session, SessionKind

CHAINED_MAX = 3600
DEFAULT_ROLE_DURATION = 3600


@frozen
class IssuedCredentials:
    session: Session
    token: str
    packed_policy_size: int | None = None

    @property
    def token_utilization(self) -> int:
        return min(100, math.ceil(100 * len(self.token) / tokens.MAX_TOKEN_BYTES))


class StsService:
    def __init__(self, iam: IamService, permissions: Permissions, keyring: Keyring,
                 clock: Clock) -> None:
        self._iam = iam
        self._permissions = permissions
        self._keyring = keyring
        self._clock = clock

    async def get_session_token(self, caller: Principal, *, duration: int | None = None,
                                serial_number: str | None = None,
                                token_code: str | None = None,
                                minimum_token_size: int = 0) -> IssuedCredentials:
        mfa = await self.mfa(caller, serial_number, token_code)
        return self.session_token(caller, mfa=mfa, duration=duration,
                                  minimum_token_size=minimum_token_size)

    def session_token(self, caller: Principal, *, mfa: bool, duration: int | None = None,
                      minimum_token_size: int = 0) -> IssuedCredentials:
        """GetSessionToken's credentials for the user (or root), once ``mfa`` is settled:
        proved by the request's code, or by the console sign-in they are made for."""
        seconds = sessions.duration(duration, root=caller.is_root)
        session = self._session(
            SessionKind.SESSION_TOKEN, seconds, account=caller.account_id,
            arn_=caller.arn, user_id=caller.user_id, name=caller.name,
            source_arn=caller.arn, source_id=caller.user_id, mfa=mfa,
        )
        return IssuedCredentials(session, tokens.padded(session, self._keyring,
                                                        minimum_token_size))

    async def console_session(self, person: Principal, *, mfa: bool,
                              seconds: int) -> IssuedCredentials:
        """The credentials of an IAM user's or root user's console session, once the broker's
        sign-in checked the password (and the code, ``mfa``): they act as the user, and
        never leave the broker (SessionKind.CONSOLE)."""
        session = self._session(
            SessionKind.CONSOLE, seconds, account=person.account_id,
            arn_=person.arn, user_id=person.user_id, name=person.name,
            source_arn=person.arn, source_id=person.user_id, mfa=mfa,
        )
        return IssuedCredentials(session, tokens.seal(session, self._keyring))

    def root_task_session(self, caller: Principal, account: str, task_arn: str, *,
                          seconds: int) -> IssuedCredentials:
        """AssumeRoot's credentials: the member account's root user, for the task policy's
        actions only (SessionKind.ROOT_TASK); the caller is who made it (source)."""
        session = self._session(
            SessionKind.ROOT_TASK, seconds, account=account, arn_=arn.root(account),
            user_id=account, name=account, source_arn=caller.arn, source_id=caller.user_id,
            policy_arns=(task_arn,))
        return IssuedCredentials(session, tokens.seal(session, self._keyring))

    async def get_federation_token(self, caller: Principal, name: str, *,
                                   duration: int | None = None, policy: str | None = None,
                                   policy_arns: Sequence[str] = (),
                                   tags: Sequence[tuple[str, str]] = (),
                                   minimum_token_size: int = 0) -> IssuedCredentials:
        federated_arn = arn.federated_user(caller.account_id, name)
        sessions.check_tags(tags)
        packed_policy, size = sessions.session_policies(policy, policy_arns, tags)
        seconds = sessions.duration(duration, root=caller.is_root)
        session = self._session(
            SessionKind.FEDERATED_USER, seconds, account=caller.account_id,
            arn_=federated_arn, user_id=f"{caller.account_id}:{name}", name=name,
            source_arn=caller.arn, source_id=caller.user_id,
            tags=tuple(tags), policy=packed_policy, policy_arns=tuple(policy_arns),
        )
        token = tokens.padded(session, self._keyring, minimum_token_size)
        return IssuedCredentials(session, token, size)

    async def mfa(self, caller: Principal, serial_number: str | None,
                   token_code: str | None) -> bool:
        """Whether the request proves MFA: a code of a device enabled for the calling user (or
        root), spent once across every process; AWS's AccessDenied for a wrong, reused or
        foreign code, or for a caller that is no user."""
        if not _both_or_neither(serial_number, token_code):
            return False
        assert serial_number is not None and token_code is not None
        if caller.is_root:
            user = None
        elif caller.type is PrincipalType.USER:
            user = caller.name
        else:
            raise AccessDenied(
                "MultiFactorAuthentication failed, unable to validate MFA code. Please verify "
                "your MFA serial number is valid and associated with this user.")
        await self._iam.mfa.check_code(caller.account_id, user, serial_number, token_code)
        return True

    async def role(self, role_arn: str) -> Role | None:
        """The role an ARN names, if it exists (at that path) in an account of this broker;
        kept as long as IAM's other answers (``Permissions.cached``)."""
        return await self._permissions.cached(("role-arn", role_arn),
                                              lambda: self._look_up_role(role_arn))

    async def _look_up_role(self, role_arn: str) -> Role | None:
        parsed = arn.parse(role_arn)
        if parsed is None or parsed.service != "iam" or not parsed.resource.startswith("role/"):
            return None
        name = parsed.resource.rsplit("/", 1)[-1]
        try:
            record = await self._iam.store.get(Ref(ROLE, parsed.account, name_key(name)))
        except NotFound:
            return None
        role = Role.of(record)
        return role if role.arn == role_arn else None

    async def assume_role(self, caller: Principal, role: Role, session_name: str, *,
                          duration: int | None = None, policy: str | None = None,
                          policy_arns: Sequence[str] = (),
                          tags: Sequence[tuple[str, str]] = (),
                          transitive_keys: Sequence[str] = (),
                          source_identity: str | None = None, mfa: bool = False,
                          minimum_token_size: int = 0) -> IssuedCredentials:
        """Credentials of the role, once the caller has been authorized to assume it; ``mfa``:
        the request proved MFA (``authorized_assume_role`` checks the code with ``mfa`` before
        the trust policy is evaluated)."""
        previous = caller.session
        chained = previous is not None and previous.kind is SessionKind.ASSUMED_ROLE
        seconds = DEFAULT_ROLE_DURATION if duration is None else duration
        if seconds > role.max_session:
            raise ValidationError(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        if chained and seconds > CHAINED_MAX:
            raise ValidationError("The requested DurationSeconds exceeds the 1 hour session "
                                  "limit for roles assumed by role chaining.")
        all_tags, all_transitive = session_tags(previous, tags, transitive_keys)
        identity = source_identity
        if previous is not None and previous.source_identity is not None:
            if source_identity is not None and source_identity != previous.source_identity:
                raise InvalidParameterValue(
                    "The source identity cannot be changed along a chain of sessions: "
                    f"it is already {previous.source_identity}.")
            identity = previous.source_identity
        if policy is not None and len(policy) > 2048:
            raise ValidationError.from_faults([
                f"Value '{policy[:64]}...' at 'policy' failed to satisfy constraint: Member "
                "must have length less than or equal to 2048"])
        packed_policy, size = sessions.session_policies(policy, policy_arns, tags,
                                                        counted=all_tags)
        session = self._session(
            SessionKind.ASSUMED_ROLE, seconds, account=role.account_id,
            arn_=arn.assumed_role(role.account_id, role.name, session_name),
            user_id=f"{role.role_id}:{session_name}", name=session_name,
            source_arn=role.arn, source_id=role.role_id,
            tags=all_tags, transitive=all_transitive, source_identity=identity,
            policy=packed_policy, policy_arns=tuple(policy_arns),
            chain_depth=(previous.chain_depth + 1) if previous is not None else 1,
            mfa=mfa or (previous.mfa if previous is not None else False),
        )
        token = tokens.padded(session, self._keyring, minimum_token_size)
        return IssuedCredentials(session, token, size)

    async def federated_role_session(self, role: Role, session_name: str, seconds: int, *,
                                     tags: Sequence[tuple[str, str]] = (),
                                     transitive_keys: Sequence[str] = (),
                                     source_identity: str | None = None,
                                     policy: str | None = None,
                                     policy_arns: Sequence[str] = (),
                                     minimum_token_size: int = 0) -> IssuedCredentials:
        """A session of the role for someone an identity provider vouched for
        (AssumeRoleWithSAML, AssumeRoleWithWebIdentity): no calling session to chain from, so
        the session tags and source identity are the identity provider's alone."""
        sessions.check_tags(tags)
        packed_policy, size = sessions.session_policies(policy, policy_arns, tags)
        session = self._session(
            SessionKind.ASSUMED_ROLE, seconds, account=role.account_id,
            arn_=arn.assumed_role(role.account_id, role.name, session_name),
            user_id=f"{role.role_id}:{session_name}", name=session_name,
            source_arn=role.arn, source_id=role.role_id, chain_depth=1,
            tags=tuple(tags), transitive=tuple(transitive_keys),
            source_identity=source_identity, policy=packed_policy,
            policy_arns=tuple(policy_arns),
        )
        token = tokens.padded(session, self._keyring, minimum_token_size)
        return IssuedCredentials(session, token, size)

    def console_credentials(self, session: Session, expires_at: int) -> IssuedCredentials:
        """New keys for the same role session, lasting until ``expires_at``: what the
        federation endpoint gives a console session asked to last longer than the credentials
        it was made from (``SessionDuration``). Everything but the keys and the expiry is the
        session's own — principal, tags, source identity, session policies, chain depth, and
        its issue time, which revoke-sessions policies compare against."""
        fresh = dataclasses.replace(
            session, access_key_id=ids.new_access_key_id(session.account_id, temporary=True),
            secret_access_key=ids.new_secret_access_key(), expires_at=expires_at, padding="")
        return IssuedCredentials(fresh, tokens.seal(fresh, self._keyring))

    async def get_access_key_info(self, access_key_id: str) -> str:
        """The account that owns an access key id (AWS answers even for keys it never issued,
        from the id itself; so does the broker, for ids of its own form)."""
        key = await self._iam.find_access_key(access_key_id)
        if key is not None:
            return key.account_id
        account = ids.account_of_access_key_id(access_key_id)
        if account is None:
            raise InvalidParameterValue(
                f"The access key id {access_key_id} is not of a form this broker issues."
            )
        return account

    def _session(self, kind: SessionKind, seconds: int, *, account: str,
                 arn_: str, user_id: str, name: str, source_arn: str, source_id: str,
                 tags: tuple[tuple[str, str], ...] = (), transitive: tuple[str, ...] = (),
                 source_identity: str | None = None, policy: str | None = None,
                 policy_arns: tuple[str, ...] = (), chain_depth: int = 0,
                 mfa: bool = False) -> Session:
        now = int(self._clock.now().timestamp())
        key_id, secret = ids.new_key_pair(account, temporary=True)
        return Session(
            access_key_id=key_id,
            secret_access_key=secret,
            kind=kind,
            account_id=account,
            arn=arn_,
            user_id=user_id,
            name=name,
            source_arn=source_arn,
            source_id=source_id,
            issued_at=now,
            expires_at=now + seconds,
            mfa=mfa,
            chain_depth=chain_depth,
            tags=tags,
            transitive_tag_keys=transitive,
            source_identity=source_identity,
            policy=policy,
            policy_arns=policy_arns,
        )


def session_tags(previous: Session | None, tags: Sequence[tuple[str, str]],
                 transitive_keys: Sequence[str]
                 ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The new session's tags and transitive tag keys: the caller's transitive tags carried
    over, then the requested ones, which may not restate an inherited key."""
    sessions.check_tags(tags)
    asked = {k.lower() for k, _ in tags}
    for key in transitive_keys:
        if key.lower() not in asked:
            raise InvalidParameterValue(
                f"The transitive tag key {key} must be one of the session tags passed.")
    inherited: list[tuple[str, str]] = []
    carried: list[str] = []
    if previous is not None:
        keys = {k.lower() for k in previous.transitive_tag_keys}
        inherited = [(k, v) for k, v in previous.tags if k.lower() in keys]
        carried = list(previous.transitive_tag_keys)
    for key, _ in inherited:
        if key.lower() in asked:
            raise InvalidParameterValue(
                f"The session tag {key} conflicts with a transitive tag inherited from the "
                "calling session.")
    transitive = carried + [k for k in transitive_keys
                            if k.lower() not in {c.lower() for c in carried}]
    return tuple(inherited) + tuple(tags), tuple(transitive)


def _both_or_neither(serial_number: str | None, token_code: str | None) -> bool:
    """Whether an MFA code was given; AWS's AccessDenied when only half of it was."""
    if serial_number is None and token_code is None:
        return False
    if serial_number is None or token_code is None:
        raise AccessDenied(
            "MultiFactorAuthentication failed, must provide both MFA serial number and one "
            "time pass code."
        )
    return True
