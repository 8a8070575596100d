"""Benchmark: the broker under sustained load — 60 seconds at about 80 % of its measured
capacity on a mixed workload, on PostgreSQL and Redis, with two workers.

One ``broker serve --workers 2`` on a fresh PostgreSQL database and a Redis prefix of its own
(the machine's servers, as the test suite uses them). The mix, by weight:

* 40 GetCallerIdentity signed with temporary credentials (an AssumeRole session);
* 20 AssumeRole by an IAM user (its long-term key);
* 15 AssumeRoleWithWebIdentity with ID tokens of the suite's OpenID Connect issuer
  (tests/oidc_issuer.py, served over HTTPS so that the broker fetches its keys, as
  benchmarks/assume_role_with_web_identity.py does);
* 10 AssumeRoleWithSAML with signed responses of the suite's identity provider
  (tests/saml_idp.py), each used once: they are all signed before the step starts, so that
  xmlsec signing does not make the load generator the bottleneck;
* 15 console views: ``GET /console`` with a console session cookie from the federation
  endpoint (getSigninToken, login).

The load generator is locust (benchmarks/load/locustfile.py), headless, in a process of its own
(it patches the standard library with gevent when imported, so it is never imported here).
Step 1 measures capacity: users sending as fast as they are answered, a short ramp, then the
requests per second of the ramp's second half. Step 2 runs ``--seconds`` (60) at 80 % of that
with locust's ``constant_throughput`` per user, and reports requests, errors (must be 0), p50
and p99 of the first and the last 10 seconds for the whole mix and per action, and the ratio
p99(last 10 s) / p99(first 10 s). Target: at most 1.5.

    .venv/bin/python benchmarks/sustained_load.py [--seconds 60] [--capacity-seconds 20]

Writes benchmarks/results/sustained_load.json (and locust's CSV files beside it, under
benchmarks/results/sustained_load/) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "sustained_load.json"
CSV = HERE / "results" / "sustained_load"
LOCUSTFILE = HERE / "load" / "locustfile.py"
SAML_SHARE = 10 / 100  # the SAML task's weight in the locustfile
ACTIONS = ("GetCallerIdentity", "AssumeRole", "AssumeRoleWithWebIdentity",
           "AssumeRoleWithSAML", "console")

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import assume_role_with_saml as saml_bench  # noqa: E402
import assume_role_with_web_identity as oidc_bench  # noqa: E402
from caller_identity import free_port  # noqa: E402
from shared_stores import Deployment, deployment, group_cpu_seconds, serving  # noqa: E402

from tests.oidc_issuer import TestIssuer  # noqa: E402
from tests.saml_idp import TestIdp, encode  # noqa: E402


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def setup(dep: Deployment, url: str, issuer: TestIssuer, idp: TestIdp) -> dict[str, Any]:
    """The identities of the mix, made through the broker's own interfaces."""
    import boto3

    root = dep.root
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id=root["access_key_id"],
                       aws_secret_access_key=root["secret_access_key"])
    iam.create_user(UserName="loader")
    role = iam.create_role(RoleName="app", MaxSessionDuration=7200,
                           AssumeRolePolicyDocument=document({
                               "Effect": "Allow", "Action": "sts:AssumeRole",
                               "Principal": {"AWS": f"arn:aws:iam::{dep.account_id}:user/"
                                                    "loader"}}))["Role"]
    iam.attach_role_policy(RoleName="app",
                           PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    iam.put_user_policy(UserName="loader", PolicyName="assume", PolicyDocument=document(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}))
    key = iam.create_access_key(UserName="loader")["AccessKey"]
    sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"],
                       aws_secret_access_key=key["SecretAccessKey"])
    c = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="load",
                        DurationSeconds=7200)["Credentials"]
    # The loader's long-term key signs AssumeRole; the session's credentials the rest.
    session = {"access_key_id": c["AccessKeyId"], "secret_access_key": c["SecretAccessKey"],
               "session_token": c["SessionToken"]}
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as browser:
        token = browser.get("/federation", params={"Action": "getSigninToken", "Session": (
            json.dumps({"sessionId": c["AccessKeyId"], "sessionKey": c["SecretAccessKey"],
                        "sessionToken": c["SessionToken"]}))}).json()["SigninToken"]
        login = browser.get("/federation", params={"Action": "login", "Destination":
                                                   "/console", "SigninToken": token})
        if login.status_code != 303:
            raise SystemExit(f"the federation endpoint refused the login: {login.text[:300]}")
        cookie = f"broker-session={login.cookies['broker-session']}"
    saml_provider, saml_role = saml_bench.setup(url, root, idp)
    return {"host": url, "temporary": session,
            "long_term": {"access_key_id": key["AccessKeyId"],
                          "secret_access_key": key["SecretAccessKey"]},
            "role_arn": role["Arn"], "console_cookie": cookie,
            "web_identity_role_arn": oidc_bench.setup(url, root, issuer),
            "saml_provider_arn": saml_provider, "saml_role_arn": saml_role}


