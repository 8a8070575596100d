"""What AWS does with a verified SAML assertion: the role it offers, the session it makes.

``SamlFederation`` is the use case both AssumeRoleWithSAML (sts/api.py) and the browser
sign-in endpoint (signin/saml.py) run:

1. ``verify``: the provider named by its ARN (IAM's SAML provider: the identity provider's
   entity id and signing certificates), the response checked by ``idp.saml.validate`` against
   it and against this broker as service provider;
2. ``consume``: the assertion's ID recorded in the ephemeral store until the assertion expires
   (plus the clock skew) — a second use, by any broker process, is refused;
3. ``assume``: the role pair checked against the assertion's Role attribute, the role's trust
   policy evaluated for the provider (``Principal: {"Federated": provider ARN}``) with the
   ``saml:*`` condition keys, and the role session issued.

The attribute names, session-name rules, NameQualifier and condition keys are AWS's, from
"Configuring SAML assertions for the authentication response" and "Available keys for
SAML-based AWS STS federation" in the IAM User Guide.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import regex

from broker.aws import arn
from broker.aws.errors import (
    AccessDenied,
    AwsError,
    ExpiredTokenException,
    IdpRejectedClaim,
    InvalidIdentityToken,
    ValidationError,
)
from broker.clock import Clock
from broker.frozen import frozen
from broker.iam.entities import Role, SamlProvider
from broker.iam.permissions import Permissions
from broker.iam.saml_providers import SamlProviders, signing_keys
from broker.idp import saml
from broker.idp.saml import IdentityProvider, Refusal, SamlRefused, ServiceProvider
from broker.idp.sp import SpCredentials
from broker.organizations.guard import Governed, OrgGuard
from broker.store.base import EphemeralStore, Spent
from broker.sts import federated
from broker.sts.service import IssuedCredentials, StsService

T = TypeVar("T")

ATTRIBUTES = "https://aws.amazon.com/SAML/Attributes/"
ROLE = ATTRIBUTES + "Role"
ROLE_SESSION_NAME = ATTRIBUTES + "RoleSessionName"
SESSION_DURATION = ATTRIBUTES + "SessionDuration"
SOURCE_IDENTITY = ATTRIBUTES + "SourceIdentity"
PRINCIPAL_TAG = ATTRIBUTES + "PrincipalTag:"
TRANSITIVE_TAG_KEYS = ATTRIBUTES + "TransitiveTagKeys"

ACTION = "sts:AssumeRoleWithSAML"
# An assertion issued before the broker's store of used assertions lost its data (a Redis
# restarted empty): whether it was used cannot be told, so it is refused as spent.
UNKNOWN_USE = ("The SAML assertion was issued before the broker lost its record of used "
               "assertions: get a new assertion from the identity provider and try again.")
NOT_AUTHORIZED = "Not authorized to perform sts:AssumeRoleWithSAML"
IDENTITY_CENTER_PATH = "/aws-reserved/sso.amazonaws.com/"
_NAME = re.compile(r"[a-zA-Z_0-9+=,.@-]{2,64}")
_TAG_KEY = regex.compile(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}")
DEFAULT_DURATION = 3600

# The attributes AWS turns into trust-policy keys, by attribute name (their OIDs), with
# whether the key is multivalued.
_EDU = "urn:oid:1.3.6.1.4.1.5923.1.1.1."
_ORG = "urn:oid:1.3.6.1.4.1.5923.1.2.1."
ATTRIBUTE_KEYS: dict[str, tuple[str, bool]] = {
    f"{_EDU}1": ("saml:edupersonaffiliation", True),
    f"{_EDU}2": ("saml:edupersonnickname", True),
    f"{_EDU}3": ("saml:edupersonorgdn", False),
    f"{_EDU}4": ("saml:edupersonorgunitdn", True),
    f"{_EDU}5": ("saml:edupersonprimaryaffiliation", False),
    f"{_EDU}6": ("saml:edupersonprincipalname", False),
    f"{_EDU}7": ("saml:edupersonentitlement", True),
    f"{_EDU}8": ("saml:edupersonprimaryorgunitdn", False),
    f"{_EDU}9": ("saml:edupersonscopedaffiliation", True),
    f"{_EDU}10": ("saml:edupersontargetedid", True),
    f"{_EDU}11": ("saml:edupersonassurance", True),
    f"{_ORG}2": ("saml:eduorghomepageuri", True),
    f"{_ORG}3": ("saml:eduorgidentityauthnpolicyuri", True),
    f"{_ORG}4": ("saml:eduorglegalname", True),
    f"{_ORG}5": ("saml:eduorgsuperioruri", True),
    f"{_ORG}6": ("saml:eduorgwhitepagesuri", True),
    "urn:oid:2.5.4.3": ("saml:cn", True),
    "urn:oid:2.5.4.42": ("saml:givenName", False),
    "urn:oid:2.5.4.4": ("saml:surname", False),
    "urn:oid:0.9.2342.19200300.100.1.3": ("saml:mail", False),
    "urn:oid:0.9.2342.19200300.100.1.1": ("saml:uid", False),
    "urn:oid:2.16.840.1.113730.3.1.241": ("saml:name", False),
    "urn:oid:2.16.840.1.113719.1.1.4.1.25": ("saml:organizationStatus", False),
    "urn:oid:1.2.840.113556.1.4.98": ("saml:primaryGroupSID", False),
    "urn:oid:2.5.4.45": ("saml:x500UniqueIdentifier", True),
}
_FORMATS = {
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent": "persistent",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:transient": "transient",
}


@frozen
class RolePair:
    role_arn: str
    provider_arn: str

    @property
    def account_id(self) -> str:
        parsed = arn.parse(self.role_arn)
        return parsed.account if parsed else ""


@frozen
class Verified:
    provider: SamlProvider
    assertion: saml.VerifiedAssertion

    @functools.cached_property
    def roles(self) -> tuple[RolePair, ...]:
        """The pairs the assertion offers for this provider."""
        return tuple(p for p in role_pairs(self.assertion)
                     if p.provider_arn == self.provider.arn)


def role_pairs(assertion: saml.VerifiedAssertion) -> tuple[RolePair, ...]:
    """The Role attribute's ``role ARN,provider ARN`` values (either order), in order."""
    return pairs_of(assertion.values(ROLE))


