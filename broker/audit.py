"""Audit events: one JSON line, in CloudTrail's record shape, for everything the broker audits.

An event is built where something was issued, refused or changed, and rendered here into a
CloudTrail record (eventVersion 1.11): userIdentity, eventTime, eventSource, eventName,
awsRegion, sourceIPAddress, userAgent, errorCode, errorMessage, requestParameters,
responseElements, requestID, eventID, readOnly, eventType, managementEvent,
recipientAccountId. No member can carry a secret, because the rendering decides, not the
caller:

- requestParameters are the request's validated parameters with every member hidden whose
  model shape is ``sensitive`` (botocore's trait: passwords, SAML assertions, web identity
  tokens, private keys) or whose name says it holds one (``_HIDDEN_NAMES``: token codes,
  authentication codes, secrets, passwords, tokens — what botocore leaves unmarked); a hidden
  value is written as CloudTrail writes it, ``HIDDEN_DUE_TO_SECURITY_REASONS``;
- responseElements keep only the public parts of issued credentials (``_RESPONSE``: the access
  key id, the expiration, the assumed-role or federated user, the identity provider's
  subject), never a secret access key or a session token; other actions have none.

What CloudTrail's members leave no room for goes to additionalEventData: whether a sign-in used
MFA (``MFAUsed``, as CloudTrail writes it for ConsoleLogin) and, for the events that have no
answer to show (a browser's sign-in, the access portal, the command line's root keys), the
access key issued (``IssuedAccessKeyId``) and the identity it was issued to or signed in
(``IssuedTo``) when userIdentity does not already name it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Protocol

from broker.aws.ids import new_request_id
from broker.aws.shapes import ListOf, MapOf, Shape, String, Structure
from broker.clock import iso8601
from broker.frozen import frozen

if TYPE_CHECKING:
    from broker.principal import Principal

EVENT_VERSION = "1.11"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"  # what CloudTrail writes for a sensitive value
REGION = "us-east-1"  # where CloudTrail records the global services (IAM, STS, sign-in)
_quote: Callable[[str], str] = encode_basestring_ascii  # json.dumps's quoting, ensure_ascii


@frozen
class AuditEvent:
    time: datetime
    event: str  # the action (GetSessionToken, CreateAccessKey, ConsoleLogin, ...) or Authenticate
    outcome: str  # "issued" (or "succeeded") or "refused": ConsoleLogin's Success or Failure
    request_id: str
    source_ip: str | None
    user_agent: str | None
    principal: str | None = None  # ARN of the caller, when known
    account: str | None = None
    caller_access_key_id: str | None = None  # the key that signed the request
    access_key_id: str | None = None  # the key issued (in responseElements or additionalEventData)
    subject: str | None = None  # whom it was issued to (responseElements, userIdentity or IssuedTo)
    error_code: str | None = None
    error_message: str | None = None
    mfa_used: str | None = None  # console sign-in: "Yes" or "No" (CloudTrail's MFAUsed)
    # CloudTrail's members that the fields above do not give:
    service: str | None = None  # eventSource's service (sts, iam, ...); default by event name
    action: str | None = None  # eventName, when it is not ``event`` (a refused signature)
    caller: Principal | None = None  # the authenticated caller: userIdentity in full
    identity: Mapping[str, str] | None = None  # userIdentity given outright (SAML, web identity)
    parameters: Mapping[str, Any] | None = None  # the request's validated parameters
    shape: Structure | None = None  # their input shape: its sensitive members are hidden
    response: Mapping[str, Any] | None = None  # the result: only _RESPONSE's members are kept

    def line(self) -> str:
        """The record as one line of JSON (ASCII, compact), built without a dict to encode."""
        name = self.action or self.event
        service = self.service or _SERVICES.get(self.event, "iam")
        console = self.event == "ConsoleLogin"
        out = ['{"eventVersion":"', EVENT_VERSION, '","userIdentity":', self._identity(),
               ',"eventTime":"', iso8601(self.time), '","eventSource":"', service,
               '.amazonaws.com","eventName":', _quote(name), ',"awsRegion":"', REGION, '"']
        if self.source_ip is not None:
            out += ',"sourceIPAddress":', _text(self.source_ip)
        if self.user_agent is not None:
            out += ',"userAgent":', _text(self.user_agent)
        if self.error_code is not None:
            out += ',"errorCode":', _text(self.error_code)
        if self.error_message is not None:
            out += ',"errorMessage":', _text(self.error_message)
        out += ',"requestParameters":', ("null" if self.parameters is None
                                         else _parameters(self.parameters, self.shape))
        if console:
            outcome = "Failure" if self.outcome == "refused" else "Success"
            out += ',"responseElements":{"ConsoleLogin":"', outcome, '"}'
        elif (response := _response(self.response)) is not None:
            out += ',"responseElements":', response
        if self.response is None or self.mfa_used is not None or console:
            out.append(self._additional(console))
        out += (',"requestID":', _text(self.request_id), ',"eventID":"', new_request_id(),
                '","readOnly":', "true" if _read_only(name, service) else "false",
                ',"eventType":"', "AwsConsoleSignIn" if console else "AwsApiCall",
                '","managementEvent":true,"eventCategory":"Management"')
        recipient = self._recipient()
        if recipient is not None:
            out += ',"recipientAccountId":', _text(recipient)
        out.append("}")
        return "".join(out)

    def _identity(self) -> str:
        if self.identity is not None:
            return _json(self.identity)
        if self.caller is not None:
            return _caller(self.caller)
        arn = self._arn()
        if arn is None:
            members = ['"type":"Unknown"']
        else:
            account = self.account or _account_of(arn)
            members = [f'"type":"{_type_of(arn)}"', f'"arn":{_text(arn)}']
            if account:
                members.append(f'"accountId":{_text(account)}')
        if self.caller_access_key_id is not None:
            members.append(f'"accessKeyId":{_text(self.caller_access_key_id)}')
        return "{" + ",".join(members) + "}"

    def _arn(self) -> str | None:
        """userIdentity's ARN when no caller or identity is given."""
        if self.principal is None and self.event == "ConsoleLogin":
            return self.subject  # who signed in: CloudTrail's ConsoleLogin names them
        return self.principal

    def _additional(self, console: bool) -> str:
        """additionalEventData: MFAUsed of a sign-in, and what was issued when no answer
        (responseElements) shows it: the key, and whom it speaks for unless userIdentity
        names them already."""
        members = []
        if self.mfa_used is not None or console:
            members.append('"MFAUsed":' + _text("No" if self.mfa_used is None else self.mfa_used))
        if self.response is None:
            if self.access_key_id is not None:
                members.append('"IssuedAccessKeyId":' + _text(self.access_key_id))
            if self.subject is not None and self.subject != (
                    self.caller.arn if self.caller is not None else self._arn()):
                members.append('"IssuedTo":' + _text(self.subject))
        return ',"additionalEventData":{' + ",".join(members) + "}" if members else ""

    def _recipient(self) -> str | None:
        if self.account is not None:
            return self.account
        if self.caller is not None:
            return self.caller.account_id
        for arn in (self.subject, self.principal):
            if arn is not None and (found := _account_of(arn)):
                return found
        return None


