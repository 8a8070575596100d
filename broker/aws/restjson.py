"""The AWS rest-json protocol: the action named by method and path, members in the query
string, in headers and in a JSON body (the ``sso`` and ``sso-oidc`` services).

Each operation is declared from its generated model: the ``HTTP`` table (method, path, where
each member travels) and the input shape. ``RestProtocol.handle`` answers one request, in the
order and with the guarantees of the JSON 1.1 protocol (broker/aws/jsonproto.py):

1. the operation from the path, then the method (a known path with another method is the
   service's ``InvalidRequestException`` with status 405, never a bare 404 or 405);
2. the members gathered from where the model puts them, the body read by ``jsontext.loads``,
   and the whole validated by ``shapes.parse_document`` against the input shape;
3. the handler, its result rendered as JSON, or its error in the service's words: the status
   of the error's shape in the model, the code in ``x-amzn-ErrorType``, and the members the
   error shape has (``message`` for ``sso``; ``error`` and ``error_description`` for
   ``sso-oidc``, OAuth's fields).

Neither service is signed (botocore's model says ``auth: none``): the portal API carries a
bearer token in ``x-amz-sso_bearer_token``, the OAuth server client credentials in the body.
Store outages are the service's internal error with status 503; anything unexpected is
logged once with the request id and answered with the service's internal error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from broker import jsontext
from broker.aws import ids, shapes
from broker.aws.errors import AwsError
from broker.aws.http import HttpRequest, parse_query
from broker.aws.jsonproto import _wire
from broker.aws.query import Call, Result
from broker.errors import StoreUnavailable

log = logging.getLogger("broker.rest")

CONTENT_TYPE = "application/json"


class RestError(AwsError):
    """An error a rest-json service's model defines: its code (the error shape's name), the
    message, and, for the shapes that have one, a ``reason``. Its status is the one the
    service's model gives the shape."""

    sender_fault = True

    def __init__(self, code: str, message: str, *, reason: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.fixed_status = status  # None: the status the model gives the code


@dataclass(frozen=True)
class RestService:
    name: str
    # Error shape → HTTP status, as the model's ``error.httpStatusCode`` says.
    statuses: Mapping[str, int]
    # The body of an error, from the members its shape has.
    body: Callable[[RestError], dict[str, Any]]
    invalid_request: str = "InvalidRequestException"
    internal_error: str = "InternalServerException"


@dataclass(frozen=True)
class RestOperation:
    service: RestService
    name: str
    method: str
    path: str
    input: shapes.Structure
    locations: Mapping[str, tuple[str, str]]  # member → (querystring | header, wire name)
    handler: Callable[[Call], Awaitable[Result]]


class RestRegistry:
    """Collects a rest-json service's actions from its generated model: ``HTTP[ACTION]`` and
    the input shape ``ACTIONRequest``."""

    def __init__(self, service: RestService, model: Any) -> None:
        self.service = service
        self._model = model
        self.operations: list[RestOperation] = []

    def action(self, name: str) -> Callable[[Callable[[Call], Awaitable[Result]]],
                                            Callable[[Call], Awaitable[Result]]]:
        method, path, locations = self._model.HTTP[name]

        def register(handler: Callable[[Call], Awaitable[Result]]
                     ) -> Callable[[Call], Awaitable[Result]]:
            self.operations.append(RestOperation(
                self.service, name, method, path, getattr(self._model, f"{name}Request"),
                locations, handler))
            return handler
        return register


class RestResponse(NamedTuple):
    status: int
    body: bytes
    request_id: str
    headers: tuple[tuple[bytes, bytes], ...]


class RestProtocol:
    def __init__(self, operations: Iterable[RestOperation]) -> None:
        self._by_path: dict[str, dict[str, RestOperation]] = {}
        for op in operations:
            self._by_path.setdefault(op.path, {})[op.method] = op

    @property
    def operations(self) -> list[RestOperation]:
        return [op for ops in self._by_path.values() for op in ops.values()]

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self._by_path)

    def service_of(self, path: str) -> RestService | None:
        ops = self._by_path.get(path)
        return next(iter(ops.values())).service if ops else None

    async def handle(self, req: HttpRequest, *, source_ip: str | None, secure: bool = False,
                     service: RestService) -> RestResponse:
        """The answer to a request; ``service`` speaks for a path no operation has (one
        that names an operation's path only once decoded)."""
        request_id = ids.new_request_id()
        ops = self._by_path.get(req.path)
        if not ops:
            return error_response(RestError(service.invalid_request,
                                            "No operation has this path.", status=404),
                                  service, request_id)
        service = next(iter(ops.values())).service
        try:
            op = ops.get(req.method)
            if op is None:
                allowed = ", ".join(sorted(ops))
                raise RestError(service.invalid_request,
                                f"{req.path} accepts {allowed}, not {req.method[:16]}.",
                                status=405)
            params = _input(op, req)
            result = await op.handler(Call(
                action=op.name, params=params, caller=None, request_id=request_id,
                source_ip=source_ip, user_agent=req.header("user-agent"), secure=secure))
        except RestError as exc:
            return error_response(exc, service, request_id)
        except StoreUnavailable as exc:
            log.error("request %s: store unavailable: %s", request_id, exc)
            unavailable = RestError(service.internal_error,
                                    "The service is unavailable. Please try again later.",
                                    status=503)
            return error_response(unavailable, service, request_id)
        except Exception:
            log.exception("request %s: unexpected failure", request_id)
            return error_response(internal_error(service, request_id), service, request_id)
        body = json.dumps(_wire(result or {}), separators=(",", ":")).encode()
        return RestResponse(200, body, request_id, _headers(request_id))


