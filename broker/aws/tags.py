"""Tags, as IAM and STS both take them: the shapes of their models, and the one rule they share
(keys are unique regardless of case)."""

from __future__ import annotations

from collections.abc import Iterable

from broker.aws.shapes import ListOf, String, required, struct

tagKeyType = String(min=1, max=128, pattern=r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+")
tagValueType = String(min=0, max=256, pattern=r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*")
Tag = struct(required("Key", tagKeyType), required("Value", tagValueType))
tagListType = ListOf(Tag, max=50)

DUPLICATE_KEYS = "Duplicate tag keys found. Please note that Tag keys are case insensitive."


def has_duplicate_keys(keys: Iterable[str]) -> bool:
    seen: set[str] = set()
    for key in keys:
        folded = key.lower()
        if folded in seen:
            return True
        seen.add(folded)
    return False
