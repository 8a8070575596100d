"""AWS wire errors: each class carries the code, HTTP status and fault type AWS uses.

The Query endpoint renders any of these as an ``ErrorResponse`` body; nothing else needs to
know about XML. Messages follow AWS's own wording where AWS has one.
"""

from __future__ import annotations

from broker.errors import BrokerError


class AwsError(BrokerError):
    code = "InternalFailure"
    status = 500
    sender_fault = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def fault_type(self) -> str:
        return "Sender" if self.sender_fault else "Receiver"


class _SenderError(AwsError):
    status = 400
    sender_fault = True


# -- request shape ------------------------------------------------------------------------------


class InvalidAction(_SenderError):
    code = "InvalidAction"


class MissingParameter(_SenderError):
    code = "MissingParameter"


class RequestEntityTooLarge(_SenderError):
    code = "RequestEntityTooLarge"
    status = 413


class InvalidRequest(_SenderError):
    """A browser endpoint's form that cannot be read (not URL-encoded, too large, a field
    twice)."""

    code = "InvalidRequest"


class MalformedQueryString(_SenderError):
    code = "MalformedQueryString"
    status = 404  # AWS documents 404 for this one


class ValidationError(_SenderError):
    code = "ValidationError"

    @classmethod
    def from_faults(cls, faults: list[str]) -> ValidationError:
        noun = "error" if len(faults) == 1 else "errors"
        return cls(f"{len(faults)} validation {noun} detected: " + "; ".join(faults))


class InvalidParameterValue(_SenderError):
    code = "InvalidParameterValue"


class InvalidInput(_SenderError):
    code = "InvalidInput"


class PasswordPolicyViolation(_SenderError):
    code = "PasswordPolicyViolation"


class InvalidAuthorizationMessage(_SenderError):
    code = "InvalidAuthorizationMessageException"


class MalformedPolicyDocument(_SenderError):
    code = "MalformedPolicyDocument"


class PackedPolicyTooLarge(_SenderError):
    code = "PackedPolicyTooLarge"


# -- authentication -----------------------------------------------------------------------------


class MissingAuthenticationToken(_SenderError):
    code = "MissingAuthenticationToken"
    status = 403

    def __init__(self, message: str = "Request is missing Authentication Token") -> None:
        super().__init__(message)


class IncompleteSignature(_SenderError):
    code = "IncompleteSignature"


class InvalidClientTokenId(_SenderError):
    code = "InvalidClientTokenId"
    status = 403

    def __init__(
        self, message: str = "The security token included in the request is invalid."
    ) -> None:
        super().__init__(message)


class SignatureDoesNotMatch(_SenderError):
    code = "SignatureDoesNotMatch"
    status = 403


class ExpiredToken(_SenderError):
    code = "ExpiredToken"
    status = 403

    def __init__(
        self, message: str = "The security token included in the request is expired"
    ) -> None:
        super().__init__(message)


class AccessDenied(_SenderError):
    code = "AccessDenied"
    status = 403


# -- federation (AssumeRoleWithSAML, AssumeRoleWithWebIdentity) -----------------------------------


class InvalidIdentityToken(_SenderError):
    """The SAML response or web identity token could not be validated."""

    code = "InvalidIdentityToken"


class IdpRejectedClaim(_SenderError):
    """The identity provider said the authentication failed."""

    code = "IDPRejectedClaim"
    status = 403


class ExpiredTokenException(_SenderError):
    """The SAML assertion or web identity token has expired."""

    code = "ExpiredTokenException"


class IdpCommunicationError(_SenderError):
    """The identity provider could not be reached (discovery, keys)."""

    code = "IDPCommunicationError"


# -- entities -----------------------------------------------------------------------------------


class NoSuchEntity(_SenderError):
    code = "NoSuchEntity"
    status = 404


class EntityAlreadyExists(_SenderError):
    code = "EntityAlreadyExists"
    status = 409


class LimitExceeded(_SenderError):
    code = "LimitExceeded"
    status = 409


class DeleteConflict(_SenderError):
    code = "DeleteConflict"
    status = 409


class InvalidAuthenticationCode(_SenderError):
    """An MFA device's codes were not valid (EnableMFADevice, ResyncMFADevice)."""

    code = "InvalidAuthenticationCode"
    status = 403


class ReportNotPresent(_SenderError):
    """GetCredentialReport before any report was generated."""

    code = "ReportNotPresent"
    status = 410


class ReportExpired(_SenderError):
    """GetCredentialReport more than four hours after the report was generated."""

    code = "ReportExpired"
    status = 410


class ConcurrentModification(_SenderError):
    code = "ConcurrentModification"
    status = 409


class UnmodifiableEntity(_SenderError):
    """A role an AWS service keeps (IAM Identity Center's, under /aws-reserved/)."""

    code = "UnmodifiableEntity"
    status = 400


# -- the service itself -------------------------------------------------------------------------


class ServiceUnavailable(AwsError):
    code = "ServiceUnavailable"
    status = 503


class InternalFailure(AwsError):
    code = "InternalFailure"
    status = 500
