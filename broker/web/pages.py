"""HTML pages of the browser endpoints: one template environment, one set of security headers,
one error page, one way to read a small form or a query string and to set a cookie.

Every page is served with a Content-Security-Policy that allows only the broker's own assets
and no framing, ``Referrer-Policy: no-referrer`` (pages and redirects may carry tokens), no
caching, and ``nosniff``. Every error is a page that says what went wrong and carries an
error id the person can quote; the same id is in the log line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from broker.audit import AuditEvent
from broker.aws.errors import AwsError, InternalFailure, InvalidRequest, ServiceUnavailable
from broker.aws.http import parse_query
from broker.aws.ids import new_request_id
from broker.errors import StoreUnavailable
from broker.metrics import SIGNIN_EVENTS
from broker.metrics import signin as count_signin

log = logging.getLogger("broker.web")

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)
# Whether this request is served in development mode: set per request by the application, read
# by every page (base.html labels them all).
DEV_MODE: ContextVar[bool] = ContextVar("broker_dev_mode", default=False)
TEMPLATES.globals["dev_mode"] = DEV_MODE.get

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_FORM_BYTES = 160_000  # a SAMLResponse of 100,000 characters, URL-encoded, and a RelayState
MAX_FORM_FIELDS = 20


class BadForm(Exception):
    """A form that is too large or not URL-encoded."""


def page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    body = TEMPLATES.get_template(template).render(**values)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def redirect(location: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(location, status_code=status, headers=SECURITY_HEADERS)


def error_page(error: AwsError, *, heading: str = "Sign-in refused",
               error_id: str | None = None) -> HTMLResponse:
    return page("error.html", error.status, heading=heading, message=error.message,
                code=error.code, error_id=error_id or new_request_id())


_HTTP_ERRORS = {404: ("NotFound", "Not found", "There is no page at this address."),
                405: ("MethodNotAllowed", "Method not allowed",
                      "This address does not answer that HTTP method.")}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route for the path, a method the route does not serve,
    a file /static does not have) as the broker's error page, or JSON, with an error id."""
    assert isinstance(exc, HTTPException)
    code, heading, message = _HTTP_ERRORS.get(
        exc.status_code, ("InvalidRequest", "Request refused", str(exc.detail)))
    error_id = new_request_id()
    response: Response
    if wants_json(request):
        response = JSONResponse({"Error": {"Code": code, "Message": message},
                                 "RequestId": error_id}, status_code=exc.status_code,
                                headers=SECURITY_HEADERS)
    else:
        response = page("error.html", exc.status_code, heading=heading, message=message,
                        code=code, error_id=error_id)
    response.headers.update(exc.headers or {})  # a 405's Allow
    return response


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def json_error(error: AwsError, error_id: str) -> JSONResponse:
    return JSONResponse({"Error": {"Code": error.code, "Message": error.message},
                         "RequestId": error_id}, status_code=error.status,
                        headers=SECURITY_HEADERS)


async def form(request: Request) -> dict[str, str]:
    """A URL-encoded form of at most MAX_FORM_BYTES; a field given twice is refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadForm("The form must be sent as application/x-www-form-urlencoded.")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise BadForm(f"The form is larger than {MAX_FORM_BYTES} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"The form is larger than {MAX_FORM_BYTES} bytes.")
    try:
        pairs = parse_query(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadForm("The form is not valid URL-encoded UTF-8.") from None
    if len(pairs) > MAX_FORM_FIELDS:
        raise BadForm(f"The form has more than {MAX_FORM_FIELDS} fields.")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadForm(f"The form field {name} is given twice.")
        fields[name] = value
    return fields


def query(request: Request) -> dict[str, list[str]]:
    """The query string's values by name, decoded as strictly as the Query protocol decodes
    its own (broker.aws.http.parse_query): an escape that is not UTF-8 is refused, never
    replaced."""
    raw: bytes = request.scope.get("query_string", b"")
    try:
        pairs = parse_query(raw.decode("utf-8")) if raw else []
    except UnicodeDecodeError:
        raise InvalidRequest("The query string is not valid URL-encoded UTF-8.") from None
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return values


# -- cookies ------------------------------------------------------------------------------------
#
# Every cookie the broker sets is host-only (no Domain), HttpOnly, for Path=/, and on an https
# public URL Secure and named with the __Host- prefix: a browser then takes it only from this
# host over TLS, so no sibling subdomain and no man in the middle on a plain-http host can
# plant or shadow it (RFC 6265bis, "Cookie Name Prefixes"). The same name is what the broker
# reads, so a planted unprefixed cookie is never looked at.

def _on_https(request: Request) -> bool:
    return bool(request.app.state.runtime.settings.public_url.startswith("https://"))


def cookie_name(request: Request, name: str) -> str:
    """The name a cookie has on the wire: ``__Host-NAME`` on an https public URL."""
    return f"__Host-{name}" if _on_https(request) else name


def read_cookie(request: Request, name: str) -> str | None:
    return request.cookies.get(cookie_name(request, name))


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int,
               same_site: str = "lax") -> None:
    """Set one of the broker's cookies. ``same_site="none"`` (for a cookie that must come back
    with an identity provider's cross-site POST) needs Secure: on plain http (development)
    the attribute is left out, and browsers send such a cookie on that POST for two minutes."""
    secure = _on_https(request)
    response.set_cookie(cookie_name(request, name), value, max_age=max_age, path="/",
                        secure=secure, httponly=True,
                        samesite=same_site if secure or same_site != "none"
                        else None)  # type: ignore[arg-type]


def form_page(request: Request, cookie: str, purpose: bytes, template: str,
              **values: Any) -> HTMLResponse:
    """A page whose form's CSRF token (``csrf``) is an HMAC keyed by a cookie of this browser
    (kept, or made and set for an hour): a page of another site cannot know it, so it cannot
    post the form from someone's browser (login CSRF)."""
    secret = read_cookie(request, cookie)
    fresh = not secret or len(secret) > 128
    if fresh:
        secret = secrets.token_urlsafe(32)
    assert secret is not None
    response = page(template, csrf=form_token(secret, purpose), **values)
    if fresh:
        set_cookie(request, response, cookie, secret, max_age=3600)
    return response


