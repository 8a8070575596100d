"""Date operators: ISO 8601 dates and times, or seconds since the epoch."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime

from broker.policy.operators import Operator

_EPOCH = re.compile(r"-?\d+(\.\d+)?")


def instant(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date or date-time, or of epoch seconds."""
    text = text.strip()
    if _EPOCH.fullmatch(text):
        return float(text)
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


class Compare:
    def __init__(self, relation: Callable[[float, float], bool]) -> None:
        self._relation = relation

    def prepare(self, value: str) -> float:
        return instant(value)

    def test(self, request_value: str, prepared: float) -> bool:
        try:
            return self._relation(instant(request_value), prepared)
        except ValueError:
            return False


OPERATORS = [
    Operator("DateEquals", Compare(operator.eq)),
    Operator("DateNotEquals", Compare(operator.eq), negated=True),
    Operator("DateLessThan", Compare(operator.lt)),
    Operator("DateLessThanEquals", Compare(operator.le)),
    Operator("DateGreaterThan", Compare(operator.gt)),
    Operator("DateGreaterThanEquals", Compare(operator.ge)),
]
