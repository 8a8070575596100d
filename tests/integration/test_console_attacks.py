"""Attacks on console sign-in, each built and refused beside an honest control: open redirects
(federation Destination and Issuer, logout Destination, SAML RelayState), sign-in tokens
replayed (one after the other, twenty at once, across two servers sharing Redis) or expired,
session fixation, cookies replayed after sign-out, cross-site forms (login CSRF, console forms,
role choosers), the pages' security headers, and secrets kept out of the access log."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import quote, unquote_plus

import httpx
import lxml.html
import pytest

from broker.app import create_app
from broker.clock import FixedClock
from tests.console_world import (
    APP,
    PORTAL,
    SESSION,
    ConsoleWorld,
    assumed_arn,
    browser,
    console,
    console_env,
    error_page,
    gateway,
    get_token,
    login,
    read_console,
    secured,
    session_param,
    set_cookies,
    signed_in,
    signin_token,
)
from tests.helpers import Broker, ServerThread, start_broker
from tests.saml_idp import encode
from tests.saml_world import SamlWorld

LOGIN_COOKIE = "broker-demo-login"
DEMO_CHOICE = "broker-demo-choice"
SAML_CHOICE = "broker-saml-choice"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    broker = start_broker(tmp_path_factory.mktemp("console"), env=console_env())
    yield ConsoleWorld.make(broker)
    broker.stop()


@pytest.fixture(scope="module")
def saml(world: ConsoleWorld) -> SamlWorld:
    return SamlWorld.make(world.broker)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_broker(tmp_path_factory.mktemp("dev"), env={"BROKER_SERVER_DEV": "true"})
    yield broker
    broker.stop()


def sign_in(world: ConsoleWorld, client: httpx.Client, *, name: str = "alice") -> str:
    """Sign ``client`` in as a session of the world's role; its cookie."""
    return signed_in(login(client, signin_token(world.broker, world.assume(name=name))))


def together(send: Callable[[int], None], n: int) -> None:
    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- 1. open redirects ------------------------------------------------------------------------

OFF_SITE = {
    "scheme-relative": "//evil.example",
    "backslash": "/\\evil.example",
    "tab before the second slash": "/\t/evil.example",
    "the app's host as a prefix": "https://app.example.test.evil.example/dash",
    "user-info": "https://app.example.test@evil.example/dash",
    "javascript": "javascript:alert(1)",
    "JavaScript in mixed case": "JavaScript:alert(document.domain)",
    "data URL": "data:text/html,<script>alert(1)</script>",
    "CRLF": "/console\r\nSet-Cookie: x=y",
    "encoded CRLF": "/console%0d%0aSet-Cookie:x=y",
    "another site": "https://evil.example",
    "the app over http": "http://app.example.test/dash",
    "out of the app's path": "https://app.example.test/dash/../admin",
    "leading space": " https://evil.example",
}
ALLOWED = [APP, f"{APP}/reports?id=7", "/console", "/console/x"]


@pytest.mark.parametrize("destination", list(OFF_SITE.values()), ids=list(OFF_SITE))
def test_login_refuses_an_off_site_destination_and_keeps_the_token(
        world: ConsoleWorld, destination: str) -> None:
    token = signin_token(world.broker, world.assume())
    with browser(world.broker) as client:
        r = login(client, token, destination)
        error_page(r, 400, "Destination is not an allowed destination")
        assert not set_cookies(r)  # nor a header smuggled in
        # The token was not spent on the refusal: the honest destination signs in with it.
        signed_in(login(client, token, APP), APP)


@pytest.mark.parametrize("destination", ALLOWED)
def test_login_follows_an_allowed_destination(world: ConsoleWorld, destination: str) -> None:
    with browser(world.broker) as client:
        r = login(client, signin_token(world.broker, world.assume()), destination)
        secured(r)
        signed_in(r, destination)


def test_login_follows_the_broker_s_own_console_url(world: ConsoleWorld) -> None:
    where = f"{world.broker.url}/console"
    with browser(world.broker) as client:
        signed_in(login(client, signin_token(world.broker, world.assume()), where), where)


@pytest.mark.parametrize("issuer", list(OFF_SITE.values()), ids=list(OFF_SITE))
def test_login_refuses_an_off_site_issuer_and_keeps_the_token(
        world: ConsoleWorld, issuer: str) -> None:
    token = signin_token(world.broker, world.assume())
    with browser(world.broker) as client:
        r = login(client, token, "/console", issuer)
        error_page(r, 400, "Issuer is not an allowed destination")
        assert not set_cookies(r)
        signed_in(login(client, token, "/console", PORTAL))
        # The console links back to the Issuer it was given, and only that.
        doc = lxml.html.fromstring(client.get("/console").text)
        links = doc.xpath("//a[.='Back to where you signed in']/@href")
    assert links == [PORTAL]


