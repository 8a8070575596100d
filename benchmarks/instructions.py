"""Instructions per AssumeRoleWithWebIdentity or AssumeRoleWithSAML request, counted by
valgrind: a figure the machine's other tenants cannot disturb, for telling whether a change to
the hot path helps.

The requests are the in-process benchmark's (benchmarks/in_process.py: the Query protocol's
``handle`` called directly — on RS256 tokens of the test suite's issuer, or on fresh signed
responses of its SAML identity provider — file audit sink). They run inside one call of
``sorted`` so that callgrind counts them and nothing else:

    valgrind --tool=callgrind --toggle-collect=builtin_sorted --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/instructions.py [--saml | --saml-baseline] 200

and the "Collected" count divided by the number of requests is the figure. ``--saml-baseline``
counts the SAML benchmark's baseline instead (base64 decoding, lxml parsing and xmlsec
verifying the same kind of response): the two counts' quotient is the in-process ratio without
the noise. Setting up under
valgrind (imports, the issuer's RSA key) takes about three minutes; the count is the same from
run to run within a fraction of a percent. Without valgrind the script runs the requests once
and says so (a quick check that every one is answered with a 200).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from broker.aws.http import HttpRequest  # noqa: E402
from broker.runtime import Runtime, initialize, open_runtime  # noqa: E402
from broker.settings import load  # noqa: E402
from tests.oidc_issuer import TestIssuer  # noqa: E402
from tests.saml_idp import TestIdp  # noqa: E402

sys.path.insert(0, str(HERE))
from in_process import (  # noqa: E402
    oidc_role,
    saml_assertions,
    saml_requests,
    saml_role,
    web_identity_requests,
    xmlsec_verifier,
)


def counted(count: int, one: Callable[[int], int]) -> None:
    gc.collect()
    gc.freeze()
    sorted(range(count), key=one)  # the counted part
    print(f"{count} requests answered; under callgrind --toggle-collect=builtin_sorted,"
          " Collected / requests is the figure", file=sys.stderr)


def driven(runtime: Runtime, requests: list[HttpRequest]) -> Callable[[int], int]:
    """One request by index, driven to its end without the event loop: handle() never waits
    here (keys and IAM answers are cached, the stores are in memory, the audit sink is a
    file)."""

    def one(index: int) -> int:
        coroutine: Any = runtime.protocol.handle(requests[index], source_ip="127.0.0.1")
        try:
            coroutine.send(None)
        except StopIteration as done:
            if done.value.status != 200:
                raise SystemExit(f"refused: {done.value.body[:300]!r}") from None
            return 0
        coroutine.close()
        raise SystemExit("a request waited for I/O: the count would include it")

    return one


async def answered(runtime: Runtime, requests: list[HttpRequest]) -> None:
    for each in requests:
        answer = await runtime.protocol.handle(each, source_ip="127.0.0.1")
        if answer.status != 200:
            raise SystemExit(f"refused: {answer.body[:300]!r}")


async def web_identity(runtime: Runtime, account: str, count: int) -> None:
    with TestIssuer(path="/ci") as issuer:
        role_arn = await oidc_role(runtime, account, issuer)
        tokens = [issuer.token(sub=f"s{i}") for i in range(64)]
        requests = web_identity_requests(role_arn, tokens, max(count, 64))
        for _ in range(40):  # the keys fetched (slowly, under valgrind) before counting
            answer = await runtime.protocol.handle(requests[0], source_ip="127.0.0.1")
            if answer.status == 200:
                break
            await asyncio.sleep(3)
        await answered(runtime, requests[:64])  # every token's first use, caches warmed
        counted(count, driven(runtime, requests))


async def saml(runtime: Runtime, account: str, count: int) -> None:
    idp = TestIdp("https://idp.example.test/metadata")
    provider_arn, role_arn = await saml_role(runtime, account, idp)

    def requests(how_many: int) -> list[HttpRequest]:
        return saml_requests(provider_arn, role_arn,
                             saml_assertions(runtime, idp, provider_arn, role_arn, how_many))

    await answered(runtime, requests(16))  # each assertion is accepted once: its own warm-up
    counted(count, driven(runtime, requests(count)))


async def saml_baseline(runtime: Runtime, account: str, count: int) -> None:
    idp = TestIdp("https://idp.example.test/metadata")
    encoded = saml_assertions(runtime, idp, "arn:aws:iam::111122223333:saml-provider/corp",
                              "arn:aws:iam::111122223333:role/eng", count)
    verify = xmlsec_verifier(idp)

    def one(index: int) -> int:
        verify(encoded[index])
        return 0

    one(0)
    counted(count, one)


async def main(kind: str, count: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    # IAM answers kept for the whole run: under valgrind two seconds pass in a few requests,
    # and a store read would be counted as the requests' work.
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data / "data"),
                                   "BROKER_AUDIT_SINK": "file",
                                   "BROKER_AUDIT_PATH": str(data / "audit.log"),
                                   "BROKER_IAM_POLICY_CACHE_SECONDS": "300"})
    account, _ = await initialize(settings)
    runtime = await open_runtime(settings)
    try:
        run = {"web-identity": web_identity, "saml": saml, "saml-baseline": saml_baseline}[kind]
        await run(runtime, account.id, count)
    finally:
        await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=200)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--saml", dest="kind", action="store_const", const="saml")
    which.add_argument("--saml-baseline", dest="kind", action="store_const",
                       const="saml-baseline")
    parser.set_defaults(kind="web-identity")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.kind, arguments.count))
