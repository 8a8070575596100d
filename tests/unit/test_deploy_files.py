"""The Dockerfile and the compose file cannot be built here (no Docker engine); what can be
checked without one is checked: every setting they name exists and every command they run
is one the broker has."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from broker import settings
from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {env for _, env, _, _ in settings.describe()} | {"BROKER_CONFIG"}


def test_dockerfile_names_real_settings_and_commands() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for name in re.findall(r"\bBROKER_[A-Z_]+", text):
        assert name in KNOWN, name
    assert 'ENTRYPOINT ["broker"]' in text and 'CMD ["serve"]' in text
    assert "COPY broker ./broker" in text
    # What the build needs of the checkout: pyproject's readme and license-files among them.
    copied = re.search(r"^COPY pyproject\.toml (.*) \./$", text, re.MULTILINE)
    assert copied, "the Dockerfile copies pyproject.toml"
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in [project["readme"], *project["license-files"]]:
        assert name in copied.group(1).split(), name
    env = dict(re.findall(r"(BROKER_[A-Z_]+)=(\S+)", text))
    settings.load(None, environ=env)  # the image's settings load


def test_compose_file() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = doc["services"]
    broker = services["broker"]
    env = broker["environment"]
    assert set(env) <= KNOWN
    workers = broker["command"][broker["command"].index("--workers") + 1]
    settings.load(None, environ={**env, "BROKER_SERVER_WORKERS": workers})
    result = CliRunner().invoke(main, [*broker["command"], "--help"])
    assert result.exit_code == 0, result.output
    assert set(broker["depends_on"]) == {"postgres", "redis"}


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    """setuptools deprecates the table form of project.license (builds stop after February
    2027): an SPDX string, the file beside it, and a setuptools that reads both (77+)."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    for name in project["project"]["license-files"]:
        assert "Apache License" in (root / name).read_text()
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_starting_the_cli_prints_no_warning() -> None:
    """Every CLI start printed cryptography's DSA deprecation (idp/metadata.py named its DSA
    classes at import): the installed command, in a fresh interpreter that turns every warning
    into an error, starts clean."""
    import subprocess
    import sys

    command = Path(sys.executable).parent / "broker"
    done = subprocess.run([sys.executable, "-W", "error", str(command), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Usage" in done.stdout
