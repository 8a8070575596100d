from __future__ import annotations

from pathlib import Path

import pytest

from broker import settings
from broker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    s = settings.load(None, environ={})
    assert (s.server.host, s.server.port, s.server.workers) == ("127.0.0.1", 8000, 1)
    assert s.server.data_dir == ".broker"
    assert s.public_url == "http://127.0.0.1:8000"
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("broker.db")
    assert s.store.ephemeral_url == "memory://"
    assert s.sigv4.clock_skew_seconds == 300


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[sigv4]\nregions = ["eu-west-1"]\n')
    s = settings.load(path, environ={})
    assert (s.server.port, s.server.host, s.sigv4.regions) == (9000, "0.0.0.0", ("eu-west-1",))
    s = settings.load(path, environ={"BROKER_SERVER_PORT": "9100",
                                     "BROKER_SIGV4_REGIONS": "us-east-1, eu-west-1"})
    assert s.server.port == 9100 and s.sigv4.regions == ("us-east-1", "eu-west-1")
    s = settings.load(path, environ={"BROKER_SERVER_PORT": "9100"},
                      overrides={"server.port": 9200, "server.host": None})
    assert s.server.port == 9200 and s.server.host == "0.0.0.0"


@pytest.mark.parametrize(("environ", "message"), [
    ({"BROKER_SERVER_PORT": "http"},
     "setting server.port (from BROKER_SERVER_PORT): must be an integer from 1 to 65535; "
     "got 'http'"),
    ({"BROKER_SERVER_PORT": "70000"}, "server.port"),
    ({"BROKER_STORE_DATABASE_URL": "mysql://x"}, "store.database_url"),
    ({"BROKER_STORE_EPHEMERAL_URL": "memcached://x"}, "store.ephemeral_url"),
    ({"BROKER_SIGV4_CLOCK_SKEW_SECONDS": "5"}, "sigv4.clock_skew_seconds"),
    ({"BROKER_SIGV4_REGIONS": "Europe"}, "sigv4.regions"),
    ({"BROKER_SERVER_PUBLIC_URL": "ftp://x"}, "server.public_url"),
    ({"BROKER_AUDIT_SINK": "file"}, "audit.path: required"),
    ({"BROKER_SERVER_WORKERS": "4"}, "more than one worker needs a shared ephemeral store"),
    ({"BROKER_LOG_ACCESS": "maybe"}, "log.access"),
    ({"BROKER_SSO_SESSION_HOURS": "0"}, "sso.session_hours"),
    ({"BROKER_SSO_SESSION_HOURS": "2161"}, "must be an integer from 1 to 2160"),
    ({"BROKER_SSO_SMTP_URL": "http://mail.example.com"}, "sso.smtp_url"),
    ({"BROKER_SSO_SMTP_URL": "smtp://"}, "sso.smtp_url"),
    ({"BROKER_SSO_SMTP_URL": "smtps://mail.example.com:smtp"}, "port that is not a number"),
    ({"BROKER_SSO_SMTP_URL": "smtps://mail.example.com/x"}, "must not have a path"),
    ({"BROKER_SSO_SMTP_URL": "smtp://u:p@mail.example.com"}, "password in the clear"),
    ({"BROKER_SSO_SMTP_URL": "smtps://mail.example.com"}, "sso.smtp_from: required"),
    ({"BROKER_SSO_SMTP_URL": "smtps://u:w%C3%B6rd@mail.example.com"}, "not ASCII"),
    ({"BROKER_SSO_SMTP_FROM": "not an address"}, "sso.smtp_from"),
    ({"BROKER_SSO_SMTP_FROM": "a@b.example\r\nBcc: c@d.example"}, "sso.smtp_from"),
])
def test_bad_values_stop_with_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings.load(None, environ=environ)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_sso_settings() -> None:
    s = settings.load(None, environ={})
    assert (s.sso.session_hours, s.sso.smtp_url, s.sso.smtp_from) == (8, "", "")
    s = settings.load(None, environ={
        "BROKER_SSO_SESSION_HOURS": "2160",
        "BROKER_SSO_SMTP_URL": "smtp+starttls://user%40example.com:p%3Ass@mail.example.com:587",
        "BROKER_SSO_SMTP_FROM": "Access portal <portal@example.com>"})
    assert s.sso.session_hours == 2160
    assert s.sso.smtp_url.startswith("smtp+starttls://")
    for url in ("smtp://127.0.0.1:25", "smtp://u:p@localhost:2525", "smtps://u:p@mail.example.com"):
        assert settings.load(None, environ={"BROKER_SSO_SMTP_URL": url,
                                            "BROKER_SSO_SMTP_FROM": "a@b.example"}).sso.smtp_url