def saml_responses(idp: TestIdp, plan: dict[str, Any], count: int) -> list[str]:
    """``count`` signed SAML responses, each with an assertion id of its own."""
    started = time.perf_counter()
    made = [encode(xml) for xml in saml_bench.responses(
        idp, plan["host"], plan["saml_provider_arn"], plan["saml_role_arn"], count)]
    print(f"  {count} SAML responses signed in {time.perf_counter() - started:.1f} s",
          flush=True)
    return made


def machine_busy_seconds() -> float:
    """CPU time every process of the machine has used so far (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])  # idle, iowait
    return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_locust(plan: dict[str, Any], work: Path, name: str, *, users: int, spawn_rate: float,
               seconds: float, rate: float, server_pgid: int = 0,
               samples: list[dict[str, float]] | None = None,
               ) -> list[tuple[float, str, float, str | None]]:
    """locust, headless, in its own process: one event per request. Every second, into
    ``samples``: the CPU time used so far by the broker, by locust and by the whole machine
    (so that a slow stretch can be told apart from another tenant's)."""
    plan_file, events = work / f"{name}-plan.json", work / f"{name}-events.jsonl"
    plan_file.write_text(json.dumps(plan))
    CSV.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_PLAN": str(plan_file), "BENCH_EVENTS": str(events),
           "BENCH_RATE": str(rate), "PYTHONPATH": str(ROOT)}
    log = work / f"{name}-locust.log"
    with log.open("wb") as out:
        locust = subprocess.Popen(
            [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "--host", plan["host"],
             "-u", str(users), "-r", str(spawn_rate), "-t", f"{seconds:g}s",
             "--stop-timeout", "10", "--only-summary", "--loglevel", "WARNING",
             "--csv", str(CSV / name)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + seconds + 120
        while locust.poll() is None:
            if time.monotonic() > deadline:
                locust.kill()
                raise SystemExit("locust did not stop")
            if samples is not None:
                samples.append({"time": time.time(), "machine": machine_busy_seconds(),
                                "broker": group_cpu_seconds(server_pgid) if server_pgid
                                else 0.0, "locust": group_cpu_seconds(locust.pid)})
            time.sleep(1)
    if not events.exists():
        raise SystemExit(f"locust wrote no events ({locust.returncode}): "
                         f"{log.read_text()[-2000:]}")
    return [tuple(json.loads(line)) for line in events.read_text().splitlines()]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def window(events: list[tuple[float, str, float, str | None]], start: float,
           stop: float) -> dict[str, Any]:
    """p50 and p99 (ms) of the requests that started in [start, stop), whole mix and per
    action."""
    inside = [e for e in events if start <= e[0] < stop and e[3] is None]
    out: dict[str, Any] = {"requests": len(inside),
                           "p50_ms": percentile([e[2] for e in inside], 0.5),
                           "p99_ms": percentile([e[2] for e in inside], 0.99)}
    for action in ACTIONS:
        mine = [e[2] for e in inside if e[1] == action]
        out[action] = {"requests": len(mine), "p50_ms": percentile(mine, 0.5),
                       "p99_ms": percentile(mine, 0.99)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the steady step")
    parser.add_argument("--capacity-seconds", type=float, default=20.0, help="the ramp")
    parser.add_argument("--capacity-users", type=int, default=32)
    parser.add_argument("--users", type=int, default=80, help="users of the steady step")
    parser.add_argument("--load", type=float, default=0.8, help="share of capacity")
    parser.add_argument("--window", type=float, default=10.0, help="first/last seconds")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"where the results go (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    span = min(args.window, args.seconds / 2)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    issuer = TestIssuer(path="/ci", algs=("RS256",))
    issuer.cache_control = None  # the broker keeps the keys for oidc.key_cache_seconds
    issuer.start()
    idp = TestIdp("https://idp.example.test/metadata")
    work = Path(tempfile.mkdtemp(prefix="broker-load-"))
    try:
        with deployment(public_url=url) as dep, serving(dep, port, workers=2) as server:
            plan = setup(dep, url, issuer, idp)
            plan["web_identity_tokens"] = oidc_bench.tokens(issuer, 256)

            print("step 1: capacity", flush=True)
            guess = 3000.0  # requests/s, for the SAML responses the ramp may use
            plan["saml_responses"] = saml_responses(
                idp, plan, int(guess * SAML_SHARE * args.capacity_seconds))
            ramp = run_locust(plan, work, "capacity", users=args.capacity_users,
                              spawn_rate=2 * args.capacity_users / args.capacity_seconds,
                              seconds=args.capacity_seconds, rate=0)
            begun = min(e[0] for e in ramp)
            half = [e for e in ramp if e[0] >= begun + args.capacity_seconds / 2
                    and e[3] is None]
            capacity = len(half) / (args.capacity_seconds / 2)
            ran_out = sum(1 for e in ramp if e[3] == "out of SAML responses")
            other_errors = sum(1 for e in ramp
                               if e[3] is not None and e[3] != "out of SAML responses")
            print(f"  capacity {capacity:.0f} requests/s (ramp errors {other_errors}, "
                  f"SAML responses short {ran_out})", flush=True)

            rate = args.load * capacity
            print(f"step 2: {args.seconds:g} s at {rate:.0f} requests/s", flush=True)
            plan["saml_responses"] = saml_responses(
                idp, plan, int(rate * SAML_SHARE * (args.seconds + 15) * 1.5) + 20)
            fetches = sum(issuer.fetches.values())
            cpu = group_cpu_seconds(server.pid)
            samples: list[dict[str, float]] = []
            steady = run_locust(plan, work, "steady", users=args.users,
                                spawn_rate=args.users, seconds=args.seconds,
                                rate=rate / args.users, server_pgid=server.pid,
                                samples=samples)
            cpu = group_cpu_seconds(server.pid) - cpu
            fetches = sum(issuer.fetches.values()) - fetches
    finally:
        issuer.stop()

    start, stop = min(e[0] for e in steady), max(e[0] for e in steady)
    errors = [e for e in steady if e[3] is not None]
    first, last = window(steady, start, start + span), window(steady, stop - span, stop + 1)
    by_action = {a: {"requests": sum(1 for e in steady if e[1] == a),
                     "errors": sum(1 for e in errors if e[1] == a),
                     "first": first[a], "last": last[a],
                     "p99_ratio": last[a]["p99_ms"] / first[a]["p99_ms"]
                     if first[a]["p99_ms"] else None} for a in ACTIONS}
    elapsed = stop - start
    def cores(t: float, key: str) -> float:
        """Cores' worth of CPU ``key`` used over the 5 seconds from ``t``."""
        inside = [x for x in samples if start + t <= x["time"] <= start + t + 5]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][key] - inside[0][key]) / (inside[-1]["time"] - inside[0]["time"])

    summary = {
        "benchmark": "sustained load: the mixed workload at a share of measured capacity, "
                     "broker serve --workers 2 on PostgreSQL and Redis",
        "command": ".venv/bin/python benchmarks/sustained_load.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "capacity_rps": capacity,
        "capacity_step": {"seconds": args.capacity_seconds, "users": args.capacity_users,
                          "requests": len(ramp), "errors": other_errors,
                          "saml_responses_short": ran_out},
        "target_rps": rate,
        "steady_seconds": args.seconds,
        "users": args.users,
        "requests": len(steady),
        "achieved_rps": len(steady) / elapsed if elapsed else 0.0,
        "errors": len(errors),
        "error_samples": sorted({e[3] for e in errors if e[3]})[:5],
        "server_cpu_ms_per_request": 1000 * cpu / max(1, len(steady)),
        "window_seconds": span,
        "first": {k: first[k] for k in ("requests", "p50_ms", "p99_ms")},
        "last": {k: last[k] for k in ("requests", "p50_ms", "p99_ms")},
        "p99_ratio": last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else None,
        "target_p99_ratio": 1.5,
        "by_action": by_action,
        "issuer_fetches_during_steady_step": fetches,
        # Every 5 seconds: what a trend (or the machine's other tenants) looks like.
        # With the cores' worth of CPU the broker, locust and the whole machine used: what
        # the machine had left over for the broker.
        "timeline": [{"from_second": t, "rps": w["requests"] / 5, "p50_ms": w["p50_ms"],
                      "p99_ms": w["p99_ms"], "broker_cores": cores(t, "broker"),
                      "locust_cores": cores(t, "locust"), "machine_cores": cores(t, "machine")}
                     for t in range(0, int(elapsed), 5)
                     for w in [window(steady, start + t, start + t + 5)]],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2) + "\n")

    print()
    print(f"capacity {capacity:.0f} requests/s; steady: {len(steady)} requests in "
          f"{elapsed:.1f} s ({summary['achieved_rps']:.0f}/s, target {rate:.0f}), "
          f"errors {len(errors)}")
    print(f"{'from second':>12}{'req/s':>8}{'p50':>8}{'p99':>8}{'broker':>8}{'locust':>8}"
          f"{'machine':>9}  (cores of CPU)")
    for w in summary["timeline"]:
        print(f"{w['from_second']:12}{w['rps']:8.0f}{w['p50_ms']:8.1f}{w['p99_ms']:8.1f}"
              f"{w['broker_cores']:8.2f}{w['locust_cores']:8.2f}{w['machine_cores']:9.2f}")
    print(f"{'':28}{'first p50':>10}{'p99':>9}{'last p50':>10}{'p99':>9}{'ratio':>8}")

    def line(label: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        ratio = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("nan")
        print(f"{label:28}{a['p50_ms']:10.1f}{a['p99_ms']:9.1f}{b['p50_ms']:10.1f}"
              f"{b['p99_ms']:9.1f}{ratio:8.2f}")

    line("whole mix", first, last)
    for action in ACTIONS:
        line(action, first[action], last[action])
    print(f"p99(last {span:g} s) / p99(first {span:g} s): {summary['p99_ratio']:.2f} "
          f"(target <= 1.5)")
    if errors:
        print(f"ERRORS: {summary['error_samples']}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
