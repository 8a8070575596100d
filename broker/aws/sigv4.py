"""AWS Signature Version 4, the verifying side.

``parse_claim`` reads what a request says about its own signature (Authorization header or
presigned query string) and refuses malformed claims with AWS's codes and messages;
``check_scope`` checks the credential scope and the clock; ``verify`` recomputes the signature
from the request as received and compares in constant time. Looking up the secret that belongs
to the access key id is the caller's business (broker/authn.py), so this module stays pure.

Canonicalisation follows AWS's published algorithm and is tested against AWS's own test suite
(../shared/corpora/aws-sigv4-test-suite) and against botocore's signer.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from broker.aws.errors import IncompleteSignature, SignatureDoesNotMatch
from broker.aws.http import HttpRequest
from broker.aws.ids import REGION

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_SECONDS = 604800

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE_VALUE = re.compile(r"(?i)(signature\s*=\s*)[^,\s]*")
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^,\s]+), ?SignedHeaders=([^,\s]+), ?Signature=([^,\s]+)"
)
_QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
               "X-Amz-SignedHeaders", "X-Amz-Signature")

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


class Claim(NamedTuple):
    """What a request claims about its signature, before anything is verified.

    (A NamedTuple rather than a frozen dataclass: one is built for every request.)"""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    signed_at: datetime
    security_token: str | None
    presigned: bool
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/{self.terminator}"


# -- reading the claim --------------------------------------------------------------------------


def has_auth(req: HttpRequest, query: Sequence[tuple[str, str]]) -> bool:
    return req.header("authorization") is not None or any(
        k == "X-Amz-Algorithm" for k, _ in query
    )


def parse_claim(req: HttpRequest, query: Sequence[tuple[str, str]]) -> Claim:
    """The signature claim of a request that carries one (see ``has_auth``)."""
    authorization = req.header("authorization")
    in_query = any(k == "X-Amz-Algorithm" for k, _ in query)
    if authorization is not None and in_query:
        raise IncompleteSignature(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified"
        )
    if authorization is not None:
        return _header_claim(req, authorization)
    return _query_claim(req, query)


def _header_claim(req: HttpRequest, authorization: str) -> Claim:
    amz_date = req.header("x-amz-date")
    well_formed = _AUTHORIZATION.fullmatch(authorization)
    if well_formed is not None and amz_date is not None:  # what every SDK sends
        credential, signed_list, signature = well_formed.groups()
        signed = tuple(signed_list.split(";"))
        if "x-amz-date" not in signed:
            raise IncompleteSignature(
                "Signed headers must include the 'x-amz-date' header the request is dated with."
            )
        signed_at, amz = _request_time(amz_date, None)
        return _claim(credential, signed, signature, amz, signed_at,
                      token=req.header("x-amz-security-token"), presigned=False)
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{_clip(algorithm)}'")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if eq and name:
            fields.setdefault(name, value.strip())
    date_header = "x-amz-date"
    if amz_date is None and req.header("date") is not None:
        date_header = "date"
    problems = [
        f"Authorization header requires '{p}' parameter."
        for p in ("Credential", "Signature", "SignedHeaders")
        if not fields.get(p)
    ]
    if amz_date is None and req.header("date") is None:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        echoed = _SIGNATURE_VALUE.sub(r"\1(redacted)", _clip(authorization, 256))
        raise IncompleteSignature(" ".join(problems) + f" Authorization={echoed}")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if date_header not in signed:
        raise IncompleteSignature(
            f"Signed headers must include the '{date_header}' header the request is dated with."
        )
    signed_at, amz = _request_time(amz_date, req.header("date"))
    return _claim(fields["Credential"], signed, fields["Signature"], amz, signed_at,
                  token=req.header("x-amz-security-token"), presigned=False)


def _query_claim(req: HttpRequest, query: Sequence[tuple[str, str]]) -> Claim:
    params: dict[str, str] = {}
    for k, v in query:
        if k in _QUERY_AUTH or k == "X-Amz-Security-Token":
            if k in params:
                raise IncompleteSignature(f"The query-string parameter '{k}' is repeated.")
            params[k] = v
    missing = [p for p in _QUERY_AUTH if not params.get(p)]
    if missing:
        raise IncompleteSignature(
            "AWS query-string parameters must include "
            + ", ".join(f"'{p}'" for p in missing)
            + ". Re-examine the query-string parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignature(
            f"Unsupported AWS 'algorithm': '{_clip(params['X-Amz-Algorithm'])}'"
        )
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise IncompleteSignature("X-Amz-Expires should be a number") from None
    if expires < 0:
        raise IncompleteSignature("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_SECONDS:
        raise IncompleteSignature(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_SECONDS}"
        )
    signed_at, amz = _request_time(params["X-Amz-Date"], None)
    return _claim(
        params["X-Amz-Credential"],
        tuple(params["X-Amz-SignedHeaders"].split(";")),
        params["X-Amz-Signature"],
        amz,
        signed_at,
        token=params.get("X-Amz-Security-Token") or req.header("x-amz-security-token"),
        presigned=True,
        expires=expires,
    )


@functools.lru_cache(maxsize=256)
def _amz_date(amz_date: str) -> datetime:
    """X-Amz-Date as a time (remembered: every request signed in the same second says the
    same thing)."""
    if not _AMZ_DATE.fullmatch(amz_date):
        raise IncompleteSignature(
            f"Date must be in ISO-8601 'basic format'. Got '{_clip(amz_date)}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601"
        )
    try:
        return datetime(int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]),
                        int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15]),
                        tzinfo=UTC)
    except ValueError:
        raise IncompleteSignature(f"Date is not a real date: '{amz_date}'") from None


def _claim(credential: str, signed: tuple[str, ...], signature: str, amz_date: str,
           signed_at: datetime, *, token: str | None, presigned: bool,
           expires: int | None = None) -> Claim:
    parts = credential.split("/")
    if len(parts) != 5:
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{_clip(credential)}'"
        )
    if "host" not in signed:
        raise IncompleteSignature("Signed headers must include the 'host' header.")
    # Lower case, and strictly increasing: sorted, with no name twice and none empty.
    if not signed[0] or not all(map(str.__lt__, signed, signed[1:])) or \
            any(h != h.lower() for h in signed):
        raise IncompleteSignature(
            "SignedHeaders must be lowercase header names, sorted and separated by ';'."
        )
    key_id, date, region, service, terminator = parts
    return Claim(key_id, date, region, service, terminator, signed, signature, amz_date,
                 signed_at, token, presigned, expires)


def _request_time(amz_date: str | None, date: str | None) -> tuple[datetime, str]:
    if amz_date is not None:
        return _amz_date(amz_date), amz_date
    assert date is not None
    try:
        at = parsedate_to_datetime(date)
        at = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise IncompleteSignature(f"Date header is not an HTTP date: '{_clip(date)}'") from None
    return at, at.strftime("%Y%m%dT%H%M%SZ")


# -- checking the scope and the clock -----------------------------------------------------------


def check_scope(claim: Claim, *, service: str, now: datetime, skew: int,
                regions: Iterable[str] = ()) -> None:
    if claim.terminator != TERMINATOR:
        raise SignatureDoesNotMatch(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{_clip(claim.terminator)}'."
        )
    if claim.service != service:
        raise SignatureDoesNotMatch(
            f"Credential should be scoped to correct service: '{service}'. "
        )
    allowed = tuple(regions)
    valid_name = REGION.fullmatch(claim.region) is not None
    if not valid_name or (allowed and claim.region not in allowed):
        raise SignatureDoesNotMatch(
            f"Credential should be scoped to a valid region, not '{_clip(claim.region)}'. "
        )
    if claim.scope_date != claim.amz_date[:8]:
        raise SignatureDoesNotMatch(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{_clip(claim.scope_date)}' != '{claim.amz_date[:8]}', "
            f"from '{claim.amz_date}'."
        )
    window = timedelta(seconds=skew)
    if claim.signed_at > now + window:
        raise SignatureDoesNotMatch(
            f"Signature not yet current: {claim.amz_date} is still later than "
            f"{_basic(now + window)} ({_basic(now)} + {_span(skew)})"
        )
    if claim.presigned:
        assert claim.expires is not None
        expiry = claim.signed_at + timedelta(seconds=claim.expires)
        if now > expiry:
            raise SignatureDoesNotMatch(
                f"Signature expired: {_basic(expiry)} is now earlier than {_basic(now)} "
                f"(signed at {claim.amz_date}, valid for {claim.expires} seconds)"
            )
    elif claim.signed_at < now - window:
        raise SignatureDoesNotMatch(
            f"Signature expired: {claim.amz_date} is now earlier than "
            f"{_basic(now - window)} ({_basic(now)} - {_span(skew)})"
        )


def _basic(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _span(seconds: int) -> str:
    return f"{seconds // 60} min." if seconds % 60 == 0 else f"{seconds} sec."


# -- recomputing the signature ------------------------------------------------------------------


def verify(req: HttpRequest, query: Sequence[tuple[str, str]], claim: Claim, key: bytes,
           *, normalize: bool = True) -> None:
    """Raise SignatureDoesNotMatch unless the claimed signature is the one the signing ``key``
    (``key_for(claim, secret)``) makes."""
    given = claim.signature if claim.signature.isascii() else "not ascii"
    expected = signature(req, query, claim, key, normalize=normalize)
    if hmac.compare_digest(expected, given):
        return
    if claim.presigned and any(k == "X-Amz-Security-Token" for k, _ in query):
        # Some signers add the session token to the query after signing, as AWS's test suite
        # shows (post-sts-header-after). The token is sealed and bound to the access key id,
        # and its secret made this signature, so leaving it out of the canonical query is safe.
        without = [(k, v) for k, v in query if k != "X-Amz-Security-Token"]
        expected = signature(req, without, claim, key, normalize=normalize)
        if hmac.compare_digest(expected, given):
            return
    raise SignatureDoesNotMatch(MISMATCH)


def signature(req: HttpRequest, query: Sequence[tuple[str, str]], claim: Claim, key: bytes,
              *, normalize: bool = True) -> str:
    creq = canonical_request(req, query, claim, normalize=normalize)
    sts = string_to_sign(claim.amz_date, claim.scope, creq)
    return hmac.digest(key, sts.encode("utf-8"), "sha256").hex()


def canonical_request(req: HttpRequest, query: Sequence[tuple[str, str]], claim: Claim,
                      *, normalize: bool = True) -> str:
    if claim.presigned:
        query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    return "\n".join(
        (
            req.method.upper(),
            canonical_uri(req.path, normalize=normalize),
            canonical_query(query),
            canonical_headers(req, claim.signed_headers),
            ";".join(claim.signed_headers),
            payload_hash(req, claim),
        )
    )


def payload_hash(req: HttpRequest, claim: Claim) -> str:
    # Always the hash of the body as received: a signed x-amz-content-sha256 header that
    # disagrees with the body, or says UNSIGNED-PAYLOAD, cannot make an unsigned body pass.
    return hashlib.sha256(req.body).hexdigest() if req.body else EMPTY_SHA256


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    # Header values arrive as UTF-8 with undecodable bytes escaped: hash the bytes received.
    digest = hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def key_for(claim: Claim, secret: str) -> bytes:
    """The signing key of a secret for the claim's credential scope."""
    return signing_key(secret, claim.scope_date, claim.region, claim.service)


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINATOR)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode("utf-8"), "sha256")


