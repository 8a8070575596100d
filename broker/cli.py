"""The command line: broker init | serve | accounts | keys | apply | check.

Every command reads the same settings (``--config FILE``, ``BROKER_*`` variables, flags) and
opens the same stores as the server. A fault is one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from broker import logformat, metrics
from broker import settings as settings_module
from broker.aws import ids
from broker.aws.errors import AwsError
from broker.clock import SystemClock
from broker.errors import BrokerError
from broker.iam import declarative
from broker.iam.entities import Account
from broker.iam.service import IamService, NewAccessKey
from broker.keyring import Keyring
from broker.organizations.document import Org
from broker.organizations.service import OrganizationsService
from broker.runtime import (
    audit_issued_locally,
    initialize,
    is_initialized,
    open_entity_store,
    open_ephemeral_store,
)
from broker.settings import Settings
from broker.signin.password import Throttle

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> NoReturn:
    click.echo(f"broker: error: {message}", err=True)
    sys.exit(2)


def _settings(config: str | None, data_dir: str | None, **server: Any) -> Settings:
    overrides = {f"server.{k}": v for k, v in server.items()}
    overrides["server.data_dir"] = data_dir
    return settings_module.load(config or os.environ.get("BROKER_CONFIG") or None,
                                overrides=overrides)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except AwsError as exc:
        _fail(f"{exc.code}: {exc.message}")
    except BrokerError as exc:
        _fail(str(exc))


def _account_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not ids.ACCOUNT_ID.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a 12-digit account id")
    return value


def common(fn: F) -> F:
    fn = click.option("--config", "config", type=click.Path(dir_okay=False),
                      help="TOML settings file (also BROKER_CONFIG).")(fn)
    fn = click.option("--data-dir", "data_dir", type=click.Path(file_okay=False),
                      help="Data directory (default ./.broker).")(fn)
    return fn


def _credentials_text(account: Account, key: NewAccessKey) -> str:
    return (
        f"Account {account.id} is ready. Its root access key is shown once; keep it safe:\n"
        f"  AWS_ACCESS_KEY_ID={key.key.access_key_id}\n"
        f"  AWS_SECRET_ACCESS_KEY={key.secret_access_key}\n"
    )


def _credentials_json(account: Account, key: NewAccessKey) -> str:
    return json.dumps({
        "account_id": account.id,
        "root": {
            "access_key_id": key.key.access_key_id,
            "secret_access_key": key.secret_access_key,
        },
    })


@click.group()
@click.version_option(package_name="broker")
def main() -> None:
    """The broker: federation identity broker and SSO gateway speaking AWS's protocols."""


# -- init and serve -----------------------------------------------------------------------------


def root_options(command: Any) -> Any:
    """--root-email and --root-password-file, for init and accounts create."""
    command = click.option(
        "--root-password-file", type=click.Path(dir_okay=False, exists=True),
        help="A file whose first line is the root user's password (without it: asked for on "
             "a terminal; with --json, or with no terminal, no password is set and root "
             "console sign-in stays off).")(command)
    return click.option("--root-email", metavar="EMAIL",
                        help="The root user's email address (unique among accounts).")(command)


def _root_password(path: str | None, as_json: bool, email: str | None) -> str | None:
    """The root password from its file, or asked for on a terminal, or none."""
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0]:
            _fail(f"--root-password-file {path}: the first line must be the password")
        return lines[0]
    if as_json or email is None or not sys.stdin.isatty():
        return None
    value: str = click.prompt("Root user's password", hide_input=True,
                              confirmation_prompt=True)
    return value


@main.command()
@common
@click.option("--account-id", callback=_account_id,
              help="12-digit id of the first account (default: random).")
@root_options
@click.option("--json", "as_json", is_flag=True, help="Print the root credentials as JSON.")
def init(config: str | None, data_dir: str | None, account_id: str | None,
         root_email: str | None, root_password_file: str | None, as_json: bool) -> None:
    """Create a data directory: keyring, database, first account and its root access key."""
    try:
        settings = _settings(config, data_dir)
    except BrokerError as exc:
        _fail(str(exc))
    password = _root_password(root_password_file, as_json, root_email)
    account, key = _run(initialize(settings, account_id=account_id, root_email=root_email,
                                   root_password=password))
    click.echo(_credentials_json(account, key) if as_json else _credentials_text(account, key))


