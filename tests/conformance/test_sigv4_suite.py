"""AWS's own SigV4 test suite (../shared/corpora/aws-sigv4-test-suite), read in place.

Sign side: the broker's canonical request, string to sign and signature equal AWS's for every
case, header and presigned. Verify side: every signed request verifies with the case's
credentials at the case's time, and changing any signed part makes it fail.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import pytest

from broker.aws import sigv4
from broker.aws.errors import SignatureDoesNotMatch
from broker.aws.http import HttpRequest, parse_query
from tests.helpers import CORPORA, unavailable

SUITE = CORPORA / "aws-sigv4-test-suite" / "v4"
CASES = sorted(p.name for p in SUITE.iterdir()) if SUITE.is_dir() else []


@pytest.fixture(autouse=True)
def _suite_present() -> None:
    if not SUITE.is_dir():
        unavailable("AWS SigV4 test suite", f"{SUITE} does not exist")


def parse_http(text: str) -> HttpRequest:
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    request_line = lines[0]
    method, rest = request_line.split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    path, _, query = target.partition("?")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        headers.append((name, value))
    return HttpRequest(method, path, query, headers, body.encode())


class Case:
    def __init__(self, name: str) -> None:
        self.dir = SUITE / name
        self.context = json.loads((self.dir / "context.json").read_text())
        self.now = datetime.fromisoformat(self.context["timestamp"].replace("Z", "+00:00"))

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()

    @property
    def secret(self) -> str:
        return str(self.context["credentials"]["secret_access_key"])

    @property
    def normalize(self) -> bool:
        return bool(self.context["normalize"])

    def signed(self, kind: str) -> tuple[HttpRequest, list[tuple[str, str]], sigv4.Claim]:
        req = parse_http(self.text(f"{kind}-signed-request.txt"))
        query = parse_query(req.query)
        return req, query, sigv4.parse_claim(req, query)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", ["header", "query"])
def test_sign_side_matches_aws(name: str, kind: str) -> None:
    case = Case(name)
    req, query, claim = case.signed(kind)
    if kind == "query" and case.context.get("omit_session_token"):
        query = [(k, v) for k, v in query if k != "X-Amz-Security-Token"]
    creq = sigv4.canonical_request(req, query, claim, normalize=case.normalize)
    assert creq == case.text(f"{kind}-canonical-request.txt")
    sts = sigv4.string_to_sign(claim.amz_date, claim.scope, creq)
    assert sts == case.text(f"{kind}-string-to-sign.txt")
    signature = sigv4.signature(req, query, claim, sigv4.key_for(claim, case.secret),
                                normalize=case.normalize)
    assert signature == case.text(f"{kind}-signature.txt").strip() == claim.signature


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", ["header", "query"])
def test_verify_side_accepts_and_every_change_is_refused(name: str, kind: str) -> None:
    case = Case(name)
    req, query, claim = case.signed(kind)
    sigv4.check_scope(claim, service=case.context["service"], now=case.now, skew=300)
    sigv4.verify(req, query, claim, sigv4.key_for(claim, case.secret),
                 normalize=case.normalize)  # the control

    def refused(changed: HttpRequest) -> None:
        q = parse_query(changed.query)
        changed_claim = sigv4.parse_claim(changed, q)
        with pytest.raises(SignatureDoesNotMatch):
            sigv4.verify(changed, q, changed_claim, sigv4.key_for(changed_claim, case.secret),
                         normalize=case.normalize)

    refused(replace(req, method="PUT"))
    refused(replace(req, path=req.path + "x"))
    refused(replace(req, query=(req.query + "&" if req.query else "") + "Extra=1"))
    if req.body:
        refused(replace(req, body=req.body + b"x"))
    for i, (hname, value) in enumerate(req.headers):
        if hname.lower() in claim.signed_headers and hname.lower() != "x-amz-date":
            headers = list(req.headers)
            headers[i] = (hname, value + "x")
            refused(replace(req, headers=headers))
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(req, query, claim, sigv4.key_for(claim, case.secret[:-1] + "X"),
                     normalize=case.normalize)
    wrong = claim._replace(signature=claim.signature[:-1] + ("0" if claim.signature[-1] != "0"
                                                             else "1"))
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(req, query, wrong, sigv4.key_for(wrong, case.secret),
                     normalize=case.normalize)


def test_suite_is_complete() -> None:
    assert len(CASES) >= 38
    assert all((SUITE / c / "context.json").is_file() for c in CASES)
