"""Identifiers in AWS's shapes: account ids, access key ids, unique ids, secrets, request ids.

Access key ids carry their account, as AWS's do, so that GetAccessKeyInfo can answer for a
temporary key without any lookup: after the four-letter prefix come 16 base32 characters that
encode five bytes of account number and five random bytes.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import secrets
from contextvars import ContextVar

LONG_TERM_PREFIX = "AKIA"
TEMPORARY_PREFIX = "ASIA"
USER_ID_PREFIX = "AIDA"
ROLE_ID_PREFIX = "AROA"
GROUP_ID_PREFIX = "AGPA"
POLICY_ID_PREFIX = "ANPA"

ACCOUNT_ID = re.compile(r"[0-9]{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")  # us-east-1, eu-central-2, us-gov-west-1
_KEY_ID = re.compile(r"(AKIA|ASIA)[A-Z2-7]{16}")


def new_account_id() -> str:
    return f"{secrets.randbelow(10**12):012d}"


def new_access_key_id(account_id: str, *, temporary: bool) -> str:
    return _key_id(account_id, secrets.token_bytes(5), temporary=temporary)


def new_key_pair(account_id: str, *, temporary: bool) -> tuple[str, str]:
    """A new access key id and secret access key, their random bytes drawn from the operating
    system in one call (every issued credential needs both; each call is a system call)."""
    random = secrets.token_bytes(5 + _SECRET_BYTES)
    return (_key_id(account_id, random[:5], temporary=temporary),
            binascii.b2a_base64(random[5:], newline=False).decode("ascii"))


def _key_id(account_id: str, random: bytes, *, temporary: bool) -> str:
    if not ACCOUNT_ID.fullmatch(account_id):
        raise ValueError(f"not an account id: {account_id!r}")
    # Five bytes of account number, five random bytes: 80 bits, 16 base32 characters (the
    # same text base64.b32encode gives, two characters per table lookup).
    number = (int(account_id) << 40) | int.from_bytes(random, "big")
    prefix = TEMPORARY_PREFIX if temporary else LONG_TERM_PREFIX
    pairs = _B32_PAIRS
    return prefix + "".join([pairs[(number >> shift) & 0x3FF] for shift in _SHIFTS])


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)  # ten bits -> two characters
_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)


def account_of_access_key_id(access_key_id: str) -> str | None:
    """The account encoded in one of the broker's access key ids, or None if it is not one."""
    if not _KEY_ID.fullmatch(access_key_id):
        return None
    raw = base64.b32decode(access_key_id[4:])
    number = int.from_bytes(raw[:5], "big")
    if number >= 10**12:
        return None
    return f"{number:012d}"


def is_access_key_id(text: str) -> bool:
    """True if the text has the form of an access key id this broker issues."""
    return _KEY_ID.fullmatch(text) is not None


def is_temporary_key_id(access_key_id: str) -> bool:
    return access_key_id.startswith(TEMPORARY_PREFIX)


def new_secret_access_key() -> str:
    return base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


_SECRET_BYTES = 30  # 40 base64 characters, as AWS's secrets


def new_unique_id(prefix: str) -> str:
    """AIDA... / AROA...: the prefix and 17 characters, 21 in all, as AWS's are."""
    return prefix + base64.b32encode(secrets.token_bytes(11)).decode("ascii")[:17]


def new_request_id() -> str:
    """A random (version 4) UUID in its usual text form. A request id is a label, not a
    secret, so it comes from the fast generator rather than the operating system's."""
    h = f"{random.getrandbits(128):032x}"
    made = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
    REQUEST_ID.set(made)
    return made


# The request id most recently made in this context (each request runs in a task of its own):
# the JSON log lines of the request, its access line included, carry it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