@main.command()
@common
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--public-url", help="URL clients use to reach the broker.")
@click.option("--workers", type=int, help="Worker processes (default 1).")
@click.option("--dev", is_flag=True, default=None,
              help="Development mode: a demo identity provider with demo people and roles "
                   "(loopback only).")
def serve(config: str | None, data_dir: str | None, host: str | None, port: int | None,
          public_url: str | None, workers: int | None, dev: bool | None) -> None:
    """Serve the broker. An empty data directory is initialised first."""
    import uvicorn

    try:
        settings = _settings(config, data_dir, host=host, port=port, public_url=public_url,
                             workers=workers, dev=dev)
    except BrokerError as exc:
        _fail(str(exc))
    log_config = logformat.configure(settings.log.format, settings.log.level)
    _serve_signals()
    if not is_initialized(settings):
        account, key = _run(initialize(settings))
        click.echo(f"Initialised {settings.data_dir.resolve()}.")
        click.echo(_credentials_text(account, key))
    from broker.app import server_options

    options = server_options(settings)
    if log_config is not None:
        options["log_config"] = log_config  # uvicorn's lines (and its workers') in JSON too
    try:  # before the workers start: they inherit the multiprocess directory
        metrics.prepare(settings.metrics.enabled, settings.server.workers,
                        settings.metrics.host, settings.metrics.port)
    except OSError as exc:
        _fail(f"metrics.port {settings.metrics.port}: cannot listen: {exc.strerror}")
    click.echo(f"Serving on {settings.public_url}")
    if settings.server.dev:
        click.echo(f"DEVELOPMENT MODE: demo sign-in at {settings.public_url}/dev/signin "
                   "(demo people and passwords are on that page).")
    if settings.server.workers == 1:
        from broker.app import create_app

        uvicorn.run(create_app(settings), **options)
        return
    # Worker processes build their own app from the environment: hand the flags down.
    if config:
        os.environ["BROKER_CONFIG"] = str(Path(config).resolve())
    for name, value in (("DATA_DIR", str(settings.data_dir.resolve())),
                       ("HOST", settings.server.host), ("PORT", str(settings.server.port)),
                       ("PUBLIC_URL", settings.server.public_url),
                       ("WORKERS", str(settings.server.workers))):
        if value:
            os.environ[f"BROKER_SERVER_{name}"] = value
    _supervise(settings.server.workers, options)


def _supervise(workers: int, options: dict[str, Any]) -> None:
    """uvicorn's supervisor over worker processes (what ``uvicorn.run(workers=N)`` runs), which
    on SIGTERM or SIGINT also closes its own copy of the listening socket at once: the workers
    close theirs as they shut down, and a copy left open would queue new connections that
    nobody serves, instead of refusing them, until the last worker has finished. A worker that
    fails to start (the store unreachable, a setting refused) stops it too, and then it exits
    3, uvicorn's status for a failed start, as one worker does; after a signal, 0."""
    from uvicorn import Config
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        signalled = False  # else what stops it is a worker's failed start

        def _stop_accepting(self) -> None:
            self.signalled = True
            for sock in self.sockets:
                sock.close()

        def handle_term(self) -> None:
            self._stop_accepting()
            super().handle_term()

        def handle_int(self) -> None:
            self._stop_accepting()
            super().handle_int()

    config = Config("broker.cli:worker_app", factory=True, workers=workers, **options)
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    if not supervisor.signalled:
        # It stopped because a worker failed to start (it logged which): a failed start, as
        # with one worker, for the orchestrator to see rather than a clean exit.
        sys.exit(STARTUP_FAILURE)


def worker_app() -> Any:
    """The app of one of uvicorn's worker processes, built from the environment ``serve``
    hands down. A worker that cannot build it (a setting refused, a file it cannot read)
    exits with uvicorn's startup-failure status, on which the supervisor stops and fails as
    well; any other status would have it start the worker again, and fail again, forever."""
    import logging

    from uvicorn.config import STARTUP_FAILURE

    from broker.app import app_from_environment

    log = logging.getLogger("broker.cli")
    try:
        return app_from_environment()
    except BrokerError as exc:
        log.error("worker cannot start: %s", exc)
    except Exception:
        log.exception("worker cannot start")
    sys.exit(STARTUP_FAILURE)


