"""The policy evaluation corpus: cases as data (policies + request → decision), one runner.

Each file in policy_cases/eval_*.json holds cases written from AWS's documentation of policy
evaluation, condition operators, set qualifiers and policy variables; the format is described
in policy_cases/README.md. A new case is a new entry of data, not new code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.policy.context import Context
from broker.policy.document import PolicyKind, RequestPrincipal, compile_document
from broker.policy.evaluate import PolicySet, Request, evaluate

CASES_DIR = Path(__file__).parent / "policy_cases"
KINDS = {"identity": PolicyKind.IDENTITY, "resource": PolicyKind.RESOURCE,
         "boundary": PolicyKind.BOUNDARY, "session": PolicyKind.SESSION, "scp": PolicyKind.SCP,
         "rcp": PolicyKind.RCP}


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(CASES_DIR.glob("eval_*.json")):
        for case in json.loads(path.read_text())["cases"]:
            cases.append((f"{path.stem}::{case['name']}", case))
    return cases


CASES = load_cases()


def policy_set(case: dict[str, Any]) -> PolicySet:
    raw = case["policies"]

    def compiled(section: str) -> tuple[Any, ...]:
        return tuple(compile_document(doc, KINDS[section], name=f"{section}[{i}]")
                     for i, doc in enumerate(raw.get(section, [])))

    def levels(kind: str) -> tuple[tuple[Any, ...], ...] | None:
        # "scp" / "rcp": the policies of one level; "scp_levels" / "rcp_levels": a list of
        # levels (the root, the OUs down the path, the account), each a list of policies.
        if f"{kind}_levels" in raw:
            return tuple(
                tuple(compile_document(doc, KINDS[kind], name=f"{kind}[{i}][{j}]")
                      for j, doc in enumerate(level))
                for i, level in enumerate(raw[f"{kind}_levels"]))
        return (compiled(kind),) if kind in raw else None

    boundary = compiled("boundary")
    assert len(boundary) <= 1
    return PolicySet(
        identity=compiled("identity"),
        resource=compiled("resource"),
        boundary=boundary[0] if boundary else None,
        session=compiled("session") if "session" in raw else None,
        scp=levels("scp"),
        rcp=levels("rcp"),
        root=case["request"]["principal"]["type"] == "Account",
    )


def request(case: dict[str, Any]) -> Request:
    raw = case["request"]
    who = raw["principal"]
    principal = RequestPrincipal(arn=who["arn"], account=who["arn"].split(":")[4],
                                 type=who["type"], role_arn=who.get("role_arn"))
    context = Context({k: (v if isinstance(v, list) else str(v))
                       for k, v in raw.get("context", {}).items()})
    return Request(principal, raw["action"], raw["resource"], context,
                   resource_account=raw.get("resource_account"))


def test_the_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 300
    names = [name for name, _ in CASES]
    assert len(names) == len(set(names))
    outcomes = {case["expect"] for _, case in CASES}
    assert outcomes == {"allow", "explicit-deny", "implicit-deny"}


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
def test_case(name: str, case: dict[str, Any]) -> None:
    decision = evaluate(policy_set(case), request(case))
    assert decision.outcome.value == case["expect"], (
        f"{name}: expected {case['expect']}, got {decision.outcome.value} "
        f"({decision.reason(case['request']['action'])})")
    if "matched" in case:
        assert sorted(m.sid or "" for m in decision.statements) == sorted(case["matched"])


SCP_CASES = [(name, case) for name, case in CASES
             if {"scp", "scp_levels", "rcp", "rcp_levels"} & set(case["policies"])]


def test_organization_levels_decide_alike_when_their_views_are_kept() -> None:
    """Levels remember, per action, which statements concern it: one Levels object asked
    every case's request (in any case of the action's name) decides each exactly as a fresh
    one does, so a view kept from one request never leaks into another's decision."""
    assert len(SCP_CASES) >= 40
    for name, case in SCP_CASES:
        shared = policy_set(case)
        for _, other in SCP_CASES:  # fill the shared views with every other request first
            evaluate(shared, request(other))
        for variant in (case["request"]["action"], case["request"]["action"].upper()):
            asked = {**case, "request": {**case["request"], "action": variant}}
            kept = evaluate(shared, request(asked))
            fresh = evaluate(policy_set(case), request(asked))
            assert (kept.outcome, kept.statements, kept.decided_by) == (
                fresh.outcome, fresh.statements, fresh.decided_by), name
            assert kept.outcome.value == case["expect"], name
