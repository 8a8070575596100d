"""Processes for end-to-end tests: the broker as its own process, the AWS CLI as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no AWS or BROKER settings leak in from outside."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "BROKER_", "BOTO"))}
    env.update({"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class BrokerProcess:
    def __init__(self, args: list[str], env: dict[str, str], port: int,
                 log: Path, command: list[str] | None = None) -> None:
        self.port = port
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            (command or [str(BIN / "broker"), "serve"]) + args,
            env=env, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True,
        )
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log_file.close()
                raise RuntimeError(f"broker exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"broker did not become ready: {self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text()

    def root_credentials(self) -> tuple[str, str]:
        text = self.output()
        key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", text)
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", text)
        assert key and secret, text
        return key.group(1), secret.group(1)

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; uvicorn shuts down, then re-raises it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log_file.close()


def aws(url: str, creds: tuple[str, str] | tuple[str, str, str], *args: str,
        region: str = "us-east-1", endpoint_env: bool = False) -> tuple[int, Any, str]:
    """The AWS CLI, pointed at the broker by --endpoint-url (or by AWS_ENDPOINT_URL)."""
    env = clean_env(AWS_ACCESS_KEY_ID=creds[0], AWS_SECRET_ACCESS_KEY=creds[1],
                    AWS_DEFAULT_REGION=region)
    if len(creds) == 3:
        env["AWS_SESSION_TOKEN"] = creds[2]
    endpoint = ["--endpoint-url", url]
    if endpoint_env:
        env["AWS_ENDPOINT_URL"] = url
        endpoint = []
    done = subprocess.run([str(BIN / "aws"), *args, *endpoint, "--output", "json"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    body = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, body, done.stderr
