"""What AWS does with an OpenID Connect ID token: AssumeRoleWithWebIdentity.

``WebIdentityFederation.verify`` finds the provider by the token's ``iss`` among the OIDC
providers of the role's account (exactly, as AWS does), gets the provider's keys (idp/jwks.py:
its static JWKS, the cache, or the issuer), checks the signature and the claims (idp/oidc.py).
``assume`` evaluates the role's trust policy for the provider (``Principal: {"Federated":
provider ARN}``) with AWS's web-identity keys and issues the role session.

Keys, from "Available keys for AWS OIDC federation" in the IAM User Guide, with PROVIDER the
provider's URL without ``https://``: ``PROVIDER:aud`` (the client id: ``azp`` when the token has
one, else its audience), ``PROVIDER:oaud`` (the token's audiences, when ``azp`` is present),
``PROVIDER:azp``, ``PROVIDER:sub`` and ``PROVIDER:amr``; for Google, whose provider is
``accounts.google.com``, these are ``accounts.google.com:aud`` and so on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import regex

from broker.aws import arn
from broker.aws.errors import (
    AccessDenied,
    AwsError,
    ExpiredTokenException,
    IdpCommunicationError,
    InvalidIdentityToken,
    ValidationError,
)
from broker.clock import Clock
from broker.frozen import frozen
from broker.iam.entities import OidcProvider, Role
from broker.iam.oidc_providers import OidcProviders
from broker.iam.permissions import Permissions
from broker.idp import oidc
from broker.idp.jwks import Issuer, KeySource, KeysUnavailable, url_problem
from broker.idp.oidc import Claims, Refusal, TokenRefused
from broker.organizations.guard import Governed, OrgGuard
from broker.sts import federated
from broker.sts.service import IssuedCredentials, StsService

ACTION = "sts:AssumeRoleWithWebIdentity"
NOT_AUTHORIZED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
COULD_NOT_RETRIEVE = ("Couldn't retrieve verification key from your identity provider, please "
                      "reference AssumeRoleWithWebIdentity documentation for requirements")
UNREACHABLE = ("The identity provider that was asked to verify the incoming identity token could "
               "not be reached. Try again later.")
TAGS_CLAIM = "https://aws.amazon.com/tags"
SOURCE_IDENTITY_CLAIM = "https://aws.amazon.com/source_identity"
DEFAULT_DURATION = 3600
MAX_ISSUER = 255  # CreateOpenIDConnectProvider's Url limit: no provider has a longer one
_NAME = re.compile(r"[a-zA-Z_0-9+=,.@-]{2,64}")
_TAG_KEY = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}")
_TAG_VALUE = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}")


@frozen
class VerifiedToken:
    provider: OidcProvider
    claims: Claims


def refusal(exc: TokenRefused) -> AwsError:
    if exc.refusal is Refusal.EXPIRED:
        return ExpiredTokenException(exc.message)
    return InvalidIdentityToken(exc.message)


def session_tags(claims: Claims) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The ``https://aws.amazon.com/tags`` claim: its principal_tags (one value each) as session
    tags, and its transitive_tag_keys."""
    raw = claims.values.get(TAGS_CLAIM)
    if raw is None:
        return (), ()
    invalid = InvalidIdentityToken(
        f"The {TAGS_CLAIM} claim must be an object with principal_tags (each key holding a "
        "list of one value) and, optionally, transitive_tag_keys (a list of keys).")
    if not isinstance(raw, dict) or not set(raw) <= {"principal_tags", "transitive_tag_keys"}:
        raise invalid
    principal = raw.get("principal_tags", {})
    transitive = raw.get("transitive_tag_keys", [])
    if not isinstance(principal, dict) or not isinstance(transitive, list):
        raise invalid
    tags: list[tuple[str, str]] = []
    for key, values in principal.items():
        if (not _TAG_KEY.fullmatch(key) or not isinstance(values, list) or len(values) != 1
                or not isinstance(values[0], str) or not _TAG_VALUE.fullmatch(values[0])):
            raise InvalidIdentityToken(f"The session tag {key!r} in the token is not valid: one "
                                       "value of at most 256 characters, a key of 1 to 128.")
        tags.append((key, values[0]))
    if len(tags) > 50:
        raise InvalidIdentityToken("The token carries more than 50 session tags.")
    keys = {k.lower() for k, _ in tags}
    for key in transitive:
        if not isinstance(key, str) or key.lower() not in keys:
            raise InvalidIdentityToken(
                f"The transitive tag key {key} must be one of the session tags passed.")
    return tuple(tags), tuple(transitive)


def source_identity(claims: Claims) -> str | None:
    value = claims.values.get(SOURCE_IDENTITY_CLAIM)
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value.startswith("aws:"):
        raise InvalidIdentityToken(
            'Source Identity must match [a-zA-Z_0-9+=,.@-]{2,64} and not begin with "aws:"')
    return value


