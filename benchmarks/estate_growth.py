"""Benchmark: how the cost of the broker's requests grows with the estate in PostgreSQL — 1,
10,000 and 100,000 IAM users (each with an access key) and as many roles.

One ``broker serve`` (one worker) on a fresh PostgreSQL database and a Redis prefix of its
own. The requests measured are always the same ones, by the same *probe* identities made
through the IAM API before the estate grows (a user with an access key and an attached policy
allowing iam:GetUser, and a role trusting that user), so that the only thing that changes
between levels is how many other records the store holds:

* GetCallerIdentity signed with the probe's long-term key, and with temporary credentials;
* AssumeRole of the probe role by the probe user;
* iam:GetUser of one of the estate's users by the probe user (a policy decision and a lookup);
* ListUsers and GetAccountAuthorizationDetails (Filter=User), 100 to a page, the root user:
  the first pages and the last pages of the whole listing (the last reached with the marker
  of the page before them), time per page;
* the SAML role chooser (``POST /saml`` with ``Accept: application/json``: the roles an
  assertion offers, nothing consumed) for an assertion naming 2 and 500 roles.

The estate is not made with 100,000 API calls: its records are built by the broker's own
record code (``User``, ``AccessKey`` and ``Role`` from broker/iam/entities.py, each access key's
secret sealed by the deployment's keyring as CreateAccessKey seals it, each row as
broker/store/sql.py writes it) and copied into the table with PostgreSQL's COPY, then the
table is analysed as autovacuum would after such a change. Levels grow one on the other
(1 → 10,000 → 100,000).

``iam.policy_cache_seconds`` is 0 by default here (``--policy-cache-seconds``), so that every
request reads what it needs from the store: the cache would hide exactly the cost this
benchmark looks for.

    .venv/bin/python benchmarks/estate_growth.py [--max 100000] [--requests 300]

Writes benchmarks/results/estate_growth.json and prints the curves: latency per operation at
each level and the ratio of the largest level to 1. Target: near 1 (at most 1.3 for point
lookups); per-page cost flat from the first pages to the last.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "estate_growth.json"
LEVELS = (1, 10_000, 100_000)
PAGE = 100
CHOOSER_ROLES = (2, 500)

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from caller_identity import free_port  # noqa: E402
from shared_stores import Deployment, deployment, group_cpu_seconds, serving  # noqa: E402

from tests.helpers import Creds, signed_request  # noqa: E402


def user_name(i: int) -> str:
    return f"estate-user-{i:06d}"


def role_name(i: int) -> str:
    return f"estate-role-{i:06d}"


# -- the estate, written in bulk ----------------------------------------------------------------


def grow(dep: Deployment, start: int, stop: int) -> float:
    """Add users ``start`` .. ``stop - 1`` (each with an access key) and as many roles, built
    by the broker's record code, in one COPY; seconds taken."""
    import psycopg

    from broker.aws import ids
    from broker.iam.entities import ACTIVE, AccessKey, Role, User
    from broker.iam.service import SECRET_PURPOSE
    from broker.keyring import Keyring
    from broker.settings import load
    from broker.store.sql import _row

    settings = load(None, environ={k: v for k, v in dep.env.items()
                                   if k.startswith("BROKER_")})
    keyring = Keyring.load(settings.keyring_path)
    account = dep.account_id
    now = datetime.now(UTC)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "sts:AssumeRole"}]})
    columns = ("kind", "account", "key", "parent_kind", "parent_key", "lookup", "data",
               "version")
    started = time.perf_counter()
    with psycopg.connect(dep.env["BROKER_STORE_DATABASE_URL"]) as conn:
        with conn.cursor() as cur, cur.copy(
                f"COPY broker_records ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(start, stop):
                user = User(account_id=account, name=user_name(i), path="/estate/",
                            user_id=ids.new_unique_id(ids.USER_ID_PREFIX), created=now)
                key_id = ids.new_access_key_id(account, temporary=False)
                sealed = keyring.seal(ids.new_secret_access_key().encode(),
                                      purpose=SECRET_PURPOSE, aad=key_id)
                key = AccessKey(account_id=account, access_key_id=key_id,
                                user_name=user.name, status=ACTIVE, created=now,
                                sealed_secret=base64.b64encode(sealed).decode("ascii"))
                role = Role(account_id=account, name=role_name(i), path="/estate/",
                            role_id=ids.new_unique_id(ids.ROLE_ID_PREFIX), created=now,
                            trust=trust)
                for record in (user.record(), key.record(), role.record()):
                    row = _row(record, version=1)
                    copy.write_row(tuple(row[c] for c in columns))
        conn.execute("ANALYZE broker_records")
    return time.perf_counter() - started


# -- the probes ---------------------------------------------------------------------------------


def client(dep: Deployment, url: str, service: str, creds: Creds | None = None) -> Any:
    import boto3

    creds = creds or Creds(dep.root["access_key_id"], dep.root["secret_access_key"])
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=creds.access_key_id,
                        aws_secret_access_key=creds.secret_access_key,
                        aws_session_token=creds.session_token)


