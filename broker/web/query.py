"""The AWS Query endpoint: turn the HTTP request into an HttpRequest, hand it to the protocol."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from broker.aws import xml
from broker.aws.errors import RequestEntityTooLarge
from broker.aws.ids import new_request_id
from broker.aws.query import STS, QueryProtocol
from broker.aws.sigv4 import HttpRequest


async def query_endpoint(request: Request) -> Response:
    protocol: QueryProtocol = request.app.state.runtime.protocol
    limit: int = request.app.state.runtime.settings.server.max_body_bytes
    try:
        body = await _body(request, limit)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read an answer
    except RequestEntityTooLarge as exc:
        request_id = new_request_id()
        return Response(xml.error_document(exc, STS.namespace, request_id), exc.status,
                        {"x-amzn-RequestId": request_id}, media_type="text/xml")
    scope = request.scope
    http = HttpRequest(
        method=scope["method"],
        path=scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
        query=scope["query_string"].decode("latin-1"),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
        body=body,
    )
    client = request.client
    answer = await protocol.handle(
        http, source_ip=client.host if client else None, secure=scope["scheme"] == "https"
    )
    return Response(answer.body, answer.status, answer.headers)


async def _body(request: Request, limit: int) -> bytes:
    message = f"Request body is larger than the {limit} bytes this broker accepts."
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestEntityTooLarge(message)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge(message)
        chunks.append(chunk)
    return b"".join(chunks)
