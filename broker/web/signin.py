"""The console session in the browser: the cookie, the console page, switching role, signing
out, and the gateway's forward-auth check.

The cookie is named by ``signin.session_cookie``; on an https public URL it is
``__Host-``-prefixed and Secure (so no other host or path can set or shadow it). It is HttpOnly,
SameSite=Lax, host-only, and lives as long as the session's credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re

from starlette.requests import Request
from starlette.responses import Response

from broker.aws.errors import AccessDenied, AwsError, InvalidParameterValue
from broker.aws.ids import new_request_id
from broker.errors import StoreUnavailable
from broker.signin.console import Console, Origin
from broker.signin.sessions import ConsoleSession, ConsoleSessions
from broker.sts.tokens import SessionKind
from broker.web.pages import (
    audit_browser,
    drop_cookie,
    form,
    guarded,
    page,
    query,
    read_cookie,
    redirect,
    set_cookie,
)

log = logging.getLogger("broker.web")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def _cookie(request: Request) -> str:
    """The session cookie's base name (``signin.session_cookie``); see pages.cookie_name."""
    name: str = request.app.state.runtime.settings.signin.session_cookie
    return name


def session_cookie(request: Request) -> str | None:
    """The value of this browser's session cookie, if it sent one."""
    return read_cookie(request, _cookie(request))


