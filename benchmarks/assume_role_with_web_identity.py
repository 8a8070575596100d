"""Benchmark: AssumeRoleWithWebIdentity requests per second on one worker, beside — in the same
run — pyjwt verifying the same tokens alone, and beside moto's server answering the same call.

One broker (one uvicorn worker, the file audit sink, default settings), an OpenID Connect
provider registered from the test suite's issuer (tests/oidc_issuer.py: HTTPS with a
self-signed certificate trusted by its thumbprint, RSA-2048 keys, RS256 tokens signed by
jwcrypto) and a role trusting it for the client id ``client-1`` with IAMReadOnlyAccess attached.
The request is the unsigned form POST the SDKs send. Every round makes a fresh batch of tokens
(distinct ``sub``, valid ten minutes); a web identity token may be used again, as on AWS, so
the load generator (another process, 16 keep-alive connections) sends the batch over and over.

The issuer is not on the hot path: the broker fetches its discovery document and keys once, on
the check request before the first round, and keeps them for an hour (the issuer sends no
Cache-Control, so ``oidc.key_cache_seconds`` applies). The benchmark counts the issuer's
requests during the rounds and refuses to report if there were any.

The baseline, run in this process between the broker's rounds over the same tokens:
``jwt.decode`` with the issuer's public key, RS256 only, the audience and the issuer checked —
pyjwt verifying a token alone, the least any relying party must do. The figure is the median
over rounds of broker requests per second divided by baseline verifications per second; also
the same comparison in CPU time per operation. Target: at least 0.3.

The peer a user would otherwise run: moto's server (``moto_server``, the ``bench`` extra), which
reads no token and checks no signature, answering the same request. moto's server (werkzeug)
closes the connection after every answer, so it is measured with a new connection per request;
the broker is measured that way too, so that the broker/moto comparison is like for like.

    .venv/bin/python benchmarks/assume_role_with_web_identity.py [--seconds 5] [--rounds 3]

Writes benchmarks/results/assume_role_with_web_identity.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "assume_role_with_web_identity.json"
TARGET = 0.3
CLIENT_ID = "client-1"
BATCH = 256  # distinct tokens per round

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from caller_identity import (  # noqa: E402
    free_port,
    measure,
    start_servers,
    stop_servers,
    summary_head,
    wait_ready,
)

from tests.oidc_issuer import TestIssuer  # noqa: E402
from tests.oidc_world import trust_policy  # noqa: E402


def setup(broker_url: str, root: dict[str, str], issuer: TestIssuer) -> str:
    """An OIDC provider and a role trusting it: the role's ARN."""
    import boto3

    iam = boto3.client("iam", endpoint_url=broker_url, region_name="us-east-1",
                       aws_access_key_id=root["access_key_id"],
                       aws_secret_access_key=root["secret_access_key"])
    provider_arn = iam.create_open_id_connect_provider(
        Url=issuer.url, ClientIDList=[CLIENT_ID], ThumbprintList=[issuer.thumbprint],
    )["OpenIDConnectProviderArn"]
    role = iam.create_role(RoleName="ci", MaxSessionDuration=7200,
                           AssumeRolePolicyDocument=trust_policy(provider_arn, issuer.url))
    iam.attach_role_policy(RoleName="ci", PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    return str(role["Role"]["Arn"])


def tokens(issuer: TestIssuer, count: int) -> list[str]:
    return [issuer.token(sub=f"repo:corp/app-{i}:ref:refs/heads/main") for i in range(count)]


def form(role_arn: str, token: str) -> bytes:
    return urlencode({"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                      "RoleArn": role_arn, "RoleSessionName": "bench",
                      "WebIdentityToken": token}).encode()


def http_request(port: int, body: bytes) -> bytes:
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def accepted(port: int, body: bytes, who: str) -> None:
    answer = httpx.post(f"http://127.0.0.1:{port}/", content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    if answer.status_code != 200 or "<AssumeRoleWithWebIdentityResult>" not in answer.text:
        raise SystemExit(f"{who} refused the benchmark request: {answer.text}")


def verify_alone(batch: list[str], jwk: dict[str, Any], issuer_url: str,
                 seconds: float) -> tuple[float, float]:
    """Verifications per second, and CPU microseconds per verification, of pyjwt's
    ``jwt.decode`` over the tokens (the baseline)."""
    import jwt

    key = jwt.PyJWK(jwk).key
    done = 0
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    cpu = time.process_time()
    while time.perf_counter() < stop:
        jwt.decode(batch[done % len(batch)], key=key, algorithms=["RS256"], audience=CLIENT_ID,
                   issuer=issuer_url)
        done += 1
    return done / (time.perf_counter() - started), 1e6 * (time.process_time() - cpu) / done


# -- a new connection per request: moto's server closes each one --------------------------------
# caller_identity.measure's load generator keeps its connections open; werkzeug answers every
# request with "Connection: close". This is the same generator, connecting afresh each time.


def measure_one_shot(port: int, requests: Sequence[bytes], seconds: float, connections: int,
                     server_pid: int) -> dict[str, float]:
    """As caller_identity.measure, with ``connections`` clients each connecting per request."""
    return measure(port, requests, seconds, connections, server_pid, one_shot=True)


def start_moto() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_", "MOTO_"))}
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/moto-api/", proc)
    except BaseException:
        stop_servers([proc])
        raise
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not (BIN / "moto_server").exists():
        raise SystemExit("moto_server is missing: pip install -e '.[test,bench]' (make bench)")

    issuer = TestIssuer(path="/ci", algs=("RS256",))
    issuer.cache_control = None  # the broker keeps the keys for oidc.key_cache_seconds (1 h)
    issuer.start()
    servers, broker_port, _, created = start_servers()
    rounds: list[dict[str, Any]] = []
    try:
        moto, moto_port = start_moto()
        servers.append(moto)
        role_arn = setup(f"http://127.0.0.1:{broker_port}", created["root"], issuer)
        check = form(role_arn, tokens(issuer, 1)[0])
        accepted(broker_port, check, "the broker")
        accepted(moto_port, check, "moto")
        fetches = sum(issuer.fetches.values())
        for i in range(args.rounds):
            batch = tokens(issuer, BATCH)
            bodies = [form(role_arn, t) for t in batch]
            # The batch again and again (references, not copies): more than the round can send.
            repeat = 1 + int(4 * args.seconds * max(
                [5000.0] + [r[k]["rps"] for r in rounds
                             for k in ("broker", "broker_new_connection_each")])) // BATCH
            to_broker = [http_request(broker_port, b) for b in bodies] * repeat
            to_moto = [http_request(moto_port, b) for b in bodies] * repeat
            base, base_cpu = verify_alone(batch, issuer.keys[0].jwk, issuer.url, args.seconds)
            result = measure(broker_port, to_broker, args.seconds, args.connections,
                             servers[0].pid)
            per_connection = measure_one_shot(broker_port, to_broker, args.seconds,
                                              args.connections, servers[0].pid)
            peer = measure_one_shot(moto_port, to_moto, args.seconds, args.connections, moto.pid)
            if max(result["requests"], per_connection["requests"]) >= len(to_broker):
                raise SystemExit("the round ran out of requests; raise the repeat")
            rounds.append({"broker": result, "broker_new_connection_each": per_connection,
                           "moto_new_connection_each": peer,
                           "pyjwt_per_second": base, "pyjwt_cpu_us": base_cpu,
                           "ratio": result["rps"] / base,
                           "cpu_ratio": base_cpu / result["server_cpu_us_per_request"],
                           "broker_over_moto": per_connection["rps"] / peer["rps"],
                           "broker_keep_alive_over_moto": result["rps"] / peer["rps"]})
            print(f"round {i + 1}: pyjwt {base:7.0f}/s ({base_cpu:.0f} us cpu)   "
                  f"AssumeRoleWithWebIdentity {result['rps']:6.0f} rps "
                  f"({result['server_cpu_us_per_request']:.0f} us cpu/req), "
                  f"{per_connection['rps']:6.0f} rps new connections   "
                  f"moto {peer['rps']:5.0f} rps ({peer['server_cpu_us_per_request']:.0f} us "
                  f"cpu/req)   ratio {rounds[-1]['ratio']:.2f} (cpu "
                  f"{rounds[-1]['cpu_ratio']:.2f})", flush=True)
        fetches = sum(issuer.fetches.values()) - fetches
    finally:
        stop_servers(servers)
        issuer.stop()
    if fetches:
        raise SystemExit(f"the broker fetched from the issuer {fetches} times during the rounds")

    def med(who: str, key: str) -> float:
        return float(statistics.median(r[who][key] for r in rounds))

    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    summary = {
        **summary_head("AssumeRoleWithWebIdentity (one worker) vs pyjwt jwt.decode alone (same "
                       "tokens, same run); moto_server answering the same request",
                       "assume_role_with_web_identity.py", args, rounds),
        # The same comparison in CPU time per operation (the server's CPU per request against
        # this process's CPU per verification): less exposed to other tenants of the machine.
        "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
        "assume_role_with_web_identity_rps": med("broker", "rps"),
        "broker": {k: med("broker", k) for k in keys},
        "pyjwt_per_second": statistics.median(r["pyjwt_per_second"] for r in rounds),
        "pyjwt_cpu_us": statistics.median(r["pyjwt_cpu_us"] for r in rounds),
        "broker_new_connection_each": {k: med("broker_new_connection_each", k) for k in keys},
        "moto_new_connection_each": {k: med("moto_new_connection_each", k) for k in keys},
        # Both with a new connection per request (like for like), and the broker as the SDKs
        # reach it (keep-alive) against moto as it can be reached (it closes every connection).
        "broker_over_moto": statistics.median(r["broker_over_moto"] for r in rounds),
        "broker_keep_alive_over_moto": statistics.median(
            r["broker_keep_alive_over_moto"] for r in rounds),
        "issuer_fetches_during_rounds": fetches,
        "per_round": rounds,
        "target_ratio": TARGET,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    b, n, m = (summary["broker"], summary["broker_new_connection_each"],
               summary["moto_new_connection_each"])
    print()
    print(f"{'':40}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}")
    for name, row in (("AssumeRoleWithWebIdentity, keep-alive", b),
                      ("AssumeRoleWithWebIdentity, new conn.", n),
                      ("moto_server, new conn.", m)):
        print(f"{name:40}{row['rps']:9.0f}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}"
              f"{row['server_cpu_us_per_request']:12.0f}")
    print(f"{'pyjwt jwt.decode alone':40}{summary['pyjwt_per_second']:9.0f}{'':18}"
          f"{summary['pyjwt_cpu_us']:12.0f}")
    print(f"ratio (median of rounds): {summary['ratio']:.2f}  (target >= {TARGET}); "
          f"in CPU time per operation: {summary['cpu_ratio']:.2f}")
    print(f"broker / moto: {summary['broker_over_moto']:.2f} with a new connection per request "
          f"for both, {summary['broker_keep_alive_over_moto']:.2f} with the broker's kept open")
    print(f"requests to the issuer during the rounds: {fetches}")


if __name__ == "__main__":
    main()
