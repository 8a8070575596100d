"""IAM use cases: accounts, the root user, IAM users and access keys.

Plain Python over the EntityStore: the Query API (iam/api.py), the command line and the tests
call the same methods. Store errors become the AWS errors IAM answers with, with IAM's words.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from typing import Any

from broker.aws import ids
from broker.aws.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.aws.tags import DUPLICATE_KEYS, has_duplicate_keys
from broker.clock import Clock
from broker.errors import AlreadyExists, Conflict, NotFound, QuotaExceeded
from broker.iam.entities import (
    ACCESS_KEY,
    ACCOUNT,
    ACTIVE,
    MAX_ACCESS_KEYS,
    USER,
    AccessKey,
    Account,
    LastUsed,
    RootUser,
    Tag,
    User,
    name_key,
)
from broker.keyring import Keyring
from broker.store.base import GLOBAL, EntityStore, Record

SECRET_PURPOSE = "access-key-secret"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class NewAccessKey:
    """A key as created: the only time its secret is ever shown."""

    key: AccessKey
    secret_access_key: str


@dataclass(frozen=True)
class Page:
    items: list[Any]
    marker: str | None  # where the next page starts, if there is one


class IamService:
    def __init__(self, store: EntityStore, keyring: Keyring, clock: Clock) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock

    # -- accounts -------------------------------------------------------------------------------

    async def create_account(self, account_id: str | None = None) -> tuple[Account, NewAccessKey]:
        """A new account, its root user and one root access key."""
        now = self.clock.now()
        account = Account(id=account_id or ids.new_account_id(), created=now)
        try:
            await self.store.create(account.record())
        except AlreadyExists:
            raise EntityAlreadyExists(f"Account {account.id} already exists.") from None
        await self.store.create(RootUser(account.id, now).record())
        key = await self.create_access_key(account.id, None)
        return account, key

    async def get_account(self, account_id: str) -> Account:
        try:
            return Account.of(await self.store.get(Account.ref(account_id)))
        except NotFound:
            raise NoSuchEntity(f"The account {account_id} cannot be found.") from None

    async def list_accounts(self) -> list[Account]:
        return [Account.of(r) for r in await self.store.list(ACCOUNT, GLOBAL)]

    # -- users ----------------------------------------------------------------------------------

    async def create_user(self, account_id: str, name: str, *, path: str = "/",
                          tags: tuple[Tag, ...] = (),
                          permissions_boundary: str | None = None) -> User:
        check_tags(tags)
        if permissions_boundary is not None:
            # Managed policies arrive with the policy engine; none exists to be a boundary yet.
            raise NoSuchEntity(
                f"Policy {permissions_boundary} does not exist or is not attachable."
            )
        user = User(
            account_id=account_id,
            name=name,
            path=path,
            user_id=ids.new_unique_id(ids.USER_ID_PREFIX),
            created=self.clock.now(),
            tags=tags,
        )
        try:
            await self.store.create(user.record())
        except AlreadyExists:
            raise EntityAlreadyExists(f"User with name {name} already exists.") from None
        return user

    async def get_user(self, account_id: str, name: str) -> User:
        try:
            return User.of(await self.store.get(User.ref(account_id, name)))
        except NotFound:
            raise NoSuchEntity(f"The user with name {name} cannot be found.") from None

    async def update_user(self, account_id: str, name: str, *, path: str,
                          tags: tuple[Tag, ...]) -> User:
        check_tags(tags)

        def change(record: Record) -> dict[str, Any]:
            return replace(User.of(record), path=path, tags=tags).data()

        try:
            return User.of(await self.store.update(User.ref(account_id, name), change))
        except NotFound:
            raise NoSuchEntity(f"The user with name {name} cannot be found.") from None

    async def list_users(self, account_id: str, *, path_prefix: str = "/",
                         marker: str | None = None, max_items: int = 100) -> Page:
        users: list[User] = []
        after = _unmark(marker)
        while len(users) <= max_items:
            batch = await self.store.list(USER, account_id, after=after, limit=500)
            if not batch:
                break
            users.extend(u for u in map(User.of, batch) if u.path.startswith(path_prefix))
            after = batch[-1].key
        page = users[:max_items]
        more = len(users) > max_items
        return Page(page, _mark(page[-1].name.lower()) if more and page else None)

    async def delete_user(self, account_id: str, name: str) -> None:
        try:
            await self.store.delete(User.ref(account_id, name), blocked_by=(ACCESS_KEY,))
        except NotFound:
            raise NoSuchEntity(f"The user with name {name} cannot be found.") from None
        except Conflict:
            raise DeleteConflict("Cannot delete entity, must delete access keys first.") from None

    # -- access keys ----------------------------------------------------------------------------

    async def create_access_key(self, account_id: str, user_name: str | None) -> NewAccessKey:
        secret = ids.new_secret_access_key()
        for _ in range(5):  # a collision of random ids is rare; retry rather than fail
            key_id = ids.new_access_key_id(account_id, temporary=False)
            key = AccessKey(
                account_id=account_id,
                access_key_id=key_id,
                user_name=user_name,
                status=ACTIVE,
                created=self.clock.now(),
                sealed_secret=self._seal_secret(key_id, secret),
            )
            try:
                await self.store.create(key.record(), max_siblings=MAX_ACCESS_KEYS)
            except AlreadyExists:
                continue
            except QuotaExceeded:
                raise LimitExceeded(
                    f"Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}"
                ) from None
            except NotFound:
                raise NoSuchEntity(
                    f"The user with name {user_name} cannot be found."
                ) from None
            return NewAccessKey(key, secret)
        raise EntityAlreadyExists("Could not allocate a unique access key id; try again.")

    async def list_access_keys(self, account_id: str, user_name: str | None, *,
                               marker: str | None = None, max_items: int = 100) -> Page:
        owner = User.ref(account_id, user_name) if user_name else RootUser.ref(account_id)
        if user_name is not None:
            await self.get_user(account_id, user_name)
        records = await self.store.list(ACCESS_KEY, account_id, parent=owner,
                                        after=_unmark(marker), limit=max_items + 1)
        keys = [AccessKey.of(r) for r in records]
        page = keys[:max_items]
        more = len(keys) > max_items
        return Page(page, _mark(page[-1].access_key_id) if more and page else None)

    async def get_access_key(self, account_id: str, access_key_id: str,
                             user_name: str | None = None) -> AccessKey:
        """The key, if it belongs to this account and (when given) this owner."""
        try:
            key = AccessKey.of(await self.store.get(AccessKey.ref(account_id, access_key_id)))
        except NotFound:
            key = None
        owner = None if key is None or key.user_name is None else name_key(key.user_name)
        asked = None if user_name is None else name_key(user_name)
        if key is None or owner != asked:
            raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.")
        return key

    async def update_access_key(self, account_id: str, access_key_id: str, status: str,
                                user_name: str | None) -> AccessKey:
        await self.get_access_key(account_id, access_key_id, user_name)

        def change(record: Record) -> dict[str, Any]:
            return replace(AccessKey.of(record), status=status).data()

        try:
            record = await self.store.update(AccessKey.ref(account_id, access_key_id), change)
        except NotFound:
            raise NoSuchEntity(
                f"The Access Key with id {access_key_id} cannot be found."
            ) from None
        return AccessKey.of(record)

    async def delete_access_key(self, account_id: str, access_key_id: str,
                                user_name: str | None) -> None:
        await self.get_access_key(account_id, access_key_id, user_name)
        try:
            await self.store.delete(AccessKey.ref(account_id, access_key_id))
        except NotFound:
            raise NoSuchEntity(
                f"The Access Key with id {access_key_id} cannot be found."
            ) from None

    async def find_access_key(self, access_key_id: str) -> AccessKey | None:
        """Any account's key by its id (for authentication and GetAccessKeyInfo)."""
        try:
            return AccessKey.of(await self.store.find(ACCESS_KEY, access_key_id))
        except NotFound:
            return None

    def secret_of(self, key: AccessKey) -> str:
        blob = base64.b64decode(key.sealed_secret)
        return self.keyring.unseal(blob, purpose=SECRET_PURPOSE, aad=key.access_key_id).decode()

    async def record_last_used(self, account_id: str, access_key_id: str,
                               used: LastUsed) -> None:
        def change(record: Record) -> dict[str, Any]:
            current = AccessKey.of(record)
            if current.last_used is not None and current.last_used.at >= used.at:
                return current.data()
            return replace(current, last_used=used).data()

        try:
            await self.store.update(AccessKey.ref(account_id, access_key_id), change)
        except NotFound:
            return  # deleted since it was used: nothing to record

    async def reseal_secrets(self) -> int:
        """Seal every stored secret with the sealing key, so older keys can retire."""
        newest = self.keyring.sealing.id
        count = 0
        for account in await self.list_accounts():
            for record in await self.store.list(ACCESS_KEY, account.id):
                key = AccessKey.of(record)
                if self.keyring.key_id_of(base64.b64decode(key.sealed_secret)) == newest:
                    continue
                secret = self.secret_of(key)

                def change(record: Record, secret: str = secret) -> dict[str, Any]:
                    current = AccessKey.of(record)
                    sealed = self._seal_secret(current.access_key_id, secret)
                    return replace(current, sealed_secret=sealed).data()

                await self.store.update(key.record().ref, change)
                count += 1
        return count

    async def secrets_sealed_with(self, key_id: str) -> int:
        count = 0
        for account in await self.list_accounts():
            for record in await self.store.list(ACCESS_KEY, account.id):
                sealed = base64.b64decode(AccessKey.of(record).sealed_secret)
                if self.keyring.key_id_of(sealed) == key_id:
                    count += 1
        return count

    def _seal_secret(self, access_key_id: str, secret: str) -> str:
        blob = self.keyring.seal(secret.encode(), purpose=SECRET_PURPOSE, aad=access_key_id)
        return base64.b64encode(blob).decode("ascii")


def check_tags(tags: tuple[Tag, ...]) -> None:
    if has_duplicate_keys(t.key for t in tags):
        raise InvalidInput(DUPLICATE_KEYS)
    for tag in tags:
        if tag.key.lower().startswith("aws:"):
            raise InvalidInput(f"Tag key {tag.key} uses the reserved prefix 'aws:'.")


def _mark(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode("ascii")


def _unmark(marker: str | None) -> str | None:
    if marker is None:
        return None
    try:
        key = base64.urlsafe_b64decode(marker.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError):
        key = ""
    if not _MARKED.fullmatch(key):
        raise InvalidInput("Invalid Marker: it is not one this service returned.")
    return key


_MARKED = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")  # the keys markers point after
