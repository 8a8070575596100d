"""Verifying an OpenID Connect ID token: a compact JWS, signed by a key of the provider's set.

Three steps, each refusing with a ``TokenRefused`` whose message the STS interface passes on:

1. ``parse``: exactly three base64url segments (the unpadded alphabet only), a header and a
   payload that are JSON objects without repeated members, at most ``MAX_TOKEN`` characters.
   Nothing in the header is trusted yet.
2. ``verify_signature``: ``alg`` one of ``ALGORITHMS`` (never ``none``, never HMAC), no ``crit``,
   the key chosen by ``kid`` from the provider's own set only — ``jku``, ``x5u``, ``jwk`` and
   ``x5c`` are never read — and used only with its own algorithm: an RSA key (2048 bits or more)
   for RS*/PS*, the curve of ES256/384/512 for each, an Ed25519 key for EdDSA, and the JWK's
   own ``alg``, ``use`` and ``key_ops`` respected. The arithmetic is pyjwt's (``jwt.algorithms``).
3. ``check_claims``: ``iss`` equal to the provider's URL exactly, ``exp`` required, ``nbf`` and
   ``iat`` within the clock skew, ``sub`` required, ``aud`` holding a registered client id (and
   ``azp``, a registered client id, when there are several audiences).

``KeySet`` is a provider's JWKS, loaded: keys that cannot verify signatures (encryption keys,
symmetric keys, RSA keys under 2,048 or over 8,192 bits or with an exponent over 2^32, unknown
curves, private parts) are left out.
"""

from __future__ import annotations

import binascii
import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms
from jwt.api_jwk import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

from broker import jsontext
from broker.errors import BrokerError
from broker.frozen import frozen

MAX_TOKEN = 20_000
MAX_KEYS = 100
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT = 2**32
MAX_CANDIDATES = 8  # keys tried for one token (a set may hold several without kids)
MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z: a NumericDate beyond it is not a time

# Each algorithm, with the key type and (for ECDSA) the curve it must be used with.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_PYJWT = get_default_algorithms()
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class Refusal(enum.Enum):
    INVALID = "invalid"  # InvalidIdentityToken
    EXPIRED = "expired"  # ExpiredTokenException
    UNKNOWN_KEY = "unknown-key"  # no key of the set has this kid: fetch the set again, once


