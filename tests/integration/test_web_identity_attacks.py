"""Attacks on AssumeRoleWithWebIdentity, sent through boto3 to a real server, each beside its
honest control: built by the same fixture with the same parameters except the attack, and
accepted.

First the signature (``alg: none``, HMAC keyed with the public key, keys the attacker brings in
the header or by URL, ``kid`` games, a key used with another algorithm, ECDSA's zero signature,
tampering), then the claims of a validly signed token (times, audience, issuer, subject), then
the token's form (its length, its segments, its JSON) and last the role's trust policy. The
tokens come from the test suite's own issuer (tests/oidc_issuer.py: real TLS, a JWKS, jwcrypto
signatures) or are built by hand with ``sign_with`` and ``compact``.

Every refusal is checked three ways: the AWS error (code, message, HTTP status), no credentials
in the answer, and one ``refused`` line for the request in the broker's audit log.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.helpers import Broker, signed_request, start_broker
from tests.oidc_issuer import (
    DEFAULT_SUBJECT,
    CountingServer,
    IssuerKey,
    TestIssuer,
    b64url,
    compact,
    default_claims,
    hs_token,
    self_signed_certificate,
    sign_with,
)
from tests.oidc_world import CLIENT_ID, FAST_KEYS, OidcWorld, identifier

ALGS = ("RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA")
EVENT = "AssumeRoleWithWebIdentity"
Refusal = tuple[str, str, int]


def invalid(message: str) -> Refusal:
    return ("InvalidIdentityToken", message, 400)


NOT_A_JWT = invalid("The ID Token provided is not a valid JWT: it must be three base64url "
                    "segments (header, payload, signature).")
NOT_BASE64 = invalid("The ID Token provided is not a valid JWT: a segment is not base64url.")
HEADER_NOT_JSON = invalid("The ID Token provided is not a valid JWT: its header is not a JSON "
                          "object.")
PAYLOAD_NOT_JSON = invalid("The ID Token provided is not a valid JWT: its payload is not a JSON "
                           "object.")
ALG_REFUSED = invalid("The web identity token's signing algorithm is not accepted "
                      "(RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA).")
CRIT = invalid("The web identity token names critical header parameters (crit), which the "
               "broker does not understand.")
NOT_A_KID = invalid("The web identity token's kid is not a key id.")
NO_KEY = invalid("Couldn't retrieve verification key from your identity provider, please "
                 "reference AssumeRoleWithWebIdentity documentation for requirements")
BAD_SIGNATURE = invalid("The web identity token's signature is not valid.")
NOT_YET = invalid("The web identity token is not valid yet (nbf).")
FUTURE_IAT = invalid("The web identity token was issued in the future (iat).")
NO_EXP = invalid("The web identity token has no valid exp claim.")
EXP_NOT_A_NUMBER = invalid("The web identity token's exp claim is not a number.")
NO_ISSUER = invalid("The web identity token has no issuer (iss).")
NO_SUBJECT = invalid("The web identity token has no subject (sub).")
AUDIENCE = invalid("Incorrect token audience")
AUD_NOT_STRINGS = invalid("The web identity token's aud claim is not a string or a list of "
                          "strings.")
AZP_NEEDED = invalid("Incorrect token audience: a token for several audiences must name a "
                     "registered client id in azp.")
NOT_AUTHORIZED = ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", 403)


def no_provider(iss: str) -> Refusal:
    return invalid(f"No OpenIDConnect provider found in your account for {iss}")


# Fixtures: one issuer with a key of each algorithm, one broker, one provider and its role -------


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    with TestIssuer(path="/realms/corp", algs=ALGS) as running:
        yield running


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """This module's broker: keys fetched again for an unknown kid after a second, not a
    minute, so that the kid attacks do reach the issuer."""
    b = start_broker(tmp_path_factory.mktemp("broker"), env=FAST_KEYS)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def world(broker: Broker, issuer: TestIssuer) -> OidcWorld:
    return OidcWorld.make(broker, issuer)


@pytest.fixture(scope="module")
def sts(broker: Broker) -> Any:
    """One unsigned STS client for the module (a boto3 client takes a while to make)."""
    return broker.client("sts", validate=False)


@pytest.fixture(scope="module")
def attacker() -> IssuerKey:
    """A good RSA key that the issuer never published."""
    return IssuerKey.generate("RS256")


@pytest.fixture(scope="module")
def counting() -> Iterator[CountingServer]:
    """Where ``jku`` and ``x5u`` point: any request it gets is a failure."""
    with CountingServer() as server:
        yield server


# Sending tokens and reading the audit log ---------------------------------------------------------


def fresh_name() -> str:
    """A session name no other test uses, so the audit log tells this test's sessions apart."""
    return "s" + uuid.uuid4().hex[:12]


