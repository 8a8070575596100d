"""The "security credentials" page of a user signed in through the broker's own sign-in
(broker.signin.own does the work; this module parses and renders):

* ``GET  /console/security-credentials``                 the page: password, MFA devices,
                                                           access keys, command line
* ``POST /console/security-credentials/password``        ``current_password``,
                                                           ``new_password``, ``confirm_password``
* ``POST /console/security-credentials/keys``            ``action`` create | activate |
                                                           deactivate | delete, ``key_id``
* ``POST /console/security-credentials/mfa``             ``name``: a new virtual device, shown
* ``POST /console/security-credentials/mfa/enable``      ``serial``, ``code1``, ``code2``
* ``POST /console/security-credentials/mfa/remove``      ``serial``
* ``POST /console/security-credentials/cli``             GetSessionToken credentials, shown
* ``POST /console/security-credentials/webauthn/options`` registration options (JSON)
* ``POST /console/security-credentials/webauthn``        ``name``, ``credential`` (JSON)

Every form carries the console's CSRF token; every answer is no-store, as every page is (a
secret or a seed may be on it). Every page works without JavaScript, except registering a
security key.
"""

from __future__ import annotations

import json

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.aws.errors import AccessDenied, InvalidParameterValue
from broker.aws.ids import new_request_id
from broker.principal import Principal
from broker.signin.own import OwnCredentials
from broker.signin.sessions import ConsoleSession
from broker.sts.tokens import SessionKind
from broker.web.pages import SECURITY_HEADERS, audit_browser, form, guarded, page, redirect
from broker.web.signin import check_csrf, credentials_text, csrf_token, current, origin_of

PAGE = "/console/security-credentials"


def _own(request: Request) -> OwnCredentials:
    own: OwnCredentials = request.app.state.runtime.own
    return own


async def signed_in(request: Request) -> tuple[str, ConsoleSession, Principal]:
    """(cookie, session, principal) of this browser's console session of the broker's own
    sign-in, alive (``Console.alive``: its actions are each authorized, so no standing is
    needed); AccessDenied otherwise (another kind of session has no page of its own
    credentials: its identity provider keeps them)."""
    found = await current(request)
    if found is None:
        raise AccessDenied("You are not signed in.")
    cookie, session = found
    console = request.app.state.runtime.console
    principal = await console.alive(session)
    if principal is None:
        await request.app.state.runtime.console_sessions.revoke(cookie)
        raise AccessDenied("Your console session has ended: sign in again.")
    if principal.session is None or principal.session.kind is not SessionKind.CONSOLE:
        raise AccessDenied("Only a user signed in with the broker's own sign-in has security "
                           "credentials here; your identity provider keeps yours.")
    return cookie, session, principal


async def _posted(request: Request) -> tuple[dict[str, str], str, ConsoleSession, Principal]:
    fields = await form(request)
    cookie, session, principal = await signed_in(request)
    check_csrf(fields, cookie)
    return fields, cookie, session, principal


@guarded
async def show(request: Request) -> Response:
    cookie, session, principal = await signed_in(request)
    overview = await _own(request).overview(principal, origin_of(request))
    now = request.app.state.runtime.clock.now()
    return page("security_credentials.html", session=session, overview=overview,
                 csrf=csrf_token(cookie), now=now, root=principal.is_root,
                 mfa=bool(principal.session and principal.session.mfa),
                 done=request.query_params.get("done", ""))


@guarded
async def password(request: Request) -> Response:
    fields, _, _, principal = await _posted(request)
    await _own(request).change_password(
        principal, fields.get("current_password", ""), fields.get("new_password", ""),
        fields.get("confirm_password", ""), origin_of(request))
    return redirect(f"{PAGE}?done=password")


@guarded
async def keys(request: Request) -> Response:
    fields, _, session, principal = await _posted(request)
    own, origin = _own(request), origin_of(request)
    action = fields.get("action", "")
    key_id = fields.get("key_id", "").strip()
    if action == "create":
        key_id, secret = await own.create_key(principal, origin)
        return page("security_credentials_key.html", key_id=key_id, secret=secret,
                     session=session)
    if action in ("activate", "deactivate"):
        await own.set_key_status(principal, key_id,
                                 "Active" if action == "activate" else "Inactive", origin)
    elif action == "delete":
        await own.delete_key(principal, key_id, origin)
    else:
        raise InvalidParameterValue("Say what to do with the access key: create, activate, "
                                    "deactivate or delete.")
    return redirect(f"{PAGE}?done=key")


@guarded
async def new_device(request: Request) -> Response:
    fields, cookie, _, principal = await _posted(request)
    name = fields.get("name", "").strip()
    serial, seed, uri = await _own(request).new_virtual_device(principal, name,
                                                               origin_of(request))
    # segno's markup of the broker's own URI (a Base32 seed, a user name IAM accepted, an
    # account id), quoted: nothing in it is markup from the request.
    qr = Markup(segno.make(uri, error="m").svg_inline(scale=4))  # noqa: S704
    return page("security_credentials_mfa.html", serial=serial, seed=seed, uri=uri, qr=qr,
                 csrf=csrf_token(cookie))


@guarded
async def enable_device(request: Request) -> Response:
    fields, _, _, principal = await _posted(request)
    await _own(request).enable_virtual(principal, fields.get("serial", "").strip(),
                                       fields.get("code1", "").strip(),
                                       fields.get("code2", "").strip(), origin_of(request))
    return redirect(f"{PAGE}?done=mfa")


@guarded
async def remove_device(request: Request) -> Response:
    fields, _, _, principal = await _posted(request)
    await _own(request).remove_device(principal, fields.get("serial", "").strip(),
                                      origin_of(request))
    return redirect(f"{PAGE}?done=removed")


@guarded
async def command_line(request: Request) -> Response:
    _, _, session, principal = await _posted(request)
    issued = await _own(request).command_line(principal, origin_of(request))
    audit_browser(request, "GetSessionToken", new_request_id(),
                  (session.arn, session.account_id, session.access_key_id),
                  issued_key=issued.session.access_key_id, subject=issued.session.arn)
    shown = ConsoleSession(
        arn=issued.session.arn, account_id=issued.session.account_id,
        session_name=issued.session.name, role_arn=issued.session.source_arn,
        access_key_id=issued.session.access_key_id,
        secret_access_key=issued.session.secret_access_key, session_token=issued.token,
        expires_at=issued.session.expires_at)
    exports, profile = credentials_text(shown)
    return page("security_credentials_cli.html", exports=exports, profile=profile,
                 mfa=issued.session.mfa,
                 expires=issued.session.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"))


@guarded
async def webauthn_options(request: Request) -> Response:
    _, cookie, _, principal = await _posted(request)
    options = await request.app.state.runtime.security_keys.registration_options(
        principal, cookie)
    return JSONResponse(json.loads(options), headers=SECURITY_HEADERS)


@guarded
async def webauthn_register(request: Request) -> Response:
    fields, cookie, _, principal = await _posted(request)
    await request.app.state.runtime.security_keys.register(
        principal, cookie, fields.get("name", "").strip(), fields.get("credential", ""),
        origin_of(request))
    return redirect(f"{PAGE}?done=key-registered")
