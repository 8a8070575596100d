"""A bounded, mixed load on the cluster for the fault tests, run by locust in a process of its own
(locust patches the standard library with gevent when imported: never import this module in
the pytest process).

    BROKER_LOAD_CONFIG=config.json BROKER_LOAD_OUTPUT=results.jsonl \\
        locust -f tests/load/locustfile.py --headless -u 6 -r 6 --run-time 8s --host URL

The configuration (written by tests/load/run.py) holds the credentials and names the test set
up; every request becomes one JSON line: its time, action, HTTP status, AWS error code, the
node that answered (nginx's X-Upstream) and what a check of "no wrong answer" needs (the access
key id a credential was issued with, the sign-in token redeemed, the user name acknowledged).
Requests are signed with botocore's SigV4Auth: no boto3 client in the loop.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from locust import FastHttpUser, events, task

CONFIG: dict[str, Any] = json.loads(Path(os.environ["BROKER_LOAD_CONFIG"]).read_text())
OUTPUT = open(os.environ["BROKER_LOAD_OUTPUT"], "a", buffering=1)  # noqa: SIM115
_CODE = re.compile(rb"<Code>([^<]+)</Code>")
_PAGE_CODE = re.compile(rb"\b(ServiceUnavailable|InvalidSigninToken|InternalFailure)\b")
_KEY_ID = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")
_names = itertools.count()


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _close(**_: Any) -> None:
    OUTPUT.close()


def _creds(doc: dict[str, str]) -> Credentials:
    return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("SessionToken"))


ROOT = _creds(CONFIG["root"])
USER = _creds(CONFIG["user"])
TEMPORARY = _creds(CONFIG["temporary"])
TAMPERED = Credentials(CONFIG["user"]["AccessKeyId"], "x" * 40)


def _code(body: bytes, headers: Any) -> str | None:
    """The AWS error code: Query XML's <Code>, the JSON protocols' X-Amzn-ErrorType or
    __type, the federation endpoint's {"Error": {"Code"}}; an HTML page's error name."""
    found = _CODE.search(body)
    if found:
        return found.group(1).decode()
    kind = headers.get("x-amzn-ErrorType") or ""
    if kind:
        return str(kind).split(":", 1)[0]
    try:
        doc = json.loads(body)
    except ValueError:
        page = _PAGE_CODE.search(body)
        return page.group(1).decode() if page else None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("Error"), dict):
        return str(doc["Error"].get("Code"))
    return str(doc.get("__type", "")).rsplit("#", 1)[-1] or None


class Caller(FastHttpUser):
    """One caller mixing the workload's actions; every answer is recorded, none judged here
    (the test judges the whole record)."""

    # Requests are refused while a store is down: the caller keeps going at its own pace.
    def wait_time(self) -> float:
        return random.uniform(0.05, 0.15)

    def _record(self, action: str, response: Any, **facts: Any) -> None:
        body = response.content or b""
        status = response.status_code
        OUTPUT.write(json.dumps({
            "t": time.time(), "action": action, "status": status,
            "code": None if status in (200, 302, 303) else _code(body, response.headers),
            "node": response.headers.get("x-upstream"),
            "error": str(response.error) if status == 0 else None, **facts}) + "\n")

    def _signed(self, action: str, params: dict[str, str], creds: Credentials, *,
                service: str = "sts", **facts: Any) -> Any:
        body = urlencode({"Action": action, "Version": CONFIG["versions"][service], **params})
        request = AWSRequest(method="POST", url=f"{self.host}/", data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(creds, service, "us-east-1").add_auth(request)
        with self.client.request("POST", "/", name=action, data=body,
                                 headers=dict(request.headers), catch_response=True) as r:
            r.success()
        return r

    @task(4)
    def caller_identity_temporary(self) -> None:
        """Needs neither store: the session token is the session."""
        r = self._signed("GetCallerIdentity", {}, TEMPORARY)
        self._record("gci_temporary", r)

    @task(2)
    def caller_identity_key(self) -> None:
        """A long-term key: its lookup needs the database."""
        r = self._signed("GetCallerIdentity", {}, USER)
        self._record("gci_key", r)

    @task(1)
    def tampered_signature(self) -> None:
        """The right key id, a wrong secret: never a 200."""
        r = self._signed("GetCallerIdentity", {}, TAMPERED)
        self._record("tampered", r)

    @task(2)
    def assume_role(self) -> None:
        r = self._signed("AssumeRole", {"RoleArn": CONFIG["role"],
                                        "RoleSessionName": "load"}, USER)
        key = _KEY_ID.search(r.content or b"")
        self._record("assume_role", r, issued=key.group(1).decode() if key else None)

    @task(1)
    def assume_untrusted_role(self) -> None:
        """A role whose trust policy does not name the caller: never a credential."""
        r = self._signed("AssumeRole", {"RoleArn": CONFIG["untrusted_role"],
                                        "RoleSessionName": "load"}, USER)
        key = _KEY_ID.search(r.content or b"")
        self._record("assume_untrusted", r, issued=key.group(1).decode() if key else None)

    @task(1)
    def create_user(self) -> None:
        """An IAM write: each acknowledged name must exist after the faults."""
        name = f"{CONFIG['user_prefix']}{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
        r = self._signed("CreateUser", {"UserName": name}, ROOT, service="iam")
        self._record("create_user", r, name=name)

    @task(1)
    def describe_organization(self) -> None:
        """The JSON protocol: a refusal comes in its own format."""
        body = "{}"
        request = AWSRequest(method="POST", url=f"{self.host}/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSOrganizationsV20161128.DescribeOrganization"})
        SigV4Auth(ROOT, "organizations", "us-east-1").add_auth(request)
        with self.client.request("POST", "/", name="DescribeOrganization", data=body,
                                 headers=dict(request.headers), catch_response=True) as r:
            r.success()
        self._record("describe_organization", r)

    @task(1)
    def console_sign_in(self) -> None:
        """getSigninToken, then the login URL twice: the token opens at most once."""
        session = json.dumps({"sessionId": CONFIG["federated"]["AccessKeyId"],
                              "sessionKey": CONFIG["federated"]["SecretAccessKey"],
                              "sessionToken": CONFIG["federated"]["SessionToken"]})
        with self.client.request("GET", "/federation?" + urlencode(
                {"Action": "getSigninToken", "Session": session}),
                name="getSigninToken", catch_response=True) as r:
            r.success()
        token = None
        if r.status_code == 200:
            token = json.loads(r.content)["SigninToken"]
        self._record("signin_token", r, token=token)
        if token is None:
            return
        url = "/federation?" + urlencode({"Action": "login", "SigninToken": token,
                                          "Destination": f"{self.host}/console"})
        for attempt in ("login", "login_again"):
            with self.client.request("GET", url, name=attempt, allow_redirects=False,
                                     catch_response=True) as r:
                r.success()
            self._record(attempt, r, token=token)
