"""IAM use cases: accounts and their aliases, the root user, IAM users and access keys; and,
through ``policies``, ``groups``, ``roles``, ``logins``, ``saml_providers`` and
``oidc_providers``, the rest of IAM.

Plain Python over the EntityStore: the Query API (iam/api/), the command line and the tests
call the same methods. Store errors become the AWS errors IAM answers with, with IAM's words.
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import dataclass, replace

from broker.aws import ids
from broker.aws.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, Conflict, NotFound, QuotaExceeded
from broker.iam.entities import (
    ACCESS_KEY,
    ACCOUNT,
    ACTIVE,
    ALIAS,
    MAX_ACCESS_KEYS,
    ROOT_EMAIL,
    USER,
    AccessKey,
    Account,
    LastUsed,
    PolicyRef,
    RootUser,
    Tag,
    User,
    name_key,
)
from broker.iam.groups import Groups
from broker.iam.logins import Logins, check_against, hash_password
from broker.iam.mfa import MfaDevices
from broker.iam.oidc_providers import OidcProviders
from broker.iam.policies import Policies
from broker.iam.records import Entities, Page, check_tags, missing_user, paginate
from broker.iam.report import CredentialReports
from broker.iam.roles import Roles
from broker.iam.saml_providers import SamlProviders
from broker.idp import sp
from broker.keyring import Keyring
from broker.store.base import GLOBAL, EntityStore, EphemeralStore, Record, Ref

SECRET_PURPOSE = "access-key-secret"  # noqa: S105 (a label, not a secret)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+", re.ASCII)
MAX_EMAIL = 64  # AWS's limit for an account's root email address


def check_root_email(email: str) -> str:
    """An email address a root user can sign in with (ASCII, one @, a dotted domain, at most
    64 characters), or InvalidInput."""
    email = email.strip()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise InvalidInput(f"The root email address must be an email address of at most "
                           f"{MAX_EMAIL} characters (name@example.com).")
    return email


@dataclass(frozen=True)
class NewAccessKey:
    """A key as created: the only time its secret is ever shown."""

    key: AccessKey
    secret_access_key: str


class IamService:
    def __init__(self, store: EntityStore, keyring: Keyring, clock: Clock, *,
                 allow_http_loopback: bool = False,
                 ephemeral: EphemeralStore | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self.entities = Entities(store)
        self.policies = Policies(self.entities, clock)
        self.groups = Groups(self.entities, clock)
        self.roles = Roles(self.entities, clock)
        self.logins = Logins(self.entities, clock)
        self.saml_providers = SamlProviders(self.entities, keyring, clock)
        self.oidc_providers = OidcProviders(self.entities, clock,
                                            allow_http_loopback=allow_http_loopback)
        # Without the ephemeral store (the CLI) no MFA code can be spent, so none is accepted.
        self.mfa = MfaDevices(self.entities, keyring, clock, ephemeral)
        self.reports = CredentialReports(self.entities, self.logins, self.mfa, clock)

    # -- accounts -------------------------------------------------------------------------------

    async def create_account(self, account_id: str | None = None, *,
                             root_email: str | None = None,
                             root_password: str | None = None) -> tuple[Account, NewAccessKey]:
        """A new account, its root user (with its email address and password, when given)
        and one root access key."""
        account = await self.create_bare_account(account_id, root_email=root_email,
                                                 root_password=root_password)
        key = await self.create_access_key(account.id, None)
        return account, key

    async def create_bare_account(self, account_id: str | None = None, *,
                                  root_email: str | None = None,
                                  root_password: str | None = None) -> Account:
        """A new account and its root user, with no access key: Organizations' CreateAccount
        (the root user has its email address and no credentials at all)."""
        now = self.clock.now()
        email = check_root_email(root_email) if root_email is not None else None
        password_hash = None
        if root_password is not None:
            check_against(None, root_password)  # the root user's rule is AWS's default
            password_hash = hash_password(root_password)
        account = Account(id=account_id or ids.new_account_id(), created=now)
        if email is not None:
            try:  # one account per root email address, as AWS
                await self.store.create(Record(kind=ROOT_EMAIL, account=GLOBAL,
                                               key=email.lower(), data={"account": account.id}))
            except AlreadyExists:
                raise EntityAlreadyExists(
                    f"An account with the root email address {email} already exists.") from None
        try:
            await self.store.create(account.record())
        except AlreadyExists:
            if email is not None:
                await self.store.delete(Ref(ROOT_EMAIL, GLOBAL, email.lower()))
            raise EntityAlreadyExists(f"Account {account.id} already exists.") from None
        await self.store.create(RootUser(account.id, now, email=email,
                                         password_hash=password_hash,
                                         password_changed=now if password_hash else None
                                         ).record())
        return account

    async def get_account(self, account_id: str) -> Account:
        try:
            return Account.of(await self.store.get(Account.ref(account_id)))
        except NotFound:
            raise NoSuchEntity(f"The account {account_id} cannot be found.") from None

    async def root_email(self, account_id: str) -> str | None:
        """The root user's email address, if it has one."""
        try:
            record = await self.store.get(RootUser.ref(account_id))
        except NotFound:
            return None
        email = record.data.get("email")
        return str(email) if email else None

    async def account_of_root_email(self, email: str) -> str | None:
        """The account whose root user has this email address (in any case)."""
        try:
            record = await self.store.get(Ref(ROOT_EMAIL, GLOBAL, email.strip().lower()))
        except NotFound:
            return None
        return str(record.data["account"])

    async def list_accounts(self) -> list[Account]:
        return [Account.of(r) for r in await self.store.list(ACCOUNT, GLOBAL)]

    async def set_alias(self, account_id: str, alias: str) -> None:
        """CreateAccountAlias: an account has at most one alias, unique among all accounts."""
        account = await self.get_account(account_id)
        if account.alias == alias:
            return
        if account.alias is not None:
            raise LimitExceeded("Cannot exceed quota for AccountAliasesPerAccount: 1")
        try:
            await self.store.create(Record(kind=ALIAS, account=GLOBAL, key=alias,
                                           data={"account": account_id}))
        except AlreadyExists:
            raise EntityAlreadyExists(f"The account alias {alias} already exists.") from None

        def claim(current: Account) -> Account:
            # Checked again inside the update: a concurrent request may have set another.
            if current.alias not in (None, alias):
                raise LimitExceeded("Cannot exceed quota for AccountAliasesPerAccount: 1")
            return replace(current, alias=alias)

        try:
            await self.entities.change(Account, Account.ref(account_id), claim,
                                       lambda: NoSuchEntity(f"The account {account_id} cannot "
                                                            "be found."))
        except BaseException:
            # Release the name reserved above, so that nothing is left half-written.
            with contextlib.suppress(Exception):
                await self.store.delete(Ref(ALIAS, GLOBAL, alias))
            raise

    async def delete_alias(self, account_id: str, alias: str) -> None:
        account = await self.get_account(account_id)
        if account.alias != alias:
            raise NoSuchEntity(f"The account alias {alias} cannot be found.")
        await self.entities.change(Account, Account.ref(account_id),
                                   lambda a: replace(a, alias=None),
                                   lambda: NoSuchEntity(f"The account {account_id} cannot be "
                                                        "found."))
        with contextlib.suppress(NotFound):  # already gone: nothing else holds it
            await self.store.delete(Ref(ALIAS, GLOBAL, alias))

    # -- users ----------------------------------------------------------------------------------

    async def create_user(self, account_id: str, name: str, *, path: str = "/",
                          tags: tuple[Tag, ...] = (),
                          boundary: PolicyRef | None = None) -> User:
        check_tags(tags)
        user = User(
            account_id=account_id,
            name=name,
            path=path,
            user_id=ids.new_unique_id(ids.USER_ID_PREFIX),
            created=self.clock.now(),
            tags=tags,
            boundary=boundary,
        )
        try:
            await self.store.create(user.record())
        except AlreadyExists:
            raise EntityAlreadyExists(f"User with name {name} already exists.") from None
        return user

    async def get_user(self, account_id: str, name: str) -> User:
        return await self.entities.get(User, User.ref(account_id, name),
                                       lambda: missing_user(name))

    async def find_user(self, user_id: str) -> User | None:
        return await self.entities.find(User, USER, user_id)

    async def change_user(self, account_id: str, user_name: str, **fields: object) -> User:
        return await self.entities.change(User, User.ref(account_id, user_name),
                                          lambda u: replace(u, **fields),  # type: ignore
                                          lambda: missing_user(user_name))

    async def update_user(self, account_id: str, name: str, *, path: str | None = None,
                          new_name: str | None = None, tags: tuple[Tag, ...] | None = None
                          ) -> User:
        if new_name is not None and name_key(new_name) != name_key(name):
            raise InvalidInput("Renaming a user is not supported by this broker: create a new "
                               "user and move its keys and memberships.")
        if tags is not None:
            check_tags(tags)
        current = await self.get_user(account_id, name)
        return await self.change_user(account_id, name, path=path or current.path,
                                      name=new_name or current.name,
                                      tags=current.tags if tags is None else tags)

    async def list_users(self, account_id: str, *, path_prefix: str = "/",
                         marker: str | None = None, max_items: int | None = 100) -> Page:
        return await self.entities.page(User, USER, account_id, marker, max_items,
                                        lambda u: u.path.startswith(path_prefix))

    async def delete_user(self, account_id: str, name: str) -> None:
        def unused(record: Record) -> None:
            user = User.of(record)
            if user.login is not None:
                raise DeleteConflict("Cannot delete entity, must delete login profile first.")
            if user.inline:
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            if user.attached:
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if user.groups:
                raise DeleteConflict("Cannot delete entity, must remove users from group first.")

        user = await self.get_user(account_id, name)
        if await self.mfa.owned(account_id, user.name):
            raise DeleteConflict("Cannot delete entity, must remove MFA device first.")
        if user.groups:
            # Forget groups deleted since the user joined them: they hold nobody any more.
            live = {g.group_id for g in await self.groups.of_user(user)}
            if live != set(user.groups):
                await self.entities.change(
                    User, User.ref(account_id, name),
                    lambda u: replace(u, groups=tuple(g for g in u.groups if g in live)),
                    lambda: missing_user(name))
        try:
            await self.store.delete(User.ref(account_id, name), blocked_by=(ACCESS_KEY,),
                                    check=unused)
        except NotFound:
            raise missing_user(name) from None
        except Conflict:
            raise DeleteConflict("Cannot delete entity, must delete access keys first.") from None

    # -- access keys ----------------------------------------------------------------------------

    async def create_access_key(self, account_id: str, user_name: str | None) -> NewAccessKey:
        if user_name is not None:
            user_name = (await self.get_user(account_id, user_name)).name
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
                raise missing_user(user_name or "root") from None
            return NewAccessKey(key, secret)
        raise EntityAlreadyExists("Could not allocate a unique access key id; try again.")

    async def list_access_keys(self, account_id: str, user_name: str | None, *,
                               marker: str | None = None, max_items: int | None = 100) -> Page:
        owner = User.ref(account_id, user_name) if user_name else RootUser.ref(account_id)
        if user_name is not None:
            await self.get_user(account_id, user_name)
        keys = [AccessKey.of(r) for r in
                await self.store.list(ACCESS_KEY, account_id, parent=owner)]
        return paginate(keys, lambda k: k.access_key_id, marker, max_items)

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
        return await self.entities.change(
            AccessKey, AccessKey.ref(account_id, access_key_id),
            lambda k: replace(k, status=status),
            lambda: NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found."))

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
        return await self.entities.find(AccessKey, ACCESS_KEY, access_key_id)

    def secret_of(self, key: AccessKey) -> str:
        blob = base64.b64decode(key.sealed_secret)
        return self.keyring.unseal(blob, purpose=SECRET_PURPOSE, aad=key.access_key_id).decode()

    async def record_last_used(self, account_id: str, access_key_id: str,
                               used: LastUsed) -> None:
        def newest(key: AccessKey) -> AccessKey:
            if key.last_used is not None and key.last_used.at >= used.at:
                return key
            return replace(key, last_used=used)

        try:
            await self.entities.change(AccessKey, AccessKey.ref(account_id, access_key_id),
                                       newest, lambda: NoSuchEntity(access_key_id))
        except NoSuchEntity:
            return  # deleted since it was used: nothing to record

    async def reseal_secrets(self) -> int:
        """Seal every stored secret (access-key secrets, SAML providers' private keys, MFA
        seeds, the broker's own SAML key) with the sealing key, so older keys can retire."""
        sealing = self.keyring.sealing.id
        count = await sp.reseal(self.store, self.keyring)
        for account in await self.list_accounts():
            count += await self.saml_providers.reseal(account.id)
            count += await self.mfa.reseal(account.id)
            for record in await self.store.list(ACCESS_KEY, account.id):
                key = AccessKey.of(record)
                if self.keyring.key_id_of(base64.b64decode(key.sealed_secret)) == sealing:
                    continue
                secret = self.secret_of(key)

                def reseal(current: AccessKey, secret: str = secret) -> AccessKey:
                    sealed = self._seal_secret(current.access_key_id, secret)
                    return replace(current, sealed_secret=sealed)

                gone = NoSuchEntity(record.key)
                await self.entities.change(AccessKey, record.ref, reseal,
                                           lambda gone=gone: gone)  # type: ignore[misc]
                count += 1
        return count

    async def secrets_sealed_with(self, key_id: str) -> int:
        count = await sp.sealed_with(self.store, self.keyring, key_id)
        for account in await self.list_accounts():
            count += await self.saml_providers.sealed_with(account.id, key_id)
            count += await self.mfa.sealed_with(account.id, key_id)
            for record in await self.store.list(ACCESS_KEY, account.id):
                sealed = base64.b64decode(AccessKey.of(record).sealed_secret)
                if self.keyring.key_id_of(sealed) == key_id:
                    count += 1
        return count

    def _seal_secret(self, access_key_id: str, secret: str) -> str:
        blob = self.keyring.seal(secret.encode(), purpose=SECRET_PURPOSE, aad=access_key_id)
        return base64.b64encode(blob).decode("ascii")
