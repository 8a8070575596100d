"""Typed settings: defaults, overridden by a TOML file, overridden by ``BROKER_*`` variables.

Every setting has a section and a key (``server.port``), a type, a default and a one-line
description; its environment variable is ``BROKER_<SECTION>_<KEY>`` in capitals
(``BROKER_SERVER_PORT``). A value that cannot be used stops start-up with one line that names
the setting, where the value came from and what is wrong. docs/configuration.md lists them all.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from broker.aws.ids import REGION
from broker.errors import ConfigError
from broker.mail import loopback

Parser = Callable[[Any], Any]


# -- value parsers: each takes a TOML value or an environment string, returns the typed value ---


def _int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer from {low} to {high}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be an integer from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _choice(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    return parse


def _http_url(value: Any) -> str:
    text = _str(value).rstrip("/")
    if text == "":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    # The scheme in lower case: "https://" decides the cookies' Secure flag and prefix.
    return parts.scheme + text[len(parts.scheme):]


def _database_url(value: Any) -> str:
    text = _str(value)
    if text and not re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", text):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    return text


def _ephemeral_url(value: Any) -> str:
    text = _str(value)
    if text != "memory://" and not re.match(r"^rediss?://", text):
        raise ValueError("must be memory:// or a redis:// (rediss://) URL")
    return text


def _list(item: Parser) -> Parser:
    def parse(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError("must be a list (or, in the environment, a comma-separated string)")
        return tuple(item(v) for v in value)

    return parse


def _region(value: Any) -> str:
    text = _str(value)
    if not REGION.fullmatch(text):
        raise ValueError(f"{text!r} is not a region name such as us-east-1")
    return text


def _network(value: Any) -> str:
    text = _str(value)
    if text == "*":
        return text
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network") from None
    return text


def _level(value: Any) -> str:
    return str(_choice("debug", "info", "warning", "error")(str(value).lower()))


def setting(default: Any, parse: Parser, doc: str) -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc})


AWS_AUDIENCES = frozenset({"urn:amazon:webservices", "https://signin.aws.amazon.com/saml"})


# -- the settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", _str, "Address to listen on.")
    port: int = setting(8000, _int(1, 65535), "TCP port to listen on.")
    public_url: str = setting(
        "", _http_url,
        "URL clients use to reach the broker (scheme, host, port). Default: http://HOST:PORT.",
    )
    workers: int = setting(
        1, _int(1, 64), "Worker processes. More than one needs a shared ephemeral store (Redis)."
    )
    data_dir: str = setting(
        ".broker", _str, "Directory of the embedded database and the keyring file."
    )
    trusted_proxies: tuple[str, ...] = setting(
        ("127.0.0.1",), _list(_network),
        "Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed ('*' for any).",
    )
    max_body_bytes: int = setting(
        1_048_576, _int(1024, 64 * 1_048_576), "Largest request body accepted, in bytes."
    )
    dev: bool = setting(
        False, _bool,
        "Development mode: a built-in demo identity provider (demo people, roles and "
        "passwords, labelled on every page). The broker refuses to start in this mode unless "
        "it listens on a loopback address, with one worker.",
    )
    shutdown_timeout_seconds: int = setting(
        25, _int(1, 3600),
        "On SIGTERM: how long requests in flight may take to finish before they are cut off "
        "(new connections are refused at once; the process then flushes last-used notes and "
        "audit lines and exits 0).",
    )


@dataclass(frozen=True)
class StoreSettings:
    database_url: str = setting(
        "", _database_url,
        "Durable store: sqlite:///PATH or postgresql://USER@HOST/DB. "
        "Default: SQLite in the data directory.",
    )
    pool_size: int = setting(5, _int(1, 100), "PostgreSQL connections per process.")
    ephemeral_url: str = setting(
        "memory://", _ephemeral_url,
        "Short-lived state: memory:// (one process) or redis://HOST:PORT/DB.",
    )
    redis_prefix: str = setting("broker:", _str, "Prefix of every key the broker writes in Redis.")


@dataclass(frozen=True)
class KeyringSettings:
    path: str = setting(
        "", _str, "Keyring file (AES-256-GCM keys). Default: keyring.json in the data directory."
    )
    check_interval_seconds: int = setting(
        5, _int(1, 3600), "How often a process looks for a rotated or retired key in the file."
    )


@dataclass(frozen=True)
class Sigv4Settings:
    clock_skew_seconds: int = setting(
        300, _int(60, 900), "How far a request's signing time may be from the broker's clock."
    )
    regions: tuple[str, ...] = setting(
        (), _list(_region),
        "Regions a credential scope may name. Empty: any well-formed region name.",
    )


@dataclass(frozen=True)
class IamSettings:
    policy_cache_seconds: int = setting(
        2, _int(0, 300),
        "How long a process may use what IAM said (a principal's policies, an access key, a "
        "role) before reading it again. Other processes see an IAM change within this time; the "
        "one that made it, at once.",
    )
    last_used_flush_seconds: int = setting(
        5, _int(1, 3600),
        "How often access-key last-use records are written to the store (in the background).",
    )


def _audience(value: Any) -> str:
    text = _str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an audience (a URI without spaces)")
    return text


def _relative_or_url_or_empty(value: Any) -> str:
    return "" if _str(value).strip() == "" else _relative_or_url(value)


def _relative_or_url(value: Any) -> str:
    text = _str(value).strip()
    if text.startswith("/") and not text.startswith(("//", "/\\")):
        return text
    return _http_url(text)


@dataclass(frozen=True)
class SamlSettings:
    sp_entity_id: str = setting(
        "", _str,
        "The broker's SAML entity id (the audience identity providers put in assertions). "
        "Default: PUBLIC_URL/saml/metadata.",
    )
    audiences: tuple[str, ...] = setting(
        (), _list(_audience),
        "More audiences accepted in assertions, beside the entity id (several names for one "
        "broker during a migration).",
    )
    accept_aws_audience: bool = setting(
        False, _bool,
        "Also accept AWS's own audiences (urn:amazon:webservices and "
        "https://signin.aws.amazon.com/saml), so that an IdP application made for AWS needs only "
        "its ACS URL changed.",
    )
    clock_skew_seconds: int = setting(
        60, _int(0, 300),
        "How far an assertion's NotBefore / NotOnOrAfter may be from the broker's clock.",
    )
    idp_initiated: bool = setting(
        True, _bool,
        "Accept sign-in responses that answer no request of the broker's (IdP-initiated "
        "sign-in, as AWS does). When false, only SP-initiated sign-in works: /saml/login, "
        "and an Identity Center portal's /start/{id}/saml/login.",
    )
    sp_key_file: str = setting(
        "", _str,
        "PEM private key (RSA) the broker decrypts assertions with. Default: one generated on "
        "first start and kept, sealed by the keyring, in the database.",
    )
    sp_certificate_file: str = setting(
        "", _str, "PEM certificate of sp_key_file, published in the SP metadata.",
    )


@dataclass(frozen=True)
class OidcSettings:
    clock_skew_seconds: int = setting(
        60, _int(0, 300),
        "How far a web identity token's exp, nbf and iat may be from the broker's clock.",
    )
    allow_http_loopback: bool = setting(
        False, _bool,
        "Accept OIDC providers at plain http:// URLs on a loopback host (127.0.0.1, ::1, "
        "localhost). For development only; every other provider must use https.",
    )
    timeout_seconds: int = setting(
        5, _int(1, 30),
        "How long the broker waits for an identity provider's discovery document and keys, "
        "together, each time it fetches them.",
    )
    key_cache_seconds: int = setting(
        3600, _int(0, 86400),
        "How long a provider's keys are kept when its JWKS response has no Cache-Control "
        "max-age.",
    )
    key_cache_min_seconds: int = setting(
        60, _int(0, 86400),
        "The least time keys are kept, whatever the provider's Cache-Control says.",
    )
    key_cache_max_seconds: int = setting(
        86400, _int(0, 604800),
        "The most time keys are kept, whatever the provider's Cache-Control says.",
    )
    refetch_interval_seconds: int = setting(
        60, _int(0, 3600),
        "A token signed with a key the broker does not know makes it fetch the provider's "
        "keys again at most once per this many seconds (per provider and process).",
    )
    max_stale_seconds: int = setting(
        86400, _int(0, 604800),
        "When a provider cannot be reached, keys whose cache time has passed are still used "
        "for this long; after that, tokens are refused until the provider answers.",
    )


@dataclass(frozen=True)
class SigninSettings:
    destinations: tuple[str, ...] = setting(
        (), _list(_relative_or_url),
        "Where sign-in may send a browser besides the broker's own /console: URL prefixes "
        "(scheme, host and port exact; the path a prefix), or paths on the broker.",
    )
    session_cookie: str = setting(
        "broker-session", _str,
        "Name of the console session cookie (prefixed __Host- when the public URL is https).",
    )
    url: str = setting(
        "", _relative_or_url_or_empty,
        "Where /console sends a browser that has no session: your identity provider's "
        "sign-in page, a custom identity broker, or /saml/login?provider=NAME. Default: "
        "/dev/signin in development mode, otherwise a page saying the person is not signed "
        "in.",
    )
    root_mfa_required: bool = setting(
        True, _bool,
        "Refuse console sign-in to a root user that has no MFA device (AWS now requires MFA "
        "for root users).",
    )
    max_failures: int = setting(
        5, _int(1, 1000),
        "Failed sign-ins (wrong password or MFA code) of one user within lock_seconds after "
        "which that user cannot sign in until the window ends; ten times as many from one "
        "source address lock that address.",
    )
    lock_seconds: int = setting(
        900, _int(1, 86400), "The window failed sign-ins are counted in, and the lock-out.",
    )


@dataclass(frozen=True)
class Application:
    """A web application behind the gateway: sign-in may send a browser to it, the console
    lists it, and ``/gateway/auth`` answers for it."""

    name: str
    url: str  # scheme, host and port exact; the path a prefix
    resource: str | None = None  # when set, gateway:Access on it must be allowed by policy


def _applications(value: Any) -> tuple[Application, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ValueError("must be a list of tables (in the environment, a JSON list of "
                             "objects)") from None
    if not isinstance(value, list):
        raise ValueError("must be a list of tables with name, url and optionally resource")
    apps = []
    for item in value:
        if not isinstance(item, dict) or not set(item) <= {"name", "url", "resource"} \
                or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ValueError("each application is a table with name, url and optionally "
                             "resource")
        if not isinstance(item.get("url"), str) or not item["url"].strip():
            raise ValueError(f"application {item['name']!r} needs a url")
        url = _http_url(item["url"])
        resource = item.get("resource")
        if resource is not None and (not isinstance(resource, str)
                                     or not resource.startswith("arn:")):
            raise ValueError(f"application {item['name']!r}: resource must be an ARN")
        apps.append(Application(item["name"].strip(), url, resource))
    return tuple(apps)


@dataclass(frozen=True)
class GatewaySettings:
    url_header: str = setting(
        "X-Forwarded", _choice("X-Forwarded", "X-Original-URL"),
        "Where /gateway/auth reads the URL the browser asked the proxy for: 'X-Forwarded' "
        "(X-Forwarded-Proto, -Host and -Uri, as Traefik and Caddy send them) or "
        "'X-Original-URL' (as the nginx example sets it). Only the named header is read: a "
        "proxy that passes the other one through from the client cannot be fooled by it.",
    )
    applications: tuple[Application, ...] = setting(
        (), _applications,
        "The web applications behind the gateway: a list of tables with name, url (scheme, "
        "host and port exact; the path a prefix) and optionally resource, an ARN on which "
        "policy must allow gateway:Access. In the environment, a JSON list of objects.",
    )


def _smtp_url(value: Any) -> str:
    text = _str(value).strip()
    if text == "":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
        raise ValueError("must be an smtp://, smtps:// or smtp+starttls:// URL with a host")
    try:
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must not have a path, query or fragment")
    if not unquote(f"{parts.username or ''}{parts.password or ''}").isascii():
        raise ValueError("has a user name or password that is not ASCII (SMTP AUTH PLAIN and "
                         "LOGIN as smtplib sends them)")
    if parts.scheme == "smtp" and parts.username and not loopback(parts.hostname):
        raise ValueError("would send its password in the clear: use smtp+starttls:// or "
                         "smtps:// (plain smtp:// with a password only to a loopback host)")
    return text


def _address(value: Any) -> str:
    text = _str(value).strip()
    if text == "":
        return text
    _, address = parseaddr(text)
    if "@" not in address or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must be an e-mail address (broker@example.com or "
                         "'Name <broker@example.com>')")
    return text


@dataclass(frozen=True)
class SsoSettings:
    session_hours: int = setting(
        8, _int(1, 2160),
        "How long an access portal session lasts, and the command line's sign-in (its tokens "
        "are refreshed until then): 1 to 2160 hours (90 days).",
    )
    smtp_url: str = setting(
        "", _smtp_url,
        "SMTP server that sends the access portal's invitations: smtp://HOST:PORT, "
        "smtps://USER:PASSWORD@HOST:465 or smtp+starttls://USER:PASSWORD@HOST:587. Empty: "
        "broker sso reset-password prints a one-time password instead.",
    )
    smtp_from: str = setting(
        "", _address, "The invitations' From address. Required with smtp_url.",
    )


def _syslog_address(value: Any) -> str:
    from broker.audit_sinks import parse_syslog_address

    text = _str(value).strip()
    parse_syslog_address(text)  # ValueError says what is wrong
    return text


@dataclass(frozen=True)
class AuditSettings:
    sink: str = setting("stdout", _choice("stdout", "file", "syslog"),
                        "Where audit events go: stdout, file or syslog.")
    path: str = setting(
        "", _str, "Audit file when sink = 'file' (one JSON line per event, appended)."
    )
    syslog_address: str = setting(
        "/dev/log", _syslog_address,
        "Where sink = 'syslog' sends: a local socket path (/dev/log) or udp://HOST:PORT or "
        "tcp://HOST:PORT (port 514 when left out).",
    )
    syslog_facility: str = setting(
        "auth", _choice("auth", "authpriv", "daemon", "user", "local0", "local1", "local2",
                        "local3", "local4", "local5", "local6", "local7"),
        "The syslog facility of audit messages.",
    )


@dataclass(frozen=True)
class LogSettings:
    level: str = setting("info", _level, "Log level: debug, info, warning or error.")
    access: bool = setting(False, _bool, "Log every HTTP request (uvicorn's access log).")
    format: str = setting(
        "text", _choice("text", "json"),
        "'text' (one line of prose per record) or 'json' (one JSON object per line with time, "
        "level, logger, message and the request id; access lines with method, path without "
        "its query, status and duration), all on standard error.",
    )


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = setting(False, _bool, "Count requests, store round trips, cache lookups, "
                            "credentials, sign-ins and throttling for Prometheus.")
    host: str = setting("127.0.0.1", _str, "Address of the metrics listener.")
    port: int = setting(
        0, _int(0, 65535),
        "Port of a listener of its own serving GET /metrics (0: none). Never the public port.",
    )
    public: bool = setting(
        False, _bool,
        "Also serve GET /metrics on the public port, to callers in public_networks only "
        "(everyone else gets the usual 404).",
    )
    public_networks: tuple[str, ...] = setting(
        ("127.0.0.1/32", "::1/128"), _list(_network),
        "Addresses that may read /metrics on the public port when public is true (the "
        "caller's address as the broker sees it, after server.trusted_proxies).",
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    keyring: KeyringSettings = field(default_factory=KeyringSettings)
    sigv4: Sigv4Settings = field(default_factory=Sigv4Settings)
    iam: IamSettings = field(default_factory=IamSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    saml: SamlSettings = field(default_factory=SamlSettings)
    signin: SigninSettings = field(default_factory=SigninSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    sso: SsoSettings = field(default_factory=SsoSettings)

    # -- derived values -------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        return self.store.database_url or f"sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @property
    def keyring_path(self) -> Path:
        return Path(self.keyring.path) if self.keyring.path else self.data_dir / "keyring.json"

    @property
    def public_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url
        host = self.server.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}"

    @property
    def acs_url(self) -> str:
        """Where identity providers send SAML responses (AWS: https://signin.aws.amazon.com/saml)."""
        return f"{self.public_url}/saml"

    @property
    def sp_entity_id(self) -> str:
        return self.saml.sp_entity_id or f"{self.public_url}/saml/metadata"

    @property
    def saml_audiences(self) -> frozenset[str]:
        names = {self.sp_entity_id, *self.saml.audiences}
        if self.saml.accept_aws_audience:
            names |= AWS_AUDIENCES
        return frozenset(names)


SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in fields(Settings)
}