def audit(broker: Broker) -> list[dict[str, Any]]:
    lines = Path(broker.settings.audit.path).read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc["eventName"] == EVENT]


def issued_to(doc: dict[str, Any]) -> str:
    """The session an audit line says was issued ("" when none was)."""
    return str(doc.get("responseElements", {}).get("assumedRoleUser", {}).get("arn", ""))


def logged(broker: Broker, request_id: str) -> list[tuple[str, str | None]]:
    """(outcome, error code) of each audit line of this request: issued when the line has
    no errorCode and names the credentials issued, refused when it has an errorCode."""
    return [("refused" if "errorCode" in doc else
             "issued" if "credentials" in doc.get("responseElements", {}) else "neither",
             doc.get("errorCode")) for doc in audit(broker) if doc["requestID"] == request_id]


def assume(sts: Any, world: OidcWorld, token: str, *, role_arn: str | None,
           session_name: str) -> dict[str, Any]:
    result: dict[str, Any] = sts.assume_role_with_web_identity(
        RoleArn=role_arn or world.role_arn, RoleSessionName=session_name, WebIdentityToken=token)
    return result


def honest(sts: Any, world: OidcWorld, token: str, *, role_arn: str | None = None,
           subject: str = DEFAULT_SUBJECT) -> dict[str, Any]:
    """The control: the token is accepted, credentials come back, the audit log says issued."""
    name = fresh_name()
    result = assume(sts, world, token, role_arn=role_arn, session_name=name)
    assert result["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert result["SubjectFromWebIdentityToken"] == subject
    assert result["Provider"] == world.provider_arn
    assert result["AssumedRoleUser"]["Arn"].endswith(f"/{name}")
    assert logged(world.broker, result["ResponseMetadata"]["RequestId"]) == [("issued", None)]
    return result


def refused(sts: Any, world: OidcWorld, token: str, *,
            role_arn: str | None = None) -> Refusal:
    """The refusal: (code, message, HTTP status), once no credentials came back and the audit
    log recorded it."""
    name = fresh_name()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        assume(sts, world, token, role_arn=role_arn, session_name=name)
    response = exc.value.response
    assert "Credentials" not in response
    code, message = response["Error"]["Code"], response["Error"]["Message"]
    meta = response["ResponseMetadata"]
    assert logged(world.broker, meta["RequestId"]) == [("refused", code)]
    assert not any("errorCode" not in doc and issued_to(doc).endswith(f"/{name}")
                   for doc in audit(world.broker))
    return code, message, meta["HTTPStatusCode"]


# Building tokens ----------------------------------------------------------------------------------


def key_of(world: OidcWorld, alg: str) -> IssuerKey:
    return next(key for key in world.issuer.keys if key.alg == alg)


def header_of(key: IssuerKey, **changes: Any) -> dict[str, Any]:
    """``alg`` and ``kid`` of ``key`` with ``changes`` over them (None removes a member)."""
    header = {"alg": key.alg, "kid": key.kid, **changes}
    return {name: value for name, value in header.items() if value is not None}


def claims_of(world: OidcWorld, **changes: Any) -> dict[str, Any]:
    return default_claims(world.issuer, **changes)


def raw_json(*members: tuple[str, Any]) -> bytes:
    """A JSON object written member by member, so that a name may appear twice."""
    return ("{" + ",".join(f"{json.dumps(name)}:{json.dumps(value)}"
                           for name, value in members) + "}").encode()


def segments(token: str) -> list[str]:
    return token.split(".")


def decoded(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def signature_of(token: str) -> bytes:
    return decoded(segments(token)[2])


def now() -> int:
    return int(time.time())


# alg: none ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["empty-signature", "with-signature"])
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(sts: Any, world: OidcWorld, alg: str, signed: bool) -> None:
    key = key_of(world, "RS256")
    payload = claims_of(world)
    honest(sts, world, compact(header_of(key), payload,
                               signature_of(sign_with(key, header_of(key), payload))))
    # With a signature: the issuer's key's real RS256 signature over the "none" header.
    signature = signature_of(sign_with(key, header_of(key, alg=alg), payload)) if signed else b""
    token = compact(header_of(key, alg=alg), payload, signature)
    assert refused(sts, world, token) == (ALG_REFUSED if signed else NOT_A_JWT)


# HMAC keyed with the issuer's public key ----------------------------------------------------------

PUBLIC_FORMS: dict[str, Callable[[IssuerKey], bytes]] = {
    "pem": lambda key: key.public_pem(),
    "jwk-json": lambda key: json.dumps(key.jwk).encode(),
    "der": lambda key: key.public_der(),
}


@pytest.mark.parametrize("form", sorted(PUBLIC_FORMS))
@pytest.mark.parametrize("hs", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_hmac_keyed_with_the_public_key_is_refused(sts: Any, world: OidcWorld, alg: str,
                                                   hs: str, form: str) -> None:
    key = key_of(world, alg)
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    secret = PUBLIC_FORMS[form](key)
    token = hs_token(secret, header_of(key, alg=hs), payload, hash_name=f"sha{hs[2:]}")
    assert refused(sts, world, token) == ALG_REFUSED


# Keys the attacker brings -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_a_foreign_key_under_the_issuers_kid_is_refused(sts: Any, world: OidcWorld,
                                                        alg: str) -> None:
    key = key_of(world, alg)
    foreign = IssuerKey.generate(alg, kid=key.kid)
    honest(sts, world, world.issuer.token(key=key))
    assert refused(sts, world, world.issuer.token(key=foreign)) == BAD_SIGNATURE


def embedded(member: str, key: IssuerKey) -> Any:
    """``key`` as a ``jwk`` header member, or as an ``x5c`` (a self-signed certificate)."""
    if member == "jwk":
        return key.jwk
    certificate = self_signed_certificate(key.private_key, "attacker.example.test")
    return [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]


# Which kid the forged header names, and what its refusal then is.
KIDS: dict[str, tuple[Callable[[IssuerKey, IssuerKey], str | None], Refusal]] = {
    "issuers-kid": (lambda key, foreign: key.kid, BAD_SIGNATURE),
    "no-kid": (lambda key, foreign: None, BAD_SIGNATURE),
    "foreign-kid": (lambda key, foreign: foreign.kid, NO_KEY),
}


@pytest.mark.parametrize("kid", sorted(KIDS))
@pytest.mark.parametrize("member", ["jwk", "x5c"])
def test_a_key_embedded_in_the_header_is_not_trusted(sts: Any, world: OidcWorld,
                                                     attacker: IssuerKey, member: str,
                                                     kid: str) -> None:
    key = key_of(world, "RS256")
    kid_of, expected = KIDS[kid]
    payload = claims_of(world)
    # The issuer's own key embedded the same way: the member itself is no reason to refuse.
    control = header_of(key, kid=kid_of(key, key), **{member: embedded(member, key)})
    honest(sts, world, sign_with(key, control, payload))
    forged = header_of(attacker, kid=kid_of(key, attacker), **{member: embedded(member, attacker)})
    assert refused(sts, world, sign_with(attacker, forged, payload)) == expected


@pytest.mark.parametrize("host", ["elsewhere", "on-the-issuer"])
@pytest.mark.parametrize("kid", sorted(KIDS))
@pytest.mark.parametrize("member", ["jku", "x5u"])
def test_a_key_url_in_the_header_is_never_fetched(sts: Any, world: OidcWorld,
                                                  attacker: IssuerKey, counting: CountingServer,
                                                  member: str, kid: str, host: str) -> None:
    issuer = world.issuer
    path = f"{issuer.path}/attacker/{member}"
    url = f"{counting.url}/{member}" if host == "elsewhere" else f"https://{issuer.host_port}{path}"
    key = key_of(world, "RS256")
    kid_of, expected = KIDS[kid]
    payload = claims_of(world)
    # Accepted with the URL in its header, signed by the issuer: the URL is still not fetched.
    honest(sts, world, sign_with(key, header_of(key, kid=kid_of(key, key), **{member: url}),
                                 payload))
    forged = header_of(attacker, kid=kid_of(key, attacker), **{member: url})
    assert refused(sts, world, sign_with(attacker, forged, payload)) == expected
    assert counting.hits == 0
    assert issuer.fetches[path] == 0


# kid games ----------------------------------------------------------------------------------------

KID_VALUES: dict[str, tuple[Any, Refusal]] = {
    "unknown": ("unknown-" + uuid.uuid4().hex, NO_KEY),
    "traversal-to-passwd": ("../../etc/passwd", NO_KEY),
    "traversal-to-keys": ("../keys", NO_KEY),
    "empty": ("", NOT_A_KID),
    "number": (1, NOT_A_KID),
    "zero": (0, NOT_A_KID),
    "true": (True, NOT_A_KID),
    "list": (["kid"], NOT_A_KID),
    "object": ({"kid": "kid"}, NOT_A_KID),
}


@pytest.mark.parametrize("case", sorted(KID_VALUES))
def test_a_kid_that_names_no_key_of_the_set_is_refused(sts: Any, world: OidcWorld,
                                                       case: str) -> None:
    # Signed by the issuer's own key: only the kid is wrong.
    key = key_of(world, "RS256")
    value, expected = KID_VALUES[case]
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    assert refused(sts, world, sign_with(key, header_of(key, kid=value), payload)) == expected
    issuer = world.issuer
    assert set(issuer.fetches) <= {f"{issuer.path}/.well-known/openid-configuration",
                                   f"{issuer.path}/keys"}


# A key used with another algorithm than its own ---------------------------------------------------

MISUSED: dict[str, tuple[str, str]] = {
    # name: (the key's algorithm, as its JWK says; the algorithm of the header and signature)
    "rs256-key-as-ps256": ("RS256", "PS256"),
    "ps256-key-as-rs256": ("PS256", "RS256"),
    "rs256-key-as-rs512": ("RS256", "RS512"),
    "es256-key-as-es384": ("ES256", "ES384"),
    "es384-key-as-es256": ("ES384", "ES256"),
    "es512-key-as-es384": ("ES512", "ES384"),
}


@pytest.mark.parametrize("case", sorted(MISUSED))
def test_a_key_is_used_only_with_its_own_algorithm(sts: Any, world: OidcWorld,
                                                   case: str) -> None:
    # A genuine signature by the issuer's key, with a hash or padding its JWK does not name.
    key_alg, alg = MISUSED[case]
    key = key_of(world, key_alg)
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    token = sign_with(key, header_of(key, alg=alg), payload, alg=alg)
    assert refused(sts, world, token) == BAD_SIGNATURE


@pytest.mark.parametrize("signer", ["RS256", "EdDSA"])
def test_an_eddsa_header_with_an_rsa_keys_kid_is_refused(sts: Any, world: OidcWorld,
                                                         signer: str) -> None:
    # Signed by the RSA key itself (an RS256 signature), or by the issuer's Ed25519 key.
    rsa_key, signing_key = key_of(world, "RS256"), key_of(world, signer)
    payload = claims_of(world)
    honest(sts, world, sign_with(signing_key, header_of(signing_key), payload))
    token = sign_with(signing_key, header_of(rsa_key, alg="EdDSA"), payload)
    assert refused(sts, world, token) == BAD_SIGNATURE


@pytest.mark.parametrize(("alg", "size"), [("ES256", 32), ("ES384", 48), ("ES512", 66)])
def test_an_ecdsa_signature_of_zeros_is_refused(sts: Any, world: OidcWorld, alg: str,
                                                size: int) -> None:
    # r = s = 0, at the length the curve asks for (RFC 7518 §3.4).
    key = key_of(world, alg)
    payload = claims_of(world)
    control = sign_with(key, header_of(key), payload)
    assert len(signature_of(control)) == 2 * size
    honest(sts, world, control)
    assert refused(sts, world, compact(header_of(key), payload, bytes(2 * size))) == BAD_SIGNATURE


# Tampering ----------------------------------------------------------------------------------------


def tampered(token: str, part: str) -> str:
    header, payload, signature = segments(token)
    if part == "payload":
        claims = json.loads(decoded(payload))
        claims["sub"] = "repo:evil/app:ref:refs/heads/main"
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    elif part == "header":
        members = json.loads(decoded(header))
        members["typ"] = "JWT"
        header = b64url(json.dumps(members, separators=(",", ":")).encode())
    else:
        flipped = bytearray(decoded(signature))
        flipped[0] ^= 0x01
        signature = b64url(bytes(flipped))
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("part", ["payload", "header", "signature"])
@pytest.mark.parametrize("alg", ALGS)
def test_a_tampered_token_is_refused(sts: Any, world: OidcWorld, alg: str, part: str) -> None:
    key = key_of(world, alg)
    honest(sts, world, world.issuer.token(key=key))
    assert refused(sts, world, tampered(world.issuer.token(key=key), part)) == BAD_SIGNATURE


# Times, to the clock skew -------------------------------------------------------------------------

# Inside by this much, or outside by this much: more than a request takes.
MARGIN = 5


def skew(world: OidcWorld) -> int:
    return world.broker.settings.oidc.clock_skew_seconds


def test_exp_is_honoured_to_the_clock_skew(sts: Any, world: OidcWorld) -> None:
    at = now()
    honest(sts, world, world.token(iat=at - 600, exp=at - skew(world) + MARGIN))
    exp = at - skew(world) - MARGIN
    code, message, status = refused(sts, world, world.token(iat=at - 600, exp=exp))
    assert (code, status) == ("ExpiredTokenException", 400)
    assert message.startswith("Token expired: current date/time ")
    assert message.endswith(f" must be before the expiration date/time {exp}")


def test_nbf_is_honoured_to_the_clock_skew(sts: Any, world: OidcWorld) -> None:
    at = now()
    honest(sts, world, world.token(nbf=at + skew(world) - MARGIN))
    assert refused(sts, world, world.token(nbf=at + skew(world) + MARGIN)) == NOT_YET


def test_iat_is_honoured_to_the_clock_skew(sts: Any, world: OidcWorld) -> None:
    at = now()
    honest(sts, world, world.token(iat=at + skew(world) - MARGIN))
    assert refused(sts, world, world.token(iat=at + skew(world) + MARGIN)) == FUTURE_IAT


MISSING = object()
EXPS: dict[str, tuple[Any, Refusal]] = {
    "missing": (MISSING, NO_EXP),
    "null": (None, NO_EXP),
    "string": ("{exp}", EXP_NOT_A_NUMBER),
    "true": (True, EXP_NOT_A_NUMBER),
    "false": (False, EXP_NOT_A_NUMBER),
    "list": (["{exp}"], EXP_NOT_A_NUMBER),
    "object": ({"exp": "{exp}"}, EXP_NOT_A_NUMBER),
}


def exp_value(value: Any, exp: int) -> Any:
    if isinstance(value, str):
        return value.format(exp=exp)
    if isinstance(value, list):
        return [int(v.format(exp=exp)) for v in value]
    if isinstance(value, dict):
        return {k: int(v.format(exp=exp)) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case", sorted(EXPS))
def test_an_exp_that_is_not_a_time_is_refused(sts: Any, world: OidcWorld, case: str) -> None:
    key = key_of(world, "RS256")
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    value, expected = EXPS[case]
    if value is MISSING:
        del payload["exp"]
    else:
        payload["exp"] = exp_value(value, payload["exp"])
    assert refused(sts, world, sign_with(key, header_of(key), payload)) == expected


# Numbers JSON can write and a time cannot be: 1e400 reads as infinity in Python, 10**400 as an
# int no float holds. Refused as invalid; a time before any other may also be called expired.
BEYOND_FLOATS: dict[str, tuple[str, bytes, frozenset[str]]] = {
    "exp-1e400": ("exp", b"1e400", frozenset({"InvalidIdentityToken"})),
    "exp-minus-1e400": ("exp", b"-1e400",
                        frozenset({"InvalidIdentityToken", "ExpiredTokenException"})),
    "exp-10e400": ("exp", b"1" + b"0" * 400, frozenset({"InvalidIdentityToken"})),
    "exp-minus-10e400": ("exp", b"-1" + b"0" * 400,
                         frozenset({"InvalidIdentityToken", "ExpiredTokenException"})),
    "iat-minus-1e400": ("iat", b"-1e400", frozenset({"InvalidIdentityToken"})),
    "iat-10e400": ("iat", b"1" + b"0" * 400, frozenset({"InvalidIdentityToken"})),
    "iat-minus-10e400": ("iat", b"-1" + b"0" * 400, frozenset({"InvalidIdentityToken"})),
    "nbf-10e400": ("nbf", b"1" + b"0" * 400, frozenset({"InvalidIdentityToken"})),
    "nbf-minus-10e400": ("nbf", b"-1" + b"0" * 400, frozenset({"InvalidIdentityToken"})),
}


@pytest.mark.parametrize("case", sorted(BEYOND_FLOATS))
def test_a_time_beyond_any_float_is_refused(sts: Any, world: OidcWorld, case: str) -> None:
    claim, literal, codes = BEYOND_FLOATS[case]
    key = key_of(world, "RS256")
    payload = claims_of(world, nbf=now() - 60)
    honest(sts, world, sign_with(key, header_of(key), raw_json(*payload.items())))
    written = f'"{claim}":{payload[claim]}'.encode()
    members = raw_json(*payload.items()).replace(written, f'"{claim}":'.encode() + literal)
    assert literal in members
    code, _, status = refused(sts, world, sign_with(key, header_of(key), members))
    assert status == 400 and code in codes


# Audience -----------------------------------------------------------------------------------------

AUDIENCES: dict[str, tuple[dict[str, Any], Refusal]] = {
    "another-client": ({"aud": "client-2"}, AUDIENCE),
    "prefix": ({"aud": CLIENT_ID[:-1]}, AUDIENCE),
    "upper-case": ({"aud": CLIENT_ID.upper()}, AUDIENCE),
    "missing": ({"aud": None}, AUDIENCE),
    "empty": ({"aud": ""}, AUDIENCE),
    "empty-list": ({"aud": []}, AUDIENCE),
    "number": ({"aud": 1}, AUD_NOT_STRINGS),
    "several-without-azp": ({"aud": [CLIENT_ID, "client-2"]}, AZP_NEEDED),
    "several-with-unregistered-azp": ({"aud": [CLIENT_ID, "client-2"], "azp": "client-2"},
                                      AZP_NEEDED),
    "azp-registered-but-not-an-audience": ({"aud": ["client-2", "client-3"],
                                            "azp": CLIENT_ID}, AUDIENCE),
}


@pytest.mark.parametrize("case", sorted(AUDIENCES))
def test_a_token_for_another_audience_is_refused(sts: Any, world: OidcWorld, case: str) -> None:
    honest(sts, world, world.token())
    changes, expected = AUDIENCES[case]
    assert refused(sts, world, world.token(**changes)) == expected


def test_several_audiences_with_a_registered_azp_are_accepted(sts: Any,
                                                              world: OidcWorld) -> None:
    # The control of the two "several" cases above.
    result = honest(sts, world, world.token(aud=[CLIENT_ID, "client-2"], azp=CLIENT_ID))
    assert result["Audience"] == CLIENT_ID


# Issuer -------------------------------------------------------------------------------------------

ISSUERS: dict[str, Callable[[str], str]] = {
    "another-host": lambda url: "https://issuer.example.test/realms/corp",
    "another-path": lambda url: url.replace("/realms/corp", "/realms/other"),
    "a-parent-path": lambda url: url.replace("/realms/corp", "/realms"),
    "trailing-slash": lambda url: url + "/",
    "upper-case-path": lambda url: url.replace("/realms/corp", "/REALMS/CORP"),
    "upper-case-scheme": lambda url: "HTTPS" + url[len("https"):],
    "http": lambda url: "http" + url[len("https"):],
    "default-port-spelt-out": lambda url: url.replace("/realms", ":443/realms", 1),
}


@pytest.mark.parametrize("case", sorted(ISSUERS))
def test_an_issuer_that_is_not_exactly_the_providers_url_finds_no_provider(
        sts: Any, world: OidcWorld, case: str) -> None:
    honest(sts, world, world.token(iss=world.issuer.url))
    iss = ISSUERS[case](world.issuer.url)
    assert iss != world.issuer.url
    assert refused(sts, world, world.token(iss=iss)) == no_provider(iss)


@pytest.mark.parametrize("iss", [None, 1, ""], ids=["missing", "number", "empty"])
def test_a_token_without_an_issuer_is_refused(sts: Any, world: OidcWorld, iss: Any) -> None:
    key = key_of(world, "RS256")
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    if iss is None:
        del payload["iss"]
    else:
        payload["iss"] = iss
    assert refused(sts, world, sign_with(key, header_of(key), payload)) == NO_ISSUER


@pytest.fixture(scope="module")
def localhost(broker: Broker, issuer: TestIssuer) -> OidcWorld:
    """A second provider, ``https://localhost:PORT/realms/corp``, for the case of a host name
    (the first is at an IP address). Its keys are the issuer's, given as a static JWKS (the
    issuer's discovery names the IP address)."""
    url = issuer.url.replace("127.0.0.1", "localhost")
    iam = broker.client("iam")
    provider_arn = iam.create_open_id_connect_provider(
        Url=url, ClientIDList=[CLIENT_ID], ThumbprintList=[issuer.thumbprint],
    )["OpenIDConnectProviderArn"]
    method, address, headers, body = signed_request(broker.url, {
        "Action": "SetOpenIDConnectProviderJWKS", "Version": "2010-05-08",
        "OpenIDConnectProviderArn": provider_arn, "Jwks": json.dumps(issuer.jwks()),
    }, broker.root, service="iam")
    response = httpx.request(method, address, headers=headers, content=body)
    assert response.status_code == 200, response.text
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{identifier(url)}:aud": CLIENT_ID}},
    }]}
    role_arn = iam.create_role(RoleName=f"ci-{uuid.uuid4().hex[:8]}",
                               AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]
    return OidcWorld(broker, issuer, provider_arn, role_arn)


