"""Benchmark: what the strict JSON reader (broker.jsontext.loads) costs over the decoder it
replaced, in one process.

Every JSON from outside goes through ``jsontext.loads`` since issue 13: a web identity token's
header and claims on every AssumeRoleWithWebIdentity, every policy document. The baseline,
measured in the same process and interleaved with it, is the JSON decoder the token path used
before (``json.JSONDecoder`` with the same repeated-member and NaN hooks, without the check for
lone surrogates). The ratio says what refusing lone surrogates costs on honest documents.

    .venv/bin/python benchmarks/json_reader.py [--rounds 5]

Writes benchmarks/results/json_reader.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from broker import jsontext

RESULTS = Path(__file__).resolve().parent / "results" / "json_reader.json"
# A GitHub Actions ID token's claims (the commonest web identity token) and a policy.
CLAIMS = json.dumps({
    "iss": "https://token.actions.githubusercontent.com", "aud": "sts.amazonaws.com",
    "sub": "repo:corp/app:ref:refs/heads/main", "exp": 1_900_000_000, "iat": 1_899_999_700,
    "nbf": 1_899_999_700, "jti": "6a0e6a3c-9d1e-4b8e-b6f4-5c2e9f0a1b2c", "ref": "refs/heads/main",
    "repository": "corp/app", "repository_owner": "corp", "actor": "someone", "sha": "a" * 40,
    "workflow": "deploy", "event_name": "push", "ref_type": "branch", "run_id": "1234567890",
    "job_workflow_ref": "corp/app/.github/workflows/deploy.yml@refs/heads/main"}).encode()
POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": f"S{i}", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
     "Resource": f"arn:aws:s3:::bucket-{i}/*",
     "Condition": {"StringEquals": {"aws:PrincipalTag/team": ["blue", "green"]}}}
    for i in range(10)]})


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(name)
        out[name] = value
    return out


def _refuse(name: str) -> Any:
    raise ValueError(name)


BEFORE = json.JSONDecoder(object_pairs_hook=_no_repeats, parse_constant=_refuse)


def per_call(fn: Any, document: Any, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            fn(document)
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(),
                               "machine": platform.machine()}
    for name, document, before in (
            ("token claims", CLAIMS, lambda d: BEFORE.decode(d.decode("utf-8"))),
            ("policy", POLICY, BEFORE.decode)):
        assert jsontext.loads(document) == before(document)
        ratios, news, olds = [], [], []
        for _ in range(args.rounds):  # interleaved, so that the machine's noise hits both
            old = per_call(before, document, args.seconds)
            new = per_call(jsontext.loads, document, args.seconds)
            ratios.append(new / old)
            news.append(new)
            olds.append(old)
        ratios.sort()
        median = ratios[len(ratios) // 2]
        results[name] = {"ratio_median": round(median, 3), "strict_us": round(
            sorted(news)[len(news) // 2] * 1e6, 2), "before_us": round(
            sorted(olds)[len(olds) // 2] * 1e6, 2), "bytes": len(document)}
        print(f"{name:13} {len(document):5} bytes: strict {results[name]['strict_us']} µs, "
              f"before {results[name]['before_us']} µs, ratio {median:.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
