"""The access portal's pages (broker.identitycenter.portal): where Identity Center's directory
users sign in, see the accounts and roles they are assigned, and approve the command line.

* ``GET /start``                     the instance's portal (the broker's only one, or
                                     ``?directory=d-…``), else a form asking for the directory;
* ``GET /start/{id}``                the sign-in page (``username``, ``password``), or, signed
                                     in, the portal: accounts, their roles, for each role
                                     "Management console" and "Access keys";
* ``POST /start/{id}``               the password; then ``/change`` (``new_password``,
                                     ``confirm_password``), ``/enrol`` (a new TOTP device's
                                     ``code``) or ``/mfa`` (``code``, or a security key's
                                     ``assertion``); then the portal;
* ``GET|POST /start/{id}/invitation`` an e-mailed invitation (``token``): the new password
                                     (``new_password``, ``confirm_password``), then MFA as
                                     after a first password;
* ``POST /start/{id}/console``, ``/credentials`` (``account_id``, ``role_name``), ``/signout``;
* ``POST /start/{id}/webauthn/options`` (JSON), ``/webauthn`` (``name``, ``credential``): a
                                     security key registered by the signed-in person;
* ``GET|POST /start/device``         the device authorization's approval (``user_code``;
                                     ``action`` allow or deny);
* ``GET|POST /authorize``            the authorization-code grant's browser step: the person
                                     allows the application (``action``, the request's
                                     parameters again), and a code and the state go to the
                                     client's loopback redirect URI.

Every form is CSRF-protected: before sign-in by an HMAC keyed by the browser's sign-in cookie,
after it by one keyed by the portal session's cookie. Parsing and rendering only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote, urlencode

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.aws.errors import AccessDenied, AwsError, InvalidInput, NoSuchEntity
from broker.aws.ids import new_request_id
from broker.identitycenter.access import Access, NotAssigned
from broker.identitycenter.oauth import AuthorizationRequest, DeviceRequest, OAuth, Refused
from broker.identitycenter.portal import Portal, PortalSession, Step
from broker.sts.service import IssuedCredentials
from broker.web.pages import (
    SECURITY_HEADERS,
    audit_browser,
    drop_cookie,
    form,
    form_page,
    form_token,
    guarded,
    page,
    query,
    read_cookie,
    redirect,
    set_cookie,
)

BROWSER_COOKIE = "broker-portal"
STEP_COOKIE = "broker-portal-step"
SESSION_COOKIE = "broker-portal-session"
NEXT_COOKIE = "broker-portal-next"
_NEXT_PREFIXES = ("/start/device?", "/authorize?")
MAX_VALUE = 2048


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.runtime.portal
    return portal


def _access(request: Request) -> Access:
    access: Access = request.app.state.runtime.identity_center.access
    return access


def _oauth(request: Request) -> OAuth:
    oauth: OAuth = request.app.state.runtime.oauth
    return oauth


def _refused(exc: Refused) -> AccessDenied:
    return AccessDenied(exc.description)


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


def _one(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name) or [""]
    if len(found) > 1:
        raise InvalidInput(f"The parameter {name} is given twice.")
    if len(found[0]) > MAX_VALUE:
        raise InvalidInput(f"The parameter {name} is longer than {MAX_VALUE} characters.")
    return found[0]


def _check_signin(fields: dict[str, str], secret: str | None, purpose: bytes) -> None:
    if not secret or len(secret) > 128 or not hmac.compare_digest(
            fields.get("csrf", "").encode(), form_token(secret, purpose).encode()):
        raise AccessDenied("The sign-in form is not this browser's (CSRF token mismatch): "
                           "open the sign-in page again.")


def session_csrf(cookie: str) -> str:
    """The signed-in portal's form token, derived from the session cookie."""
    return hmac.new(cookie.encode(), b"portal-form", hashlib.sha256).hexdigest()


async def _session(request: Request, identity_store_id: str | None = None
                   ) -> tuple[str, PortalSession] | None:
    cookie = read_cookie(request, SESSION_COOKIE)
    session = await _portal(request).session(cookie)
    if session is None or cookie is None or (
            identity_store_id is not None
            and session.instance.identity_store_id != identity_store_id):
        return None
    return cookie, session


async def _signed_in_form(request: Request, identity_store_id: str | None = None
                          ) -> tuple[dict[str, str], PortalSession]:
    """The form of a signed-in page, its CSRF token checked, and the session."""
    fields = await form(request)
    found = await _session(request, identity_store_id)
    if found is None:
        raise AccessDenied("You are not signed in to this access portal (or your session "
                           "has ended): sign in again.")
    cookie, session = found
    if not hmac.compare_digest(fields.get("csrf", "").encode(), session_csrf(cookie).encode()):
        raise AccessDenied("The form is not this browser's (CSRF token mismatch).")
    return fields, session