def test_an_issuer_host_in_another_case_finds_no_provider(sts: Any,
                                                          localhost: OidcWorld) -> None:
    url = localhost.issuer.url.replace("127.0.0.1", "localhost")
    honest(sts, localhost, localhost.token(iss=url))
    iss = url.replace("localhost", "LOCALHOST")
    assert refused(sts, localhost, localhost.token(iss=iss)) == no_provider(iss)


# Subject ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [None, "", 1, ["sub"]], ids=["missing", "empty", "number", "list"])
def test_a_token_without_a_subject_is_refused(sts: Any, world: OidcWorld, sub: Any) -> None:
    key = key_of(world, "RS256")
    payload = claims_of(world)
    honest(sts, world, sign_with(key, header_of(key), payload))
    if sub is None:
        del payload["sub"]
    else:
        payload["sub"] = sub
    assert refused(sts, world, sign_with(key, header_of(key), payload)) == NO_SUBJECT


# Length -------------------------------------------------------------------------------------------

MAX_TOKEN = 20_000  # WebIdentityToken's length constraint in STS's model


def token_of_length(world: OidcWorld, length: int) -> str:
    """A token signed by the issuer's RSA key, exactly ``length`` characters long: a claim of
    padding, and some in the header when base64 cannot land on the length otherwise."""
    key = key_of(world, "RS256")
    base = len(sign_with(key, header_of(key), claims_of(world, pad="")))
    estimate = (length - base) * 3 // 4
    for filler in range(4):
        header = header_of(key, typ="J" * filler or None)
        for size in range(estimate - 8, estimate + 8):
            token = sign_with(key, header, claims_of(world, pad="x" * size))
            if len(token) == length:
                return token
    raise AssertionError(f"no token of {length} characters")


