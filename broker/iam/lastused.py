"""Access-key last use, recorded without slowing the request.

Authentication notes each use in memory (a dict assignment); a background task writes the
newest use of each key to the store every few seconds. Until then this process answers
GetAccessKeyLastUsed from what it noted; other processes see it after the next flush, which
matches AWS's own description of last-used data as eventually consistent.
"""

from __future__ import annotations

import asyncio
import logging

from broker.iam.entities import LastUsed
from broker.iam.service import IamService

log = logging.getLogger("broker.lastused")


class LastUsedRecorder:
    def __init__(self, iam: IamService, *, interval: float) -> None:
        self._iam = iam
        self._interval = interval
        self._pending: dict[tuple[str, str], LastUsed] = {}
        # The batch a flush is writing: still this process's answer until the store has it,
        # so a GetAccessKeyLastUsed during a flush does not fall back to the older record.
        self._writing: dict[tuple[str, str], LastUsed] = {}

    def note(self, account_id: str, access_key_id: str, used: LastUsed) -> None:
        self._pending[(account_id, access_key_id)] = used

    def pending(self, account_id: str, access_key_id: str) -> LastUsed | None:
        key = (account_id, access_key_id)
        return self._pending.get(key) or self._writing.get(key)

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._writing = batch
        written: set[tuple[str, str]] = set()
        try:
            for (account_id, key_id), used in batch.items():
                try:
                    await self._iam.record_last_used(account_id, key_id, used)
                    written.add((account_id, key_id))
                except Exception:  # a store outage must not lose later notes or kill the loop
                    log.warning("could not record last use of %s; will retry", key_id)
        finally:
            # What was not written (a failure, or a flush cancelled at shutdown halfway
            # through) is noted again for the next flush, unless a newer use replaced it.
            for key, used in batch.items():
                if key not in written:
                    self._pending.setdefault(key, used)
            self._writing = {}

    async def run(self) -> None:
        """Flush forever, every interval; cancel to stop (the lifespan flushes once more)."""
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