def pairs_of(values: Iterable[str]) -> tuple[RolePair, ...]:
    """The valid, distinct (role, provider) pairs of Role attribute values."""
    pairs: dict[RolePair, None] = {}  # distinct, in order: a list's ``in`` made this quadratic
    for value in values:
        parts = value.split(",")
        if len(parts) != 2:
            continue
        first, second = parts[0].strip(), parts[1].strip()
        # No text is both a role ARN and a provider ARN: the order is found by the first.
        if _ROLE_ARN.fullmatch(first):
            if not _PROVIDER_ARN.fullmatch(second):
                continue
            pair = RolePair(first, second)
        elif _PROVIDER_ARN.fullmatch(first) and _ROLE_ARN.fullmatch(second):
            pair = RolePair(second, first)
        else:
            continue
        pairs.setdefault(pair, None)
    return tuple(pairs)


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/.+")
_PROVIDER_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:saml-provider/.+")


def session_name(assertion: saml.VerifiedAssertion) -> str:
    values = assertion.values(ROLE_SESSION_NAME)
    if not values:
        raise InvalidIdentityToken("RoleSessionName is required in AuthnResponse")
    if len(values) != 1 or not _NAME.fullmatch(values[0]):
        raise InvalidIdentityToken(
            "RoleSessionName in AuthnResponse must match [a-zA-Z_0-9+=,.@-]{2,64}")
    return values[0]


def source_identity(assertion: saml.VerifiedAssertion) -> str | None:
    values = assertion.values(SOURCE_IDENTITY)
    if not values:
        return None
    if len(values) != 1 or not _NAME.fullmatch(values[0]) or values[0].startswith("aws:"):
        raise InvalidIdentityToken(
            'Source Identity must match [a-zA-Z_0-9+=,.@-]{2,64} and not begin with "aws:"')
    return values[0]


def session_duration(assertion: saml.VerifiedAssertion) -> int | None:
    values = assertion.values(SESSION_DURATION)
    if not values:
        return None
    if len(values) != 1 or not values[0].isdigit() or not 900 <= int(values[0]) <= 43200:
        raise InvalidIdentityToken(
            "SessionDuration in AuthnResponse must be a number of seconds from 900 to 43200")
    return int(values[0])


