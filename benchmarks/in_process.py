"""Benchmark: the two identity-provider actions without HTTP — the Query protocol's ``handle``
called directly, in this process, beside the same baselines as the HTTP benchmarks, timed in
this process too.

* AssumeRoleWithWebIdentity on RS256 tokens of the test suite's issuer, against pyjwt's
  ``jwt.decode`` of the same tokens (benchmarks/assume_role_with_web_identity.py's baseline);
* AssumeRoleWithSAML on fresh signed responses of the test suite's IdP, against base64 decoding,
  lxml parsing and xmlsec verifying the same responses (benchmarks/assume_role_with_saml.py's).

Every check runs as over HTTP (the broker is the same runtime, file audit sink included); only
the HTTP server — uvicorn, httptools, the event loop's per-request work — is left out. The
difference between these ratios and the HTTP benchmarks' is what HTTP costs.

    .venv/bin/python benchmarks/in_process.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from broker.aws.http import HttpRequest  # noqa: E402
from broker.runtime import Runtime, initialize, open_runtime  # noqa: E402
from broker.settings import load  # noqa: E402
from tests import oidc_world, saml_world  # noqa: E402
from tests.oidc_issuer import TestIssuer  # noqa: E402
from tests.saml_idp import TestIdp, encode  # noqa: E402

FORM = [("content-type", "application/x-www-form-urlencoded")]


def request(params: dict[str, str]) -> HttpRequest:
    return HttpRequest("POST", "/", "", FORM, urlencode(params).encode())


async def handled(runtime: Runtime, requests: list[HttpRequest]) -> float:
    """CPU microseconds per request, every answer checked to be a 200."""
    started = time.process_time()
    for req in requests:
        answer = await runtime.protocol.handle(req, source_ip="127.0.0.1")
        if answer.status != 200:
            raise SystemExit(f"refused: {answer.body[:300]!r}")
    return 1e6 * (time.process_time() - started) / len(requests)


# -- the two worlds, shared with benchmarks/instructions.py ---------------------------------------


async def oidc_role(runtime: Runtime, account: str, issuer: TestIssuer) -> str:
    """A provider for ``issuer`` and a role trusting it: the role's ARN."""
    provider = await runtime.iam.oidc_providers.create(
        account, issuer.url, client_ids=[oidc_world.CLIENT_ID], thumbprints=[issuer.thumbprint])
    role = await runtime.iam.roles.create(
        account, "ci", oidc_world.trust_policy(provider.arn, issuer.url))
    return role.arn


def web_identity_requests(role_arn: str, tokens: list[str], count: int) -> list[HttpRequest]:
    return [request({"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                     "RoleArn": role_arn, "RoleSessionName": "bench",
                     "WebIdentityToken": tokens[i % len(tokens)]}) for i in range(count)]


async def saml_role(runtime: Runtime, account: str, idp: TestIdp) -> tuple[str, str]:
    """A SAML provider for ``idp`` and a role trusting it: (provider ARN, role ARN)."""
    provider = await runtime.iam.saml_providers.create(account, "corp", idp.metadata())
    role = await runtime.iam.roles.create(
        account, "eng", saml_world.trust_policy(provider.arn, runtime.settings.acs_url),
        max_session=7200)
    return provider.arn, role.arn


def saml_assertions(runtime: Runtime, idp: TestIdp, provider_arn: str, role_arn: str,
                    count: int) -> list[str]:
    """Fresh signed responses offering the role, base64-encoded."""
    settings = runtime.settings
    return [encode(idp.response(acs_url=settings.acs_url, audience=settings.sp_entity_id,
                                roles=[(role_arn, provider_arn)], session_name=f"u{i}",
                                principal_tags={"team": "platform"})) for i in range(count)]


def saml_requests(provider_arn: str, role_arn: str, encoded: list[str]) -> list[HttpRequest]:
    return [request({"Action": "AssumeRoleWithSAML", "Version": "2011-06-15",
                     "RoleArn": role_arn, "PrincipalArn": provider_arn,
                     "SAMLAssertion": e}) for e in encoded]


def xmlsec_verifier(idp: TestIdp) -> Callable[[str], None]:
    """The SAML baseline (benchmarks/assume_role_with_saml.py's verify_alone) for one encoded
    response: base64 decoding, lxml parsing, xmlsec verifying with the IdP's certificate."""
    import xmlsec
    from lxml import etree

    key = xmlsec.Key.from_memory(idp.key.pem_cert(), xmlsec.KeyFormat.CERT_PEM)

    def verify(encoded: str) -> None:
        root = etree.fromstring(base64.b64decode(encoded))
        xmlsec.tree.add_ids(root, ["ID"])
        context = xmlsec.SignatureContext()
        context.key = key
        context.verify(xmlsec.tree.find_node(root, xmlsec.constants.NodeSignature))

    return verify


# -- the benchmark --------------------------------------------------------------------------------


async def web_identity(runtime: Runtime, account: str, count: int) -> tuple[float, float]:
    import jwt
    from jwt import PyJWK

    with TestIssuer(path="/ci") as issuer:
        role_arn = await oidc_role(runtime, account, issuer)
        tokens = [issuer.token(sub=f"s{i}") for i in range(256)]
        requests = web_identity_requests(role_arn, tokens, count)
        await handled(runtime, requests[:1])  # keys fetched once, as over HTTP
        broker = await handled(runtime, requests)
        key = PyJWK(issuer.keys[0].jwk).key
        started = time.process_time()
        for i in range(count):
            jwt.decode(tokens[i % 256], key=key, algorithms=["RS256"],
                       audience=oidc_world.CLIENT_ID, issuer=issuer.url)
        baseline = 1e6 * (time.process_time() - started) / count
    return broker, baseline


async def saml(runtime: Runtime, account: str, count: int) -> tuple[float, float]:
    idp = TestIdp("https://idp.example.test/metadata")
    provider_arn, role_arn = await saml_role(runtime, account, idp)
    encoded = saml_assertions(runtime, idp, provider_arn, role_arn, count)
    # Each assertion once, as AWS accepts them.
    broker = await handled(runtime, saml_requests(provider_arn, role_arn, encoded))
    verify = xmlsec_verifier(idp)
    started = time.process_time()
    for e in encoded:
        verify(e)
    baseline = 1e6 * (time.process_time() - started) / count
    return broker, baseline


async def main(count: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data / "data"),
                                   "BROKER_AUDIT_SINK": "file",
                                   "BROKER_AUDIT_PATH": str(data / "audit.log")})
    account, _ = await initialize(settings)
    runtime = await open_runtime(settings)
    try:
        for name, run, target in (("AssumeRoleWithWebIdentity vs pyjwt", web_identity, 0.3),
                                  ("AssumeRoleWithSAML vs xmlsec", saml, 0.4)):
            broker, baseline = await run(runtime, account.id, count)
            print(f"{name:36} {broker:7.0f} us  vs {baseline:5.0f} us   ratio "
                  f"{baseline / broker:.2f} (target over HTTP >= {target})", flush=True)
    finally:
        await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
