"""Instructions per AssumeRoleWithWebIdentity request, counted by valgrind: a figure the
machine's other tenants cannot disturb, for telling whether a change to the hot path helps.

The requests are the in-process benchmark's (benchmarks/in_process.py: the Query protocol's
``handle`` called directly on RS256 tokens of the test suite's issuer, file audit sink). They
run inside one call of ``sorted`` so that callgrind counts them and nothing else:

    valgrind --tool=callgrind --toggle-collect=builtin_sorted --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/instructions.py 200

and the "Collected" count divided by the number of requests is the figure. Setting up under
valgrind (imports, the issuer's RSA key) takes about three minutes; the count is the same from
run to run within a fraction of a percent. Without valgrind the script runs the requests once
and says so (a quick check that every one is answered with a 200).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from broker.runtime import initialize, open_runtime  # noqa: E402
from broker.settings import load  # noqa: E402
from tests import oidc_world  # noqa: E402
from tests.oidc_issuer import TestIssuer  # noqa: E402

sys.path.insert(0, str(HERE))
from in_process import request  # noqa: E402


async def main(count: int) -> None:
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
        with TestIssuer(path="/ci") as issuer:
            provider = await runtime.iam.oidc_providers.create(
                account.id, issuer.url, client_ids=[oidc_world.CLIENT_ID],
                thumbprints=[issuer.thumbprint])
            role = await runtime.iam.roles.create(
                account.id, "ci", oidc_world.trust_policy(provider.arn, issuer.url))
            tokens = [issuer.token(sub=f"s{i}") for i in range(64)]
            requests = [request({"Action": "AssumeRoleWithWebIdentity",
                                 "Version": "2011-06-15", "RoleArn": role.arn,
                                 "RoleSessionName": "bench",
                                 "WebIdentityToken": tokens[i % 64]})
                        for i in range(max(count, 64))]
            for _ in range(40):  # the keys fetched (slowly, under valgrind) before counting
                answer = await runtime.protocol.handle(requests[0], source_ip="127.0.0.1")
                if answer.status == 200:
                    break
                await asyncio.sleep(3)
            for each in requests[:64]:  # every token's first use, and the caches, warmed
                answer = await runtime.protocol.handle(each, source_ip="127.0.0.1")
                if answer.status != 200:
                    raise SystemExit(f"refused: {answer.body[:300]!r}")
            gc.collect()
            gc.freeze()

            def one(index: int) -> int:
                # handle() never waits here (keys and IAM answers are cached, the audit sink
                # is a file): drive it to its end without the event loop.
                coroutine: Any = runtime.protocol.handle(requests[index], source_ip="127.0.0.1")
                try:
                    coroutine.send(None)
                except StopIteration as done:
                    if done.value.status != 200:
                        raise SystemExit(f"refused: {done.value.body[:300]!r}") from None
                    return 0
                coroutine.close()
                raise SystemExit("a request waited for I/O: the count would include it")

            sorted(range(count), key=one)  # the counted part
            print(f"{count} requests answered; under callgrind --toggle-collect=builtin_sorted,"
                  " Collected / requests is the figure", file=sys.stderr)
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