def _start(identity_store_id: str) -> str:
    return f"/start/{quote(identity_store_id, safe='')}"


# -- choosing the portal --------------------------------------------------------------------

@guarded
async def start(request: Request) -> Response:
    directory = _one(query(request), "directory").strip()
    if directory:
        instance = await _portal(request).instance(directory)
        return redirect(_start(instance.identity_store_id))
    only = await _portal(request).only_instance()
    if only is not None:
        return redirect(_start(only.identity_store_id))
    return page("portal_choose.html")


# -- signing in -----------------------------------------------------------------------------

@guarded
async def home(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    instance = await _portal(request).instance(identity_store_id)
    found = await _session(request, instance.identity_store_id)
    sources = _portal(request).sources
    if found is None and sources is not None:
        source = await sources.get(instance)
        if source.external:  # the identity provider signs people in (portal_sources.py)
            target = read_cookie(request, NEXT_COOKIE) or ""
            login = f"{_start(instance.identity_store_id)}/{source.kind}/login"
            return redirect(login + ("?" + urlencode({"next": target})
                                     if target.startswith(_NEXT_PREFIXES) else ""))
    if found is None:
        return form_page(request, BROWSER_COOKIE, b"portal-signin", "portal_signin.html",
                         store=instance.identity_store_id, name=instance.name)
    cookie, session = found
    access = _access(request)
    accounts = []
    for entry in await access.accounts(session.instance, session.user.user_id):
        roles = await access.roles(session.instance, session.user.user_id, entry.account_id)
        accounts.append((entry, sorted(roles)))
    credential = await _portal(request).credential(session.instance, session.user.user_id)
    done = _one(query(request), "done")
    return page("portal_home.html", store=instance.identity_store_id, name=instance.name,
                user_name=session.user.user_name, accounts=accounts,
                csrf=session_csrf(cookie), devices=credential.devices, keys=credential.keys,
                external=session.external,
                done=done if done in ("key-registered",) else "")


@guarded
async def signin(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields = await form(request)
    browser = read_cookie(request, BROWSER_COOKIE)
    _check_signin(fields, browser, b"portal-signin")
    assert browser is not None
    instance = await _portal(request).instance(identity_store_id)
    request_id = new_request_id()
    try:
        step = await _portal(request).password(
            instance, fields.get("username", ""), fields.get("password", ""),
            source=_source(request), browser=browser)
    except AwsError as exc:
        audit_browser(request, "UserAuthentication", request_id, None, error=exc,
                      mfa_used=False)
        raise
    return _next(request, step, instance.identity_store_id, request_id)


@guarded
async def signin_change(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields = await form(request)
    handle = read_cookie(request, STEP_COOKIE)
    _check_signin(fields, handle, b"portal-change")
    request_id = new_request_id()
    try:
        step = await _portal(request).change(
            handle, read_cookie(request, BROWSER_COOKIE), fields.get("new_password", ""),
            fields.get("confirm_password", ""))
    except AwsError as exc:
        audit_browser(request, "ChangePassword", request_id, None, error=exc, service="sso")
        raise
    return _next(request, step, identity_store_id, request_id)


@guarded
async def signin_enrol(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields = await form(request)
    handle = read_cookie(request, STEP_COOKIE)
    _check_signin(fields, handle, b"portal-enrol")
    request_id = new_request_id()
    try:
        step = await _portal(request).enrol(handle, read_cookie(request, BROWSER_COOKIE),
                                            fields.get("code", ""), _source(request))
    except AwsError as exc:
        audit_browser(request, "CreateMfaDeviceForUser", request_id, None, error=exc)
        raise
    return _next(request, step, identity_store_id, request_id)


@guarded
async def signin_mfa(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields = await form(request)
    handle = read_cookie(request, STEP_COOKIE)
    _check_signin(fields, handle, b"portal-mfa")
    request_id = new_request_id()
    try:
        step = await _portal(request).code(handle, read_cookie(request, BROWSER_COOKIE),
                                           fields.get("code", ""), _source(request),
                                           fields.get("assertion", ""))
    except AwsError as exc:
        audit_browser(request, "UserAuthentication", request_id, None, error=exc,
                      mfa_used=True)
        raise
    return _next(request, step, identity_store_id, request_id)


@guarded
async def invitation(request: Request) -> Response:
    """The page of an invitation's link: the new password, asked for before the link is used
    (a mail scanner that opens the link uses up nothing)."""
    identity_store_id = request.path_params["identity_store_id"]
    instance = await _portal(request).instance(identity_store_id)
    token = _one(query(request), "token")
    user = await _portal(request).invitation(instance, token)
    return form_page(request, BROWSER_COOKIE, b"portal-invitation", "portal_invitation.html",
                     action=_start(instance.identity_store_id), token=token,
                     user_name=user.user_name, name=instance.name)


@guarded
async def invitation_accept(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields = await form(request)
    browser = read_cookie(request, BROWSER_COOKIE)
    _check_signin(fields, browser, b"portal-invitation")
    assert browser is not None
    instance = await _portal(request).instance(identity_store_id)
    request_id = new_request_id()
    try:
        step = await _portal(request).accept_invitation(
            instance, fields.get("token", ""), fields.get("new_password", ""),
            fields.get("confirm_password", ""), browser)
    except AwsError as exc:
        audit_browser(request, "AcceptInvitation", request_id, None, error=exc)
        raise
    audit_browser(request, "AcceptInvitation", request_id, None,
                  subject=f"{instance.identity_store_id}/{step.user_name}")
    return _next(request, step, instance.identity_store_id, request_id)


def _next(request: Request, step: Step, identity_store_id: str,
          request_id: str) -> Response:
    """After a step: the change-password page, the device to register, the MFA page, or the
    portal (or the page that sent the person to sign in)."""
    action = _start(identity_store_id)
    response: Response
    if step.stage == "change":
        response = page("portal_change.html", action=action, user_name=step.user_name,
                        csrf=form_token(step.handle, b"portal-change"))
    elif step.stage == "enrol":
        assert step.uri is not None
        # segno's markup of the broker's own otpauth:// URI (a Base32 seed, the user name,
        # which the directory holds as plain text and the URI percent-encodes): inline SVG,
        # since the page's Content-Security-Policy loads no image from anywhere.
        response = page("portal_enrol.html", action=action, seed=step.seed, uri=step.uri,
                        qr=Markup(segno.make(step.uri,  # noqa: S704
                                             error="m").svg_inline(scale=4)),
                        csrf=form_token(step.handle, b"portal-enrol"))
    elif step.stage == "mfa":
        response = page("portal_mfa.html", action=action, totp=step.totp,
                        webauthn=step.webauthn, csrf=form_token(step.handle, b"portal-mfa"))
    else:
        audit_browser(request, "UserAuthentication", request_id, None,
                      subject=f"{identity_store_id}/{step.user_name}", mfa_used=True)
        target = read_cookie(request, NEXT_COOKIE) or ""
        response = redirect(target if target.startswith(_NEXT_PREFIXES) else action)
        set_cookie(request, response, SESSION_COOKIE, step.handle, max_age=step.seconds)
        drop_cookie(request, response, STEP_COOKIE)
        drop_cookie(request, response, NEXT_COOKIE)
        return response
    set_cookie(request, response, STEP_COOKIE, step.handle, max_age=300)
    return response


@guarded
async def sign_out(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    _, session = await _signed_in_form(request, identity_store_id)
    await _portal(request).sign_out(read_cookie(request, SESSION_COOKIE))
    response = page("signed_out.html", heading="You have signed out",
                    message="You have signed out of the AWS access portal.",
                    signin_links=[("Sign in again", _start(session.instance.identity_store_id))])
    drop_cookie(request, response, SESSION_COOKIE)
    return response


# -- a role's console and access keys -------------------------------------------------------

def _role(fields: dict[str, str]) -> tuple[str, str]:
    account_id, role_name = fields.get("account_id", ""), fields.get("role_name", "")
    if not (len(account_id) == 12 and account_id.isascii() and account_id.isdigit()) or \
            not 0 < len(role_name) <= 32 or not role_name.isascii() or \
            not all(c.isalnum() or c in "+=,.@-_" for c in role_name):
        raise InvalidInput("Choose one of your roles in one of your accounts.")
    return account_id, role_name


@guarded
async def credentials(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields, session = await _signed_in_form(request, identity_store_id)
    account_id, role_name = _role(fields)
    request_id = new_request_id()
    try:
        try:
            issued = await _access(request).credentials(session.instance, session.user,
                                                        account_id, role_name,
                                                        asserted=session.asserted)
        except NotAssigned as exc:
            raise AccessDenied(str(exc)) from None
    except AwsError as exc:
        audit_browser(request, "GetRoleCredentials", request_id, None, error=exc)
        raise
    audit_browser(request, "GetRoleCredentials", request_id, None,
                  issued_key=issued.session.access_key_id, subject=issued.session.arn)
    exports, profile = credentials_text(issued, account_id, role_name)
    return page("portal_credentials.html", account_id=account_id, role_name=role_name,
                exports=exports, profile=profile, expires=issued.session.expiration,
                back=_start(identity_store_id))


def credentials_text(issued: IssuedCredentials, account_id: str,
                     role_name: str) -> tuple[str, str]:
    """A role's credentials as AWS's access portal shows them: export lines, and a profile
    for the credentials file named ``{account}_{role}``."""
    key, secret = issued.session.access_key_id, issued.session.secret_access_key
    exports = (f'export AWS_ACCESS_KEY_ID="{key}"\n'
               f'export AWS_SECRET_ACCESS_KEY="{secret}"\n'
               f'export AWS_SESSION_TOKEN="{issued.token}"\n')
    profile = (f"[{account_id}_{role_name}]\n"
               f"aws_access_key_id={key}\n"
               f"aws_secret_access_key={secret}\n"
               f"aws_session_token={issued.token}\n")
    return exports, profile


@guarded
async def console(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields, session = await _signed_in_form(request, identity_store_id)
    account_id, role_name = _role(fields)
    console_url = getattr(_access(request), "console_url", None)
    if console_url is None:
        raise InvalidInput("The management console is not available from this portal yet.")
    request_id = new_request_id()
    try:
        try:
            url = await console_url(session.instance, session.user, account_id, role_name,
                                    asserted=session.asserted)
        except NotAssigned as exc:
            raise AccessDenied(str(exc)) from None
    except AwsError as exc:
        audit_browser(request, "Federate", request_id, None, error=exc)
        raise
    audit_browser(request, "Federate", request_id, None,
                  subject=f"{account_id}/{role_name}/{session.user.user_name}")
    return redirect(str(url))


# -- security keys ---------------------------------------------------------------------------

@guarded
async def webauthn_options(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    _, session = await _signed_in_form(request, identity_store_id)
    cookie = read_cookie(request, SESSION_COOKIE)
    assert cookie is not None
    options = await _portal(request).key_options(session, cookie)
    return JSONResponse(json.loads(options), headers=SECURITY_HEADERS)


@guarded
async def webauthn_register(request: Request) -> Response:
    identity_store_id = request.path_params["identity_store_id"]
    fields, session = await _signed_in_form(request, identity_store_id)
    cookie = read_cookie(request, SESSION_COOKIE)
    assert cookie is not None
    request_id = new_request_id()
    try:
        await _portal(request).add_key(session, cookie, fields.get("name", "").strip(),
                                       fields.get("credential", ""))
    except AwsError as exc:
        audit_browser(request, "CreateMfaDeviceForUser", request_id, None, error=exc)
        raise
    audit_browser(request, "CreateMfaDeviceForUser", request_id, None,
                  subject=f"{identity_store_id}/{session.user.user_name}")
    return redirect(f"{_start(identity_store_id)}?done=key-registered")


# -- the device authorization's approval ----------------------------------------------------

def _sign_in_first(request: Request, identity_store_id: str, back: str) -> Response:
    response = redirect(_start(identity_store_id))
    set_cookie(request, response, NEXT_COOKIE, back, max_age=600)
    return response


async def _device_request(request: Request, user_code: str) -> DeviceRequest:
    code = user_code.strip()
    if not code or len(code) > 64:
        raise InvalidInput("Enter the code the command line shows.")
    found = await _oauth(request).device_request(code, source_ip=_source(request))
    if found is None:
        raise NoSuchEntity("That code is not valid, or it has expired or was already used: "
                           "start the sign-in on the command line again.")
    return found


@guarded
async def device(request: Request) -> Response:
    user_code = _one(query(request), "user_code")
    if not user_code:
        return page("portal_device_code.html")
    found = await _device_request(request, user_code)
    signed_in = await _session(request, found.identity_store_id)
    if signed_in is None:
        return _sign_in_first(request, found.identity_store_id,
                              "/start/device?" + urlencode({"user_code": user_code.strip()}))
    cookie, session = signed_in
    return page("portal_device.html", client_name=found.client_name,
                user_code=user_code.strip(), user_name=session.user.user_name,
                csrf=session_csrf(cookie))


@guarded
async def device_decide(request: Request) -> Response:
    fields, session = await _signed_in_form(request)
    found = await _device_request(request, fields.get("user_code", ""))
    if found.identity_store_id != session.instance.identity_store_id:
        raise NoSuchEntity("That code is not valid, or it has expired or was already used: "
                           "start the sign-in on the command line again.")
    oauth = _oauth(request)
    code = fields.get("user_code", "").strip()
    request_id = new_request_id()
    if fields.get("action") == "allow":
        try:
            await oauth.approve_device(code, account_id=session.instance.account_id,
                                       identity_store_id=session.instance.identity_store_id,
                                       user_id=session.user.user_id,
                                       session_expires_at=session.expiration,
                                       asserted=session.asserted, source=session.source)
        except Refused as exc:
            raise _refused(exc) from None
        audit_browser(request, "AuthorizeDevice", request_id, None,
                      subject=f"{session.instance.identity_store_id}/{session.user.user_name}")
        return page("signed_out.html", heading="Request approved",
                    message=f"{found.client_name} may now use your access: you can close this "
                            "window and return to the command line.")
    if fields.get("action") == "deny":
        await oauth.deny_device(code)
        return page("signed_out.html", heading="Request denied",
                    message="The command line was not given access. You can close this window.")
    raise InvalidInput("Choose Allow or Deny.")


# -- the authorization-code grant's browser step --------------------------------------------

AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "state", "code_challenge",
                    "code_challenge_method", "scopes")


async def _authorization(request: Request, params: dict[str, str]
                         ) -> AuthorizationRequest | Response:
    """The checked request, or the answer to a refused one: the client told at its redirect
    URI where RFC 6749 §4.1.2.1 allows, an error page otherwise."""
    redirect_uri, state = params.get("redirect_uri", ""), params.get("state")
    try:
        return await _oauth(request).authorization_request(
            response_type=params.get("response_type", ""),
            client_id=params.get("client_id", ""), redirect_uri=redirect_uri, state=state,
            code_challenge=params.get("code_challenge"),
            code_challenge_method=params.get("code_challenge_method"),
            scopes=[s for s in params.get("scopes", "").replace(",", " ").split() if s])
    except Refused as exc:
        if not exc.redirect:
            raise _refused(exc) from None
        answer = {"error": exc.error, "error_description": exc.description}
        return redirect(_with_query(redirect_uri, answer, state), status=302)


@guarded
async def authorize(request: Request) -> Response:
    """The grant's browser step: sign in if needed, then ask the person to allow the
    application (a page of another site cannot make a signed-in browser hand out a code)."""
    values = query(request)
    params = {name: _one(values, name) for name in AUTHORIZE_PARAMS if name in values}
    checked = await _authorization(request, params)
    if isinstance(checked, Response):
        return checked
    signed_in = await _session(request, checked.identity_store_id)
    if signed_in is None:
        return _sign_in_first(request, checked.identity_store_id,
                              "/authorize?" + urlencode(params))
    cookie, session = signed_in
    return page("portal_authorize.html", client_name=checked.client_name,
                user_name=session.user.user_name, params=params, csrf=session_csrf(cookie))


@guarded
async def authorize_decide(request: Request) -> Response:
    fields, session = await _signed_in_form(request)
    params = {name: fields[name] for name in AUTHORIZE_PARAMS if name in fields}
    checked = await _authorization(request, params)
    if isinstance(checked, Response):
        return checked
    if checked.identity_store_id != session.instance.identity_store_id:
        raise AccessDenied("This sign-in request is for another start URL.")
    if fields.get("action") == "deny":
        return redirect(_with_query(checked.redirect_uri, {
            "error": "access_denied", "error_description": "The person denied the request."},
            checked.state))
    if fields.get("action") != "allow":
        raise InvalidInput("Choose Allow or Deny.")
    try:
        code = await _oauth(request).issue_code(
            checked, account_id=session.instance.account_id,
            identity_store_id=session.instance.identity_store_id,
            user_id=session.user.user_id, session_expires_at=session.expiration,
            asserted=session.asserted, source=session.source)
    except Refused as exc:
        raise _refused(exc) from None
    audit_browser(request, "Authorize", new_request_id(), None,
                  subject=f"{session.instance.identity_store_id}/{session.user.user_name}")
    return redirect(_with_query(checked.redirect_uri, {"code": code}, checked.state))


def _with_query(uri: str, values: dict[str, str], state: str | None) -> str:
    if state is not None:
        values = {**values, "state": state}
    return uri + ("&" if "?" in uri else "?") + urlencode(values)
