"""IAM's long-term entities and how each is kept as a store Record.

Names of IAM entities are unique within an account regardless of case, as on AWS: a record's key
is the case-folded name, and the name as created is kept in its data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.aws import arn
from broker.store.base import GLOBAL, Record, Ref

ACCOUNT = "account"
ROOT = "root"
USER = "user"
ACCESS_KEY = "access_key"

ACTIVE = "Active"
INACTIVE = "Inactive"
MAX_ACCESS_KEYS = 2


def name_key(name: str) -> str:
    return name.lower()


def _time(value: datetime) -> str:
    return value.isoformat()


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Tag:
    key: str
    value: str

    def wire(self) -> dict[str, str]:
        return {"Key": self.key, "Value": self.value}


def tags_from(data: list[dict[str, str]]) -> tuple[Tag, ...]:
    return tuple(Tag(t["Key"], t["Value"]) for t in data)


@dataclass(frozen=True)
class Account:
    id: str
    created: datetime
    alias: str | None = None

    def record(self) -> Record:
        return Record(
            kind=ACCOUNT,
            account=GLOBAL,
            key=self.id,
            lookup=self.alias,
            data={"id": self.id, "created": _time(self.created), "alias": self.alias},
        )

    @classmethod
    def of(cls, record: Record) -> Account:
        d = record.data
        return cls(id=d["id"], created=_parse_time(d["created"]), alias=d.get("alias"))

    @staticmethod
    def ref(account_id: str) -> Ref:
        return Ref(ACCOUNT, GLOBAL, account_id)


@dataclass(frozen=True)
class RootUser:
    """The account's root user: it owns root access keys (and, later, a password and MFA)."""

    account_id: str
    created: datetime

    @property
    def arn(self) -> str:
        return arn.root(self.account_id)

    def record(self) -> Record:
        return Record(kind=ROOT, account=self.account_id, key=ROOT,
                      data={"created": _time(self.created)})

    @staticmethod
    def ref(account_id: str) -> Ref:
        return Ref(ROOT, account_id, ROOT)


@dataclass(frozen=True)
class User:
    account_id: str
    name: str
    path: str
    user_id: str
    created: datetime
    tags: tuple[Tag, ...] = ()
    permissions_boundary: str | None = None

    @property
    def arn(self) -> str:
        return arn.user(self.account_id, self.path, self.name)

    def record(self) -> Record:
        return Record(
            kind=USER,
            account=self.account_id,
            key=name_key(self.name),
            lookup=self.user_id,
            data=self.data(),
        )

    def data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "user_id": self.user_id,
            "created": _time(self.created),
            "tags": [t.wire() for t in self.tags],
            "permissions_boundary": self.permissions_boundary,
        }

    @classmethod
    def of(cls, record: Record) -> User:
        d = record.data
        return cls(
            account_id=record.account,
            name=d["name"],
            path=d["path"],
            user_id=d["user_id"],
            created=_parse_time(d["created"]),
            tags=tags_from(d.get("tags", [])),
            permissions_boundary=d.get("permissions_boundary"),
        )

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
        if listing:
            return out
        if self.permissions_boundary:
            out["PermissionsBoundary"] = {
                "PermissionsBoundaryType": "Policy",
                "PermissionsBoundaryArn": self.permissions_boundary,
            }
        if self.tags:
            out["Tags"] = [t.wire() for t in self.tags]
        return out


@dataclass(frozen=True)
class LastUsed:
    at: datetime
    service: str
    region: str


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
        return Record(
            kind=ACCESS_KEY,
            account=self.account_id,
            key=self.access_key_id,
            parent=self.owner,
            lookup=self.access_key_id,
            data=self.data(),
        )

    def data(self) -> dict[str, Any]:
        used = self.last_used
        return {
            "access_key_id": self.access_key_id,
            "user_name": self.user_name,
            "status": self.status,
            "created": _time(self.created),
            "sealed_secret": self.sealed_secret,
            "last_used": None if used is None else {
                "at": _time(used.at), "service": used.service, "region": used.region,
            },
        }

    @classmethod
    def of(cls, record: Record) -> AccessKey:
        d = record.data
        used = d.get("last_used")
        return cls(
            account_id=record.account,
            access_key_id=d["access_key_id"],
            user_name=d.get("user_name"),
            status=d["status"],
            created=_parse_time(d["created"]),
            sealed_secret=d["sealed_secret"],
            last_used=None if not used else LastUsed(
                _parse_time(used["at"]), used["service"], used["region"]
            ),
        )

    @staticmethod
    def ref(account_id: str, access_key_id: str) -> Ref:
        return Ref(ACCESS_KEY, account_id, access_key_id)
