"""Declarative IAM: a TOML file of what should exist; ``apply`` makes it so, ``check`` validates.

    [[accounts]]
    id = "123456789012"

      [[accounts.users]]
      name = "alice"
      path = "/engineering/"          # default "/"
      tags = { team = "platform" }    # default none

``apply`` is idempotent: it creates what is missing, updates what differs (path, tags) and prints
one line per entity (``+`` created, ``~`` changed, ``=`` unchanged). It never deletes what the
file does not mention. Every value is validated exactly as the IAM API validates it, and the
whole file is validated before anything is changed. Groups, roles, policies and identity
providers join this file with the issues that bring them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.aws import ids, shapes
from broker.aws.errors import AwsError, NoSuchEntity
from broker.errors import ConfigError
from broker.iam.entities import Tag
from broker.iam.model import CreateUserRequest
from broker.iam.records import check_tags
from broker.iam.service import IamService
from broker.settings import read_toml


@dataclass(frozen=True)
class UserSpec:
    name: str
    path: str
    tags: tuple[Tag, ...]


@dataclass(frozen=True)
class AccountSpec:
    id: str
    users: tuple[UserSpec, ...]


@dataclass(frozen=True)
class Plan:
    accounts: tuple[AccountSpec, ...]


_ACCOUNT_KEYS = {"id", "users"}
_USER_KEYS = {"name", "path", "tags"}


def load(path: Path) -> Plan:
    """Read and validate a declarative file. ConfigError names the first fault and where."""
    doc = read_toml(path, "")
    unknown = set(doc) - {"accounts"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s): {', '.join(sorted(unknown))} "
                          "(this broker manages accounts.users)")
    accounts = []
    seen_accounts: set[str] = set()
    for i, raw in enumerate(_list(doc.get("accounts", []), f"{path}: accounts")):
        where = f"{path}: accounts[{i}]"
        _keys(raw, _ACCOUNT_KEYS, where)
        account_id = raw.get("id")
        if not isinstance(account_id, str) or not ids.ACCOUNT_ID.fullmatch(account_id):
            raise ConfigError(f"{where}.id: must be a 12-digit account id in quotes")
        if account_id in seen_accounts:
            raise ConfigError(f"{where}.id: account {account_id} is listed twice")
        seen_accounts.add(account_id)
        users = []
        seen_users: set[str] = set()
        for j, user in enumerate(_list(raw.get("users", []), f"{where}.users")):
            spec = _user(user, f"{where}.users[{j}]")
            if spec.name.lower() in seen_users:
                raise ConfigError(f"{where}.users[{j}]: user {spec.name} is listed twice")
            seen_users.add(spec.name.lower())
            users.append(spec)
        accounts.append(AccountSpec(account_id, tuple(users)))
    return Plan(tuple(accounts))


def _user(raw: Any, where: str) -> UserSpec:
    _keys(raw, _USER_KEYS, where)
    name, path, tags = raw.get("name"), raw.get("path", "/"), raw.get("tags", {})
    if not isinstance(name, str) or not isinstance(path, str):
        raise ConfigError(f"{where}: name and path must be strings")
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ConfigError(f"{where}.tags: must be a table of string values")
    flat = {"UserName": name, "Path": path}
    for n, (key, value) in enumerate(tags.items(), 1):
        flat[f"Tags.member.{n}.Key"] = key
        flat[f"Tags.member.{n}.Value"] = value
    spec = UserSpec(name, path, tuple(Tag(k, v) for k, v in tags.items()))
    try:
        shapes.parse(CreateUserRequest, flat)
        check_tags(spec.tags)
    except AwsError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return spec


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array of tables ([[...]])")
    return value


def _keys(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")


async def apply(plan: Plan, iam: IamService) -> list[str]:
    """Make the store match the plan. Returns one line per entity, in the file's order."""
    lines = []
    for account in plan.accounts:
        await iam.get_account(account.id)  # NoSuchEntity if it was never created
    for account in plan.accounts:
        for spec in account.users:
            lines.append(await _apply_user(iam, account.id, spec))
    return lines


async def _apply_user(iam: IamService, account_id: str, spec: UserSpec) -> str:
    label = f"user {spec.name} ({account_id})"
    try:
        current = await iam.get_user(account_id, spec.name)
    except NoSuchEntity:
        await iam.create_user(account_id, spec.name, path=spec.path, tags=spec.tags)
        return f"+ {label}"
    changes = []
    if current.path != spec.path:
        changes.append(f"path {current.path} -> {spec.path}")
    if current.tags != spec.tags:
        changes.append("tags")
    if not changes:
        return f"= {label}"
    await iam.update_user(account_id, spec.name, path=spec.path, tags=spec.tags)
    return f"~ {label}: {', '.join(changes)}"
