"""Project Wycheproof's JWS vectors through the broker's token verification path.

Each case's key is the trusted key (its public part, as a JWKS); the case's JWS goes through
``oidc.parse`` and ``oidc.verify_signature``, exactly as a web identity token does. Every
``invalid`` case must be refused. Every ``valid`` case whose algorithm the broker accepts must
pass — except where the case's header names another algorithm than the key itself declares,
which the broker refuses on purpose (a key is used only with its own algorithm); for those the
test proves that the same signature verifies once the key no longer declares an algorithm, so
the refusal is the binding and not a broken verifier.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from broker.idp import oidc
from tests.helpers import CORPORA

VECTORS = CORPORA / "wycheproof" / "json_web_signature_test.json"


def _cases() -> list[Any]:
    if not VECTORS.exists():
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(f"Wycheproof vectors missing: {VECTORS}")
        return [pytest.param(None, None, None, marks=pytest.mark.skip(
            reason=f"Wycheproof vectors not found at {VECTORS}"))]
    document = json.loads(VECTORS.read_text())
    out = []
    for group in document["testGroups"]:
        key = group.get("public") or group.get("private")
        for case in group["tests"]:
            out.append(pytest.param(key, case, group["comment"],
                                    id=f"{case['tcId']}-{group['comment']}-{case['comment']}"))
    return out


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


def _verify(jws: Any, jwk: dict[str, Any]) -> str | None:
    """None if the broker accepts ``jws`` under ``jwk``, else its reason."""
    if not isinstance(jws, str):
        return "JSON serialization"  # only the compact form is ever accepted
    try:
        oidc.verify_signature(oidc.parse(jws), oidc.load_jwks({"keys": [_public(jwk)]}))
    except oidc.TokenRefused as exc:
        return exc.message
    return None


def _alg(jws: Any) -> Any:
    try:
        return oidc.parse(jws).header.get("alg") if isinstance(jws, str) else None
    except oidc.TokenRefused:
        return None


@pytest.mark.parametrize(("jwk", "case", "group"), _cases())
def test_wycheproof_case(jwk: dict[str, Any], case: dict[str, Any], group: str) -> None:
    refused = _verify(case["jws"], jwk)
    if case["result"] == "invalid":
        assert refused is not None, f"accepted an invalid JWS: {case['comment']}"
        return
    alg = _alg(case["jws"])
    if alg not in oidc.ALGORITHMS or case["result"] != "valid":
        assert refused is not None  # HMAC and the like are never accepted
        return
    if jwk.get("alg") not in (None, alg):
        assert refused is not None
        undeclared = {k: v for k, v in jwk.items() if k != "alg"}
        assert _verify(case["jws"], undeclared) is None
        return
    assert refused is None, refused


def test_the_vectors_exercise_every_outcome() -> None:
    """The corpus holds cases the broker accepts for RSA, PSS and ECDSA (its only ES512 case
    names its key 'ES521', an algorithm that does not exist, and is refused)."""
    if not VECTORS.exists():
        pytest.skip(f"Wycheproof vectors not found at {VECTORS}")
    document = json.loads(VECTORS.read_text())
    accepted: set[str] = set()
    for group in document["testGroups"]:
        key = group.get("public") or group.get("private")
        for case in group["tests"]:
            if case["result"] == "valid" and _verify(case["jws"], key) is None:
                accepted.add(_alg(case["jws"]))
    assert {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256"} <= accepted, \
        accepted
