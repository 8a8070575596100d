"""Paging of Identity Center's list actions: ``NextToken`` is the index of the first item not
shown yet; a token this service did not return is AWS's ValidationException."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.identitycenter.instances import SsoError


def page(items: Sequence[Any], params: Mapping[str, Any], name: str, *,
         default: int = 100) -> dict[str, Any]:
    token = params.get("NextToken")
    start = 0
    if token is not None:
        if not (token.isascii() and token.isdigit() and len(token) < 10):
            raise SsoError("ValidationException",
                           "The NextToken is not one this service returned.")
        start = int(token)
    limit = params.get("MaxResults") or default
    out: dict[str, Any] = {name: list(items[start:start + limit])}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out