class AuditSink(Protocol):
    def ready(self) -> None:
        """Raises AuditUnavailable when the sink is known not to take a line now (its receiver
        failing, its queue stalled, its last write failed, closed): called before a request
        that writes a line acts, so that it is refused before anything is done rather than
        done and then answered 503 with nothing on record."""

    def emit(self, event: AuditEvent) -> None: ...

    def close(self) -> None: ...


# eventSource of the events that are not IAM's (the Query protocol names its service itself).
_SERVICES = {
    **dict.fromkeys(("GetSessionToken", "GetFederationToken", "AssumeRole", "AssumeRoot",
                     "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity"), "sts"),
    **dict.fromkeys(("ConsoleLogin", "GetSigninToken", "SwitchRole", "DemoSignIn",
                     "UserAuthentication"), "signin"),
    **dict.fromkeys(("GetRoleCredentials", "Federate", "AcceptInvitation",
                     "CreateMfaDeviceForUser"), "sso"),
    **dict.fromkeys(("Authorize", "AuthorizeDevice"), "sso-oauth"),
}


def _read_only(name: str, service: str) -> bool:
    # As CloudTrail marks them: STS's calls (even those that issue credentials) and the
    # reads of the other services are read-only; sign-in and every change are not.
    if service == "sts":
        return True
    return service != "signin" and name.startswith(("Get", "List", "Describe"))


