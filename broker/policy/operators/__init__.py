"""Condition operators, one family per module; ``conditions.OPERATORS`` is the one registry.

Each operator has a base (positive) comparison; its negated form (StringNotEquals,
NotIpAddress, ...) is that comparison's negation with AWS's semantics, applied in
conditions.py. ``prepare`` turns a policy value into what ``test`` compares a request value
against; it raises ValueError for a policy value the operator cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Comparison(Protocol):
    def prepare(self, value: str) -> Any: ...

    def test(self, request_value: str, prepared: Any) -> bool: ...


@dataclass(frozen=True)
class Operator:
    name: str
    comparison: Comparison
    negated: bool = False
    variables: bool = False  # policy variables are substituted in its values
