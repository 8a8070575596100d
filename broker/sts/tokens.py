"""Session tokens: a temporary credential's whole session, sealed by the keyring.

The token is the session itself, so any broker process holding the keyring verifies a
temporary credential without a database round trip. It is
``base64url(sealed(zlib(JSON session)))``, sealed with the keyring's sealing key, for the purpose
``session-token``, and bound to its access key id: a token presented with another access key id
does not open. A tampered, truncated, swapped or retired-key token is InvalidClientTokenId;
one past its expiry is ExpiredToken.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from typing import Any

from broker.aws.errors import ExpiredToken, InvalidClientTokenId
from broker.errors import SealError
from broker.frozen import frozen
from broker.keyring import Keyring
from broker.metrics import cache_lookup

PURPOSE = "session-token"
MAX_TOKEN_BYTES = 4096  # the size SessionTokenUtilization is a percentage of
_VERSION = 1
_MAX_PLAINTEXT = 1 << 20
_STORE_UP_TO = 768  # plaintext bytes sealed without compression (see _compress)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")


class SessionKind(StrEnum):
    """Which STS action made the session; it decides what the session may do."""

    # GetSessionToken: the root user or an IAM user, as itself
    SESSION_TOKEN = "session-token"  # noqa: S105
    FEDERATED_USER = "federated-user"  # GetFederationToken
    # The broker's own sign-in: the root or an IAM user, as itself, in the console. Its
    # credentials never leave the broker (a signed request with them is refused): the console
    # acts with them as the user, as AWS's console does.
    CONSOLE = "console"
    ASSUMED_ROLE = "assumed-role"  # AssumeRole*
    # AssumeRoot: a member account's root user, for one task of centralized root access (its
    # task policy is the session's one policy ARN); bound by the account's SCPs.
    ROOT_TASK = "root-task"


@frozen
class Session:
    access_key_id: str
    secret_access_key: str
    kind: SessionKind
    account_id: str
    arn: str  # the caller ARN requests with this session present
    user_id: str  # GetCallerIdentity's UserId
    name: str  # user name, federated user name, or role session name
    source_arn: str  # the long-term identity the session came from (user, root or role)
    source_id: str  # its unique id (AIDA... for a user, AROA... for a role, the account id)
    issued_at: int  # epoch seconds
    expires_at: int
    mfa: bool = False
    chain_depth: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    source_identity: str | None = None
    policy: str | None = None
    policy_arns: tuple[str, ...] = ()
    padding: str = field(default="", compare=False)

    @property
    def expiration(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)

    @property
    def issued(self) -> datetime:
        return datetime.fromtimestamp(self.issued_at, UTC)


_FIELDS = tuple(f.name for f in fields(Session))
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # as json.dumps(..., separators=...)
_quote: Callable[[str], str] = encode_basestring_ascii  # json.dumps's quoting (ensure_ascii)


def _compress(data: bytes) -> bytes:
    # A plain role session (no session policy, few tags) is about half a kilobyte of JSON:
    # deflating it halves the token but costs more than sealing it, so such a session goes
    # into a zlib stream as one stored (uncompressed) block. Larger ones (session policies,
    # many tags) are compressed, with a 4 KiB window: as well as zlib's defaults for them, and
    # set up in a fifth of the time. Either way it is a zlib stream, and every token opens
    # with zlib.decompressobj alike.
    if len(data) <= _STORE_UP_TO:
        size = len(data)
        return (b"\x78\x01"  # deflate, 32 KiB window, no dictionary, header check
                + b"\x01"  # the final block, stored
                + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little")
                + data + zlib.adler32(data).to_bytes(4, "big"))
    compressor = zlib.compressobj(6, zlib.DEFLATED, 12, 6)
    return compressor.compress(data) + compressor.flush()


def session_json(session: Session) -> str:
    """The session as the token's JSON: its fields in order, then the format version — the
    text ``json.dumps`` writes for them (compact, ASCII)."""
    return _session_json(session)


# How each kind of field is written, by its annotation: the common case inline, anything
# else (a value not of the annotated type) through _json, which writes whatever it is.
_WRITERS = {
    "str": "(_quote(s.{0}) if type(s.{0}) is str else _json(s.{0}))",
    "str | None": '("null" if s.{0} is None else _quote(s.{0}) if type(s.{0}) is str '
                  "else _json(s.{0}))",
    "int": "(str(s.{0}) if type(s.{0}) is int else _json(s.{0}))",
    "bool": '("true" if s.{0} is True else "false" if s.{0} is False else _json(s.{0}))',
}


def _compile_session_json() -> Callable[[Session], str]:
    """One f-string that writes every field of a Session, made from its fields: no loop, no
    getattr, no call per field for text, numbers and flags (2.2 us a session instead of 3.2
    written member by member)."""
    parts = []
    for i, f in enumerate(fields(Session)):
        write = _WRITERS.get(str(f.type), "_json(s.{0})").format(f.name)
        parts.append(f"{'{{' if i == 0 else ','}{_quote(f.name)}:{{{write}}}")
    # One f-string (the writers use only double quotes): built in one step, not by pairs.
    source = "def session_json(s):\n    return f'" + "".join(parts) + f',"v":{_VERSION}}}}}' \
        + "'\n"
    scope: dict[str, Any] = {"_quote": _quote, "_json": _json}
    exec(source, scope)  # noqa: S102 - made from Session's own field names and annotations
    writer: Callable[[Session], str] = scope["session_json"]
    return writer


def _json(value: Any) -> str:
    # Every field is a str (or a str enum), an int, a bool, None, or a tuple of strs or of
    # pairs of strs; anything else goes through the encoder, as before.
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is tuple:
        return "[" + ",".join([_json(item) for item in value]) + "]"
    if isinstance(value, str):
        return _quote(value)
    return _ENCODER.encode(value)


_session_json = _compile_session_json()


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def seal(session: Session, keyring: Keyring) -> str:
    plaintext = _session_json(session).encode()
    blob = keyring.seal(_compress(plaintext), purpose=PURPOSE, aad=session.access_key_id)
    # base64.urlsafe_b64encode, without its two layers of Python calls.
    return binascii.b2a_base64(blob, newline=False).translate(_TO_URLSAFE).rstrip(b"=") \
        .decode("ascii")


def open_token(token: str, access_key_id: str, keyring: Keyring, *, now: datetime) -> Session:
    """The session a token seals, if it is intact, bound to this key id and not expired."""
    session = _decode(token, access_key_id, keyring)
    if now.timestamp() >= session.expires_at:
        raise ExpiredToken()
    return session


class OpenedTokens:
    """open_token with a memory: a client signs many requests with one token, so the tokens
    this process has opened recently are kept (bounded, least recently used dropped first).

    Only tokens that opened are remembered. The memory is forgotten whenever the keyring's
    usable keys change, so a token sealed with a retired key stops working here as soon as
    the keyring notices the retirement; expiry is checked on every use.
    """

    def __init__(self, keyring: Keyring, *, size: int = 4096) -> None:
        self._keyring = keyring
        self._size = size
        self._opened: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._generation = keyring.generation

    def open(self, token: str, access_key_id: str, *, now: datetime) -> Session:
        self._keyring.refresh()
        if self._keyring.generation != self._generation:
            self._opened.clear()
            self._generation = self._keyring.generation
        key = (token, access_key_id)
        session = self._opened.get(key)
        cache_lookup("session_tokens", session is not None)
        if session is None:
            session = _decode(token, access_key_id, self._keyring)
            self._opened[key] = session
            if len(self._opened) > self._size:
                self._opened.popitem(last=False)
        else:
            self._opened.move_to_end(key)
        if now.timestamp() >= session.expires_at:
            raise ExpiredToken()
        return session


def _decode(token: str, access_key_id: str, keyring: Keyring) -> Session:
    if not _TOKEN.fullmatch(token):
        # Strict: a character outside the alphabet is refused, not skipped, so that no two
        # different strings are the same token.
        raise InvalidClientTokenId()
    try:
        blob = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidClientTokenId() from None
    if base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii") != token:
        raise InvalidClientTokenId()  # a non-canonical spelling of some token
    try:
        packed = keyring.unseal(blob, purpose=PURPOSE, aad=access_key_id)
        inflate = zlib.decompressobj()
        plaintext = inflate.decompress(packed, _MAX_PLAINTEXT)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("session plaintext is too large or incomplete")
        doc: dict[str, Any] = json.loads(plaintext)
        if doc.pop("v", None) != _VERSION:
            raise ValueError("unknown session version")
        doc["kind"] = SessionKind(doc["kind"])
        doc["tags"] = tuple((str(k), str(v)) for k, v in doc["tags"])
        doc["transitive_tag_keys"] = tuple(doc["transitive_tag_keys"])
        doc["policy_arns"] = tuple(doc["policy_arns"])
        session = Session(**doc)
    except (SealError, ValueError, KeyError, TypeError, zlib.error):
        raise InvalidClientTokenId() from None
    if session.access_key_id != access_key_id:
        raise InvalidClientTokenId()
    return session


def padded(session: Session, keyring: Keyring, minimum: int) -> str:
    """Seal the session, growing the token to at least ``minimum`` bytes when asked
    (GetSessionToken / GetFederationToken MinimumSessionTokenSize)."""
    token = seal(session, keyring)
    grow = 0
    while len(token) < minimum:
        # Random padding, so that it does not compress away; a few rounds converge.
        grow += minimum - len(token)
        token = seal(replace(session, padding=secrets.token_urlsafe(grow)[:grow]), keyring)
    return token
