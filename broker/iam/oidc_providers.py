"""OpenID Connect providers: the issuers whose ID tokens AssumeRoleWithWebIdentity exchanges for
a role's session.

A provider is its issuer URL (exactly the ``iss`` of its tokens), the client ids its tokens may
be issued to, the SHA-1 thumbprints of TLS certificates the broker trusts for it when no
system CA vouches for the issuer, its tags, and optionally a static JWKS — the broker's own
addition, for issuers it must never call.

The IAM actions (iam/api/providers.py) call ``create``, ``get``, ``listing``, ``delete``,
``add_client_id``, ``remove_client_id``, ``set_thumbprints``, ``set_jwks`` and ``retag``; STS
calls ``find_by_issuer``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from broker import jsontext
from broker.aws import arn as arns
from broker.aws.errors import (
    AwsError,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound, QuotaExceeded
from broker.iam.entities import OIDC_PROVIDER, OidcProvider, Tag, oidc_identifier
from broker.iam.policies import merge_tags
from broker.iam.records import Entities, check_tags
from broker.iam.saml_providers import new_id
from broker.idp.jwks import url_problem
from broker.idp.oidc import load_jwks
from broker.store.base import Record

MAX_PROVIDERS = 100
MAX_CLIENT_IDS = 100
MAX_THUMBPRINTS = 5
MAX_JWKS_CHARACTERS = 100_000
_THUMBPRINT = re.compile(r"[0-9a-fA-F]{40}")


def missing_provider(provider_arn: str) -> AwsError:
    return NoSuchEntity(f"OpenIDConnect Provider not found for arn {provider_arn}")


def identifier_of(account: str, provider_arn: str) -> str | None:
    """HOST[:PORT][/PATH] of an OIDC provider ARN of this account, or None."""
    parsed = arns.parse(provider_arn)
    if (parsed is None or parsed.partition != arns.PARTITION or parsed.service != "iam"
            or parsed.region or parsed.account != account):
        return None
    kind, _, identifier = parsed.resource.partition("/")
    if kind != "oidc-provider" or not identifier:
        return None
    return identifier


def check_url(url: str, *, allow_http_loopback: bool) -> str:
    problem = url_problem(url, allow_http_loopback=allow_http_loopback)
    if problem is not None:
        raise InvalidInput(f"Invalid URL: the provider URL {problem}.")
    return url


def check_thumbprints(thumbprints: Sequence[str]) -> tuple[str, ...]:
    if len(thumbprints) > MAX_THUMBPRINTS:
        # AWS's own answer (its message says "fewer than" and means "at most").
        raise InvalidInput(f"Thumbprint list must contain fewer than {MAX_THUMBPRINTS} "
                           "entries.")
    for thumbprint in thumbprints:
        if not _THUMBPRINT.fullmatch(thumbprint):
            raise InvalidInput(f"Thumbprint {thumbprint} is not a SHA-1 thumbprint "
                               "(40 hexadecimal characters).")
    return tuple(dict.fromkeys(t.lower() for t in thumbprints))


def check_client_ids(client_ids: Sequence[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(client_ids))
    if len(unique) > MAX_CLIENT_IDS:
        raise LimitExceeded(
            f"Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: {MAX_CLIENT_IDS}")
    return unique


def check_jwks(document: str) -> str:
    """A static JWKS with at least one usable signature key, as given; InvalidInput otherwise."""
    if len(document) > MAX_JWKS_CHARACTERS:
        raise InvalidInput(f"The JWKS is longer than {MAX_JWKS_CHARACTERS} characters.")
    try:
        keys = load_jwks(document)
    except ValueError as exc:
        raise InvalidInput(f"The JWKS is not usable: {exc}.") from None
    if not keys.keys:
        raise InvalidInput("The JWKS has no key that can verify signatures (RSA of 2048 to "
                           "8192 bits, EC P-256/P-384/P-521 or Ed25519; use \"sig\").")
    return json.dumps(jsontext.loads(document), separators=(",", ":"))


class OidcProviders:
    def __init__(self, entities: Entities, clock: Clock, *,
                 allow_http_loopback: bool = False) -> None:
        self._entities = entities
        self._clock = clock
        self.allow_http_loopback = allow_http_loopback

    # -- IAM ------------------------------------------------------------------------------------

    async def create(self, account: str, url: str, *, client_ids: Sequence[str] = (),
                     thumbprints: Sequence[str] = (), tags: tuple[Tag, ...] = (),
                     static_jwks: str | None = None) -> OidcProvider:
        check_tags(tags)
        check_url(url, allow_http_loopback=self.allow_http_loopback)
        provider = OidcProvider(
            account_id=account, url=url, uuid=new_id(), create_date=self._clock.now(),
            client_ids=check_client_ids(client_ids), thumbprints=check_thumbprints(thumbprints),
            tags=tags, static_jwks=None if static_jwks is None else check_jwks(static_jwks))
        try:
            await self._entities.store.create(provider.record(), max_siblings=MAX_PROVIDERS)
        except AlreadyExists:
            raise EntityAlreadyExists(f"Provider with url {url} already exists.") from None
        except QuotaExceeded:
            raise LimitExceeded(f"Cannot exceed quota for OpenIdConnectProvidersPerAccount: "
                                f"{MAX_PROVIDERS}") from None
        return provider

    async def get(self, account: str, provider_arn: str) -> OidcProvider:
        identifier = identifier_of(account, provider_arn)
        if identifier is None:
            raise missing_provider(provider_arn)
        provider = await self._entities.get(OidcProvider, OidcProvider.ref(account, identifier),
                                            lambda: missing_provider(provider_arn))
        if provider.arn != provider_arn:  # the same URL in another case is another provider
            raise missing_provider(provider_arn)
        return provider

    async def listing(self, account: str) -> list[OidcProvider]:
        return await self._entities.all(OidcProvider, OIDC_PROVIDER, account)

    async def delete(self, account: str, provider_arn: str) -> None:
        provider = await self.get(account, provider_arn)

        def same(record: Record) -> None:
            if record.lookup != provider.uuid:  # deleted and created again meanwhile
                raise missing_provider(provider_arn)

        try:
            await self._entities.store.delete(
                OidcProvider.ref(account, provider.identifier), check=same)
        except NotFound:
            raise missing_provider(provider_arn) from None

    async def add_client_id(self, account: str, provider_arn: str,
                            client_id: str) -> OidcProvider:
        """AddClientIDToOpenIDConnectProvider: idempotent, as on AWS."""
        return await self._change(account, provider_arn, lambda p: replace(
            p, client_ids=check_client_ids((*p.client_ids, client_id))))

    async def remove_client_id(self, account: str, provider_arn: str,
                               client_id: str) -> OidcProvider:
        """RemoveClientIDFromOpenIDConnectProvider: removing an absent id is not an error."""
        return await self._change(account, provider_arn, lambda p: replace(
            p, client_ids=tuple(c for c in p.client_ids if c != client_id)))

    async def set_thumbprints(self, account: str, provider_arn: str,
                              thumbprints: Sequence[str]) -> OidcProvider:
        checked = check_thumbprints(thumbprints)
        return await self._change(account, provider_arn,
                                  lambda p: replace(p, thumbprints=checked))

    async def set_jwks(self, account: str, provider_arn: str,
                       document: str | None) -> OidcProvider:
        """Give the provider a static JWKS (or, with None, go back to fetching its keys)."""
        checked = None if document is None else check_jwks(document)
        return await self._change(account, provider_arn,
                                  lambda p: replace(p, static_jwks=checked))

    async def replace(self, account: str, provider_arn: str,
                      wanted: OidcProvider) -> OidcProvider:
        """``broker apply``: the provider's URL (its scheme: http and https share one
        identifier), client ids, thumbprints, tags and static JWKS become ``wanted``'s (all
        checked by the caller)."""
        return await self._change(account, provider_arn, lambda p: replace(
            p, url=wanted.url, client_ids=wanted.client_ids, thumbprints=wanted.thumbprints,
            tags=wanted.tags, static_jwks=wanted.static_jwks))

    async def retag(self, account: str, provider_arn: str, *, add: tuple[Tag, ...] = (),
                    remove: tuple[str, ...] = ()) -> OidcProvider:
        return await self._change(account, provider_arn, lambda p: replace(
            p, tags=merge_tags(p.tags, add, remove)))

    # -- STS ------------------------------------------------------------------------------------

    async def find_by_issuer(self, account: str, issuer: str) -> OidcProvider | None:
        """The provider of ``account`` whose URL is exactly ``issuer`` (a token's iss)."""
        try:
            record = await self._entities.store.get(
                OidcProvider.ref(account, oidc_identifier(issuer)))
        except NotFound:
            return None
        provider = OidcProvider.of(record)
        return provider if provider.url == issuer else None

    # -- helpers --------------------------------------------------------------------------------

    async def _change(self, account: str, provider_arn: str,
                      change: Callable[[OidcProvider], OidcProvider]) -> OidcProvider:
        current = await self.get(account, provider_arn)

        def same(provider: OidcProvider) -> OidcProvider:
            if provider.uuid != current.uuid:  # deleted and created again meanwhile
                raise missing_provider(provider_arn)
            return change(provider)

        return await self._entities.change(
            OidcProvider, OidcProvider.ref(account, current.identifier), same,
            lambda: missing_provider(provider_arn))
