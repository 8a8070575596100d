"""Development mode's demo sign-in (``broker serve --dev``):

* ``GET /dev/signin``   the demo people, with their passwords (this is development mode);
* ``POST /dev/signin``  a person and password → the role chooser (the form's CSRF token is
                        bound to a cookie set by the GET: no login CSRF);
* ``POST /dev/choose``  the chosen role → a console session.

Parsing and rendering only; the use case is broker.signin.demo. The routes exist only in
development mode.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from broker.aws.errors import AccessDenied, AwsError
from broker.aws.ids import new_request_id
from broker.signin.demo import CHOICE_SECONDS, DemoIdentityProvider
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

LOGIN_COOKIE = "broker-demo-login"
CHOICE_COOKIE = "broker-demo-choice"


def _demo(request: Request) -> DemoIdentityProvider:
    demo: DemoIdentityProvider | None = request.app.state.runtime.demo
    if demo is None:  # pragma: no cover - the routes exist only in development mode
        raise AccessDenied("Development mode is off.")
    return demo


@guarded
async def signin_page(request: Request) -> Response:
    return form_page(request, LOGIN_COOKIE, b"demo-login", "dev_signin.html",
                     people=_demo(request).people)


@guarded
async def signin(request: Request) -> Response:
    fields = await form(request)
    cookie = read_cookie(request, LOGIN_COOKIE)
    if not cookie or not hmac.compare_digest(fields.get("csrf", "").encode(),
                                             form_token(cookie, b"demo-login").encode()):
        raise AccessDenied("The sign-in form is not this browser's (CSRF token mismatch): "
                           "open the sign-in page again.")
    demo = _demo(request)
    request_id = new_request_id()
    try:
        principal = await demo.sign_in(fields.get("person", ""), fields.get("password", ""))
    except AwsError as exc:
        audit_browser(request, "DemoSignIn", request_id, None, error=exc)
        raise
    roles = await demo.assumable(principal)
    if not roles:
        raise AccessDenied(f"{principal.name} may not assume any role.")
    handle, csrf = await demo.hold(principal)
    response = page("dev_chooser.html", person=principal.name, arn=principal.arn, roles=roles,
                    csrf=csrf)
    set_cookie(request, response, CHOICE_COOKIE, handle, max_age=CHOICE_SECONDS)
    return response


@guarded
async def choose(request: Request) -> Response:
    fields = await form(request)
    request_id = new_request_id()
    try:
        issued = await _demo(request).choose(read_cookie(request, CHOICE_COOKIE),
                                             fields.get("csrf"), fields.get("role", ""))
    except AwsError as exc:
        audit_browser(request, "ConsoleLogin", request_id, None, error=exc)
        raise
    s = issued.session
    audit_browser(request, "ConsoleLogin", request_id, None, issued_key=s.access_key_id,
                  subject=s.arn)
    sessions = request.app.state.runtime.console_sessions
    cookie = await sessions.create(issued, issuer="demo")
    seconds = max(1, int(issued.session.expires_at - sessions.now()))
    response = start_session(request, (cookie, seconds), "/console")
    drop_cookie(request, response, CHOICE_COOKIE)
    return response
