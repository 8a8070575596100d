"""The AWS Query protocol: form parameters in, XML out, for STS and IAM on one endpoint.

``QueryProtocol.handle`` takes a request as received and returns status, body and headers:

1. read the parameters (query string and form body; a name given twice is refused);
2. find the operation from Action and Version (or, without Version, from the action name);
3. authenticate (SigV4) unless the operation is unsigned;
4. parse and validate the input against the operation's shape;
5. run the handler and render its result, or render the AwsError it raised.

Every failure is an ``ErrorResponse`` with AWS's code and status. Store outages, and an audit
line that cannot be written (audit_sinks.AuditUnavailable), become ServiceUnavailable; anything
unexpected is logged once with the request id and answered with InternalFailure, never with a
stack trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from broker.audit import AuditEvent, AuditSink, identity_of_federation
from broker.audit_sinks import emit_done
from broker.authn import Authenticator
from broker.aws import ids, shapes, sigv4, xml
from broker.aws.errors import (
    AwsError,
    InternalFailure,
    InvalidAction,
    MalformedQueryString,
    MissingParameter,
    ServiceUnavailable,
)
from broker.aws.http import HttpRequest, parse_query
from broker.clock import Clock
from broker.errors import StoreUnavailable
from broker.principal import Principal

log = logging.getLogger("broker.query")

_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    version: str
    namespace: str


STS = ServiceSpec("sts", "2011-06-15", "https://sts.amazonaws.com/doc/2011-06-15/")
IAM = ServiceSpec("iam", "2010-05-08", "https://iam.amazonaws.com/doc/2010-05-08/")


class Call(NamedTuple):
    """One validated call, as a handler sees it (a NamedTuple: one is built per request)."""

    action: str
    params: Mapping[str, Any]
    caller: Principal | None
    request_id: str
    source_ip: str | None
    user_agent: str | None
    secure: bool  # the request came over TLS (aws:SecureTransport)

    @property
    def principal(self) -> Principal:
        assert self.caller is not None, "signed operations always have a caller"
        return self.caller


Result = Mapping[str, Any] | None
Handler = Callable[[Call], Awaitable[Result]]
# For audited operations: (access key id issued, identity it speaks for) from the result.
Issued = Callable[[Mapping[str, Any]], tuple[str | None, str | None]]


@dataclass(frozen=True)
class Operation:
    service: ServiceSpec
    name: str
    input: shapes.Structure
    handler: Handler
    signed: bool = True
    issued: Issued | None = None  # set for operations that issue credentials: audited

    @property
    def audited(self) -> bool:
        """Whether a call writes an audit line: it issues credentials or changes IAM."""
        return self.issued is not None or (self.service is IAM
                                           and not self.name.startswith(_READS))


# IAM's actions that change nothing (the rest are audited, as CloudTrail records writes).
_READS = ("Get", "List", "Simulate")


class QueryResponse(NamedTuple):
    status: int
    body: bytes
    request_id: str  # also sent as the x-amzn-RequestId header
    action: str = "other"  # the operation's name (for metrics), "other" when none was found
    error_code: str = ""


class QueryProtocol:
    def __init__(self, operations: Iterable[Operation], authenticator: Authenticator,
                 audit: AuditSink, clock: Clock) -> None:
        self._ops: dict[tuple[str, str], Operation] = {}
        self._by_name: dict[str, Operation] = {}
        for op in operations:
            self._ops[(op.service.version, op.name)] = op
            self._by_name[op.name] = op
        self._versions = {op.service.version for op in self._ops.values()}
        self._authn = authenticator
        self._audit = audit
        self._clock = clock

    @property
    def operations(self) -> list[Operation]:
        return list(self._ops.values())

    async def handle(self, req: HttpRequest, *, source_ip: str | None,
                     secure: bool = False) -> QueryResponse:
        request_id = ids.new_request_id()
        namespace = STS.namespace
        op: Operation | None = None
        caller: Principal | None = None
        call: Call | None = None
        user_agent = req.header("user-agent")
        try:
            query, params = _parameters(req)
            op = self._operation(params)
            namespace = op.service.namespace
            if op.signed:
                try:
                    caller = await self._authn.authenticate(req, query, op.service.name)
                except AwsError as exc:
                    self._refused_auth(exc, op, req, query, request_id, source_ip,
                                       user_agent)
                    raise
            call = Call(
                action=op.name,
                params=shapes.parse(op.input, params),
                caller=caller,
                request_id=request_id,
                source_ip=source_ip,
                user_agent=user_agent,
                secure=secure,
            )
            if op.audited:  # a sink known to be down refuses it before it acts
                self._audit.ready()
            result = await op.handler(call)
        except AwsError as exc:
            return self._error(exc, op, caller, call, namespace, request_id, source_ip,
                               user_agent)
        except StoreUnavailable as exc:
            log.error("request %s: store unavailable: %s", request_id, exc)
            error: AwsError = ServiceUnavailable(
                "The service is unavailable. Please try again later.")
            return self._error(error, op, caller, call, namespace, request_id, source_ip,
                               user_agent)
        except Exception:
            log.exception("request %s: unexpected failure", request_id)
            error = internal_failure(request_id)
            return self._error(error, op, caller, call, namespace, request_id, source_ip,
                               user_agent)
        try:
            self._issued(op, call, result)
        except StoreUnavailable:  # the audit line: no answer is given without it
            # Answered 503 with no other line: a refusal's line would record as refused what
            # was issued or changed (it may well be written when this one was not).
            error = ServiceUnavailable("The service is unavailable. Please try again later.")
            return QueryResponse(error.status, xml.error_document(error, namespace, request_id),
                                 request_id, op.name, error.code)
        body = xml.result_document(op.name, namespace, result, request_id)
        return QueryResponse(200, body, request_id, op.name)

    async def invoke(self, caller: Principal, action: str, params: Mapping[str, str], *,
                     source_ip: str | None, user_agent: str | None,
                     secure: bool) -> Result:
        """An action for a caller the broker authenticated itself — the console, acting for
        its signed-in user — with the parameters a Query request would carry: validated by
        the action's input shape and run by its handler, authorization included, exactly as
        a signed request is (and audited as one). Raises the action's AwsError."""
        op = self._by_name[action]
        request_id = ids.new_request_id()
        call: Call | None = None
        try:
            call = Call(action=op.name, params=shapes.parse(op.input, params), caller=caller,
                        request_id=request_id, source_ip=source_ip, user_agent=user_agent,
                        secure=secure)
            if op.audited:  # refused before it acts when its line cannot be written
                self._audit.ready()
            result = await op.handler(call)
        except AwsError as exc:
            self._refused(exc, op, caller, call, request_id, source_ip, user_agent)
            raise
        self._issued(op, call, result)
        return result

    def _issued(self, op: Operation, call: Call, result: Result) -> None:
        """The audit line of an operation that issued credentials or changed IAM (written once
        more when it could not be; StoreUnavailable when it could not be written twice)."""
        if not op.audited:
            return
        emit_done(self._audit, self._issued_event(op, call, result))

    def _issued_event(self, op: Operation, call: Call, result: Result) -> AuditEvent:
        key_id = subject = None
        if op.issued is not None and result is not None:
            key_id, subject = op.issued(result)
        caller = call.caller
        return AuditEvent(
            time=self._clock.now(), event=op.name,
            outcome="issued" if op.issued is not None else "succeeded",
            request_id=call.request_id, source_ip=call.source_ip, user_agent=call.user_agent,
            principal=caller.arn if caller else None,
            account=caller.account_id if caller else subject and _account(subject),
            caller_access_key_id=caller.access_key_id if caller else None,
            access_key_id=key_id, subject=subject, service=op.service.name, caller=caller,
            identity=None if op.signed else identity_of_federation(op.name, result),
            parameters=call.params, shape=op.input,
            response=result if op.issued is not None else None,
        )

    def _operation(self, params: Mapping[str, str]) -> Operation:
        action = params.get("Action")
        if not action:
            raise MissingParameter("The request must contain the parameter Action")
        version = params.get("Version")
        if version is not None:
            op = self._ops.get((version, action))
            if op is None:
                raise InvalidAction(f"Could not find operation {action} for version {version}")
            return op
        op = self._by_name.get(action)
        if op is None:
            raise InvalidAction(f"Could not find operation {action}")
        return op

    def _error(self, error: AwsError, op: Operation | None, caller: Principal | None,
               call: Call | None, namespace: str, request_id: str, source_ip: str | None,
               user_agent: str | None) -> QueryResponse:
        try:
            self._refused(error, op, caller, call, request_id, source_ip, user_agent)
        except StoreUnavailable as exc:  # the refusal's audit line could not be written
            log.error("request %s: %s", request_id, exc)
            error = ServiceUnavailable("The service is unavailable. Please try again later.")
        return QueryResponse(error.status, xml.error_document(error, namespace, request_id),
                             request_id, op.name if op else "other", error.code)

    def _refused(self, error: AwsError, op: Operation | None, caller: Principal | None,
                 call: Call | None, request_id: str, source_ip: str | None,
                 user_agent: str | None) -> None:
        """The audit line of credentials or a change refused: to a signed caller, or to
        anyone asking an unsigned action (AssumeRoleWithSAML) — an identity provider's
        evidence refused is worth a line too. The parameters when they were valid."""
        if op is not None and op.audited and (caller is not None or not op.signed):
            self._audit.emit(AuditEvent(
                time=self._clock.now(), event=op.name, outcome="refused",
                request_id=request_id, source_ip=source_ip, user_agent=user_agent,
                principal=caller.arn if caller else None,
                account=caller.account_id if caller else None,
                caller_access_key_id=caller.access_key_id if caller else None,
                error_code=error.code, error_message=error.message,
                service=op.service.name, caller=caller,
                identity=None if op.signed else identity_of_federation(op.name, None),
                parameters=call.params if call is not None else None, shape=op.input,
            ))

    def _refused_auth(self, error: AwsError, op: Operation, req: HttpRequest,
                      query: list[tuple[str, str]], request_id: str, source_ip: str | None,
                      user_agent: str | None) -> None:
        if not sigv4.has_auth(req, query):
            return  # no credentials were presented, so none were refused
        key_id = None
        with contextlib.suppress(AwsError):
            key_id = sigv4.parse_claim(req, query).access_key_id[:128]
        self._audit.emit(AuditEvent(
            time=self._clock.now(), event="Authenticate", outcome="refused",
            request_id=request_id, source_ip=source_ip, user_agent=user_agent,
            caller_access_key_id=key_id, error_code=error.code, error_message=error.message,
            service=op.service.name, action=op.name,
        ))


def _account(arn: str) -> str | None:
    parts = arn.split(":", 5)
    return parts[4] or None if len(parts) == 6 else None


def internal_failure(request_id: str) -> InternalFailure:
    """The answer to a failure nobody foresaw: no detail, just the id the log knows it by."""
    return InternalFailure(
        "The request processing has failed because of an unknown error. "
        f"Quote request id {request_id} to the broker's administrator."
    )


def _parameters(req: HttpRequest) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(the decoded query pairs, the operation parameters from query and form body)."""
    try:
        query = parse_query(req.query) if req.query else []
        pairs = [(k, v) for k, v in query if not k.startswith("X-Amz-")]
        if req.body:
            content_type = req.header("content-type") or ""
            if content_type.partition(";")[0].strip().lower() == _FORM:
                pairs += parse_query(req.body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedQueryString("The query string or form body is not valid UTF-8.") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise MalformedQueryString(
                    f"The parameter {name[:128]} is given more than once.")
            seen.add(name)
    return query, params
