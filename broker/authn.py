"""Authentication: a SigV4-signed request becomes the Principal it speaks for.

Long-term keys (AKIA...) are looked up in the EntityStore and their sealed secret opened with
the keyring. An active key's lookup is kept as long as IAM's other answers are (see
``Permissions.cached``: ``iam.policy_cache_seconds``, and until this process next writes), so
a key deactivated or deleted elsewhere stops working within that time, and at once in the
process that changed it; unknown and inactive keys are looked up every time. Temporary keys
(ASIA...) carry their session in the security token, so verifying them touches no store at
all. Either way the signature is recomputed from the request as received (aws/sigv4.py).
Every refusal is an AWS error; nothing unverified gets through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from broker.aws import arn, ids, sigv4
from broker.aws.errors import (
    InvalidClientTokenId,
    MissingAuthenticationToken,
    NoSuchEntity,
    ServiceUnavailable,
)
from broker.aws.http import HttpRequest
from broker.aws.sigv4 import Claim
from broker.clock import Clock
from broker.errors import SealError
from broker.iam.entities import ACTIVE, LastUsed
from broker.iam.lastused import LastUsedRecorder
from broker.iam.permissions import Permissions
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.principal import Principal, PrincipalType
from broker.sts import tokens

log = logging.getLogger("broker.authn")


class Authenticator:
    def __init__(self, iam: IamService, permissions: Permissions, keyring: Keyring, clock: Clock,
                 last_used: LastUsedRecorder, *, skew: int, regions: Iterable[str] = ()) -> None:
        self._iam = iam
        self._permissions = permissions
        self._keyring = keyring
        self._clock = clock
        self._last_used = last_used
        self._tokens = tokens.OpenedTokens(keyring)
        # The principal of each recently opened session (it follows from the session alone).
        self._principals: dict[str, Principal] = {}
        self._keys: dict[tuple[str, str, str, str], bytes] = {}
        self._skew = skew
        self._regions = tuple(regions)

    async def authenticate(self, req: HttpRequest, query: Sequence[tuple[str, str]],
                           service: str) -> Principal:
        if not sigv4.has_auth(req, query):
            raise MissingAuthenticationToken()
        claim = sigv4.parse_claim(req, query)
        now = self._clock.now()
        sigv4.check_scope(claim, service=service, now=now, skew=self._skew,
                          regions=self._regions)
        if ids.is_temporary_key_id(claim.access_key_id):
            principal, secret = self._temporary(claim, now)
        else:
            principal, secret = await self._long_term(claim)
        sigv4.verify(req, query, claim, self._signing_key(claim, secret))
        if not principal.temporary:
            self._last_used.note(
                principal.account_id,
                principal.access_key_id,
                LastUsed(now, service, claim.region),
            )
        return principal

    def _signing_key(self, claim: Claim, secret: str) -> bytes:
        """The signing key of this secret and scope, remembered: a client signs every request
        of a day in one region with the same key (bounded; oldest forgotten first)."""
        scope = (secret, claim.scope_date, claim.region, claim.service)
        key = self._keys.get(scope)
        if key is None:
            key = sigv4.key_for(claim, secret)
            self._keys[scope] = key
            if len(self._keys) > 1024:
                self._keys.pop(next(iter(self._keys)))
        return key

    def _temporary(self, claim: Claim, now: datetime) -> tuple[Principal, str]:
        if not claim.security_token:
            raise InvalidClientTokenId()
        session = self._tokens.open(claim.security_token, claim.access_key_id, now=now)
        if session.kind is tokens.SessionKind.CONSOLE:
            # A console session's credentials never leave the broker: presented here, they
            # were taken from it.
            raise InvalidClientTokenId()
        principal = self._principals.get(session.access_key_id)
        if principal is None or principal.session is not session:
            principal = Principal.of_session(session)
            self._principals[session.access_key_id] = principal
            if len(self._principals) > 4096:
                self._principals.pop(next(iter(self._principals)))
        return principal, session.secret_access_key

    async def _long_term(self, claim: Claim) -> tuple[Principal, str]:
        if claim.security_token:
            # A session token presented with a long-term key: AWS refuses the pair.
            raise InvalidClientTokenId()
        if not ids.is_access_key_id(claim.access_key_id):
            raise InvalidClientTokenId()  # not one of ours: no need to ask the store
        access_key_id = claim.access_key_id
        return await self._permissions.cached(("access-key", access_key_id),
                                              lambda: self._look_up(access_key_id))

    async def _look_up(self, access_key_id: str) -> tuple[Principal, str]:
        key = await self._iam.find_access_key(access_key_id)
        if key is None or key.status != ACTIVE:
            raise InvalidClientTokenId()
        try:
            secret = self._iam.secret_of(key)
        except SealError:
            # The key exists and is active, but this process cannot open its secret: its
            # keyring file lacks the key that sealed it. A fault of the deployment, not of the
            # caller's credentials.
            log.error("access key %s: its stored secret does not open with this process's "
                      "keyring; copy the current keyring file to this host (see 'broker keys "
                      "add')", key.access_key_id)
            raise ServiceUnavailable(
                "The service is unavailable. Please try again later.") from None
        if key.user_name is None:
            principal = Principal(
                type=PrincipalType.ACCOUNT,
                account_id=key.account_id,
                arn=arn.root(key.account_id),
                user_id=key.account_id,
                name="root",
                access_key_id=key.access_key_id,
            )
        else:
            try:
                user = await self._iam.get_user(key.account_id, key.user_name)
            except NoSuchEntity:  # deleted between the two reads
                raise InvalidClientTokenId() from None
            principal = Principal(
                type=PrincipalType.USER,
                account_id=key.account_id,
                arn=user.arn,
                user_id=user.user_id,
                name=user.name,
                access_key_id=key.access_key_id,
            )
        return principal, secret