def trust_context(verified: VerifiedToken) -> dict[str, str | list[str]]:
    """The ``PROVIDER:*`` condition keys of this token."""
    claims, prefix = verified.claims, verified.provider.identifier
    context: dict[str, str | list[str]] = {
        f"{prefix}:aud": claims.audience,
        f"{prefix}:sub": claims.subject,
    }
    if claims.azp is not None:
        context[f"{prefix}:azp"] = claims.azp
        context[f"{prefix}:oaud"] = list(claims.audiences)
    if claims.amr:
        context[f"{prefix}:amr"] = list(claims.amr)
    return context


class WebIdentityFederation:
    def __init__(self, providers: OidcProviders, permissions: Permissions, sts: StsService,
                 keys: KeySource, clock: Clock, *, skew_seconds: int) -> None:
        self._providers = providers
        # The organizations' answers (RCPs over the role's account); set by the runtime.
        self.organizations: OrgGuard | None = None
        self._permissions = permissions
        self._sts = sts
        self.keys = keys
        self._clock = clock
        self._skew = skew_seconds

    async def provider(self, account: str, issuer: str) -> OidcProvider | None:
        """The provider of ``account`` whose URL is ``issuer``; None for an issuer that cannot
        be a provider's URL (not looked up at all) or that no provider has."""
        if len(issuer) > MAX_ISSUER or url_problem(issuer, allow_http_loopback=True):
            return None
        return await self._permissions.cached(
            ("oidc-provider", account, issuer),
            lambda: self._providers.find_by_issuer(account, issuer), untrusted=True)

    async def verify(self, token: str, role_arn: str) -> VerifiedToken:
        """The token's provider and claims, verified; InvalidIdentityToken,
        ExpiredTokenException or IDPCommunicationError otherwise."""
        try:
            jws = oidc.parse(token)
            issuer = oidc.unverified_issuer(jws)
        except TokenRefused as exc:
            raise refusal(exc) from None
        parsed = arn.parse(role_arn)
        provider = None if parsed is None else await self.provider(parsed.account, issuer)
        if provider is None:
            raise InvalidIdentityToken(
                f"No OpenIDConnect provider found in your account for {issuer}")
        kid = jws.header.get("kid")
        try:
            keys = await self.keys.keys(
                Issuer(provider.url, provider.thumbprints, provider.static_jwks),
                kid=kid if isinstance(kid, str) else None, kid_given="kid" in jws.header)
        except KeysUnavailable as exc:
            if exc.unreachable:
                raise IdpCommunicationError(UNREACHABLE) from None
            raise InvalidIdentityToken(COULD_NOT_RETRIEVE) from None
        try:
            oidc.verify_signature(jws, keys)
            claims = oidc.check_claims(jws, issuer=provider.url, client_ids=provider.client_ids,
                                       now=self._clock.now(), skew_seconds=self._skew)
        except TokenRefused as exc:
            raise refusal(exc) from None
        return VerifiedToken(provider, claims)

    async def role(self, role_arn: str) -> Role:
        role = await self._sts.role(role_arn)
        if role is None:
            raise AccessDenied(NOT_AUTHORIZED)
        return role

    async def _organization(self, role: Role) -> Governed | None:
        """The role's account's place in an organization (its RCPs), if it has one."""
        return None if self.organizations is None else \
            await self.organizations.of(role.account_id)

    async def assume(self, verified: VerifiedToken, role: Role, session_name: str, *,
                     duration: int | None = None, policy: str | None = None,
                     policy_arns: Sequence[str] = (),
                     extra_context: Mapping[str, str] | None = None,
                     minimum_token_size: int = 0) -> IssuedCredentials:
        tags, transitive = session_tags(verified.claims)
        identity = source_identity(verified.claims)
        self._authorize(verified, role, session_name, tags, transitive, identity,
                        extra_context or {}, await self._organization(role))
        if duration is not None and duration > role.max_session:
            raise ValidationError("The requested DurationSeconds exceeds the MaxSessionDuration "
                                  "set for this role.")
        seconds = duration or min(DEFAULT_DURATION, role.max_session)
        return await self._sts.federated_role_session(
            role, session_name, seconds, tags=tags, transitive_keys=transitive,
            source_identity=identity, policy=policy, policy_arns=policy_arns,
            minimum_token_size=minimum_token_size)

    def _authorize(self, verified: VerifiedToken, role: Role, session_name: str,
                   tags: Sequence[tuple[str, str]], transitive: Sequence[str],
                   identity: str | None, extra: Mapping[str, str],
                   organization: Governed | None) -> None:
        provider = verified.provider
        federated.authorize(
            self._permissions, role, provider_arn=provider.arn,
            provider_account=provider.account_id, principal_type="WebIdentityUser",
            action=ACTION, refusal=NOT_AUTHORIZED, now=self._clock.now(),
            keys={"sts:RoleSessionName": session_name, **extra, **trust_context(verified)},
            tags=tags, transitive=transitive, identity=identity,
            organization=organization)
