"""The AWS JSON 1.1 protocol: a JSON body in, a JSON body out, the action in ``X-Amz-Target``.

It shares the one endpoint URL with the Query protocol (``POST /``); a request that carries an
``X-Amz-Target`` header is a JSON request, and its prefix (``AWSOrganizationsV20161128``)
names the service. ``JsonProtocol.handle`` does what ``QueryProtocol.handle`` does, in the same
order and with the same guarantees:

1. the operation from the target (``UnknownOperationException`` otherwise);
2. SigV4 authentication, for the service the target names;
3. the body read by ``jsontext.loads`` (``SerializationException`` for anything else) and
   validated against the operation's input shape from botocore's model
   (``shapes.parse_document``), each service turning constraint faults into its own error
   (Organizations: ``InvalidInputException`` with AWS's reason);
4. the handler, its result rendered as JSON (timestamps as epoch seconds), or its AwsError
   as ``{"__type": CODE, "Message": ...}`` with the ``x-amzn-ErrorType`` header.

Errors the broker's shared layers raise under Query names (AccessDenied,
InvalidClientTokenId, ...) take the names JSON services give them. Store outages, and an
audit line that cannot be written, are ``ServiceUnavailableException`` (503); anything
unexpected is logged once with the request id and answered with the service's internal error,
never a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from broker import jsontext
from broker.audit import AuditEvent, AuditSink
from broker.audit_sinks import emit_done
from broker.authn import Authenticator
from broker.aws import ids, shapes
from broker.aws.errors import AwsError
from broker.aws.http import HttpRequest, parse_query
from broker.aws.query import Call, Result, internal_failure
from broker.clock import Clock
from broker.errors import StoreUnavailable
from broker.principal import Principal

log = logging.getLogger("broker.json")

CONTENT_TYPE = "application/x-amz-json-1.1"

# The names JSON services give the errors of the layers every protocol shares.
_JSON_NAMES = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
    "MissingAuthenticationToken": "MissingAuthenticationTokenException",
    "IncompleteSignature": "IncompleteSignatureException",
    "ExpiredToken": "ExpiredTokenException",
    "RequestEntityTooLarge": "RequestEntityTooLargeException",
    "ServiceUnavailable": "ServiceUnavailableException",
    "InternalFailure": "InternalFailure",
}
# AWS's JSON services answer AccessDeniedException with 400 (their common errors), where the
# Query services answer AccessDenied with 403.
_JSON_STATUS = {"AccessDeniedException": 400}


class JsonError(AwsError):
    """An error of a JSON service, with the members its model gives it beyond the message."""

    def fields(self) -> dict[str, Any]:
        return {}


class ServiceError(JsonError):
    """An error a JSON service's model defines: its code, message and, where the model gives
    the error one, its ``Reason``."""

    status = 400
    sender_fault = True

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason

    def fields(self) -> dict[str, Any]:
        return {"Reason": self.reason} if self.reason else {}


class SerializationException(JsonError):
    code = "SerializationException"
    status = 400
    sender_fault = True


class UnknownOperationException(JsonError):
    code = "UnknownOperationException"
    status = 400
    sender_fault = True


@dataclass(frozen=True)
class JsonService:
    name: str  # the SigV4 service name
    target: str  # the X-Amz-Target prefix
    # Constraint faults, in this service's words (Organizations: InvalidInputException).
    invalid_input: Callable[[shapes.ShapeFaults], AwsError]
    internal_error: str = "InternalFailure"  # the code of an unexpected failure


@dataclass(frozen=True)
class JsonOperation:
    service: JsonService
    name: str
    input: shapes.Structure
    handler: Callable[[Call], Awaitable[Result]]
    signed: bool = True


class JsonRegistry:
    """Collects a JSON service's actions, each with the input shape its generated model names
    ``ACTIONRequest``."""

    def __init__(self, service: JsonService, model: Any) -> None:
        self.service = service
        self._model = model
        self.operations: list[JsonOperation] = []

    def action(self, name: str) -> Callable[[Callable[[Call], Awaitable[Result]]],
                                            Callable[[Call], Awaitable[Result]]]:
        def register(handler: Callable[[Call], Awaitable[Result]]
                     ) -> Callable[[Call], Awaitable[Result]]:
            self.operations.append(JsonOperation(self.service, name,
                                                 getattr(self._model, f"{name}Request"),
                                                 handler))
            return handler
        return register


class JsonResponse(NamedTuple):
    status: int
    body: bytes
    request_id: str
    headers: tuple[tuple[bytes, bytes], ...]


class JsonProtocol:
    def __init__(self, operations: Iterable[JsonOperation],
                 authenticator: Authenticator, *, audit: AuditSink | None = None,
                 clock: Clock | None = None) -> None:
        self._ops = {f"{op.service.target}.{op.name}": op for op in operations}
        self._services = {op.service.target: op.service for op in self._ops.values()}
        self._authn = authenticator
        self._audit = audit
        self._clock = clock

    @property
    def operations(self) -> list[JsonOperation]:
        return list(self._ops.values())

    def serves(self, target: str) -> bool:
        return target.partition(".")[0] in self._services

    async def handle(self, req: HttpRequest, *, source_ip: str | None,
                     secure: bool = False) -> JsonResponse:
        request_id = ids.new_request_id()
        target = req.header("x-amz-target") or ""
        service = self._services.get(target.partition(".")[0])
        op: JsonOperation | None = None
        caller: Principal | None = None
        params: dict[str, Any] | None = None
        try:
            op = self._ops.get(target)
            if op is None:
                raise UnknownOperationException(
                    f"The operation {target[:128]} is not one this endpoint knows.")
            if op.signed:
                query = parse_query(req.query) if req.query else []
                caller = await self._authn.authenticate(req, query, op.service.name)
            params = _input(op, req.body)
            if self._audit is not None and self._writes_line(op, caller):
                self._audit.ready()  # a sink known to be down: refused before it acts
            result = await op.handler(Call(
                action=op.name, params=params, caller=caller, request_id=request_id,
                source_ip=source_ip, user_agent=req.header("user-agent"), secure=secure))
        except AwsError as exc:
            error: AwsError = exc
        except StoreUnavailable as exc:
            log.error("request %s: store unavailable: %s", request_id, exc)
            error = _Unavailable("The service is unavailable. Please try again later.")
        except Exception:
            log.exception("request %s: unexpected failure", request_id)
            error = internal_failure(request_id)
        else:
            try:
                self._audited(op, caller, params, request_id, source_ip, req, None, service)
            except StoreUnavailable:  # the audit line: no answer is given without it
                # Answered 503 with no other line: a refusal's line would record as refused
                # a change that was made (it may well be written when this one was not).
                return _error(_Unavailable("The service is unavailable. Please try again "
                                           "later."), service, request_id)
            body = json.dumps(_wire(result or {}), separators=(",", ":")).encode()
            return JsonResponse(200, body, request_id, _headers(request_id))
        try:
            self._audited(op, caller, params, request_id, source_ip, req, error, service)
        except StoreUnavailable as exc:  # the refusal's audit line could not be written
            log.error("request %s: %s", request_id, exc)
            error = _Unavailable("The service is unavailable. Please try again later.")
        return _error(error, service, request_id)

    def _audited(self, op: JsonOperation | None, caller: Principal | None,
                 params: dict[str, Any] | None, request_id: str, source_ip: str | None,
                 req: HttpRequest, error: AwsError | None,
                 service: JsonService | None) -> None:
        """The audit line of a change (every action but Describe*, List* and Get*) a signed
        caller made or was refused, as CloudTrail records Organizations', sso-admin's and
        identitystore's writes. A change made is written once more when it could not be."""
        if (self._audit is None or self._clock is None or op is None or caller is None
                or not self._writes_line(op, caller)):
            return
        event = AuditEvent(
            time=self._clock.now(), event=op.name,
            outcome="refused" if error is not None else "succeeded", request_id=request_id,
            source_ip=source_ip, user_agent=req.header("user-agent"), principal=caller.arn,
            account=caller.account_id, caller_access_key_id=caller.access_key_id,
            error_code=None if error is None else json_code(error, service),
            error_message=None if error is None else error.message,
            service=op.service.name, caller=caller, parameters=params, shape=op.input)
        if error is None:
            emit_done(self._audit, event)
        else:
            self._audit.emit(event)

    def _writes_line(self, op: JsonOperation, caller: Principal | None) -> bool:
        return (self._audit is not None and self._clock is not None and caller is not None
                and not op.name.startswith(_READS))