def _serve_signals() -> None:
    """SIGTERM ends ``broker serve`` with status 0. uvicorn takes the signal while it serves,
    stops accepting, lets requests in flight finish (``server.shutdown_timeout_seconds``),
    runs the lifespan's shutdown (last-used notes and audit lines flushed), then raises the
    signal again with the handler it found: this one, so the process exits 0 rather than
    dying by the signal (143). Before uvicorn serves, it exits at once. With several workers,
    uvicorn's supervisor takes SIGTERM itself (and SIGHUP: it replaces its workers).

    SIGHUP opens the audit file again (logrotate's ``postrotate``) instead of ending the
    process, as the signal's default action would."""
    import signal

    from broker.audit_sinks import request_reopen

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: request_reopen())


# -- accounts -----------------------------------------------------------------------------------


@main.group()
def accounts() -> None:
    """Accounts on this broker."""


@accounts.command("create")
@common
@click.option("--account-id", callback=_account_id, help="12-digit id (default: random).")
@root_options
@click.option("--json", "as_json", is_flag=True, help="Print the root credentials as JSON.")
def accounts_create(config: str | None, data_dir: str | None, account_id: str | None,
                    root_email: str | None, root_password_file: str | None,
                    as_json: bool) -> None:
    """Create an account with its root user; print its root access key once."""
    password = _root_password(root_password_file, as_json, root_email)

    async def create(iam: IamService) -> tuple[Account, NewAccessKey]:
        return await iam.create_account(account_id, root_email=root_email,
                                        root_password=password)

    account, key = _with_iam(config, data_dir, create)
    audit_issued_locally(_settings(config, data_dir), SystemClock(), key, "accounts create")
    click.echo(_credentials_json(account, key) if as_json else _credentials_text(account, key))


@accounts.command("list")
@common
@click.option("--json", "as_json", is_flag=True)
def accounts_list(config: str | None, data_dir: str | None, as_json: bool) -> None:
    """List the accounts: id, alias, creation date, and the organization each belongs to
    (its id, management or member, and the OU path by names), or - - - for none."""

    async def listing(iam: IamService) -> list[tuple[Account, Org | None]]:
        organizations = OrganizationsService(iam, SystemClock())
        return [(a, await organizations.org_of(a.id)) for a in await iam.list_accounts()]

    found = _with_iam(config, data_dir, listing)
    if as_json:
        click.echo(json.dumps([{"account_id": a.id, "alias": a.alias,
                                "created": a.created.isoformat(),
                                "organization": None if org is None else {
                                    "id": org.id, "management": org.management == a.id,
                                    "path": org.names_path(a.id)}}
                               for a, org in found]))
        return
    for account, org in found:
        place = "-  -  -" if org is None else (
            f"{org.id}  {'management' if org.management == account.id else 'member'}  "
            f"{org.names_path(account.id)}")
        click.echo(f"{account.id}  {account.alias or '-'}  created {account.created:%Y-%m-%d}  "
                   f"{place}")


def _with_iam(config: str | None, data_dir: str | None,
              action: Callable[[IamService], Awaitable[T]]) -> T:
    try:
        settings = _settings(config, data_dir)
        if not is_initialized(settings):
            raise BrokerError(f"{settings.data_dir} is not initialised: run 'broker init'")
        keyring = Keyring.load(settings.keyring_path)
    except BrokerError as exc:
        _fail(str(exc))

    async def go() -> T:
        store = open_entity_store(settings)
        try:
            await store.migrate()
            return await action(IamService(store, keyring, SystemClock()))
        finally:
            await store.close()

    return _run(go())


# -- sign-in lock-outs ---------------------------------------------------------------------------


@main.group("signin")
def signin_group() -> None:
    """The broker's own sign-in: failed attempts and lock-outs (kept in the ephemeral store,
    so these commands see a serving broker's counts only when that store is Redis)."""


def _with_throttle(config: str | None, data_dir: str | None,
                   action: Callable[[Throttle], Awaitable[T]]) -> T:
    try:
        settings = _settings(config, data_dir)
    except BrokerError as exc:
        _fail(str(exc))
    if settings.store.ephemeral_url == "memory://":
        _fail("the ephemeral store is in-process memory (store.ephemeral_url): a serving "
              "broker's lock-outs live in that process (restart it to clear them); with "
              "Redis these commands see and clear them")

    async def go() -> T:
        ephemeral = open_ephemeral_store(settings, SystemClock())
        try:
            return await action(Throttle(ephemeral, max_failures=settings.signin.max_failures,
                                         lock_seconds=settings.signin.lock_seconds))
        finally:
            await ephemeral.close()

    return _run(go())


