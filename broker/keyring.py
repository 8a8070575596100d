"""The keyring: AES-256-GCM keys with ids. One key seals; every key not retired unseals.

A key is *staged* (it unseals, but does not seal yet), *active* (the most recently activated
active key is the *sealing* key) or *retired* (its material wiped: nothing it sealed opens).
Staging first lets a new key reach every host of a distributed deployment before any host seals
with it; ``rotate`` stages and activates at once, for one host or a shared keyring file.

A sealed blob is ``version | len(key id) | key id | nonce | ciphertext+tag``. The key id is in the
clear so that any process holding the keyring picks the right key; the associated data binds the
blob to its purpose (a session token, a stored access-key secret) and to the record it belongs
to (the access key id), so a blob cut from one place does not open in another.

The keyring lives in a JSON file with mode 0600. Processes notice a rotation or a retirement by
re-reading the file when its modification time changes (checked at most every few seconds, and
at once when a blob names a key id they do not know), so rotation needs no restart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.clock import Clock, iso8601
from broker.errors import KeyringError, SealError

_FORMAT = 1
_NONCE = 12
_FILE_VERSION = 1


@dataclass(frozen=True)
class Key:
    id: str
    created: str
    material: bytes | None  # None once retired: the secret is wiped from the file
    activated: str | None = None  # None while staged
    retired: str | None = None

    @property
    def usable(self) -> bool:
        """It unseals: staged or active, not retired."""
        return self.retired is None and self.material is not None

    @property
    def active(self) -> bool:
        return self.usable and self.activated is not None

    @property
    def state(self) -> str:
        if not self.usable:
            return "retired"
        return "active" if self.activated is not None else "staged"


class Keyring:
    def __init__(self, keys: Iterable[Key], *, path: Path | None = None,
                 check_interval: float = 5.0) -> None:
        self._keys: list[Key] = list(keys)
        self._path = path
        self._check_interval = check_interval
        self._mtime = _mtime(path) if path else None
        self._checked = time.monotonic()
        self.generation = 0  # moves whenever the set of usable keys may have changed
        self._index()

    # -- creation and persistence ---------------------------------------------------------------

    @classmethod
    def generate(cls, clock: Clock, *, path: Path | None = None) -> Keyring:
        return cls([_new_key(clock.now())], path=path)

    @classmethod
    def load(cls, path: Path, *, check_interval: float = 5.0) -> Keyring:
        return cls(_read(path), path=path, check_interval=check_interval)

    def save(self, path: Path | None = None) -> None:
        target = path or self._path
        if target is None:
            raise KeyringError("keyring has no file to save to")
        _write(target, self._keys)
        self._path = target
        self._mtime = _mtime(target)

    # -- use ------------------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[Key, ...]:
        return tuple(self._keys)

    @property
    def sealing(self) -> Key:
        """The key that seals: the active key activated last."""
        self.refresh()
        return _sealing(self._keys)

    def seal(self, plaintext: bytes, *, purpose: str, aad: str) -> bytes:
        key = self.sealing
        assert key.material is not None
        kid = key.id.encode("ascii")
        nonce = secrets.token_bytes(_NONCE)
        body = self._cipher(key.material).encrypt(nonce, plaintext, _aad(purpose, aad))
        return bytes([_FORMAT, len(kid)]) + kid + nonce + body

    def unseal(self, blob: bytes, *, purpose: str, aad: str) -> bytes:
        if len(blob) < 2 or blob[0] != _FORMAT:
            raise SealError("not a sealed blob of a known format")
        kid_len = blob[1]
        header = 2 + kid_len
        if len(blob) < header + _NONCE + 16:
            raise SealError("sealed blob is truncated")
        try:
            kid = blob[2:header].decode("ascii")
        except UnicodeDecodeError:
            raise SealError("sealed blob names an unreadable key id") from None
        key = self._find(kid)
        if key is None or key.material is None:
            raise SealError(f"key {kid!r} is unknown or retired")
        nonce, body = blob[header : header + _NONCE], blob[header + _NONCE :]
        try:
            return self._cipher(key.material).decrypt(nonce, body, _aad(purpose, aad))
        except InvalidTag:
            raise SealError("sealed blob does not authenticate") from None

    def _cipher(self, material: bytes) -> AESGCM:
        """The AES-GCM object of a key, made once (its key schedule is half the cost of sealing
        a session token); keyed by the material itself, so a changed key is a new entry."""
        ciphers: dict[bytes, AESGCM] = self.__dict__.setdefault("_ciphers", {})
        cipher = ciphers.get(material)
        if cipher is None:
            if len(ciphers) > 64:
                ciphers.clear()
            cipher = ciphers[material] = AESGCM(material)
        return cipher

    def key_id_of(self, blob: bytes) -> str | None:
        """The key id a sealed blob names, without opening it."""
        if len(blob) < 2 or blob[0] != _FORMAT or len(blob) < 2 + blob[1]:
            return None
        return blob[2 : 2 + blob[1]].decode("ascii", errors="replace")

    # -- rotation -------------------------------------------------------------------------------

    def add(self, clock: Clock) -> Key:
        """Stage a new key: it unseals at once, and seals once activated."""
        key = _new_key(clock.now(), activated=False)
        self._keys.append(key)
        self._index()
        return key

    def activate(self, key_id: str, clock: Clock) -> Key:
        """Make a staged key the sealing key. Blobs sealed with older keys keep opening until
        those retire."""
        key = self._key(key_id)
        if not key.usable:
            raise KeyringError(f"key {key_id!r} is retired")
        if key.activated is not None:
            raise KeyringError(f"key {key_id!r} is already active")
        return self._replace(replace(key, activated=iso8601(clock.now())))

    def rotate(self, clock: Clock) -> Key:
        """Stage and activate a new key at once."""
        return self.activate(self.add(clock).id, clock)

    def check_retirable(self, key_id: str) -> Key:
        key = self._key(key_id)
        if not key.usable:
            raise KeyringError(f"key {key_id!r} is already retired")
        if key.id == _sealing(self._keys).id:
            raise KeyringError(
                f"key {key_id!r} is the sealing key; rotate first so that another key seals"
            )
        return key

    def retire(self, key_id: str, clock: Clock) -> Key:
        """Retire a key: its material is wiped, and blobs sealed with it no longer open."""
        key = self.check_retirable(key_id)
        return self._replace(replace(key, material=None, retired=iso8601(clock.now())))

    def _key(self, key_id: str) -> Key:
        key = self._by_id.get(key_id)
        if key is None:
            raise KeyringError(f"no key with id {key_id!r}")
        return key

    def _replace(self, key: Key) -> Key:
        self._keys = [key if k.id == key.id else k for k in self._keys]
        self._index()
        return key

    # -- reloading ------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since we read it (at most every check interval)."""
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < self._check_interval:
            return
        self._checked = now
        mtime = _mtime(self._path)
        if mtime is None or mtime == self._mtime:
            return
        try:
            keys = _read(self._path)
        except KeyringError:
            return  # a half-written or broken file: keep what we have, fail closed on new ids
        self._keys = keys
        self._mtime = mtime
        self._index()

    def _find(self, kid: str) -> Key | None:
        self.refresh()
        key = self._by_id.get(kid)
        if key is None:
            self.refresh(force=time.monotonic() - self._checked >= 1.0)
            key = self._by_id.get(kid)
        return key

    def _index(self) -> None:
        self.generation += 1
        self._by_id = {k.id: k for k in self._keys}
        if len(self._by_id) != len(self._keys):
            raise KeyringError("keyring holds two keys with the same id")


