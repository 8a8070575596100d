"""oidc.parse reads the three base64url segments of a compact JWS exactly as
base64.urlsafe_b64decode does, and refuses what is not base64url without padding."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.idp import oidc
from broker.idp.oidc import TokenRefused


def segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@settings(max_examples=1000)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
       st.binary(min_size=0, max_size=300), st.binary(min_size=1, max_size=300))
def test_segments_decode_as_the_standard_library_does(header: dict[str, str], payload: bytes,
                                                       signature: bytes) -> None:
    head = segment(json.dumps(header).encode())
    token = f"{head}.{segment(payload)}.{segment(signature)}"
    jws = oidc.parse(token)
    assert jws.header == header
    assert jws.payload == base64.urlsafe_b64decode(segment(payload) + "==") == payload
    assert jws.signature == signature
    assert jws.signing_input == f"{head}.{segment(payload)}".encode()


@pytest.mark.parametrize("bad", ["e30.e30.A", "e30.e30.AA==", "e30.e30.A+/A", "e30.e30.A A",
                                 "e30.e30.AAAAA"])
def test_what_is_not_unpadded_base64url_is_refused_and_the_control(bad: str) -> None:
    with pytest.raises(TokenRefused):
        oidc.parse(bad)
    assert oidc.parse("e30.e30.AAAA").signature == b"\x00\x00\x00"  # the control