@signin_group.command("status")
@common
@click.option("--account", "account_id", required=True, help="The account's 12-digit id.")
@click.option("--user", "user_name", help="The IAM user (default: the root user).")
def signin_status(config: str | None, data_dir: str | None, account_id: str,
                  user_name: str | None) -> None:
    """How many sign-ins of a user failed in the current window, and whether it is locked."""
    count, locked = _with_throttle(config, data_dir,
                                   lambda t: t.failures(account_id, user_name))
    who = user_name or "root"
    click.echo(f"{account_id} {who}: {count} failed sign-ins in the current window; "
               + ("locked out" if locked else "not locked"))


@signin_group.command("unlock")
@common
@click.option("--account", "account_id", required=True, help="The account's 12-digit id.")
@click.option("--user", "user_name", help="The IAM user (default: the root user).")
def signin_unlock(config: str | None, data_dir: str | None, account_id: str,
                  user_name: str | None) -> None:
    """End a user's lock-out and forget its failed sign-ins."""
    _with_throttle(config, data_dir, lambda t: t.unlock(account_id, user_name))
    click.echo(f"{account_id} {user_name or 'root'}: unlocked")


# -- keys ---------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """The keyring that seals session tokens and stored secrets."""


@keys.command("list")
@common
def keys_list(config: str | None, data_dir: str | None) -> None:
    """List keys: id, created, state, and how many stored secrets each seals."""

    async def listing(iam: IamService) -> list[str]:
        sealing = iam.keyring.sealing.id
        rows = []
        for key in iam.keyring.keys:
            state = "sealing" if key.id == sealing else key.state
            sealed = await iam.secrets_sealed_with(key.id)
            rows.append(f"{key.id}  created {key.created}  {state:8}  seals {sealed} secrets")
        return rows

    for row in _with_iam(config, data_dir, listing):
        click.echo(row)


@keys.command("add")
@common
def keys_add(config: str | None, data_dir: str | None) -> None:
    """Stage a new key: it opens what it seals, but seals nothing until activated. Copy the
    keyring file to every broker host, then run 'broker keys activate'."""

    async def add(iam: IamService) -> str:
        key = iam.keyring.add(SystemClock())
        iam.keyring.save()
        return key.id

    key_id = _with_iam(config, data_dir, add)
    click.echo(f"Staged key {key_id}. Copy {_keyring_path(config, data_dir)} to every broker "
               f"host, then run: broker keys activate {key_id}")


async def _reseal_sources(iam: IamService, sealed_with: str | None = None) -> int:
    """Identity Center's OIDC identity sources' client secrets: resealed, or (``sealed_with``)
    counted."""
    from broker.identitycenter import sources

    accounts = [a.id for a in await iam.list_accounts()]
    if sealed_with is not None:
        return await sources.sealed_with(iam.store, iam.keyring, accounts, sealed_with)
    return await sources.reseal_secrets(iam.store, iam.keyring, accounts)


@keys.command("activate")
@common
@click.argument("key_id")
def keys_activate(config: str | None, data_dir: str | None, key_id: str) -> None:
    """Make a staged key the sealing key and reseal stored secrets with it."""

    async def activate(iam: IamService) -> int:
        iam.keyring.activate(key_id, SystemClock())
        iam.keyring.save()  # before resealing, so that this host can open what it writes
        return await iam.reseal_secrets() + await _reseal_sources(iam)

    resealed = _with_iam(config, data_dir, activate)
    click.echo(f"Key {key_id} now seals; resealed {resealed} stored secrets.")


@keys.command("rotate")
@common
def keys_rotate(config: str | None, data_dir: str | None) -> None:
    """Add a key, make it the sealing key, and reseal stored secrets with it, at once: for one
    host, or hosts sharing one keyring file. (Separate copies: 'keys add', then 'activate'.)"""

    async def rotate(iam: IamService) -> tuple[str, int]:
        key = iam.keyring.rotate(SystemClock())
        iam.keyring.save()  # before resealing, so that every process can open what we write
        return key.id, await iam.reseal_secrets() + await _reseal_sources(iam)

    key_id, resealed = _with_iam(config, data_dir, rotate)
    click.echo(f"Key {key_id} now seals; resealed {resealed} stored secrets.")


