"""Session rules shared by the STS actions: durations, session tags, packed policies."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence

from broker.aws import arn
from broker.aws.errors import InvalidParameterValue, PackedPolicyTooLarge
from broker.aws.tags import DUPLICATE_KEYS, has_duplicate_keys
from broker.policy.document import PolicyKind, parse

DEFAULT_DURATION = 43200
ROOT_MAX_DURATION = 3600
PACKED_LIMIT = 2048  # bytes of compressed policy, policy ARNs and tags: 100 % PackedPolicySize
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(..., separators=...), made once


def duration(requested: int | None, *, root: bool) -> int:
    """GetSessionToken / GetFederationToken: the default, and at most an hour for root."""
    seconds = DEFAULT_DURATION if requested is None else requested
    return min(seconds, ROOT_MAX_DURATION) if root else seconds


def check_tags(tags: Sequence[tuple[str, str]]) -> None:
    if has_duplicate_keys(key for key, _ in tags):
        raise InvalidParameterValue(DUPLICATE_KEYS)


def check_policy(policy: str) -> str:
    """The session policy, validated by the policy grammar and minified."""
    parse(policy, PolicyKind.SESSION)
    return _COMPACT.encode(json.loads(policy))


def check_policy_arns(arns: Sequence[str]) -> None:
    for text in arns:
        parsed = arn.parse(text)
        if parsed is None or parsed.service != "iam" or not parsed.resource.startswith("policy/"):
            raise InvalidParameterValue(f"The policy ARN {text} is not a valid IAM policy ARN.")


def session_policies(policy: str | None, arns: Sequence[str],
                     tags: Sequence[tuple[str, str]], *,
                     counted: Sequence[tuple[str, str]] | None = None
                     ) -> tuple[str | None, int | None]:
    """A session's policy (validated, minified) and policy ARNs checked, with PackedPolicySize
    when the request passes any of them or tags (None when it passes none). ``counted``: the
    tags the size counts, when the session carries more than were asked for (inherited
    transitive tags)."""
    packed_policy = check_policy(policy) if policy is not None else None
    check_policy_arns(arns)
    size = None
    if packed_policy is not None or arns or tags:
        size = packed_size(packed_policy, arns, tags if counted is None else counted)
    return packed_policy, size


# zlib.compress(data, 9) sets up a few hundred KiB of state for every call, which costs far
# more than deflating a packed form of a few dozen bytes: 75 µs here, against 20 for the state
# of a 4 KiB window (memory set-up, which instruction counts barely see). Input that fits a
# 4 KiB window (less its 262-byte lookahead) deflates to the very same stream with that
# window: no match can reach further back. memLevel stays 8, zlib's default: it sizes the hash
# table, whose collisions decide where level 9 stops searching a chain, and the block buffer.
# tests/unit/test_sessions.py compares the two.
SMALL_WINDOW_INPUT = 4096 - 262


def deflated_size(data: bytes) -> int:
    """len(zlib.compress(data, 9))."""
    if len(data) > SMALL_WINDOW_INPUT:
        return len(zlib.compress(data, 9))
    compressor = zlib.compressobj(9, zlib.DEFLATED, 12, 8)
    return len(compressor.compress(data)) + len(compressor.flush())


def packed_size(policy: str | None, arns: Sequence[str],
                tags: Sequence[tuple[str, str]]) -> int:
    """PackedPolicySize: the percentage of the allowed space the packed form uses."""
    packed = _COMPACT.encode([policy, list(arns), [list(t) for t in tags]])
    size = deflated_size(packed.encode())
    percent = math.ceil(100 * size / PACKED_LIMIT)
    if percent > 100:
        if tags and policy is None and not arns:
            raise PackedPolicyTooLarge(
                f"Packed size of session tags consumes {percent}% of allotted space.")
        raise PackedPolicyTooLarge(
            f"Packed policy consumes {percent}% of allotted space, please use smaller policy."
        )
    return percent