@pytest.mark.parametrize("destination", list(OFF_SITE.values()), ids=list(OFF_SITE))
def test_logout_refuses_an_off_site_destination(world: ConsoleWorld, destination: str) -> None:
    with browser(world.broker) as client:
        sign_in(world, client)
        r = client.get("/federation", params={"Action": "logout", "Destination": destination})
        error_page(r, 400, "not an allowed destination")
        assert not set_cookies(r)
        r = client.get("/federation", params={"Action": "logout", "Destination": APP})
        assert (r.status_code, r.headers["location"]) == (303, APP)
        secured(r)


@pytest.mark.parametrize("relay_state", list(OFF_SITE.values()), ids=list(OFF_SITE))
def test_saml_sign_in_ignores_an_off_site_relay_state(saml: SamlWorld, relay_state: str) -> None:
    with browser(saml.broker) as client:
        r = client.post("/saml", data={"SAMLResponse": encode(saml.response()),
                                       "RelayState": relay_state})
        signed_in(r, "/console")
        assert set(set_cookies(r)) <= {SESSION, "broker-saml-request"}


@pytest.mark.parametrize("relay_state", ALLOWED)
def test_saml_sign_in_follows_an_allowed_relay_state(saml: SamlWorld, relay_state: str) -> None:
    with browser(saml.broker) as client:
        r = client.post("/saml", data={"SAMLResponse": encode(saml.response()),
                                       "RelayState": relay_state})
        signed_in(r, relay_state)


# -- 2. sign-in tokens: one use, fifteen minutes ------------------------------------------------

def test_a_token_signs_in_once(world: ConsoleWorld) -> None:
    token = signin_token(world.broker, world.assume())
    with browser(world.broker) as client:
        first = signed_in(login(client, token))
        error_page(login(client, token), 400, "InvalidSigninToken")
    with browser(world.broker) as other:  # nor in another browser
        error_page(login(other, token), 400, "InvalidSigninToken")
    assert console(world.broker, first).status_code == 200


def race(brokers: list[Broker], token: str, n: int = 20) -> list[str]:
    """``n`` logins with one token at once, spread over ``brokers``; the cookies they set."""
    start = threading.Barrier(n)
    cookies: list[str] = []
    refused: list[int] = []

    def send(i: int) -> None:
        with browser(brokers[i % len(brokers)]) as client:
            start.wait()
            r = login(client, token)
            if r.status_code == 303:
                cookies.append(signed_in(r))
            else:
                error_page(r, 400, "InvalidSigninToken")
                refused.append(r.status_code)

    together(send, n)
    assert len(cookies) + len(refused) == n  # every request was answered, as expected
    return cookies


def test_twenty_concurrent_logins_with_one_token_sign_in_once(world: ConsoleWorld) -> None:
    winners = race([world.broker], signin_token(world.broker, world.assume()))
    assert len(winners) == 1
    assert read_console(console(world.broker, winners[0])).arn == assumed_arn(world.role_arn)
    # The control: twenty tokens, twenty sessions.
    tokens = [signin_token(world.broker, world.assume()) for _ in range(20)]
    won: list[str] = []
    start = threading.Barrier(20)

    def send(i: int) -> None:
        with browser(world.broker) as client:
            start.wait()
            won.append(signed_in(login(client, tokens[i])))

    together(send, 20)
    assert len(set(won)) == 20


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, redis_url: str
           ) -> Iterator[tuple[ConsoleWorld, Broker]]:
    """Two broker servers, each with its own runtime and event loop, sharing one keyring,
    one database and one Redis: replicas behind a load balancer, in this process."""
    env = console_env(BROKER_STORE_EPHEMERAL_URL=redis_url,
                      BROKER_STORE_REDIS_PREFIX=f"test-console-{uuid.uuid4().hex[:8]}:")
    a = start_broker(tmp_path_factory.mktemp("shared"), env=env)
    server = ServerThread(create_app(a.settings), a.settings).start()
    b = Broker(a.settings, a.root, a.account_id, server)
    yield ConsoleWorld.make(a), b
    b.stop()
    a.stop()


