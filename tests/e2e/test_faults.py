"""The cluster under faults: while a bounded load runs through the load balancer, Redis stops and
starts, PostgreSQL stops and starts, a node is SIGKILLed, a node restarts with a rotated keyring,
and every node restarts in turn.

Each test prints its figures (``pytest tests/e2e/test_faults.py -s`` shows them; they show in
the test log without -s too) and asserts them: no wrong answer (tests/load/run.py says what
that is), every refusal while a store is down AWS's ServiceUnavailable in the interface's own
format, /readyz naming the store, every node answering again within five seconds of the
store's return without a restart, and what needs no store (GetCallerIdentity with temporary
credentials) never refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import httpx
import pytest

from broker.store.redis import LOSS_MARGIN_SECONDS
from tests.cluster import Cluster, OwnPostgres, OwnRedis
from tests.load.run import Load, Verdict, judge, missing_users, prepare

RECOVERY_SECONDS = 5.0
SAML_SKEW_SECONDS = 60  # saml.clock_skew_seconds, the default
OUTAGE_SECONDS = 1.5
World = tuple[Cluster, OwnRedis, OwnPostgres]


@pytest.fixture(autouse=True)
def heal(own_cluster: World) -> Iterator[None]:
    """The module shares one cluster: after each test, whatever it stopped runs again."""
    yield
    cluster, redis_server, postgres = own_cluster
    for server in (redis_server, postgres):
        if not server.running:
            server.start()
    for i in range(3):
        if not cluster.running(i):
            cluster.start(i)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\nFIGURES {line}")


def first_success(probe: Callable[[], bool], since: float, limit: float = 15) -> float:
    """Seconds from ``since`` until ``probe()`` first answers True (inf if not within limit)."""
    while time.monotonic() - since < limit:
        if probe():
            return time.monotonic() - since
        time.sleep(0.05)
    return float("inf")


def sign_in_token(url: str, federated: dict[str, str]) -> httpx.Response:
    """The federation endpoint's getSigninToken: needs Redis (the token lives there)."""
    import json

    session = json.dumps({"sessionId": federated["AccessKeyId"],
                          "sessionKey": federated["SecretAccessKey"],
                          "sessionToken": federated["SessionToken"]})
    return httpx.get(f"{url}/federation", params={"Action": "getSigninToken",
                                                   "Session": session}, timeout=10)


def refusal(call: Callable[[], Any]) -> tuple[str, int]:
    """The AWS error code and HTTP status a boto3 call is refused with."""
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return (exc.response["Error"]["Code"],
                exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return "answered", 200


def check(verdict: Verdict, cluster: Cluster) -> None:
    assert verdict.wrong == [], verdict.wrong[:5]
    assert verdict.failed == [], verdict.failed[:5]
    assert missing_users(cluster, verdict.acknowledged_users) == []
    assert verdict.acknowledged_users and verdict.issued  # the load did write and issue


def start_load(world: World, request: pytest.FixtureRequest,
               seconds: float = 5) -> tuple[Load, dict[str, Any]]:
    """The load's world set up, and locust running (ended at the test's end, pass or fail)."""
    cluster = world[0]
    config = prepare(cluster)
    load = Load(request.getfixturevalue("tmp_path") / "load", cluster.url, config,
                seconds=seconds)
    request.addfinalizer(load.kill)
    return load.start(), config


@pytest.mark.parametrize("store", ["ephemeral_store", "entity_store"])
def test_a_store_stops_and_returns_under_load(own_cluster: World, request: pytest.FixtureRequest,
                                              store: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cluster, redis_server, postgres = own_cluster
    load, config = start_load(own_cluster, request)
    server: OwnRedis | OwnPostgres = redis_server if store == "ephemeral_store" else postgres
    temporary_sts = cluster.clients("sts", config["temporary"])
    root_iam = cluster.clients("iam")
    root_orgs = cluster.clients("organizations")

    def needs_store(i: int) -> bool:
        """A request to node ``i`` that needs the stopped store: answered?"""
        if store == "ephemeral_store":
            return sign_in_token(cluster.node_urls[i], config["federated"]).status_code == 200
        return refusal(lambda: root_iam[i].list_users(MaxItems=1)) == ("answered", 200)

    # The control: every node answers what needs the store before it goes.
    assert all(needs_store(i) for i in range(3))
    time.sleep(1)
    down = time.time()
    server.stop()
    try:
        with ThreadPoolExecutor(3) as pool:
            ready = list(pool.map(lambda url: httpx.get(url + "/readyz", timeout=10),
                                  cluster.node_urls))
        for answer in ready:
            assert answer.status_code == 503
            assert answer.json()["failed"] == {store: "StoreUnavailable"}
        for i, url in enumerate(cluster.node_urls):
            if store == "ephemeral_store":
                refused = sign_in_token(url, config["federated"])
                assert refused.status_code == 503
                assert refused.json()["Error"]["Code"] == "ServiceUnavailable"
            else:  # Query XML and JSON, each in its own format
                assert refusal(root_iam[i].list_users) == ("ServiceUnavailable", 503)
                assert refusal(root_orgs[i].describe_organization) == (
                    "ServiceUnavailableException", 503)
            # Temporary credentials carry their session: they need neither store.
            assert ":user/loader-" in temporary_sts[i].get_caller_identity()["Arn"]
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.time() - down)))
    finally:
        server.start()
    back = time.monotonic()
    up = time.time()
    with ThreadPoolExecutor(3) as pool:
        recovery = list(pool.map(
            lambda i: first_success(lambda: needs_store(i), back), range(3)))
    verdict = judge(load.wait())
    report(capsys, verdict.summary(f"{store} outage of {up - down:.1f} s") +
           f"; recovery seconds per node {[round(s, 2) for s in recovery]}")
    assert max(recovery) <= RECOVERY_SECONDS, recovery
    assert cluster.ready() == [200, 200, 200]
    check(verdict, cluster)
    # The load met the outage, and was refused only while the store was away.
    assert verdict.unavailable, "the load never met the outage"
    late = [r for r in verdict.unavailable if not down <= r["t"] <= up + RECOVERY_SECONDS]
    assert late == []


