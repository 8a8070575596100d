"""Declarative organizations: the ``[accounts.organization]`` table of a ``broker apply`` file.

An organization is declared under its management account (broker.iam.declarative reads the
rest of the file and calls in here for this table)::

    [[accounts]]
    id = "123456789012"

      [accounts.organization]                # an organization this account manages
      ous = ["Workloads", "Workloads/Prod"]  # OUs by their path of names, at most 5 deep

      [[accounts.organization.policies]]
      name = "deny-leaving"
      type = "SERVICE_CONTROL_POLICY"        # or RESOURCE_CONTROL_POLICY
      description = "Members stay"           # default ""
      content = '''{...}'''                  # or a TOML table
      targets = ["Root", "Workloads/Prod", "210987654321"]   # Root, OU paths, account ids

      [[accounts.organization.accounts]]
      id = "210987654321"                    # a member already
      ou = "Workloads/Prod"                  # or "Root"

``read_organization`` validates the table as the Organizations API validates each value, and
``check_memberships`` the file's organizations together. Before any change ``check_organization``
refuses what the API would (an account that is not a member, a target over its quota or left
without an SCP); then ``apply_organization`` creates the organization if the account belongs to
none, enables the policy types the file's policies have, creates the OUs that are missing (an OU
is matched by its name under its parent; none is ever renamed or deleted), creates each policy
or brings its description and content to the file's (a policy is matched by its name and type),
attaches each where the file says and detaches it from everywhere else, and moves each listed
account to its OU. Accounts must already be members: ``apply`` invites no one. Policies the file
does not list, FullAWSAccess and RCPFullAWSAccess among them, keep their attachments.
Attachments are made before accounts move and detached after, so that an account is never
outside a guardrail both its old and its new place have.

The helpers that read a file's tables (``check_keys``, ``strings``, ``tables``,
``check_unique``) and ``same_document`` are defined here and used by broker.iam.declarative
too, which imports this module: this one imports nothing of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.aws import ids, shapes
from broker.aws.errors import AwsError
from broker.errors import ConfigError
from broker.organizations import model as org_model
from broker.organizations.document import (
    AWS_MANAGED,
    FULL_ACCESS,
    MAX_OU_DEPTH,
    MAX_PER_TARGET,
    POLICY_TYPES,
    RCP,
    RCP_FULL_ACCESS,
    SCP,
    Org,
    check_content,
)
from broker.organizations.service import OrganizationsService


@dataclass(frozen=True)
class OrgPolicySpec:
    name: str
    type: str  # SERVICE_CONTROL_POLICY or RESOURCE_CONTROL_POLICY
    content: str
    description: str = ""
    targets: tuple[str, ...] = ()  # "Root", OU paths of the file, account ids


@dataclass(frozen=True)
class OrganizationSpec:
    ous: tuple[str, ...] = ()  # paths of names ("Workloads/Prod"); every parent listed too
    policies: tuple[OrgPolicySpec, ...] = ()
    accounts: tuple[tuple[str, str], ...] = ()  # (member account, "Root" or an OU path)

    def members(self) -> list[str]:
        """The accounts the file names: placed, or a policy's target."""
        named = [a for a, _ in self.accounts]
        named += [t for p in self.policies for t in p.targets if ids.ACCOUNT_ID.fullmatch(t)]
        return list(dict.fromkeys(named))

    def uses(self, policy_type: str) -> bool:
        return any(p.type == policy_type for p in self.policies)


# -- reading a file's tables (broker.iam.declarative's too) -------------------------------------


def strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return value


