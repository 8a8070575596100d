"""Declarative IAM: a TOML file of what should exist; ``apply`` makes it so, ``check`` validates.

    [[accounts]]
    id = "123456789012"

      [[accounts.policies]]
      name = "deploy"                        # a managed policy of the account
      document = '''{"Version": "2012-10-17", "Statement": [...]}'''   # or a TOML table

      [[accounts.groups]]
      name = "developers"
      policies = ["deploy", "arn:aws:iam::aws:policy/IAMReadOnlyAccess"]

      [[accounts.users]]
      name = "alice"
      path = "/engineering/"                 # default "/"
      tags = { team = "platform" }
      groups = ["developers"]
      inline = { own-keys = '''{...}''' }    # inline policies by name
      boundary = "deploy"                    # a permissions boundary: a name or an ARN

      [[accounts.roles]]
      name = "deployer"
      trust = '''{...}'''                    # the trust policy
      description = "CI deploys"
      max_session = 3600
      policies = ["deploy"]

      [[accounts.oidc_providers]]
      url = "https://token.actions.githubusercontent.com"
      client_ids = ["sts.amazonaws.com"]
      thumbprints = []                       # SHA-1 of a certificate of the issuer's chain
      tags = { owner = "platform" }
      jwks = '''{"keys": [...]}'''          # a static JWKS: the issuer is never called

      [accounts.organization]                # the organization this account manages: OUs,
                                             # SCPs, RCPs, members' OUs (the table
                                             # broker.organizations.declarative reads)

``apply`` is idempotent: it creates what is missing and brings what exists to what the file says
— for every entity it names, its path, tags, description, trust policy, boundary, group
memberships and its attached and inline policies exactly (attachments and inline policies the
file does not list are removed from that entity); for every OIDC provider, its client ids,
thumbprints, tags and static JWKS (none in the file: the keys are fetched from the issuer). A
managed policy whose document changed gets a new default version. It prints one line per entity
(``+`` created, ``~`` changed with what, ``=`` unchanged) and never deletes an entity the file
does not mention. Every value is validated
exactly as the IAM API validates it, and the whole file is validated before anything changes.

An organization is declared under its management account; broker.organizations.declarative
reads that table and converges it, after every IAM entity of the file (and checks it, with the
rest of the file, before anything changes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.aws import arn as arns
from broker.aws import ids, shapes
from broker.aws.errors import AwsError, NoSuchEntity
from broker.errors import ConfigError
from broker.iam import model
from broker.iam.entities import (
    GROUP,
    ROLE,
    USER,
    Inline,
    OidcProvider,
    PolicyRef,
    Role,
    Tag,
    oidc_identifier,
)
from broker.iam.oidc_providers import check_client_ids, check_jwks, check_thumbprints, check_url
from broker.iam.policies import INLINE_SIZE, MANAGED_SIZE, MAX_ATTACHED
from broker.iam.records import check_tags, policy_size
from broker.iam.service import IamService
from broker.organizations.declarative import (
    OrganizationSpec,
    apply_organization,
    check_keys,
    check_memberships,
    check_organization,
    check_unique,
    read_organization,
    same_document,
    strings,
    tables,
)
from broker.organizations.service import OrganizationsService
from broker.policy.document import PolicyKind, parse
from broker.settings import read_toml


@dataclass(frozen=True)
class PolicySpec:
    name: str
    path: str
    document: str
    description: str | None


@dataclass(frozen=True)
class PrincipalSpec:
    kind: str  # user, group or role
    name: str
    path: str
    tags: tuple[Tag, ...] = ()
    policies: tuple[str, ...] = ()  # names of policies in the file, or ARNs
    inline: tuple[tuple[str, str], ...] = ()
    groups: tuple[str, ...] = ()  # users only
    boundary: str | None = None  # users and roles
    trust: str | None = None  # roles only
    description: str | None = None  # roles only
    max_session: int = 3600  # roles only


@dataclass(frozen=True)
class OidcProviderSpec:
    url: str
    client_ids: tuple[str, ...] = ()
    thumbprints: tuple[str, ...] = ()
    tags: tuple[Tag, ...] = ()
    jwks: str | None = None


@dataclass(frozen=True)
class AccountSpec:
    id: str
    policies: tuple[PolicySpec, ...]
    principals: tuple[PrincipalSpec, ...]
    oidc_providers: tuple[OidcProviderSpec, ...] = ()
    organization: OrganizationSpec | None = None


@dataclass(frozen=True)
class Plan:
    accounts: tuple[AccountSpec, ...]

    def count(self, kind: str) -> int:
        return sum(1 for a in self.accounts for p in a.principals if p.kind == kind)


_ACCOUNT_KEYS = {"id", "users", "groups", "roles", "policies", "oidc_providers", "organization"}
_OIDC_KEYS = {"url", "client_ids", "thumbprints", "tags", "jwks"}
_KEYS = {
    USER: {"name", "path", "tags", "policies", "inline", "groups", "boundary"},
    GROUP: {"name", "path", "policies", "inline"},
    ROLE: {"name", "path", "tags", "policies", "inline", "boundary", "trust", "description",
           "max_session"},
}
_POLICY_KEYS = {"name", "path", "document", "description"}


def load(path: Path) -> Plan:
    """Read and validate a declarative file. ConfigError names the first fault and where."""
    doc = read_toml(path, "")
    unknown = set(doc) - {"accounts"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s): {', '.join(sorted(unknown))} "
                          "(this file holds [[accounts]])")
    accounts = []
    seen_accounts: set[str] = set()
    for i, raw in enumerate(tables(doc.get("accounts", []), f"{path}: accounts")):
        where = f"{path}: accounts[{i}]"
        check_keys(raw, _ACCOUNT_KEYS, where)
        account_id = raw.get("id")
        if not isinstance(account_id, str) or not ids.ACCOUNT_ID.fullmatch(account_id):
            raise ConfigError(f"{where}.id: must be a 12-digit account id in quotes")
        if account_id in seen_accounts:
            raise ConfigError(f"{where}.id: account {account_id} is listed twice")
        seen_accounts.add(account_id)
        policies = tuple(_policy(p, f"{where}.policies[{j}]")
                         for j, p in enumerate(tables(raw.get("policies", []),
                                                     f"{where}.policies")))
        check_unique([p.name for p in policies], f"{where}.policies", "policy")
        principals: list[PrincipalSpec] = []
        for kind, table in ((GROUP, "groups"), (USER, "users"), (ROLE, "roles")):
            specs = [_principal(kind, p, f"{where}.{table}[{j}]")
                     for j, p in enumerate(tables(raw.get(table, []), f"{where}.{table}"))]
            check_unique([s.name for s in specs], f"{where}.{table}", kind)
            principals += specs
        local = {p.name.lower() for p in policies}
        for spec in principals:
            for ref in (*spec.policies, *([spec.boundary] if spec.boundary else [])):
                if not ref.startswith("arn:") and ref.lower() not in local:
                    raise ConfigError(f"{where}: {spec.kind} {spec.name} names policy {ref}, "
                                      "which is neither an ARN nor a policy of this file")
        providers = tuple(_oidc_provider(p, f"{where}.oidc_providers[{j}]")
                          for j, p in enumerate(tables(raw.get("oidc_providers", []),
                                                      f"{where}.oidc_providers")))
        check_unique([oidc_identifier(p.url) for p in providers], f"{where}.oidc_providers",
                "OIDC provider")
        organization = (read_organization(raw["organization"], f"{where}.organization")
                        if "organization" in raw else None)
        accounts.append(AccountSpec(account_id, policies, tuple(principals), providers,
                                    organization))
    check_memberships([(a.id, a.organization) for a in accounts], path)
    return Plan(tuple(accounts))


def _oidc_provider(raw: Any, where: str) -> OidcProviderSpec:
    check_keys(raw, _OIDC_KEYS, where)
    url = raw.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}.url: must be the issuer's URL")
    tags_raw = raw.get("tags", {})
    if not isinstance(tags_raw, dict) or not all(isinstance(v, str) for v in tags_raw.values()):
        raise ConfigError(f"{where}.tags: must be a table of string values")
    jwks_raw = raw.get("jwks")
    jwks = json.dumps(jwks_raw) if isinstance(jwks_raw, dict) else jwks_raw
    if jwks is not None and not isinstance(jwks, str):
        raise ConfigError(f"{where}.jwks: a JWKS is a JSON string or a table")
    spec = OidcProviderSpec(
        url=url, client_ids=tuple(strings(raw.get("client_ids", []), f"{where}.client_ids")),
        thumbprints=tuple(strings(raw.get("thumbprints", []), f"{where}.thumbprints")),
        tags=tuple(Tag(k, v) for k, v in tags_raw.items()), jwks=jwks)
    flat: dict[str, Any] = {"Url": url}
    for n, client_id in enumerate(spec.client_ids, 1):
        flat[f"ClientIDList.member.{n}"] = client_id
    for n, thumbprint in enumerate(spec.thumbprints, 1):
        flat[f"ThumbprintList.member.{n}"] = thumbprint
    _validate(model.CreateOpenIDConnectProviderRequest, flat, where)
    try:
        check_tags(spec.tags)
        check_url(url, allow_http_loopback=True)  # the setting is checked again by apply
        check_client_ids(spec.client_ids)
        check_thumbprints(spec.thumbprints)
        if jwks is not None:
            check_jwks(jwks)
    except AwsError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return spec


def _policy(raw: Any, where: str) -> PolicySpec:
    check_keys(raw, _POLICY_KEYS, where)
    name, path = raw.get("name"), raw.get("path", "/")
    document = _document(raw.get("document"), f"{where}.document")
    spec = PolicySpec(name, path, document, raw.get("description"))
    _validate(model.CreatePolicyRequest, {"PolicyName": name, "Path": path,
                                          "PolicyDocument": document,
                                          **({"Description": spec.description}
                                             if spec.description else {})}, where)
    _parse(document, PolicyKind.IDENTITY, where)
    if policy_size(document) > MANAGED_SIZE:
        raise ConfigError(f"{where}.document: LimitExceeded: Cannot exceed quota for "
                          f"PolicySize: {MANAGED_SIZE}")
    return spec


def _principal(kind: str, raw: Any, where: str) -> PrincipalSpec:
    check_keys(raw, _KEYS[kind], where)
    name, path = raw.get("name"), raw.get("path", "/")
    if not isinstance(name, str) or not isinstance(path, str):
        raise ConfigError(f"{where}: name and path must be strings")
    tags_raw = raw.get("tags", {})
    if not isinstance(tags_raw, dict) or not all(isinstance(v, str) for v in tags_raw.values()):
        raise ConfigError(f"{where}.tags: must be a table of string values")
    tags = tuple(Tag(k, v) for k, v in tags_raw.items())
    policies = tuple(strings(raw.get("policies", []), f"{where}.policies"))
    if len(policies) > MAX_ATTACHED:
        raise ConfigError(f"{where}.policies: at most {MAX_ATTACHED} managed policies")
    groups = tuple(strings(raw.get("groups", []), f"{where}.groups"))
    if len(groups) > 10:
        raise ConfigError(f"{where}.groups: at most 10 groups per user")
    inline_raw = raw.get("inline", {})
    if not isinstance(inline_raw, dict):
        raise ConfigError(f"{where}.inline: must be a table of policy name = document")
    inline = tuple((n, _document(d, f"{where}.inline.{n}")) for n, d in inline_raw.items())
    for policy_name, document in inline:
        _validate(model.PutUserPolicyRequest, {"UserName": "x", "PolicyName": policy_name,
                                               "PolicyDocument": document},
                  f"{where}.inline.{policy_name}")
        _parse(document, PolicyKind.IDENTITY, f"{where}.inline.{policy_name}")
    if sum(policy_size(d) for _, d in inline) > INLINE_SIZE[kind]:
        raise ConfigError(f"{where}.inline: LimitExceeded: Maximum policy size of "
                          f"{INLINE_SIZE[kind]} bytes exceeded for {kind} {name}")
    trust = _document(raw["trust"], f"{where}.trust") if "trust" in raw else None
    spec = PrincipalSpec(kind=kind, name=name, path=path, tags=tags, policies=policies,
                         inline=inline, groups=groups, boundary=raw.get("boundary"),
                         trust=trust, description=raw.get("description"),
                         max_session=raw.get("max_session", 3600))
    flat: dict[str, Any] = {"Path": path}
    for n, tag in enumerate(tags, 1):
        flat[f"Tags.member.{n}.Key"] = tag.key
        flat[f"Tags.member.{n}.Value"] = tag.value
    if kind == USER:
        _validate(model.CreateUserRequest, {**flat, "UserName": name}, where)
    elif kind == GROUP:
        _validate(model.CreateGroupRequest, {"GroupName": name, "Path": path}, where)
    else:
        if trust is None:
            raise ConfigError(f"{where}: a role needs a trust policy (trust = ...)")
        _parse(trust, PolicyKind.TRUST, f"{where}.trust")
        _validate(model.CreateRoleRequest, {
            **flat, "RoleName": name, "AssumeRolePolicyDocument": trust,
            "MaxSessionDuration": str(spec.max_session),
            **({"Description": spec.description} if spec.description else {})}, where)
    try:
        check_tags(tags)
    except AwsError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return spec


def _document(value: Any, where: str) -> str:
    if isinstance(value, dict):
        return json.dumps(value, indent=2)
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: a policy document is a JSON string or a table")


def _validate(shape: shapes.Structure, flat: dict[str, Any], where: str) -> None:
    try:
        shapes.parse(shape, {k: str(v) for k, v in flat.items() if v is not None})
    except AwsError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _parse(document: str, kind: PolicyKind, where: str) -> None:
    try:
        parse(document, kind)
    except AwsError as exc:
        raise ConfigError(f"{where}: MalformedPolicyDocument: {exc.message}") from None


# -- applying -----------------------------------------------------------------------------------


# What a role the file creates trusts until its own trust policy is set: nobody. Roles are
# created before any trust policy is set, so that roles (and users of later accounts) named in
# each other's trust policies all exist when the trust policies are checked.
_TRUSTS_NOBODY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})


async def apply(plan: Plan, iam: IamService, organizations: OrganizationsService) -> list[str]:
    """Make the store match the plan. Returns one line per entity: OIDC providers, managed
    policies, then groups and users, then roles, then each organization (itself, its OUs, its
    policies, its accounts), each in the file's order."""
    for account in plan.accounts:
        await iam.get_account(account.id)  # NoSuchEntity if it was never created
    for account in plan.accounts:
        if account.organization is not None:
            await check_organization(organizations, account.id, account.organization)
    # Before any change: every policy ARN and group the file names but does not hold exists,
    # and every trust policy names principals that exist or are in the file.
    for account in plan.accounts:
        local = {p.name.lower() for p in account.policies} | \
            {arns.policy(account.id, p.path, p.name).lower() for p in account.policies}
        groups = {s.name.lower() for s in account.principals if s.kind == GROUP}
        for spec in account.principals:
            for ref in (*spec.policies, *([spec.boundary] if spec.boundary else [])):
                if ref.lower() not in local:
                    await iam.policies.reference(account.id, ref)
            for group in spec.groups:
                if group.lower() not in groups:
                    await iam.groups.get(account.id, group)
    planned = {(arns.user if spec.kind == USER else arns.role)(account.id, spec.path, spec.name)
               for account in plan.accounts for spec in account.principals
               if spec.kind in (USER, ROLE)}
    for account in plan.accounts:
        for spec in account.principals:
            if spec.trust is not None:
                await iam.roles.check_trust(spec.trust, planned=planned)
    for account in plan.accounts:
        for provider in account.oidc_providers:
            check_url(provider.url, allow_http_loopback=iam.oidc_providers.allow_http_loopback)
    arn_of = {account.id: {p.name.lower(): arns.policy(account.id, p.path, p.name)
                           for p in account.policies} for account in plan.accounts}
    lines = []
    for account in plan.accounts:
        for provider in account.oidc_providers:
            lines.append(await _apply_oidc_provider(iam, account.id, provider))
    for account in plan.accounts:
        for policy in account.policies:
            lines.append(await _apply_policy(iam, account.id, policy))
    for account in plan.accounts:
        for spec in account.principals:
            if spec.kind != ROLE:
                created = await _create(iam, account.id, spec, arn_of[account.id])
                lines.append(await _apply_principal(iam, account.id, spec, arn_of[account.id],
                                                    created=created))
    # Every role where the file puts it (made, trusting nobody yet, or moved) before any trust
    # policy is checked, so that trust policies may name roles of the file at their new paths.
    created_roles, moved_roles = set(), {}
    for account in plan.accounts:
        for spec in account.principals:
            if spec.kind != ROLE:
                continue
            if await _create(iam, account.id, spec, arn_of[account.id]):
                created_roles.add((account.id, spec.name))
                continue
            role = await iam.roles.get(account.id, spec.name)
            if role.path != spec.path:
                await iam.roles.change(account.id, spec.name, path=spec.path)
                moved_roles[(account.id, spec.name)] = f"path {role.path} -> {spec.path}"
    for account in plan.accounts:
        for spec in account.principals:
            if spec.kind == ROLE:
                lines.append(await _apply_principal(
                    iam, account.id, spec, arn_of[account.id],
                    created=(account.id, spec.name) in created_roles,
                    moved=moved_roles.get((account.id, spec.name))))
    for account in plan.accounts:
        if account.organization is not None:
            lines += await apply_organization(organizations, account.id, account.organization)
    return lines


