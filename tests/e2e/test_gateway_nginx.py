"""The gateway as deployed: Debian's nginx running deploy/nginx/broker-gateway.conf (only its
host, certificate paths and upstream addresses replaced) on https, in front of a real broker and
of two applications that echo back what reached them. A browser is an httpx client with its own
cookie jar and no automatic redirects; each attack sits beside its honest control."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
import pytest

from tests.helpers import Broker, Creds, creds_of, free_port, serve_json, start_broker
from tests.nginx import Nginx, certificate, nginx_binary, render

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "broker-gateway.conf"
PAYROLL = "arn:aws:gateway:::app/payroll"
COOKIE = "__Host-broker-session"  # the public URL is https
BROKER_HEADERS = ("X-Broker-Principal-Arn", "X-Broker-Account", "X-Broker-Session-Name",
                  "X-Broker-Role")


# -- the applications behind the gateway ------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    """One request that reached an application: its path, every value of each X-Broker-*
    header (a list, so a duplicate shows) and its Cookie headers."""

    path: str
    headers: dict[str, list[str]]
    cookies: list[str]


@dataclass
class App:
    """An application that answers every GET with JSON of what reached it, and counts."""

    hits: list[Hit] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> App:
        def answer(request: BaseHTTPRequestHandler) -> dict[str, Any]:
            hit = Hit(request.path,
                      {name: request.headers.get_all(name) or [] for name in
                       (*BROKER_HEADERS, "X_Broker_Principal_Arn")},
                      request.headers.get_all("Cookie") or [])
            self.hits.append(hit)
            return {"path": hit.path, "headers": hit.headers}

        self.server = serve_json(answer)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- the deployment ---------------------------------------------------------------------------

@dataclass
class Gateway:
    broker: Broker
    nginx: Nginx
    wiki: App
    payroll: App
    ca: Path
    browsers: list[httpx.Client] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.nginx.port}"

    def browser(self, cookie: str | None = None) -> httpx.Client:
        """A fresh browser; with ``cookie``, one that holds a copy of a session cookie."""
        client = httpx.Client(base_url=self.origin, follow_redirects=False, timeout=10,
                              verify=ssl.create_default_context(cafile=str(self.ca)))
        if cookie is not None:
            client.headers["Cookie"] = f"{COOKIE}={cookie}"
        self.browsers.append(client)
        return client

    def get_federation_token(self, creds: Creds, name: str,
                             session_policy: dict[str, Any]) -> dict[str, Any]:
        """GetFederationToken by an SDK that reaches the broker through nginx, as a program on
        the network would."""
        sts = boto3.client(
            "sts", endpoint_url=self.origin, region_name="us-east-1", verify=str(self.ca),
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}))
        try:
            result: dict[str, Any] = sts.get_federation_token(
                Name=name, Policy=json.dumps(session_policy))
        finally:
            sts.close()
        return result

    def federated(self, name: str, session_policy: dict[str, Any]) -> tuple[str, Creds]:
        """GetFederationToken for ``name`` with ``session_policy``, through the gateway, by an
        IAM user whose own policy allows it and gateway:Access on anything: the session may do
        what both allow. (The federated user's ARN, the credentials.)"""
        user_name, user = self.broker.new_user()
        self.broker.client("iam").put_user_policy(
            UserName=user_name, PolicyName="broker", PolicyDocument=json.dumps(
                policy(["sts:GetFederationToken", "gateway:Access"], "*")))
        result = self.get_federation_token(user, name, session_policy)
        return result["FederatedUser"]["Arn"], creds_of(result)

    def sign_in(self, creds: Creds) -> httpx.Client:
        """The custom identity broker's sign-in: getSigninToken, then the login URL, in a
        fresh browser that keeps the cookie it is given."""
        browser = self.browser()
        session = json.dumps({"sessionId": creds.access_key_id,
                              "sessionKey": creds.secret_access_key,
                              "sessionToken": creds.session_token})
        got = browser.get("/federation", params={"Action": "getSigninToken", "Session": session})
        assert got.status_code == 200, got.text
        destination = f"{self.origin}/console"
        login = browser.get("/federation", params={
            "Action": "login", "Destination": destination,
            "SigninToken": got.json()["SigninToken"]})
        assert login.status_code == 303, login.text
        assert login.headers["location"] == destination
        set_cookie = login.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        assert all(attribute in set_cookie.lower()
                   for attribute in ("; secure", "; httponly", "; path=/", "samesite=lax"))
        assert "domain=" not in set_cookie.lower()
        assert browser.cookies.get(COOKIE)
        return browser


def policy(actions: list[str], resource: str) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    nginx_binary()
    root = tmp_path_factory.mktemp("gateway")
    port = free_port()
    origin = f"https://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        wiki, payroll = App().start(), App().start()
        stack.callback(wiki.stop)
        stack.callback(payroll.stop)
        broker = start_broker(root / "broker", env={
            "BROKER_SERVER_PUBLIC_URL": origin,
            "BROKER_GATEWAY_URL_HEADER": "X-Original-URL",
            "BROKER_GATEWAY_APPLICATIONS": json.dumps([
                {"name": "Wiki", "url": f"{origin}/app/"},
                {"name": "Payroll", "url": f"{origin}/payroll/", "resource": PAYROLL}]),
        })
        stack.callback(broker.stop)
        ca, cert, key = certificate(root)
        site = render(TEMPLATE, {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "server_name gateway.example.com;": "server_name 127.0.0.1;",
            "/etc/ssl/gateway.example.com/fullchain.pem": str(cert),
            "/etc/ssl/gateway.example.com/privkey.pem": str(key),
            "https://gateway.example.com": origin,
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{broker.server.port};",
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{wiki.port};",
            "server 127.0.0.1:8081;": f"server 127.0.0.1:{payroll.port};",
        })
        live = [line for line in site.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in live if "example.com" in line], "a placeholder is left"
        (root / "nginx").mkdir()
        nginx = Nginx(root / "nginx", site, port)
        stack.callback(nginx.stop)
        deployed = Gateway(broker, nginx, wiki, payroll, ca)
        yield deployed
        for browser in deployed.browsers:
            browser.close()


def to_signin(response: httpx.Response) -> bool:
    """Whether the gateway sent the browser to the console's sign-in page."""
    return response.status_code == 302 and response.headers["location"] == "/console"


# -- the "done when" ------------------------------------------------------------------

def test_federation_signin_opens_console_and_application_until_logout(gateway: Gateway) -> None:
    arn, creds = gateway.federated("alice", policy(["gateway:Access"], "*"))
    browser = gateway.sign_in(creds)

    console = browser.get("/console")
    assert console.status_code == 200
    assert arn in console.text

    before = len(gateway.wiki.hits)
    opened = browser.get("/app/reports?q=1")
    assert opened.status_code == 200
    assert len(gateway.wiki.hits) == before + 1
    hit = gateway.wiki.hits[-1]
    assert hit.path == "/app/reports?q=1"
    assert hit.headers["X-Broker-Principal-Arn"] == [arn]
    assert hit.headers["X-Broker-Account"] == [gateway.broker.account_id]
    assert hit.headers["X-Broker-Session-Name"] == ["alice"]
    assert hit.headers["X-Broker-Role"] == []  # a federated user has no role

    logout = browser.get("/federation", params={"Action": "logout"})
    assert logout.status_code == 200
    assert browser.cookies.get(COOKIE) is None  # the broker told the browser to drop it

    assert browser.get("/console").status_code == 401
    after = len(gateway.wiki.hits)
    assert to_signin(browser.get("/app/reports?q=1"))
    assert len(gateway.wiki.hits) == after


# -- attacks, each beside its control ---------------------------------------------------------

def test_a_browser_without_a_session_is_sent_to_signin(gateway: Gateway) -> None:
    _, creds = gateway.federated("bob", policy(["gateway:Access"], "*"))
    signed_in = gateway.sign_in(creds)
    before = len(gateway.wiki.hits), len(gateway.payroll.hits)
    assert signed_in.get("/app/").status_code == 200
    assert (len(gateway.wiki.hits), len(gateway.payroll.hits)) == (before[0] + 1, before[1])

    stranger = gateway.browser()
    root = f"arn:aws:iam::{gateway.broker.account_id}:root"
    for path in ("/app/", "/app/reports", "/payroll/"):
        assert to_signin(stranger.get(path, headers={"X-Broker-Principal-Arn": root})), path
    assert (len(gateway.wiki.hits), len(gateway.payroll.hits)) == (before[0] + 1, before[1])


def test_the_forward_auth_check_is_not_reachable_from_outside(gateway: Gateway) -> None:
    _, creds = gateway.federated("carol", policy(["gateway:Access"], "*"))
    browser = gateway.sign_in(creds)
    assert browser.get("/app/").status_code == 200  # nginx's own subrequest answers 200
    assert browser.get("/gateway/auth").status_code == 404


def test_client_supplied_broker_headers_do_not_reach_the_application(gateway: Gateway) -> None:
    arn, creds = gateway.federated("dave", policy(["gateway:Access"], "*"))
    browser = gateway.sign_in(creds)
    account = gateway.broker.account_id

    honest = browser.get("/app/")
    assert honest.status_code == 200
    assert honest.json()["headers"]["X-Broker-Principal-Arn"] == [arn]

    forged = browser.get("/app/", headers=[
        ("X-Broker-Principal-Arn", "arn:aws:iam::111111111111:role/Admin"),
        ("X-Broker-Principal-Arn", "arn:aws:iam::111111111111:role/Admin"),
        ("X-Broker-Account", "111111111111"),
        ("X-Broker-Session-Name", "admin"),
        ("X-Broker-Role", "Admin"),
        ("X_Broker_Principal_Arn", "arn:aws:iam::111111111111:role/Admin"),
    ])
    assert forged.status_code == 200
    seen = forged.json()["headers"]
    assert seen["X-Broker-Principal-Arn"] == [arn]
    assert seen["X-Broker-Account"] == [account]
    assert seen["X-Broker-Session-Name"] == ["dave"]
    assert seen["X-Broker-Role"] == []  # the broker said none; the client's is dropped
    assert seen["X_Broker_Principal_Arn"] == []


def test_the_application_never_sees_the_console_session_cookie(gateway: Gateway) -> None:
    _, creds = gateway.federated("erin", policy(["gateway:Access"], "*"))
    browser = gateway.sign_in(creds)
    browser.cookies.set("wiki-theme", "dark", domain="127.0.0.1", path="/")
    assert browser.get("/app/").status_code == 200
    cookies = "; ".join(gateway.wiki.hits[-1].cookies)
    assert "wiki-theme=dark" in cookies  # the application's own cookie: passed
    assert COOKIE not in cookies
    assert browser.cookies[COOKIE] not in cookies
    # A decoy of the unprefixed name, planted after the real cookie (by an application's own
    # Set-Cookie, say), does not make nginx strip the decoy and pass the real one on.
    real = browser.cookies[COOKIE]
    decoyed = browser.get("/app/", headers={
        "Cookie": f"{COOKIE}={real}; wiki-theme=dark; broker-session=decoy"})
    assert decoyed.status_code == 200
    passed = "; ".join(gateway.wiki.hits[-1].cookies)
    assert real not in passed and "broker-session=decoy" in passed
    # The SAML sign-in cookies have Path=/ like every cookie of the broker, so the browser
    # sends them to the applications too: nginx strips them, in any order and together.
    for order in ((0, 1, 2), (2, 1, 0), (1, 0, 2)):
        cookies = [f"{COOKIE}={real}", "__Host-broker-saml-request=request-secret",
                   "__Host-broker-saml-choice=choice-handle"]
        sent = "; ".join([cookies[i] for i in order] + ["wiki-theme=dark"])
        assert browser.get("/app/", headers={"Cookie": sent}).status_code == 200
        passed = "; ".join(gateway.wiki.hits[-1].cookies)
        assert "wiki-theme=dark" in passed  # the control: the application's own cookie
        for secret in (real, "request-secret", "choice-handle"):
            assert secret not in passed, (order, passed)


def test_a_mapped_application_opens_only_to_sessions_allowed_gateway_access(
        gateway: Gateway) -> None:
    clerk_arn, clerk = gateway.federated("clerk", policy(["gateway:Access"], PAYROLL))
    _, intern = gateway.federated(
        "intern", policy(["gateway:Access"], "arn:aws:gateway:::app/other"))
    clerk_browser, intern_browser = gateway.sign_in(clerk), gateway.sign_in(intern)

    before = len(gateway.payroll.hits)
    allowed = clerk_browser.get("/payroll/slips")
    assert allowed.status_code == 200
    assert allowed.json()["headers"]["X-Broker-Principal-Arn"] == [clerk_arn]
    assert len(gateway.payroll.hits) == before + 1

    assert to_signin(intern_browser.get("/payroll/slips"))
    assert intern_browser.get("/app/").status_code == 200  # the intern's session is live
    assert len(gateway.payroll.hits) == before + 1


def test_the_check_is_for_the_application_nginx_routed_to(gateway: Gateway) -> None:
    """A client chooses the Host header and the raw request URI; nginx routes on the decoded,
    normalised path. The broker must judge the application nginx routes to, not the URL the
    client wrote: else a URL under no application (any session may pass) reaches payroll."""
    _, clerk = gateway.federated("clerk2", policy(["gateway:Access"], PAYROLL))
    _, intern = gateway.federated(
        "intern2", policy(["gateway:Access"], "arn:aws:gateway:::app/other"))
    clerk_browser, intern_browser = gateway.sign_in(clerk), gateway.sign_in(intern)
    tricks: list[dict[str, Any]] = [
        {"url": "/%70ayroll/slips"},
        {"url": "/payroll/slips", "extensions": {"target": b"/app/../payroll/slips"}},
        {"url": "/payroll/slips", "headers": {"Host": "127.0.0.1:1"}},
        {"url": "/payroll/slips", "headers": {"Host": "elsewhere.example"}},
    ]
    before = len(gateway.payroll.hits)
    for trick in tricks:
        assert clerk_browser.get(**trick).status_code == 200, trick
    assert len(gateway.payroll.hits) == before + len(tricks)
    let_through = [trick for trick in tricks if not to_signin(intern_browser.get(**trick))]
    assert let_through == []
    assert len(gateway.payroll.hits) == before + len(tricks)


def test_a_cookie_replayed_after_logout_is_refused(gateway: Gateway) -> None:
    arn, creds = gateway.federated("frank", policy(["gateway:Access"], "*"))
    browser = gateway.sign_in(creds)
    copied = browser.cookies[COOKIE]

    before = len(gateway.wiki.hits)
    replay = gateway.browser(copied)
    replayed = replay.get("/app/")  # before logout the copy is as good as the original
    assert replayed.status_code == 200
    assert replayed.json()["headers"]["X-Broker-Principal-Arn"] == [arn]
    assert len(gateway.wiki.hits) == before + 1

    assert browser.get("/federation", params={"Action": "logout"}).status_code == 200

    assert to_signin(replay.get("/app/"))
    assert replay.get("/console").status_code == 401
    assert len(gateway.wiki.hits) == before + 1
