"""GET /metrics and JSON logs of a real ``broker serve`` process.

A broker with metrics on a port of its own and JSON logs answers an STS call, an IAM call
that fails, a JSON-protocol call, a refused signature and a presigned GET; the scrape, read
by prometheus-client's own parser, counts each under its protocol, action, outcome and error
code; the public port's /metrics is the usual 404 beside the metrics port's 200; every log
line is JSON, the access line carries the answer's request id, and no secret is in any line.
With two workers, the scrape adds up both workers' counts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import httpx
import lxml.html
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import BIN, clean_env
from tests.helpers import Creds, free_port, presigned_url, signed_request, start_broker


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    root: Creds
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        reply = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        assert reply.status_code == 200, reply.text
        samples = {}
        for family in text_string_to_metric_families(reply.text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def log_lines(self) -> list[str]:
        return [line for line in self.stderr.read_text().splitlines() if line.strip()]


def _serve(tmp_path: Path, *extra: str, **env: str) -> Iterator[Served]:
    data = tmp_path / "data"
    port, metrics_port = free_port(), free_port()
    environ = clean_env(BROKER_METRICS_PORT=str(metrics_port), BROKER_SERVER_DATA_DIR=str(data),
                        BROKER_AUDIT_SINK="file",
                        BROKER_AUDIT_PATH=str(tmp_path / "audit.log"),
                        BROKER_LOG_FORMAT="json", BROKER_LOG_ACCESS="true",
                        BROKER_METRICS_ENABLED="true", **env)
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([str(BIN / "broker"), "serve", "--port", str(port), *extra],
                                env=environ, stdout=o, stderr=e, start_new_session=True)
    served = Served(proc, port, metrics_port, Creds("", ""), out, err)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, err.read_text()
            try:
                if httpx.get(served.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        # broker serve initialised the empty data directory and printed the root key.
        printed = dict(re.findall(r"(AWS_[A-Z_]+)=(\S+)", out.read_text()))
        served.root = Creds(printed["AWS_ACCESS_KEY_ID"], printed["AWS_SECRET_ACCESS_KEY"])
        yield served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, BROKER_SIGNIN_MAX_FAILURES="2")


def _client(url: str, service: str, creds: Creds) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=creds.access_key_id,
                        aws_secret_access_key=creds.secret_access_key,
                        aws_session_token=creds.session_token,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def _requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], protocol: str,
              action: str, outcome: str, code: str) -> float:
    labels = (("action", action), ("error_code", code), ("outcome", outcome),
              ("protocol", protocol))
    return samples.get(("broker_requests_total", labels), 0)


def _call(url: str, params: dict[str, str], creds: Creds, service: str = "sts"
          ) -> httpx.Response:
    method, full, headers, body = signed_request(url, params, creds, service=service)
    return httpx.request(method, full, headers=headers, content=body, timeout=10)


def test_scrape_counts_each_request_by_its_labels(served: Served) -> None:
    url, root = served.url, served.root
    identity = _call(url, {"Action": "GetCallerIdentity", "Version": "2011-06-15"}, root)
    assert identity.status_code == 200
    missing = _call(url, {"Action": "GetUser", "Version": "2010-05-08", "UserName": "nobody"},
                    root, service="iam")
    assert missing.status_code == 404 and b"NoSuchEntity" in missing.content
    orgs = _client(url, "organizations", root)
    with pytest.raises(botocore.exceptions.ClientError) as json_refusal:
        orgs.describe_organization()
    json_code = json_refusal.value.response["Error"]["Code"]
    forged = _call(url, {"Action": "GetCallerIdentity", "Version": "2011-06-15"},
                   Creds(root.access_key_id, "x" * 40))
    assert forged.status_code == 403 and b"SignatureDoesNotMatch" in forged.content
    session = _client(url, "sts", root).get_session_token()["Credentials"]
    # A long-term key is not a temporary credential: CreateAccessKey is counted among the
    # requests only, beside GetSessionToken's count below.
    iam = _client(url, "iam", root)
    iam.create_user(UserName="metrics-keyed")
    iam.create_access_key(UserName="metrics-keyed")
    # Three wrong passwords for one user with signin.max_failures = 2: the third is refused
    # by the lock-out, not by the password.
    account = _client(url, "sts", root).get_caller_identity()["Account"]
    with httpx.Client(base_url=url, timeout=10) as browser:
        for _ in range(3):
            page = lxml.html.fromstring(browser.get("/signin").text)
            csrf = page.xpath("//form[@action='/signin']//input[@name='csrf']/@value")[0]
            wrong = browser.post("/signin", data={
                "csrf": csrf, "kind": "iam", "account": account, "username": "nobody",
                "password": "Wrong-Passw0rd-1"})
            assert wrong.status_code == 403

    samples = served.scrape()
    assert samples[("broker_signins_total", (("kind", "password"),
                                             ("outcome", "refused")))] == 3
    assert samples[("broker_throttled_total", (("kind", "signin_user"),))] == 1
    assert _requests(samples, "web", "/signin", "client_error", "") == 3
    assert _requests(samples, "web", "/signin", "ok", "") == 3
    assert _requests(samples, "query", "GetUser", "client_error", "NoSuchEntity") == 1
    assert _requests(samples, "json", "DescribeOrganization", "client_error", json_code) == 1
    assert _requests(samples, "query", "GetCallerIdentity", "client_error",
                     "SignatureDoesNotMatch") == 1
    assert _requests(samples, "query", "GetSessionToken", "ok", "") == 1
    assert _requests(samples, "query", "GetCallerIdentity", "ok", "") == 1 + 1
    latency = ("broker_request_duration_seconds_count",
               (("action", "GetCallerIdentity"), ("protocol", "query")))
    assert samples[latency] == 3
    assert samples[("broker_credentials_issued_total", (("action", "GetSessionToken"),))] == 1
    assert ("broker_credentials_issued_total", (("action", "CreateAccessKey"),)) not in samples
    assert _requests(samples, "query", "CreateAccessKey", "ok", "") == 1
    # The root key's lookup read the entity store (SQLite here) at least once.
    trips = sum(v for (name, labels), v in samples.items()
                if name == "broker_store_round_trips_total" and ("store", "entity") in labels)
    assert trips > 0
    assert samples[("broker_workers", ())] == 1

    # The public port has no /metrics: the broker's usual 404 page, beside the metrics
    # port's answer above.
    public = httpx.get(url + "/metrics", timeout=10)
    assert public.status_code == 404 and "broker_requests_total" not in public.text
    assert public.headers["content-type"].startswith("text/html")

    # JSON logs: one object a line; the access line of GetCallerIdentity carries its id.
    lines = served.log_lines()
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    request_id = identity.headers["x-amzn-RequestId"]
    access = [d for d in docs if d.get("logger") == "uvicorn.access"
              and d.get("request_id") == request_id]
    assert len(access) == 1
    assert access[0]["method"] == "POST" and access[0]["path"] == "/"
    assert access[0]["status"] == 200 and access[0]["duration_ms"] >= 0

    # A presigned GET with a session token: neither token nor signature reaches the log.
    temporary = Creds(session["AccessKeyId"], session["SecretAccessKey"],
                      session["SessionToken"])
    presigned = presigned_url(url, {"Action": "GetCallerIdentity", "Version": "2011-06-15"},
                              temporary)
    assert httpx.get(presigned, timeout=10).status_code == 200
    signature = presigned.rsplit("X-Amz-Signature=", 1)[1].split("&")[0]
    time.sleep(0.5)
    text = served.stderr.read_text()
    assert '"path": "/"' in text and "GET / 200" in text
    for secret in (root.secret_access_key, session["SecretAccessKey"],
                   session["SessionToken"], signature,
                   identity.request.headers["authorization"].rsplit("Signature=", 1)[1]):
        assert secret not in text


def test_two_workers_add_up(tmp_path: Path, redis_url: str) -> None:
    n = 24
    for served in _serve(tmp_path, "--workers", "2", BROKER_STORE_EPHEMERAL_URL=redis_url,
                         BROKER_STORE_REDIS_PREFIX=f"broker-metrics-{uuid.uuid4().hex[:8]}:",
                         PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom")):
        deadline = time.monotonic() + 30
        while served.scrape().get(("broker_workers", ()), 0) < 2:  # both workers are up
            assert time.monotonic() < deadline, "the second worker never counted itself"
            time.sleep(0.2)
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client() as fresh:
                method, full, headers, body = signed_request(
                    served.url, {"Action": "GetCallerIdentity", "Version": "2011-06-15"},
                    served.root)
                assert fresh.request(method, full, headers=headers,
                                     content=body).status_code == 200
        samples = served.scrape()
        assert _requests(samples, "query", "GetCallerIdentity", "ok", "") == n
        assert samples[("broker_workers", ())] == 2
        # Each worker wrote its own file: the sum above is of two processes' counts (the
        # supervisor, which serves no request, may have a file of its own, of zeros).
        writers = {p.name.rsplit("_", 1)[-1] for p in (tmp_path / "prom").glob("counter_*")}
        assert len(writers - {f"{served.proc.pid}.db"}) == 2


def test_public_metrics_only_to_their_networks(tmp_path: Path) -> None:
    allowed = start_broker(tmp_path / "a", env={
        "BROKER_METRICS_ENABLED": "true", "BROKER_METRICS_PUBLIC": "true"})
    try:
        reply = httpx.get(allowed.server.url + "/metrics", timeout=10)
        assert reply.status_code == 200 and "broker_requests_total" in reply.text
    finally:
        allowed.stop()
    # The same broker, but the tests' address (127.0.0.1) is not among public_networks.
    refused = start_broker(tmp_path / "b", env={
        "BROKER_METRICS_ENABLED": "true", "BROKER_METRICS_PUBLIC": "true",
        "BROKER_METRICS_PUBLIC_NETWORKS": "10.0.0.0/8"})
    try:
        reply = httpx.get(refused.server.url + "/metrics", timeout=10)
        assert reply.status_code == 404 and "broker_requests_total" not in reply.text
    finally:
        refused.stop()


_HOSTILE_METRICS = [
    ("GET", "/metrics?x=%ff%zz&%00=1", {}, b""),
    ("HEAD", "/metrics", {}, b""),
    ("POST", "/metrics", {"Content-Type": "application/x-www-form-urlencoded"},
     b"\xff\xfe=\xc0\xaf"),
    ("PUT", "/metrics", {}, b"x" * 70_000),
    ("DELETE", "/metrics/", {}, b""),
    ("GET", "/metrics%00", {}, b""),
    ("GET", "/metrics/../metrics", {}, b""),
    ("GET", "/metrics", {"X-Forwarded-For": "10.0.0.1", "User-Agent": b"\xff\xc3\x28"}, b""),
]


def _hostile_answers(base: str) -> list[int]:
    statuses = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for method, path, headers, body in _HOSTILE_METRICS:
            statuses.append(client.request(method, path, headers=headers,
                                           content=body).status_code)
    return statuses


def test_hostile_requests_to_metrics_get_no_5xx(served: Served, tmp_path: Path) -> None:
    """The /metrics of the metrics listener and of the public port (metrics.public) under
    odd methods, paths, bodies and header bytes: never 5xx, never an ERROR line; the honest
    scrape beside them answers (the control)."""
    listener = _hostile_answers(f"http://127.0.0.1:{served.metrics_port}")
    assert all(s < 500 for s in listener), listener
    assert served.scrape()  # the control, after them
    public = start_broker(tmp_path / "public", env={
        "BROKER_METRICS_ENABLED": "true", "BROKER_METRICS_PUBLIC": "true"})
    try:
        answers = _hostile_answers(public.server.url)
        assert all(s < 500 for s in answers), answers
        assert httpx.get(public.server.url + "/metrics", timeout=10).status_code == 200
    finally:
        public.stop()
    logged = [json.loads(line) for line in served.log_lines()]
    assert logged and all("level" in d for d in logged)  # the lines this looks through
    assert [d for d in logged if d["level"] in ("error", "critical") or "exception" in d
            or "Traceback" in str(d.get("message"))] == []
