from __future__ import annotations

import base64
import json
from dataclasses import fields, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.aws import ids
from broker.aws.errors import ExpiredToken, InvalidClientTokenId
from broker.clock import FixedClock
from broker.keyring import Keyring
from broker.sts import tokens
from broker.sts.tokens import Session, SessionKind

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLOCK = FixedClock(NOW)


def session(**overrides: object) -> Session:
    base = Session(
        access_key_id=ids.new_access_key_id("123456789012", temporary=True),
        secret_access_key=ids.new_secret_access_key(),
        kind=SessionKind.FEDERATED_USER,
        account_id="123456789012",
        arn="arn:aws:sts::123456789012:federated-user/bob",
        user_id="123456789012:bob",
        name="bob",
        source_arn="arn:aws:iam::123456789012:root",
        source_id="123456789012",
        issued_at=int(NOW.timestamp()),
        expires_at=int(NOW.timestamp()) + 900,
        tags=(("team", "a"),),
        policy='{"Statement":[]}',
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_token_carries_the_whole_session() -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    token = tokens.seal(s, ring)
    assert s.secret_access_key not in token
    assert tokens.open_token(token, s.access_key_id, ring, now=NOW) == s


LARGE_POLICY = '{"Statement":[' + ",".join(
    '{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-' + str(i) + '/*"}'
    for i in range(30)) + "]}"


@pytest.mark.parametrize("policy", [None, '{"Statement":[]}', LARGE_POLICY])
def test_small_sessions_are_stored_and_large_ones_compressed(policy: str | None) -> None:
    # Both kinds are zlib streams that open the same way; a plain session is stored as is
    # (the stream zlib itself writes at level 0), a large one comes out smaller than it went in.
    import zlib

    s = session(policy=policy)
    plaintext = tokens._ENCODER.encode({**{n: getattr(s, n) for n in tokens._FIELDS},
                                        "v": 1}).encode()
    packed = tokens._compress(plaintext)
    assert zlib.decompress(packed) == plaintext
    if len(plaintext) <= tokens._STORE_UP_TO:
        assert packed == zlib.compress(plaintext, 0)
    else:
        assert len(packed) < len(plaintext) // 2
    ring = Keyring.generate(CLOCK)
    assert tokens.open_token(tokens.seal(s, ring), s.access_key_id, ring, now=NOW) == s


def test_token_is_bound_to_its_access_key_id() -> None:
    ring = Keyring.generate(CLOCK)
    a, b = session(), session()
    with pytest.raises(InvalidClientTokenId):
        tokens.open_token(tokens.seal(a, ring), b.access_key_id, ring, now=NOW)


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-4],
    lambda t: t[:20],
    lambda t: "",
    lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],
    lambda t: t + "AAAA",
    lambda t: "!!" + t,
    lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
])
def test_tampered_or_truncated_tokens_are_invalid(mutate: object) -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    token = tokens.seal(s, ring)
    bad = mutate(token)  # type: ignore[operator]
    assert bad != token
    with pytest.raises(InvalidClientTokenId):
        tokens.open_token(bad, s.access_key_id, ring, now=NOW)


def test_retired_key_token_is_invalid() -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    token = tokens.seal(s, ring)
    old = ring.sealing.id
    ring.rotate(CLOCK)
    assert tokens.open_token(token, s.access_key_id, ring, now=NOW) == s
    ring.retire(old, CLOCK)
    with pytest.raises(InvalidClientTokenId):
        tokens.open_token(token, s.access_key_id, ring, now=NOW)


def test_expired_token() -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    token = tokens.seal(s, ring)
    later = datetime.fromtimestamp(s.expires_at - 1, UTC)
    assert tokens.open_token(token, s.access_key_id, ring, now=later) == s
    with pytest.raises(ExpiredToken):
        tokens.open_token(token, s.access_key_id, ring, now=s.expiration)


def test_a_sealed_blob_of_another_purpose_is_not_a_token() -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    blob = ring.seal(b'{"v":1}', purpose="access-key-secret", aad=s.access_key_id)
    forged = base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
    with pytest.raises(InvalidClientTokenId):
        tokens.open_token(forged, s.access_key_id, ring, now=NOW)


@pytest.mark.parametrize("minimum", [0, 100, 1500, 4096])
def test_padding_reaches_the_minimum_size(minimum: int) -> None:
    ring = Keyring.generate(CLOCK)
    s = session()
    token = tokens.padded(s, ring, minimum)
    assert len(token) >= minimum
    assert len(token) < max(minimum, 600) + 200
    opened = tokens.open_token(token, s.access_key_id, ring, now=NOW)
    assert opened == s


TEXT = st.text(max_size=20)


@settings(max_examples=400)
@given(name=TEXT, tags=st.lists(st.tuples(TEXT, TEXT), max_size=4),
       keys=st.lists(TEXT, max_size=3), identity=st.none() | TEXT,
       policy=st.none() | TEXT, arns=st.lists(TEXT, max_size=3), mfa=st.booleans(),
       depth=st.integers(0, 5), expires=st.integers(0, 2**40),
       kind=st.sampled_from(list(SessionKind)))
def test_session_json_is_what_the_encoder_writes(
        name: str, tags: list[tuple[str, str]], keys: list[str], identity: str | None,
        policy: str | None, arns: list[str], mfa: bool, depth: int, expires: int,
        kind: SessionKind) -> None:
    s = session(name=name, tags=tuple(tags), transitive_tag_keys=tuple(keys),
                source_identity=identity, policy=policy, policy_arns=tuple(arns), mfa=mfa,
                chain_depth=depth, expires_at=expires, kind=kind)
    doc = {f.name: getattr(s, f.name) for f in fields(Session)}
    doc["v"] = 1
    assert tokens.session_json(s) == json.dumps(doc, separators=(",", ":"))
