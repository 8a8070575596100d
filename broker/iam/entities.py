"""IAM's long-term entities and how each is kept as a store Record.

Names of IAM entities are unique within an account regardless of case, as on AWS: a record's key
is the case-folded name, and the name as created is kept in its data. Entities refer to each
other by unique id as well as by name or ARN (a user's groups, the managed policies attached to
a user, group or role), so that a reference left behind by a deleted entity never reaches a new
one created under the same name.

Each entity is a frozen dataclass; ``encode`` and ``decode`` turn one into the JSON document of
its record and back, by the types of its fields.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from broker.aws import arn
from broker.store.base import GLOBAL, Record, Ref

ACCOUNT = "account"
ALIAS = "alias"
ROOT_EMAIL = "root_email"
ROOT = "root"
USER = "user"
ACCESS_KEY = "access_key"
GROUP = "group"
ROLE = "role"
POLICY = "policy"
PASSWORD_POLICY = "password_policy"  # noqa: S105 (a record kind)
SAML_PROVIDER = "saml_provider"
OIDC_PROVIDER = "oidc_provider"
MFA_DEVICE = "mfa_device"
SECURITY_KEY = "security_key"

ACTIVE = "Active"
INACTIVE = "Inactive"
MAX_ACCESS_KEYS = 2

T = TypeVar("T")


def name_key(name: str) -> str:
    return name.lower()


# -- the pieces entities are made of ------------------------------------------------------------


@dataclass(frozen=True)
class Tag:
    key: str
    value: str

    def wire(self) -> dict[str, str]:
        return {"Key": self.key, "Value": self.value}


def sorted_tags(tags: tuple[Tag, ...]) -> list[dict[str, str]]:
    """Tags as the answers that sort them list them: by key."""
    return [t.wire() for t in sorted(tags, key=lambda t: t.key)]


def tags_from(data: list[dict[str, str]]) -> tuple[Tag, ...]:
    return tuple(Tag(t["Key"], t["Value"]) for t in data)


@dataclass(frozen=True)
class PolicyRef:
    """A managed policy, by ARN and by the unique id it had when it was attached."""

    arn: str
    id: str

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def wire(self) -> dict[str, str]:
        return {"PolicyName": self.name, "PolicyArn": self.arn}


@dataclass(frozen=True)
class Inline:
    """An inline policy: a name and the document as it was put."""

    name: str
    document: str


@dataclass(frozen=True)
class LastUsed:
    at: datetime
    service: str
    region: str


@dataclass(frozen=True)
class LoginProfile:
    password_hash: str  # argon2; never the password
    created: datetime
    reset_required: bool = False
    changed: datetime | None = None  # the password's last change (None: since created)
    last_used: datetime | None = None  # the last console sign-in with it
    history: tuple[str, ...] = ()  # earlier passwords' hashes, newest first (reuse prevention)

    @property
    def password_changed(self) -> datetime:
        return self.changed or self.created


# -- accounts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: str
    created: datetime
    alias: str | None = None

    def record(self) -> Record:
        return Record(kind=ACCOUNT, account=GLOBAL, key=self.id, data=encode(self))

    @classmethod
    def of(cls, record: Record) -> Account:
        return decode(cls, record.data)

    @staticmethod
    def ref(account_id: str) -> Ref:
        return Ref(ACCOUNT, GLOBAL, account_id)


@dataclass(frozen=True)
class RootUser:
    """The account's root user: it owns root access keys, MFA devices and, when an
    administrator set one, an email address (unique among accounts) and a password (argon2;
    without one, root console sign-in is off)."""

    account_id: str
    created: datetime
    email: str | None = None
    password_hash: str | None = None
    password_changed: datetime | None = None
    password_last_used: datetime | None = None

    @property
    def arn(self) -> str:
        return arn.root(self.account_id)

    def record(self) -> Record:
        return Record(kind=ROOT, account=self.account_id, key=ROOT, data=encode(self))

    @staticmethod
    def ref(account_id: str) -> Ref:
        return Ref(ROOT, account_id, ROOT)


@dataclass(frozen=True)
class PasswordPolicy:
    minimum_length: int = 6  # the API's default when none is given
    require_symbols: bool = False
    require_numbers: bool = False
    require_uppercase: bool = False
    require_lowercase: bool = False
    allow_users_to_change: bool = False
    max_age: int | None = None
    reuse_prevention: int | None = None
    hard_expiry: bool = False

    @staticmethod
    def ref(account_id: str) -> Ref:
        return Ref(PASSWORD_POLICY, account_id, "policy")


# -- principals and their policies --------------------------------------------------------------


@dataclass(frozen=True)
class User:
    account_id: str
    name: str
    path: str
    user_id: str
    created: datetime
    tags: tuple[Tag, ...] = ()
    boundary: PolicyRef | None = None
    attached: tuple[PolicyRef, ...] = ()
    inline: tuple[Inline, ...] = ()
    groups: tuple[str, ...] = ()  # group ids
    login: LoginProfile | None = None

    kind = USER

    @property
    def arn(self) -> str:
        return arn.user(self.account_id, self.path, self.name)

    def record(self) -> Record:
        return Record(kind=USER, account=self.account_id, key=name_key(self.name),
                      lookup=self.user_id, data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> User:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(USER, account_id, name_key(name))

    def wire(self, *, listing: bool = False) -> dict[str, Any]:
        """The User shape of IAM's responses. Listings leave out the permissions boundary and
        the tags, as AWS's do (GetUser shows them)."""
        out: dict[str, Any] = {
            "Path": self.path,
            "UserName": self.name,
            "UserId": self.user_id,
            "Arn": self.arn,
            "CreateDate": self.created,
        }
        if self.login is not None and self.login.last_used is not None:
            out["PasswordLastUsed"] = self.login.last_used
        if listing:
            return out
        if self.boundary is not None:
            out["PermissionsBoundary"] = boundary_wire(self.boundary)
        if self.tags:
            out["Tags"] = [t.wire() for t in self.tags]
        return out


