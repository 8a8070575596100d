"""Benchmark: AssumeRole requests per second beside GetCallerIdentity, in the same run.

One broker (one uvicorn worker, the file audit sink) and the bare Starlette baseline of
``caller_identity.py``. An IAM user whose identity policy allows ``sts:AssumeRole`` on a role
that trusts its account (so both the trust policy and the identity policy are evaluated) signs
two requests with its long-term keys: ``GetCallerIdentity`` and ``AssumeRole`` (with a session
tag, so ``sts:TagSession`` is evaluated as well). Rounds alternate baseline, GetCallerIdentity,
AssumeRole so that the machine's noise falls on all three alike. The figures are the medians
over rounds of AssumeRole requests per second divided by GetCallerIdentity requests per second
(what minting a session costs over authenticating a request) and by the baseline.

    .venv/bin/python benchmarks/assume_role.py [--seconds 5] [--rounds 3] [--connections 16]

Writes benchmarks/results/assume_role.json and prints a table. Target: AssumeRole at least a
fifth of GetCallerIdentity's rate (it authenticates the same way, then makes two policy
decisions, mints a key pair, seals a session token and writes a flushed audit line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "assume_role.json"
TARGET = 0.2

sys.path.insert(0, str(HERE))
from caller_identity import (  # noqa: E402
    measure,
    raw_request,
    report,
    start_servers,
    stop_servers,
    summary_head,
)


def setup(broker_url: str, account: str, root: dict[str, str]) -> tuple[str, str, str]:
    """A role trusting its account, a user allowed to assume it: (key id, secret, role ARN)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=broker_url, region_name="us-east-1",
                       aws_access_key_id=root["access_key_id"],
                       aws_secret_access_key=root["secret_access_key"])
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:RequestTag/project": "bench"}}}]}
    role = iam.create_role(RoleName="deploy", AssumeRolePolicyDocument=json.dumps(trust),
                           MaxSessionDuration=7200)["Role"]
    iam.attach_role_policy(RoleName="deploy",
                           PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    iam.create_user(UserName="ci", Tags=[{"Key": "team", "Value": "platform"}])
    iam.put_user_policy(UserName="ci", PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"],
             "Resource": role["Arn"],
             "Condition": {"StringEquals": {"aws:PrincipalTag/team": "platform"}}},
            {"Effect": "Deny", "Action": "sts:AssumeRole", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "true"},
                           "StringNotLike": {"aws:UserAgent": "*"}}}]}))
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"], role["Arn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.helpers import Creds, signed_request

    servers, broker_port, baseline_port, created = start_servers()
    account, root = created["account_id"], created["root"]
    rounds = []
    try:
        broker_url = f"http://127.0.0.1:{broker_port}"
        key_id, secret, role_arn = setup(broker_url, account, root)
        user = Creds(key_id, secret, None)
        identity = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
        assume = {"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": role_arn,
                  "RoleSessionName": "bench", "DurationSeconds": "3600",
                  "Tags.member.1.Key": "project", "Tags.member.1.Value": "bench"}

        for i in range(args.rounds):
            # Signed afresh each round: a signature is good for five minutes.
            _, _, id_headers, id_body = signed_request(broker_url, identity, user)
            _, _, ar_headers, ar_body = signed_request(broker_url, assume, user)
            for headers, body, marker in ((id_headers, id_body, "<GetCallerIdentityResponse"),
                                          (ar_headers, ar_body, "<AssumeRoleResult>")):
                check = httpx.post(broker_url + "/", headers=headers, content=body)
                if check.status_code != 200 or marker not in check.text:
                    raise SystemExit(f"the broker refused the benchmark request: {check.text}")
            base = measure(baseline_port, raw_request(baseline_port, id_headers, id_body),
                           args.seconds, args.connections, servers[1].pid)
            ident = measure(broker_port, raw_request(broker_port, id_headers, id_body),
                            args.seconds, args.connections, servers[0].pid)
            role = measure(broker_port, raw_request(broker_port, ar_headers, ar_body),
                           args.seconds, args.connections, servers[0].pid)
            rounds.append({"baseline": base, "get_caller_identity": ident, "assume_role": role,
                           "ratio": role["rps"] / ident["rps"],
                           "ratio_to_baseline": role["rps"] / base["rps"]})
            print(f"round {i + 1}: baseline {base['rps']:7.0f} rps   GetCallerIdentity "
                  f"{ident['rps']:7.0f} rps   AssumeRole {role['rps']:7.0f} rps "
                  f"({role['server_cpu_us_per_request']:.0f} us cpu/req)   "
                  f"ratio {rounds[-1]['ratio']:.2f}", flush=True)
    finally:
        stop_servers(servers)

    head = summary_head("AssumeRole vs GetCallerIdentity (same user, same broker, same run)",
                        "assume_role.py", args, rounds)
    parts = (("baseline", "baseline"), ("GetCallerIdentity", "get_caller_identity"),
             ("AssumeRole", "assume_role"))
    summary = report(RESULTS, head, rounds, parts, target=TARGET,
                     figure="AssumeRole / GetCallerIdentity")
    print(f"AssumeRole / baseline: {summary['ratio_to_baseline']:.2f}")


if __name__ == "__main__":
    main()