_USER_TYPES = {"Account": "Root", "User": "IAMUser", "AssumedRole": "AssumedRole",
               "FederatedUser": "FederatedUser"}


def _caller(p: Principal) -> str:
    """userIdentity of an authenticated caller, as CloudTrail writes it."""
    kind = _USER_TYPES[p.type.value]
    out = [f'{{"type":"{kind}","principalId":',
           _text(p.account_id if kind == "Root" else p.user_id), ',"arn":', _text(p.arn),
           ',"accountId":', _text(p.account_id), ',"accessKeyId":', _text(p.access_key_id)]
    if kind == "IAMUser":
        out += ',"userName":', _text(p.name)
    session = p.session
    if session is not None:
        out.append(',"sessionContext":{')
        if kind in ("AssumedRole", "FederatedUser"):
            issuer = session.source_arn
            out += ('"sessionIssuer":{"type":"', _issuer_type(issuer), '","principalId":',
                    _text(session.source_id), ',"arn":', _text(issuer), ',"accountId":',
                    _text(_account_of(issuer) or p.account_id), ',"userName":',
                    _text(issuer.rsplit("/", 1)[-1] if "/" in issuer else "root"), "},")
        out += ('"attributes":{"creationDate":"', iso8601(session.issued),
                '","mfaAuthenticated":"', "true" if session.mfa else "false", '"}')
        if session.source_identity is not None:
            out += ',"sourceIdentity":', _text(session.source_identity)
        out.append("}")
    out.append("}")
    return "".join(out)


def _issuer_type(arn: str) -> str:
    if ":role/" in arn:
        return "Role"
    return "Root" if arn.endswith(":root") else "IAMUser"


def _type_of(arn: str) -> str:
    """userIdentity's type from an ARN alone (the browser endpoints know no more)."""
    if ":assumed-role/" in arn:
        return "AssumedRole"
    if ":federated-user/" in arn:
        return "FederatedUser"
    if ":user/" in arn:
        return "IAMUser"
    return "Root" if arn.endswith(":root") else "Unknown"


def _account_of(arn: str) -> str:
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" else ""


def identity_of_federation(action: str, result: Mapping[str, Any] | None) -> dict[str, str]:
    """userIdentity of an AssumeRoleWithSAML / AssumeRoleWithWebIdentity caller: the identity
    provider's verified subject (from the answer; none when it was refused)."""
    if action == "AssumeRoleWithSAML":
        identity = {"type": "SAMLUser"}
        if result is not None and result.get("Subject") is not None:
            identity.update(principalId=f"{result.get('Issuer')}:{result['Subject']}",
                            userName=result["Subject"],
                            identityProvider=str(result.get("Issuer")))
        return identity
    identity = {"type": "WebIdentityUser"}
    if result is not None and result.get("SubjectFromWebIdentityToken") is not None:
        subject = result["SubjectFromWebIdentityToken"]
        identity.update(principalId=f"{result.get('Provider')}:{result.get('Audience')}:"
                                    f"{subject}",
                        userName=subject, identityProvider=str(result.get("Provider")))
    return identity


# -- requestParameters ---------------------------------------------------------------------------

# Members whose names say they carry a secret, hidden whatever their model says (botocore marks
# passwords, assertions, tokens and keys sensitive, but not TokenCode or AuthenticationCode1).
_HIDDEN_NAMES = ("password", "secret", "token", "assertion", "privatekey", "authenticationcode",
                 "samlresponse", "seed", "otp", "credential")


_HIDDEN = re.compile("|".join(_HIDDEN_NAMES), re.IGNORECASE).search
# Per member name: (CloudTrail's name quoted — the member's, first letter low —, hidden by
# name). Names come from the input shapes, a bounded set; the cache stops growing past it.
_NAMES: dict[str, tuple[str, bool]] = {}
# Per structure (by identity: the shapes are module constants): its members' shapes by name.
_STRUCTURES: dict[int, tuple[Structure, dict[str, Shape]]] = {}


