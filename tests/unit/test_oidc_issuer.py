"""The test OpenID Connect issuer checked without the broker: httpx over TLS, pyjwt to verify.

What it serves is fetched over real TLS trusting only its certificate (and, as a control, refused
by a client that trusts the system's CAs); what it signs verifies with pyjwt against the JWK it
publishes, and stops verifying when one byte of the payload changes.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509

from tests.oidc_issuer import (
    CountingServer,
    IssuerKey,
    TestIssuer,
    b64url,
    compact,
    default_claims,
    hs_token,
    sign_with,
)

SIGNING_ALGS = ("RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA")


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    with TestIssuer(path="/realms/corp", algs=("RS256", "ES256")) as running:
        yield running


def client(issuer: TestIssuer) -> httpx.Client:
    context = ssl.create_default_context(cadata=issuer.certificate_pem.decode())
    return httpx.Client(verify=context, timeout=5)


def jwks(issuer: TestIssuer) -> dict[str, Any]:
    with client(issuer) as http:
        response = http.get(issuer.jwks_url)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "repo:evil/app:ref:refs/heads/main"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def test_discovery_and_jwks_are_served_over_tls(issuer: TestIssuer) -> None:
    assert issuer.url == f"https://127.0.0.1:{issuer.port}/realms/corp"
    assert issuer.host_port == f"127.0.0.1:{issuer.port}"
    with client(issuer) as http:
        discovery = http.get(f"{issuer.url}/.well-known/openid-configuration")
        assert discovery.status_code == 200
        assert discovery.json() == {
            "issuer": issuer.url,
            "jwks_uri": f"{issuer.url}/keys",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }
        keys = http.get(discovery.json()["jwks_uri"])
    assert keys.status_code == 200
    assert keys.headers["content-type"] == "application/json"
    assert keys.headers["cache-control"] == "max-age=300"
    published = keys.json()["keys"]
    assert [(k["kid"], k["kty"], k["use"], k["alg"]) for k in published] == [
        (issuer.keys[0].kid, "RSA", "sig", "RS256"), (issuer.keys[1].kid, "EC", "sig", "ES256"),
    ]
    assert set(published[0]) == {"kty", "kid", "use", "alg", "n", "e"}
    assert published[1]["crv"] == "P-256" and "d" not in published[1]


def test_a_client_that_trusts_only_the_system_cas_is_refused(issuer: TestIssuer) -> None:
    with httpx.Client(verify=ssl.create_default_context(), timeout=5) as http, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        http.get(issuer.jwks_url)


def test_the_certificate_names_127_0_0_1_and_localhost_and_is_valid_now(
        issuer: TestIssuer) -> None:
    certificate = x509.load_pem_x509_certificate(issuer.certificate_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    now = datetime.now(UTC)
    assert now - timedelta(days=1, minutes=1) < certificate.not_valid_before_utc < now
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == timedelta(days=30)


def test_the_thumbprint_is_the_sha1_of_the_certificate_the_server_presents(
        issuer: TestIssuer) -> None:
    presented = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", issuer.port)))
    assert issuer.thumbprint == hashlib.sha1(presented).hexdigest()
    assert len(issuer.thumbprint) == 40 and issuer.thumbprint == issuer.thumbprint.lower()
    other = TestIssuer()
    assert other.thumbprint != issuer.thumbprint


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_a_token_verifies_with_pyjwt_against_the_published_jwk(alg: str) -> None:
    with TestIssuer(algs=(alg,)) as issuer:
        published = jwks(issuer)["keys"]
        token = issuer.token()
    assert len(published) == 1 and published[0]["alg"] == alg
    key = jwt.PyJWK(published[0]).key
    claims = jwt.decode(token, key, algorithms=[alg], audience="client-1", issuer=issuer.url)
    assert claims["sub"] == "repo:corp/app:ref:refs/heads/main"
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 5
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": issuer.keys[0].kid}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered(token), key, algorithms=[alg], audience="client-1")


def test_token_claims_and_headers_are_overridden_or_removed(issuer: TestIssuer) -> None:
    token = issuer.token(aud=["a", "b"], sub=None, nonce="n-1",
                         headers={"typ": "at+jwt", "kid": None, "jku": "https://evil.example"})
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256", "typ": "at+jwt", "jku": "https://evil.example",
    }
    claims = jwt.decode(token, issuer.keys[0].public_pem(), algorithms=["RS256"], audience="a")
    assert "sub" not in claims and claims["aud"] == ["a", "b"] and claims["nonce"] == "n-1"


def test_a_header_alg_override_is_a_genuine_signature_under_that_alg(issuer: TestIssuer) -> None:
    token = issuer.token(headers={"alg": "RS512"})
    pem = issuer.keys[0].public_pem()
    assert jwt.decode(token, pem, algorithms=["RS512"], audience="client-1")["iss"] == issuer.url
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, pem, algorithms=["RS256"], audience="client-1")


def test_token_signs_with_the_key_it_is_given(issuer: TestIssuer) -> None:
    token = issuer.token(key=issuer.keys[1])
    assert jwt.get_unverified_header(token)["kid"] == issuer.keys[1].kid
    assert jwt.decode(token, issuer.keys[1].public_pem(), algorithms=["ES256"],
                      audience="client-1")["iss"] == issuer.url
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, IssuerKey.generate("ES256").public_pem(), algorithms=["ES256"],
                   audience="client-1")


def test_unpublish_takes_a_key_out_of_the_jwks_but_it_still_signs(issuer: TestIssuer) -> None:
    old, es = issuer.keys
    new = issuer.add_key("PS256", kid="next")
    assert [k["kid"] for k in jwks(issuer)["keys"]] == [old.kid, es.kid, "next"]
    issuer.unpublish(old.kid)
    assert [k["kid"] for k in jwks(issuer)["keys"]] == [es.kid, "next"]
    assert issuer.keys == [es, new]
    token = issuer.token(key=old)
    assert jwt.decode(token, old.public_pem(), algorithms=["RS256"],
                      audience="client-1")["iss"] == issuer.url
    with pytest.raises(KeyError):
        issuer.unpublish(old.kid)
    issuer.publish(old)
    assert [k["kid"] for k in jwks(issuer)["keys"]] == [es.kid, "next", old.kid]


def test_add_key_unpublished_and_without_alg(issuer: TestIssuer) -> None:
    hidden = issuer.add_key("ES384", publish=False)
    bare = issuer.add_key("EdDSA", kid="ed", published_alg=False)
    published = jwks(issuer)["keys"]
    assert hidden.kid not in [k["kid"] for k in published]
    assert published[-1] == bare.jwk
    assert "alg" not in bare.jwk and bare.jwk["crv"] == "Ed25519" and bare.alg == "EdDSA"


def test_fetches_counts_every_request_by_path(issuer: TestIssuer) -> None:
    with client(issuer) as http:
        http.get(f"{issuer.url}/.well-known/openid-configuration")
        http.get(f"{issuer.url}/.well-known/openid-configuration?x=1")
        http.get(issuer.jwks_url)
        missing = http.get(f"{issuer.url}/nope")
    assert missing.status_code == 404
    assert issuer.fetches == collections.Counter({
        "/realms/corp/.well-known/openid-configuration": 2,
        "/realms/corp/keys": 1,
        "/realms/corp/nope": 1,
    })


def test_down_refuses_connections_and_up_serves_again_on_the_same_port(
        issuer: TestIssuer) -> None:
    port, url = issuer.port, issuer.jwks_url
    issuer.down()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with client(issuer) as http, pytest.raises(httpx.ConnectError):
        http.get(url)
    issuer.up()
    assert issuer.port == port and issuer.jwks_url == url
    with client(issuer) as http:
        assert http.get(url).status_code == 200
    presented = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))
    assert hashlib.sha1(presented).hexdigest() == issuer.thumbprint


def test_the_jwks_misbehaves_on_demand(issuer: TestIssuer) -> None:
    with client(issuer) as http:
        issuer.cache_control = None
        assert "cache-control" not in http.get(issuer.jwks_url).headers
        issuer.cache_control = "no-store"
        assert http.get(issuer.jwks_url).headers["cache-control"] == "no-store"
        issuer.jwks_status = 500
        assert http.get(issuer.jwks_url).status_code == 500
        issuer.redirect_jwks_to = "https://evil.example/jwks"
        redirect = http.get(issuer.jwks_url)
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://evil.example/jwks"
        issuer.discovery_overrides = {"jwks_uri": "https://evil.example/jwks", "issuer": None}
        discovery = http.get(f"{issuer.url}/.well-known/openid-configuration").json()
    assert discovery["jwks_uri"] == "https://evil.example/jwks" and "issuer" not in discovery


def test_default_claims() -> None:
    with TestIssuer() as issuer:
        claims = default_claims(issuer, aud="other", exp=None, email="a@example.com")
    assert set(claims) == {"iss", "aud", "sub", "iat", "email"}
    assert claims["iss"] == issuer.url and claims["aud"] == "other"
    assert isinstance(claims["iat"], int)


def test_compact_and_b64url_build_tokens_byte_for_byte() -> None:
    assert b64url(b"\xfb\xff") == "-_8"
    assert compact({"alg": "none"}, {"sub": "x"}) == "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    assert compact({"alg": "none"}, b"raw", b"\x00").endswith(".cmF3.AA")


@pytest.mark.parametrize(("hash_name", "alg"), [("sha256", "HS256"), ("sha384", "HS384")])
def test_hs_token_verifies_as_hmac(hash_name: str, alg: str) -> None:
    secret = b"s" * 64
    token = hs_token(secret, {"alg": alg, "kid": "k"}, {"sub": "x"}, hash_name)
    assert jwt.decode(token, secret, algorithms=[alg]) == {"sub": "x"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, b"t" * 64, algorithms=[alg])


@pytest.mark.parametrize("alg", [*SIGNING_ALGS, "RS384", "RS512", "PS256", "PS512"])
def test_sign_with_signs_any_header_with_the_keys_alg(alg: str) -> None:
    key = IssuerKey.generate(alg)
    header = {"alg": alg, "kid": "whatever", "jku": "https://evil.example/jwks"}
    token = sign_with(key, header, {"sub": "x"})
    assert jwt.get_unverified_header(token) == header
    assert jwt.decode(token, key.public_pem(), algorithms=[alg]) == {"sub": "x"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, IssuerKey.generate(alg).public_pem(), algorithms=[alg])


def test_sign_with_ignores_what_the_header_says(issuer: TestIssuer) -> None:
    key = issuer.keys[0]
    token = sign_with(key, {"alg": "HS256"}, {"sub": "x"})
    signing_input, signature = token.rsplit(".", 1)
    rs256 = jwt.PyJWS().get_algorithm_by_name("RS256")
    public = rs256.prepare_key(key.public_pem())
    assert rs256.verify(signing_input.encode(), public, jwt.utils.base64url_decode(signature))
    rs512 = sign_with(key, {"alg": "RS256"}, {"sub": "x"}, alg="RS512")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(rs512, key.public_pem(), algorithms=["RS256"])


def test_sign_with_refuses_an_alg_the_key_cannot_make() -> None:
    with pytest.raises(ValueError, match="cannot sign ES256"):
        sign_with(IssuerKey.generate("RS256"), {"alg": "ES256"}, {}, alg="ES256")


def test_counting_server_answers_anything_and_counts() -> None:
    with CountingServer() as server, httpx.Client(timeout=5) as http:
        assert server.hits == 0
        first = http.get(f"{server.url}/jwks.json")
        second = http.post(f"{server.url}/x5u", content=b"ignored")
        assert (first.status_code, first.json(), second.status_code) == (200, {}, 200)
        assert server.hits == 2 and server.paths == ["/jwks.json", "/x5u"]
