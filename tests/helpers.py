"""Test support: a real uvicorn server in a thread, the real backing services, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import pytest
import uvicorn

from broker.app import create_app, server_options
from broker.clock import Clock
from broker.runtime import Runtime, initialize
from broker.settings import Settings, load

T = TypeVar("T")

DATABASE_URL = os.environ.get(
    "BROKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CORPORA = Path(
    os.environ.get("BROKER_TEST_CORPORA")
    or Path(__file__).resolve().parents[2] / "shared" / "corpora"
)


def unavailable(what: str, why: str) -> None:
    """Skip with a printed reason, except on CI where a missing service is a failure."""
    message = f"{what} is not available: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: required)")
    print(f"SKIP: {message}")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """A real uvicorn server serving an ASGI app on 127.0.0.1, in a background thread."""

    def __init__(self, app: Any, settings: Settings | None = None, *,
                 port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        options = server_options(settings) if settings else {}
        options.update(host="127.0.0.1", port=self.port, log_level="warning")
        self.config = uvicorn.Config(app, lifespan="on", **options)
        self.server = uvicorn.Server(self.config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's own event loop (its stores live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Creds:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class Broker:
    """A broker under test: its settings, its server, its root credentials."""

    def __init__(self, settings: Settings, root: Creds, account_id: str,
                 server: ServerThread) -> None:
        self.settings = settings
        self.root = root
        self.account_id = account_id
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.server.app.state.runtime
        return runtime

    def client(self, service: str, creds: Creds | None = None, *,
               region: str = "us-east-1", validate: bool = True) -> Any:
        creds = creds or self.root
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            config=botocore.config.Config(
                retries={"max_attempts": 1, "mode": "standard"},
                parameter_validation=validate,
            ),
        )

    def new_account(self) -> tuple[str, Creds]:
        account, key = self.server.call(self.runtime.iam.create_account())
        return account.id, Creds(key.key.access_key_id, key.secret_access_key)

    def new_user(self, account_creds: Creds | None = None,
                 name: str | None = None) -> tuple[str, Creds]:
        iam = self.client("iam", account_creds)
        name = name or f"user-{uuid.uuid4().hex[:10]}"
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return name, Creds(key["AccessKeyId"], key["SecretAccessKey"])

    def stop(self) -> None:
        self.server.stop()


def start_broker(data_dir: Path, *, clock: Clock | None = None,
                 env: dict[str, str] | None = None, init_clock: Clock | None = None,
                 port: int | None = None) -> Broker:
    port = port or free_port()
    # The broker's public URL is the one the tests reach it at: the SAML ACS URL and every
    # sign-in redirect are built from it.
    environ = {"BROKER_SERVER_DATA_DIR": str(data_dir), "BROKER_AUDIT_SINK": "file",
               "BROKER_SERVER_PORT": str(port),
               "BROKER_AUDIT_PATH": str(data_dir / "audit.log"),
               "BROKER_IAM_LAST_USED_FLUSH_SECONDS": "1", **(env or {})}
    settings = load(None, environ=environ)
    account, key = asyncio.run(initialize(settings, clock=init_clock or clock))
    server = ServerThread(create_app(settings, clock=clock), settings, port=port).start()
    return Broker(settings, Creds(key.key.access_key_id, key.secret_access_key), account.id,
                  server)


def creds_of(result: dict[str, Any]) -> Creds:
    c = result["Credentials"]
    return Creds(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])


def signed_request(broker_url: str, params: dict[str, str], creds: Creds, *,
                   service: str = "sts", region: str = "us-east-1", method: str = "POST",
                   at: datetime | None = None) -> tuple[str, str, dict[str, str], bytes]:
    """A request signed by botocore's own SigV4 signer: (method, url, headers, body)."""
    from unittest import mock
    from urllib.parse import urlencode

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = urlencode(params).encode()
    if method == "GET":
        request = AWSRequest(method="GET", url=f"{broker_url}/?{body.decode()}")
    else:
        request = AWSRequest(method="POST", url=f"{broker_url}/", data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    signer = SigV4Auth(Credentials(creds.access_key_id, creds.secret_access_key,
                                   creds.session_token), service, region)
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            signer.add_auth(request)
    prepared = request.prepare()
    return method, prepared.url, dict(prepared.headers), prepared.body or b""


def presigned_url(broker_url: str, params: dict[str, str], creds: Creds, *,
                  expires: int = 300, at: datetime | None = None,
                  region: str = "us-east-1") -> str:
    """A presigned GET URL made by botocore's SigV4QueryAuth."""
    from unittest import mock
    from urllib.parse import urlencode

    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{broker_url}/?{urlencode(params)}")
    signer = SigV4QueryAuth(Credentials(creds.access_key_id, creds.secret_access_key,
                                        creds.session_token), "sts", region, expires=expires)
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            signer.add_auth(request)
    return str(request.prepare().url)


def allow_policy(actions: str | list[str], resource: str, **extra: Any) -> str:
    """A one-statement identity policy allowing ``actions`` on ``resource`` (``extra``: more
    members of the statement, such as a Condition)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": resource, **extra}]})



def serve_json(answer: Callable[[BaseHTTPRequestHandler], object]) -> ThreadingHTTPServer:
    """A real HTTP server on 127.0.0.1 (a spare port), in a background thread, answering every
    GET with 200 and ``answer(request)`` as JSON; it logs nothing."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer(self)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
