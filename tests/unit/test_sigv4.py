from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.aws import sigv4
from broker.aws.errors import IncompleteSignature, SignatureDoesNotMatch
from broker.aws.http import HttpRequest, parse_query

NOW = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)
AMZ = NOW.strftime("%Y%m%dT%H%M%SZ")
CRED = f"AKIAEXAMPLE/{AMZ[:8]}/us-east-1/sts/aws4_request"
GOOD = f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host;x-amz-date, Signature=abc"


def request(authorization: str | None = GOOD, amz_date: str | None = AMZ,
            query: str = "") -> HttpRequest:
    headers = [("Host", "broker")]
    if amz_date is not None:
        headers.append(("X-Amz-Date", amz_date))
    if authorization is not None:
        headers.append(("Authorization", authorization))
    return HttpRequest("POST", "/", query, headers, b"")


def claim_of(req: HttpRequest) -> sigv4.Claim:
    return sigv4.parse_claim(req, parse_query(req.query))


def test_well_formed_header_claim() -> None:
    claim = claim_of(request())
    assert (claim.access_key_id, claim.region, claim.service) == (
        "AKIAEXAMPLE", "us-east-1", "sts")
    assert claim.signed_at == NOW and not claim.presigned


@pytest.mark.parametrize(("authorization", "message"), [
    ("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=abc",
     "Authorization header requires 'Credential' parameter."),
    (f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host;x-amz-date",
     "Authorization header requires 'Signature' parameter."),
    (f"AWS4-HMAC-SHA256 Credential={CRED}, Signature=abc",
     "Authorization header requires 'SignedHeaders' parameter."),
    ("AWS AKIAEXAMPLE:sig", "Unsupported AWS 'algorithm': 'AWS'"),
    (f"AWS4-HMAC-SHA256 Credential=AKIA/{AMZ[:8]}/us-east-1, SignedHeaders=host;x-amz-date, "
     "Signature=abc", "Credential must have exactly 5 slash-delimited elements"),
    (f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=x-amz-date, Signature=abc",
     "must include the 'host' header"),
    (f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host, Signature=abc",
     "must include the 'x-amz-date' header"),
    (f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=x-amz-date;host, Signature=abc",
     "sorted"),
])
def test_malformed_authorization_is_incomplete_signature(authorization: str, message: str) -> None:
    with pytest.raises(IncompleteSignature) as info:
        claim_of(request(authorization))
    assert message in info.value.message
    assert info.value.status == 400


def test_missing_date_and_bad_date() -> None:
    with pytest.raises(IncompleteSignature, match="'X-Amz-Date' or a 'Date' header"):
        claim_of(request(amz_date=None))
    with pytest.raises(IncompleteSignature, match="ISO-8601 'basic format'"):
        claim_of(request(amz_date="2026-05-04T10:00:00Z"))
    with pytest.raises(IncompleteSignature, match="not a real date"):
        claim_of(request(amz_date="20261399T250000Z"))


def test_date_header_is_accepted_when_signed() -> None:
    auth = f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=date;host, Signature=abc"
    req = HttpRequest("POST", "/", "", [("Host", "b"), ("Date", "Mon, 04 May 2026 10:00:00 GMT"),
                                        ("Authorization", auth)], b"")
    assert claim_of(req).amz_date == AMZ


def test_presigned_claim_and_its_faults() -> None:
    q = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CRED.replace('/', '%2F')}"
         f"&X-Amz-Date={AMZ}&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ab")
    claim = claim_of(request(None, None, q))
    assert claim.presigned and claim.expires == 60
    with pytest.raises(IncompleteSignature, match="'X-Amz-Signature'"):
        claim_of(request(None, None, q.replace("&X-Amz-Signature=ab", "")))
    with pytest.raises(IncompleteSignature, match="less than a week"):
        claim_of(request(None, None, q.replace("Expires=60", "Expires=604801")))
    with pytest.raises(IncompleteSignature, match="non-negative"):
        claim_of(request(None, None, q.replace("Expires=60", "Expires=-1")))
    with pytest.raises(IncompleteSignature, match="Only one auth mechanism"):
        claim_of(request(GOOD, AMZ, q))


def check(claim: sigv4.Claim, now: datetime = NOW, service: str = "sts",
          regions: tuple[str, ...] = ()) -> None:
    sigv4.check_scope(claim, service=service, now=now, skew=300, regions=regions)


