"""IAM Identity Center's instances: one per account, with its identity store.

An instance is a record of its owner account (kind ``sso_instance``, key ``instance``: so an
account has at most one, under concurrent requests too), found from anywhere by its id (the
record's lookup value). Created in the management account of an organization it is that
organization's instance (``scope`` ``ORGANIZATION``: it will assign any member account);
elsewhere an account instance, for its own account only. Its ARN is
``arn:aws:sso:::instance/ssoins-`` and 16 hexadecimal digits, and its identity store id ``d-``
and 10, as AWS's.

``CreateInstance`` honours its ``ClientToken``: the same token gives back the same instance.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from broker.aws import arn
from broker.aws.jsonproto import ServiceError
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import Tag, decode, encode
from broker.store.base import EntityStore, Record, Ref

INSTANCE = "sso_instance"
KEY = "instance"
MAX_TAGS = 75


class SsoError(ServiceError):
    """An error of the sso-admin and identitystore models."""


def not_found(instance_arn: str, code: str = "ResourceNotFoundException") -> SsoError:
    """An instance the caller's account does not own, in the code the action's model has for
    it (DescribeInstance and DeleteInstance have no ResourceNotFoundException: for them, as
    for any instance the caller cannot see, AccessDeniedException)."""
    return SsoError(code, f"Instance {instance_arn[:1224]} does not exist in this account.")


@dataclass(frozen=True)
class Instance:
    account_id: str
    instance_id: str  # ssoins-…
    identity_store_id: str  # d-…
    name: str | None
    created: datetime
    scope: str  # ORGANIZATION or ACCOUNT
    client_token: str | None = None
    tags: tuple[Tag, ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:{arn.PARTITION}:sso:::instance/{self.instance_id}"

    @property
    def identity_store_arn(self) -> str:
        return (f"arn:{arn.PARTITION}:identitystore::{self.account_id}:identitystore/"
                f"{self.identity_store_id}")

    def record(self) -> Record:
        return Record(kind=INSTANCE, account=self.account_id, key=KEY,
                      data=encode(self, skip=("account_id",)), lookup=self.identity_store_id)

    def wire(self) -> dict[str, Any]:
        return {"InstanceArn": self.arn, "IdentityStoreId": self.identity_store_id,
                "OwnerAccountId": self.account_id, "Name": self.name,
                "CreatedDate": self.created, "Status": "ACTIVE"}


def _of(record: Record) -> Instance:
    return decode(Instance, {**record.data, "account_id": record.account})


class Instances:
    def __init__(self, store: EntityStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, account: str, *, name: str | None, client_token: str | None,
                     tags: tuple[Tag, ...], organization: bool) -> Instance:
        check_tags(tags)
        instance = Instance(
            account_id=account, instance_id="ssoins-" + secrets.token_hex(8),
            identity_store_id="d-" + secrets.token_hex(5), name=name,
            created=self._clock.now(), scope="ORGANIZATION" if organization else "ACCOUNT",
            client_token=client_token, tags=tags)
        try:
            await self._store.create(instance.record())
        except AlreadyExists:
            existing = await self.of_account(account)
            if existing is not None and client_token is not None and \
                    existing.client_token == client_token:
                return existing  # the same request again: the same instance
            raise SsoError("ConflictException",
                           "An instance of IAM Identity Center already exists for this "
                           "account.") from None
        return instance

    async def of_account(self, account: str) -> Instance | None:
        try:
            return _of(await self._store.get(Ref(INSTANCE, account, KEY)))
        except NotFound:
            return None

    async def by_store(self, identity_store_id: str) -> Instance | None:
        try:
            return _of(await self._store.find(INSTANCE, identity_store_id))
        except NotFound:
            return None

    async def get(self, account: str, instance_arn: str,
                  missing: str = "ResourceNotFoundException") -> Instance:
        """The caller's account's instance with that ARN; ``missing`` for any other (another
        account's instances are not shown)."""
        found = await self.of_account(account)
        if found is None or found.arn != instance_arn:
            raise not_found(instance_arn, missing)
        return found

    async def rename(self, account: str, instance_arn: str, name: str | None) -> Instance:
        await self.get(account, instance_arn)

        def change(record: Record) -> dict[str, Any]:
            current = _of(record)
            if current.arn != instance_arn:
                raise not_found(instance_arn)
            return encode(replace(current, name=name if name is not None else current.name),
                          skip=("account_id",))

        try:
            return _of(await self._store.update(Ref(INSTANCE, account, KEY), change))
        except NotFound:
            raise not_found(instance_arn) from None

    async def retag(self, account: str, instance_arn: str,
                    change: Callable[[tuple[Tag, ...]], tuple[Tag, ...]]) -> None:
        def apply(record: Record) -> dict[str, Any]:
            current = _of(record)
            if current.arn != instance_arn:
                raise not_found(instance_arn)
            return encode(replace(current, tags=change(current.tags)), skip=("account_id",))

        try:
            await self._store.update(Ref(INSTANCE, account, KEY), apply)
        except NotFound:
            raise not_found(instance_arn) from None

    async def delete(self, account: str, instance_arn: str) -> None:
        missing = "AccessDeniedException"

        def ours(record: Record) -> None:
            if _of(record).arn != instance_arn:
                raise not_found(instance_arn, missing)

        try:
            await self._store.delete(Ref(INSTANCE, account, KEY), check=ours)
        except NotFound:
            raise not_found(instance_arn, missing) from None


def merge_tags(current: tuple[Tag, ...], add: tuple[Tag, ...] = (),
               remove: tuple[str, ...] = ()) -> tuple[Tag, ...]:
    """Tags after TagResource (``add``: a key given again takes the new value) or
    UntagResource (``remove``); ServiceQuotaExceededException past AWS's 75."""
    check_tags(add)
    kept = {t.key: t for t in current if t.key not in remove}
    kept.update({t.key: t for t in add})
    if len(kept) > MAX_TAGS:
        raise SsoError("ServiceQuotaExceededException",
                       f"A resource holds at most {MAX_TAGS} tags.")
    return tuple(kept.values())


def check_tags(tags: tuple[Tag, ...]) -> None:
    keys = [t.key for t in tags]
    if len(set(keys)) != len(keys):
        raise SsoError("ValidationException", "The same tag key is given twice.")
    if any(k.lower().startswith("aws:") for k in keys):
        raise SsoError("ValidationException", "Tag keys with the prefix aws: are reserved.")


def start_url(public_url: str, instance: Instance) -> str:
    """The instance's access portal: where its people sign in, and the start URL the CLI and
    SDKs name it by."""
    return f"{public_url.rstrip('/')}/start/{instance.identity_store_id}"


def idp_metadata(public_url: str, instance: Instance, certificate_b64: str) -> str:
    """The instance as a SAML identity provider (saml-metadata-2.0-os): the metadata of the
    ``AWSSSO_…_DO_NOT_DELETE`` provider provisioning makes in each account it assigns. The
    signing certificate is the broker's own SAML key's."""
    portal = start_url(public_url, instance)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID={quoteattr(portal)}>\n'
        '  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">\n'
        '    <md:KeyDescriptor use="signing">\n'
        f'      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{certificate_b64}'
        '</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\n'
        '    </md:KeyDescriptor>\n'
        '    <md:SingleSignOnService '
        'Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        f'Location={quoteattr(portal)}/>\n'
        '  </md:IDPSSODescriptor>\n'
        '</md:EntityDescriptor>\n'
    )