@keys.command("retire")
@common
@click.argument("key_id")
def keys_retire(config: str | None, data_dir: str | None, key_id: str) -> None:
    """Retire a key: what it sealed no longer opens. Rotate first."""

    async def retire(iam: IamService) -> int:
        iam.keyring.check_retirable(key_id)
        resealed = await iam.reseal_secrets() + await _reseal_sources(iam)
        left = await iam.secrets_sealed_with(key_id) + await _reseal_sources(iam, key_id)
        if left:
            raise BrokerError(f"{left} stored secrets are still sealed with {key_id}")
        iam.keyring.retire(key_id, SystemClock())
        iam.keyring.save()
        return resealed

    resealed = _with_iam(config, data_dir, retire)
    click.echo(f"Retired {key_id} (resealed {resealed} stored secrets first). Session tokens it "
               "sealed stop working as each process rereads the keyring.")


def _keyring_path(config: str | None, data_dir: str | None) -> Path:
    return _settings(config, data_dir).keyring_path


# -- declarative IAM ----------------------------------------------------------------------------


@main.command()
@common
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def apply(config: str | None, data_dir: str | None, file: str) -> None:
    """Make IAM and organizations match a declarative TOML file (idempotent; prints what
    changes)."""
    try:
        plan = declarative.load(Path(file))
    except BrokerError as exc:
        _fail(str(exc))

    async def go(iam: IamService) -> list[str]:
        return await declarative.apply(plan, iam, OrganizationsService(iam, SystemClock()))

    lines = _with_iam(config, data_dir, go)
    for line in lines:
        click.echo(line)
    changed = sum(1 for line in lines if not line.startswith("="))
    click.echo(f"{changed} change(s).")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def check(file: str) -> None:
    """Validate a declarative TOML file without changing anything."""
    try:
        plan = declarative.load(Path(file))
    except BrokerError as exc:
        _fail(str(exc))
    policies = sum(len(a.policies) for a in plan.accounts)
    orgs = [a.organization for a in plan.accounts if a.organization is not None]
    org_text = "" if not orgs else (
        f", {len(orgs)} organization(s) with {sum(len(o.ous) for o in orgs)} OU(s), "
        f"{sum(len(o.policies) for o in orgs)} SCP(s) and RCP(s), "
        f"{sum(len(o.accounts) for o in orgs)} placed account(s)")
    click.echo(f"{file}: valid ({len(plan.accounts)} account(s), {plan.count('user')} user(s), "
               f"{plan.count('group')} group(s), {plan.count('role')} role(s), {policies} "
               f"managed policies, {sum(len(a.oidc_providers) for a in plan.accounts)} OIDC "
               f"provider(s){org_text}).")


# -- Identity Center ----------------------------------------------------------------------------


@main.group("sso")
def sso_group() -> None:
    """IAM Identity Center: the access portal's directory users."""


@sso_group.command("reset-password")
@common
@click.option("--identity-store-id", required=True, help="The instance's directory (d-…).")
@click.option("--user-name", required=True, help="The directory user's UserName.")
@click.option("--remove-mfa-devices", "remove_mfa", is_flag=True,
              help="Also remove the user's MFA devices (a lost one): the next sign-in "
                   "registers a new one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sso_reset_password(config: str | None, data_dir: str | None, identity_store_id: str,
                       user_name: str, remove_mfa: bool, as_json: bool) -> None:
    """Give a directory user a one-time password for the access portal: it replaces their
    password, must be changed at the next sign-in and expires after seven days. With
    sso.smtp_url set, e-mail them an invitation link instead (to their primary address in the
    directory), which sets their password once, within seven days."""
    from broker.runtime import open_runtime

    try:
        settings = _settings(config, data_dir)
        if not is_initialized(settings):
            raise BrokerError(f"{settings.data_dir} is not initialised: run 'broker init'")
    except BrokerError as exc:
        _fail(str(exc))

    async def go() -> str:
        runtime = await open_runtime(settings)
        try:
            if runtime.portal.mailer is not None:
                return await runtime.portal.invite(identity_store_id, user_name,
                                                   remove_mfa=remove_mfa)
            return await runtime.portal.reset_password(identity_store_id, user_name,
                                                       remove_mfa=remove_mfa)
        finally:
            await runtime.close()

    answer = _run(go())
    if settings.sso.smtp_url:
        if as_json:
            click.echo(json.dumps({"invited": answer}))
        else:
            click.echo(f"Invitation for {user_name} in {identity_store_id} sent to {answer} "
                       f"(the link sets their password, once, within 7 days).")
    elif as_json:
        click.echo(json.dumps({"one_time_password": answer}))
    else:
        click.echo(f"One-time password for {user_name} in {identity_store_id} (shown once; "
                   f"it must be changed at the first sign-in, within 7 days):\n  {answer}\n"
                   f"Sign-in: {settings.public_url}/start/{identity_store_id}")


