"""A broker with a SAML provider and roles that trust it, as the SAML tests use it.

``SamlWorld.make(broker)`` registers the test suite's identity provider (tests/saml_idp.py)
with CreateSAMLProvider and creates roles trusting it, all through boto3. ``response()`` is an
honest response for this broker (its ACS URL, its audience, the roles asked for), to which a
test applies exactly one change to build an attack; ``assume()`` sends it to
AssumeRoleWithSAML with boto3, unsigned, as the AWS SDKs do.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.config
import botocore.exceptions
import pytest

from tests.helpers import Broker
from tests.saml_idp import TestIdp, encode


def trust_policy(provider_arn: str, acs_url: str, **condition: Any) -> str:
    statement: dict[str, Any] = {
        "Effect": "Allow", "Principal": {"Federated": provider_arn},
        "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {"SAML:aud": acs_url, **condition}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def session_arn(role_arn: str, session_name: str) -> str:
    """The ARN of the role session AssumeRoleWithSAML issues for ``role_arn``."""
    assumed = role_arn.replace(":iam::", ":sts::", 1).replace(":role/", ":assumed-role/", 1)
    return f"{assumed}/{session_name}"


def issued_sessions(broker: Broker) -> list[str]:
    """Every role session the broker has issued by AssumeRoleWithSAML, from its audit log."""
    lines = Path(broker.settings.audit.path).read_text().splitlines()
    return [doc["responseElements"]["assumedRoleUser"]["arn"] for doc in map(json.loads, lines)
            if doc["eventName"] == "AssumeRoleWithSAML" and "errorCode" not in doc]


@dataclass
class SamlWorld:
    broker: Broker
    idp: TestIdp
    provider_arn: str
    role_arn: str
    account_id: str
    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, broker: Broker, *, idp: TestIdp | None = None, name: str | None = None,
             roles: tuple[str, ...] = ("engineers",)) -> SamlWorld:
        idp = idp or TestIdp(f"https://idp-{uuid.uuid4().hex[:6]}.example.test/metadata")
        iam = broker.client("iam")
        name = name or f"corp-{uuid.uuid4().hex[:6]}"
        provider_arn = iam.create_saml_provider(
            Name=name, SAMLMetadataDocument=idp.metadata())["SAMLProviderArn"]
        made = {}
        for role in roles:
            role_name = f"{role}-{uuid.uuid4().hex[:6]}"
            made[role] = iam.create_role(
                RoleName=role_name, MaxSessionDuration=7200,
                AssumeRolePolicyDocument=trust_policy(provider_arn, broker.settings.acs_url),
            )["Role"]["Arn"]
        return cls(broker, idp, provider_arn, made[roles[0]], broker.account_id, made)

    @property
    def acs_url(self) -> str:
        return self.broker.settings.acs_url

    @property
    def audience(self) -> str:
        return self.broker.settings.sp_entity_id

    def response(self, **changes: Any) -> bytes:
        """An honest signed response offering every role of this world, with ``changes``."""
        values: dict[str, Any] = {
            "acs_url": self.acs_url, "audience": self.audience,
            "roles": [(arn, self.provider_arn) for arn in self.roles.values()],
        }
        values.update(changes)
        return self.idp.response(**values)

    def sts(self) -> Any:
        return self.broker.client("sts", validate=False)

    def assume(self, xml: bytes | str, *, role_arn: str | None = None,
               provider_arn: str | None = None, **params: Any) -> dict[str, Any]:
        assertion = xml if isinstance(xml, str) else encode(xml)
        result: dict[str, Any] = self.sts().assume_role_with_saml(
            RoleArn=role_arn or self.role_arn, PrincipalArn=provider_arn or self.provider_arn,
            SAMLAssertion=assertion, **params)
        return result

    def refused(self, xml: bytes | str, **params: Any) -> tuple[str, str, int]:
        """AssumeRoleWithSAML's refusal: (code, message, HTTP status)."""
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            self.assume(xml, **params)
        r = exc.value.response
        return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


NO_RETRIES = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"})