async def _apply_oidc_provider(iam: IamService, account: str, spec: OidcProviderSpec) -> str:
    providers = iam.oidc_providers
    label = f"oidc-provider {oidc_identifier(spec.url)} ({account})"
    provider_arn = arns.oidc_provider(account, oidc_identifier(spec.url))
    try:
        current = await providers.get(account, provider_arn)
    except NoSuchEntity:
        await providers.create(account, spec.url, client_ids=spec.client_ids,
                               thumbprints=spec.thumbprints, tags=spec.tags,
                               static_jwks=spec.jwks)
        return f"+ {label}"
    changes = []
    wanted = OidcProvider(account_id=account, url=spec.url, uuid=current.uuid,
                          create_date=current.create_date,
                          client_ids=check_client_ids(spec.client_ids),
                          thumbprints=check_thumbprints(spec.thumbprints), tags=spec.tags,
                          static_jwks=None if spec.jwks is None else check_jwks(spec.jwks))
    for name in ("url", "client_ids", "thumbprints", "tags", "static_jwks"):
        if getattr(current, name) != getattr(wanted, name):
            changes.append(name.replace("_", " "))
    if not changes:
        return f"= {label}"
    await providers.replace(account, provider_arn, wanted)
    return f"~ {label}: {', '.join(changes)}"