def test_a_hung_database_costs_a_bounded_wait(own_cluster: World,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL frozen (SIGSTOP: connections open, nothing answered, as when a network drops
    packets): what needs it is refused with ServiceUnavailable within the store's bound
    (store/sql.py TIMEOUT_SECONDS) instead of hanging, /readyz answers 503 within its own two
    seconds, temporary credentials keep working, and once it thaws every node answers again."""
    from broker.store.sql import TIMEOUT_SECONDS

    cluster, _, postgres = own_cluster
    iam = cluster.clients("iam")
    config = prepare(cluster)
    temporary_sts = cluster.clients("sts", config["temporary"])

    def name() -> str:
        return f"hung-{uuid.uuid4().hex[:8]}"

    def timed(call: Callable[[], Any]) -> tuple[tuple[str, int], float]:
        began = time.monotonic()
        return refusal(call), round(time.monotonic() - began, 1)

    assert all(timed(lambda i=i: iam[i].create_user(UserName=name()))[0]  # type: ignore
               == ("answered", 200) for i in range(3))  # the control
    postgres.freeze()
    try:
        with ThreadPoolExecutor(6) as pool:
            writes = list(pool.map(lambda i: timed(
                lambda: iam[i].create_user(UserName=name())), range(3)))
            ready = list(pool.map(lambda url: timed(
                lambda: _readyz(url)), cluster.node_urls))
        for i in range(3):
            assert ":user/loader-" in temporary_sts[i].get_caller_identity()["Arn"]
    finally:
        postgres.thaw()
    back = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        recovery = list(pool.map(lambda i: first_success(
            lambda: refusal(lambda: iam[i].list_users(MaxItems=1)) == ("answered", 200),
            back), range(3)))
    report(capsys, f"PostgreSQL frozen: CreateUser refused after {[s for _, s in writes]} s, "
           f"/readyz after {[s for _, s in ready]} s; recovery seconds per node "
           f"{[round(s, 2) for s in recovery]}")
    for outcome, seconds in writes:
        assert outcome == ("ServiceUnavailable", 503)
        # Each of the request's store calls is bounded (a signed write makes two or three:
        # its key, its caller's policies, the write); without the bound it never answers.
        assert seconds <= 3 * TIMEOUT_SECONDS + 3
    for outcome, seconds in ready:
        assert outcome == ("entity_store", 503)
        assert seconds <= 2 + 2
    assert max(recovery) <= RECOVERY_SECONDS


def _readyz(url: str) -> None:
    """Raise the store /readyz names as failing (as a ClientError-like refusal)."""
    answer = httpx.get(url + "/readyz", timeout=30)
    if answer.status_code != 200:
        [store] = answer.json()["failed"]
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": store}, "ResponseMetadata": {
                "HTTPStatusCode": answer.status_code}}, "readyz")


def test_a_node_killed_then_back_with_a_rotated_keyring(
        own_cluster: World, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL node 1: what was in flight on it gets nginx's 502 (never retried elsewhere, as
    it had reached a broker); everything after goes to the other two. Meanwhile a key is
    rotated as a cluster rotates (``broker keys add``; once every node has read it, ``broker
    keys activate``) and node 1 comes back with it: credentials sealed with the old key (the
    load's) open on every node, and one node 1 seals with the new key opens on the others."""
    cluster = own_cluster[0]
    load, config = start_load(own_cluster, request)
    time.sleep(1)
    killed = time.time()
    cluster.kill(1)
    staged = cluster.cli("keys", "add").split()[2].rstrip(".")
    time.sleep(1.5)  # the nodes' keyring check interval
    cluster.cli("keys", "activate", staged)
    cluster.start(1)
    issued = cluster.client("sts", config["user"], cluster.node_urls[1]).get_session_token()
    fresh = {k: issued["Credentials"][k]
             for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    for i in range(3):
        for creds in (fresh, config["temporary"]):
            sts = cluster.client("sts", creds, cluster.node_urls[i])
            assert ":user/loader-" in sts.get_caller_identity()["Arn"]
    verdict = judge(load.wait())
    victim = f"127.0.0.1:{cluster.ports[1]}"
    # In flight on the victim at the kill: nginx's 502, or — for the federation endpoint's
    # login, a GET nginx sends on to the next node when the first dies before answering (its
    # X-Upstream then names both) — InvalidSigninToken, the token having been spent by the
    # node that died (fail closed).
    in_flight = [r for r in verdict.failed if killed <= r["t"] <= killed + 1 and
                 victim in (r["node"] or "") and (
                     r["status"] == 502 or
                     (r["action"] == "login" and r["code"] == "InvalidSigninToken"))]
    report(capsys, verdict.summary("node 1 SIGKILLed, back with a rotated key") +
           f"; in flight at the kill (502) {len(in_flight)}")
    assert verdict.wrong == []
    assert len(in_flight) == len(verdict.failed) <= load.users, verdict.failed
    assert missing_users(cluster, verdict.acknowledged_users) == []
    answered_after = {r["node"] for r in load.records() if r["t"] > killed + 1
                      and r["status"] == 200}
    assert answered_after >= {f"127.0.0.1:{p}" for p in (cluster.ports[0], cluster.ports[2])}


def test_a_rolling_restart_fails_no_request(own_cluster: World, request: pytest.FixtureRequest,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Node after node: out of the load balancer (nginx reloaded with the node ``down``),
    SIGTERM, wait for the exit, start, wait for /readyz, back in. The broker finishes what it
    had; nginx's old workers finish what they had sent; nothing is sent to a stopping node."""
    cluster = own_cluster[0]
    load, _ = start_load(own_cluster, request, seconds=120)  # ended when the restarts are
    codes, stopping, starting = [], [], []
    for i in range(3):
        cluster.drain(i)
        began = time.monotonic()
        codes.append(cluster.stop(i))
        stopping.append(round(time.monotonic() - began, 1))
        cluster.start(i)
        starting.append(round(time.monotonic() - began - stopping[-1], 1))
        cluster.drain(i, out=False)
    time.sleep(0.5)
    verdict = judge(load.stop())
    report(capsys, verdict.summary("rolling restart of 3 nodes") + f"; exit statuses {codes}"
           f"; seconds to stop {stopping}, to be ready again {starting}")
    check(verdict, cluster)
    assert codes == [0, 0, 0]


def test_what_was_spent_stays_spent_when_redis_comes_back_empty(
        own_cluster: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The test's Redis keeps nothing on disk: stopped and started, it has forgotten every
    used SAML assertion id and TOTP code. A value used before is still refused on every node
    (it could have been used: store/redis.py's lost-at key), never accepted a second time;
    the control, an assertion the identity provider issues after the return, is accepted."""
    import pyotp
    import redis

    from tests.saml_idp import TestIdp, encode
    from tests.saml_world import trust_policy

    cluster, redis_server, _ = own_cluster
    # The precondition, a Redis whose data were never lost: an earlier test of this module
    # restarted it empty, and for the SAML skew after that (noticed at the first single-use
    # value) assertions and codes from before are refused, these ones included.
    client = redis.Redis(port=redis_server.port)
    run_id, evicted = client.info("server")["run_id"], client.info("stats")["evicted_keys"]
    client.set("broker:lost-at", f"0 {run_id} {evicted}")
    iam = cluster.client("iam")
    idp = TestIdp(f"https://idp-{uuid.uuid4().hex[:6]}.faults.example.test/metadata")
    provider = iam.create_saml_provider(Name=f"corp-{uuid.uuid4().hex[:6]}",
                                        SAMLMetadataDocument=idp.metadata())["SAMLProviderArn"]
    role = iam.create_role(RoleName=f"engineers-{uuid.uuid4().hex[:6]}",
                           AssumeRolePolicyDocument=trust_policy(
                               provider, f"{cluster.url}/saml"))["Role"]["Arn"]

    def assertion(ahead: float = 0) -> str:
        return encode(idp.response(acs_url=f"{cluster.url}/saml",
                                   audience=f"{cluster.url}/saml/metadata",
                                   roles=[(role, provider)],
                                   now=datetime.now(UTC) + timedelta(seconds=ahead)))

    def saml(encoded: str, url: str) -> tuple[str, int]:
        return refusal(lambda: cluster.client("sts", url=url).assume_role_with_saml(
            RoleArn=role, PrincipalArn=provider, SAMLAssertion=encoded))

    name = f"mfa-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    user = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"]
    totp, now = pyotp.TOTP(device["Base32StringSeed"].decode("ascii")), time.time()
    iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"],
                          AuthenticationCode1=totp.at(now, counter_offset=-1),
                          AuthenticationCode2=totp.at(now))
    code = totp.at(now, counter_offset=1)

    def mfa(url: str) -> tuple[str, int]:
        return refusal(lambda: cluster.client("sts", user, url).get_session_token(
            SerialNumber=device["SerialNumber"], TokenCode=code))

    # Used once before the loss, each on a node of its own (the new provider and role may
    # take iam.policy_cache_seconds to reach a node: retried with fresh assertions).
    first = cluster.node_urls[0]
    deadline = time.monotonic() + 15
    used = assertion()
    while saml(used, first) != ("answered", 200):
        assert time.monotonic() < deadline, "the new SAML provider never reached node 0"
        time.sleep(0.2)
        used = assertion()
    assert mfa(cluster.node_urls[1]) == ("answered", 200)
    assert saml(used, first)[0] == "InvalidIdentityToken"  # spent, while Redis holds it

    redis_server.stop()
    redis_server.start()
    replays = {url: (saml(used, url), mfa(url)) for url in cluster.node_urls}
    # The first replay noticed the loss. An assertion is accepted from its IssueInstant less
    # the skew (saml.clock_skew_seconds, 60 s), so those issued within the skew after the loss
    # are refused too; the control is one issued after that, as an identity provider issues
    # a minute later: here an identity provider whose clock is almost the skew ahead (its
    # IssueInstant whole seconds), a few seconds after the loss (and its margin), rather than
    # the test waiting a minute.
    time.sleep(LOSS_MARGIN_SECONDS + 2.5)
    fresh = [saml(assertion(ahead=SAML_SKEW_SECONDS - 0.5), url) for url in cluster.node_urls]
    too_soon = saml(assertion(), cluster.node_urls[0])
    saml_replays = [r[0] for r, _ in replays.values()]
    mfa_replays = [m[0] for _, m in replays.values()]
    report(capsys, f"Redis back empty: a used SAML assertion replayed on each node "
           f"{saml_replays}, a used TOTP code {mfa_replays}; a new assertion "
           f"{[f[0] for f in fresh]}")
    # Every node: its use unknown since the loss (get a new assertion from the provider).
    assert saml_replays == ["ExpiredTokenException"] * 3
    assert mfa_replays == ["AccessDenied"] * 3
    assert fresh == [("answered", 200)] * 3
    assert too_soon == ("ExpiredTokenException", 400)
