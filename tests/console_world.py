"""A broker set up for console sign-in, as the federation endpoint and console tests use it.

``console_env()`` is the environment of a broker that may send browsers to one application
(APP, behind the gateway) and to one portal (PORTAL, an allowed Issuer). ``ConsoleWorld.make``
adds, through boto3, what AWS's custom identity broker program has: an IAM user allowed
GetFederationToken and AssumeRole, a role it may assume (MaxSessionDuration 7200) and a second
role that only sessions of the first may assume (role chaining). The helpers drive the real
server with httpx as a browser would: a cookie jar of its own, redirects not followed.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx
import lxml.html

from tests.helpers import Broker, Creds, creds_of

APP = "https://app.example.test/dash"
PORTAL = "https://portal.example.test/signin"
SESSION = "broker-session"


def console_env(**extra: str) -> dict[str, str]:
    return {"BROKER_SIGNIN_DESTINATIONS": PORTAL,
            "BROKER_GATEWAY_APPLICATIONS": json.dumps([{"name": "Dashboards", "url": APP}]),
            "BROKER_LOG_ACCESS": "true", **extra}


def _document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass(frozen=True)
class ConsoleWorld:
    broker: Broker
    user: Creds  # the identity broker program's IAM user
    user_arn: str
    role_arn: str  # trusts the user; MaxSessionDuration 7200
    chained_arn: str  # trusts sessions of role_arn only

    @classmethod
    def make(cls, broker: Broker) -> ConsoleWorld:
        tag = uuid.uuid4().hex[:6]
        iam = broker.client("iam")
        name, user = broker.new_user(name=f"identity-broker-{tag}")
        user_arn = iam.get_user(UserName=name)["User"]["Arn"]
        role = iam.create_role(
            RoleName=f"Operator-{tag}", MaxSessionDuration=7200,
            AssumeRolePolicyDocument=_document({
                "Effect": "Allow", "Principal": {"AWS": user_arn},
                "Action": "sts:AssumeRole"}))["Role"]
        chained = iam.create_role(
            RoleName=f"Auditor-{tag}", MaxSessionDuration=43200,
            AssumeRolePolicyDocument=_document({
                "Effect": "Allow", "Principal": {"AWS": role["Arn"]},
                "Action": "sts:AssumeRole"}))["Role"]
        iam.put_role_policy(RoleName=role["RoleName"], PolicyName="chain",
                            PolicyDocument=_document({
                                "Effect": "Allow", "Action": "sts:AssumeRole",
                                "Resource": chained["Arn"]}))
        iam.put_user_policy(UserName=name, PolicyName="broker", PolicyDocument=_document(
            {"Effect": "Allow", "Action": "sts:GetFederationToken",
             "Resource": f"arn:aws:sts::{broker.account_id}:federated-user/*"},
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}))
        return cls(broker, user, user_arn, role["Arn"], chained["Arn"])

    def assume(self, *, seconds: int = 3600, name: str = "alice") -> Creds:
        sts = self.broker.client("sts", self.user)
        return creds_of(sts.assume_role(RoleArn=self.role_arn, RoleSessionName=name,
                                        DurationSeconds=seconds))

    def chain(self, *, name: str = "alice") -> Creds:
        """Credentials of the chained role, assumed by a session of the first role."""
        sts = self.broker.client("sts", self.assume(name=name))
        return creds_of(sts.assume_role(RoleArn=self.chained_arn, RoleSessionName=name))

    def federate(self, name: str = "bob") -> Creds:
        sts = self.broker.client("sts", self.user)
        return creds_of(sts.get_federation_token(Name=name, DurationSeconds=3600))

    def session_token(self) -> Creds:
        return creds_of(self.broker.client("sts", self.user).get_session_token())

    def federated_arn(self, name: str = "bob") -> str:
        return f"arn:aws:sts::{self.broker.account_id}:federated-user/{name}"


def assumed_arn(role_arn: str, name: str = "alice") -> str:
    return role_arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/") + "/" + name


def session_param(creds: Creds, **changes: Any) -> str:
    """The ``Session`` parameter AWS documents, with ``changes`` applied."""
    value: dict[str, Any] = {"sessionId": creds.access_key_id,
                             "sessionKey": creds.secret_access_key,
                             "sessionToken": creds.session_token}
    value.update(changes)
    return json.dumps(value)


def browser(broker: Broker) -> httpx.Client:
    """A browser of its own: its own cookie jar, redirects not followed."""
    return httpx.Client(base_url=broker.url, follow_redirects=False, timeout=20)


def get_token(client: httpx.Client, session: str | None,
              duration: str | int | None = None) -> httpx.Response:
    params: dict[str, str] = {"Action": "getSigninToken"}
    if session is not None:
        params["Session"] = session
    if duration is not None:
        params["SessionDuration"] = str(duration)
    return client.get("/federation", params=params)


def signin_token(broker: Broker, creds: Creds, duration: int | None = None) -> str:
    with browser(broker) as client:
        r = get_token(client, session_param(creds), duration)
    assert r.status_code == 200, r.text
    token: str = r.json()["SigninToken"]
    assert token
    return token


def login(client: httpx.Client, token: str, destination: str = "/console",
          issuer: str | None = None, **headers: str) -> httpx.Response:
    params = {"Action": "login", "Destination": destination, "SigninToken": token}
    if issuer is not None:
        params["Issuer"] = issuer
    return client.get("/federation", params=params, headers=headers)


def set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    found: dict[str, Morsel[str]] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        found.update(jar)
    return found


def secured(response: httpx.Response) -> None:
    """The headers every browser-facing answer carries."""
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, response.headers
    assert response.headers.get("referrer-policy") == "no-referrer", response.headers
    assert "no-store" in response.headers.get("cache-control", ""), response.headers


def error_page(response: httpx.Response, status: int, text: str = "") -> str:
    """The error page's id, after checking it is an HTML page of ``status`` saying ``text``,
    that it sends the browser nowhere and starts no session."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert SESSION not in set_cookies(response)
    secured(response)
    assert text in response.text, response.text
    found = re.search(r"Error id</dt><dd><code>([0-9a-f-]{36})</code>", response.text)
    assert found, response.text
    return found.group(1)


