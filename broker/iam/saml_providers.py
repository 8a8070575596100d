"""SAML providers: the identity providers whose signed responses AssumeRoleWithSAML exchanges
for a role's session.

A provider keeps its metadata document as uploaded and what the broker read from it (entity id,
signing certificates, single sign-on URLs, validity), its tags, and up to two private keys that
decrypt its encrypted assertions. The private keys are sealed by the keyring (purpose
``saml-private-key``, bound to the provider's UUID and the key's id), like access-key secrets:
never stored in clear, never returned.

The IAM actions (iam/api/providers.py) call ``create``, ``get``, ``listing``, ``update``,
``delete`` and ``retag``; STS calls ``find``, ``decryption_keys`` and ``signing_keys``.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.aws import arn as arns
from broker.aws.errors import (
    AwsError,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
    ServiceUnavailable,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound, QuotaExceeded, SealError
from broker.iam.entities import (
    ALLOWED,
    REQUIRED,
    SAML_PROVIDER,
    SamlKey,
    SamlProvider,
    Tag,
)
from broker.iam.policies import merge_tags
from broker.iam.records import Entities, check_tags
from broker.idp.metadata import IdpMetadata, MetadataError, SigningKey, parse_metadata, signing_key
from broker.idp.sp import load_private_key
from broker.keyring import Keyring
from broker.store.base import Record

log = logging.getLogger("broker.iam")

SEAL_PURPOSE = "saml-private-key"
MAX_PROVIDERS = 100
MAX_PRIVATE_KEYS = 2
MIN_PRIVATE_KEY_BITS = 2048
NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")

REQUIRED_WITHOUT_KEY = ("Unable to set assertion encryption mode to Required because no private "
                        "key is provided.")
ADD_AND_REMOVE = ("Unable to add and remove private keys in the same request. Set a value for "
                  "only one of the two parameters.")
NOTHING_TO_UPDATE = ("Unable to update identity provider. No updates are defined for metadata "
                     "or encryption assertion.")
INVALID_PRIVATE_KEY = "Invalid private key."
UNKNOWN_KEY_ID = "Failed to remove private key because the Key ID does not match a private key."
LAST_REQUIRED_KEY = ("Unable to remove the last private key while the assertion encryption mode "
                     "is Required. Set the mode to Allowed first, or add another key.")


def missing_provider(provider_arn: str) -> AwsError:
    return NoSuchEntity(f"Manifest not found for arn {provider_arn}")


def read_metadata(document: str) -> IdpMetadata:
    """The metadata, or InvalidInput with the reason it cannot be used."""
    try:
        return parse_metadata(document)
    except MetadataError as exc:
        raise InvalidInput(f"Could not parse metadata: {exc.reason}") from None


def signing_keys(provider: SamlProvider) -> list[SigningKey]:
    """The public keys of the provider's signing certificates, in the metadata's order."""
    return [signing_key(base64.b64decode(der)) for der in provider.signing_certificates]


def provider_name(account: str, provider_arn: str) -> str | None:
    """The name in a SAML provider ARN of this account (``arn:aws:iam::ACCOUNT:saml-provider/
    NAME``), or None if the ARN is not one."""
    parsed = arns.parse(provider_arn)
    if (parsed is None or parsed.partition != arns.PARTITION or parsed.service != "iam"
            or parsed.region or parsed.account != account):
        return None
    kind, _, name = parsed.resource.partition("/")
    if kind != "saml-provider" or not 1 <= len(name) <= 128 or not set(name) <= NAME_CHARACTERS:
        return None
    return name


def new_id() -> str:
    """A SAMLProviderUUID or private key KeyId: 26 characters of [A-Z2-7] (128 random bits)."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")


def hundred_years_after(at: datetime) -> datetime:
    """A provider's ValidUntil when its metadata sets none, as AWS answers it: the same day and
    time a hundred years on (February 29th becoming the 28th)."""
    try:
        return at.replace(year=at.year + 100)
    except ValueError:
        return at.replace(year=at.year + 100, day=28)