def test_concurrent_logins_on_two_servers_sharing_redis_sign_in_once(
        shared: tuple[ConsoleWorld, Broker]) -> None:
    world, other = shared
    a = world.broker
    # The control: a token made on one server signs in on the other, and the session is seen
    # by both.
    with browser(other) as client:
        cookie = signed_in(login(client, signin_token(a, world.assume())))
    assert console(a, cookie).status_code == 200 and console(other, cookie).status_code == 200
    winners = race([a, other], signin_token(a, world.assume()))
    assert len(winners) == 1
    assert console(a, winners[0]).status_code == 200
    assert console(other, winners[0]).status_code == 200


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ConsoleWorld, FixedClock]]:
    clock = FixedClock(datetime.now(UTC))
    broker = start_broker(tmp_path_factory.mktemp("clocked"), clock=clock, env=console_env())
    yield ConsoleWorld.make(broker), clock
    broker.stop()


def test_a_token_expires_after_fifteen_minutes(clocked: tuple[ConsoleWorld, FixedClock]) -> None:
    world, clock = clocked
    creds = world.assume(seconds=3600)  # the credentials outlive the tokens
    honest, late = signin_token(world.broker, creds), signin_token(world.broker, creds)
    clock.advance(899)
    with browser(world.broker) as client:
        signed_in(login(client, honest))
    clock.advance(1)
    with browser(world.broker) as client:
        error_page(login(client, late), 400, "InvalidSigninToken")
        # The credentials themselves still make a token, which signs in.
        signed_in(login(client, signin_token(world.broker, creds)))


# -- 3. session fixation and replay -------------------------------------------------------------

def test_login_replaces_a_cookie_the_attacker_planted(world: ConsoleWorld) -> None:
    with browser(world.broker) as client:
        attacker = signed_in(login(client, signin_token(world.broker, world.federate("mallory"))))
    for planted in ("attacker-chosen-session-value", attacker):
        with browser(world.broker) as victim:
            r = login(victim, signin_token(world.broker, world.assume()),
                      Cookie=f"{SESSION}={planted}")
            mine = signed_in(r)
        assert mine != planted
        assert read_console(console(world.broker, mine)).arn == assumed_arn(world.role_arn)
    assert console(world.broker, "attacker-chosen-session-value").status_code == 401
    # The attacker's own cookie still opens only the attacker's own session.
    assert read_console(console(world.broker, attacker)).arn == world.federated_arn("mallory")


def signed_out(world: ConsoleWorld, cookie: str) -> None:
    page = console(world.broker, cookie)
    assert page.status_code == 401 and "not signed in" in page.text
    secured(page)
    assert gateway(world.broker, cookie).status_code == 401


def test_a_cookie_replayed_after_console_sign_out_is_refused(world: ConsoleWorld) -> None:
    with browser(world.broker) as client:
        cookie = sign_in(world, client)
        assert console(world.broker, cookie).status_code == 200  # the control
        allowed = gateway(world.broker, cookie)
        assert allowed.status_code == 200
        assert allowed.headers["x-broker-principal-arn"] == assumed_arn(world.role_arn)
        csrf = read_console(client.get("/console")).csrf
        r = client.post("/console/signout", data={"csrf": csrf})
        assert r.status_code == 200 and "Signed out" in r.text
        secured(r)
        assert set_cookies(r)[SESSION].value == ""
    signed_out(world, cookie)


@pytest.mark.parametrize("destination", [None, APP])
def test_a_cookie_replayed_after_federation_logout_is_refused(
        world: ConsoleWorld, destination: str | None) -> None:
    with browser(world.broker) as client:
        cookie = sign_in(world, client)
        assert gateway(world.broker, cookie).status_code == 200
        params = {"Action": "logout"}
        if destination:
            params["Destination"] = destination
        r = client.get("/federation", params=params)
        secured(r)
        if destination:
            assert (r.status_code, r.headers["location"]) == (303, destination)
        else:
            assert r.status_code == 200 and "Signed out" in r.text
        assert set_cookies(r)[SESSION].value == ""
    signed_out(world, cookie)


# -- 4. cross-site forms ------------------------------------------------------------------------

def hidden_csrf(page: httpx.Response, action: str) -> str:
    doc = lxml.html.fromstring(page.text)
    return str(doc.xpath(f"//form[@action='{action}']//input[@name='csrf']/@value")[0])


ALICE = {"person": "alice", "password": "Demo-alice-1"}


