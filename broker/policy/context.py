"""The request context: the condition keys of a request and their values.

Keys are case-insensitive (``aws:SourceIp`` is ``aws:sourceip``); every value is a tuple of
strings, one string for single-valued keys. What a key's values mean (a date, a number, an
address) is for the condition operator to decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Context(Mapping[str, tuple[str, ...]]):
    def __init__(self, values: Mapping[str, str | Iterable[str]] | None = None) -> None:
        self._values: dict[str, tuple[str, ...]] = {}
        self._names: dict[str, str] = {}
        if values:
            # set(), inlined: a request's context is built once per authorization.
            names, folded_values = self._names, self._values
            for key, value in values.items():
                folded = key.lower()
                if folded not in names:
                    names[folded] = key
                folded_values[folded] = (value,) if isinstance(value, str) else tuple(value)

    def set(self, key: str, value: str | Iterable[str]) -> None:
        folded = key.lower()
        self._names.setdefault(folded, key)
        self._values[folded] = (value,) if isinstance(value, str) else tuple(value)

    def get(self, key: str, default: object = None) -> tuple[str, ...] | None:  # type: ignore[override]
        return self._values.get(key.lower())

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._values[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return (self._names[k] for k in self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_values(self, values: Mapping[str, str | Iterable[str]]) -> Context:
        merged = Context(self.as_dict())
        for key, value in values.items():
            merged.set(key, value)
        return merged

    def as_dict(self) -> dict[str, list[str] | str]:
        """The keys as first written, single values as strings (for messages and simulation)."""
        return {self._names[k]: (list(v) if len(v) != 1 else v[0])
                for k, v in self._values.items()}