def env_name(section: str, key: str) -> str:
    return f"BROKER_{section}_{key}".upper()


def describe() -> list[tuple[str, str, Any, str]]:
    """(setting, environment variable, default, description) for every setting."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            rows.append((f"{section}.{f.name}", env_name(section, f.name), f.default,
                         f.metadata["doc"]))
    return rows


def load(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < TOML file < environment < overrides (``{"server.port": 9000}``, from flags)."""
    environ = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if path is not None:
        file_values = _read_toml(Path(path))
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"{section}.{f.name}"
            parse: Parser = f.metadata["parse"]
            source, raw = None, None
            if name in file_values:
                source, raw = f"in {path}", file_values[name]
            env = env_name(section, f.name)
            if env in environ:
                source, raw = f"from {env}", environ[env]
            if overrides and name in overrides and overrides[name] is not None:
                source, raw = "from the command line", overrides[name]
            if source is None:
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"setting {name} ({source}): {exc}; got {raw!r}") from None
        sections[section] = cls(**values)
    settings = Settings(**sections)
    _check(settings)
    return settings


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError (``LABEL PATH: why``) if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{label}{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}{path}: not valid TOML: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    doc = read_toml(path, "config file ")
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if section not in SECTIONS:
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: {section} must be a table")
        known = {f.name for f in fields(SECTIONS[section])}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {section}.{key}")
            flat[f"{section}.{key}"] = value
    return flat


