"""The federation endpoint with AWS's semantics (``/federation``: getSigninToken, login,
logout), driven with httpx against the real server. Every refusal sits beside an honest
control built from the same world."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.clock import FixedClock
from tests.console_world import (
    SESSION,
    ConsoleWorld,
    assumed_arn,
    browser,
    console,
    console_env,
    error_page,
    get_token,
    json_error,
    login,
    read_console,
    session_param,
    set_cookies,
    signed_in,
    signin_token,
)
from tests.helpers import Creds, start_broker


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    broker = start_broker(tmp_path_factory.mktemp("federation"), env=console_env())
    yield ConsoleWorld.make(broker)
    broker.stop()


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ConsoleWorld, FixedClock]]:
    """A broker on a clock the test moves (it starts at the real time, so boto3's signatures
    are good until the test moves it)."""
    clock = FixedClock(datetime.now(UTC))
    broker = start_broker(tmp_path_factory.mktemp("clocked"), clock=clock, env=console_env())
    yield ConsoleWorld.make(broker), clock
    broker.stop()


def caller(world: ConsoleWorld, creds: Creds) -> str:
    arn: str = world.broker.client("sts", creds).get_caller_identity()["Arn"]
    return arn


# -- 1. the credentials that sign in ----------------------------------------------------------

def test_assume_role_credentials_sign_in_to_the_console(world: ConsoleWorld) -> None:
    creds = world.assume()
    with browser(world.broker) as client:
        r = get_token(client, session_param(creds))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert "no-store" in r.headers["cache-control"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert set(r.json()) == {"SigninToken"}
        assert client.get("/console").status_code == 401  # not yet
        cookie = signed_in(login(client, r.json()["SigninToken"]))
        page = read_console(client.get("/console"))
    assert page.arn == assumed_arn(world.role_arn)
    # Without SessionDuration the console holds the very credentials, for as long as they last.
    assert page.access_key_id == creds.access_key_id
    assert abs(page.expires_at - (time.time() + 3600)) < 30
    assert console(world.broker, cookie).status_code == 200


def test_federation_token_credentials_sign_in_to_the_console(world: ConsoleWorld) -> None:
    creds = world.federate("bob")
    token = signin_token(world.broker, creds)
    with browser(world.broker) as client:
        signed_in(login(client, token))
        page = read_console(client.get("/console"))
    assert page.arn == world.federated_arn("bob")
    assert page.access_key_id == creds.access_key_id


def test_long_term_keys_are_refused(world: ConsoleWorld) -> None:
    user = world.user
    root = world.broker.root
    session = world.assume()
    with browser(world.broker) as client:
        # An access key with no session token: not temporary credentials at all.
        for keys in (user, root):
            bare = json.dumps({"sessionId": keys.access_key_id,
                               "sessionKey": keys.secret_access_key})
            json_error(get_token(client, bare), 400, "InvalidParameterValue")
        # The long-term key's id and secret beside a real session's token.
        mixed = session_param(session, sessionId=user.access_key_id,
                              sessionKey=user.secret_access_key)
        json_error(get_token(client, mixed), 403, "AccessDenied")
        # The control: the session's own three values.
        assert get_token(client, session_param(session)).status_code == 200


def test_get_session_token_credentials_are_refused(world: ConsoleWorld) -> None:
    creds = world.session_token()
    assert caller(world, creds) == world.user_arn  # good credentials, for API calls
    with browser(world.broker) as client:
        message = json_error(get_token(client, session_param(creds)), 403, "AccessDenied")
        assert "GetSessionToken" in message
        assert get_token(client, session_param(world.assume())).status_code == 200


def test_a_wrong_session_key_is_refused(world: ConsoleWorld) -> None:
    creds, other = world.assume(), world.assume(name="mallory")
    wrong = creds.secret_access_key[:-1] + ("A" if creds.secret_access_key[-1] != "A" else "B")
    with browser(world.broker) as client:
        for key in (wrong, other.secret_access_key, creds.secret_access_key + "x", "x"):
            json_error(get_token(client, session_param(creds, sessionKey=key)), 403,
                       "AccessDenied")
        # Another session's id with this session's token: the token is bound to its key id.
        json_error(get_token(client, session_param(creds, sessionId=other.access_key_id)), 403,
                   "AccessDenied")
        assert get_token(client, session_param(creds)).status_code == 200


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def test_a_tampered_session_token_is_refused(world: ConsoleWorld) -> None:
    creds = world.assume()
    token = creds.session_token
    assert token is not None
    with browser(world.broker) as client:
        for bad in (flip(token, len(token) // 2), flip(token, 10), flip(token, len(token) - 5),
                    token[:-8], token + "AAAA", "not-a-token"):
            json_error(get_token(client, session_param(creds, sessionToken=bad)), 403,
                       "AccessDenied")
        assert get_token(client, session_param(creds)).status_code == 200


def test_expired_credentials_are_refused(clocked: tuple[ConsoleWorld, FixedClock]) -> None:
    world, clock = clocked
    creds = world.assume(seconds=900)
    with browser(world.broker) as client:
        assert get_token(client, session_param(creds)).status_code == 200
        clock.advance(899)
        assert get_token(client, session_param(creds)).status_code == 200
        clock.advance(1)
        json_error(get_token(client, session_param(creds)), 403, "ExpiredToken")


# -- 2. malformed requests ----------------------------------------------------------------------

GOOD = {"sessionId": "ASIAEXAMPLE", "sessionKey": "secret", "sessionToken": "token"}
MALFORMED = {
    "not JSON": "sessionId=ASIA",
    "truncated JSON": '{"sessionId": "ASIA"',
    "a list": json.dumps(list(GOOD.values())),
    "a string": json.dumps("ASIA"),
    "null": "null",
    "a number": "7",
    "no sessionId": json.dumps({k: v for k, v in GOOD.items() if k != "sessionId"}),
    "no sessionKey": json.dumps({k: v for k, v in GOOD.items() if k != "sessionKey"}),
    "no sessionToken": json.dumps({k: v for k, v in GOOD.items() if k != "sessionToken"}),
    "numbers": json.dumps({"sessionId": 1, "sessionKey": 2, "sessionToken": 3}),
    "a nested value": json.dumps({**GOOD, "sessionToken": {"value": "token"}}),
    "empty strings": json.dumps(dict.fromkeys(GOOD, "")),
    "AWS's names in other case": json.dumps({k.lower(): v for k, v in GOOD.items()}),
    "deeply nested": "[" * 2000 + "]" * 2000,
    "too long": json.dumps({**GOOD, "sessionToken": "t" * 9000}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_session_is_refused(world: ConsoleWorld, case: str) -> None:
    with browser(world.broker) as client:
        json_error(get_token(client, MALFORMED[case]), 400, "InvalidParameterValue")


def test_non_ascii_credentials_are_refused(world: ConsoleWorld) -> None:
    creds = world.assume()
    assert creds.session_token is not None
    with browser(world.broker) as client:
        for field, value in (("sessionId", "ASIAé"), ("sessionKey", "clé"),
                             ("sessionToken", creds.session_token[:-1] + "é")):
            json_error(get_token(client, session_param(creds, **{field: value})), 403,
                       "AccessDenied")
        assert get_token(client, session_param(creds)).status_code == 200


@pytest.mark.parametrize("field", ["sessionId", "sessionKey", "sessionToken"])
@pytest.mark.parametrize("half", [chr(0xD800), chr(0xDC00)], ids=["high", "low"])
def test_a_lone_surrogate_in_the_session_is_a_400_not_a_500(world: ConsoleWorld, field: str,
                                                          half: str) -> None:
    """Half a surrogate pair, as JSON writes it (``\\ud800``), after real credentials: a
    400 in getSigninToken's JSON, before anything compares or encodes it (a sessionKey
    carrying one answered 500, with a stack trace in the log, before). The control: the same
    credentials, honest, get a token."""
    creds = world.assume()
    with browser(world.broker) as client:
        spoiled = session_param(creds, **{field: json.loads(session_param(creds))[field] + half})
        assert "\\ud" in spoiled  # json.dumps wrote the escape
        message = json_error(get_token(client, spoiled), 400, "InvalidParameterValue")
        assert get_token(client, session_param(creds)).status_code == 200
    assert "surrogate" in message


def test_a_missing_session_is_refused(world: ConsoleWorld) -> None:
    with browser(world.broker) as client:
        json_error(get_token(client, None), 400, "MissingParameter")
        json_error(get_token(client, ""), 400, "MissingParameter")


def test_action_missing_or_unknown_is_refused(world: ConsoleWorld) -> None:
    session = session_param(world.assume())
    with browser(world.broker) as client:
        error_page(client.get("/federation", params={"Session": session}), 400,
                   "Action must be one of")
        for action in ("GetSigninToken", "getsignintoken", "signin", ""):
            error_page(client.get("/federation", params={"Action": action, "Session": session}),
                       400, "Action must be one of")
        # The method is GET, as at AWS.
        assert client.post("/federation", params={"Action": "getSigninToken",
                                                  "Session": session}).status_code == 405
        assert get_token(client, session).status_code == 200


def test_duplicate_parameters_are_refused(world: ConsoleWorld) -> None:
    creds = world.assume()
    session = session_param(creds)
    with browser(world.broker) as client:
        r = client.get("/federation", params=[("Action", "getSigninToken"),
                                              ("Session", session), ("Session", session)])
        assert "more than once" in json_error(r, 400, "InvalidParameterValue")
        r = client.get("/federation", params=[("Action", "getSigninToken"), ("Session", session),
                                              ("SessionDuration", "900"),
                                              ("SessionDuration", "900")])
        json_error(r, 400, "InvalidParameterValue")
        token = signin_token(world.broker, creds)
        for params in ([("Destination", "/console"), ("Destination", "/console")],
                       [("Destination", "/console"), ("SigninToken", token)],
                       [("Destination", "/console"), ("Issuer", "/console"),
                        ("Issuer", "/console")]):
            r = client.get("/federation", params=[("Action", "login"), ("SigninToken", token),
                                                  *params])
            error_page(r, 400, "more than once")
        # Nothing was spent: the token still signs in, once.
        signed_in(login(client, token))


def test_action_given_twice_is_refused(world: ConsoleWorld) -> None:
    """Action, given twice, is as ambiguous as any other parameter: which one was meant?"""
    session = session_param(world.assume())
    with browser(world.broker) as client:
        r = client.get("/federation", params=[("Action", "logout"),
                                              ("Action", "getSigninToken"),
                                              ("Session", session)])
        assert r.status_code == 400, (r.status_code, r.text)
        assert '"SigninToken"' not in r.text  # no token was issued
        assert get_token(client, session).status_code == 200


# -- 3. SessionDuration -------------------------------------------------------------------------

def test_session_duration_is_refused_for_federation_token_credentials(
        world: ConsoleWorld) -> None:
    creds = world.federate()
    with browser(world.broker) as client:
        message = json_error(get_token(client, session_param(creds), 900), 400,
                             "InvalidParameterValue")
        assert "GetFederationToken" in message
        assert get_token(client, session_param(creds)).status_code == 200


@pytest.mark.parametrize("duration", [
    "899", "43201", "0", "-900", "9e2", "900.0", " 900", "9" * 40,
    pytest.param("²", id="superscript-two"), pytest.param("٩٠٠", id="arabic-indic-900"),
])
def test_session_duration_out_of_range_or_not_a_number_is_refused(
        world: ConsoleWorld, duration: str) -> None:
    with browser(world.broker) as client:
        json_error(get_token(client, session_param(world.assume()), duration), 400,
                   "InvalidParameterValue")


@pytest.mark.parametrize("duration", [900, 7200])
def test_session_duration_gives_the_console_new_credentials_that_long(
        world: ConsoleWorld, duration: int) -> None:
    creds = world.assume()
    token = signin_token(world.broker, creds, duration)
    with browser(world.broker) as client:
        r = login(client, token)
        signed_in(r)
        assert abs(int(set_cookies(r)[SESSION]["max-age"]) - duration) < 30
        page = read_console(client.get("/console"))
    assert page.arn == assumed_arn(world.role_arn)
    assert abs(page.expires_at - (time.time() + duration)) < 30
    assert page.access_key_id != creds.access_key_id  # new keys, of the same role session
    assert caller(world, page.creds) == assumed_arn(world.role_arn)
    assert caller(world, creds) == assumed_arn(world.role_arn)  # the originals live on


def test_session_duration_above_the_role_s_maximum_is_refused(world: ConsoleWorld) -> None:
    creds = world.assume()
    with browser(world.broker) as client:
        for duration in (7201, 43200):
            message = json_error(get_token(client, session_param(creds), duration), 400,
                                 "InvalidParameterValue")
            assert "MaxSessionDuration" in message
        assert get_token(client, session_param(creds), 7200).status_code == 200


def test_a_chained_role_session_may_ask_for_an_hour_at_most(world: ConsoleWorld) -> None:
    creds = world.chain()
    with browser(world.broker) as client:
        message = json_error(get_token(client, session_param(creds), 3601), 400,
                             "InvalidParameterValue")
        assert "chaining" in message
        r = get_token(client, session_param(creds), 3600)
        assert r.status_code == 200, r.text
        signed_in(login(client, r.json()["SigninToken"]))
        page = read_console(client.get("/console"))
    assert page.arn == assumed_arn(world.chained_arn)
    assert abs(page.expires_at - (time.time() + 3600)) < 30


# -- 4. the response and the logs ---------------------------------------------------------------

def test_the_token_is_never_logged(world: ConsoleWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    creds = world.assume()
    try:
        with browser(world.broker) as client:
            r = get_token(client, session_param(creds))
            token = r.json()["SigninToken"]
            signed_in(login(client, token, issuer="https://portal.example.test/signin"))
            error_page(login(client, token), 400, "not valid")  # spent: logs a refusal
            json_error(get_token(client, session_param(creds, sessionKey="wrong")), 403,
                       "AccessDenied")
    finally:
        access.removeHandler(caplog.handler)
    # The broker's records (the test's own httpx client logs the URLs it asks for).
    text = "\n".join(record.getMessage() for record in caplog.records
                     if record.name.split(".")[0] in ("broker", "uvicorn"))
    assert "/federation?Action=getSigninToken&Session=(redacted)" in text  # the log was on
    audit = Path(world.broker.settings.audit.path).read_text()
    assert creds.session_token is not None
    for secret in (token, creds.secret_access_key, creds.session_token):
        assert secret not in text
        assert secret not in audit
