"""String operators: StringEquals, StringEqualsIgnoreCase, StringLike and their negations."""

from __future__ import annotations

import re

from broker.policy.matching import glob, literal
from broker.policy.operators import Operator


class Equals:
    def prepare(self, value: str) -> str:
        return literal(value)

    def test(self, request_value: str, prepared: str) -> bool:
        return request_value == prepared


class EqualsIgnoreCase:
    def prepare(self, value: str) -> str:
        return literal(value).lower()

    def test(self, request_value: str, prepared: str) -> bool:
        return request_value.lower() == prepared


class Like:
    def prepare(self, value: str) -> re.Pattern[str]:
        return glob(value)

    def test(self, request_value: str, prepared: re.Pattern[str]) -> bool:
        return prepared.fullmatch(request_value) is not None


OPERATORS = [
    Operator("StringEquals", Equals(), variables=True),
    Operator("StringNotEquals", Equals(), negated=True, variables=True),
    Operator("StringEqualsIgnoreCase", EqualsIgnoreCase(), variables=True),
    Operator("StringNotEqualsIgnoreCase", EqualsIgnoreCase(), negated=True, variables=True),
    Operator("StringLike", Like(), variables=True),
    Operator("StringNotLike", Like(), negated=True, variables=True),
]
