"""The Condition block: operators, set qualifiers, IfExists, Null.

A block holds if every operator in it holds; an operator holds if every key under it holds; a key
holds if the request's value matches any of the policy's values — for negated operators
(StringNotEquals, NotIpAddress, ...) if it matches none of them. AWS's rules for keys the request
does not have: positive operators are false, negated ones true, ``...IfExists`` true, and
``Null`` tests exactly that. With ``ForAnyValue:`` at least one of a multivalued key's values
must match (none present: false); with ``ForAllValues:`` every one (none present: true).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.policy.context import Context
from broker.policy.operators import Operator, arn, binary, boolean, date, ip, numeric, string
from broker.policy.variables import Template, template

OPERATORS: dict[str, Operator] = {
    op.name.lower(): op
    for family in (string, numeric, date, boolean, binary, ip, arn)
    for op in family.OPERATORS
}
NULL = "null"
ANY = "ForAnyValue"
ALL = "ForAllValues"


class ConditionError(ValueError):
    """A condition block that cannot be used; the message names the fault."""


@dataclass(frozen=True)
class Clause:
    """One key under one operator: ``"StringEquals": {"aws:username": ["a", "b"]}``."""

    operator_name: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    operator: Operator | None  # None for Null
    qualifier: str | None
    if_exists: bool
    key: str
    values: tuple[str | Template, ...]
    prepared: tuple[Any, ...]  # per value; None where the value holds variables

    def holds(self, context: Context, missing: set[str] | None = None) -> bool:
        values = context.get(self.key)
        present = bool(values)
        if self.operator is None:  # Null
            return (not present) == (self.values[0] == "true")
        if not present:
            if missing is not None:
                missing.add(self.key)
            if self.if_exists or self.qualifier == ALL:
                return True
            if self.qualifier == ANY:
                return False
            return self.operator.negated
        assert values is not None
        # Values without variables were prepared when the policy was compiled.
        prepared = self.prepared if self._static else list(self._resolved(context))
        test, negated = self.operator.comparison.test, self.operator.negated
        # A request value satisfies the operator when some policy value matches it (none, for
        # a negated operator); ForAllValues needs every request value to, the rest any.
        # (Loops rather than all()/any() over generators: this runs for every clause of every
        # statement a request meets.)
        if self.qualifier == ALL:
            for value in values:  # noqa: SIM110
                if _some_value_matches(test, value, prepared) == negated:
                    return False
            return True
        for value in values:  # noqa: SIM110
            if _some_value_matches(test, value, prepared) != negated:
                return True
        return False

    @functools.cached_property
    def _static(self) -> bool:
        """No value holds a policy variable: every one was prepared at compile time."""
        return all(ready is not None for ready in self.prepared)

    def _resolved(self, context: Context) -> Iterable[Any]:
        assert self.operator is not None
        for raw, ready in zip(self.values, self.prepared, strict=True):
            if ready is not None:
                yield ready
                continue
            assert isinstance(raw, Template)
            text = raw.render(context)
            if text is None:
                continue  # a variable without a value: this policy value matches nothing
            try:
                yield self.operator.comparison.prepare(text)
            except ValueError:
                continue

    def variable_keys(self) -> list[str]:
        return [k for v in self.values if isinstance(v, Template) for k in v.names()]


def parse_block(block: Any, *, variables: bool) -> tuple[Clause, ...]:
    """Compile a Condition element. ``variables``: substitute policy variables (2012-10-17)."""
    if not isinstance(block, Mapping):
        raise ConditionError("Syntax errors in policy.")
    clauses = []
    for written, keys in block.items():
        operator, qualifier, if_exists = _operator(written)
        if not isinstance(keys, Mapping) or not keys:
            raise ConditionError(f"Condition {written} must be an object of condition keys.")
        for key, raw in keys.items():
            if not isinstance(key, str) or not key:
                raise ConditionError("Syntax errors in policy.")
            values = _values(raw, written, key)
            if operator is None:
                if len(values) != 1 or values[0].lower() not in ("true", "false"):
                    raise ConditionError(
                        f"Condition Null for key {key} must be \"true\" or \"false\".")
                clauses.append(Clause(written, None, qualifier, False, key,
                                      (values[0].lower(),), (None,)))
                continue
            compiled: list[str | Template] = []
            prepared: list[Any] = []
            for value in values:
                shaped = template(value) if variables and operator.variables else value
                compiled.append(shaped)
                if isinstance(shaped, Template):
                    prepared.append(None)
                    continue
                try:
                    prepared.append(operator.comparison.prepare(shaped))
                except ValueError as exc:
                    raise ConditionError(
                        f"Invalid value for condition {written} on key {key}: {exc}."
                    ) from None
            clauses.append(Clause(written, operator, qualifier, if_exists, key,
                                  tuple(compiled), tuple(prepared)))
    return tuple(clauses)


def _some_value_matches(test: Callable[[str, Any], bool], value: str,
                        prepared: Iterable[Any]) -> bool:
    """Some policy value matches this request value."""
    for ready in prepared:  # noqa: SIM110 - no generator on the hot path
        if test(value, ready):
            return True
    return False


def holds(clauses: tuple[Clause, ...], context: Context,
          missing: set[str] | None = None) -> bool:
    return all(clause.holds(context, missing) for clause in clauses)


def _operator(written: str) -> tuple[Operator | None, str | None, bool]:
    if not isinstance(written, str):
        raise ConditionError("Syntax errors in policy.")
    name, qualifier = written, None
    prefix, sep, rest = written.partition(":")
    if sep:
        if prefix.lower() == ANY.lower():
            qualifier = ANY
        elif prefix.lower() == ALL.lower():
            qualifier = ALL
        else:
            raise ConditionError(f"Invalid Condition type : {written}.")
        name = rest
    if_exists = name.lower().endswith("ifexists")
    base = name[: -len("IfExists")] if if_exists else name
    if base.lower() == NULL:
        if if_exists or qualifier is not None:
            raise ConditionError(f"Invalid Condition type : {written}.")
        return None, None, False
    operator = OPERATORS.get(base.lower())
    if operator is None:
        raise ConditionError(f"Invalid Condition type : {written}.")
    return operator, qualifier, if_exists


def _values(raw: Any, operator: str, key: str) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float):
            out.append(str(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise ConditionError(
                f"Condition {operator} on key {key} has a value that is not a string.")
    return out