def _aad(purpose: str, aad: str) -> bytes:
    return b"broker:" + purpose.encode() + b"\x00" + aad.encode()


def _new_key(now: datetime, *, activated: bool = True) -> Key:
    kid = "k" + now.strftime("%Y%m%d") + secrets.token_hex(3)
    return Key(id=kid, created=iso8601(now), material=AESGCM.generate_key(bit_length=256),
               activated=iso8601(now) if activated else None)


def _sealing(keys: list[Key]) -> Key:
    active = [k for k in keys if k.active]
    if not active:
        raise KeyringError("keyring has no active key")
    # The latest activation wins; for equal times, the key later in the file.
    return max(enumerate(active), key=lambda pair: (pair[1].activated or "", pair[0]))[1]


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def _read(path: Path) -> list[Key]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyringError(f"cannot read keyring {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyringError(f"keyring {path} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("version") != _FILE_VERSION:
        raise KeyringError(f"keyring {path} has an unknown format")
    keys = []
    for entry in raw.get("keys", []):
        try:
            material = entry.get("material")
            key = Key(
                id=str(entry["id"]),
                created=str(entry["created"]),
                material=base64.b64decode(material, validate=True) if material else None,
                activated=entry.get("activated"),
                retired=entry.get("retired"),
            )
        except (KeyError, TypeError, ValueError):
            raise KeyringError(f"keyring {path} holds an unreadable key entry") from None
        if key.material is not None and len(key.material) != 32:
            raise KeyringError(f"keyring {path}: key {key.id!r} is not a 256-bit key")
        keys.append(key)
    if not any(k.active for k in keys):
        raise KeyringError(f"keyring {path} has no active key")
    return keys


def _write(path: Path, keys: list[Key]) -> None:
    doc = {
        "version": _FILE_VERSION,
        "keys": [
            {
                "id": k.id,
                "created": k.created,
                "material": base64.b64encode(k.material).decode() if k.material else None,
                "activated": k.activated,
                "retired": k.retired,
            }
            for k in keys
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keyring-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
