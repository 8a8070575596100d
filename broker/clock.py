"""The one clock. Everything that needs the time receives a Clock; tests pass a fixed one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to: for tests and for replaying recorded requests."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, seconds: float) -> None:
        self._at += timedelta(seconds=seconds)


def iso8601(at: datetime) -> str:
    """AWS's timestamp form in XML bodies: second precision, Z suffix."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    # Every issued credential formats three times, mostly within one second (the trust
    # policy's aws:CurrentTime, the answer, the audit line): the last second's text is kept.
    # An f-string is two and a half times faster than strftime.
    global _last_second
    second = (at.year, at.month, at.day, at.hour, at.minute, at.second)
    last = _last_second  # one tuple, read once: consistent even if another thread replaces it
    if last[0] == second:
        return last[1]
    text = (f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:"
            f"{at.second:02d}Z")
    _last_second = (second, text)
    return text


_last_second: tuple[tuple[int, ...] | None, str] = (None, "")
