"""Benchmark: the portal's role list for a person whose role comes through ten levels of nested
groups, beside a person with one direct assignment, in one run, in an estate of 1,000 groups
and 10,000 users.

One broker (one uvicorn worker, the file audit sink) and the bare Starlette baseline of
``caller_identity.py``. Set up through the broker's own interfaces where they exist: an
instance and a permission set (sso-admin), the direct person with an assignment to them
(identitystore, sso-admin). The estate is written through the broker's directory use cases
(``broker.identitycenter.directory``, the code SCIM writes through) in this process, on the
same data directory, before any person signs in: 1,000 groups — a chain of ten, top to
bottom, and 99 more groups nested under each level, so the top group's subtree is all of them
— and 10,000 users, ten in each group. The deep person is a member of the bottom group only;
the permission set is assigned to the top group. Both people sign in to the access portal and
approve a device authorization, as in ``role_credentials.py``. Then rounds alternate the
baseline, ListAccountRoles for the direct person and ListAccountRoles for the deep person
(``GET /assignment/roles`` with the bearer token: the token, the user, their effective groups,
their assignments and the permission sets are read on every request, through the per-process
read cache that every change anywhere invalidates). The figure is the median over rounds of the
deep person's requests per second divided by the direct person's.

    .venv/bin/python benchmarks/nested_groups.py [--seconds 5] [--rounds 3] [--connections 16]

Writes benchmarks/results/nested_groups.json and prints a table. Target: at least 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "nested_groups.json"
TARGET = 0.5
DEPTH, GROUPS, USERS = 10, 1_000, 10_000

sys.path.insert(0, str(HERE))
from caller_identity import (  # noqa: E402
    measure,
    report,
    start_servers,
    stop_servers,
    summary_head,
)
from role_credentials import person_signs_in  # noqa: E402


def client(url: str, root: dict[str, str], service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=root["access_key_id"],
                        aws_secret_access_key=root["secret_access_key"])


def person(store_id: str, name: str) -> dict[str, Any]:
    return {"IdentityStoreId": store_id, "UserName": name, "DisplayName": name,
            "Name": {"GivenName": name, "FamilyName": "Person"}}


def assign(sso: Any, instance: str, account: str, ps: str, kind: str, principal: str) -> None:
    status = sso.create_account_assignment(
        InstanceArn=instance, TargetId=account, TargetType="AWS_ACCOUNT", PermissionSetArn=ps,
        PrincipalType=kind, PrincipalId=principal)["AccountAssignmentCreationStatus"]
    for _ in range(400):
        if status["Status"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
        status = sso.describe_account_assignment_creation_status(
            InstanceArn=instance, AccountAssignmentCreationRequestId=status["RequestId"]
        )["AccountAssignmentCreationStatus"]
    if status["Status"] != "SUCCEEDED":
        raise SystemExit(f"the assignment did not provision: {status}")


async def populate(data_dir: str, store_id: str, deep_user: str) -> tuple[str, int]:
    """The estate, written through the directory: (the top group's id, nesting depth of the
    deep user's group)."""
    sys.path.insert(0, str(ROOT))
    from broker.runtime import open_runtime
    from broker.settings import load

    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": data_dir})
    runtime = await open_runtime(settings)
    try:
        directory = runtime.identity_center.directory
        instance = await runtime.identity_center.instances.by_store(store_id)
        assert instance is not None
        sem = asyncio.Semaphore(16)

        async def group(name: str) -> str:
            async with sem:
                made = await directory.create_group(instance, {"DisplayName": name}, "bench")
                return made.group_id

        async def nest(parent: str, child: str) -> None:
            async with sem:
                await directory.add_group_member(instance, parent, child, "bench")

        chain = [await group(f"level-{i}") for i in range(DEPTH)]
        for parent, child in itertools.pairwise(chain):
            await nest(parent, child)
        per_level = (GROUPS - DEPTH) // DEPTH
        others = await asyncio.gather(*(group(f"team-{i}") for i in range(per_level * DEPTH)))
        await asyncio.gather(*(nest(chain[i // per_level], g) for i, g in enumerate(others)))
        groups = chain + list(others)

        async def user(i: int) -> None:
            async with sem:
                made = await directory.create_user(instance, {
                    "UserName": f"user-{i:05d}", "DisplayName": f"User {i}",
                    "Name": {"GivenName": "User", "FamilyName": str(i)}}, "bench")
                await directory.create_membership(instance, groups[i % len(groups)],
                                                  made.user_id, "bench")

        await asyncio.gather(*(user(i) for i in range(USERS)))
        await directory.create_membership(instance, chain[-1], deep_user, "bench")
        effective = await directory.group_ids_of(instance.account_id, store_id, deep_user)
        return chain[0], len(effective)
    finally:
        await runtime.close()


def roles_request(port: int, token: str, account: str) -> bytes:
    query = urlencode({"account_id": account})
    return (f"GET /assignment/roles?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"x-amz-sso_bearer_token: {token}\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    servers, broker_port, baseline_port, created = start_servers()
    root = created["root"]
    rounds = []
    try:
        url = f"http://127.0.0.1:{broker_port}"
        account = client(url, root, "sts").get_caller_identity()["Account"]
        sso, ids = client(url, root, "sso-admin"), client(url, root, "identitystore")
        instance = sso.create_instance(Name="bench")["InstanceArn"]
        store_id = sso.describe_instance(InstanceArn=instance)["IdentityStoreId"]
        ps = sso.create_permission_set(
            InstanceArn=instance, Name="Engineers", SessionDuration="PT8H"
        )["PermissionSet"]["PermissionSetArn"]
        sso.put_inline_policy_to_permission_set(
            InstanceArn=instance, PermissionSetArn=ps, InlinePolicy=json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
        direct = ids.create_user(**person(store_id, "direct-person"))["UserId"]
        deep = ids.create_user(**person(store_id, "deep-person"))["UserId"]
        assign(sso, instance, account, ps, "USER", direct)
        started = time.monotonic()
        top, depth = asyncio.run(populate(created["data_dir"], store_id, deep))
        print(f"estate: {GROUPS} groups, {USERS} users, the deep person in {depth} groups "
              f"({time.monotonic() - started:.0f} s to write)", flush=True)
        assign(sso, instance, account, ps, "GROUP", top)
        requests = {}
        for name in ("direct-person", "deep-person"):
            token = person_signs_in(url, created["data_dir"], store_id, name)
            listed = httpx.get(f"{url}/assignment/roles", params={"account_id": account},
                               headers={"x-amz-sso_bearer_token": token})
            if listed.status_code != 200 or [r["roleName"] for r in listed.json()[
                    "roleList"]] != ["Engineers"]:
                raise SystemExit(f"ListAccountRoles for {name}: {listed.text}")
            requests[name] = roles_request(broker_port, token, account)
        baseline_request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{baseline_port}\r\n\r\n"
                            ).encode()
        for i in range(args.rounds):
            base = measure(baseline_port, baseline_request, args.seconds, args.connections,
                           servers[1].pid)
            one = measure(broker_port, requests["direct-person"], args.seconds,
                          args.connections, servers[0].pid)
            nested = measure(broker_port, requests["deep-person"], args.seconds,
                             args.connections, servers[0].pid)
            rounds.append({"baseline": base, "direct": one, "nested": nested,
                           "ratio": nested["rps"] / one["rps"],
                           "ratio_to_baseline": nested["rps"] / base["rps"]})
            print(f"round {i + 1}: baseline {base['rps']:7.0f} rps   direct {one['rps']:7.0f} "
                  f"rps   nested {nested['rps']:7.0f} rps   ratio {rounds[-1]['ratio']:.2f}",
                  flush=True)
    finally:
        stop_servers(servers)

    head = summary_head("ListAccountRoles: through 10 nested groups vs one direct assignment "
                        "(same broker, same run)", "nested_groups.py", args, rounds)
    parts = (("baseline", "baseline"), ("direct assignment", "direct"),
             ("10 nested groups", "nested"))
    report(RESULTS, head, rounds, parts, target=TARGET,
           figure="nested / direct ListAccountRoles")


if __name__ == "__main__":
    main()
