"""Amazon Resource Names: the forms the broker issues, and a parser for the ones it reads."""

from __future__ import annotations

from broker.frozen import frozen

PARTITION = "aws"


@frozen
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    def __str__(self) -> str:
        return (f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:"
                f"{self.resource}")


def parse(text: str) -> Arn | None:
    """The parts of an ARN, or None if the text is not one."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1] or not parts[2] or not parts[5]:
        return None
    return Arn(parts[1], parts[2], parts[3], parts[4], parts[5])


def root(account: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:root"


def user(account: str, path: str, name: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:user{path}{name}"


def mfa(account: str, path: str, name: str) -> str:
    """A virtual MFA device's ARN, its serial number."""
    return f"arn:{PARTITION}:iam::{account}:mfa{path}{name}"


def group(account: str, path: str, name: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:group{path}{name}"


def policy(account: str, path: str, name: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:policy{path}{name}"


def role(account: str, path: str, name: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:role{path}{name}"


def saml_provider(account: str, name: str) -> str:
    return f"arn:{PARTITION}:iam::{account}:saml-provider/{name}"


def oidc_provider(account: str, identifier: str) -> str:
    """``identifier``: the provider's URL without its scheme (HOST[:PORT][/PATH])."""
    return f"arn:{PARTITION}:iam::{account}:oidc-provider/{identifier}"


def federated_user(account: str, name: str) -> str:
    return f"arn:{PARTITION}:sts::{account}:federated-user/{name}"


def assumed_role(account: str, role_name: str, session_name: str) -> str:
    return f"arn:{PARTITION}:sts::{account}:assumed-role/{role_name}/{session_name}"
