"""A provider's answers and key sets are as hostile as the tokens: what they may cost the broker
is bounded, and nothing they hold makes it fail with anything but a refusal. Each case beside
the honest answer of the same fixture.

A plain-HTTP issuer on loopback (``oidc.allow_http_loopback``) serves what a test sets.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from broker.idp import oidc
from broker.idp.jwks import Issuer, KeySource, KeysUnavailable
from broker.settings import OidcSettings


def rsa_jwk(kid: str, *, exponent: int = 65537, bits: int = 2048) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    if exponent != 65537:
        n = key.public_numbers().n
        jwk = json.loads(RSAAlgorithm.to_jwk(rsa.RSAPublicNumbers(exponent, n).public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


class Answers:
    """What the issuer answers: per path, (status, headers, body)."""

    def __init__(self) -> None:
        self.by_path: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits = 0


@pytest.fixture
def issuer() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers.hits += 1
            status, headers, body = answers.by_path.get(self.path, (404, {}, b""))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield url, answers
    finally:
        server.shutdown()
        server.server_close()


def serve(url: str, answers: Answers, jwks: bytes, *, jwks_uri: str | None = None,
          headers: dict[str, str] | None = None) -> None:
    answers.by_path["/.well-known/openid-configuration"] = (200, {}, json.dumps(
        {"issuer": url, "jwks_uri": jwks_uri or f"{url}/keys"}).encode())
    answers.by_path["/keys"] = (200, headers or {}, jwks)


def source(**changes: Any) -> KeySource:
    return KeySource(dataclasses.replace(OidcSettings(), allow_http_loopback=True,
                                         refetch_interval_seconds=60, **changes))


def fetch(keys: KeySource, url: str) -> oidc.KeySet:
    return asyncio.run(keys.keys(Issuer(url)))


def test_a_compressed_answer_is_refused_before_it_is_inflated(
        issuer: tuple[str, Answers]) -> None:
    url, answers = issuer
    document = json.dumps({"keys": [rsa_jwk("k1")]}).encode()
    serve(url, answers, document)
    assert len(fetch(source(), url).keys) == 1  # the control: the same keys, plain
    serve(url, answers, gzip.compress(document), headers={"Content-Encoding": "gzip"})
    with pytest.raises(KeysUnavailable, match="content encoding"):
        fetch(source(), url)


def test_a_jwks_uri_or_max_age_that_cannot_be_read_is_a_refusal_and_throttled(
        issuer: tuple[str, Answers]) -> None:
    url, answers = issuer
    document = json.dumps({"keys": [rsa_jwk("k1")]}).encode()
    serve(url, answers, document, headers={"Cache-Control": "max-age=" + "9" * 5000})
    assert len(fetch(source(), url).keys) == 1  # absurd max-age: the default lifetime
    serve(url, answers, document, jwks_uri="http://[::1")
    keys = source()
    with pytest.raises(KeysUnavailable, match="not usable"):
        asyncio.run(keys.keys(Issuer(url)))
    hits = answers.hits

    async def again() -> None:
        with pytest.raises(KeysUnavailable):
            await keys.keys(Issuer(url))

    asyncio.run(again())
    assert answers.hits == hits  # the failure is remembered: no new fetch within the interval


def test_rsa_keys_with_a_huge_exponent_or_modulus_are_left_out() -> None:
    honest = rsa_jwk("k1")
    huge_e = rsa_jwk("k2", exponent=(1 << 2000) + 1)  # valid for OpenSSL, slow to verify
    loaded = oidc.load_jwks({"keys": [honest, huge_e]})
    assert [k.kid for k in loaded.keys] == ["k1"] and loaded.skipped == 1


def test_a_key_whose_alg_is_not_a_string_is_left_out() -> None:
    honest = rsa_jwk("k1")
    loaded = oidc.load_jwks({"keys": [honest, {**rsa_jwk("k2"), "alg": ["RS256"]},
                                      {**rsa_jwk("k3"), "alg": {"x": 1}}]})
    assert [k.kid for k in loaded.keys] == ["k1"] and loaded.skipped == 2


def test_a_token_without_kid_is_tried_against_a_bounded_number_of_keys() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mine = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "use": "sig"}
    others = [{**rsa_jwk(f"k{i}"), "kid": None} for i in range(oidc.MAX_CANDIDATES)]
    header = {"alg": "RS256"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(b'{}')}"
    jws = signing_input + "." + b64(RSAAlgorithm(RSAAlgorithm.SHA256).sign(
        signing_input.encode(), private))
    few = oidc.load_jwks({"keys": [*others[:3], mine]})
    oidc.verify_signature(oidc.parse(jws), few)  # the control: found among four
    many = oidc.load_jwks({"keys": [*others, mine]})
    with pytest.raises(oidc.TokenRefused, match="must name one by kid"):
        oidc.verify_signature(oidc.parse(jws), many)


def test_made_up_provider_names_do_not_flush_the_iam_cache() -> None:
    """Unverified requests name providers freely; their lookups are kept apart, so a flood of
    made-up names cannot push out the answers signed requests depend on. The control: the same
    flood in the shared cache does push them out."""
    from broker.iam.permissions import Permissions

    permissions = Permissions(None, None, cache_seconds=60, writes=lambda: 0)  # type: ignore[arg-type]
    builds = 0

    async def build() -> str:
        nonlocal builds
        builds += 1
        return "answer"

    async def run(untrusted: bool) -> int:
        nonlocal builds
        builds = 0
        await permissions.cached(("role", "AROA1"), build)
        for i in range(5000):
            await permissions.cached(("oidc-provider", "1", f"https://x{i}.example"), build,
                                     untrusted=untrusted)
        before = builds
        await permissions.cached(("role", "AROA1"), build)
        return builds - before

    assert asyncio.run(run(untrusted=True)) == 0  # still cached
    assert asyncio.run(run(untrusted=False)) == 1  # the control: flushed
