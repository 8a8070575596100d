"""Numeric operators: integers and decimals, compared as numbers."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from broker.policy.operators import Operator


def number(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a number")
    return value


class Compare:
    def __init__(self, relation: Callable[[Decimal, Decimal], bool]) -> None:
        self._relation = relation

    def prepare(self, value: str) -> Decimal:
        return number(value)

    def test(self, request_value: str, prepared: Decimal) -> bool:
        try:
            return self._relation(number(request_value), prepared)
        except ValueError:
            return False


OPERATORS = [
    Operator("NumericEquals", Compare(operator.eq)),
    Operator("NumericNotEquals", Compare(operator.eq), negated=True),
    Operator("NumericLessThan", Compare(operator.lt)),
    Operator("NumericLessThanEquals", Compare(operator.le)),
    Operator("NumericGreaterThan", Compare(operator.gt)),
    Operator("NumericGreaterThanEquals", Compare(operator.ge)),
]