@sso_group.group("scim-token")
def sso_scim_token() -> None:
    """Bearer tokens of an instance's SCIM 2.0 endpoint (PUBLIC_URL/scim/v2/d-…/), which an
    external identity provider provisions users and groups through: at most two, each
    expiring (a year by default), shown once (docs/identity-center.md, "Automatic
    provisioning (SCIM)")."""


def _scim_tokens(config: str | None, data_dir: str | None, identity_store_id: str,
                 act: Callable[[Any, Any], Awaitable[Any]]) -> tuple[Any, Any]:
    """Run ``act(tokens, instance)`` on the instance of ``identity_store_id``."""
    from broker.runtime import open_runtime
    from broker.scim.tokens import ScimTokens, TokenError

    try:
        settings = _settings(config, data_dir)
        if not is_initialized(settings):
            raise BrokerError(f"{settings.data_dir} is not initialised: run 'broker init'")
    except BrokerError as exc:
        _fail(str(exc))

    async def go() -> tuple[Any, Any]:
        runtime = await open_runtime(settings)
        try:
            instance = await runtime.identity_center.instances.by_store(identity_store_id)
            if instance is None:
                raise BrokerError(f"there is no instance with the identity store "
                                  f"{identity_store_id}")
            tokens = ScimTokens(runtime.identity_center.store, runtime.clock)
            return settings, await act(tokens, instance)
        except TokenError as exc:
            raise BrokerError(str(exc)) from None
        finally:
            await runtime.close()

    answer: tuple[Any, Any] = _run(go())
    return answer


def _scim_token_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    fn = click.option("--identity-store-id", required=True,
                      help="The instance's identity store (d-…).")(fn)
    return common(fn)


def _show_new_token(settings: Any, made: Any, as_json: bool) -> None:
    from broker.scim.tokens import NewToken

    assert isinstance(made, NewToken)
    endpoint = f"{settings.public_url.rstrip('/')}/scim/v2/{made.info.identity_store_id}"
    if as_json:
        click.echo(json.dumps({**made.info.wire(made.info.created), "token": made.token,
                               "scim_endpoint": endpoint}))
        return
    click.echo(f"SCIM endpoint: {endpoint}\nAccess token (shown once; it expires "
               f"{made.info.expires.isoformat()}):\n  {made.token}")


@sso_scim_token.command("create")
@_scim_token_options
@click.option("--days", type=int, default=365, show_default=True,
              help="Days until the token expires.")
def sso_scim_token_create(config: str | None, data_dir: str | None, identity_store_id: str,
                          as_json: bool, days: int) -> None:
    """Make a token (an instance has at most two)."""
    settings, made = _scim_tokens(config, data_dir, identity_store_id,
                                  lambda tokens, instance: tokens.create(instance, days=days))
    _show_new_token(settings, made, as_json)


@sso_scim_token.command("rotate")
@_scim_token_options
@click.option("--token-id", required=True, help="The token to replace.")
@click.option("--days", type=int, default=365, show_default=True,
              help="Days until the new token expires.")
def sso_scim_token_rotate(config: str | None, data_dir: str | None, identity_store_id: str,
                          as_json: bool, token_id: str, days: int) -> None:
    """Replace a token by a new one (the old one stops working)."""
    settings, made = _scim_tokens(
        config, data_dir, identity_store_id,
        lambda tokens, instance: tokens.rotate(instance, token_id, days=days))
    _show_new_token(settings, made, as_json)


