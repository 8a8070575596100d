"""The SCIM server's bearer access tokens, per instance (AWS's "access tokens" of automatic
provisioning): made by an administrator, shown once, at most two active, each with an expiry
(a year unless told), revoked by deleting them.

A token is ``scim-`` + its id (32 hexadecimal digits) + ``.`` + 43 characters of secret
(256 random bits). Only the SHA-256 of the whole token is stored — a random 256-bit secret
needs no slow hash — in a record ``sso_scim_token`` ``{identity store id}/{token id}`` of
the instance's owner account, a child of the instance record (deleting the instance deletes
its tokens; ``max_siblings`` keeps two, under concurrent requests too; an expired token is
deleted before a new one is counted). A request's token is found by the store id in its URL
and the id in the token, and its digest compared in constant time: another instance's token
names no record under this store and is refused like a wrong one. Each check reads the
record (one keyed read; SCIM is an administrator's API, not the hot path) rather than the
per-process cache: a token revoked by ``broker sso scim-token`` — another process, which on
the embedded stores shares no EphemeralStore with the server and so renews no generation
the server sees — is refused at the very next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound, QuotaExceeded
from broker.identitycenter.instances import INSTANCE, KEY, Instance
from broker.store.base import EntityStore, Record, Ref

TOKEN = "sso_scim_token"  # noqa: S105 (a record kind)
MAX_ACTIVE = 2
DEFAULT_DAYS = 365
MAX_DAYS = 3650
_FORM = re.compile(r"scim-([0-9a-f]{32})\.([A-Za-z0-9_-]{43})")


class TokenError(Exception):
    """An administrator's request about tokens that cannot be done (the CLI's message)."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    identity_store_id: str
    created: datetime
    expires: datetime
    created_by: str

    def status(self, now: datetime) -> str:
        return "ACTIVE" if now < self.expires else "EXPIRED"

    def wire(self, now: datetime) -> dict[str, Any]:
        return {"token_id": self.token_id, "identity_store_id": self.identity_store_id,
                "created": self.created.isoformat(), "expires": self.expires.isoformat(),
                "status": self.status(now)}


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    token: str  # shown once


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _info(record: Record) -> TokenInfo:
    d = record.data
    return TokenInfo(d["token_id"], d["identity_store_id"],
                     datetime.fromisoformat(d["created"]), datetime.fromisoformat(d["expires"]),
                     d.get("created_by", ""))


class ScimTokens:
    def __init__(self, store: EntityStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _ref(self, instance: Instance, token_id: str) -> Ref:
        return Ref(TOKEN, instance.account_id, f"{instance.identity_store_id}/{token_id}")

    async def list(self, instance: Instance) -> list[TokenInfo]:
        prefix = f"{instance.identity_store_id}/"
        records = await self._store.list(TOKEN, instance.account_id,
                                         parent=Ref(INSTANCE, instance.account_id, KEY))
        return [_info(r) for r in records if r.key.startswith(prefix)]

    async def create(self, instance: Instance, *, days: int = DEFAULT_DAYS,
                     by: str = "broker sso scim-token") -> NewToken:
        if not 1 <= days <= MAX_DAYS:
            raise TokenError(f"A token lasts 1 to {MAX_DAYS} days.")
        now = self._clock.now()
        for old in await self.list(instance):  # an expired token holds no place
            if old.status(now) == "EXPIRED":
                with contextlib.suppress(NotFound):
                    await self._store.delete(self._ref(instance, old.token_id))
        token_id = secrets.token_hex(16)
        token = f"scim-{token_id}.{secrets.token_urlsafe(32)}"
        info = TokenInfo(token_id, instance.identity_store_id, now, now + timedelta(days=days),
                         by)
        record = Record(
            kind=TOKEN, account=instance.account_id, key=f"{instance.identity_store_id}/"
            f"{token_id}", parent=Ref(INSTANCE, instance.account_id, KEY),
            data={"token_id": token_id, "identity_store_id": instance.identity_store_id,
                  "digest": _digest(token), "created": now.isoformat(),
                  "expires": info.expires.isoformat(), "created_by": by})
        try:
            await self._store.create(record, max_siblings=MAX_ACTIVE)
        except QuotaExceeded:
            raise TokenError(f"The instance has {MAX_ACTIVE} tokens already: revoke one "
                             "first (broker sso scim-token revoke).") from None
        except NotFound:
            raise TokenError("The instance is gone.") from None
        except AlreadyExists:  # 128 random bits twice
            raise TokenError("Try again.") from None
        return NewToken(info, token)

    async def revoke(self, instance: Instance, token_id: str) -> None:
        try:
            await self._store.delete(self._ref(instance, token_id.lower()))
        except NotFound:
            raise TokenError(f"The instance has no token {token_id[:64]}.") from None

    async def rotate(self, instance: Instance, token_id: str, *,
                     days: int = DEFAULT_DAYS) -> NewToken:
        """A new token in place of ``token_id``: made first while there is room, so the old
        one works until the new one exists; revoked first when the instance is at two."""
        current = {t.token_id for t in await self.list(instance)}
        if token_id.lower() not in current:
            raise TokenError(f"The instance has no token {token_id[:64]}.")
        if len(current) >= MAX_ACTIVE:
            await self.revoke(instance, token_id)
            return await self.create(instance, days=days)
        made = await self.create(instance, days=days)
        await self.revoke(instance, token_id)
        return made

    async def check(self, instance: Instance, presented: str) -> TokenInfo | None:
        """The token's record if ``presented`` is a live token of this instance."""
        found = _FORM.fullmatch(presented)
        if found is None:
            return None
        ref = self._ref(instance, found.group(1))

        try:
            data: dict[str, Any] | None = dict((await self._store.get(ref)).data)
        except NotFound:
            data = None
        if data is None or not hmac.compare_digest(data["digest"], _digest(presented)):
            return None
        info = TokenInfo(data["token_id"], data["identity_store_id"],
                         datetime.fromisoformat(data["created"]),
                         datetime.fromisoformat(data["expires"]), data.get("created_by", ""))
        if self._clock.now() >= info.expires:
            return None
        return info