class SamlProviders:
    def __init__(self, entities: Entities, keyring: Keyring, clock: Clock) -> None:
        self._entities = entities
        self._keyring = keyring
        self._clock = clock

    # -- IAM ------------------------------------------------------------------------------------

    async def create(self, account: str, name: str, metadata: str, *,
                     tags: tuple[Tag, ...] = (), assertion_encryption_mode: str = ALLOWED,
                     private_key: str | None = None) -> SamlProvider:
        check_tags(tags)
        parsed = read_metadata(metadata)
        uuid = new_id()
        keys = () if private_key is None else (self._new_key(uuid, private_key),)
        if assertion_encryption_mode == REQUIRED and not keys:
            raise InvalidInput(REQUIRED_WITHOUT_KEY)
        now = self._clock.now()
        provider = SamlProvider(
            account_id=account, name=name, uuid=uuid, metadata=metadata,
            entity_id=parsed.entity_id,
            signing_certificates=_encoded(parsed.signing_certificates),
            sso_redirect_url=parsed.sso_redirect_url, sso_post_url=parsed.sso_post_url,
            create_date=now, valid_until=parsed.valid_until or hundred_years_after(now),
            tags=tags, assertion_encryption_mode=assertion_encryption_mode, private_keys=keys,
        )
        try:
            await self._entities.store.create(provider.record(), max_siblings=MAX_PROVIDERS)
        except AlreadyExists:
            raise EntityAlreadyExists(f"Provider with name {name} already exists.") from None
        except QuotaExceeded:
            raise LimitExceeded(
                f"Cannot exceed quota for SAMLProvidersPerAccount: {MAX_PROVIDERS}") from None
        return provider

    async def get(self, account: str, provider_arn: str) -> SamlProvider:
        """The provider of this account with this ARN (its name in any case, as IAM names
        are unique regardless of case); NoSuchEntity otherwise."""
        name = provider_name(account, provider_arn)
        if name is None:
            raise missing_provider(provider_arn)
        return await self._entities.get(SamlProvider, SamlProvider.ref(account, name),
                                        lambda: missing_provider(provider_arn))

    async def listing(self, account: str) -> list[SamlProvider]:
        return await self._entities.all(SamlProvider, SAML_PROVIDER, account)

    async def update(self, account: str, provider_arn: str, *, metadata: str | None = None,
                     assertion_encryption_mode: str | None = None,
                     add_private_key: str | None = None,
                     remove_private_key: str | None = None) -> SamlProvider:
        """UpdateSAMLProvider: new metadata, a new encryption mode, one private key added or
        one removed (not both), in one atomic change."""
        if (metadata is None and assertion_encryption_mode is None and add_private_key is None
                and remove_private_key is None):
            raise InvalidInput(NOTHING_TO_UPDATE)
        if add_private_key is not None and remove_private_key is not None:
            raise InvalidInput(ADD_AND_REMOVE)
        parsed = None if metadata is None else read_metadata(metadata)
        current = await self.get(account, provider_arn)
        added = None if add_private_key is None else self._new_key(current.uuid, add_private_key)

        def change(provider: SamlProvider) -> SamlProvider:
            mode = assertion_encryption_mode or provider.assertion_encryption_mode
            keys = provider.private_keys
            if added is not None:
                if len(keys) >= MAX_PRIVATE_KEYS:
                    raise LimitExceeded(f"Private key limit of {MAX_PRIVATE_KEYS} is reached.")
                keys = (*keys, added)
            if remove_private_key is not None:
                kept = tuple(k for k in keys if k.key_id != remove_private_key)
                if len(kept) == len(keys):
                    raise InvalidInput(UNKNOWN_KEY_ID)
                if not kept and mode == REQUIRED:
                    raise InvalidInput(LAST_REQUIRED_KEY)
                keys = kept
            if mode == REQUIRED and not keys:
                raise InvalidInput(REQUIRED_WITHOUT_KEY)
            provider = replace(provider, assertion_encryption_mode=mode, private_keys=keys)
            if metadata is not None and parsed is not None:
                provider = replace(
                    provider, metadata=metadata, entity_id=parsed.entity_id,
                    signing_certificates=_encoded(parsed.signing_certificates),
                    sso_redirect_url=parsed.sso_redirect_url, sso_post_url=parsed.sso_post_url,
                    valid_until=parsed.valid_until or hundred_years_after(provider.create_date))
            return provider

        return await self._change(account, current, change, provider_arn)

    async def delete(self, account: str, provider_arn: str) -> None:
        provider = await self.get(account, provider_arn)

        def same(record: Record) -> None:
            if record.lookup != provider.uuid:  # deleted and created again meanwhile
                raise missing_provider(provider_arn)

        try:
            await self._entities.store.delete(SamlProvider.ref(account, provider.name),
                                              check=same)
        except NotFound:
            raise missing_provider(provider_arn) from None

    async def retag(self, account: str, provider_arn: str, *, add: tuple[Tag, ...] = (),
                    remove: tuple[str, ...] = ()) -> SamlProvider:
        """TagSAMLProvider / UntagSAMLProvider: new values replace old ones of the same key
        (regardless of case); keys that are not there are ignored."""
        current = await self.get(account, provider_arn)
        return await self._change(
            account, current, lambda p: replace(p, tags=merge_tags(p.tags, add, remove)),
            provider_arn)

    # -- STS ------------------------------------------------------------------------------------

    async def find(self, provider_arn: str) -> SamlProvider | None:
        """The provider with exactly this ARN, in any account; None for a malformed ARN, a
        missing provider, or an ARN that differs from the provider's in case (a trust policy
        names a provider by its exact ARN)."""
        parsed = arns.parse(provider_arn)
        name = None if parsed is None else provider_name(parsed.account, provider_arn)
        if parsed is None or name is None:
            return None
        try:
            record = await self._entities.store.get(SamlProvider.ref(parsed.account, name))
        except NotFound:
            return None
        provider = SamlProvider.of(record)
        return provider if provider.arn == provider_arn else None

    def decryption_keys(self, provider: SamlProvider) -> list[rsa.RSAPrivateKey]:
        """The provider's private keys, unsealed, oldest first. A key this process's keyring
        cannot open is a fault of the deployment: ServiceUnavailable, and the log says so."""
        keys = []
        for key in provider.private_keys:
            try:
                pem = self._unsealed(provider, key)
            except SealError:
                log.error("SAML provider %s: its private key %s does not open with this "
                          "process's keyring; copy the current keyring file to this host",
                          provider.arn, key.key_id)
                raise ServiceUnavailable(
                    "The service is unavailable. Please try again later.") from None
            loaded = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)  # only RSA keys are ever sealed
            keys.append(loaded)
        return keys

    # -- keyring rotation -----------------------------------------------------------------------

    async def reseal(self, account: str) -> int:
        """Seal the account's private keys with the sealing key; how many were resealed."""
        sealing = self._keyring.sealing.id
        count = 0
        for provider in await self.listing(account):
            stale = [k for k in provider.private_keys if self._sealed_by(k) != sealing]
            if not stale:
                continue

            def reseal(current: SamlProvider) -> SamlProvider:
                keys = tuple(
                    k if self._sealed_by(k) == sealing
                    else replace(k, sealed_pem=self._seal(current.uuid, k.key_id,
                                                          self._unsealed(current, k)))
                    for k in current.private_keys)
                return replace(current, private_keys=keys)

            try:
                await self._change(account, provider, reseal, provider.arn)
            except NoSuchEntity:
                continue  # deleted meanwhile: nothing left to reseal
            count += len(stale)
        return count

    async def sealed_with(self, account: str, key_id: str) -> int:
        """How many of the account's private keys are sealed with this keyring key."""
        return sum(1 for provider in await self.listing(account)
                   for key in provider.private_keys if self._sealed_by(key) == key_id)

    # -- helpers --------------------------------------------------------------------------------

    async def _change(self, account: str, current: SamlProvider,
                      change: Callable[[SamlProvider], SamlProvider],
                      provider_arn: str) -> SamlProvider:
        def same(provider: SamlProvider) -> SamlProvider:
            if provider.uuid != current.uuid:  # deleted and created again meanwhile
                raise missing_provider(provider_arn)
            return change(provider)

        return await self._entities.change(SamlProvider,
                                           SamlProvider.ref(account, current.name), same,
                                           lambda: missing_provider(provider_arn))

    def _new_key(self, uuid: str, pem: str) -> SamlKey:
        key_id = new_id()
        return SamlKey(key_id=key_id, timestamp=self._clock.now(),
                       sealed_pem=self._seal(uuid, key_id, _private_key_pem(pem)))

    def _seal(self, uuid: str, key_id: str, pem: bytes) -> str:
        blob = self._keyring.seal(pem, purpose=SEAL_PURPOSE, aad=_aad(uuid, key_id))
        return base64.b64encode(blob).decode("ascii")

    def _unsealed(self, provider: SamlProvider, key: SamlKey) -> bytes:
        return self._keyring.unseal(base64.b64decode(key.sealed_pem), purpose=SEAL_PURPOSE,
                                    aad=_aad(provider.uuid, key.key_id))

    def _sealed_by(self, key: SamlKey) -> str | None:
        return self._keyring.key_id_of(base64.b64decode(key.sealed_pem))


def _aad(uuid: str, key_id: str) -> str:
    """What a sealed private key is bound to: its provider (by UUID) and its own id."""
    return f"{uuid}/{key_id}"


def _encoded(certificates: tuple[bytes, ...]) -> tuple[str, ...]:
    return tuple(base64.b64encode(der).decode("ascii") for der in certificates)


def _private_key_pem(pem: str) -> bytes:
    """An unencrypted PEM RSA private key of at least 2048 bits (PKCS#1 or PKCS#8), as PKCS#8
    PEM; InvalidInput otherwise."""
    try:
        key = load_private_key(pem.encode("latin-1"))
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        # Not PEM, not a private key, encrypted with a password, or of an unknown kind.
        raise InvalidInput(INVALID_PRIVATE_KEY) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_PRIVATE_KEY_BITS:
        raise InvalidInput(INVALID_PRIVATE_KEY)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
