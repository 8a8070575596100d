"""Typed access to IAM's records, shared by the IAM use cases.

``Entities`` reads and changes entities of any class in entities.py through the EntityStore,
turning a missing record into the AWS error IAM answers with; ``paginate`` gives IAM's
Marker / MaxItems paging over a listing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from broker.aws.errors import AwsError, InvalidInput, NoSuchEntity
from broker.aws.tags import DUPLICATE_KEYS, has_duplicate_keys
from broker.errors import NotFound
from broker.iam.entities import Tag, decode, encode
from broker.store.base import EntityStore, Record, Ref


class Entity(Protocol):
    account_id: str

    def record(self) -> Record: ...


E = TypeVar("E")


@dataclass(frozen=True)
class Page:
    items: list[Any]
    marker: str | None  # where the next page starts, if there is one


def missing_user(name: str) -> AwsError:
    return NoSuchEntity(f"The user with name {name} cannot be found.")


def missing_group(name: str) -> AwsError:
    return NoSuchEntity(f"The group with name {name} cannot be found.")


def missing_role(name: str) -> AwsError:
    return NoSuchEntity(f"The role with name {name} cannot be found.")


def missing_policy(arn: str) -> AwsError:
    return NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")


class Entities:
    def __init__(self, store: EntityStore) -> None:
        self.store = store

    async def get(self, cls: type[E], ref: Ref, missing: Callable[[], AwsError]) -> E:
        try:
            record = await self.store.get(ref)
        except NotFound:
            raise missing() from None
        return _entity(cls, record)

    async def find(self, cls: type[E], kind: str, lookup: str) -> E | None:
        try:
            return _entity(cls, await self.store.find(kind, lookup))
        except NotFound:
            return None

    async def change(self, cls: type[E], ref: Ref, change: Callable[[E], E],
                     missing: Callable[[], AwsError]) -> E:
        def apply(record: Record) -> dict[str, Any]:
            return encode(change(_entity(cls, record)), skip=("account_id",))

        try:
            record = await self.store.update(ref, apply)
        except NotFound:
            raise missing() from None
        return _entity(cls, record)

    async def all(self, cls: type[E], kind: str, account: str) -> list[E]:
        return [_entity(cls, r) for r in await self.store.list(kind, account)]

    async def after(self, cls: type[E], kind: str, account: str, key: str | None,
                    count: int, keep: Callable[[E], bool] = lambda _: True) -> list[E]:
        """Up to ``count`` entities that ``keep`` accepts, in order of their record keys,
        keys > ``key``: read from the store a bounded listing at a time (keyset pagination),
        so that a page costs the same at the start of a long listing as at its end. When
        ``keep`` refuses many, each further read is twice as long (up to 1,000 records), so
        that a filter matching few of many records costs few round trips."""
        found: list[E] = []
        size = count + 1
        while len(found) < count:
            chunk = await self.store.list(kind, account, after=key, limit=size)
            found += [e for e in (_entity(cls, r) for r in chunk) if keep(e)]
            if len(chunk) < size:
                break
            key = chunk[-1].key
            size = max(size, min(2 * size, 1000))
        return found[:count]

    async def page(self, cls: type[E], kind: str, account: str, marker: str | None,
                   max_items: int | None, keep: Callable[[E], bool] = lambda _: True) -> Page:
        """``paginate`` over the entities of a kind whose record key is the page's key
        (users, groups and roles: the name in lower case), reading only the page's records
        and one more."""
        limit = 100 if max_items is None else max_items
        found = await self.after(cls, kind, account, unmark(marker), limit + 1, keep)
        page = found[:limit]
        more = len(found) > limit and bool(page)
        return Page(page, mark(_key_of(page[-1])) if more else None)


def _key_of(entity: Any) -> str:
    key: str = entity.record().key
    return key


def _entity(cls: type[E], record: Record) -> E:
    return decode(cls, {**record.data, "account_id": record.account})


def paginate(items: Sequence[E], key: Callable[[E], str], marker: str | None,
             max_items: int | None) -> Page:
    """One page of ``items``, in order of ``key``, after ``marker``. Keys must be unique: a
    marker is the key of the last item shown, and the next page starts after it."""
    items = sorted(items, key=key)  # linear when they already are (as most listings are)
    after = unmark(marker)
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    limit = 100 if max_items is None else max_items
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    return Page(page, mark(key(page[-1])) if more and page else None)


def mark(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


# The keys markers point after: names, ids, ARNs and tag keys (letters, digits, spaces and
# IAM's punctuation in any script), never a control character.
_MARKED = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")


def unmark(marker: str | None) -> str | None:
    if marker is None:
        return None
    try:
        key = base64.urlsafe_b64decode(marker.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        key = ""
    if not _MARKED.fullmatch(key):
        raise InvalidInput("Invalid Marker: it is not one this service returned.")
    return key


def check_tags(tags: Sequence[Tag]) -> None:
    """IAM's rules for the tags of an entity: keys unique regardless of case, none "aws:"."""
    if has_duplicate_keys(t.key for t in tags):
        raise InvalidInput(DUPLICATE_KEYS)
    for tag in tags:
        if tag.key.lower().startswith("aws:"):
            raise InvalidInput(f"Tag key {tag.key} uses the reserved prefix 'aws:'.")


def policy_size(document: str) -> int:
    """What IAM counts against its policy size quotas: the characters that are not space."""
    return len(re.sub(r"\s", "", document))