def _sessions(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.runtime.console_sessions
    return sessions


def start_session(request: Request, started: tuple[str, int], destination: str) -> Response:
    """Redirect to ``destination`` with the new session's cookie (replacing any old one),
    which the browser keeps as long as the session lasts."""
    cookie, seconds = started
    response = redirect(destination)
    set_cookie(request, response, _cookie(request), cookie, max_age=seconds)
    return response


def csrf_token(cookie: str) -> str:
    """The console's form token: derived from the session cookie, so a page of another site
    cannot know it (it never sees the cookie)."""
    return hmac.new(cookie.encode(), b"console-form", hashlib.sha256).hexdigest()


def _console(request: Request) -> Console:
    console: Console = request.app.state.runtime.console
    return console


async def current(request: Request) -> tuple[str, ConsoleSession] | None:
    """This browser's console session and its cookie, if it has a live one."""
    cookie = session_cookie(request)
    session = await _sessions(request).get(cookie)
    if session is None or cookie is None:
        return None
    return cookie, session


def origin_of(request: Request) -> Origin:
    """The request's source address (the proxy's X-Forwarded-For, when it is a trusted
    proxy), user agent and transport, for the policy decisions made for it."""
    client = request.client
    # The scheme as uvicorn set it: X-Forwarded-Proto counts only from server.trusted_proxies.
    secure = request.url.scheme == "https"
    return Origin(client.host if client else None, request.headers.get("user-agent"), secure)


def end_session(request: Request, response: Response) -> None:
    """Tell the browser to drop the session cookie (the session is revoked server-side
    either way)."""
    drop_cookie(request, response, _cookie(request))


def credentials_text(session: ConsoleSession) -> tuple[str, str]:
    """The session's credentials as shell export lines and as a credentials-file profile."""
    exports = (f"export AWS_ACCESS_KEY_ID={session.access_key_id}\n"
               f"export AWS_SECRET_ACCESS_KEY={session.secret_access_key}\n"
               f"export AWS_SESSION_TOKEN={session.session_token}\n")
    profile = (f"[{session.account_id}_{session.session_name}]\n"
               f"aws_access_key_id = {session.access_key_id}\n"
               f"aws_secret_access_key = {session.secret_access_key}\n"
               f"aws_session_token = {session.session_token}\n")
    return exports, profile


@guarded
async def console(request: Request) -> Response:
    found = await current(request)
    if found is None:
        settings = request.app.state.runtime.settings
        signin_url = settings.signin.url or ("/dev/signin" if settings.server.dev else "")
        if signin_url:
            return redirect(signin_url)
        return page("signed_out.html", 401, heading="You are not signed in",
                    message="Sign in through your identity provider to open the console.",
                    signin_links=_signin_links(request))
    cookie, session = found
    origin = origin_of(request)
    principal = await _console(request).standing(session, origin)
    restricted = False
    if principal is None and session.issuer == "signin":
        # A user of the broker's own sign-in whom policy denies the console (AWS's "deny all
        # but MFA self-management without MFA") keeps the security credentials page, whose
        # every action is authorized on its own; nothing else.
        principal = await _console(request).alive(session)
        restricted = principal is not None
    if principal is None:
        await _sessions(request).revoke(cookie)
        response = page("signed_out.html", 401, heading="Your session has ended",
                        message="Your credentials were revoked, or the role or user they "
                                "belong to no longer exists. Sign in again.",
                        signin_links=_signin_links(request))
        end_session(request, response)
        return response
    alias = None
    iam = request.app.state.runtime.iam
    with contextlib.suppress(AwsError):  # the account was deleted meanwhile
        alias = (await iam.get_account(session.account_id)).alias
    # A session of the broker's own sign-in keeps its credentials to itself (they act as the
    # user in the console); the user gets their own from the security credentials page.
    own = principal.session is not None and principal.session.kind is SessionKind.CONSOLE
    exports, profile = ("", "") if own else credentials_text(session)
    identity = _console(request).identity(session)
    return page("console.html", session=session, alias=alias, identity=identity, own=own,
                expires=session.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                expires_at=session.expires_at, exports=exports, profile=profile,
                applications=[] if restricted else await _console(request).open_applications(
                    principal, origin), restricted=restricted,
                csrf=csrf_token(cookie), switched=bool(query(request).get("switched")))


@guarded
async def switch_role(request: Request) -> Response:
    fields = await form(request)
    found = await current(request)
    if found is None:
        raise AccessDenied("You are not signed in.")
    cookie, session = found
    check_csrf(fields, cookie)
    if await _console(request).standing(session, origin_of(request)) is None:
        await _sessions(request).revoke(cookie)
        raise AccessDenied("Your console session has ended: its credentials were revoked, or "
                           "its role or user no longer exists. Sign in again.")
    role_arn = fields.get("role_arn", "").strip()
    session_name = fields.get("session_name", "").strip() or session.session_name
    if not role_arn:
        raise InvalidParameterValue("Say which role to switch to (its ARN).")
    if not _SESSION_NAME.fullmatch(session_name):
        raise InvalidParameterValue("The session name must match [\\w+=,.@-]{2,64}.")
    client = request.client
    request_id = new_request_id()
    who = (session.arn, session.account_id, session.access_key_id)
    try:
        issued = await _console(request).switch_role(
            session, role_arn, session_name, source_ip=client.host if client else None,
            user_agent=request.headers.get("user-agent"), secure=request.url.scheme == "https")
    except AwsError as exc:
        audit_browser(request, "SwitchRole", request_id, who, error=exc)
        raise
    audit_browser(request, "SwitchRole", request_id, who,
                  issued_key=issued.session.access_key_id, subject=issued.session.arn)
    sessions = _sessions(request)
    new_cookie = await sessions.create(issued, return_url=session.return_url)
    await sessions.revoke(cookie)
    seconds = max(1, int(issued.session.expires_at - sessions.now()))
    return start_session(request, (new_cookie, seconds), "/console?switched=1")


@guarded
async def sign_out(request: Request) -> Response:
    fields = await form(request)
    cookie = session_cookie(request)
    if cookie:
        check_csrf(fields, cookie)
        await _sessions(request).revoke(cookie)
    response = page("signed_out.html", heading="Signed out",
                    message="Your console session has ended.",
                    signin_links=_signin_links(request))
    end_session(request, response)
    return response


async def gateway_auth(request: Request) -> Response:
    """Forward-auth (nginx auth_request, Traefik ForwardAuth, Caddy forward_auth): 200 with the
    principal's headers for a live console session allowed to open the requested application,
    401 otherwise. Never a redirect and never a body worth reading: the proxy decides what the
    browser sees."""
    try:
        found = await current(request)
        url = _original_url(request)
        identity = await _console(request).admit(found[1] if found else None, url,
                                                 origin_of(request))
    except StoreUnavailable:
        log.error("gateway auth: store unavailable")
        return Response(status_code=503, headers={"Cache-Control": "no-store"})
    if identity is None:
        return Response(status_code=401, headers={"Cache-Control": "no-store"})
    return Response(status_code=200, headers={
        "X-Broker-Principal-Arn": identity.principal_arn,
        "X-Broker-Account": identity.account,
        "X-Broker-Session-Name": identity.session_name,
        "X-Broker-Role": identity.role,
        "Cache-Control": "no-store",
    })


def _original_url(request: Request) -> str | None:
    """The URL the browser asked the proxy for, from the one source gateway.url_header names:
    X-Original-URL (the nginx example), or X-Forwarded-Proto + X-Forwarded-Host +
    X-Forwarded-Uri (Traefik, Caddy). The other source is never read."""
    settings = request.app.state.runtime.settings
    if settings.gateway.url_header == "X-Original-URL":
        return request.headers.get("x-original-url") or None
    host = request.headers.get("x-forwarded-host")
    proto = request.headers.get("x-forwarded-proto")
    if not host or not proto:
        return None
    return f"{proto}://{host}{request.headers.get('x-forwarded-uri', '/')}"


def check_csrf(fields: dict[str, str], cookie: str) -> None:
    if not hmac.compare_digest(fields.get("csrf", "").encode(), csrf_token(cookie).encode()):
        raise AccessDenied("The form is not this browser's (CSRF token mismatch).")


def _signin_links(request: Request) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = request.app.state.runtime.signin_links
    return links