def test_a_token_at_the_length_limit_is_accepted(sts: Any, world: OidcWorld) -> None:
    token = token_of_length(world, MAX_TOKEN)
    assert len(token) == MAX_TOKEN
    honest(sts, world, token)


def test_a_token_beyond_the_length_limit_is_refused(sts: Any, world: OidcWorld) -> None:
    honest(sts, world, token_of_length(world, MAX_TOKEN))
    token = token_of_length(world, MAX_TOKEN + 1)
    code, message, status = refused(sts, world, token)
    assert (code, status) == ("ValidationError", 400)
    # AWS's model marks the token sensitive: the message never repeats it.
    assert message == ("1 validation error detected: Value at 'webIdentityToken' failed to "
                       "satisfy constraint: Member must have length less than or equal to 20000")
    assert token[:40] not in message


# Form: segments, base64url, JSON ------------------------------------------------------------------


def std_base64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def malformed_cases(key: IssuerKey, header: dict[str, Any],
                    payload: dict[str, Any]) -> dict[str, tuple[str, Refusal]]:
    """Each malformed token, from the honest ``header`` and ``payload``, with its refusal."""
    good = sign_with(key, raw_json(*header.items()), raw_json(*payload.items()))
    h, p, s = segments(good)
    signature = signature_of(good)
    assert "+" in std_base64(signature) or "/" in std_base64(signature)
    return {
        "two-segments": (f"{h}.{p}", NOT_A_JWT),
        "four-segments": (f"{h}.{p}.{s}.{s}", NOT_A_JWT),
        "empty-header": (f".{p}.{s}", NOT_A_JWT),
        "empty-signature": (f"{h}.{p}.", NOT_A_JWT),
        "empty-payload": (sign_with(key, raw_json(*header.items()), b""), PAYLOAD_NOT_JSON),
        "standard-base64-alphabet": (f"{h}.{p}.{std_base64(signature)}", NOT_A_JWT),
        "asterisk": (f"{h}.{p}.*{s[1:]}", NOT_A_JWT),
        "space": (f"{h}.{p} .{s}", NOT_A_JWT),
        "padding": (f"{h}.{p}.{s}" + "=" * (-len(s) % 4), NOT_A_JWT),
        "a-segment-of-one-too-many": (f"{h}.{p}.{s}" + "A" * ((1 - len(s)) % 4), NOT_BASE64),
        "header-not-json": (sign_with(key, b"not json", raw_json(*payload.items())),
                            HEADER_NOT_JSON),
        "header-not-utf8": (sign_with(key, b'{"alg":"RS256\xff"}', raw_json(*payload.items())),
                            HEADER_NOT_JSON),
        "header-an-array": (sign_with(key, json.dumps(list(header.items())).encode(),
                                      raw_json(*payload.items())), HEADER_NOT_JSON),
        "payload-not-json": (sign_with(key, raw_json(*header.items()), b"not json"),
                             PAYLOAD_NOT_JSON),
        "payload-an-array": (sign_with(key, raw_json(*header.items()),
                                       json.dumps([payload]).encode()), PAYLOAD_NOT_JSON),
        "payload-nan": (sign_with(key, raw_json(*header.items()),
                                  raw_json(*payload.items()).replace(b'"iat":', b'"nbf":NaN,'
                                                                     b'"iat":')),
                        PAYLOAD_NOT_JSON),
        # The last of each repeated member is the honest one: a parser that keeps the last
        # would accept.
        "header-duplicate-alg": (sign_with(key, raw_json(("alg", "none"), *header.items()),
                                           raw_json(*payload.items())), HEADER_NOT_JSON),
        "header-duplicate-kid": (sign_with(key, raw_json(("kid", "evil"), *header.items()),
                                           raw_json(*payload.items())), HEADER_NOT_JSON),
        "payload-duplicate-sub": (sign_with(key, raw_json(*header.items()), raw_json(
            ("sub", "repo:evil/app:ref:refs/heads/main"), *payload.items())), PAYLOAD_NOT_JSON),
        "payload-duplicate-sub-honest-first": (sign_with(key, raw_json(*header.items()), raw_json(
            *payload.items(), ("sub", "repo:evil/app:ref:refs/heads/main"))), PAYLOAD_NOT_JSON),
        "payload-duplicate-aud": (sign_with(key, raw_json(*header.items()), raw_json(
            ("aud", "client-2"), *payload.items())), PAYLOAD_NOT_JSON),
        "crit": (sign_with(key, raw_json(*header.items(), ("crit", ["exp"]), ("exp", 1)),
                           raw_json(*payload.items())), CRIT),
        "crit-empty": (sign_with(key, raw_json(*header.items(), ("crit", [])),
                                 raw_json(*payload.items())), CRIT),
        "crit-b64": (sign_with(key, raw_json(*header.items(), ("b64", False), ("crit", ["b64"])),
                               raw_json(*payload.items())), CRIT),
        # Half a surrogate pair on its own, as JSON's \u escapes can write it (json.dumps
        # does): Python decodes it to text UTF-8 cannot carry. Signed honestly: it must be
        # refused as JSON, not reach the provider lookup (an unauthenticated 500 and a stack
        # trace in the log per request, before).
        **{f"payload-lone-surrogate-in-{name}": (sign_with(key, raw_json(*header.items()),
                                                           raw_json(*{**payload, name: (
                                                               payload[name] + half)}.items())),
                                                 PAYLOAD_NOT_JSON)
           for name, half in (("iss", "\ud800"), ("sub", "\udc00"), ("aud", "\ud83d"))},
        "header-lone-surrogate-in-kid": (sign_with(key, raw_json(*{
            **header, "kid": header["kid"] + "\ud800"}.items()), raw_json(*payload.items())),
            HEADER_NOT_JSON),
    }


