"""The broker's own sign-in pages (broker.signin.password):

* ``GET /signin``        the sign-in page: an IAM user (``account``, ``username``,
                         ``password``) or the root user (``email``, ``password``); it sets
                         the browser's sign-in cookie, which the forms' CSRF token is bound to;
* ``POST /signin``       the password; a console session, or the MFA step;
* ``POST /signin/change`` a forced password change (``password``, ``new_password``,
                         ``confirm_password``); then the MFA step or a console session;
* ``POST /signin/mfa``   a code of the user's MFA device (``code``), or a security key's
                         assertion (``assertion``, JSON; the page's script makes it); a
                         console session;
* ``POST /signin/enrol`` a root user without a device registers the one the page shows
                         (``code1``, ``code2``: two consecutive codes); a console session.

Every page works without JavaScript, except a security key's assertion. Parsing and
rendering only.
"""

from __future__ import annotations

import hmac

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from broker.aws.errors import AccessDenied, AwsError
from broker.aws.ids import new_request_id
from broker.signin.password import PasswordSignIn, Step
from broker.web.pages import (
    audit_browser,
    drop_cookie,
    form,
    form_page,
    form_token,
    guarded,
    page,
    read_cookie,
    set_cookie,
)
from broker.web.signin import start_session

BROWSER_COOKIE = "broker-signin"
MFA_COOKIE = "broker-signin-mfa"
CHANGE_COOKIE = "broker-signin-change"
ENROL_COOKIE = "broker-signin-enrol"


def _signin(request: Request) -> PasswordSignIn:
    signin: PasswordSignIn = request.app.state.runtime.password_signin
    return signin


def _check(fields: dict[str, str], secret: str | None, purpose: bytes) -> None:
    if not secret or len(secret) > 128 or not hmac.compare_digest(
            fields.get("csrf", "").encode(), form_token(secret, purpose).encode()):
        raise AccessDenied("The sign-in form is not this browser's (CSRF token mismatch): "
                           "open the sign-in page again.")


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


@guarded
async def signin_page(request: Request) -> Response:
    return form_page(request, BROWSER_COOKIE, b"signin", "signin.html")


@guarded
async def signin(request: Request) -> Response:
    fields = await form(request)
    browser = read_cookie(request, BROWSER_COOKIE)
    _check(fields, browser, b"signin")
    assert browser is not None
    root = fields.get("kind") == "root"
    request_id = new_request_id()
    try:
        step = await _signin(request).password(
            account=None if root else fields.get("account", "").strip(),
            user_name=None if root else fields.get("username", "").strip(),
            email=fields.get("email", "").strip() if root else None,
            password=fields.get("password", ""), source=_source(request), browser=browser)
    except AwsError as exc:
        audit_browser(request, "ConsoleLogin", request_id, None, error=exc, mfa_used=False)
        raise
    return _next(request, step, request_id)


def _next(request: Request, step: Step, request_id: str) -> Response:
    """After a step: the change-password page, the MFA page (or a root user's device to
    register), or the console."""
    if step.enrol is not None:
        assert step.seed is not None and step.uri is not None
        # The QR code inline (SVG markup segno writes from the URI): the page's
        # Content-Security-Policy loads no image from anywhere, data: URLs included.
        response = page("signin_enrol.html", csrf=form_token(step.enrol, b"signin-enrol"),
                        seed=step.seed, uri=step.uri,
                        # segno's markup of the broker's own URI (a Base32 seed, an
                        # account id): nothing in it comes from the request.
                        qr=Markup(segno.make(step.uri,  # noqa: S704
                                             error="m").svg_inline(scale=4)))
        set_cookie(request, response, ENROL_COOKIE, step.enrol, max_age=300)
        return response
    if step.change is not None:
        response = page("signin_change.html", csrf=form_token(step.change, b"signin-change"))
        set_cookie(request, response, CHANGE_COOKIE, step.change, max_age=300)
        return response
    if step.pending is not None:
        response = page("signin_mfa.html", csrf=form_token(step.pending, b"signin-mfa"),
                        totp=step.totp, webauthn=step.webauthn)
        set_cookie(request, response, MFA_COOKIE, step.pending, max_age=300)
        drop_cookie(request, response, CHANGE_COOKIE)
        return response
    return _signed_in(request, step, request_id, mfa=False)


@guarded
async def signin_enrol(request: Request) -> Response:
    fields = await form(request)
    handle = read_cookie(request, ENROL_COOKIE)
    _check(fields, handle, b"signin-enrol")
    request_id = new_request_id()
    try:
        step = await _signin(request).enrol(handle, read_cookie(request, BROWSER_COOKIE),
                                            fields.get("code1", "").strip(),
                                            fields.get("code2", "").strip())
    except AwsError as exc:
        audit_browser(request, "EnableMFADevice", request_id, None, error=exc)
        raise
    return _signed_in(request, step, request_id, mfa=True)


@guarded
async def signin_change(request: Request) -> Response:
    fields = await form(request)
    handle = read_cookie(request, CHANGE_COOKIE)
    _check(fields, handle, b"signin-change")
    request_id = new_request_id()
    try:
        step = await _signin(request).change(
            handle, read_cookie(request, BROWSER_COOKIE), fields.get("password", ""),
            fields.get("new_password", ""), fields.get("confirm_password", ""))
    except AwsError as exc:
        audit_browser(request, "ChangePassword", request_id, None, error=exc)
        raise
    return _next(request, step, request_id)


@guarded
async def signin_mfa(request: Request) -> Response:
    fields = await form(request)
    handle = read_cookie(request, MFA_COOKIE)
    _check(fields, handle, b"signin-mfa")
    request_id = new_request_id()
    try:
        step = await _signin(request).code(handle, read_cookie(request, BROWSER_COOKIE),
                                           fields.get("code", "").strip(), _source(request),
                                           fields.get("assertion", ""))
    except AwsError as exc:
        audit_browser(request, "ConsoleLogin", request_id, None, error=exc, mfa_used=True)
        raise
    return _signed_in(request, step, request_id, mfa=True)


def _signed_in(request: Request, step: Step, request_id: str, *, mfa: bool) -> Response:
    assert step.started is not None
    audit_browser(request, "ConsoleLogin", request_id, None, issued_key=step.access_key_id,
                  subject=step.arn, mfa_used=mfa)
    response = start_session(request, step.started, "/console")
    for name in (MFA_COOKIE, CHANGE_COOKIE, ENROL_COOKIE):
        drop_cookie(request, response, name)
    return response
