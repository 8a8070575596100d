"""The access portal's sign-in through an external identity provider (the use cases are
broker.identitycenter.sources'):

* ``GET /start/{id}/saml/metadata``  the instance's SAML SP metadata (entity id, ACS URL, the
                                     broker's encryption certificate), for the IdP;
* ``GET /start/{id}/saml/login``     SP-initiated sign-in: an AuthnRequest (HTTP-Redirect) to
                                     the IdP, ``next`` the portal page to return to;
* ``POST /start/{id}/saml/acs``      the assertion consumer service (``SAMLResponse``,
                                     ``RelayState``): SP- and IdP-initiated;
* ``GET /start/{id}/oidc/login``     the OpenID Connect provider's authorization request;
* ``GET /start/{id}/oidc/callback``  its answer (``code``, ``state``; or ``error``).

A sign-in ends in a portal session exactly as the directory's does (broker.web.portal's
cookie), then the page the person was going to. Parsing and rendering only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.aws.errors import AwsError, InvalidInput
from broker.aws.ids import new_request_id
from broker.identitycenter.sources import (
    REQUEST_SECONDS,
    ExternalSignIn,
    IdentitySources,
    next_path,
)
from broker.web.pages import (
    SECURITY_HEADERS,
    audit_browser,
    drop_cookie,
    form,
    guarded,
    query,
    read_cookie,
    redirect,
    set_cookie,
)
from broker.web.portal import NEXT_COOKIE, SESSION_COOKIE, _one, _portal, _start

SAML_COOKIE = "broker-portal-saml"
OIDC_COOKIE = "broker-portal-oidc"


def _sources(request: Request) -> IdentitySources:
    sources = _portal(request).sources
    assert sources is not None
    return sources


@guarded
async def saml_metadata(request: Request) -> Response:
    instance = await _portal(request).instance(request.path_params["identity_store_id"])
    return Response(_sources(request).sp_metadata(instance),
                    media_type="application/samlmetadata+xml", headers=SECURITY_HEADERS)


@guarded
async def saml_login(request: Request) -> Response:
    instance = await _portal(request).instance(request.path_params["identity_store_id"])
    location, browser = await _sources(request).saml_begin(
        instance, next_path(_one(query(request), "next")))
    response = redirect(location, 302)
    # The IdP answers with a cross-site POST: a SameSite=Lax cookie would not come back.
    set_cookie(request, response, SAML_COOKIE, browser, max_age=REQUEST_SECONDS,
               same_site="none")
    return response


@guarded
async def saml_acs(request: Request) -> Response:
    instance = await _portal(request).instance(request.path_params["identity_store_id"])
    fields = await form(request)
    encoded = fields.get("SAMLResponse", "")
    if not encoded:
        raise InvalidInput("The request carries no SAMLResponse.")
    request_id = new_request_id()
    try:
        signed = await _sources(request).saml_receive(
            instance, encoded, fields.get("RelayState") or None,
            read_cookie(request, SAML_COOKIE))
    except AwsError as exc:
        audit_browser(request, "UserAuthentication", request_id, None, error=exc)
        raise
    response = await _signed_in(request, instance.identity_store_id, signed, request_id)
    drop_cookie(request, response, SAML_COOKIE, same_site="none")
    return response


@guarded
async def oidc_login(request: Request) -> Response:
    instance = await _portal(request).instance(request.path_params["identity_store_id"])
    location, browser = await _sources(request).oidc_begin(
        instance, next_path(_one(query(request), "next")))
    response = redirect(location, 302)
    set_cookie(request, response, OIDC_COOKIE, browser, max_age=REQUEST_SECONDS)
    return response


@guarded
async def oidc_callback(request: Request) -> Response:
    instance = await _portal(request).instance(request.path_params["identity_store_id"])
    values = query(request)
    request_id = new_request_id()
    try:
        signed = await _sources(request).oidc_finish(
            instance, code=_one(values, "code"), state=_one(values, "state"),
            error=_one(values, "error"), error_description=_one(values, "error_description"),
            browser=read_cookie(request, OIDC_COOKIE))
    except AwsError as exc:
        audit_browser(request, "UserAuthentication", request_id, None, error=exc)
        raise
    response = await _signed_in(request, instance.identity_store_id, signed, request_id)
    drop_cookie(request, response, OIDC_COOKIE)
    return response


async def _signed_in(request: Request, identity_store_id: str, signed: ExternalSignIn,
                     request_id: str) -> Response:
    instance = await _portal(request).instance(identity_store_id)
    try:
        step = await _portal(request).external_sign_in(instance, signed)
    except AwsError as exc:
        audit_browser(request, "UserAuthentication", request_id, None, error=exc)
        raise
    audit_browser(request, "UserAuthentication", request_id, None,
                  subject=f"{identity_store_id}/{step.user_name}", mfa_used=False)
    # The IdP's answer is a cross-site POST (SAML): the portal's Lax cookie is set on this
    # answer and sent from the next (same-site) request on.
    response = redirect(signed.next or _start(identity_store_id))
    set_cookie(request, response, SESSION_COOKIE, step.handle, max_age=step.seconds)
    drop_cookie(request, response, NEXT_COOKIE)
    return response