MALFORMED = (
    "two-segments", "four-segments", "empty-header", "empty-signature", "empty-payload",
    "standard-base64-alphabet", "asterisk", "space", "padding", "a-segment-of-one-too-many",
    "header-not-json", "header-not-utf8", "header-an-array", "payload-not-json",
    "payload-an-array", "payload-nan", "header-duplicate-alg", "header-duplicate-kid",
    "payload-duplicate-sub", "payload-duplicate-sub-honest-first", "payload-duplicate-aud",
    "crit", "crit-empty", "crit-b64", "payload-lone-surrogate-in-iss",
    "payload-lone-surrogate-in-sub", "payload-lone-surrogate-in-aud",
    "header-lone-surrogate-in-kid",
)


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_token_is_refused(sts: Any, world: OidcWorld, case: str) -> None:
    key = key_of(world, "RS256")
    header, payload = header_of(key), claims_of(world)
    # The control: the same hand-written JSON, signed the same way.
    honest(sts, world, sign_with(key, raw_json(*header.items()), raw_json(*payload.items())))
    token, expected = malformed_cases(key, header, payload)[case]
    assert refused(sts, world, token) == expected


# The role's trust policy --------------------------------------------------------------------------

SUBJECTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # operator: (the condition's value, a subject it lets in, subjects it keeps out)
    "StringEquals": (DEFAULT_SUBJECT, DEFAULT_SUBJECT, (
        "repo:corp/app:ref:refs/heads/evil", DEFAULT_SUBJECT.upper(), DEFAULT_SUBJECT + "/",
        DEFAULT_SUBJECT[:-1], DEFAULT_SUBJECT + "\u0000")),
    "StringLike": ("repo:corp/app:ref:refs/heads/*", "repo:corp/app:ref:refs/heads/feature-1", (
        "repo:corp/app-evil:ref:refs/heads/main", "repo:corp/app:ref:refs/tags/v1",
        "repo:evil/app:ref:refs/heads/main", "xrepo:corp/app:ref:refs/heads/main")),
}


