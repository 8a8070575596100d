"""The AWS endpoint: turn the HTTP request into an HttpRequest, hand it to its protocol
(JSON 1.1 when it names an ``X-Amz-Target``, the Query protocol otherwise).

A plain ASGI app rather than a Starlette endpoint (app.py routes to it first): this is the hot
path of every SDK call, and the protocol needs nothing from Starlette's Request and Response
objects but their cost.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import State
from starlette.types import Message, Receive, Scope, Send

from broker.aws import jsonproto, xml
from broker.aws.errors import (
    AwsError,
    MalformedQueryString,
    RequestEntityTooLarge,
)
from broker.aws.http import HttpRequest
from broker.aws.ids import new_request_id
from broker.aws.query import STS, QueryProtocol, internal_failure
from broker.metrics import OTHER
from broker.metrics import credentials_issued as _issued
from broker.metrics import request as _observe

log = logging.getLogger("broker.query")


class Disconnected(Exception):
    """The client went away before its request arrived."""


class QueryApp:
    """The ASGI app of ``/``: reads the request, lets the protocol answer, sends the answer.

    The protocol turns every failure into an AWS error; should anything escape it all the
    same, the client still gets an InternalFailure document, never a bare 500.
    """

    def __init__(self, state: State) -> None:
        self._state = state
        # For metrics, from the registries (never from the request): the JSON actions by
        # target, and the Query actions that issue credentials.
        self._json_actions: dict[str, str] | None = None
        self._issuing: frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            protocol, action, status, code = await self._serve(scope, receive, send)
        except Exception:
            request_id = new_request_id()
            log.exception("request %s: unexpected failure in the Query endpoint", request_id)
            error = internal_failure(request_id)
            await _respond(send, 500, xml.error_document(error, STS.namespace, request_id),
                           request_id)
            protocol, action, status, code = "query", OTHER, 500, error.code
        if status:
            _observe(protocol, action, status, code, time.perf_counter() - started)
            if status == 200 and action in self._issuing:
                _issued(action)

    def _json_action(self, scope: Scope, status: int,
                     headers: tuple[tuple[bytes, bytes], ...]) -> tuple[str, str]:
        """(the JSON action's name or "other", the error code of the answer or "")."""
        if self._json_actions is None:
            self._names()
        assert self._json_actions is not None
        target = next((v for k, v in scope["headers"] if k == b"x-amz-target"), b"")
        action = self._json_actions.get(target.decode("latin-1"), OTHER)
        code = next((v.decode() for k, v in headers if k == b"x-amzn-errortype"), "") \
            if status >= 400 else ""
        return action, code

    def _names(self) -> None:
        runtime = self._state.runtime
        self._json_actions = {f"{op.service.target}.{op.name}": op.name
                              for op in runtime.json_protocol.operations}
        # Temporary credentials only (broker_credentials_issued_total): IAM's CreateAccessKey
        # is audited as issuing a key too, but it is a long-term one, counted among requests.
        self._issuing = frozenset(op.name for op in runtime.protocol.operations
                                  if op.issued is not None and op.service is STS)

    async def _serve(self, scope: Scope, receive: Receive,
                     send: Send) -> tuple[str, str, int, str]:
        """Answer; (protocol, action, status, error code) for the metrics (status 0: no
        answer was sent)."""
        runtime = self._state.runtime
        protocol: QueryProtocol = runtime.protocol
        is_json = any(name == b"x-amz-target" for name, _ in scope["headers"])
        try:
            body = await _body(scope, receive, runtime.settings.server.max_body_bytes)
            http = _http_request(scope, body)
        except Disconnected:
            return "query", OTHER, 0, ""  # nobody is left to read an answer
        except AwsError as exc:
            request_id = new_request_id()
            if is_json:
                error = jsonproto.error_response(exc, request_id)
                await _send(send, error.status, error.body, error.headers)
                action, code = self._json_action(scope, error.status, error.headers)
                return "json", action, error.status, code
            document = xml.error_document(exc, STS.namespace, request_id)
            await _respond(send, exc.status, document, request_id)
            return "query", OTHER, exc.status, exc.code
        client = scope.get("client")
        source_ip = client[0] if client else None
        secure = scope["scheme"] == "https"
        if is_json:
            # JSON 1.1 (X-Amz-Target): Organizations and the services after it.
            reply = await runtime.json_protocol.handle(http, source_ip=source_ip, secure=secure)
            await _send(send, reply.status, reply.body, reply.headers)
            action, code = self._json_action(scope, reply.status, reply.headers)
            return "json", action, reply.status, code
        answer = await protocol.handle(http, source_ip=source_ip, secure=secure)
        await _respond(send, answer.status, answer.body, answer.request_id)
        if self._json_actions is None:
            self._names()
        return "query", answer.action, answer.status, answer.error_code



async def _send(send: Send, status: int, body: bytes,
                headers: tuple[tuple[bytes, bytes], ...]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def _respond(send: Send, status: int, body: bytes, request_id: str) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/xml"),
            (b"content-length", str(len(body)).encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})


def _http_request(scope: Scope, body: bytes) -> HttpRequest:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    try:
        path = raw_path.split(b"?", 1)[0].decode("utf-8")
        query = scope["query_string"].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedQueryString("The request path or query string is not valid UTF-8.") \
            from None
    headers = [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
               for k, v in scope["headers"]]
    return HttpRequest(scope["method"], path, query, headers, body)


async def _body(scope: Scope, receive: Receive, limit: int) -> bytes:
    message = f"Request body is larger than the {limit} bytes this broker accepts."
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestEntityTooLarge(message)
    chunks: list[bytes] = []
    size = 0
    while True:
        event: Message = await receive()
        if event["type"] == "http.disconnect":
            raise Disconnected()
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge(message)
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)