def tables(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array of tables ([[...]])")
    return value


def check_keys(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")


def check_unique(names: list[str], where: str, kind: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ConfigError(f"{where}: {kind} {name} is listed twice")
        seen.add(name.lower())


def same_document(a: str, b: str) -> bool:
    """The same policy document, however its JSON is spaced (or the same text, if not JSON)."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b


# -- reading ------------------------------------------------------------------------------------


ROOT = "Root"  # the organization's root, as the file names it in targets and placements
_ORG_KEYS = {"ous", "policies", "accounts"}
_ORG_POLICY_KEYS = {"name", "type", "description", "content", "targets"}
_ORG_ACCOUNT_KEYS = {"id", "ou"}


def read_organization(raw: Any, where: str) -> OrganizationSpec:
    """An ``[accounts.organization]`` table, checked as the Organizations API checks each
    value; ConfigError names the first fault and where (``where`` is the table's place)."""
    check_keys(raw, _ORG_KEYS, where)
    ous = tuple(strings(raw.get("ous", []), f"{where}.ous"))
    for j, ou in enumerate(ous):
        _ou_path(ou, f"{where}.ous[{j}]")
    check_unique(list(ous), f"{where}.ous", "OU")
    for j, ou in enumerate(ous):
        parent = ou.rpartition("/")[0]
        if parent and parent not in ous:
            raise ConfigError(f"{where}.ous[{j}]: OU {ou} is under {parent}, which is not "
                              "listed (list every OU of a path)")
    policies = tuple(_org_policy(p, ous, f"{where}.policies[{j}]")
                     for j, p in enumerate(tables(raw.get("policies", []), f"{where}.policies")))
    seen: set[tuple[str, str]] = set()
    for j, policy in enumerate(policies):
        if (policy.type, policy.name) in seen:
            raise ConfigError(f"{where}.policies[{j}]: {policy.type} {policy.name} is listed "
                              "twice")
        seen.add((policy.type, policy.name))
    for policy_type in POLICY_TYPES:
        for target in {t for p in policies if p.type == policy_type for t in p.targets}:
            count = sum(1 for p in policies if p.type == policy_type and target in p.targets)
            if count > MAX_PER_TARGET:
                raise ConfigError(f"{where}.policies: {count} policies of type {policy_type} "
                                  f"are attached to {target}: {_TOO_MANY}")
    accounts: list[tuple[str, str]] = []
    for j, entry in enumerate(tables(raw.get("accounts", []), f"{where}.accounts")):
        at = f"{where}.accounts[{j}]"
        check_keys(entry, _ORG_ACCOUNT_KEYS, at)
        account, ou = entry.get("id"), entry.get("ou")
        if not isinstance(account, str) or not ids.ACCOUNT_ID.fullmatch(account):
            raise ConfigError(f"{at}.id: must be a 12-digit account id in quotes")
        if not isinstance(ou, str):
            raise ConfigError(f'{at}.ou: the account\'s place: "{ROOT}" or an OU of ous')
        _node(ou, ous, f"{at}.ou")
        if account in (a for a, _ in accounts):
            raise ConfigError(f"{at}.id: account {account} is listed twice")
        accounts.append((account, ou))
    return OrganizationSpec(ous, policies, tuple(accounts))


_TOO_MANY = ("ConstraintViolationException: You attempted to attach more policies of this type "
             f"to an entity than allowed ({MAX_PER_TARGET}).")


def _ou_path(path: str, where: str) -> None:
    names = path.split("/")
    if len(names) > MAX_OU_DEPTH:
        raise ConfigError(f"{where}: OU {path} is {len(names)} levels deep: "
                          "ConstraintViolationException: You attempted to create an OU tree "
                          f"that is too many levels deep (at most {MAX_OU_DEPTH}).")
    if names[0] == ROOT:
        raise ConfigError(f"{where}: OU {path}: a path starts below the root (Workloads/Prod, "
                          f"not {ROOT}/Workloads/Prod), and no OU there is named {ROOT}, the "
                          "file's name for the root")
    if ids.ACCOUNT_ID.fullmatch(names[0]):
        raise ConfigError(f"{where}: OU {path}: an OU below the root is not named like an "
                          "account id, which the file's targets name")
    for name in names:
        if not name:
            raise ConfigError(f"{where}: OU {path!r}: a path is OU names joined by /, each "
                              "one at least one character long")
        _validate_document(org_model.CreateOrganizationalUnitRequest,
                           {"ParentId": "r-0000", "Name": name}, where)


def _node(value: str, ous: tuple[str, ...], where: str) -> None:
    if value != ROOT and value not in ous:
        raise ConfigError(f"{where}: {value} is neither {ROOT} nor an OU of ous")


def _org_policy(raw: Any, ous: tuple[str, ...], where: str) -> OrgPolicySpec:
    check_keys(raw, _ORG_POLICY_KEYS, where)
    name, policy_type = raw.get("name"), raw.get("type")
    description = raw.get("description", "")
    if not all(isinstance(v, str) for v in (name, policy_type, description)):
        raise ConfigError(f"{where}: name, type and description must be strings")
    if policy_type not in POLICY_TYPES:
        raise ConfigError(f"{where}.type: must be {SCP} or {RCP}")
    content = raw.get("content")
    if isinstance(content, dict):
        # Compact: the quota of 5,120 characters counts white space.
        content = json.dumps(content, separators=(",", ":"))
    if not isinstance(content, str):
        raise ConfigError(f"{where}.content: a policy document is a JSON string or a table")
    _validate_document(org_model.CreatePolicyRequest, {
        "Name": name, "Description": description, "Content": content, "Type": policy_type},
        where)
    if any(p["name"] == name and p["type"] == policy_type for p in AWS_MANAGED.values()):
        raise ConfigError(f"{where}.name: {name} is an AWS managed policy, which the "
                          "organization has already: the file declares its own policies only")
    try:
        check_content(content, policy_type)
    except AwsError as exc:
        raise ConfigError(f"{where}.content: {exc.code}: {exc.message}") from None
    targets = tuple(strings(raw.get("targets", []), f"{where}.targets"))
    for target in targets:
        if not ids.ACCOUNT_ID.fullmatch(target):
            _node(target, ous, f"{where}.targets")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"{where}.targets: a target is listed twice")
    return OrgPolicySpec(name, policy_type, content, description, targets)


def check_memberships(organizations: Sequence[tuple[str, OrganizationSpec | None]],
                      path: Path) -> None:
    """The file's accounts, in its order, each with the organization it declares, if any: an
    account the file names in an organization belongs to that one alone, and is not the
    management account of another."""
    managers = {account for account, spec in organizations if spec is not None}
    member_of: dict[str, str] = {}
    for i, (account, spec) in enumerate(organizations):
        if spec is None:
            continue
        for member in spec.members():
            where = f"{path}: accounts[{i}].organization"
            if member in managers and member != account:
                raise ConfigError(f"{where}: account {member} manages an organization of its "
                                  "own in this file: it cannot be a member of this one")
            if member_of.setdefault(member, account) != account:
                raise ConfigError(f"{where}: account {member} is named in the organization of "
                                  f"{member_of[member]} too: an account belongs to one")


def _validate_document(shape: shapes.Structure, doc: dict[str, Any], where: str) -> None:
    """A JSON action's input (Organizations'), checked as that API checks it."""
    try:
        shapes.parse_document(shape, doc)
    except shapes.ShapeFaults as exc:
        raise ConfigError(f"{where}: {exc.message()}") from None
    except shapes.SerializationFault as exc:
        raise ConfigError(f"{where}: {exc}") from None


# -- applying -----------------------------------------------------------------------------------


_DEFAULT = {SCP: FULL_ACCESS, RCP: RCP_FULL_ACCESS}  # what AWS attaches to every new target
_SHORT = {SCP: "scp", RCP: "rcp"}


def _label(org: Org, target: str) -> str:
    """A target as the file names it: Root, an OU path, an account id."""
    if target in org.accounts:
        return target
    return "/".join(org.names(target)) or ROOT


def _child(org: Org, parent: str, name: str) -> str | None:
    """The OU of that name under that parent (names compared exactly, as the API does)."""
    return next((i for i, ou in org.ous.items()
                 if ou["parent"] == parent and ou["name"] == name), None)


def _existing_ous(org: Org | None, spec: OrganizationSpec, label: str) -> dict[str, str]:
    """Root and the file's OUs that exist, by path, to their ids. An OU whose name differs
    only in case from one the file lists is a fault: apply renames nothing."""
    if org is None:
        return {}
    found = {ROOT: org.root_id}
    for path in sorted(spec.ous, key=lambda p: p.count("/")):
        parent_path, _, name = path.rpartition("/")
        parent = found.get(parent_path or ROOT)
        if parent is None:
            continue  # under an OU apply will create
        exact = _child(org, parent, name)
        if exact is not None:
            found[path] = exact
            continue
        near = [ou["name"] for ou in org.ous.values()
                if ou["parent"] == parent and ou["name"].lower() == name.lower()]
        if near:
            where = "/".join([*parent_path.split("/"), near[0]]) if parent_path else near[0]
            raise ConfigError(f"{label}: OU {path} is not in the organization, but {where} "
                              "is: apply creates and renames no OU whose name differs only in "
                              "case (rename it with UpdateOrganizationalUnit, or use its name)")
    return found


def _policy_id(org: Org, spec: OrgPolicySpec) -> str | None:
    return next((i for i, p in org.policies.items()
                 if p["name"] == spec.name and p["type"] == spec.type), None)


async def check_organization(orgs: OrganizationsService, management: str,
                              spec: OrganizationSpec) -> None:
    """Before any change: the account manages its organization (or belongs to none), every
    account the file names is a member of it, no OU differs only in case from the file's, and
    every target keeps between one SCP and five policies of each type once converged."""
    label = f"{management}: organization"
    org = await orgs.org_of(management)
    if org is not None and org.management != management:
        raise ConfigError(f"{label}: {management} is a member of {org.id}, which "
                          f"{org.management} manages: an organization is declared under its "
                          "management account")
    members = set(org.accounts) if org is not None else {management}
    for account in spec.members():
        if account not in members:
            raise ConfigError(
                f"{label}: account {account} is not a member of "
                f"{org.id if org is not None else 'the organization apply would create'}: "
                "apply places members, it invites no one (InviteAccountToOrganization, then "
                "AcceptHandshake by the account)")
    found = _existing_ous(org, spec, label)
    managed = {} if org is None else {
        p: i for p in spec.policies if (i := _policy_id(org, p)) is not None}
    # The targets whose attachments change: those of the file, and those where a policy of
    # the file is attached now.
    targets: dict[str, str | None] = {t: found.get(t, t if t in members else None)
                                      for p in spec.policies for t in p.targets}
    if org is not None:
        for holder, attached in org.attached.items():
            if set(attached) & set(managed.values()):
                targets.setdefault(_label(org, holder), holder)
    for name, target in targets.items():
        for policy_type in POLICY_TYPES:
            if not (spec.uses(policy_type) or (org is not None and org.enabled(policy_type))):
                continue
            if org is not None and target is not None and org.enabled(policy_type):
                kept = [p for p in org.attached_of(target, policy_type)
                        if p not in managed.values()]
            else:
                kept = [_DEFAULT[policy_type]]  # a new target, or a type enabled now
            count = len(kept) + sum(1 for p in spec.policies
                                    if p.type == policy_type and name in p.targets)
            if count > MAX_PER_TARGET:
                others = ", ".join(org.policy(p)["name"] if org is not None else
                                   AWS_MANAGED[p]["name"] for p in kept)
                raise ConfigError(f"{label}: {count} policies of type {policy_type} would be "
                                  f"attached to {name} (the file's and {others}): "
                                  f"{_TOO_MANY}")
            if policy_type == SCP and count == 0:
                raise ConfigError(f"{label}: {name} would be left with no service control "
                                  "policy: every root, OU and account keeps one (attach "
                                  "another first, FullAWSAccess for instance)")


async def apply_organization(orgs: OrganizationsService, management: str,
                              spec: OrganizationSpec) -> list[str]:
    """The organization, its OUs, policies and accounts, one line each in the file's order."""
    org = await orgs.org_of(management)
    created = org is None
    if org is None:
        org = await orgs.create_organization(management, "ALL")
    enabled = []
    for policy_type in POLICY_TYPES:
        if spec.uses(policy_type) and not org.enabled(policy_type):
            org = await orgs.enable_type(management, org.root_id, policy_type)
            enabled.append(policy_type)
    label = f"organization {org.id} ({management})"
    lines = [f"+ {label}" if created else
             f"~ {label}: enabled {', '.join(enabled)}" if enabled else f"= {label}"]

    node = {ROOT: org.root_id}
    ou_lines = {}
    for path in sorted(spec.ous, key=lambda p: p.count("/")):  # parents first
        parent_path, _, name = path.rpartition("/")
        parent = node[parent_path or ROOT]
        exact = _child(org, parent, name)
        if exact is not None:
            node[path], ou_lines[path] = exact, f"= ou {path} ({management})"
        else:
            org, node[path] = await orgs.create_ou(management, parent, name, [])
            ou_lines[path] = f"+ ou {path} ({management})"
    lines += [ou_lines[path] for path in spec.ous]

    policy_ids: dict[OrgPolicySpec, str] = {}
    changes: dict[str, list[str] | None] = {}  # None: created
    for policy in spec.policies:
        found = _policy_id(org, policy)
        if found is None:
            org, found = await orgs.create_policy(management, policy.name, policy.description,
                                                  policy.content, policy.type, [])
            changes[found] = None
        else:
            current = org.policies[found]
            new_content = not same_document(current["content"], policy.content)
            new_description = current.get("description", "") != policy.description
            if new_content or new_description:
                org = await orgs.update_policy(
                    management, found, None, policy.description if new_description else None,
                    policy.content if new_content else None)
            changes[found] = [name for name, changed in (("content", new_content),
                                                         ("description", new_description))
                              if changed]
        policy_ids[policy] = found

    def target_id(name: str) -> str:
        return node.get(name, name)  # Root, an OU of the file, or an account

    wanted = {policy_ids[p]: [target_id(t) for t in p.targets] for p in spec.policies}
    attached = {t: list(found) for t, found in org.attached.items()}
    to_detach = [(p, t) for t, found in attached.items() for p in found
                 if p in wanted and t not in wanted[p]]

    def note(policy_id: str, change: str) -> None:
        noted = changes[policy_id]
        if noted is not None:
            noted.append(change)

    async def detach(policy_id: str, target: str) -> None:
        await orgs.detach(management, policy_id, target)
        attached[target].remove(policy_id)
        to_detach.remove((policy_id, target))
        note(policy_id, f"detached from {_label(org, target)}")

    # Attach first (detaching a policy the file takes off that target only to make room), move
    # the accounts, then detach the rest: no account is ever outside a guardrail that both its
    # old and its new place have.
    for policy_id, targets in wanted.items():
        policy_type = org.policy(policy_id)["type"]
        for target in targets:
            if policy_id in attached.get(target, []):
                continue
            here = [p for p in attached.get(target, []) if org.policy(p)["type"] == policy_type]
            room = next((p for p, t in to_detach if t == target and p in here), None)
            if len(here) >= MAX_PER_TARGET and room is not None:
                await detach(room, target)
            await orgs.attach(management, policy_id, target)
            attached.setdefault(target, []).append(policy_id)
            note(policy_id, f"attached to {_label(org, target)}")
    account_lines = []
    for account, ou in spec.accounts:
        parent, destination = org.accounts[account]["parent"], target_id(ou)
        if parent == destination:
            account_lines.append(f"= account {account} ({management})")
            continue
        await orgs.move(management, account, parent, destination)
        account_lines.append(f"~ account {account} ({management}): ou "
                             f"{_label(org, parent)} -> {ou}")
    for policy_id, target in list(to_detach):
        await detach(policy_id, target)

    for policy in spec.policies:
        policy_label = f"{_SHORT[policy.type]} {policy.name} ({management})"
        done = changes[policy_ids[policy]]
        lines.append(f"+ {policy_label}" if done is None else
                     f"~ {policy_label}: {', '.join(done)}" if done else f"= {policy_label}")
    return lines + account_lines
