"""Groups and their members. A user's groups are kept, by group id, in the user's record."""

from __future__ import annotations

from dataclasses import replace

from broker.aws import ids
from broker.aws.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import GROUP, USER, Group, User
from broker.iam.records import Entities, Page, missing_group, missing_user, paginate
from broker.store.base import Record

MAX_GROUPS_PER_USER = 10


class Groups:
    def __init__(self, entities: Entities, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    async def create(self, account: str, name: str, path: str = "/") -> Group:
        group = Group(account_id=account, name=name, path=path,
                      group_id=ids.new_unique_id(ids.GROUP_ID_PREFIX), created=self._clock.now())
        try:
            await self._entities.store.create(group.record())
        except AlreadyExists:
            raise EntityAlreadyExists(f"Group with name {name} already exists.") from None
        return group

    async def get(self, account: str, name: str) -> Group:
        return await self._entities.get(Group, Group.ref(account, name),
                                        lambda: missing_group(name))

    async def members(self, account: str, name: str, *, marker: str | None = None,
                      max_items: int | None = None) -> tuple[Group, Page]:
        group = await self.get(account, name)
        users = [u for u in await self._entities.all(User, USER, account)
                 if group.group_id in u.groups]
        return group, paginate(users, lambda u: u.name.lower(), marker, max_items)

    async def listing(self, account: str, *, path_prefix: str = "/", marker: str | None = None,
                   max_items: int | None = None) -> Page:
        groups = [g for g in await self._entities.all(Group, GROUP, account)
                  if g.path.startswith(path_prefix)]
        return paginate(groups, lambda g: g.name.lower(), marker, max_items)

    async def update(self, account: str, name: str, *, new_path: str | None = None,
                     new_name: str | None = None) -> Group:
        if new_name is not None and new_name.lower() != name.lower():
            raise InvalidInput("Renaming a group is not supported by this broker: create a new "
                               "group and move its members.")
        return await self._entities.change(
            Group, Group.ref(account, name),
            lambda g: replace(g, path=new_path or g.path, name=new_name or g.name),
            lambda: missing_group(name))

    async def delete(self, account: str, name: str) -> None:
        group, members = await self.members(account, name, max_items=1)
        if members.items:
            raise DeleteConflict("Cannot delete entity, must remove users from group first.")

        def unused(record: Record) -> None:
            current = Group.of(record)
            if current.attached:
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if current.inline:
                raise DeleteConflict("Cannot delete entity, must delete policies first.")

        try:
            await self._entities.store.delete(Group.ref(account, group.name), check=unused)
        except NotFound:
            raise missing_group(name) from None

    async def add_user(self, account: str, group_name: str, user_name: str) -> None:
        group = await self.get(account, group_name)

        def join(user: User) -> User:
            if group.group_id in user.groups:
                return user
            if len(user.groups) >= MAX_GROUPS_PER_USER:
                raise LimitExceeded(f"Cannot exceed quota for GroupsPerUser: "
                                    f"{MAX_GROUPS_PER_USER}")
            return replace(user, groups=(*user.groups, group.group_id))

        await self._entities.change(User, User.ref(account, user_name), join,
                                    lambda: missing_user(user_name))

    async def remove_user(self, account: str, group_name: str, user_name: str) -> None:
        group = await self.get(account, group_name)

        def leave(user: User) -> User:
            if group.group_id not in user.groups:
                raise NoSuchEntity(f"The user with name {user_name} is not in the group with "
                                   f"name {group_name}.")
            return replace(user, groups=tuple(g for g in user.groups if g != group.group_id))

        await self._entities.change(User, User.ref(account, user_name), leave,
                                    lambda: missing_user(user_name))

    async def of_user(self, user: User) -> list[Group]:
        """The user's groups that still exist (a group deleted meanwhile is not one)."""
        found = []
        for group_id in user.groups:
            group = await self._entities.find(Group, GROUP, group_id)
            if group is not None and group.account_id == user.account_id:
                found.append(group)
        return found