def _check(settings: Settings) -> None:
    if settings.server.dev:
        host = settings.server.host.strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"setting server.dev: development mode serves demo people with published "
                f"passwords, so it listens on loopback only (127.0.0.1 or ::1), not {host!r}")
        if settings.server.workers != 1:
            raise ConfigError("setting server.dev: development mode runs one worker")
    if settings.sso.smtp_url and not settings.sso.smtp_from:
        raise ConfigError("setting sso.smtp_from: required when sso.smtp_url is set")
    if settings.metrics.enabled and not settings.metrics.port and not settings.metrics.public:
        raise ConfigError("setting metrics.enabled: set metrics.port (a listener of its own) "
                          "or metrics.public = true, or nothing can read the metrics")
    if settings.metrics.port and settings.metrics.port == settings.server.port:
        raise ConfigError("setting metrics.port: must differ from server.port (the public "
                          "port serves metrics only with metrics.public)")
    if settings.audit.sink == "file" and not settings.audit.path:
        raise ConfigError("setting audit.path: required when audit.sink is 'file'")
    if settings.server.workers > 1 and settings.store.ephemeral_url == "memory://":
        raise ConfigError(
            "setting server.workers: more than one worker needs a shared ephemeral store; "
            "set store.ephemeral_url to a redis:// URL"
        )