class TokenRefused(BrokerError):
    def __init__(self, message: str, refusal: Refusal = Refusal.INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.refusal = refusal


@frozen
class Jws:
    header: Mapping[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def claims(self) -> Mapping[str, Any]:
        """The payload as a JSON object (not yet verified), read once."""
        found: Mapping[str, Any] | None = self.__dict__.get("_claims")
        if found is None:
            found = _json_object(self.payload, "payload")
            object.__setattr__(self, "_claims", found)
        return found


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own alg, when it names one
    key: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        kty, crv = ALGORITHMS[alg]
        if self.kty != kty or (self.alg is not None and self.alg != alg):
            return False
        return crv is None or self.crv == crv


@dataclass(frozen=True)
class KeySet:
    keys: tuple[VerificationKey, ...] = ()
    skipped: int = 0  # keys of the document that cannot verify signatures

    def with_kid(self, kid: str | None) -> list[VerificationKey]:
        if kid is None:
            return list(self.keys)
        return [k for k in self.keys if k.kid == kid]

    def knows(self, kid: str | None) -> bool:
        return bool(self.with_kid(kid))


def load_jwks(document: bytes | str | Mapping[str, Any]) -> KeySet:
    """A JWKS document's signature keys; ValueError when the document is not a JWKS."""
    data = document if isinstance(document, Mapping) else _json_object(document, "JWKS",
                                                                        ValueError)
    members = data.get("keys")
    if not isinstance(members, list):
        raise ValueError("the JWKS has no \"keys\" list")
    if len(members) > MAX_KEYS:
        raise ValueError(f"the JWKS has more than {MAX_KEYS} keys")
    keys: list[VerificationKey] = []
    skipped = 0
    for member in members:
        key = _verification_key(member)
        if key is None:
            skipped += 1
        else:
            keys.append(key)
    return KeySet(tuple(keys), skipped)


def _verification_key(jwk: Any) -> VerificationKey | None:
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        return None
    kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if kty not in ("RSA", "EC", "OKP") or (kid is not None and not isinstance(kid, str)):
        return None
    if alg is not None and (not isinstance(alg, str) or alg not in ALGORITHMS):
        return None
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    try:
        loaded = PyJWK(jwk).key
    except (PyJWKError, InvalidKeyError, ValueError, TypeError, KeyError,
            binascii.Error):
        return None
    crv: str | None = None
    if isinstance(loaded, rsa.RSAPublicKey):
        # A huge public exponent or modulus makes every verification slow (OpenSSL accepts an
        # exponent of any size below 3,072 bits of modulus): a provider's key set must not be
        # able to spend the broker's CPU on every token.
        exponent = loaded.public_numbers().e
        if not MIN_RSA_BITS <= loaded.key_size <= MAX_RSA_BITS or exponent > MAX_RSA_EXPONENT:
            return None
    elif isinstance(loaded, ec.EllipticCurvePublicKey):
        crv = _CURVES.get(loaded.curve.name)
        if crv is None:
            return None
    elif not isinstance(loaded, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return VerificationKey(kid=kid, kty=kty, crv=crv, alg=alg, key=loaded)


def parse(token: str) -> Jws:
    if len(token) > MAX_TOKEN:
        raise TokenRefused(f"The web identity token is longer than {MAX_TOKEN} characters.")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[2] or not _SEGMENT.fullmatch(parts[0]) \
            or not _SEGMENT.fullmatch(parts[1]) or not _SEGMENT.fullmatch(parts[2]):
        raise TokenRefused("The ID Token provided is not a valid JWT: it must be three "
                           "base64url segments (header, payload, signature).")
    header_bytes, payload, signature = _b64(parts[0]), _b64(parts[1]), _b64(parts[2])
    header = _json_object(header_bytes, "header")
    # The signing input: the token up to its second dot (header "." payload).
    return Jws(header, payload, token[: token.rindex(".")].encode("ascii"), signature)


def verify_signature(jws: Jws, keys: KeySet) -> None:
    """Refuse unless the token is signed by a key of ``keys`` with that key's algorithm."""
    header = jws.header
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenRefused("The web identity token's signing algorithm is not accepted "
                           "(RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA).")
    if "crit" in header:
        raise TokenRefused("The web identity token names critical header parameters (crit), "
                           "which the broker does not understand.")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise TokenRefused("The web identity token's kid is not a key id.")
    candidates = keys.with_kid(kid)
    if not candidates:
        raise TokenRefused("Couldn't retrieve verification key from your identity provider, "
                           "please reference AssumeRoleWithWebIdentity documentation for "
                           "requirements", Refusal.UNKNOWN_KEY)
    fitting = [k for k in candidates if k.fits(alg)]
    if len(fitting) > MAX_CANDIDATES:
        raise TokenRefused(f"The provider's key set has more than {MAX_CANDIDATES} keys this "
                           "token could be signed with; the token must name one by kid.")
    algorithm = _PYJWT[alg]
    for key in fitting:
        if algorithm.verify(jws.signing_input, key.key, jws.signature):
            return
    raise TokenRefused("The web identity token's signature is not valid.")


@frozen
class Claims:
    issuer: str
    subject: str
    audiences: tuple[str, ...]
    azp: str | None
    expires: int
    issued_at: int | None
    amr: tuple[str, ...]
    values: Mapping[str, Any] = field(repr=False)

    @property
    def audience(self) -> str:
        """The client id the token was issued to: ``azp`` when present, else the audience
        (AWS's ``PROVIDER:aud``)."""
        return self.azp if self.azp is not None else self.audiences[0]


def check_claims(jws: Jws, *, issuer: str, client_ids: Iterable[str], now: datetime,
                 skew_seconds: int) -> Claims:
    claims = jws.claims
    iss = claims.get("iss")
    if iss != issuer:
        raise TokenRefused("The web identity token's issuer (iss) is not the provider's URL.")
    at = now.timestamp()
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if at >= exp + skew_seconds:
        raise TokenRefused(f"Token expired: current date/time {int(at)} must be before the "
                           f"expiration date/time {int(exp)}", Refusal.EXPIRED)
    nbf = _number(claims, "nbf")
    if nbf is not None and at + skew_seconds < nbf:
        raise TokenRefused("The web identity token is not valid yet (nbf).")
    iat = _number(claims, "iat")
    if iat is not None and at + skew_seconds < iat:
        raise TokenRefused("The web identity token was issued in the future (iat).")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenRefused("The web identity token has no subject (sub).")
    audiences = _strings(claims["aud"], "aud") if "aud" in claims else ()
    if not audiences:
        raise TokenRefused("Incorrect token audience")
    azp = claims.get("azp")
    if azp is not None and not isinstance(azp, str):
        raise TokenRefused("The web identity token's azp is not a string.")
    registered = set(client_ids)
    if not registered.intersection(audiences):
        raise TokenRefused("Incorrect token audience")
    if len(audiences) > 1 and (azp is None or azp not in registered):
        raise TokenRefused("Incorrect token audience: a token for several audiences must name "
                           "a registered client id in azp.")
    amr = _strings(claims.get("amr"), "amr") if "amr" in claims else ()
    return Claims(issuer=iss, subject=sub, audiences=audiences, azp=azp, expires=int(exp),
                  issued_at=int(iat) if iat is not None else None, amr=amr, values=claims)


def unverified_issuer(jws: Jws) -> str:
    """The token's ``iss`` before anything is verified: which provider to ask for keys."""
    iss = jws.claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise TokenRefused("The web identity token has no issuer (iss).")
    return iss


# -- helpers ------------------------------------------------------------------------------------


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64(segment: str) -> bytes:
    if len(segment) % 4 == 1:
        raise TokenRefused("The ID Token provided is not a valid JWT: a segment is not "
                           "base64url.")
    try:
        # What base64.urlsafe_b64decode does, without its three layers of Python calls.
        return binascii.a2b_base64(segment.encode("ascii").translate(_FROM_URLSAFE)
                                   + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the alphabet is checked first
        raise TokenRefused("The ID Token provided is not a valid JWT: a segment is not "
                           "base64url.") from None


def _json_object(data: bytes | str, what: str,
                 error: type[Exception] = TokenRefused) -> dict[str, Any]:
    try:
        value = jsontext.loads(data)
    except jsontext.JsonRefused as exc:
        reason = f"the {what} is not a JSON object ({exc})" if error is ValueError else \
            f"The ID Token provided is not a valid JWT: its {what} is not a JSON object."
        raise error(reason) from None
    if not isinstance(value, dict):
        raise error(f"the {what} is not a JSON object" if error is ValueError else
                    f"The ID Token provided is not a valid JWT: its {what} is not a JSON "
                    "object.")
    return value


def _number(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required or name in claims:
            raise TokenRefused(f"The web identity token has no valid {name} claim.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused(f"The web identity token's {name} claim is not a number.")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_TIME:
        raise TokenRefused(f"The web identity token's {name} claim is not a time.")
    return number


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise TokenRefused(f"The web identity token's {name} claim is not a string or a list of "
                       "strings.")
