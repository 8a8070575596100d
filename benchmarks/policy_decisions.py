"""Benchmark: policy decisions per second for a realistic role, in one process.

The role has three policies and ten statements, most with conditions (IP ranges, tags, dates,
MFA, string patterns and policy variables), and a permissions boundary; requests cover allows,
explicit denies and implicit denies. The baseline, measured in the same process, is the same
engine deciding for a one-statement ``Allow *`` policy: the ratio says what the realistic role
costs over the engine's floor.

    .venv/bin/python benchmarks/policy_decisions.py [--seconds 3]

Writes benchmarks/results/policy_decisions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from broker.policy.context import Context
from broker.policy.document import PolicyKind, RequestPrincipal, compile_document
from broker.policy.evaluate import PolicySet, Request, evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "policy_decisions.json"
ACCOUNT = "111122223333"


def statement(sid: str, effect: str, action: object, resource: object,
              condition: dict[str, object] | None = None) -> dict[str, object]:
    out: dict[str, object] = {"Sid": sid, "Effect": effect, "Action": action,
                              "Resource": resource}
    if condition:
        out["Condition"] = condition
    return out


def realistic() -> PolicySet:
    docs = [
        [statement("ReadOwnPrefix", "Allow", ["s3:GetObject", "s3:ListBucket"],
                   "arn:aws:s3:::data/${aws:PrincipalTag/team}/*",
                   {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}}),
         statement("WriteDuringHours", "Allow", "s3:PutObject", "arn:aws:s3:::data/*",
                   {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
                    "StringEquals": {"aws:PrincipalTag/team": ["blue", "green"]}}),
         statement("NoDeletes", "Deny", "s3:Delete*", "*"),
         statement("MfaForIam", "Deny", "iam:*", "*",
                   {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}})],
        [statement("Dynamo", "Allow", "dynamodb:*", f"arn:aws:dynamodb:*:{ACCOUNT}:table/app-*",
                   {"ForAllValues:StringLike": {"aws:TagKeys": ["app-*", "team"]}}),
         statement("Queue", "Allow", ["sqs:SendMessage", "sqs:ReceiveMessage"],
                   f"arn:aws:sqs:*:{ACCOUNT}:jobs-*",
                   {"StringLike": {"aws:userid": "AROA*:*"}}),
         statement("Logs", "Allow", "logs:*", "*",
                   {"NumericLessThanEquals": {"aws:MultiFactorAuthAge": "3600"}})],
        [statement("Kms", "Allow", ["kms:Decrypt", "kms:Encrypt"], "*",
                   {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/app-*"}}),
         statement("NotProd", "Deny", "*", "arn:aws:s3:::prod-*",
                   {"StringNotEquals": {"aws:PrincipalTag/env": "prod"}}),
         statement("Describe", "Allow", ["ec2:Describe*", "cloudwatch:Get*"], "*")],
    ]
    identity = tuple(compile_document({"Version": "2012-10-17", "Statement": d},
                                      PolicyKind.IDENTITY, name=f"p{i}")
                     for i, d in enumerate(docs))
    boundary = compile_document({"Version": "2012-10-17", "Statement": [
        statement("Bound", "Allow", ["s3:*", "dynamodb:*", "sqs:*", "logs:*", "kms:*",
                                     "ec2:Describe*", "cloudwatch:*"], "*")]},
        PolicyKind.BOUNDARY, name="boundary")
    return PolicySet(identity=identity, boundary=boundary)


def floor() -> PolicySet:
    return PolicySet(identity=(compile_document(
        {"Version": "2012-10-17", "Statement": [statement("All", "Allow", "*", "*")]},
        PolicyKind.IDENTITY, name="all"),))


def requests() -> list[Request]:
    who = RequestPrincipal(f"arn:aws:sts::{ACCOUNT}:assumed-role/app-api/i-1", ACCOUNT,
                           "AssumedRole", role_arn=f"arn:aws:iam::{ACCOUNT}:role/app-api")
    context = Context({
        "aws:SourceIp": "10.2.3.4", "aws:PrincipalTag/team": "blue",
        "aws:PrincipalTag/env": "dev", "aws:CurrentTime": "2026-06-01T10:00:00Z",
        "aws:MultiFactorAuthPresent": "true", "aws:MultiFactorAuthAge": "120",
        "aws:userid": "AROAEXAMPLE:i-1", "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/app-api",
        "aws:TagKeys": ["app-owner", "team"],
    })
    return [Request(who, action, resource, context) for action, resource in (
        ("s3:GetObject", "arn:aws:s3:::data/blue/report.csv"),  # allow (variable, IP)
        ("s3:GetObject", "arn:aws:s3:::data/red/report.csv"),  # implicit deny
        ("s3:DeleteObject", "arn:aws:s3:::data/blue/x"),  # explicit deny
        ("dynamodb:PutItem", f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/app-users"),
        ("sqs:SendMessage", f"arn:aws:sqs:eu-west-1:{ACCOUNT}:jobs-high"),
        ("kms:Decrypt", "arn:aws:kms:eu-west-1:111122223333:key/abc"),
        ("s3:GetObject", "arn:aws:s3:::prod-secrets/x"),  # explicit deny (NotProd)
        ("iam:ListUsers", "*"),  # implicit deny (boundary)
    )]


def rate(policies: PolicySet, batch: list[Request], seconds: float) -> float:
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for request in batch:
            evaluate(policies, request)
        done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = requests()
    real, base = realistic(), floor()
    outcomes = [evaluate(real, r).outcome.value for r in batch]
    assert outcomes == ["allow", "implicit-deny", "explicit-deny", "allow", "allow", "allow",
                        "explicit-deny", "implicit-deny"], outcomes
    rounds = []
    for i in range(args.rounds):
        floor_rate = rate(base, batch, args.seconds)
        real_rate = rate(real, batch, args.seconds)
        rounds.append({"floor": floor_rate, "realistic": real_rate,
                       "ratio": real_rate / floor_rate})
        print(f"round {i + 1}: floor {floor_rate:9.0f}/s  realistic role {real_rate:9.0f}/s  "
              f"ratio {real_rate / floor_rate:.2f}", flush=True)
    best = sorted(rounds, key=lambda r: r["realistic"])[len(rounds) // 2]
    summary = {
        "benchmark": "policy decisions per second: a realistic role vs a one-statement policy",
        "command": ".venv/bin/python benchmarks/policy_decisions.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "decisions_per_second": best["realistic"],
        "floor_decisions_per_second": best["floor"],
        "ratio": best["ratio"],
        "per_round": rounds,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nrealistic role: {best['realistic']:.0f} decisions/s "
          f"({1e6 / best['realistic']:.1f} us each); one-statement floor: "
          f"{best['floor']:.0f}/s; ratio {best['ratio']:.2f}")


if __name__ == "__main__":
    main()