@dataclass(frozen=True)
class Group:
    account_id: str
    name: str
    path: str
    group_id: str
    created: datetime
    attached: tuple[PolicyRef, ...] = ()
    inline: tuple[Inline, ...] = ()

    kind = GROUP

    @property
    def arn(self) -> str:
        return arn.group(self.account_id, self.path, self.name)

    def record(self) -> Record:
        return Record(kind=GROUP, account=self.account_id, key=name_key(self.name),
                      lookup=self.group_id, data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> Group:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(GROUP, account_id, name_key(name))

    def wire(self) -> dict[str, Any]:
        return {"Path": self.path, "GroupName": self.name, "GroupId": self.group_id,
                "Arn": self.arn, "CreateDate": self.created}


@dataclass(frozen=True)
class Role:
    account_id: str
    name: str
    path: str
    role_id: str
    created: datetime
    trust: str  # the trust policy, as given
    # The user and role ARNs it names, each with the unique id it had when the trust policy
    # was saved: the policy names that identity, not a later one of the same name.
    trust_ids: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    max_session: int = 3600
    tags: tuple[Tag, ...] = ()
    boundary: PolicyRef | None = None
    attached: tuple[PolicyRef, ...] = ()
    inline: tuple[Inline, ...] = ()
    last_used: LastUsed | None = None

    kind = ROLE

    # Worked out once per role object (a role is kept by the IAM cache; every assume names
    # its ARN several times).
    @functools.cached_property
    def arn(self) -> str:
        return arn.role(self.account_id, self.path, self.name)

    def record(self) -> Record:
        return Record(kind=ROLE, account=self.account_id, key=name_key(self.name),
                      lookup=self.role_id, data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> Role:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(ROLE, account_id, name_key(name))

    def wire(self, *, listing: bool = False) -> dict[str, Any]:
        from urllib.parse import quote

        out: dict[str, Any] = {
            "Path": self.path,
            "RoleName": self.name,
            "RoleId": self.role_id,
            "Arn": self.arn,
            "CreateDate": self.created,
            "AssumeRolePolicyDocument": quote(self.trust, safe=""),
            "Description": self.description,
            "MaxSessionDuration": self.max_session,
        }
        if listing:
            return out
        if self.boundary is not None:
            out["PermissionsBoundary"] = boundary_wire(self.boundary)
        if self.tags:
            out["Tags"] = [t.wire() for t in self.tags]
        used = self.last_used
        out["RoleLastUsed"] = {} if used is None else {"LastUsedDate": used.at,
                                                       "Region": used.region}
        return out


def boundary_wire(ref: PolicyRef) -> dict[str, str]:
    return {"PermissionsBoundaryType": "PermissionsBoundaryPolicy",
            "PermissionsBoundaryArn": ref.arn}


Principal = User | Group | Role


@dataclass(frozen=True)
class PolicyVersion:
    id: str  # "v1", "v2", ...
    document: str
    created: datetime


@dataclass(frozen=True)
class ManagedPolicy:
    account_id: str  # "aws" for AWS managed policies
    name: str
    path: str
    policy_id: str
    created: datetime
    updated: datetime
    default_version: str
    versions: tuple[PolicyVersion, ...]
    next_version: int = 2
    description: str | None = None
    tags: tuple[Tag, ...] = ()

    kind = POLICY

    @property
    def arn(self) -> str:
        return arn.policy(self.account_id, self.path, self.name)

    @property
    def policy_ref(self) -> PolicyRef:
        return PolicyRef(self.arn, self.policy_id)

    def version(self, version_id: str) -> PolicyVersion | None:
        return next((v for v in self.versions if v.id == version_id), None)

    @property
    def document(self) -> str:
        found = self.version(self.default_version)
        assert found is not None
        return found.document

    def record(self) -> Record:
        return Record(kind=POLICY, account=self.account_id, key=name_key(self.name),
                      lookup=self.policy_id, data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> ManagedPolicy:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(POLICY, account_id, name_key(name))

    def wire(self, attachments: int | None = None, boundaries: int = 0, *,
             listing: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "PolicyName": self.name,
            "PolicyId": self.policy_id,
            "Arn": self.arn,
            "Path": self.path,
            "DefaultVersionId": self.default_version,
            "AttachmentCount": attachments,
            "PermissionsBoundaryUsageCount": boundaries if attachments is not None else None,
            "IsAttachable": True,
            "Description": None if listing else self.description,
            "CreateDate": self.created,
            "UpdateDate": self.updated,
        }
        if self.tags and not listing:
            out["Tags"] = [t.wire() for t in self.tags]
        return out


# -- access keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessKey:
    account_id: str
    access_key_id: str
    user_name: str | None  # None: the root user's key
    status: str
    created: datetime
    sealed_secret: str  # base64 of the keyring-sealed secret; never the secret itself
    last_used: LastUsed | None = None

    @property
    def owner(self) -> Ref:
        if self.user_name is None:
            return RootUser.ref(self.account_id)
        return User.ref(self.account_id, self.user_name)

    @property
    def owner_name(self) -> str:
        return self.user_name if self.user_name is not None else "root"

    def record(self) -> Record:
        return Record(kind=ACCESS_KEY, account=self.account_id, key=self.access_key_id,
                      parent=self.owner, lookup=self.access_key_id,
                      data=encode(self, skip=("account_id",)))

    def data(self) -> dict[str, Any]:
        return encode(self, skip=("account_id",))

    @classmethod
    def of(cls, record: Record) -> AccessKey:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, access_key_id: str) -> Ref:
        return Ref(ACCESS_KEY, account_id, access_key_id)


# -- MFA devices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MfaDevice:
    """A virtual (TOTP) MFA device: made unassigned, enabled for one user or the root user."""

    account_id: str
    name: str
    path: str
    created: datetime
    sealed_seed: str  # base64 of the keyring-sealed Base32 seed; never the seed itself
    user_name: str | None = None  # the user it is enabled for (None: nobody, or root)
    root: bool = False  # enabled for the account's root user
    enabled: datetime | None = None
    drift: int = 0  # time steps the device's clock is ahead (ResyncMFADevice)
    tags: tuple[Tag, ...] = ()

    kind = MFA_DEVICE

    @property
    def serial(self) -> str:
        return arn.mfa(self.account_id, self.path, self.name)

    @property
    def assigned(self) -> bool:
        return self.enabled is not None

    def owned_by(self, user_name: str | None) -> bool:
        """Enabled for this user (None: the root user)."""
        if not self.assigned:
            return False
        if user_name is None:
            return self.root
        return self.user_name is not None and name_key(self.user_name) == name_key(user_name)

    def record(self) -> Record:
        return Record(kind=MFA_DEVICE, account=self.account_id, key=name_key(self.name),
                      data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> MfaDevice:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(MFA_DEVICE, account_id, name_key(name))


@dataclass(frozen=True)
class SecurityKey:
    """A FIDO2 / WebAuthn security key or passkey, registered from the console for one user
    or the root user: ListMFADevices lists it with its credential id as serial number."""

    account_id: str
    credential_id: str  # base64url, unpadded, as the browser gives it: the serial number
    name: str
    public_key: str  # base64 of the COSE public key
    sign_count: int
    created: datetime
    user_name: str | None = None  # None: the root user
    aaguid: str = ""

    kind = SECURITY_KEY

    @property
    def serial(self) -> str:
        return self.credential_id

    @property
    def enabled(self) -> datetime:
        return self.created

    def owned_by(self, user_name: str | None) -> bool:
        if user_name is None:
            return self.user_name is None
        return self.user_name is not None and name_key(self.user_name) == name_key(user_name)

    def record(self) -> Record:
        return Record(kind=SECURITY_KEY, account=self.account_id, key=self.credential_id,
                      data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> SecurityKey:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, credential_id: str) -> Ref:
        return Ref(SECURITY_KEY, account_id, credential_id)


# -- identity providers -------------------------------------------------------------------------

ALLOWED = "Allowed"
REQUIRED = "Required"


@dataclass(frozen=True)
class SamlKey:
    """A private key that decrypts a SAML provider's encrypted assertions."""

    key_id: str  # AWS's KeyId: 26 characters of [A-Z2-7]
    timestamp: datetime  # when it was added
    sealed_pem: str  # base64 of the keyring-sealed PKCS#8 PEM; never the key itself


@dataclass(frozen=True)
class SamlProvider:
    """A SAML 2.0 identity provider (CreateSAMLProvider): its metadata as uploaded, what the
    broker read from it, and the private keys that decrypt its assertions."""

    account_id: str
    name: str
    uuid: str  # SAMLProviderUUID
    metadata: str  # the document, as given
    entity_id: str
    signing_certificates: tuple[str, ...]  # base64 of each certificate's DER
    sso_redirect_url: str | None
    sso_post_url: str | None
    create_date: datetime
    valid_until: datetime  # the metadata's validUntil, else a hundred years after creation
    tags: tuple[Tag, ...] = ()
    assertion_encryption_mode: str = ALLOWED
    private_keys: tuple[SamlKey, ...] = ()

    kind = SAML_PROVIDER

    @property
    def arn(self) -> str:
        return arn.saml_provider(self.account_id, self.name)

    def record(self) -> Record:
        # The account's root record anchors the per-account quota (QuotaExceeded past 100).
        return Record(kind=SAML_PROVIDER, account=self.account_id, key=name_key(self.name),
                      parent=RootUser.ref(self.account_id), lookup=self.uuid,
                      data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> SamlProvider:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, name: str) -> Ref:
        return Ref(SAML_PROVIDER, account_id, name_key(name))

    def wire(self, *, listing: bool = False) -> dict[str, Any]:
        """GetSAMLProvider's answer (ListSAMLProviders': ARN and dates). Tags sorted by key, as
        AWS lists them; the private keys by id and time, never the keys."""
        if listing:
            return {"Arn": self.arn, "ValidUntil": self.valid_until,
                    "CreateDate": self.create_date}
        return {
            "SAMLProviderUUID": self.uuid,
            "SAMLMetadataDocument": self.metadata,
            "CreateDate": self.create_date,
            "ValidUntil": self.valid_until,
            "Tags": sorted_tags(self.tags),
            "AssertionEncryptionMode": self.assertion_encryption_mode,
            "PrivateKeyList": [{"KeyId": k.key_id, "Timestamp": k.timestamp}
                               for k in self.private_keys],
        }


def oidc_identifier(url: str) -> str:
    """An OIDC provider's URL without its scheme: what its ARN ends with, and its
    trust-policy key prefix (``IDENTIFIER:aud``)."""
    return url.split("://", 1)[1] if "://" in url else url


@dataclass(frozen=True)
class OidcProvider:
    """An OpenID Connect identity provider (CreateOpenIDConnectProvider): the issuer URL its
    tokens carry as ``iss``, the client ids they may be issued to, the thumbprints of the TLS
    certificates the broker trusts for it, and optionally a static JWKS (then nothing is ever
    fetched from the issuer)."""

    account_id: str
    url: str  # as registered, with its scheme: exactly the tokens' iss
    uuid: str
    create_date: datetime
    client_ids: tuple[str, ...] = ()
    thumbprints: tuple[str, ...] = ()
    tags: tuple[Tag, ...] = ()
    static_jwks: str | None = None

    kind = OIDC_PROVIDER

    # Worked out once per provider object (a provider is kept by the IAM cache and used by
    # every AssumeRoleWithWebIdentity that names it).
    @functools.cached_property
    def identifier(self) -> str:
        return oidc_identifier(self.url)

    @functools.cached_property
    def arn(self) -> str:
        return arn.oidc_provider(self.account_id, self.identifier)

    def record(self) -> Record:
        return Record(kind=OIDC_PROVIDER, account=self.account_id,
                      key=oidc_key(self.identifier), parent=RootUser.ref(self.account_id),
                      lookup=self.uuid, data=encode(self, skip=("account_id",)))

    @classmethod
    def of(cls, record: Record) -> OidcProvider:
        return decode(cls, {**record.data, "account_id": record.account})

    @staticmethod
    def ref(account_id: str, identifier: str) -> Ref:
        return Ref(OIDC_PROVIDER, account_id, oidc_key(identifier))

    def wire(self) -> dict[str, Any]:
        """GetOpenIDConnectProvider's answer (the URL without its scheme, as AWS gives it)."""
        return {
            "Url": self.identifier,
            "ClientIDList": list(self.client_ids),
            "ThumbprintList": list(self.thumbprints),
            "CreateDate": self.create_date,
            "Tags": sorted_tags(self.tags),
        }


def oidc_key(identifier: str) -> str:
    """One provider per URL in an account, whatever the case of its host or path."""
    return identifier.lower()


# -- the codec ----------------------------------------------------------------------------------


def encode(entity: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: _encode(getattr(entity, f.name)) for f in dataclasses.fields(entity)
            if f.name not in skip}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value)
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def decode(cls: type[T], data: Any) -> T:
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _decode(hints[f.name], data[f.name])
    return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(inner[0], value)
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        return tuple(_decode(item, v) for v in value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if dataclasses.is_dataclass(hint):
        return decode(hint, value)  # type: ignore[arg-type]
    return value