@pytest.fixture(scope="module")
def guarded(world: OidcWorld) -> dict[str, str]:
    """A role for each operator, trusting the provider for client-1 and the subjects the
    operator's condition on ``PROVIDER:sub`` lets in."""
    prefix = identifier(world.issuer.url)
    roles = {}
    for operator, (value, _, _) in SUBJECTS.items():
        condition: dict[str, dict[str, str]] = {"StringEquals": {f"{prefix}:aud": CLIENT_ID}}
        condition.setdefault(operator, {})[f"{prefix}:sub"] = value
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": world.provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity", "Condition": condition,
        }]}
        roles[operator] = world.broker.client("iam").create_role(
            RoleName=f"guarded-{uuid.uuid4().hex[:8]}",
            AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]
    return roles


KEPT_OUT = [(operator, sub) for operator, (_, _, kept_out) in SUBJECTS.items()
            for sub in kept_out]


@pytest.mark.parametrize(("operator", "sub"), KEPT_OUT,
                         ids=[f"{operator}-{sub!r}" for operator, sub in KEPT_OUT])
def test_a_subject_the_trust_policy_does_not_name_is_refused(
        sts: Any, world: OidcWorld, guarded: dict[str, str], operator: str, sub: str) -> None:
    _, let_in, _ = SUBJECTS[operator]
    role_arn = guarded[operator]
    honest(sts, world, world.token(sub=let_in), role_arn=role_arn, subject=let_in)
    assert refused(sts, world, world.token(sub=sub), role_arn=role_arn) == NOT_AUTHORIZED