def test_dev_sign_in_needs_this_browser_s_login_cookie_and_token(dev: Broker) -> None:
    with browser(dev) as attacker:
        theirs = hidden_csrf(attacker.get("/dev/signin"), "/dev/signin")
    with browser(dev) as victim:
        # A page of another site posts the form: no login cookie, no token.
        cross = {"Origin": "https://evil.example", "Referer": "https://evil.example/"}
        r = victim.post("/dev/signin", data=ALICE, headers=cross)
        error_page(r, 403, "CSRF")
        assert not set_cookies(r)
        # ... or the attacker's own token, which is bound to the attacker's cookie.
        r = victim.post("/dev/signin", data={**ALICE, "csrf": theirs}, headers=cross)
        error_page(r, 403, "CSRF")
        mine = hidden_csrf(victim.get("/dev/signin"), "/dev/signin")
        assert victim.cookies.get(LOGIN_COOKIE)
        for token in (theirs, mine[::-1], ""):
            r = victim.post("/dev/signin", data={**ALICE, "csrf": token})
            error_page(r, 403, "CSRF")
            assert not set_cookies(r)
        # The control: this browser's own pair.
        r = victim.post("/dev/signin", data={**ALICE, "csrf": mine})
        assert r.status_code == 200, r.text
        secured(r)
        assert SESSION not in set_cookies(r) and DEMO_CHOICE in set_cookies(r)
        choice = hidden_csrf(r, "/dev/choose")
        role = lxml.html.fromstring(r.text).xpath("//input[@name='role']/@value")[0]
        for token in (choice[::-1], ""):
            error_page(victim.post("/dev/choose", data={"csrf": token, "role": role}), 403,
                       "CSRF")
        r = victim.post("/dev/choose", data={"csrf": choice, "role": role})
        secured(r)
        signed_in(r)


def test_switch_role_needs_the_session_s_form_token(world: ConsoleWorld) -> None:
    with browser(world.broker) as attacker:
        sign_in(world, attacker, name="mallory")
        theirs = read_console(attacker.get("/console")).csrf
    with browser(world.broker) as client:
        old = sign_in(world, client)
        mine = read_console(client.get("/console")).csrf
        for token in (None, "", theirs, mine[::-1]):
            data = {"role_arn": world.chained_arn, "session_name": "alice"}
            if token is not None:
                data["csrf"] = token
            error_page(client.post("/console/switch-role", data=data), 403, "CSRF")
        assert read_console(client.get("/console")).arn == assumed_arn(world.role_arn)
        r = client.post("/console/switch-role", data={"csrf": mine, "role_arn": world.chained_arn,
                                                      "session_name": "alice"})
        secured(r)
        new = signed_in(r, "/console?switched=1")
    assert read_console(console(world.broker, new)).arn == assumed_arn(world.chained_arn)
    assert console(world.broker, old).status_code == 401  # the old session ended


def test_sign_out_needs_the_session_s_form_token(world: ConsoleWorld) -> None:
    with browser(world.broker) as attacker:
        sign_in(world, attacker, name="mallory")
        theirs = read_console(attacker.get("/console")).csrf
    with browser(world.broker) as client:
        cookie = sign_in(world, client)
        mine = read_console(client.get("/console")).csrf
        for data in ({"other": "1"}, {"csrf": ""}, {"csrf": theirs}, {"csrf": mine[::-1]}):
            error_page(client.post("/console/signout", data=data), 403, "CSRF")
        assert console(world.broker, cookie).status_code == 200
        assert client.post("/console/signout", data={"csrf": mine}).status_code == 200
    signed_out(world, cookie)


def test_the_saml_role_chooser_needs_its_form_token(world: ConsoleWorld) -> None:
    multi = SamlWorld.make(world.broker, roles=("a", "b"))
    role = f"{multi.roles['b']},{multi.provider_arn}"

    def chooser(client: httpx.Client) -> str:
        r = client.post("/saml", data={"SAMLResponse": encode(multi.response())})
        assert r.status_code == 200 and SAML_CHOICE in set_cookies(r), r.text
        return hidden_csrf(r, "/saml/choose")

    with browser(world.broker) as client:
        csrf = chooser(client)
        error_page(client.post("/saml/choose", data={"csrf": csrf[::-1], "role": role}), 400,
                   "CSRF")
        chooser(client)
        error_page(client.post("/saml/choose", data={"role": role}), 400, "sign in again")
        csrf = chooser(client)
        with browser(world.broker) as elsewhere:  # the form without the browser's cookie
            error_page(elsewhere.post("/saml/choose", data={"csrf": csrf, "role": role}), 400)
        r = client.post("/saml/choose", data={"csrf": chooser(client), "role": role})
        cookie = signed_in(r)
    assert read_console(console(world.broker, cookie)).arn == assumed_arn(multi.roles["b"])


