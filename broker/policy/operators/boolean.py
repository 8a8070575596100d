"""Bool: "true" or "false", compared without regard to case."""

from __future__ import annotations

from broker.policy.matching import literal
from broker.policy.operators import Operator


class Equals:
    def prepare(self, value: str) -> str:
        folded = literal(value).strip().lower()
        if folded not in ("true", "false"):
            raise ValueError(f"{value!r} is not true or false")
        return folded

    def test(self, request_value: str, prepared: str) -> bool:
        return request_value.strip().lower() == prepared


OPERATORS = [Operator("Bool", Equals(), variables=True)]
