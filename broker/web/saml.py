"""The SAML endpoints a browser and an identity provider talk to.

* ``GET /saml/metadata``   the broker's SP metadata (entity id, ACS URL, encryption certificate)
* ``POST /saml``           the assertion consumer service: SAMLResponse + RelayState, as at AWS's
                           sign-in endpoint; ``Accept: application/json`` gets the role chooser
                           as JSON instead (nothing consumed, no session)
* ``POST /saml/choose``    the role chooser's form (CSRF token + the browser's choice cookie)
* ``GET /saml/login``      SP-initiated sign-in: ``?provider=NAME[&account=ID][&RelayState=]``

Parsing and rendering only; the use cases are broker.signin.saml.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.aws.errors import AwsError, InvalidIdentityToken
from broker.aws.ids import new_request_id
from broker.idp import sp
from broker.signin.saml import CHOICE_SECONDS, REQUEST_SECONDS, Offer, SamlSignIn
from broker.web.pages import (
    SECURITY_HEADERS,
    audit_browser,
    drop_cookie,
    form,
    guarded,
    page,
    query,
    read_cookie,
    redirect,
    set_cookie,
    wants_json,
)
from broker.web.signin import start_session

CHOICE_COOKIE = "broker-saml-choice"
REQUEST_COOKIE = "broker-saml-request"


def _signin(request: Request) -> SamlSignIn:
    signin: SamlSignIn = request.app.state.runtime.saml_signin
    return signin


async def metadata(request: Request) -> Response:
    runtime = request.app.state.runtime
    body = sp.metadata(runtime.settings.sp_entity_id, runtime.settings.acs_url,
                       runtime.sp_credentials)
    return Response(body, media_type="application/samlmetadata+xml")


@guarded
async def acs(request: Request) -> Response:
    fields = await form(request)
    encoded = fields.get("SAMLResponse")
    if not encoded:
        raise InvalidIdentityToken("The request carries no SAMLResponse.")
    relay_state = fields.get("RelayState") or None
    signin = _signin(request)
    if wants_json(request):
        offer = await signin.offer(encoded)
        return JSONResponse(_offer_json(offer), headers=SECURITY_HEADERS)
    offer = await signin.receive(encoded, read_cookie(request, REQUEST_COOKIE))
    if len(offer.roles) == 1:
        only = offer.roles[0]
        started = await _signed_in(request, signin, offer, only.role_arn, only.provider_arn)
        response = start_session(request, started, signin.destination(relay_state))
        drop_cookie(request, response, REQUEST_COOKIE, same_site="none")
        return response
    choice = await signin.hold(offer, relay_state)
    response = page("chooser.html", subject=offer.assertion.subject,
                    issuer=offer.assertion.issuer, accounts=offer.accounts(), csrf=choice.csrf)
    set_cookie(request, response, CHOICE_COOKIE, choice.handle, max_age=CHOICE_SECONDS)
    drop_cookie(request, response, REQUEST_COOKIE, same_site="none")
    return response


@guarded
async def choose(request: Request) -> Response:
    fields = await form(request)
    signin = _signin(request)
    offer, relay_state = await signin.take_choice(read_cookie(request, CHOICE_COOKIE),
                                                  fields.get("csrf"))
    chosen = fields.get("role", "")
    role_arn, _, provider_arn = chosen.partition(",")
    started = await _signed_in(request, signin, offer, role_arn, provider_arn)
    response = start_session(request, started, signin.destination(relay_state))
    drop_cookie(request, response, CHOICE_COOKIE)
    return response


@guarded
async def login(request: Request) -> Response:
    params = query(request)
    provider = _only(params, "provider")
    if not provider:
        raise InvalidIdentityToken("Say which identity provider to sign in with: "
                                   "/saml/login?provider=NAME.")
    account = _only(params, "account") or None
    relay_state = _only(params, "RelayState") or None
    location, browser = await _signin(request).begin(provider, account, relay_state)
    response = redirect(location, 302)
    # The identity provider answers with a cross-site POST: a SameSite=Lax cookie would not
    # come back with it.
    set_cookie(request, response, REQUEST_COOKIE, browser, max_age=REQUEST_SECONDS,
               same_site="none")
    return response


def _only(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise InvalidIdentityToken(f"The parameter {name} is given more than once.")
    return values[0] if values else None


async def _signed_in(request: Request, signin: SamlSignIn, offer: Offer, role_arn: str,
                     provider_arn: str) -> tuple[str, int]:
    """sign_in, with its audit line (ConsoleLogin), issued or refused."""
    request_id = new_request_id()
    try:
        started = await signin.sign_in(offer, role_arn, provider_arn)
    except AwsError as exc:
        audit_browser(request, "ConsoleLogin", request_id, None, error=exc)
        raise
    session = await request.app.state.runtime.console_sessions.get(started[0])
    audit_browser(request, "ConsoleLogin", request_id, None,
                  issued_key=session.access_key_id if session else None,
                  subject=session.arn if session else None)
    return started


def _offer_json(offer: Offer) -> dict[str, object]:
    a = offer.assertion
    return {
        "subject": a.subject,
        "issuer": a.issuer,
        "expiration": a.not_on_or_after.isoformat().replace("+00:00", "Z"),
        "accounts": [{"accountId": account, "accountAlias": alias,
                      "roles": [r.json() for r in roles]}
                     for account, alias, roles in offer.accounts()],
        "roles": [r.json() for r in offer.roles],
    }
