from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.clock import FixedClock
from broker.errors import KeyringError, SealError
from broker.keyring import Keyring

CLOCK = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))


def test_sealed_blob_opens_with_same_purpose_and_data() -> None:
    ring = Keyring.generate(CLOCK)
    blob = ring.seal(b"secret", purpose="p", aad="AKIA1")
    assert b"secret" not in blob
    assert ring.unseal(blob, purpose="p", aad="AKIA1") == b"secret"


@pytest.mark.parametrize(("purpose", "aad"), [("other", "AKIA1"), ("p", "AKIA2")])
def test_blob_bound_to_purpose_and_associated_data(purpose: str, aad: str) -> None:
    ring = Keyring.generate(CLOCK)
    blob = ring.seal(b"secret", purpose="p", aad="AKIA1")
    with pytest.raises(SealError):
        ring.unseal(blob, purpose=purpose, aad=aad)


def test_every_tampered_byte_is_refused() -> None:
    ring = Keyring.generate(CLOCK)
    blob = ring.seal(b"secret", purpose="p", aad="a")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(SealError):
            ring.unseal(bytes(tampered), purpose="p", aad="a")


def test_truncated_and_empty_blobs_are_refused() -> None:
    ring = Keyring.generate(CLOCK)
    blob = ring.seal(b"secret", purpose="p", aad="a")
    for cut in (0, 1, 2, 10, len(blob) - 1):
        with pytest.raises(SealError):
            ring.unseal(blob[:cut], purpose="p", aad="a")


def test_another_keyring_cannot_open() -> None:
    blob = Keyring.generate(CLOCK).seal(b"secret", purpose="p", aad="a")
    with pytest.raises(SealError):
        Keyring.generate(CLOCK).unseal(blob, purpose="p", aad="a")


def test_rotation_keeps_old_blobs_open_until_retired() -> None:
    ring = Keyring.generate(CLOCK)
    old_id = ring.sealing.id
    old = ring.seal(b"old", purpose="p", aad="a")
    new_key = ring.rotate(CLOCK)
    assert ring.sealing.id == new_key.id != old_id
    new = ring.seal(b"new", purpose="p", aad="a")
    assert ring.key_id_of(new) == new_key.id
    assert ring.unseal(old, purpose="p", aad="a") == b"old"
    ring.retire(old_id, CLOCK)
    with pytest.raises(SealError):
        ring.unseal(old, purpose="p", aad="a")
    assert ring.unseal(new, purpose="p", aad="a") == b"new"


def test_sealing_key_cannot_be_retired() -> None:
    ring = Keyring.generate(CLOCK)
    with pytest.raises(KeyringError, match="sealing key"):
        ring.retire(ring.sealing.id, CLOCK)


def test_a_staged_key_opens_but_does_not_seal_until_activated(tmp_path: Path) -> None:
    ring = Keyring.generate(CLOCK)
    first = ring.sealing.id
    staged = ring.add(CLOCK)
    assert staged.state == "staged"
    assert ring.sealing.id == first  # still sealing with the first key
    assert ring.key_id_of(ring.seal(b"x", purpose="p", aad="a")) == first
    # A host that received the staged key opens what an activated host seals with it.
    other = Keyring(ring.keys)
    ring.activate(staged.id, CLOCK)
    assert ring.sealing.id == staged.id
    blob = ring.seal(b"secret", purpose="p", aad="a")
    assert other.unseal(blob, purpose="p", aad="a") == b"secret"
    assert other.sealing.id == first  # it still seals with the old key: the first opens that
    assert ring.unseal(other.seal(b"y", purpose="p", aad="a"), purpose="p", aad="a") == b"y"
    # A host that never received the staged key cannot: what the staging step is for.
    stranger = Keyring([k for k in ring.keys if k.id != staged.id])
    with pytest.raises(SealError):
        stranger.unseal(blob, purpose="p", aad="a")
    with pytest.raises(KeyringError, match="already active"):
        ring.activate(staged.id, CLOCK)
    path = tmp_path / "keyring.json"
    ring.save(path)
    assert Keyring.load(path).sealing.id == staged.id


def test_file_is_private_and_retired_material_is_wiped(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = Keyring.generate(CLOCK, path=path)
    old_id = ring.sealing.id
    ring.rotate(CLOCK)
    ring.retire(old_id, CLOCK)
    ring.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entries = {e["id"]: e for e in json.loads(path.read_text())["keys"]}
    assert entries[old_id]["material"] is None and entries[old_id]["retired"]
    assert Keyring.load(path).sealing.id == ring.sealing.id


def test_another_process_sees_rotation_and_retirement(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    writer = Keyring.generate(CLOCK, path=path)
    writer.save()
    reader = Keyring.load(path, check_interval=1)
    first = writer.sealing.id
    old_blob = reader.seal(b"x", purpose="p", aad="a")
    writer.rotate(CLOCK)
    writer.save()
    fresh = writer.seal(b"y", purpose="p", aad="a")
    # The reader does not know the new key id yet: an unknown id makes it reread the file.
    reader._checked -= 5
    assert reader.unseal(fresh, purpose="p", aad="a") == b"y"
    writer.retire(first, CLOCK)
    writer.save()
    reader._checked -= 5
    with pytest.raises(SealError):
        reader.unseal(old_blob, purpose="p", aad="a")


@pytest.mark.parametrize(
    "content",
    ["not json", '{"version": 2, "keys": []}', '{"version": 1, "keys": []}',
     '{"version": 1, "keys": [{"id": "k", "created": "x", "material": "AAAA"}]}'],
)
def test_unusable_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(content)
    with pytest.raises(KeyringError):
        Keyring.load(path)
