"""The errors of AWS Organizations, as botocore's model names them.

Each is an ``OrgError`` with the model's code; three carry a ``Reason`` member beside the
message (InvalidInputException, ConstraintViolationException,
HandshakeConstraintViolationException), whose values are the model's enums.
tests/integration/test_organizations_errors.py checks that every code an action answers with is
one the model lists for that action.
"""

from __future__ import annotations

from broker.aws import shapes
from broker.aws.jsonproto import ServiceError


class OrgError(ServiceError):
    """An error of the Organizations model."""


def invalid_input(message: str, reason: str) -> OrgError:
    return OrgError("InvalidInputException", message, reason)


def constraint(message: str, reason: str) -> OrgError:
    return OrgError("ConstraintViolationException", message, reason)


def from_faults(faults: shapes.ShapeFaults) -> OrgError:
    """The model's constraints, broken: InvalidInputException with the first fault's reason."""
    return invalid_input(faults.message(), faults.faults[0].reason)


NOT_IN_USE = ("AWSOrganizationsNotInUseException",
              "Your account is not a member of an organization.")
ONLY_MANAGEMENT = ("AccessDeniedException",
                   "You don't have permissions to access this resource. Only the management "
                   "account of the organization can make this request.")


def not_in_use() -> OrgError:
    return OrgError(*NOT_IN_USE)


def only_management() -> OrgError:
    return OrgError(*ONLY_MANAGEMENT)


def account_not_found(account: str) -> OrgError:
    return OrgError("AccountNotFoundException",
                    f"You specified an account that doesn't exist: {account}.")


def parent_not_found(code: str = "ParentNotFoundException") -> OrgError:
    return OrgError(code, "You specified a parent that doesn't exist.")


def ou_not_found() -> OrgError:
    return OrgError("OrganizationalUnitNotFoundException",
                    "You specified an organizational unit that doesn't exist.")


def root_not_found() -> OrgError:
    return OrgError("RootNotFoundException", "You specified a root that doesn't exist.")


def policy_not_found() -> OrgError:
    return OrgError("PolicyNotFoundException", "We can't find a policy with the PolicyId "
                    "that you specified.")


def target_not_found() -> OrgError:
    return OrgError("TargetNotFoundException",
                    "We can't find a root, OU, account, or policy with the TargetId that you "
                    "specified.")


def child_not_found() -> OrgError:
    return OrgError("ChildNotFoundException",
                    "We can't find an organizational unit (OU) or AWS account with the ChildId "
                    "that you specified.")


def handshake_not_found() -> OrgError:
    return OrgError("HandshakeNotFoundException",
                    "We can't find a handshake with the HandshakeId that you specified.")
