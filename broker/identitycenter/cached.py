"""The directory and the instances as the hot path reads them: through ``reads.Reads``, so
that a change on any process is seen at the next request (see reads.py). Only readers get
these; every write goes through the plain ones (and their BumpingStore)."""

from __future__ import annotations

from broker.clock import Clock
from broker.identitycenter.directory import Directory, DirectoryUser
from broker.identitycenter.instances import Instance, Instances
from broker.identitycenter.reads import Reads
from broker.store.base import GLOBAL, EntityStore


class CachedDirectory(Directory):
    def __init__(self, store: EntityStore, clock: Clock, reads: Reads) -> None:
        super().__init__(store, clock)
        self._reads = reads

    async def user(self, account_id: str, identity_store_id: str,
                   user_id: str) -> DirectoryUser | None:
        plain = super().user
        return await self._reads.cached(
            account_id, ("user", identity_store_id, user_id),
            lambda: plain(account_id, identity_store_id, user_id))

    async def group_ids_of(self, account_id: str, identity_store_id: str,
                           user_id: str) -> list[str]:
        plain = super().group_ids_of
        found = await self._reads.cached(
            account_id, ("groups", identity_store_id, user_id),
            lambda: plain(account_id, identity_store_id, user_id))
        return list(found)


class CachedInstances(Instances):
    def __init__(self, store: EntityStore, clock: Clock, reads: Reads) -> None:
        super().__init__(store, clock)
        self._reads = reads

    async def by_store(self, identity_store_id: str) -> Instance | None:
        plain = super().by_store
        return await self._reads.cached(GLOBAL, ("instance", identity_store_id),
                                        lambda: plain(identity_store_id))
