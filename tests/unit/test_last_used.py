"""LastUsedRecorder: a noted use stays this process's answer until the store holds it — while
a flush is writing it too — and a write that fails is kept for the next flush."""

from __future__ import annotations

import asyncio
import contextlib
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


def test_a_flush_cancelled_halfway_keeps_what_it_did_not_write() -> None:
    async def run() -> tuple[list[str], set[str], list[str]]:
        iam = Iam()
        recorder = LastUsedRecorder(iam, interval=60)  # type: ignore[arg-type]
        for key in ("AKIA1", "AKIA2", "AKIA3"):
            recorder.note("111122223333", key, USED)
        written_first = asyncio.Event()
        real = iam.record_last_used

        async def first_then_held(account_id: str, key_id: str, used: LastUsed) -> None:
            if key_id == "AKIA1":
                iam.written.append((account_id, key_id, used))
                written_first.set()
                return
            await real(account_id, key_id, used)  # held until released

        iam.record_last_used = first_then_held  # type: ignore[method-assign]
        flushing = asyncio.create_task(recorder.flush())
        await written_first.wait()
        await asyncio.sleep(0)
        flushing.cancel()  # the lifespan cancels the flusher at shutdown
        with contextlib.suppress(asyncio.CancelledError):
            await flushing
        kept = {k for k in ("AKIA1", "AKIA2", "AKIA3")
                if recorder.pending("111122223333", k) is not None}
        before = [k for _, k, _ in iam.written]
        iam.release.set()
        await recorder.flush()  # the lifespan's last flush
        return before, kept, [k for _, k, _ in iam.written]

    before, kept, after = asyncio.run(run())
    assert before == ["AKIA1"]
    assert kept == {"AKIA2", "AKIA3"}  # the unwritten ones, noted again
    assert after == ["AKIA1", "AKIA2", "AKIA3"]  # nothing lost at shutdown