async def _apply_policy(iam: IamService, account: str, spec: PolicySpec) -> str:
    label = f"policy {spec.name} ({account})"
    policy_arn = arns.policy(account, spec.path, spec.name)
    try:
        current = await iam.policies.get(account, policy_arn)
    except NoSuchEntity:
        await iam.policies.create(account, spec.name, spec.document, path=spec.path,
                                  description=spec.description)
        return f"+ {label}"
    if same_document(current.document, spec.document):
        return f"= {label}"
    if len(current.versions) >= 5:
        oldest = next(v for v in current.versions if v.id != current.default_version)
        await iam.policies.delete_version(account, policy_arn, oldest.id)
    version = await iam.policies.create_version(account, policy_arn, spec.document, True)
    return f"~ {label}: document (new default version {version.id})"


async def _create(iam: IamService, account: str, spec: PrincipalSpec,
                  arn_of: dict[str, str]) -> bool:
    """Create the entity if it does not exist (a role trusting nobody yet); True if created."""
    try:
        await iam.policies.principal(spec.kind, account, spec.name)
        return False
    except NoSuchEntity:
        pass
    boundary = await _ref(iam, account, spec.boundary, arn_of) if spec.boundary else None
    if spec.kind == USER:
        await iam.create_user(account, spec.name, path=spec.path, tags=spec.tags,
                              boundary=boundary)
    elif spec.kind == GROUP:
        await iam.groups.create(account, spec.name, spec.path)
    else:
        await iam.roles.create(account, spec.name, _TRUSTS_NOBODY, path=spec.path,
                               description=spec.description, max_session=spec.max_session,
                               boundary=boundary, tags=spec.tags)
    return True


