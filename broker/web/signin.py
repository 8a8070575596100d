"""The console session in the browser: the cookie, the console page, signing out.

The cookie is named by ``signin.session_cookie``; on an https public URL it is
``__Host-``-prefixed and Secure (so no other host or path can set or shadow it). It is HttpOnly,
SameSite=Lax, host-only, and lives as long as the session's credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from broker.aws.errors import AccessDenied, AwsError
from broker.signin.sessions import ConsoleSessions
from broker.web.pages import form, guarded, page, redirect, set_cookie


def cookie_name(request: Request) -> str:
    settings = request.app.state.runtime.settings
    name: str = settings.signin.session_cookie
    return f"__Host-{name}" if settings.public_url.startswith("https://") else name


def _sessions(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.runtime.console_sessions
    return sessions


def start_session(request: Request, started: tuple[str, int], destination: str) -> Response:
    """Redirect to ``destination`` with the new session's cookie (replacing any old one),
    which the browser keeps as long as the session lasts."""
    cookie, seconds = started
    response = redirect(destination)
    secure = request.app.state.runtime.settings.public_url.startswith("https://")
    set_cookie(response, cookie_name(request), cookie, secure=secure, max_age=seconds)
    return response


def csrf_token(cookie: str) -> str:
    """The console's form token: derived from the session cookie, so a page of another site
    cannot know it (it never sees the cookie)."""
    return hmac.new(cookie.encode(), b"console-form", hashlib.sha256).hexdigest()


@guarded
async def console(request: Request) -> Response:
    cookie = request.cookies.get(cookie_name(request))
    session = await _sessions(request).get(cookie)
    if session is None or cookie is None:
        return page("signed_out.html", 401, heading="You are not signed in",
                    message="Sign in through your identity provider to open the console.")
    alias = None
    iam = request.app.state.runtime.iam
    with contextlib.suppress(AwsError):  # the account was deleted meanwhile
        alias = (await iam.get_account(session.account_id)).alias
    return page("console.html", session=session, alias=alias,
                expires=session.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                csrf=csrf_token(cookie))


@guarded
async def sign_out(request: Request) -> Response:
    fields = await form(request)
    name = cookie_name(request)
    cookie = request.cookies.get(name)
    if cookie and hmac.compare_digest(fields.get("csrf", "").encode(),
                                      csrf_token(cookie).encode()):
        await _sessions(request).revoke(cookie)
    elif cookie:
        raise AccessDenied("The sign-out form is not this browser's (CSRF token mismatch).")
    response = page("signed_out.html", heading="Signed out",
                    message="Your console session has ended.")
    response.delete_cookie(name, path="/")
    return response
