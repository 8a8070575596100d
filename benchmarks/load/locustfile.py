"""The mixed workload of benchmarks/sustained_load.py, for locust (run by it in a process of its
own: locust patches the standard library with gevent when imported).

Everything a request needs was made before locust started, by the benchmark, and is read from
the JSON file named by ``BENCH_PLAN``: the broker's temporary credentials (requests are signed
here with botocore's SigV4 signer, afresh every minute), the role to assume, web identity
tokens (used in turn; a token may be presented again, as on AWS), signed SAML responses (each
handed out once: an assertion is accepted once) and a console session cookie.

``BENCH_RATE``: each user's tasks per second (locust's ``constant_throughput``); 0 for as fast
as the broker answers (the capacity step). ``BENCH_EVENTS``: a file that receives one line per
request (start time, action, latency in ms, error or null) when locust quits.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, constant, constant_throughput, events, task

PLAN: dict[str, Any] = json.loads(open(os.environ["BENCH_PLAN"]).read())  # noqa: SIM115
RATE = float(os.environ.get("BENCH_RATE", "0"))
EVENTS: list[tuple[float, str, float, str | None]] = []
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
TOKENS = itertools.cycle(PLAN["web_identity_tokens"])
SAML = list(reversed(PLAN["saml_responses"]))  # popped from the end: each handed out once
SIGNED: dict[str, tuple[float, dict[str, str], bytes]] = {}


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, response_length: int,
            exception: BaseException | None = None, start_time: float | None = None,
            **_: Any) -> None:
    EVENTS.append((start_time or time.time(), name, response_time,
                   None if exception is None else str(exception)[:200]))


@events.quitting.add_listener
def _dump(**_: Any) -> None:
    with open(os.environ["BENCH_EVENTS"], "w") as out:
        for event in EVENTS:
            out.write(json.dumps(event) + "\n")


def _signed(action: str, params: dict[str, str],
            who: str = "temporary") -> tuple[dict[str, str], bytes]:
    """The request signed with the plan's temporary credentials (or the IAM user's long-term
    key), kept a minute (a signature is good for five)."""
    kept = SIGNED.get(action)
    if kept is not None and kept[0] > time.monotonic():
        return kept[1], kept[2]
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = PLAN[who]
    request = AWSRequest(method="POST", url=PLAN["host"] + "/", data=urlencode(params),
                         headers=dict(FORM))
    SigV4Auth(Credentials(creds["access_key_id"], creds["secret_access_key"],
                          creds.get("session_token")), "sts", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = dict(prepared.headers)
    body = prepared.body if isinstance(prepared.body, bytes) else str(prepared.body).encode()
    SIGNED[action] = (time.monotonic() + 60, headers, body)
    return headers, body


class Mix(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def _post(self, name: str, headers: dict[str, str], body: bytes, expect: str) -> None:
        with self.client.post("/", data=body, headers=headers, name=name,
                              catch_response=True) as answer:
            if answer.status_code != 200 or expect not in (answer.text or ""):
                answer.failure(f"{answer.status_code}: {(answer.text or '')[:150]}")

    @task(40)
    def caller_identity(self) -> None:
        headers, body = _signed("GetCallerIdentity", {"Action": "GetCallerIdentity",
                                                      "Version": "2011-06-15"})
        self._post("GetCallerIdentity", headers, body, "<GetCallerIdentityResult>")

    @task(20)
    def assume_role(self) -> None:
        headers, body = _signed("AssumeRole", {
            "Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": PLAN["role_arn"],
            "RoleSessionName": "load"}, "long_term")
        self._post("AssumeRole", headers, body, "<AssumeRoleResult>")

    @task(15)
    def web_identity(self) -> None:
        body = urlencode({"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                          "RoleArn": PLAN["web_identity_role_arn"], "RoleSessionName": "load",
                          "WebIdentityToken": next(TOKENS)}).encode()
        self._post("AssumeRoleWithWebIdentity", FORM, body,
                   "<AssumeRoleWithWebIdentityResult>")

    @task(10)
    def saml(self) -> None:
        if not SAML:
            # Out of assertions (the capacity step only: the steady step gets enough).
            events.request.fire(request_type="POST", name="AssumeRoleWithSAML",
                                response_time=0, response_length=0,
                                exception=RuntimeError("out of SAML responses"),
                                start_time=time.time())
            return
        body = urlencode({"Action": "AssumeRoleWithSAML", "Version": "2011-06-15",
                          "RoleArn": PLAN["saml_role_arn"],
                          "PrincipalArn": PLAN["saml_provider_arn"],
                          "SAMLAssertion": SAML.pop()}).encode()
        self._post("AssumeRoleWithSAML", FORM, body, "<AssumeRoleWithSAMLResult>")

    @task(15)
    def console(self) -> None:
        with self.client.get("/console", headers={"Cookie": PLAN["console_cookie"]},
                             name="console", catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {(answer.text or '')[:150]}")