# -- 5. headers and logs ------------------------------------------------------------------------

def test_every_page_carries_the_security_headers(world: ConsoleWorld, saml: SamlWorld,
                                                 dev: Broker) -> None:
    answers: list[httpx.Response] = []
    with browser(world.broker) as client:
        answers.append(client.get("/console"))  # 401
        answers.append(get_token(client, session_param(world.assume())))
        token = answers[-1].json()["SigninToken"]
        answers.append(login(client, token, "//evil.example"))  # the error page
        answers.append(login(client, token))  # the redirect
        answers.append(login(client, token))  # spent
        answers.append(client.get("/console"))
        answers.append(client.get("/federation", params={"Action": "nonsense"}))
        answers.append(client.get("/federation", params={"Action": "logout"}))
    with browser(saml.broker) as client:
        answers.append(client.post("/saml", data={"SAMLResponse": encode(saml.response())}))
    with browser(dev) as client:
        page = client.get("/dev/signin")
        answers.append(page)
        answers.append(client.post("/dev/signin", data=ALICE))  # refused
        answers.append(client.post("/dev/signin", data={
            **ALICE, "csrf": hidden_csrf(page, "/dev/signin")}))  # the chooser
    assert [r.status_code for r in answers] == [401, 200, 400, 303, 400, 200, 400, 200, 303,
                                                200, 403, 200]
    for r in answers:
        secured(r)
        assert r.headers["x-content-type-options"] == "nosniff"


def logged(records: list[logging.LogRecord]) -> str:
    """What the broker's loggers wrote, and the same decoded (a secret in a URL is encoded)."""
    text = "\n".join(r.getMessage() for r in records
                     if r.name.split(".")[0] in ("broker", "uvicorn"))
    return text + "\n" + unquote_plus(text)


def test_the_access_log_redacts_tokens_and_credentials(
        world: ConsoleWorld, caplog: pytest.LogCaptureFixture) -> None:
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    caplog.set_level(logging.DEBUG, logger="broker")
    creds = world.assume()
    try:
        with browser(world.broker) as client:
            token = get_token(client, session_param(creds)).json()["SigninToken"]
            signed_in(login(client, token, issuer=PORTAL))
            error_page(login(client, token), 400)
            client.get("/federation", params=[("Action", "login"), ("SigninToken", token),
                                              ("SigninToken", token), ("Destination", "/")])
    finally:
        access.removeHandler(caplog.handler)
    text = logged(caplog.records)
    assert "SigninToken=(redacted)" in text and "Session=(redacted)" in text  # it was on
    assert creds.session_token is not None
    for secret in (token, creds.secret_access_key, creds.session_token):
        assert secret not in text


@pytest.mark.parametrize("name", ["Sess%69on", "%53ession"])
def test_a_percent_encoded_parameter_name_does_not_leak_credentials(
        world: ConsoleWorld, caplog: pytest.LogCaptureFixture, name: str) -> None:
    """The endpoint decodes parameter names, so the log must not be fooled by their encoding:
    whatever the broker accepts as the Session is kept out of the log."""
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    creds = world.assume()
    try:
        with browser(world.broker) as client:
            r = client.get(f"/federation?Action=getSigninToken&{name}="
                           f"{quote(session_param(creds), safe='')}")
    finally:
        access.removeHandler(caplog.handler)
    assert r.status_code == 200, r.text  # the broker took it as the Session
    text = logged(caplog.records)
    assert "getSigninToken" in text  # the log was on
    assert creds.session_token is not None
    assert creds.secret_access_key not in text
    assert creds.session_token not in text


def test_a_percent_encoded_token_name_does_not_leak_the_token(
        world: ConsoleWorld, caplog: pytest.LogCaptureFixture) -> None:
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    token = signin_token(world.broker, world.assume())
    try:
        with browser(world.broker) as client:
            r = client.get(f"/federation?Action=login&Destination=%2Fconsole&SigninT%6Fken={token}")
    finally:
        access.removeHandler(caplog.handler)
    signed_in(r)  # the broker took it as the SigninToken
    text = logged(caplog.records)
    assert "Action=login" in text  # the log was on
    assert token not in text
