"""``PUBLIC_URL/scim/v2/{identity store id}/…``: the SCIM 2.0 server's HTTP side, an ASGI
app that BrokerApp sends every path under ``/scim/v2/`` to whatever the method (Starlette's
router would answer a path it cannot match — one with a line break — with its HTML page). It reads
the request (path, strict UTF-8 query, headers, a body of at most ``server.max_body_bytes``),
lets ``scim/server.py`` answer, and renders the answer as ``application/scim+json`` — every
refusal SCIM's error document (RFC 7644 §3.12), an unexpected failure one with status "500"
and an id that is also in the log, never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from broker.aws.http import parse_query
from broker.aws.ids import new_request_id
from broker.errors import StoreUnavailable
from broker.scim.errors import ScimError
from broker.scim.server import ScimRequest, ScimResponse, ScimServer

log = logging.getLogger("broker.scim")
PREFIX = "/scim/v2/"
MEDIA = "application/scim+json"


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _render(reply: ScimResponse, request_id: str) -> Response:
    headers = dict(reply.headers)
    headers["x-amzn-RequestId"] = request_id
    if reply.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scim"'
    if reply.document is None:
        return Response(status_code=reply.status, headers=headers)
    body = json.dumps(reply.document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return Response(body, status_code=reply.status, headers=headers, media_type=MEDIA)


def _error(exc: ScimError) -> ScimResponse:
    return ScimResponse(exc.status, exc.document())


class ScimApp:
    def __init__(self, state: State) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await respond(Request(scope, receive), self._state.runtime)
        await response(scope, receive, send)


async def respond(request: Request, runtime: Any) -> Response:
    request_id = new_request_id()
    server: ScimServer = runtime.scim
    try:
        reply = await _serve(request, server, runtime.settings.server.max_body_bytes)
    except ScimError as exc:
        if exc.status >= 500:
            log.info("SCIM %s %s: %s [%s]", request.method, request.url.path, exc.detail,
                     request_id)
        reply = _error(exc)
    except StoreUnavailable as exc:
        log.error("SCIM %s %s: store unavailable: %s [%s]", request.method,
                  request.url.path, exc, request_id)
        reply = _error(ScimError(503, "The service is unavailable. Please try again later."))
    except Exception:
        log.exception("SCIM %s %s: unexpected failure [%s]", request.method,
                      request.url.path, request_id)
        reply = _error(ScimError(500, f"The broker could not complete the request "
                                      f"(error id {request_id})."))
    return _render(reply, request_id)


async def _serve(request: Request, server: ScimServer, limit: int) -> ScimResponse:
    path: str = request.scope["path"]
    rest = path[len(PREFIX):] if path.startswith(PREFIX) else ""
    parts = rest.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts or any(not p for p in parts):
        raise ScimError(404, "The SCIM endpoint is /scim/v2/{identity store id}/.")
    if request.method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise ScimError(405, f"{request.method[:16]} is not a SCIM method.")
    try:
        raw = request.scope["query_string"].decode("utf-8")
        pairs = parse_query(raw)
    except UnicodeDecodeError:
        raise ScimError(400, "The query string is not UTF-8.", "invalidValue") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise ScimError(400, f"The query gives {name[:64]} twice.", "invalidValue")
        query[name] = value
    try:
        body = await _body(request, limit)
    except _TooLarge:
        raise ScimError(413, f"The request body is larger than the {limit} bytes this "
                             "server accepts.") from None
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await server.handle(ScimRequest(request.method, parts[0], tuple(parts[1:]), query,
                                           headers, body))