_READS = ("Describe", "List", "Get")


class _Unavailable(AwsError):
    code = "ServiceUnavailable"
    status = 503


def _input(op: JsonOperation, body: bytes) -> dict[str, Any]:
    if not body.strip():
        doc: Any = {}
    else:
        try:
            doc = jsontext.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise SerializationException("The request body is not a JSON document.") from None
    try:
        return shapes.parse_document(op.input, doc)
    except shapes.SerializationFault as exc:
        raise SerializationException(str(exc)) from None
    except shapes.ShapeFaults as exc:
        raise op.service.invalid_input(exc) from None


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    return value


def _headers(request_id: str, error: str | None = None) -> tuple[tuple[bytes, bytes], ...]:
    headers = [(b"content-type", CONTENT_TYPE.encode()),
               (b"x-amzn-requestid", request_id.encode())]
    if error is not None:
        headers.append((b"x-amzn-errortype", error.encode()))
    return tuple(headers)


def json_code(error: AwsError, service: JsonService | None) -> str:
    """The code a JSON service answers an error with."""
    if isinstance(error, JsonError):
        return error.code
    if service is not None and error.code == "InternalFailure":
        return service.internal_error
    return _JSON_NAMES.get(error.code, error.code)


def _error(error: AwsError, service: JsonService | None, request_id: str) -> JsonResponse:
    code = json_code(error, service)
    doc: dict[str, Any] = {"__type": code, "Message": error.message}
    if isinstance(error, JsonError):
        doc.update(error.fields())
    body = json.dumps(doc, separators=(",", ":")).encode()
    status = _JSON_STATUS.get(code, error.status)
    return JsonResponse(status, body, request_id, _headers(request_id, code))


def error_response(error: AwsError, request_id: str) -> JsonResponse:
    """A JSON error for a request that failed before any service was chosen (its body too
    large to read, its path not UTF-8)."""
    return _error(error, None, request_id)