def test_scope_checks_use_aws_messages() -> None:
    claim = claim_of(request())
    check(claim)  # the control
    with pytest.raises(SignatureDoesNotMatch,
                       match="Credential should be scoped to correct service: 'iam'"):
        check(claim, service="iam")
    with pytest.raises(SignatureDoesNotMatch, match="valid region, not 'us-east-1'"):
        check(claim, regions=("eu-west-1",))
    bad_region = claim_of(request(GOOD.replace("us-east-1", "moon")))
    with pytest.raises(SignatureDoesNotMatch, match="valid region, not 'moon'"):
        check(bad_region)
    bad_term = claim_of(request(GOOD.replace("aws4_request", "aws5_request")))
    with pytest.raises(SignatureDoesNotMatch, match="valid terminator"):
        check(bad_term)
    other_day = claim_of(request(GOOD.replace(AMZ[:8], "20260503")))
    with pytest.raises(SignatureDoesNotMatch, match="Date in Credential scope does not match"):
        check(other_day)


def test_clock_skew_both_ways() -> None:
    claim = claim_of(request())
    check(claim, now=NOW + timedelta(seconds=299))
    check(claim, now=NOW - timedelta(seconds=299))
    with pytest.raises(SignatureDoesNotMatch) as late:
        check(claim, now=NOW + timedelta(seconds=301))
    assert late.value.message == (
        f"Signature expired: {AMZ} is now earlier than 20260504T100001Z "
        "(20260504T100501Z - 5 min.)"
    )
    with pytest.raises(SignatureDoesNotMatch, match="Signature not yet current"):
        check(claim, now=NOW - timedelta(seconds=301))


def test_presigned_expiry() -> None:
    q = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CRED.replace('/', '%2F')}"
         f"&X-Amz-Date={AMZ}&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=ab")
    claim = claim_of(request(None, None, q))
    check(claim, now=NOW + timedelta(seconds=900))
    with pytest.raises(SignatureDoesNotMatch, match="Signature expired"):
        check(claim, now=NOW + timedelta(seconds=901))


@pytest.mark.parametrize(("path", "normal"), [
    ("", "/"), ("/", "/"), ("//a//b//", "/a/b/"), ("/a/./b", "/a/b"), ("/a/b/..", "/a/"),
    ("/a/b/../..", "/"), ("/../..", "/"), ("/a/.", "/a/"),
])
def test_normalize_path(path: str, normal: str) -> None:
    assert sigv4.normalize_path(path) == normal


def test_plus_means_space_in_both_parameters_and_canonical_query() -> None:
    assert parse_query("a=b+c&d=%2B") == [("a", "b c"), ("d", "+")]
    assert sigv4.canonical_query(parse_query("a=b+c")) == "a=b%20c"
    with pytest.raises(UnicodeDecodeError):
        parse_query("a=%FF")


def test_payload_is_always_the_body_received() -> None:
    """A signed x-amz-content-sha256 (or UNSIGNED-PAYLOAD) cannot vouch for another body."""
    import hashlib
    import hmac

    body = b"Action=GetCallerIdentity"
    secret = "s" * 40

    def signed_with(payload_line: str, header_value: str) -> tuple[HttpRequest, sigv4.Claim]:
        signed = "host;x-amz-content-sha256;x-amz-date"
        headers = [("host", "b"), ("x-amz-content-sha256", header_value), ("x-amz-date", AMZ)]
        creq = "\n".join(["POST", "/", "", f"host:b\nx-amz-content-sha256:{header_value}\n"
                          f"x-amz-date:{AMZ}\n", signed, payload_line])
        sts = sigv4.string_to_sign(AMZ, f"{AMZ[:8]}/us-east-1/sts/aws4_request", creq)
        key = sigv4.signing_key(secret, AMZ[:8], "us-east-1", "sts")
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        auth = f"AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders={signed}, Signature={sig}"
        req = HttpRequest("POST", "/", "", [*headers, ("authorization", auth)], body)
        return req, claim_of(req)

    honest = hashlib.sha256(body).hexdigest()
    req, claim = signed_with(honest, honest)
    sigv4.verify(req, [], claim, sigv4.key_for(claim, secret))  # the control
    req, claim = signed_with("UNSIGNED-PAYLOAD", "UNSIGNED-PAYLOAD")
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(req, [], claim, sigv4.key_for(claim, secret))
    other = hashlib.sha256(b"Action=GetSessionToken").hexdigest()
    req, claim = signed_with(other, other)
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(req, [], claim, sigv4.key_for(claim, secret))
