"""Benchmark: policy decisions per second for a realistic role, in one process.

The role has three policies and ten statements, most with conditions (IP ranges, tags, dates,
MFA, string patterns and policy variables), and a permissions boundary; requests cover allows,
explicit denies and implicit denies. The baseline, measured in the same process, is the same
engine deciding for a one-statement ``Allow *`` policy: the ratio says what the realistic role
costs over the engine's floor.

Beside them, the same role in an account three OUs deep in an organization: five levels of
service control policies (the root, each OU, the account), ``FullAWSAccess`` at every level and
each OU's guardrail of its own (a Region guardrail, a security baseline, a service allow-list).
Its ratio to the realistic role says what the SCP levels cost (target: at least 0.6).

    .venv/bin/python benchmarks/policy_decisions.py [--seconds 3] [--rounds 3]

Writes benchmarks/results/policy_decisions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

from broker.policy.context import Context
from broker.policy.document import Policy, PolicyKind, RequestPrincipal, compile_document
from broker.policy.evaluate import Decision, Outcome, PolicySet, Request, evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "policy_decisions.json"
ACCOUNT = "111122223333"
SCP_TARGET = 0.6
FULL_AWS_ACCESS = {"Version": "2012-10-17",
                   "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


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


def guardrails() -> dict[str, list[dict[str, object]]]:
    """Each OU's own SCP, after AWS's example SCPs, from the root down."""
    admins = {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/OrgAdmin"}}
    return {
        "ou-workloads/region-guardrail": [
            {"Sid": "DenyOutsideEu", "Effect": "Deny", "Resource": "*",
             "NotAction": ["iam:*", "organizations:*", "sts:*", "route53:*", "cloudfront:*",
                           "support:*", "budgets:*", "health:*", "waf:*"],
             "Condition": {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1",
                                                                       "eu-central-1"]},
                           **admins}},
            statement("SmallInstances", "Deny", "ec2:RunInstances",
                      "arn:aws:ec2:*:*:instance/*",
                      {"StringNotLike": {"ec2:InstanceType": ["t3.*", "m6i.*"]}})],
        "ou-security/baseline": [
            statement("NoLeaving", "Deny", "organizations:LeaveOrganization", "*"),
            statement("KeepSecurityServices", "Deny",
                      ["cloudtrail:StopLogging", "cloudtrail:DeleteTrail",
                       "cloudtrail:UpdateTrail", "guardduty:DeleteDetector",
                       "guardduty:DisassociateFromMasterAccount", "guardduty:UpdateDetector",
                       "config:DeleteConfigurationRecorder", "config:StopConfigurationRecorder",
                       "securityhub:DisableSecurityHub", "access-analyzer:DeleteAnalyzer"], "*",
                      {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/SecurityAdmin"}}),
            statement("KeepAccessRole", "Deny",
                      ["iam:AttachRolePolicy", "iam:DeleteRole", "iam:DetachRolePolicy",
                       "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy"],
                      "arn:aws:iam::*:role/OrganizationAccountAccessRole", admins),
            statement("NoRootUser", "Deny", "*", "*",
                      {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:root"}})],
        "ou-apps/service-allow-list": [
            {"Sid": "OnlyAppServices", "Effect": "Deny", "Resource": "*",
             "NotAction": ["s3:*", "dynamodb:*", "sqs:*", "logs:*", "kms:*", "ec2:Describe*",
                           "cloudwatch:*", "sts:*"],
             "Condition": {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/platform-*"}}},
            statement("TaggedTables", "Deny", "dynamodb:CreateTable", "*",
                      {"Null": {"aws:RequestTag/team": "true"}})],
    }


def scp_levels(*, full_access: bool = True) -> tuple[tuple[Policy, ...], ...]:
    """The root, three OUs with a guardrail each, the account: FullAWSAccess at every level
    (``full_access=False``: not on the OUs, whose guardrails then allow nothing)."""
    def full(level: str) -> Policy:
        return compile_document(FULL_AWS_ACCESS, PolicyKind.SCP, name=f"{level}/FullAWSAccess")

    ous = tuple(
        ((full(name.split("/")[0]),) if full_access else ())
        + (compile_document({"Version": "2012-10-17", "Statement": body}, PolicyKind.SCP,
                            name=name),)
        for name, body in guardrails().items())
    return ((full("r-root"),), *ous, (full(ACCOUNT),))


def scp_role(*, full_access: bool = True) -> PolicySet:
    return replace(realistic(), scp=scp_levels(full_access=full_access))


def floor() -> PolicySet:
    return PolicySet(identity=(compile_document(
        {"Version": "2012-10-17", "Statement": [statement("All", "Allow", "*", "*")]},
        PolicyKind.IDENTITY, name="all"),))


def request(action: str, resource: str, region: str = "eu-west-1") -> Request:
    who = RequestPrincipal(f"arn:aws:sts::{ACCOUNT}:assumed-role/app-api/i-1", ACCOUNT,
                           "AssumedRole", role_arn=f"arn:aws:iam::{ACCOUNT}:role/app-api")
    context = Context({
        "aws:SourceIp": "10.2.3.4", "aws:PrincipalTag/team": "blue",
        "aws:PrincipalTag/env": "dev", "aws:CurrentTime": "2026-06-01T10:00:00Z",
        "aws:MultiFactorAuthPresent": "true", "aws:MultiFactorAuthAge": "120",
        "aws:userid": "AROAEXAMPLE:i-1", "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/app-api",
        "aws:TagKeys": ["app-owner", "team"], "aws:RequestedRegion": region,
    })
    return Request(who, action, resource, context)


def requests() -> list[Request]:
    """The mix all three policy sets decide; the comments give the realistic role's outcome,
    and the SCP levels' where they differ."""
    return [
        request("s3:GetObject", "arn:aws:s3:::data/blue/report.csv"),  # allow (variable, IP)
        request("s3:GetObject", "arn:aws:s3:::data/red/report.csv"),  # implicit deny
        request("s3:DeleteObject", "arn:aws:s3:::data/blue/x"),  # explicit deny
        request("dynamodb:PutItem", f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/app-users"),
        request("sqs:SendMessage", f"arn:aws:sqs:eu-west-1:{ACCOUNT}:jobs-high"),
        request("kms:Decrypt", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/abc"),
        request("s3:GetObject", "arn:aws:s3:::prod-secrets/x"),  # explicit deny (NotProd)
        # implicit deny (boundary); SCPs: explicit deny (OnlyAppServices). IAM is global: its
        # requests are in us-east-1.
        request("iam:ListUsers", "*", "us-east-1"),
    ]


def check(real: PolicySet, scp: PolicySet, batch: list[Request]) -> None:
    """The decisions are the right ones, so that a broken path cannot pass for a fast one."""
    def denied_by_scp(decision: Decision, *sids: str) -> bool:
        return (decision.outcome is Outcome.EXPLICIT_DENY
                and decision.decided_by is PolicyKind.SCP
                and [m.sid for m in decision.statements if m.kind is PolicyKind.SCP] == [*sids])

    outcomes = [evaluate(real, r).outcome.value for r in batch]
    assert outcomes == ["allow", "implicit-deny", "explicit-deny", "allow", "allow", "allow",
                        "explicit-deny", "implicit-deny"], outcomes
    decisions = [evaluate(scp, r) for r in batch]
    outcomes = [d.outcome.value for d in decisions]
    assert outcomes == ["allow", "implicit-deny", "explicit-deny", "allow", "allow", "allow",
                        "explicit-deny", "explicit-deny"], outcomes
    assert [d.decided_by for d in decisions] == [
        None, PolicyKind.IDENTITY, PolicyKind.IDENTITY, None, None, None, PolicyKind.IDENTITY,
        PolicyKind.SCP], decisions
    assert denied_by_scp(decisions[7], "OnlyAppServices"), decisions[7]
    assert all(not d.missing for d in decisions), decisions  # every key the SCPs read is there
    # Outside the mix: each guardrail denies on its own (the Region one what the role alone
    # allows), and an OU level without an Allow of its own lets nothing through.
    abroad = request("s3:GetObject", "arn:aws:s3:::data/blue/report.csv", "us-east-1")
    assert evaluate(real, abroad).allowed
    assert denied_by_scp(evaluate(scp, abroad), "DenyOutsideEu")
    for action, sid in (("cloudtrail:StopLogging", "KeepSecurityServices"),
                        ("organizations:LeaveOrganization", "NoLeaving")):
        # Outside the allow-list too: every Deny that applies is part of the decision.
        assert denied_by_scp(evaluate(scp, request(action, "*")), sid, "OnlyAppServices"), action
    unallowed = evaluate(scp_role(full_access=False), batch[0])
    assert (unallowed.outcome, unallowed.decided_by) == (Outcome.IMPLICIT_DENY,
                                                         PolicyKind.SCP), unallowed


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
    real, base, scp = realistic(), floor(), scp_role()
    check(real, scp, batch)
    rounds = []
    for i in range(args.rounds):
        floor_rate = rate(base, batch, args.seconds)
        real_rate = rate(real, batch, args.seconds)
        scp_rate = rate(scp, batch, args.seconds)
        rounds.append({"floor": floor_rate, "realistic": real_rate,
                       "ratio": real_rate / floor_rate, "scp_role": scp_rate,
                       "scp_ratio": scp_rate / real_rate})
        print(f"round {i + 1}: floor {floor_rate:9.0f}/s  realistic role {real_rate:9.0f}/s  "
              f"ratio {real_rate / floor_rate:.2f}  role under SCPs {scp_rate:9.0f}/s  "
              f"scp ratio {scp_rate / real_rate:.2f}", flush=True)
    best = sorted(rounds, key=lambda r: r["realistic"])[len(rounds) // 2]
    # The SCP figures come from the round with the median SCP ratio (its own median).
    scp_best = sorted(rounds, key=lambda r: r["scp_ratio"])[len(rounds) // 2]
    met = scp_best["scp_ratio"] >= SCP_TARGET
    summary = {
        "benchmark": "policy decisions per second: a realistic role vs a one-statement policy, "
                     "and the role under five levels of SCPs vs the role alone",
        "command": ".venv/bin/python benchmarks/policy_decisions.py",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "decisions_per_second": best["realistic"],
        "floor_decisions_per_second": best["floor"],
        "ratio": best["ratio"],
        "scp_levels": len(scp.scp.levels) if scp.scp else 0,
        "scp_decisions_per_second": scp_best["scp_role"],
        "scp_realistic_decisions_per_second": scp_best["realistic"],
        "scp_ratio": scp_best["scp_ratio"],
        "scp_target": SCP_TARGET,
        "scp_target_met": met,
        "per_round": rounds,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nrealistic role: {best['realistic']:.0f} decisions/s "
          f"({1e6 / best['realistic']:.1f} us each); one-statement floor: "
          f"{best['floor']:.0f}/s; ratio {best['ratio']:.2f}")
    print(f"role under {summary['scp_levels']} SCP levels: {scp_best['scp_role']:.0f} "
          f"decisions/s ({1e6 / scp_best['scp_role']:.1f} us each); scp_role / realistic "
          f"{scp_best['scp_ratio']:.2f} (target {SCP_TARGET}: {'met' if met else 'NOT met'})")


if __name__ == "__main__":
    main()