# -- canonical forms ----------------------------------------------------------------------------


def uri_encode(data: str | bytes, *, keep_slash: bool = False) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    out = []
    for byte in raw:
        if byte in _UNRESERVED or (keep_slash and byte == 0x2F):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def normalize_path(path: str) -> str:
    """Remove dot segments and empty segments, keeping a trailing slash (RFC 3986 5.2.4)."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    result = "/" + "/".join(segments)
    last = path.rsplit("/", 1)[-1]
    if segments and (path.endswith("/") or last in (".", "..")):
        result += "/"
    return result


def canonical_uri(path: str, *, normalize: bool = True) -> str:
    if path == "/":
        return path  # every Query API request
    if normalize:
        path = normalize_path(path)
    return uri_encode(path or "/", keep_slash=True)


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_headers(headers: HttpRequest | Iterable[tuple[str, str]],
                      signed: Sequence[str]) -> str:
    if isinstance(headers, HttpRequest):
        by_name = headers.by_name
    else:
        by_name = {}
        for name, value in headers:
            by_name.setdefault(name.lower(), []).append(value)
    lines = []
    for name in signed:
        # Trim each value, fold every run of white space to one space, join repeats with ','.
        values = by_name.get(name)
        if values is None:
            lines.append(f"{name}:\n")
        elif len(values) == 1:
            lines.append(f"{name}:{' '.join(values[0].split())}\n")
        else:
            lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def _clip(text: str, limit: int = 128) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