def probes(dep: Deployment, url: str) -> dict[str, Any]:
    """The probe user (its key and temporary credentials) and the role it may assume."""
    iam = client(dep, url, "iam")
    iam.create_user(UserName="probe")
    policy = iam.create_policy(PolicyName="probe-reads", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iam:GetUser"], "Resource": "*"},
            {"Effect": "Allow", "Action": "sts:AssumeRole",
             "Resource": f"arn:aws:iam::{dep.account_id}:role/probe-role"}]}))
    iam.attach_user_policy(UserName="probe", PolicyArn=policy["Policy"]["Arn"])
    made = iam.create_access_key(UserName="probe")["AccessKey"]
    key = Creds(made["AccessKeyId"], made["SecretAccessKey"])
    iam.create_role(RoleName="probe-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": f"arn:aws:iam::{dep.account_id}:user/probe"}}]}))
    iam.attach_role_policy(RoleName="probe-role",
                           PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    c = client(dep, url, "sts", key).get_session_token()["Credentials"]
    temporary = Creds(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    return {"key": key, "temporary": temporary,
            "role_arn": f"arn:aws:iam::{dep.account_id}:role/probe-role"}


# -- timing -------------------------------------------------------------------------------------


SERVER = {"pgid": 0}  # the process group of the broker measured


def timed(http: httpx.Client, make: Callable[[], tuple[dict[str, str], bytes]],
          count: int, expect: str) -> dict[str, float]:
    """``count`` requests one after the other (after a warm-up): median and p99 in ms, and
    the server's CPU time per request in ms (less exposed than latency to the other tenants
    of a shared machine)."""
    headers, body = make()
    for _ in range(10):
        answer = http.post("/", headers=headers, content=body)
        if answer.status_code != 200 or expect not in answer.text:
            raise SystemExit(f"refused ({answer.status_code}): {answer.text[:500]}")
    latencies = []
    cpu = group_cpu_seconds(SERVER["pgid"])
    for n in range(count):
        if n and n % 500 == 0:  # a signature is good for five minutes: sign again now and then
            headers, body = make()
        started = time.perf_counter()
        answer = http.post("/", headers=headers, content=body)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"refused ({answer.status_code}): {answer.text[:500]}")
    cpu = group_cpu_seconds(SERVER["pgid"]) - cpu
    latencies.sort()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "server_cpu_ms": 1000 * cpu / count, "requests": count}


def signed(url: str, params: dict[str, str], creds: Creds,
           service: str) -> Callable[[], tuple[dict[str, str], bytes]]:
    def make() -> tuple[dict[str, str], bytes]:
        _, _, headers, body = signed_request(url, params, creds, service=service)
        return headers, body
    return make


