"""The pytest side of the load: what the locustfile needs set up on the cluster, locust run in a
process of its own for a bounded time, and the judgement of every answer it recorded.

"Wrong answers" are what a fault must never cause: a credential issued without every check (a
tampered signature or an untrusted role answered 200), a single-use value accepted twice (a
sign-in token that opened two sessions), an acknowledged IAM write lost (a CreateUser answered
200 whose user is gone afterwards), or a 500. Refusals while a store is down are not wrong if
they are AWS's ServiceUnavailable in the interface's own format.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.support import BIN, ROOT

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
OUTPUT_LIMIT = 4000

# What each action may answer, besides a refusal for a store that is down.
EXPECTED: dict[str, set[tuple[int, str | None]]] = {
    "gci_temporary": {(200, None)},
    "gci_key": {(200, None)},
    "tampered": {(403, "SignatureDoesNotMatch")},
    "assume_role": {(200, None)},
    "assume_untrusted": {(403, "AccessDenied")},
    "create_user": {(200, None)},
    "describe_organization": {(200, None)},
    "signin_token": {(200, None)},
    "login": {(303, None)},
    "login_again": {(400, "InvalidSigninToken")},
}
UNAVAILABLE = {(503, "ServiceUnavailable"), (503, "ServiceUnavailableException")}


def prepare(cluster: Any) -> dict[str, Any]:
    """A user with a key, a role it may assume and one whose trust policy leaves it out,
    temporary credentials, a federation session and an organization: the load's world."""
    iam = cluster.client("iam")
    account = cluster.account_id
    suffix = uuid.uuid4().hex[:6]
    user = f"loader-{suffix}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    roles = {}
    for name, trusted in (("load-role", f"arn:aws:iam::{account}:root"),
                          ("load-untrusted", "arn:aws:iam::111111111111:root")):
        roles[name] = iam.create_role(
            RoleName=f"{name}-{suffix}",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": trusted},
                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    iam.put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    creds = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def issued(result: dict[str, Any]) -> dict[str, str]:
        c = result["Credentials"]
        return {"AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
                "SessionToken": c["SessionToken"]}

    # The policy reaches every node within iam.policy_cache_seconds.
    deadline = time.monotonic() + 15
    while True:
        try:
            federated = issued(cluster.client("sts", creds).assume_role(
                RoleArn=roles["load-role"], RoleSessionName="console"))
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    temporary = issued(cluster.client("sts", creds).get_session_token())
    orgs = cluster.client("organizations")
    with contextlib.suppress(orgs.exceptions.AlreadyInOrganizationException):
        orgs.create_organization(FeatureSet="ALL")
    return {"root": cluster.root, "user": creds, "temporary": temporary,
            "federated": federated, "role": roles["load-role"],
            "untrusted_role": roles["load-untrusted"], "user_prefix": f"load-{suffix}-",
            "versions": {"sts": "2011-06-15", "iam": "2010-05-08"}}


class Load:
    """``locust --headless`` against ``url`` for ``seconds``, ``users`` callers."""

    def __init__(self, directory: Path, url: str, config: dict[str, Any], *,
                 users: int = 4, seconds: float = 8) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "load.json"
        self.output = directory / "load.jsonl"
        self.log = directory / "locust.log"
        self.config_path.write_text(json.dumps(config))
        self.output.write_text("")
        self.url, self.users, self.seconds = url, users, seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Load:
        env = {"BROKER_LOAD_CONFIG": str(self.config_path),
               "BROKER_LOAD_OUTPUT": str(self.output), "PATH": str(BIN),
               "PYTHONUNBUFFERED": "1"}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless",
                 "-u", str(self.users), "-r", str(self.users),
                 "--run-time", f"{int(self.seconds)}s", "--stop-timeout", "5",
                 "--host", self.url, "--only-summary", "--loglevel", "WARNING",
                 "--exit-code-on-error", "0"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.time()
        self.wait_first()
        return self

    def wait_first(self, timeout: float = 30) -> None:
        """Until the first answer is recorded (locust has imported and spawned)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.stat().st_size:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"locust exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"locust recorded nothing: {self.log.read_text()}")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.read_text().splitlines() if line]

    def kill(self) -> None:
        """End locust if it still runs (a test that failed before waiting for it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> list[dict[str, Any]]:
        """End the load now (locust stops its callers on SIGTERM) and return its records."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait()

    def wait(self) -> list[dict[str, Any]]:
        assert self.proc is not None
        code = self.proc.wait(timeout=self.seconds + 60)
        if code != 0:
            raise RuntimeError(f"locust exited {code}: {self.log.read_text()[-OUTPUT_LIMIT:]}")
        return self.records()


@dataclass
class Verdict:
    """The figures of one load run."""

    requests: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    unavailable: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    acknowledged_users: list[str] = field(default_factory=list)
    issued: int = 0

    def summary(self, title: str) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_outcome.items()))
        return (f"{title}: requests {self.requests}, wrong answers {len(self.wrong)}, "
                f"refused ServiceUnavailable {len(self.unavailable)}, "
                f"other failures {len(self.failed)}, credentials issued {self.issued}, "
                f"users acknowledged {len(self.acknowledged_users)} [{kinds}]")


def judge(records: list[dict[str, Any]]) -> Verdict:
    """Sort every answer into expected, refused for an absent store, failed (no answer, a
    gateway error) or wrong (see the module docstring)."""
    verdict = Verdict(requests=len(records))
    opened: Counter[str] = Counter()
    issued: Counter[str] = Counter()
    for r in records:
        outcome = (r["status"], r["code"])
        verdict.by_outcome[f"{r['action']}:{r['status']}"] += 1
        if r["status"] == 500:
            verdict.wrong.append(f"a 500: {r}")
        if r["action"] in ("tampered", "assume_untrusted") and r["status"] == 200:
            verdict.wrong.append(f"issued without every check: {r}")
        if r["action"] in ("login", "login_again") and r["status"] in (302, 303):
            opened[r["token"]] += 1
        if r["action"] == "assume_role" and r["status"] == 200:
            if not r.get("issued"):
                verdict.wrong.append(f"a 200 without credentials: {r}")
            issued[r.get("issued") or ""] += 1
        if r["action"] == "create_user" and r["status"] == 200:
            verdict.acknowledged_users.append(r["name"])
        if outcome in EXPECTED[r["action"]]:
            continue
        if outcome in UNAVAILABLE:
            verdict.unavailable.append(r)
        elif r["status"] != 500:
            verdict.failed.append(r)
    verdict.wrong += [f"sign-in token opened {n} times" for n in opened.values() if n > 1]
    verdict.wrong += [f"access key id {k} issued {n} times" for k, n in issued.items() if n > 1]
    verdict.issued = sum(issued.values())
    return verdict


def missing_users(cluster: Any, names: list[str]) -> list[str]:
    """The acknowledged users the cluster no longer has."""
    pages = cluster.client("iam").get_paginator("list_users").paginate()
    present = {u["UserName"] for page in pages for u in page["Users"]}
    return sorted(set(names) - present)
