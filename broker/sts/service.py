"""STS use cases: session tokens, federation tokens, and whose key is this.

Plain Python. The Query API (sts/api.py) parses, authorizes and renders; these methods make
the credentials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from broker.aws import arn, ids
from broker.aws.errors import AccessDenied, InvalidParameterValue
from broker.clock import Clock
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.principal import Principal
from broker.sts import sessions, tokens
from broker.sts.tokens import Session, SessionKind


@dataclass(frozen=True)
class IssuedCredentials:
    session: Session
    token: str
    packed_policy_size: int | None = None

    @property
    def token_utilization(self) -> int:
        return min(100, math.ceil(100 * len(self.token) / tokens.MAX_TOKEN_BYTES))


class StsService:
    def __init__(self, iam: IamService, keyring: Keyring, clock: Clock) -> None:
        self._iam = iam
        self._keyring = keyring
        self._clock = clock

    async def get_session_token(self, caller: Principal, *, duration: int | None = None,
                                serial_number: str | None = None,
                                token_code: str | None = None,
                                minimum_token_size: int = 0) -> IssuedCredentials:
        _check_mfa(serial_number, token_code)
        seconds = sessions.duration(duration, root=caller.is_root)
        session = self._session(
            caller, SessionKind.SESSION_TOKEN, seconds,
            arn_=caller.arn, user_id=caller.user_id, name=caller.name,
        )
        return IssuedCredentials(session, tokens.padded(session, self._keyring,
                                                        minimum_token_size))

    async def get_federation_token(self, caller: Principal, name: str, *,
                                   duration: int | None = None, policy: str | None = None,
                                   policy_arns: Sequence[str] = (),
                                   tags: Sequence[tuple[str, str]] = (),
                                   minimum_token_size: int = 0) -> IssuedCredentials:
        federated_arn = arn.federated_user(caller.account_id, name)
        sessions.check_tags(tags)
        packed_policy = sessions.check_policy(policy) if policy is not None else None
        sessions.check_policy_arns(policy_arns)
        size = None
        if packed_policy is not None or policy_arns or tags:
            size = sessions.packed_size(packed_policy, policy_arns, tags)
        seconds = sessions.duration(duration, root=caller.is_root)
        session = self._session(
            caller, SessionKind.FEDERATED_USER, seconds,
            arn_=federated_arn, user_id=f"{caller.account_id}:{name}", name=name,
            tags=tuple(tags), policy=packed_policy, policy_arns=tuple(policy_arns),
        )
        token = tokens.padded(session, self._keyring, minimum_token_size)
        return IssuedCredentials(session, token, size)

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

    def _session(self, caller: Principal, kind: SessionKind, seconds: int, *, arn_: str,
                 user_id: str, name: str, tags: tuple[tuple[str, str], ...] = (),
                 policy: str | None = None, policy_arns: tuple[str, ...] = ()) -> Session:
        now = int(self._clock.now().timestamp())
        return Session(
            access_key_id=ids.new_access_key_id(caller.account_id, temporary=True),
            secret_access_key=ids.new_secret_access_key(),
            kind=kind,
            account_id=caller.account_id,
            arn=arn_,
            user_id=user_id,
            name=name,
            source_arn=caller.arn,
            issued_at=now,
            expires_at=now + seconds,
            tags=tags,
            policy=policy,
            policy_arns=policy_arns,
        )


def _check_mfa(serial_number: str | None, token_code: str | None) -> None:
    if serial_number is None and token_code is None:
        return
    if serial_number is None or token_code is None:
        raise AccessDenied(
            "MultiFactorAuthentication failed, must provide both MFA serial number and one "
            "time pass code."
        )
    # No MFA device can be registered yet, so no serial number can be valid.
    raise AccessDenied(
        "MultiFactorAuthentication failed, unable to validate MFA code. Please verify your "
        "MFA serial number is valid and associated with this user."
    )