def internal_error(service: RestService, request_id: str) -> RestError:
    return RestError(service.internal_error,
                     "The request processing has failed because of an unknown error. "
                     f"Quote request id {request_id} to the broker's administrator.")


def _input(op: RestOperation, req: HttpRequest) -> dict[str, Any]:
    service = op.service
    located = set(op.locations)
    doc: dict[str, Any] = {}
    if req.body.strip():
        try:
            body = jsontext.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RestError(service.invalid_request,
                            "The request body is not a JSON document.") from None
        if not isinstance(body, dict):
            raise RestError(service.invalid_request, "The request body is not a JSON object.")
        # A member the model puts in the query string or a header counts only from there.
        doc = {k: v for k, v in body.items() if k not in located}
    query: dict[str, str] = {}
    if req.query:
        try:
            for name, value in parse_query(req.query):
                query.setdefault(name, value)
        except UnicodeDecodeError:
            raise RestError(service.invalid_request,
                            "The query string is not valid UTF-8.") from None
    for member, (where, name) in op.locations.items():
        raw = query.get(name) if where == "querystring" else req.header(name.lower())
        if raw is None:
            continue
        shape = op.input.member(member)
        if shape is not None and isinstance(shape.shape, shapes.Integer):
            try:
                doc[member] = int(raw)
            except ValueError:
                raise RestError(service.invalid_request,
                                f"{name} must be a number.") from None
        else:
            doc[member] = raw
    try:
        return shapes.parse_document(op.input, doc)
    except shapes.SerializationFault as exc:
        raise RestError(service.invalid_request, str(exc)) from None
    except shapes.ShapeFaults as exc:
        raise RestError(service.invalid_request, exc.message()) from None


def _headers(request_id: str, error: str | None = None) -> tuple[tuple[bytes, bytes], ...]:
    headers = [(b"content-type", CONTENT_TYPE.encode()),
               (b"x-amzn-requestid", request_id.encode())]
    if error is not None:
        headers.append((b"x-amzn-errortype", error.encode()))
    return tuple(headers)


def error_response(error: AwsError, service: RestService, request_id: str) -> RestResponse:
    """The service's rest-json error for ``error`` (one raised before any operation was
    chosen, such as a body too large, becomes the service's invalid request)."""
    if not isinstance(error, RestError):
        error = RestError(service.invalid_request, error.message, status=error.status)
    status = error.fixed_status or service.statuses.get(error.code, 400)
    body = json.dumps(service.body(error), separators=(",", ":")).encode()
    return RestResponse(status, body, request_id, _headers(request_id, error.code))
