"""ARN operators: each of the six components compared on its own, wildcards allowed in each.
ArnEquals and ArnLike behave alike, as AWS documents."""

from __future__ import annotations

from broker.policy.matching import arn_matches
from broker.policy.operators import Operator


class Like:
    def prepare(self, value: str) -> str:
        return value

    def test(self, request_value: str, prepared: str) -> bool:
        return arn_matches(prepared, request_value)


OPERATORS = [
    Operator("ArnEquals", Like(), variables=True),
    Operator("ArnLike", Like(), variables=True),
    Operator("ArnNotEquals", Like(), negated=True, variables=True),
    Operator("ArnNotLike", Like(), negated=True, variables=True),
]