def json_error(response: httpx.Response, status: int, code: str) -> str:
    """The message of a getSigninToken refusal, after checking its status, code and form."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["Error"]["Code"] == code, body
    assert body["RequestId"]
    assert "SigninToken" not in body
    message: str = body["Error"]["Message"]
    return message


def signed_in(response: httpx.Response, where: str = "/console") -> str:
    """The new session cookie, after checking the 303 to ``where`` that sets it."""
    assert response.status_code == 303, response.text
    assert response.headers["location"] == where
    cookie = set_cookies(response)[SESSION]
    assert cookie.value
    return cookie.value


def console(broker: Broker, cookie: str) -> httpx.Response:
    with browser(broker) as fresh:
        return fresh.get("/console", headers={"Cookie": f"{SESSION}={cookie}"})


def gateway(broker: Broker, cookie: str, url: str = f"{APP}/reports") -> httpx.Response:
    """/gateway/auth as Traefik or Caddy call it: the original URL in X-Forwarded-* (the
    default gateway.url_header)."""
    parts = urlsplit(url)
    with browser(broker) as fresh:
        return fresh.get("/gateway/auth", headers={
            "Cookie": f"{SESSION}={cookie}", "X-Forwarded-Proto": parts.scheme,
            "X-Forwarded-Host": parts.netloc,
            "X-Forwarded-Uri": parts.path + (f"?{parts.query}" if parts.query else "")})


@dataclass(frozen=True)
class ConsolePage:
    arn: str
    creds: Creds  # as the page's shell exports give them
    expires_at: int
    csrf: str

    @property
    def access_key_id(self) -> str:
        return self.creds.access_key_id


def read_console(response: httpx.Response) -> ConsolePage:
    assert response.status_code == 200, response.text
    doc = lxml.html.fromstring(response.text)
    arn = doc.xpath("string(//dt[.='Signed in as']/following-sibling::dd[1]/code)")
    exports = dict(re.findall(r"export (\w+)=(\S+)", doc.xpath("string(//pre[@id='exports'])")))
    creds = Creds(exports["AWS_ACCESS_KEY_ID"], exports["AWS_SECRET_ACCESS_KEY"],
                  exports["AWS_SESSION_TOKEN"])
    expires = doc.xpath("string(//time[@id='expires']/@data-expires-at)")
    csrf = doc.xpath("string(//form[@action='/console/signout']//input[@name='csrf']/@value)")
    return ConsolePage(str(arn), creds, int(expires), str(csrf))