def _name(name: str) -> tuple[str, bool]:
    found = _NAMES.get(name)
    if found is None:
        found = (_quote(name[:1].lower() + name[1:]), _HIDDEN(name) is not None)
        if len(_NAMES) < 4096:
            _NAMES[name] = found
    return found


def _member_shapes(shape: Structure) -> dict[str, Shape]:
    found = _STRUCTURES.get(id(shape))
    if found is None or found[0] is not shape:
        found = (shape, {m.name: m.shape for m in shape.members})
        _STRUCTURES[id(shape)] = found
    return found[1]


def _parameters(params: Mapping[str, Any], shape: Shape | None) -> str:
    shapes = _member_shapes(shape) if isinstance(shape, Structure) else {}
    members = []
    for name, value in params.items():
        key, hidden = _name(name)
        inner = shapes.get(name)
        if hidden or (type(inner) is String and inner.sensitive):
            members.append(f'{key}:"{HIDDEN}"')
        elif type(value) is str:
            members.append(f"{key}:{_quote(value)}")
        else:
            members.append(f"{key}:{_parameter(value, inner)}")
    return "{" + ",".join(members) + "}"


def _parameter(value: Any, shape: Shape | None) -> str:
    """A value inside a member not hidden by name: its structures' members are checked again
    (a tag's Value is not hidden; a nested Password would be)."""
    if isinstance(shape, String) and shape.sensitive:
        return f'"{HIDDEN}"'
    if isinstance(value, Mapping):
        if isinstance(shape, MapOf):
            return "{" + ",".join(f"{_quote(str(k))}:{_parameter(v, shape.value)}"
                                  for k, v in value.items()) + "}"
        return _parameters(value, shape)
    if isinstance(value, list | tuple):
        member = shape.member if isinstance(shape, ListOf) else None
        return "[" + ",".join(_parameter(v, member) for v in value) + "]"
    return _json(value)


# -- responseElements ----------------------------------------------------------------------------

# The answer's members an audit line keeps, each with the members of it kept (None: the value
# itself, which is public). Everything else — a SecretAccessKey, a SessionToken — is left out.
_RESPONSE: dict[str, tuple[str, ...] | None] = {
    "Credentials": ("AccessKeyId", "Expiration"),
    "roleCredentials": ("accessKeyId", "expiration"),
    "AssumedRoleUser": ("AssumedRoleId", "Arn"),
    "FederatedUser": ("FederatedUserId", "Arn"),
    "AccessKey": ("AccessKeyId", "UserName", "Status", "CreateDate"),
    "PackedPolicySize": None, "SourceIdentity": None, "Subject": None, "SubjectType": None,
    "Issuer": None, "Audience": None, "NameQualifier": None, "Provider": None,
    "SubjectFromWebIdentityToken": None,
}


_RESPONSE_NAMES = {name: _quote(name[:1].lower() + name[1:]) for name in (
    *_RESPONSE, *(k for keep in _RESPONSE.values() for k in keep or ()))}


def _response(result: Mapping[str, Any] | None) -> str | None:
    """responseElements, or None when there are none (the member is then left out)."""
    if result is None:
        return None
    members = []
    for name, value in result.items():
        if value is None or name not in _RESPONSE:
            continue
        keep = _RESPONSE[name]
        if keep is None:
            members.append(f"{_RESPONSE_NAMES[name]}:{_json(value)}")
        elif isinstance(value, Mapping):
            inner = [f"{_RESPONSE_NAMES[k]}:{_json(value[k])}"
                     for k in keep if value.get(k) is not None]
            members.append(f"{_RESPONSE_NAMES[name]}:{{{','.join(inner)}}}")
    return "{" + ",".join(members) + "}" if members else None


# -- JSON ----------------------------------------------------------------------------------------



def _text(value: object) -> str:
    # Every identity field is text; should anything else ever reach one, it is written as
    # json.dumps would, never refused halfway through a request.
    return _quote(value) if isinstance(value, str) else _json(value)


def _json(value: object) -> str:
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, datetime):
        return _quote(iso8601(value))
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_quote(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if type(value) is int:
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return _quote(str(value))