@sso_scim_token.command("list")
@_scim_token_options
def sso_scim_token_list(config: str | None, data_dir: str | None, identity_store_id: str,
                        as_json: bool) -> None:
    """The instance's tokens (ids, creation, expiry; never the tokens)."""
    from broker.clock import SystemClock

    _, found = _scim_tokens(config, data_dir, identity_store_id,
                            lambda tokens, instance: tokens.list(instance))
    now = SystemClock().now()
    if as_json:
        click.echo(json.dumps({"tokens": [t.wire(now) for t in found]}))
        return
    if not found:
        click.echo(f"{identity_store_id} has no SCIM token.")
    for t in found:
        click.echo(f"{t.token_id}  {t.status(now):8}  created {t.created.isoformat()}  "
                   f"expires {t.expires.isoformat()}")


@sso_scim_token.command("revoke")
@_scim_token_options
@click.option("--token-id", required=True, help="The token to revoke.")
def sso_scim_token_revoke(config: str | None, data_dir: str | None, identity_store_id: str,
                          as_json: bool, token_id: str) -> None:
    """Revoke a token: requests with it are refused at once, on every broker process."""
    _scim_tokens(config, data_dir, identity_store_id,
                 lambda tokens, instance: tokens.revoke(instance, token_id))
    if as_json:
        click.echo(json.dumps({"revoked": token_id}))
    else:
        click.echo(f"Revoked {token_id}.")


@sso_group.group("identity-source")
def sso_identity_source() -> None:
    """An instance's identity source: its directory, an external SAML 2.0 identity provider,
    or an OpenID Connect provider (docs/identity-center.md, "Identity sources"). Changing it
    ends the instance's portal sessions."""


def _instance_options(fn: F) -> F:
    fn = click.option("--identity-store-id", help="The instance's directory (d-…).")(fn)
    fn = click.option("--instance", "instance_arn",
                      help="The instance's ARN (arn:aws:sso:::instance/ssoins-…).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    return common(fn)


def _identity_source(config: str | None, data_dir: str | None, instance_arn: str | None,
                     identity_store_id: str | None, as_json: bool,
                     act: Callable[[Any, Any], Awaitable[Any]]) -> None:
    """Run ``act(sources, instance)`` on the named instance and print its source."""
    from broker.identitycenter.sources import urls
    from broker.runtime import open_runtime

    if (instance_arn is None) == (identity_store_id is None):
        _fail("name the instance: --instance ARN or --identity-store-id d-…")
    try:
        settings = _settings(config, data_dir)
        if not is_initialized(settings):
            raise BrokerError(f"{settings.data_dir} is not initialised: run 'broker init'")
    except BrokerError as exc:
        _fail(str(exc))

    async def go() -> tuple[Any, Any]:
        runtime = await open_runtime(settings)
        try:
            portal = runtime.portal
            if identity_store_id is not None:
                instance = await portal.instance(identity_store_id)
            else:
                instance = None
                for account_id in [a.id for a in await runtime.iam.list_accounts()]:
                    found = await portal.instances.of_account(account_id)
                    if found is not None and found.arn == instance_arn:
                        instance = found
                if instance is None:
                    raise BrokerError(f"there is no instance {instance_arn}")
            return instance, await act(portal.sources, instance)
        finally:
            await runtime.close()

    instance, source = _run(go())
    sp = urls(settings.public_url, instance)
    shown = {**source.show(), "identity_store_id": instance.identity_store_id,
             "start_url": f"{settings.public_url}/start/{instance.identity_store_id}",
             "service_provider": {"entity_id": sp.entity_id, "metadata_url": sp.entity_id,
                                  "acs_url": sp.acs_url, "login_url": sp.login_url,
                                  "oidc_redirect_uri": sp.redirect_uri}}
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"Identity source of {instance.identity_store_id}: {source.kind}")
    for name, value in (source.show().get(source.kind) or {}).items():
        click.echo(f"  {name}: {value}")
    click.echo("Service provider (give these to the identity provider):")
    click.echo(f"  SAML metadata / entity id: {sp.entity_id}")
    click.echo(f"  SAML ACS URL: {sp.acs_url}")
    click.echo(f"  OIDC redirect URI: {sp.redirect_uri}")