def form_token(secret: str, purpose: bytes) -> str:
    return hmac.new(secret.encode(), purpose, hashlib.sha256).hexdigest()


def drop_cookie(request: Request, response: Response, name: str, *,
                same_site: str = "lax") -> None:
    """Tell the browser to drop a cookie, with the attributes it was set with (a browser
    ignores the deletion of a __Host- cookie otherwise)."""
    secure = _on_https(request)
    response.delete_cookie(cookie_name(request, name), path="/", secure=secure, httponly=True,
                           samesite=same_site if secure or same_site != "none"
                           else None)  # type: ignore[arg-type]


def audit_browser(request: Request, event: str, request_id: str,
                  who: tuple[str, str, str] | None, *, error: AwsError | None = None,
                  issued_key: str | None = None, subject: str | None = None,
                  mfa_used: bool | None = None, service: str | None = None) -> None:
    """The audit line of something a browser endpoint issued or refused (a sign-in token, a
    console sign-in, a role switch): ``who`` is (ARN, account, access key id) of the
    credentials that asked, ``subject`` the identity issued (default: ``who``'s ARN),
    ``service`` the eventSource when the event's name does not say it (audit.py). A line
    that cannot be written raises AuditUnavailable, a StoreUnavailable: ``guarded`` answers
    the request with its 503 page instead of what the line was for."""
    runtime = request.app.state.runtime
    client = request.client
    runtime.audit.emit(AuditEvent(
        time=runtime.clock.now(), event=event, outcome="refused" if error else "issued",
        request_id=request_id, source_ip=client.host if client else None,
        user_agent=request.headers.get("user-agent"),
        principal=who[0] if who else None, account=who[1] if who else None,
        caller_access_key_id=who[2] if who else None, access_key_id=issued_key,
        subject=None if error else (subject or (who[0] if who else None)),
        error_code=error.code if error else None,
        error_message=error.message if error else None,
        mfa_used=None if mfa_used is None else ("Yes" if mfa_used else "No"),
        service=service))
    if event in SIGNIN_EVENTS:
        count_signin(request.url.path, refused=error is not None)


def guarded(handler: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """The one error handler of the browser endpoints: AWS errors become their page (or JSON
    for a client that asked for JSON), an unreachable store a 503 page, anything unexpected a
    logged failure with an id — never a stack trace."""

    async def run(request: Request) -> Response:
        error_id = new_request_id()
        try:
            if request.method == "POST":
                # A form acts (a sign-in spends a code, an assertion, a pending step) and
                # writes its line: with the audit sink known to be down it is refused first.
                request.app.state.runtime.audit.ready()
            return await handler(request)
        except AwsError as exc:
            log.info("%s %s refused (%s): %s [%s]", request.method, request.url.path, exc.code,
                     exc.message, error_id)
            error: AwsError = exc
        except BadForm as exc:
            error = InvalidRequest(str(exc))
        except StoreUnavailable as exc:
            log.error("%s %s: store unavailable: %s [%s]", request.method, request.url.path,
                      exc, error_id)
            error = ServiceUnavailable("The service is unavailable. Please try again later.")
        except Exception:
            log.exception("%s %s: unexpected failure [%s]", request.method, request.url.path,
                          error_id)
            error = InternalFailure("The broker could not complete the request.")
        if wants_json(request):
            return json_error(error, error_id)
        return error_page(error, error_id=error_id)

    return run

