"""A broker with an OIDC provider and a role that trusts it, as the web identity tests use it.

``OidcWorld.make(broker, issuer)`` registers the test suite's issuer (tests/oidc_issuer.py: HTTPS
with a self-signed certificate, trusted by its thumbprint) with CreateOpenIDConnectProvider and
creates a role trusting it for the client id ``client-1``, all through boto3. ``token()`` is an
honest token for it, to which a test applies exactly one change to build an attack;
``assume()`` sends it to AssumeRoleWithWebIdentity with boto3, unsigned, as the SDKs do.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import pytest

from tests.helpers import Broker
from tests.oidc_issuer import TestIssuer

CLIENT_ID = "client-1"

# Settings for brokers that talk to the test issuer: keys may be kept for as little as the
# issuer's Cache-Control says, and fetched again for an unknown kid after a second.
FAST_KEYS = {"BROKER_OIDC_KEY_CACHE_MIN_SECONDS": "0",
             "BROKER_OIDC_REFETCH_INTERVAL_SECONDS": "1",
             "BROKER_OIDC_TIMEOUT_SECONDS": "2"}


def identifier(url: str) -> str:
    return url.split("://", 1)[1]


def trust_policy(provider_arn: str, url: str, *, client_id: str = CLIENT_ID,
                 **condition: Any) -> str:
    statement: dict[str, Any] = {
        "Effect": "Allow", "Principal": {"Federated": provider_arn},
        "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {f"{identifier(url)}:aud": client_id, **condition}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@dataclass
class OidcWorld:
    broker: Broker
    issuer: TestIssuer
    provider_arn: str
    role_arn: str

    @classmethod
    def make(cls, broker: Broker, issuer: TestIssuer, *, thumbprints: list[str] | None = None,
             client_ids: tuple[str, ...] = (CLIENT_ID,), **condition: Any) -> OidcWorld:
        iam = broker.client("iam")
        provider_arn = iam.create_open_id_connect_provider(
            Url=issuer.url, ClientIDList=list(client_ids),
            ThumbprintList=[issuer.thumbprint] if thumbprints is None else thumbprints,
        )["OpenIDConnectProviderArn"]
        role_arn = iam.create_role(
            RoleName=f"ci-{uuid.uuid4().hex[:8]}", MaxSessionDuration=7200,
            AssumeRolePolicyDocument=trust_policy(provider_arn, issuer.url, **condition),
        )["Role"]["Arn"]
        return cls(broker, issuer, provider_arn, role_arn)

    def token(self, **claims: Any) -> str:
        return self.issuer.token(**claims)

    def sts(self) -> Any:
        return self.broker.client("sts", validate=False)

    def assume(self, token: str, *, role_arn: str | None = None, session_name: str = "ci-run",
               **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.sts().assume_role_with_web_identity(
            RoleArn=role_arn or self.role_arn, RoleSessionName=session_name,
            WebIdentityToken=token, **params)
        return result

    def refused(self, token: str, **params: Any) -> tuple[str, str, int]:
        """AssumeRoleWithWebIdentity's refusal: (code, message, HTTP status)."""
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            self.assume(token, **params)
        r = exc.value.response
        return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]
