"""The estate growth benchmark runs in its quickest mode, so that the script cannot rot: every
request it makes must be answered (it stops at the first refusal), and it writes its results.
It asserts no duration; benchmarks/ reports the figures.

benchmarks/sustained_load.py has no such test: its quickest run still starts two workers and
locust twice and signs hundreds of SAML responses, about a minute on this machine, more than
the suite can give a script that only checks itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_estate_growth_runs_in_its_quickest_mode(
        tmp_path: Path, postgres_databases: Callable[[], str], redis_url: str) -> None:
    results = tmp_path / "estate_growth.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    env["BROKER_TEST_REDIS_URL"] = redis_url
    if "BROKER_TEST_DATABASE_URL" in os.environ:
        env["BROKER_TEST_DATABASE_URL"] = os.environ["BROKER_TEST_DATABASE_URL"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "estate_growth.py"), "--max", "10",
         "--requests", "3", "--rounds", "1", "--pages", "1", "--page-repeat", "1",
         "--chooser-roles", "3", "--results", str(results)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(results.read_text())
    assert summary["levels"] == [1, 10]
    ten = summary["by_level"]["10"]
    assert ten["AssumeRole"]["requests"] == 3
    assert ten["ListUsers, first pages"]["pages"] == 1
    assert summary["role_chooser"]["most roles"]["roles"] == 3
