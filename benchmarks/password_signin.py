"""Benchmark: what a password + TOTP sign-in costs the broker, next to the password hash alone.

The broker's sign-in (broker.signin.password) is called directly, in this process, on the
embedded stores: the password step (account and user looked up, lock-out checked, Argon2id
verified, the pending MFA record written) and the code step (the pending record read, the
device's seed unsealed, the TOTP checked and spent, the console session's credentials sealed
and stored). The baseline, timed in the same process and interleaved with it, is
``argon2.PasswordHasher().verify`` of the same password against the same hash: Argon2id is
meant to dominate. The figure says what everything else costs.

    .venv/bin/python benchmarks/password_signin.py [--rounds 5] [--sign-ins 30]

Writes benchmarks/results/password_signin.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import pyotp  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402

from broker.clock import FixedClock  # noqa: E402
from broker.runtime import Runtime, initialize, open_runtime  # noqa: E402
from broker.settings import load  # noqa: E402

RESULTS = HERE / "results" / "password_signin.json"
PASSWORD = "Correct-Horse-9-Battery"  # noqa: S105 (the benchmark's made-up people)
STEP = 30


async def world(runtime: Runtime, account: str, clock: FixedClock, count: int,
                round_: int) -> list[tuple[str, pyotp.TOTP]]:
    """``count`` users with a password and an enabled virtual MFA device (new names, so new
    devices, each round: a device's spent codes are remembered)."""
    people = []
    for i in range(count):
        name = f"bench-{round_}-{i}"
        await runtime.iam.create_user(account, name)
        await runtime.iam.logins.create(account, name, PASSWORD)
        device, seed, _ = await runtime.iam.mfa.create_virtual(account, name, "/")
        totp = pyotp.TOTP(seed)
        now = clock.now()
        await runtime.iam.mfa.enable(account, name, device.serial, totp.at(now),
                                     totp.at(now, counter_offset=1))
        people.append((name, totp))
    clock.advance(2 * STEP)
    return people


async def sign_ins(runtime: Runtime, account: str, clock: FixedClock,
                   people: list[tuple[str, pyotp.TOTP]]) -> float:
    """CPU milliseconds per password + TOTP sign-in, each checked to end in a session."""
    signin = runtime.password_signin
    started = time.process_time()
    for name, totp in people:
        step = await signin.password(account=account, user_name=name, email=None,
                                     password=PASSWORD, source="127.0.0.1", browser="b")
        done = await signin.code(step.pending, "b", totp.at(clock.now()), "127.0.0.1")
        if done.started is None:
            raise SystemExit(f"{name} was not signed in")
    return 1e3 * (time.process_time() - started) / len(people)


def hashes_alone(password_hash: str, count: int) -> float:
    hasher = PasswordHasher()
    started = time.process_time()
    for _ in range(count):
        hasher.verify(password_hash, PASSWORD)
    return 1e3 * (time.process_time() - started) / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sign-ins", type=int, default=30)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="broker-bench-signin-"))
    now = int(time.time())
    clock = FixedClock(datetime.fromtimestamp(now - now % STEP + 1, UTC))
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data),
                                   "BROKER_AUDIT_SINK": "file",
                                   "BROKER_AUDIT_PATH": str(data / "audit.log")})
    account, _ = await initialize(settings, clock=clock)
    runtime = await open_runtime(settings, clock=clock)
    try:
        password_hash = PasswordHasher().hash(PASSWORD)
        ratios, broker_ms, hash_ms = [], [], []
        for round_ in range(args.rounds):
            people = await world(runtime, account.id, clock, args.sign_ins, round_)
            alone_before = hashes_alone(password_hash, args.sign_ins)
            cost = await sign_ins(runtime, account.id, clock, people)
            alone_after = hashes_alone(password_hash, args.sign_ins)
            alone = (alone_before + alone_after) / 2  # bracketing the broker's round
            ratios.append(alone / cost)
            broker_ms.append(cost)
            hash_ms.append(alone)
            for name, _ in people:  # the next round makes its own people
                for device in await runtime.iam.mfa.of_owner(account.id, name):
                    await runtime.iam.mfa.deactivate(account.id, name, device.serial)
                    await runtime.iam.mfa.delete(account.id, device.serial)
                await runtime.iam.logins.delete(account.id, name)
                await runtime.iam.delete_user(account.id, name)
    finally:
        await runtime.close()
    ratios.sort()
    median = ratios[len(ratios) // 2]
    result = {
        "python": platform.python_version(), "machine": platform.machine(),
        "sign_in_ms_median": round(sorted(broker_ms)[len(broker_ms) // 2], 2),
        "argon2_verify_ms_median": round(sorted(hash_ms)[len(hash_ms) // 2], 2),
        "hash_share_median": round(median, 3), "rounds": [round(r, 3) for r in ratios],
    }
    print(f"password + TOTP sign-in: {result['sign_in_ms_median']} ms CPU; Argon2id verify "
          f"alone: {result['argon2_verify_ms_median']} ms; the hash's share: {median:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