def point_lookups(url: str, http: httpx.Client, probe: dict[str, Any], level: int,
                  count: int) -> dict[str, dict[str, float]]:
    sts = {"Version": "2011-06-15"}
    iam = {"Version": "2010-05-08"}
    target = user_name(level // 2) if level > 1 else "probe"
    return {
        "GetCallerIdentity (long-term key)": timed(http, signed(
            url, {"Action": "GetCallerIdentity", **sts}, probe["key"], "sts"), count,
            "<GetCallerIdentityResult>"),
        "GetCallerIdentity (temporary)": timed(http, signed(
            url, {"Action": "GetCallerIdentity", **sts}, probe["temporary"], "sts"), count,
            "<GetCallerIdentityResult>"),
        "AssumeRole": timed(http, signed(
            url, {"Action": "AssumeRole", "RoleArn": probe["role_arn"],
                  "RoleSessionName": "probe", **sts}, probe["key"], "sts"), count,
            "<AssumeRoleResult>"),
        "iam:GetUser (policy decision)": timed(http, signed(
            url, {"Action": "GetUser", "UserName": target, **iam}, probe["key"], "iam"),
            count, "<GetUserResult>"),
    }


def paging(url: str, http: httpx.Client, root: Creds, level: int,
           pages: int, repeat: int) -> dict[str, dict[str, float]]:
    """Time per page of ListUsers and GetAccountAuthorizationDetails: the first ``pages``
    pages and the last ``pages`` pages of the listing (median of ``repeat`` each, in ms)."""
    from broker.iam.records import mark

    out: dict[str, dict[str, float]] = {}
    # Users sort by name: the estate's ("estate-user-...") and then "probe".
    last_start = max(0, level - 1 - pages * PAGE)
    for action, expect in (("ListUsers", "<ListUsersResult>"),
                           ("GetAccountAuthorizationDetails",
                            "<GetAccountAuthorizationDetailsResult>")):
        extra = {"Filter.member.1": "User"} if action != "ListUsers" else {}
        for where, first_marker in (("first", None),
                                    ("last", mark(user_name(last_start - 1))
                                     if last_start > 0 else None)):
            costs = []
            marker = first_marker
            for _ in range(pages):
                params = {"Action": action, "Version": "2010-05-08", "MaxItems": str(PAGE),
                          **extra}
                if marker is not None:
                    params["Marker"] = marker
                headers, body = signed(url, params, root, "iam")()
                took = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    answer = http.post("/", headers=headers, content=body)
                    took.append(time.perf_counter() - started)
                    if answer.status_code != 200 or expect not in answer.text:
                        raise SystemExit(f"{action} refused: {answer.text[:500]}")
                costs.append(1000 * min(took))  # the quietest: noise only adds
                found = answer.text.split("<Marker>", 1)
                if len(found) < 2:
                    break
                marker = found[1].split("</Marker>", 1)[0]
            out[f"{action}, {where} pages"] = {"ms_per_page": statistics.median(costs),
                                               "pages": len(costs)}
    return out


# -- the role chooser ---------------------------------------------------------------------------


def chooser(dep: Deployment, url: str, count: int,
            most: int = CHOOSER_ROLES[-1]) -> dict[str, dict[str, float]]:
    """``POST /saml`` (JSON: the chooser's roles, nothing consumed) for an assertion naming 2
    and 500 roles of the account; median and p99 in ms."""
    from tests.saml_idp import TestIdp, encode
    from tests.saml_world import trust_policy

    iam = client(dep, url, "iam")
    idp = TestIdp("https://idp.example.test/metadata")
    provider = iam.create_saml_provider(Name="corp", SAMLMetadataDocument=idp.metadata())
    provider_arn = provider["SAMLProviderArn"]
    trust = trust_policy(provider_arn, f"{url}/saml")
    # Short names: 500 roles must fit in a SAML response under AWS's 100,000 characters.
    arns = [iam.create_role(RoleName=f"c{i:03d}", AssumeRolePolicyDocument=trust)
            ["Role"]["Arn"] for i in range(most)]
    out = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for asked in (CHOOSER_ROLES[0], most):
            # As many of the roles as fit in one SAML response: AWS (and the broker) take
            # at most 100,000 characters of base64, the broker 75,000 bytes of XML — in the
            # response as sent and in the assertion's canonical form, which repeats the
            # namespace declarations of every AttributeValue and so is the larger.
            headers = {"Content-Type": "application/x-www-form-urlencoded",
                       "Accept": "application/json"}
            roles = asked
            while True:
                xml = idp.response(acs_url=f"{url}/saml", audience=f"{url}/saml/metadata",
                                   roles=[(a, provider_arn) for a in arns[:roles]],
                                   session_name="person")
                body = urlencode({"SAMLResponse": encode(xml)}).encode()
                if len(encode(xml)) <= 100_000:
                    answer = http.post("/saml", headers=headers, content=body)
                    if "larger than" not in answer.text:
                        break
                roles -= 10
            latencies = []
            for n in range(count + 5):
                started = time.perf_counter()
                answer = http.post("/saml", headers=headers, content=body)
                if n >= 5:
                    latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise SystemExit(f"the role chooser refused: {answer.text[:500]}")
            offered = json.dumps(answer.json()).count(":role/c")
            if offered < roles:
                raise SystemExit(f"the chooser offered {offered} roles of {roles}")
            latencies.sort()
            out["fewest roles" if asked == CHOOSER_ROLES[0] else "most roles"] = {
                "roles": roles,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[min(len(latencies) - 1,
                                               int(len(latencies) * 0.99))],
                "requests": count}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=LEVELS[-1],
                        help="the largest estate (default 100000; 10000 for a quick run)")
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per operation and level")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the point lookups at each level (the quietest counts)")
    parser.add_argument("--pages", type=int, default=3, help="first and last pages timed")
    parser.add_argument("--page-repeat", type=int, default=5)
    parser.add_argument("--policy-cache-seconds", type=int, default=0)
    parser.add_argument("--chooser-roles", type=int, default=CHOOSER_ROLES[-1],
                        help="roles made for the role chooser (as many as fit are offered)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"where the results go (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    levels = sorted({n for n in LEVELS if n <= args.max} | {args.max})

    results: dict[str, Any] = {}
    with deployment(BROKER_IAM_POLICY_CACHE_SECONDS=str(args.policy_cache_seconds)) as dep:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with serving(dep, port) as server:
            SERVER["pgid"] = server.pid
            probe = probes(dep, url)
            root = Creds(dep.root["access_key_id"], dep.root["secret_access_key"])
            have = 0
            with httpx.Client(base_url=url, timeout=120) as http:
                for level in levels:
                    grew = grow(dep, have + 1, level) if level > have + 1 else 0.0
                    have = max(have, level - 1)
                    print(f"estate of {level:,} users, keys and roles "
                          f"(grown in {grew:.1f} s)", flush=True)
                    row: dict[str, Any] = {"grow_seconds": grew}
                    # Rounds, and each operation's quietest: the machine is shared, and its
                    # other tenants' noise only ever adds.
                    rounds = [point_lookups(url, http, probe, level, args.requests)
                              for _ in range(args.rounds)]
                    for op in rounds[0]:
                        best = min((r[op] for r in rounds), key=lambda m: m["p50_ms"])
                        row[op] = {**best, "rounds_p50_ms": [r[op]["p50_ms"] for r in rounds],
                                   "server_cpu_ms": min(r[op]["server_cpu_ms"]
                                                        for r in rounds)}
                    row.update(paging(url, http, root, level, args.pages, args.page_repeat))
                    for name, m in row.items():
                        if isinstance(m, dict):
                            figure = (f"p50 {m['p50_ms']:7.2f} ms  p99 {m['p99_ms']:7.2f} ms"
                                      f"  cpu {m['server_cpu_ms']:6.2f} ms"
                                      if "p50_ms" in m else
                                      f"{m['ms_per_page']:8.2f} ms per page")
                            print(f"  {name:45}{figure}", flush=True)
                    results[str(level)] = row
            chosen = chooser(dep, url, max(5, args.requests // 10), args.chooser_roles)
            for m in chosen.values():
                print(f"role chooser, {m['roles']:3} roles:  p50 {m['p50_ms']:7.2f} ms  "
                      f"p99 {m['p99_ms']:7.2f} ms", flush=True)

    small, large = results[str(levels[0])], results[str(levels[-1])]
    ratios = {}
    for name, m in large.items():
        if isinstance(m, dict) and "p50_ms" in m:
            ratios[name] = m["p50_ms"] / small[name]["p50_ms"]
            if small[name]["server_cpu_ms"]:  # /proc counts in ticks: a short run may see none
                ratios[f"{name}, server CPU"] = (m["server_cpu_ms"]
                                                 / small[name]["server_cpu_ms"])
    for action in ("ListUsers", "GetAccountAuthorizationDetails"):
        ratios[f"{action}, last / first pages at {levels[-1]:,}"] = (
            large[f"{action}, last pages"]["ms_per_page"]
            / large[f"{action}, first pages"]["ms_per_page"])
        if len(levels) > 2:  # full pages at both: the smallest estate has one user
            ratios[f"{action}, first pages at {levels[-1]:,} / at {levels[1]:,}"] = (
                large[f"{action}, first pages"]["ms_per_page"]
                / results[str(levels[1])][f"{action}, first pages"]["ms_per_page"])
    most, fewest = chosen["most roles"], chosen["fewest roles"]
    ratios[f"role chooser, {most['roles']} / {fewest['roles']} roles"] = (
        most["p50_ms"] / fewest["p50_ms"])
    summary = {
        "benchmark": "request cost against the size of the IAM estate in PostgreSQL",
        "command": ".venv/bin/python benchmarks/estate_growth.py "
                   + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "levels": levels,
        "policy_cache_seconds": args.policy_cache_seconds,
        "by_level": results,
        "role_chooser": chosen,
        f"ratio_{levels[-1]}_to_{levels[0]}": ratios,
        "target": "point lookups <= 1.3; per-page cost flat",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(f"ratios, {levels[-1]:,} against {levels[0]:,} (p50):")
    for name, ratio in ratios.items():
        print(f"  {name:60}{ratio:6.2f}")


if __name__ == "__main__":
    main()