@sso_identity_source.command("show")
@_instance_options
def sso_identity_source_show(config: str | None, data_dir: str | None,
                             instance_arn: str | None, identity_store_id: str | None,
                             as_json: bool) -> None:
    """Show the instance's identity source and the service-provider URLs of its portal."""
    _identity_source(config, data_dir, instance_arn, identity_store_id, as_json,
                     lambda sources, instance: sources.get(instance))


@sso_identity_source.command("set-directory")
@_instance_options
def sso_identity_source_directory(config: str | None, data_dir: str | None,
                                  instance_arn: str | None, identity_store_id: str | None,
                                  as_json: bool) -> None:
    """Sign people in with the directory's passwords and MFA again (ends portal sessions)."""
    _identity_source(config, data_dir, instance_arn, identity_store_id, as_json,
                     lambda sources, instance: sources.set_directory(instance))


@sso_identity_source.command("set-saml")
@_instance_options
@click.option("--metadata", "metadata_file", required=True,
              type=click.Path(dir_okay=False, exists=True),
              help="The identity provider's SAML 2.0 metadata (XML file).")
def sso_identity_source_saml(config: str | None, data_dir: str | None,
                             instance_arn: str | None, identity_store_id: str | None,
                             as_json: bool, metadata_file: str) -> None:
    """Sign people in through an external SAML 2.0 identity provider (ends portal sessions)."""
    try:
        text = Path(metadata_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{metadata_file}: {exc}")
    _identity_source(config, data_dir, instance_arn, identity_store_id, as_json,
                     lambda sources, instance: sources.set_saml(instance, text))


@sso_identity_source.command("set-oidc")
@_instance_options
@click.option("--issuer", required=True, help="The provider's issuer URL (its tokens' iss).")
@click.option("--client-id", required=True, help="The client id registered for the broker.")
@click.option("--client-secret-file", type=click.Path(dir_okay=False, exists=True),
              help="A file holding the client secret (none: a public client with PKCE).")
@click.option("--scope", "scopes", multiple=True,
              help="A scope to ask for (repeatable; default: openid profile email).")
@click.option("--thumbprint", "thumbprints", multiple=True,
              help="SHA-1 of a certificate of the provider's TLS chain to trust when the "
                   "system's CAs do not (repeatable).")
@click.option("--user-claim", default="preferred_username", show_default=True,
              help="The ID token claim that holds the directory user's userName.")
def sso_identity_source_oidc(config: str | None, data_dir: str | None,
                             instance_arn: str | None, identity_store_id: str | None,
                             as_json: bool, issuer: str, client_id: str,
                             client_secret_file: str | None, scopes: tuple[str, ...],
                             thumbprints: tuple[str, ...], user_claim: str) -> None:
    """Sign people in through an OpenID Connect provider (authorization code with PKCE; ends
    portal sessions). Its discovery document and keys are read now."""
    secret = None
    if client_secret_file is not None:
        try:
            secret = Path(client_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"{client_secret_file}: {exc}")
    _identity_source(config, data_dir, instance_arn, identity_store_id, as_json,
                     lambda sources, instance: sources.set_oidc(
                         instance, issuer=issuer, client_id=client_id, client_secret=secret,
                         scopes=tuple(scopes) or ("openid", "profile", "email"),
                         thumbprints=thumbprints, user_claim=user_claim))


@main.command("login")
@click.option("--start-url", required=True,
              help="The instance's access portal: PUBLIC_URL/start/d-….")
@click.option("--profile", required=True, help="The AWS profile to write.")
@click.option("--account-id", help="The account of the role (default: the first assigned).")
@click.option("--role-name", help="The role (permission set) to use (default: the first).")
@click.option("--region", default="us-east-1", show_default=True,
              help="The region written to the profile and its sso-session.")
@click.option("--endpoint-url", help="The broker's endpoint (default: from the start URL).")
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
def login_command(start_url: str, profile: str, account_id: str | None,
                  role_name: str | None, region: str, endpoint_url: str | None,
                  no_browser: bool) -> None:
    """Sign in to IAM Identity Center through the browser (device authorization) and write
    the token cache and the AWS profile: then `aws --profile NAME ...` needs no keys."""
    from broker.login import LoginFailed, login

    try:
        login(start_url, profile, account_id=account_id, role_name=role_name, region=region,
              endpoint_url=endpoint_url, open_browser=not no_browser,
              say=lambda text: click.echo(text, err=True))
    except LoginFailed as exc:
        _fail(str(exc))
