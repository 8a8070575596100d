"""LastUsedRecorder: a noted use stays this process's answer until the store holds it — while
a flush is writing it too — and a write that fails is kept for the next flush."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from broker.iam.entities import LastUsed
from broker.iam.lastused import LastUsedRecorder


class Iam:
    """The one IamService method the recorder calls, held until released."""

    def __init__(self) -> None:
        self.written: list[tuple[str, str, LastUsed]] = []
        self.release = asyncio.Event()
        self.fail = False

    async def record_last_used(self, account_id: str, key_id: str, used: LastUsed) -> None:
        await self.release.wait()
        if self.fail:
            raise RuntimeError("store down")
        self.written.append((account_id, key_id, used))


USED = LastUsed(datetime(2026, 11, 29, 5, 40, tzinfo=UTC), "sts", "eu-central-1")


def test_a_use_is_answered_while_its_write_is_in_flight() -> None:
    async def run() -> tuple[LastUsed | None, LastUsed | None, LastUsed | None]:
        iam = Iam()
        recorder = LastUsedRecorder(iam, interval=60)  # type: ignore[arg-type]
        recorder.note("111122223333", "AKIA1", USED)
        before = recorder.pending("111122223333", "AKIA1")
        flushing = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0)  # the flush has taken the batch and waits on the store
        during = recorder.pending("111122223333", "AKIA1")
        iam.release.set()
        await flushing
        assert iam.written == [("111122223333", "AKIA1", USED)]
        return before, during, recorder.pending("111122223333", "AKIA1")

    before, during, after = asyncio.run(run())
    assert before == USED  # the control: noted and not yet flushed
    assert during == USED
    assert after is None  # the store has it now


def test_a_failed_write_is_kept_for_the_next_flush() -> None:
    async def run() -> tuple[LastUsed | None, list[tuple[str, str, LastUsed]]]:
        iam = Iam()
        recorder = LastUsedRecorder(iam, interval=60)  # type: ignore[arg-type]
        recorder.note("111122223333", "AKIA1", USED)
        iam.fail = True
        iam.release.set()
        await recorder.flush()
        kept = recorder.pending("111122223333", "AKIA1")
        iam.fail = False
        await recorder.flush()
        return kept, iam.written

    kept, written = asyncio.run(run())
    assert kept == USED
    assert written == [("111122223333", "AKIA1", USED)]


def test_a_newer_use_noted_during_a_flush_wins() -> None:
    newer = LastUsed(datetime(2026, 11, 29, 5, 41, tzinfo=UTC), "iam", "us-east-1")

    async def run() -> LastUsed | None:
        iam = Iam()
        recorder = LastUsedRecorder(iam, interval=60)  # type: ignore[arg-type]
        recorder.note("111122223333", "AKIA1", USED)
        flushing = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0)
        recorder.note("111122223333", "AKIA1", newer)
        answer = recorder.pending("111122223333", "AKIA1")
        iam.release.set()
        await flushing
        return answer

    assert asyncio.run(run()) == newer