def session_tags(assertion: saml.VerifiedAssertion
                 ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """PrincipalTag:KEY attributes as session tags (one value each), and TransitiveTagKeys."""
    tags: list[tuple[str, str]] = []
    for name, values in assertion.attributes:
        if not name.startswith(PRINCIPAL_TAG):
            continue
        key = name[len(PRINCIPAL_TAG):]
        if not _TAG_KEY.fullmatch(key) or len(values) != 1 or len(values[0]) > 256:
            raise InvalidIdentityToken(f"The session tag {key!r} in AuthnResponse is not valid: "
                                       "one value of at most 256 characters, a key of 1 to 128.")
        tags.append((key, values[0]))
    if len(tags) > 50:
        raise InvalidIdentityToken("AuthnResponse carries more than 50 session tags.")
    keys = {k.lower() for k, _ in tags}
    transitive = assertion.values(TRANSITIVE_TAG_KEYS)
    for key in transitive:
        if key.lower() not in keys:
            raise InvalidIdentityToken(
                f"The transitive tag key {key} must be one of the session tags passed.")
    return tuple(tags), tuple(transitive)


@functools.lru_cache(maxsize=1024)  # one per provider, asked twice for every assertion
def name_qualifier(issuer: str, account_id: str, provider_name: str) -> str:
    """AWS's NameQualifier: BASE64(SHA1(issuer + account id + "/" + provider name))."""
    digest = hashlib.sha1(f"{issuer}{account_id}/{provider_name}".encode(),
                          usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def subject_type(fmt: str | None) -> str:
    if fmt is None:
        return "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    return _FORMATS.get(fmt, fmt)


def trust_context(verified: Verified) -> dict[str, str | list[str]]:
    """The ``saml:*`` condition keys of this assertion."""
    a, provider = verified.assertion, verified.provider
    context: dict[str, str | list[str]] = {
        "saml:aud": a.recipient,
        "saml:iss": a.issuer,
        "saml:sub": a.subject,
        "saml:sub_type": subject_type(a.subject_format),
        "saml:namequalifier": name_qualifier(a.issuer, provider.account_id, provider.name),
        "saml:doc": f"{provider.account_id}/{provider.name}",
    }
    for name, values in a.attributes:
        known = ATTRIBUTE_KEYS.get(name)
        if known is None or not values:
            continue
        key, multi = known
        context[key] = list(values) if multi else values[0]
    return context


class SamlFederation:
    def __init__(self, providers: SamlProviders, permissions: Permissions, sts: StsService,
                 ephemeral: EphemeralStore, sp: ServiceProvider, credentials: SpCredentials,
                 clock: Clock) -> None:
        self._providers = providers
        # The organizations' answers (RCPs over the role's account); set by the runtime.
        self.organizations: OrgGuard | None = None
        self._permissions = permissions
        self._sts = sts
        self._ephemeral = ephemeral
        self.sp = sp
        self._credentials = credentials
        self._clock = clock
        self._loaded: dict[tuple[object, ...], IdentityProvider] = {}
        # The provider record asked for last, with its keys: IAM's cache hands out the same
        # record object until it reads the store again.
        self._last: tuple[SamlProvider, IdentityProvider] | None = None

    async def cached(self, key: tuple[str, ...],
                     build: Callable[[], Awaitable[T]]) -> T:
        """An IAM answer about an identity provider named by an unverified request, kept as
        long as the others but apart from them (``Permissions.cached(untrusted=True)``)."""
        return await self._permissions.cached(key, build, untrusted=True)

    async def provider(self, provider_arn: str) -> SamlProvider | None:
        return await self._permissions.cached(("saml-provider", provider_arn),
                                              lambda: self._providers.find(provider_arn),
                                              untrusted=True)

    def _identity_provider(self, provider: SamlProvider) -> IdentityProvider:
        """The provider's keys, loaded once per version of the provider (certificates and
        private keys parse and unseal slowly; the provider record is itself re-read from the
        store as often as IAM's other answers)."""
        last = self._last
        if last is not None and last[0] is provider:
            return last[1]
        version = (provider.arn, provider.uuid, provider.signing_certificates,
                   tuple(k.key_id for k in provider.private_keys),
                   provider.assertion_encryption_mode, provider.entity_id)
        found = self._loaded.get(version)
        if found is None:
            if len(self._loaded) > 1024:
                self._loaded.clear()
            found = self._loaded[version] = self._load(provider)
        self._last = (provider, found)
        return found

    def _load(self, provider: SamlProvider) -> IdentityProvider:
        return IdentityProvider(
            entity_id=provider.entity_id,
            signing_keys=tuple(signing_keys(provider)),
            decryption_keys=(self._credentials.key,
                             *self._providers.decryption_keys(provider)),
            encryption_required=provider.assertion_encryption_mode == "Required",
        )

    async def verify(self, xml: bytes, provider_arn: str) -> Verified:
        provider = await self.provider(provider_arn)
        if provider is None:
            raise InvalidIdentityToken("Specified provider doesn't exist")
        try:
            assertion = saml.validate(xml, self._identity_provider(provider), self.sp,
                                      self._clock.now())
        except SamlRefused as exc:
            raise refusal(exc) from None
        return Verified(provider, assertion)

    async def consume(self, verified: Verified) -> None:
        """Record the assertion as used; refuse it if any process has used it before."""
        a = verified.assertion
        key = "saml-assertion:" + hashlib.sha256(
            f"{a.issuer}\0{a.assertion_id}".encode()).hexdigest()
        until = a.not_on_or_after + self.sp.clock_skew
        ttl = max(1.0, (until - self._clock.now()).total_seconds())
        spent = await self._ephemeral.spend(
            key, ttl, (a.issue_instant - self.sp.clock_skew).timestamp())
        if spent is Spent.BEFORE:
            raise InvalidIdentityToken("The SAML assertion has already been used.")
        if spent is Spent.UNKNOWN:
            raise ExpiredTokenException(UNKNOWN_USE)

    async def role(self, verified: Verified, pair: RolePair) -> Role:
        """The role of ``pair``, if the assertion offers it for its own provider and it
        exists in the provider's account."""
        if pair not in verified.roles or pair.account_id != verified.provider.account_id:
            raise AccessDenied(NOT_AUTHORIZED)
        role = await self._sts.role(pair.role_arn)
        if role is None or role.path.startswith(IDENTITY_CENTER_PATH):
            # IAM Identity Center's roles are its own: the broker's Identity Center issues
            # their sessions itself, and no assertion — whoever signed it — opens them here.
            raise AccessDenied(NOT_AUTHORIZED)
        return role

    async def _organization(self, role: Role) -> Governed | None:
        """The role's account's place in an organization (its RCPs), if it has one."""
        return None if self.organizations is None else \
            await self.organizations.of(role.account_id)

    async def assume(self, verified: Verified, role: Role, *, duration: int | None = None,
                     policy: str | None = None, policy_arns: Sequence[str] = (),
                     extra_context: Mapping[str, str] | None = None,
                     minimum_token_size: int = 0) -> IssuedCredentials:
        a = verified.assertion
        name = session_name(a)
        identity = source_identity(a)
        tags, transitive = session_tags(a)
        self._authorize(verified, role, tags, transitive, identity, extra_context or {},
                        await self._organization(role))
        if duration is not None and duration > role.max_session:
            raise ValidationError("The requested DurationSeconds exceeds the MaxSessionDuration "
                                  "set for this role.")
        seconds = duration or min(session_duration(a) or DEFAULT_DURATION, role.max_session)
        now = self._clock.now()
        if a.session_not_on_or_after is not None:
            left = int((a.session_not_on_or_after - now).total_seconds())
            if left <= 0:
                raise ExpiredTokenException("The session the identity provider granted "
                                            "(SessionNotOnOrAfter) has ended.")
            seconds = min(seconds, left)
        return await self._sts.federated_role_session(
            role, name, seconds, tags=tags, transitive_keys=transitive,
            source_identity=identity, policy=policy, policy_arns=policy_arns,
            minimum_token_size=minimum_token_size)

    def _authorize(self, verified: Verified, role: Role, tags: Sequence[tuple[str, str]],
                   transitive: Sequence[str], identity: str | None,
                   extra: Mapping[str, str], organization: Governed | None) -> None:
        provider = verified.provider
        federated.authorize(
            self._permissions, role, provider_arn=provider.arn,
            provider_account=provider.account_id, principal_type="SAMLUser", action=ACTION,
            refusal=NOT_AUTHORIZED, now=self._clock.now(),
            keys={**extra, **trust_context(verified)}, tags=tags, transitive=transitive,
            identity=identity,
            organization=organization)


def decode(encoded: str) -> bytes:
    """The XML of a base64 SAML response, or InvalidIdentityToken."""
    try:
        return saml.decode(encoded)
    except SamlRefused as exc:
        raise refusal(exc) from None


def refusal(exc: SamlRefused) -> AwsError:
    if exc.refusal is Refusal.EXPIRED:
        return ExpiredTokenException(exc.message)
    if exc.refusal is Refusal.REJECTED:
        return IdpRejectedClaim(exc.message)
    return InvalidIdentityToken(exc.message)
