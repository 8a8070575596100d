"""`broker serve` as its own process, started the way `make run` starts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.e2e.support import ROOT, BrokerProcess, aws, clean_env
from tests.helpers import free_port


def test_make_run_serves_a_broker_the_aws_cli_answers(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    broker = BrokerProcess([], clean_env(), port, tmp_path / "serve.log", command=[
        "make", "-s", "-C", str(ROOT), "run", f"ARGS=--port {port} --data-dir {data}"])
    try:
        creds = broker.root_credentials()
        # The README's quick start: the endpoint from AWS_ENDPOINT_URL.
        code, who, err = aws(broker.url, creds, "sts", "get-caller-identity", endpoint_env=True)
        assert code == 0, err
        assert who["Arn"] == f"arn:aws:iam::{who['Account']}:root"
        assert len(who["Account"]) == 12
        # make run serves in development mode: the demo sign-in is there, and says so.
        assert "DEVELOPMENT MODE: demo sign-in at" in broker.output()
        demo = httpx.get(f"{broker.url}/dev/signin", timeout=10)
        assert demo.status_code == 200
        assert "Development mode" in demo.text and "Demo-alice-1" in demo.text
    finally:
        broker.stop()


def test_development_mode_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / ".venv/bin/broker"), "serve", "--dev", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path)],
        env=clean_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "development mode serves demo people with published passwords, so it listens on " \
        "loopback only" in done.stderr
    assert not (tmp_path / "keyring.json").exists()  # refused before anything was made


def test_serve_without_dev_has_no_demo_sign_in(tmp_path: Path) -> None:
    """The control: the same command without --dev serves no demo people."""
    port = free_port()
    broker = BrokerProcess(["--port", str(port), "--data-dir", str(tmp_path / "data")],
                           clean_env(), port, tmp_path / "serve.log")
    try:
        broker.root_credentials()
        assert httpx.get(f"{broker.url}/dev/signin", timeout=10).status_code == 404
        console = httpx.get(f"{broker.url}/console", timeout=10)
        assert console.status_code == 401 and "Development mode" not in console.text
    finally:
        broker.stop()


def test_restart_keeps_state_and_prints_no_credentials(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    first = BrokerProcess(["--port", str(port), "--data-dir", str(data)], clean_env(), port,
                          tmp_path / "first.log")
    creds = first.root_credentials()
    aws(first.url, creds, "iam", "create-user", "--user-name", "kept")
    assert first.stop() in (0, -15)
    assert "Application shutdown complete" in first.output()
    second = BrokerProcess(["--port", str(port), "--data-dir", str(data)], clean_env(), port,
                           tmp_path / "second.log")
    try:
        assert "AWS_SECRET_ACCESS_KEY" not in second.output()
        code, user, err = aws(second.url, creds, "iam", "get-user", "--user-name", "kept")
        assert code == 0, err
        assert user["User"]["UserName"] == "kept"
    finally:
        second.stop()


def test_bad_settings_stop_start_up_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(ROOT / ".venv/bin/broker")), "serve", "--data-dir", str(tmp_path)],
        env=clean_env(BROKER_STORE_EPHEMERAL_URL="memcached://x"), capture_output=True,
        text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("broker: error: setting store.ephemeral_url (from "
                                  "BROKER_STORE_EPHEMERAL_URL): must be memory://")
    assert done.stderr.count("\n") == 1


def test_readyz_fails_when_a_store_is_down(tmp_path: Path) -> None:
    port = free_port()
    broker_env = clean_env(BROKER_STORE_EPHEMERAL_URL="redis://127.0.0.1:1/0")
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/broker"), "serve", "--port", str(port), "--data-dir",
         str(tmp_path / "d")], env=broker_env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                health = httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                subprocess.run(["sleep", "0.1"], check=True)
        assert health.status_code == 200
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable",
                                "failed": {"ephemeral_store": "StoreUnavailable"}}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
