"""BinaryEquals: base64-encoded values, compared byte for byte."""

from __future__ import annotations

import base64
import binascii

from broker.policy.operators import Operator


def decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not base64") from None


class Equals:
    def prepare(self, value: str) -> bytes:
        return decode(value)

    def test(self, request_value: str, prepared: bytes) -> bool:
        try:
            return decode(request_value) == prepared
        except ValueError:
            return False


OPERATORS = [Operator("BinaryEquals", Equals())]
