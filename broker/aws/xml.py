"""The one XML serializer of the Query protocol.

Results are plain Python: a dict becomes child elements in insertion order, a list becomes
``<member>`` elements, a datetime AWS's ISO 8601 form, a bool ``true``/``false``; None is left
out. Characters XML 1.0 cannot carry are replaced, so an echoed input never breaks a client's
parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from broker.aws.errors import AwsError
from broker.clock import iso8601

_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# ASCII text holding none of these — the controls XML cannot carry (all but tab, line feed and
# return) and the characters markup escapes — is written as it is.
_PLAIN_ASCII = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]) + b"&<>"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def text(value: str) -> str:
    # Every id, ARN, key and token the broker makes is such text: one byte-table pass in C
    # (deleting those characters from a copy and comparing lengths) says so, in a third of
    # str.isprintable's time on a session token. Anything else goes the general way.
    if value.isascii() and \
            len(value.encode("ascii").translate(None, _PLAIN_ASCII)) == len(value):
        return value
    if _INVALID.search(value):
        value = _INVALID.sub("\ufffd", value)
    if "&" in value or "<" in value or ">" in value:
        value = value.translate(_ESCAPES)
    return value


def _value(parts: list[str], value: Any) -> None:
    kind = type(value)
    # The kinds results are made of, by exact type first (no ABC checks for them); subclasses
    # and other mappings and sequences after, in the same order of precedence.
    if kind is str:
        parts.append(text(value))
    elif kind is dict:
        _members(parts, value)
    elif kind is bool:
        parts.append("true" if value else "false")
    elif kind is int:
        parts.append(str(value))
    elif kind is datetime:
        parts.append(iso8601(value))
    elif isinstance(value, Mapping):
        _members(parts, value)
    elif isinstance(value, list | tuple):
        for item in value:
            parts.append("<member>")
            _value(parts, item)
            parts.append("</member>")
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, datetime):
        parts.append(iso8601(value))
    elif isinstance(value, int):
        parts.append(str(value))
    else:
        parts.append(text(str(value)))


def _members(parts: list[str], value: Mapping[str, Any]) -> None:
    for name, child in value.items():
        if child is None:
            continue
        if type(child) is str:
            parts.append(f"<{name}>{text(child)}</{name}>")
            continue
        parts.append(f"<{name}>")
        _value(parts, child)
        parts.append(f"</{name}>")


def result_document(action: str, namespace: str, result: Mapping[str, Any] | None,
                    request_id: str) -> bytes:
    parts = [f'<{action}Response xmlns="{namespace}">']
    if result is not None:
        parts.append(f"<{action}Result>")
        _value(parts, result)
        parts.append(f"</{action}Result>")
    parts.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>")
    parts.append(f"</{action}Response>")
    return "".join(parts).encode("utf-8")


def error_document(error: AwsError, namespace: str, request_id: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error>'
        f"<Type>{error.fault_type}</Type>"
        f"<Code>{text(error.code)}</Code>"
        f"<Message>{text(error.message)}</Message>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