def test_workers_with_redis_are_allowed() -> None:
    s = settings.load(None, environ={"BROKER_SERVER_WORKERS": "4",
                                     "BROKER_STORE_EPHEMERAL_URL": "redis://127.0.0.1:6379/0"})
    assert s.server.workers == 4


@pytest.mark.parametrize(("content", "message"), [
    ("[serve]\nport = 1\n", "unknown section [serve]"),
    ("[server]\nprot = 1\n", "unknown setting server.prot"),
    ("[server\n", "not valid TOML"),
    ('[server]\nport = "x"\n', "server.port"),
])
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings.load(path, environ={})


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, env, _default, _description in settings.describe():
        assert f"`{name}`" in doc, name
        assert f"`{env}`" in doc, env


def test_example_configs_load() -> None:
    configs = sorted((ROOT / "config").glob("*.toml"))
    assert configs
    for path in configs:
        settings.load(path, environ={})


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "broker.example.com", "::"])
def test_development_mode_listens_on_loopback_only(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback only"):
        settings.load(None, environ={"BROKER_SERVER_DEV": "true", "BROKER_SERVER_HOST": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_development_mode_on_loopback_loads(host: str) -> None:
    loaded = settings.load(None, environ={"BROKER_SERVER_DEV": "true",
                                          "BROKER_SERVER_HOST": host})
    assert loaded.server.dev is True


def test_development_mode_runs_one_worker() -> None:
    with pytest.raises(ConfigError, match="one worker"):
        settings.load(None, environ={"BROKER_SERVER_DEV": "true", "BROKER_SERVER_WORKERS": "2",
                                     "BROKER_STORE_EPHEMERAL_URL": "redis://127.0.0.1:6379/0"})


def test_gateway_applications_from_the_environment() -> None:
    loaded = settings.load(None, environ={"BROKER_GATEWAY_APPLICATIONS": (
        '[{"name": "Wiki", "url": "https://wiki.example.com/"}, '
        '{"name": "Payroll", "url": "https://apps.example.com/payroll/", '
        '"resource": "arn:aws:gateway:::app/payroll"}]')})
    apps = loaded.gateway.applications
    assert [(a.name, a.url, a.resource) for a in apps] == [
        ("Wiki", "https://wiki.example.com", None),
        ("Payroll", "https://apps.example.com/payroll", "arn:aws:gateway:::app/payroll")]


@pytest.mark.parametrize(("value", "fault"), [
    ('[{"name": "x"}]', "needs a url"),
    ('[{"name": "x", "url": "ftp://a"}]', "http:// or https://"),
    ('[{"name": "x", "url": "https://a", "resource": "payroll"}]', "must be an ARN"),
    ('[{"url": "https://a"}]', "a table with name"),
    ("not json", "JSON list"),
])
def test_gateway_applications_are_checked(value: str, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        settings.load(None, environ={"BROKER_GATEWAY_APPLICATIONS": value})


@pytest.mark.parametrize("written", ["HTTPS://broker.example.test", "Https://broker.example.test/"])
def test_the_public_url_s_scheme_is_read_in_any_case(written: str) -> None:
    """The cookies' Secure flag and __Host- prefix follow from "https://": a scheme written in
    capitals must not quietly turn them off. The control: http stays http."""
    s = settings.load(None, environ={"BROKER_SERVER_PUBLIC_URL": written})
    assert s.public_url == "https://broker.example.test"
    s = settings.load(None, environ={"BROKER_SERVER_PUBLIC_URL": "HTTP://broker.example.test"})
    assert s.public_url == "http://broker.example.test"
