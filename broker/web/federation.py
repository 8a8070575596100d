"""The federation endpoint, as AWS's ``https://signin.aws.amazon.com/federation``:

* ``GET /federation?Action=getSigninToken&Session=...[&SessionDuration=...]`` → JSON
  ``{"SigninToken": "..."}``, good for 15 minutes and one use;
* ``GET /federation?Action=login&Issuer=...&Destination=...&SigninToken=...`` → a console
  session (a new cookie) and a redirect to Destination, if Destination (and Issuer, a link
  back to the sign-in page the person came from) are allowed destinations;
* ``GET /federation?Action=logout[&Destination=...]`` → the session ends.

Parsing and rendering only; the use case is broker.signin.federation. Refusals of
getSigninToken are JSON (its callers are programs); those of login and logout are pages. Both
write audit lines, issued or refused: ``GetSigninToken`` and ``ConsoleLogin`` (CloudTrail's
names for the same events); the sign-in token itself is never written anywhere.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.aws.errors import (
    AccessDenied,
    AwsError,
    InternalFailure,
    InvalidParameterValue,
    MissingParameter,
    ServiceUnavailable,
)
from broker.aws.ids import new_request_id
from broker.errors import StoreUnavailable
from broker.principal import Principal
from broker.signin.destinations import Destinations
from broker.signin.federation import Federation
from broker.web.pages import (
    SECURITY_HEADERS,
    audit_browser,
    error_page,
    guarded,
    json_error,
    page,
    query,
    redirect,
)
from broker.web.signin import end_session, origin_of, session_cookie, start_session

ACTIONS = ("getSigninToken", "login", "logout")
_SECONDS = re.compile(r"[0-9]{1,6}")
log = logging.getLogger("broker.web")


def _federation(request: Request) -> Federation:
    federation: Federation = request.app.state.runtime.federation_endpoint
    return federation


def _destinations(request: Request) -> Destinations:
    destinations: Destinations = request.app.state.runtime.destinations
    return destinations


def _one(request: Request, name: str, *, required: bool = True) -> str | None:
    values = query(request).get(name, [])
    if len(values) > 1:
        raise InvalidParameterValue(f"The parameter {name} is given more than once.")
    if not values or values[0] == "":
        if required:
            raise MissingParameter(f"The request must contain the parameter {name}.")
        return None
    return values[0]


async def federation(request: Request) -> Response:
    try:
        actions = query(request).get("Action", [])
    except AwsError as exc:
        return error_page(exc, heading="Federation request refused")
    action = actions[0] if len(actions) == 1 else None
    if action == "getSigninToken":
        return await signin_token(request)
    if action == "login":
        return await login(request)
    if action == "logout":
        return await logout(request)
    return error_page(InvalidParameterValue(
        f"Action must be one of {', '.join(ACTIONS)}."), heading="Federation request refused")


async def signin_token(request: Request) -> Response:
    error_id = new_request_id()
    federation = _federation(request)
    who: tuple[str, str, str] | None = None
    try:
        session = _one(request, "Session")
        assert session is not None
        raw = _one(request, "SessionDuration", required=False)
        if raw is not None and not _SECONDS.fullmatch(raw):
            raise InvalidParameterValue("SessionDuration must be a number of seconds.")
        verified, session_token = federation.verify(session)
        request.app.state.runtime.audit.ready()  # refused before a token is made
        who = (verified.arn, verified.account_id, verified.access_key_id)
        token = await federation.signin_token(verified, session_token,
                                              int(raw) if raw is not None else None,
                                              origin_of(request))
        # Within the try: a token is never answered without its audit line (an audit sink
        # that cannot write is an outage, as a store is).
        audit_browser(request, "GetSigninToken", error_id, who)
    except AwsError as exc:
        try:
            audit_browser(request, "GetSigninToken", error_id, who, error=exc)
        except StoreUnavailable:
            return _unavailable(error_id)
        return json_error(exc, error_id)
    except StoreUnavailable:
        return _unavailable(error_id)
    except Exception:
        log.exception("getSigninToken %s: unexpected failure", error_id)
        return json_error(InternalFailure("The broker could not complete the request."),
                          error_id)
    return JSONResponse({"SigninToken": token}, headers=SECURITY_HEADERS)


def _unavailable(error_id: str) -> Response:
    log.error("getSigninToken %s: store unavailable", error_id)
    return json_error(ServiceUnavailable("The service is unavailable. Please try again "
                                         "later."), error_id)


@guarded
async def login(request: Request) -> Response:
    destinations = _destinations(request)
    destination = _one(request, "Destination")
    assert destination is not None
    issuer = _one(request, "Issuer", required=False)
    signin_token = _one(request, "SigninToken")
    assert signin_token is not None
    # Where the browser may go is decided before the token is spent.
    target = destinations.check(destination)
    if target is None:
        raise InvalidParameterValue(
            "The Destination is not an allowed destination: the broker's console or an "
            "application the administrator configured.")
    if issuer is not None and destinations.check(issuer) is None:
        raise InvalidParameterValue(
            "The Issuer is not an allowed destination: the broker links back to it, so it "
            "must be a URL the administrator configured.")
    # An audit sink known to be down refuses before the token is spent (the line of this
    # sign-in could not be written; the token still signs in once the sink is back).
    request.app.state.runtime.audit.ready()
    issued = await _federation(request).redeem(signin_token)
    request_id = new_request_id()
    if issued is None:
        audit_browser(request, "ConsoleLogin", request_id, None, error=InvalidParameterValue(
            "The sign-in token is not valid."))
        return page("error.html", 400, heading="Sign-in refused",
                    message="The sign-in token is not valid: it has been used, has expired "
                            "(sign-in tokens last 15 minutes) or never existed. Sign in again.",
                    code="InvalidSigninToken", error_id=new_request_id())
    s = issued.session
    who = (s.arn, s.account_id, s.access_key_id)
    where = origin_of(request)
    if await request.app.state.runtime.authz.revoked(
            Principal.of_session(s), source_ip=where.source_ip, user_agent=where.user_agent,
            secure=where.secure):
        # Revoked in the minutes since the token was made.
        refusal = AccessDenied("These credentials may not sign in to the console: they were "
                               "revoked, or their role or user no longer exists.")
        audit_browser(request, "ConsoleLogin", request_id, who, error=refusal)
        raise refusal
    audit_browser(request, "ConsoleLogin", request_id, who, issued_key=s.access_key_id)
    sessions = request.app.state.runtime.console_sessions
    cookie = await sessions.create(issued, return_url=issuer or "")
    seconds = max(1, int(issued.session.expires_at - sessions.now()))
    return start_session(request, (cookie, seconds), target)


@guarded
async def logout(request: Request) -> Response:
    destination = _one(request, "Destination", required=False)
    target = _destinations(request).check(destination) if destination else None
    if destination is not None and target is None:
        raise InvalidParameterValue("The Destination is not an allowed destination.")
    await request.app.state.runtime.console_sessions.revoke(session_cookie(request))
    response = redirect(target) if target else page(
        "signed_out.html", heading="Signed out", message="Your console session has ended.")
    end_session(request, response)
    return response
