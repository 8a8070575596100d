"""The broker's parts, opened from settings: stores, keyring, services, protocol.

``open_runtime`` is used by the web application (app.py) and by the command line, so both run
the same code against the same stores. ``initialize`` creates a new data directory: the keyring,
the database schema, the first account with its root user and one root access key.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from broker.audit import AuditEvent, AuditSink
from broker.audit_sinks import open_sink
from broker.authn import Authenticator
from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.ids import new_request_id
from broker.aws.jsonproto import JsonProtocol
from broker.aws.query import QueryProtocol
from broker.aws.restjson import RestProtocol
from broker.clock import Clock, SystemClock
from broker.errors import AlreadyExists, ConfigError, StoreUnavailable
from broker.iam import api as iam_api
from broker.iam.entities import Account
from broker.iam.lastused import LastUsedRecorder
from broker.iam.permissions import Permissions, WatchedStore
from broker.iam.service import IamService, NewAccessKey
from broker.identitycenter import api as sso_api
from broker.identitycenter import oidc_api, portal_api, store_api
from broker.identitycenter.abac import AccessControl
from broker.identitycenter.access import Access, AccountEntry
from broker.identitycenter.assignments import Assignments
from broker.identitycenter.cached import CachedDirectory, CachedInstances
from broker.identitycenter.directory import Directory
from broker.identitycenter.instances import Instance, Instances, idp_metadata
from broker.identitycenter.oauth import OAuth
from broker.identitycenter.permission_sets import PermissionSets
from broker.identitycenter.portal import Portal
from broker.identitycenter.reads import BumpingStore, Generations, Reads
from broker.identitycenter.sources import IdentitySources
from broker.idp import sp
from broker.idp.jwks import KeySource
from broker.idp.saml import ServiceProvider
from broker.idp.sp import SpCredentials
from broker.keyring import Keyring
from broker.mail import Mailer
from broker.organizations import api as org_api
from broker.organizations.guard import OrgGuard
from broker.organizations.service import OrganizationsService
from broker.scim.server import ScimServer
from broker.scim.tokens import ScimTokens
from broker.settings import Settings
from broker.signin.console import Console
from broker.signin.demo import DemoIdentityProvider
from broker.signin.destinations import Destinations
from broker.signin.federation import Federation
from broker.signin.own import OwnCredentials
from broker.signin.password import PasswordSignIn, Throttle
from broker.signin.saml import SamlSignIn
from broker.signin.sessions import ConsoleSessions
from broker.signin.webauthn import SecurityKeys
from broker.store.base import GLOBAL, EntityStore, EphemeralStore, Record
from broker.store.memory import MemoryEphemeralStore
from broker.store.redis import RedisEphemeralStore
from broker.store.sql import SqlEntityStore
from broker.sts import api as sts_api
from broker.sts.saml import SamlFederation
from broker.sts.service import StsService
from broker.sts.web_identity import WebIdentityFederation

log = logging.getLogger("broker.runtime")


def open_entity_store(settings: Settings) -> EntityStore:
    return SqlEntityStore(settings.database_url, pool_size=settings.store.pool_size)


def open_ephemeral_store(settings: Settings, clock: Clock) -> EphemeralStore:
    url = settings.store.ephemeral_url
    if url == "memory://":
        return MemoryEphemeralStore(clock)
    return RedisEphemeralStore(url, prefix=settings.store.redis_prefix, clock=clock)


EPHEMERAL_PREFIX_KIND = "ephemeral_prefix"
INSTALLATION_KIND = "installation"  # the one record that says the database was initialised


async def begin_ephemeral(ephemeral: EphemeralStore, store: EntityStore, clock: Clock) -> None:
    """Tell a Redis whether its prefix was used before (store/redis.py: a prefix in use whose
    lost-at key is gone has lost its data). The first call ever makes the entity store's
    record of the prefix; a store away now is asked again at the first single-use value."""
    if not isinstance(ephemeral, RedisEphemeralStore):
        return
    prefix = ephemeral.prefix

    async def used_before() -> bool:
        try:
            await store.create(Record(kind=EPHEMERAL_PREFIX_KIND, account=GLOBAL, key=prefix,
                                      data={"first_used": clock.now().isoformat()}))
        except AlreadyExists:
            return True
        return False

    try:
        await ephemeral.begin(used_before)
    except StoreUnavailable as exc:
        log.warning("the ephemeral store's lost-at key not checked at start (%s): checked at "
                    "the first single-use value", exc)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    keyring: Keyring
    store: EntityStore
    ephemeral: EphemeralStore
    audit: AuditSink
    iam: IamService
    sts: StsService
    last_used: LastUsedRecorder
    authenticator: Authenticator
    protocol: QueryProtocol
    authz: Authorizer
    sp_credentials: SpCredentials
    saml_federation: SamlFederation
    console_sessions: ConsoleSessions
    saml_signin: SamlSignIn
    web_identity: WebIdentityFederation
    destinations: Destinations
    federation_endpoint: Federation
    console: Console
    password_signin: PasswordSignIn
    own: OwnCredentials
    security_keys: SecurityKeys
    organizations: OrganizationsService
    json_protocol: JsonProtocol
    portal: Portal  # the access portal's sign-in (Identity Center's directory users)
    identity_center: IdentityCenter
    oauth: OAuth  # sso-oidc: clients, device and authorization codes, tokens
    rest_protocol: RestProtocol  # the rest-json services: sso and sso-oidc
    signin_links: list[tuple[str, str]] = field(default_factory=list)
    demo: DemoIdentityProvider | None = None  # development mode's demo identity provider
    scim: ScimServer | None = None  # Identity Center's SCIM 2.0 server (/scim/v2/)

    async def close(self) -> None:
        # Each part is closed even when one before it fails; the audit lines last, always.
        try:
            try:
                await self.organizations.wait()
            finally:
                try:
                    await self.store.close()
                finally:
                    await self.ephemeral.close()
        finally:
            self.audit.close()


async def open_runtime(settings: Settings, *, clock: Clock | None = None,
                       migrate: bool = True) -> Runtime:
    clock = clock or SystemClock()
    if not settings.keyring_path.exists():
        raise ConfigError(
            f"keyring {settings.keyring_path} does not exist: run 'broker init' first"
        )
    keyring = Keyring.load(settings.keyring_path,
                           check_interval=settings.keyring.check_interval_seconds)
    raw_store = open_entity_store(settings)
    # A start that fails part way (a setting found wrong, a store away) leaves nothing open
    # behind it: what is opened is closed again unless the runtime is made.
    async with contextlib.AsyncExitStack() as undo:
        undo.push_async_callback(raw_store.close)
        if migrate:
            await raw_store.migrate()
        watched = WatchedStore(raw_store)
        ephemeral = open_ephemeral_store(settings, clock)
        undo.push_async_callback(ephemeral.close)
        await begin_ephemeral(ephemeral, raw_store, clock)
        # Every write of an Identity Center record, whoever makes it, gives its account a new
        # generation (identitycenter/reads.py).
        generations = Generations(ephemeral)
        store: EntityStore = BumpingStore(watched, generations)
        audit = open_sink(settings.audit)
        undo.callback(audit.close)
        iam = IamService(store, keyring, clock,
                         allow_http_loopback=settings.oidc.allow_http_loopback, ephemeral=ephemeral)
        permissions = Permissions(iam.entities, iam.policies,
                                  cache_seconds=settings.iam.policy_cache_seconds,
                                  writes=lambda: watched.writes)
        authz = Authorizer(permissions, keyring, clock)
        organizations = OrganizationsService(iam, clock)
        authz.guard = OrgGuard(organizations, permissions)
        sts = StsService(iam, permissions, keyring, clock)
        last_used = LastUsedRecorder(iam, interval=settings.iam.last_used_flush_seconds)
        authenticator = Authenticator(iam, permissions, keyring, clock, last_used,
                                      skew=settings.sigv4.clock_skew_seconds,
                                      regions=settings.sigv4.regions)
        sp_credentials = await sp.load(settings, store, keyring, clock)
        federation = SamlFederation(
            iam.saml_providers, permissions, sts, ephemeral,
            ServiceProvider(settings.acs_url, settings.saml_audiences,
                            timedelta(seconds=settings.saml.clock_skew_seconds)),
            sp_credentials, clock)
        web_identity = WebIdentityFederation(
            iam.oidc_providers, permissions, sts, KeySource(settings.oidc), clock,
            skew_seconds=settings.oidc.clock_skew_seconds)
        federation.organizations = web_identity.organizations = authz.guard
        console_sessions = ConsoleSessions(ephemeral, keyring, clock)
        destinations = Destinations(settings.public_url, (
            *settings.signin.destinations, *(a.url for a in settings.gateway.applications)))
        saml_signin = SamlSignIn(
            federation, console_sessions, iam, ephemeral, destinations, clock,
            sp_entity_id=settings.sp_entity_id, idp_initiated=settings.saml.idp_initiated)
        protocol = QueryProtocol(
            [*sts_api.operations(sts, authz, federation, web_identity),
             *iam_api.operations(iam, authz, last_used)],
            authenticator, audit, clock,
        )
        security_keys = SecurityKeys(iam.mfa, authz, ephemeral, clock,
                                     public_url=settings.public_url)
        async def manages_organization(account: str) -> bool:
            org = await organizations.org_of(account)
            return org is not None and org.management == account

        federation_endpoint = Federation(ephemeral, keyring, sts, authz, clock)
        identity_center = _identity_center(settings, store, clock, iam, sts, permissions, authz,
                                           organizations, sp_credentials, federation_endpoint,
                                           generations)
        json_protocol = JsonProtocol(
            [*org_api.operations(organizations, authz),
             *sso_api.operations(identity_center.instances, authz, manages_organization,
                                 identity_center.permission_sets, identity_center.assignments,
                                 AccessControl(identity_center.store)),
             *store_api.operations(identity_center.directory, authz)],
            authenticator, audit=audit, clock=clock)
        oauth = OAuth(ephemeral, keyring, clock, identity_center.cached_instances,
                      identity_center.cached_directory, public_url=settings.public_url,
                      session_seconds=settings.sso.session_hours * 3600)
        sources = IdentitySources(
            identity_center.store, ephemeral, keyring, clock,
            identity_center.directory, web_identity.keys,
            public_url=settings.public_url,
            sp_credentials=sp_credentials,
            oidc_settings=settings.oidc,
            saml_skew=timedelta(
                seconds=settings.saml.clock_skew_seconds),
            idp_initiated=settings.saml.idp_initiated,
            access_control=AccessControl(identity_center.store),
            reads=identity_center.reads)
        runtime = Runtime(settings, clock, keyring, store, ephemeral, audit, iam, sts, last_used,
                       authenticator, protocol, authz, sp_credentials, federation,
                       console_sessions, saml_signin, web_identity, destinations,
                       federation_endpoint,
                       Console(sts, authz, keyring, clock, settings.gateway.applications),
                       PasswordSignIn(iam, sts, authz, console_sessions, ephemeral, clock,
                                      security_keys,
                                      root_mfa_required=settings.signin.root_mfa_required,
                                      max_failures=settings.signin.max_failures,
                                      lock_seconds=settings.signin.lock_seconds),
                       OwnCredentials(protocol, iam, sts, authz), security_keys,
                       organizations, json_protocol,
                       identity_center=identity_center,
                       oauth=oauth, rest_protocol=RestProtocol([
                           *oidc_api.operations(oauth),
                           *portal_api.operations(oauth, identity_center.cached_instances,
                                                  identity_center.cached_directory,
                                                  identity_center.access, audit, clock,
                                                  sources=sources)]),
                       portal=Portal(identity_center.store, ephemeral, keyring, clock,
                                     identity_center.directory, identity_center.instances, Throttle(
                                         ephemeral, max_failures=settings.signin.max_failures,
                                         lock_seconds=settings.signin.lock_seconds),
                                     account_ids=lambda: _account_ids(iam),
                                     relying_party=security_keys.rp,
                                     session_seconds=settings.sso.session_hours * 3600,
                                     mailer=Mailer(settings.sso.smtp_url, settings.sso.smtp_from)
                                     if settings.sso.smtp_url else None,
                                     public_url=settings.public_url,
                                     sources=sources),
                       signin_links=[("Sign in with a user name and password", "/signin")],
                       scim=ScimServer(identity_center.cached_instances, identity_center.directory,
                                       ScimTokens(identity_center.store, clock),
                                       clock, public_url=settings.public_url))
        undo.pop_all()
        return runtime


@dataclass
class IdentityCenter:
    """IAM Identity Center's parts: instances, permission sets, assignments, and what a
    directory user reaches through them."""

    instances: Instances
    directory: Directory
    permission_sets: PermissionSets
    assignments: Assignments
    access: Access
    store: EntityStore
    reads: Reads  # the hot path's cache (reads.py)
    cached_directory: CachedDirectory  # for readers only
    cached_instances: CachedInstances


def _identity_center(settings: Settings, store: EntityStore, clock: Clock, iam: IamService,
                     sts: StsService, permissions: Permissions, authz: Authorizer,
                     organizations: OrganizationsService, sp_credentials: SpCredentials,
                     federation: Federation, generations: Generations) -> IdentityCenter:
    reads = Reads(generations, max_age=settings.iam.policy_cache_seconds)
    instances = Instances(store, clock)
    directory = Directory(store, clock)
    cached_directory = CachedDirectory(store, clock, reads)
    cached_instances = CachedInstances(store, clock, reads)
    permission_sets = PermissionSets(store, clock)

    async def can_assign(instance: Instance, account: str) -> bool:
        if account == instance.account_id:
            return True
        if instance.scope != "ORGANIZATION":
            return False
        org = await organizations.org_of(instance.account_id)
        return org is not None and org.management == instance.account_id and \
            account in org.accounts

    async def principal_exists(instance: Instance, kind: str, principal_id: str) -> bool:
        return await directory.principal_exists(instance.account_id,
                                                instance.identity_store_id, kind, principal_id)

    async def account_entry(instance: Instance, account: str) -> AccountEntry:
        org = await organizations.org_of(account)
        if org is not None and account in org.accounts:
            member = org.accounts[account]
            return AccountEntry(account, str(member["name"]), str(member.get("email") or ""))
        return AccountEntry(account, account, await iam.root_email(account) or "")

    assignments = Assignments(
        store, iam, permission_sets, clock,
        provider_metadata=lambda instance: idp_metadata(
            settings.public_url, instance, sp_credentials.certificate_b64),
        saml_audience=settings.acs_url, can_assign=can_assign,
        principal_exists=principal_exists)
    async def left(management: str, account: str) -> None:
        instance = await instances.of_account(management)
        if instance is not None and instance.scope == "ORGANIZATION":
            await assignments.deprovision(instance, account)

    organizations.on_leave.append(left)
    access = Access(cached_directory, assignments, permission_sets, sts, permissions,
                    authz.guard, clock, saml_audience=settings.acs_url,
                    account_entry=account_entry, federation=federation,
                    public_url=settings.public_url, reads=reads,
                    access_control=AccessControl(store))
    return IdentityCenter(instances, directory, permission_sets, assignments, access, store,
                          reads, cached_directory, cached_instances)


async def _account_ids(iam: IamService) -> list[str]:
    return [a.id for a in await iam.list_accounts()]


def is_initialized(settings: Settings) -> bool:
    return settings.keyring_path.exists()


async def initialize(settings: Settings, *, account_id: str | None = None,
                     clock: Clock | None = None, root_email: str | None = None,
                     root_password: str | None = None) -> tuple[Account, NewAccessKey]:
    """Create the data directory, keyring, schema and first account. Refuses to touch a
    directory or database that already holds a broker."""
    clock = clock or SystemClock()
    data_dir = settings.data_dir
    if settings.keyring_path.exists():
        raise ConfigError(f"{data_dir} is already initialised (found {settings.keyring_path})")
    if (data_dir / "broker.db").exists() and not settings.store.database_url:
        raise ConfigError(f"{data_dir} already holds a database (broker.db) but no keyring")
    if not data_dir.exists():
        data_dir.mkdir(parents=True)
        _private(data_dir)  # only a directory we made: never someone else's (/tmp, $HOME)
    # Opened before anything is made: an audit sink that cannot open stops init at once,
    # not after the root key exists.
    sink = open_sink(settings.audit, command_line=True)
    try:
        account, key = await _initialize(settings, clock, account_id, root_email,
                                         root_password)
        try:
            _audit_issued(sink, clock, key, "init")
        except Exception as exc:  # the account is made: its credentials are still shown
            log.error("the audit line of the root access key %s was not written: %s",
                      key.key.access_key_id, exc)
    finally:
        sink.close()
    return account, key


async def _initialize(settings: Settings, clock: Clock, account_id: str | None,
                      root_email: str | None, root_password: str | None
                      ) -> tuple[Account, NewAccessKey]:
    store = open_entity_store(settings)
    try:
        await store.migrate()
        iam = IamService(store, Keyring.generate(clock), clock)
        refused = ConfigError(
            "the database already holds accounts: copy that broker's keyring to "
            f"{settings.keyring_path} instead of initialising again")
        if await iam.list_accounts():
            raise refused
        # One initialisation per database, even of several at once (nodes started together
        # with empty data directories): the first to make this record makes the account and
        # the keyring; each other one is refused, rather than a second account under a
        # second keyring. The owner tells this init's claim from one that took it over.
        owner = secrets.token_hex(16)
        claim = Record(kind=INSTALLATION_KIND, account=GLOBAL, key="first",
                       data={"initialised": clock.now().isoformat(), "owner": owner})
        try:
            await store.create(claim)
        except AlreadyExists:
            await _take_over_claim(store, iam, claim, clock, refused, settings.keyring_path)
        keyring = Keyring.generate(clock, path=settings.keyring_path)
        try:
            keyring.save()
            await store.update(claim.ref, _still_ours(owner, clock))  # not taken over since
            account, key = await IamService(store, keyring, clock).create_account(
                account_id, root_email=root_email, root_password=root_password)
        except BaseException:
            # Undone only if no account was made: one made (even in part) needs this keyring,
            # or the database could never be used (nor initialised) again.
            try:
                made = bool(await iam.list_accounts())
            except Exception:
                made = True
            if not made:
                settings.keyring_path.unlink(missing_ok=True)  # no half-initialised directory
                with contextlib.suppress(Exception):
                    await store.delete(claim.ref, check=_ours(owner))  # another may begin
            raise
        try:
            await sp.load(settings, store, keyring, clock)  # the SAML SP key, made once
        except Exception as exc:  # the account is made: shown; a start makes the key
            log.warning("the SAML service provider key was not made now (%s): 'broker serve' "
                        "makes it when it starts", exc)
    finally:
        await store.close()
    return account, key


def _ours(owner: str) -> Callable[[Record], None]:
    def check(found: Record) -> None:
        if found.data.get("owner") != owner:
            raise ConfigError("the installation claim is another init's")
    return check


def _still_ours(owner: str, clock: Clock) -> Callable[[Record], dict[str, str]]:
    def confirm(found: Record) -> dict[str, str]:
        _ours(owner)(found)
        return {"initialised": clock.now().isoformat(), "owner": owner}
    return confirm


# A claim this old, with no account made, was left by an init that stopped midway (killed,
# its database connection lost): the next init takes it over.
STALE_CLAIM = timedelta(seconds=60)


async def _take_over_claim(store: EntityStore, iam: IamService, claim: Record, clock: Clock,
                           refused: ConfigError, keyring_path: Path) -> None:
    if await iam.list_accounts():
        raise refused from None

    def take_over(found: Record) -> dict[str, str]:
        try:
            started = datetime.fromisoformat(str(found.data.get("initialised")))
        except ValueError:
            started = clock.now() - STALE_CLAIM
        if clock.now() - started < STALE_CLAIM:
            raise ConfigError(
                "another 'broker init' is initialising this database now: wait for it, then "
                f"copy that broker's keyring to {keyring_path} instead")
        return dict(claim.data)  # this init's time and owner

    await store.update(claim.ref, take_over)


def audit_issued_locally(settings: Settings, clock: Clock, key: NewAccessKey,
                         command: str) -> None:
    """The audit line of a root access key the command line issued (init, accounts create)."""
    sink = open_sink(settings.audit, command_line=True)
    try:
        _audit_issued(sink, clock, key, command)
    finally:
        sink.close()


def _audit_issued(sink: AuditSink, clock: Clock, key: NewAccessKey, command: str) -> None:
    sink.emit(AuditEvent(
        time=clock.now(), event="CreateAccessKey", outcome="issued",
        request_id=new_request_id(), source_ip=None, user_agent=f"broker {command}",
        account=key.key.account_id, access_key_id=key.key.access_key_id,
        subject=arn.root(key.key.account_id),
    ))


def _private(path: Path) -> None:
    # Not ours to change on a mounted volume; the keyring file itself is 0600 anyway.
    with contextlib.suppress(OSError):
        path.chmod(0o700)