async def _apply_principal(iam: IamService, account: str, spec: PrincipalSpec,
                           arn_of: dict[str, str], *, created: bool,
                           moved: str | None = None) -> str:
    label = f"{spec.kind} {spec.name} ({account})"
    wanted_refs = [await _ref(iam, account, p, arn_of) for p in spec.policies]
    boundary = await _ref(iam, account, spec.boundary, arn_of) if spec.boundary else None
    trust_ids: tuple[tuple[str, str], ...] = ()
    if spec.kind == ROLE and spec.trust is not None:
        trust_ids = await iam.roles.check_trust(spec.trust)
    group_ids: tuple[str, ...] = ()
    if spec.kind == USER:
        group_ids = tuple([(await iam.groups.get(account, g)).group_id for g in spec.groups])
    changes: list[str] = [moved] if moved else []

    def converge(entity: Any) -> Any:
        fields: dict[str, Any] = {}
        if entity.path != spec.path:
            fields["path"] = spec.path
            changes.append(f"path {entity.path} -> {spec.path}")
        if spec.kind in (USER, ROLE):
            if entity.tags != spec.tags:
                fields["tags"] = spec.tags
                changes.append("tags")
            if entity.boundary != boundary:
                fields["boundary"] = boundary
                changes.append("boundary")
        if tuple(entity.attached) != tuple(wanted_refs):
            fields["attached"] = tuple(wanted_refs)
            changes.append("policies")
        inline = tuple(Inline(n, d) for n, d in spec.inline)  # sizes checked by load()
        if tuple(entity.inline) != inline:
            fields["inline"] = inline
            changes.append("inline policies")
        if spec.kind == USER and set(entity.groups) != set(group_ids):
            fields["groups"] = group_ids
            changes.append("groups")
        if isinstance(entity, Role):
            if not same_document(entity.trust, spec.trust or "") or \
                    entity.trust_ids != trust_ids:
                # The document, or an identity it names (deleted and made again since).
                fields["trust"], fields["trust_ids"] = spec.trust, trust_ids
                changes.append("trust")
            if entity.description != spec.description:
                fields["description"] = spec.description
                changes.append("description")
            if entity.max_session != spec.max_session:
                fields["max_session"] = spec.max_session
                changes.append("max_session")
        return replace(entity, **fields) if fields else entity

    await iam.policies.change_principal(spec.kind, account, spec.name, converge)
    if created:
        return f"+ {label}"
    if not changes:
        return f"= {label}"
    return f"~ {label}: {', '.join(changes)}"


async def _ref(iam: IamService, account: str, name_or_arn: str,
               arn_of: dict[str, str]) -> PolicyRef:
    policy_arn = name_or_arn if name_or_arn.startswith("arn:") else arn_of[name_or_arn.lower()]
    return await iam.policies.reference(account, policy_arn)
