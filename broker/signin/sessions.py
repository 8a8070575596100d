"""Console sessions: a browser's sign-in, kept server-side behind an opaque cookie.

The cookie holds 256 random bits and nothing else. The ephemeral store keeps, under the
SHA-256 of that value (so that the store never holds a usable cookie), the session's temporary
credentials sealed by the keyring (purpose ``console-session``), for as long as the
credentials last. A new id is made at every sign-in (no fixation); ``revoke`` deletes the
record, so a copied cookie is dead after sign-out.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from broker.clock import Clock
from broker.errors import SealError
from broker.keyring import Keyring
from broker.store.base import EphemeralStore
from broker.sts.service import IssuedCredentials

PURPOSE = "console-session"
_PREFIX = "console-session:"


@dataclass(frozen=True)
class ConsoleSession:
    arn: str
    account_id: str
    session_name: str
    role_arn: str
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: int  # epoch seconds
    issuer: str = ""  # who vouched: a SAML provider's ARN, or empty
    return_url: str = ""  # the federation endpoint's Issuer: where to sign in again

    @property
    def expiration(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)


class ConsoleSessions:
    def __init__(self, ephemeral: EphemeralStore, keyring: Keyring, clock: Clock) -> None:
        self._ephemeral = ephemeral
        self._keyring = keyring
        self._clock = clock

    async def create(self, issued: IssuedCredentials, *, issuer: str = "",
                     return_url: str = "") -> str:
        """A new session for these credentials; returns the cookie value."""
        s = issued.session
        session = ConsoleSession(
            arn=s.arn, account_id=s.account_id, session_name=s.name, role_arn=s.source_arn,
            access_key_id=s.access_key_id, secret_access_key=s.secret_access_key,
            session_token=issued.token, expires_at=s.expires_at, issuer=issuer,
            return_url=return_url)
        cookie = secrets.token_urlsafe(32)
        key = _key(cookie)
        sealed = self._keyring.seal(json.dumps(asdict(session)).encode(), purpose=PURPOSE,
                                    aad=key)
        await self._ephemeral.set(key, sealed, self._ttl(session))
        return cookie

    async def get(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie or len(cookie) > 128:
            return None
        key = _key(cookie)
        sealed = await self._ephemeral.get(key)
        if sealed is None:
            return None
        try:
            session = ConsoleSession(**json.loads(
                self._keyring.unseal(sealed, purpose=PURPOSE, aad=key)))
        except (SealError, ValueError, TypeError):
            return None
        if self._ttl(session) <= 0:
            return None
        return session

    async def revoke(self, cookie: str | None) -> None:
        if cookie and len(cookie) <= 128:
            await self._ephemeral.delete(_key(cookie))

    def now(self) -> float:
        return self._clock.now().timestamp()

    def _ttl(self, session: ConsoleSession) -> float:
        return session.expires_at - self._clock.now().timestamp()


def _key(cookie: str) -> str:
    return _PREFIX + hashlib.sha256(cookie.encode()).hexdigest()
