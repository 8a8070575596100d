"""broker.mail against a real SMTP server (aiosmtpd on loopback) that requires AUTH: the URL's
percent-encoded user name and password sign in; a wrong password is the server's answer in a
MailError; a password is never sent in the clear to another host."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from broker.mail import Mailer, MailError
from tests.helpers import free_port

USER, PASSWORD = "portal@example.com", "p:ss/w@rd"


class Handler:
    def __init__(self) -> None:
        self.received: list[tuple[bool, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        self.received.append((session.authenticated, list(envelope.rcpt_tos)))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login.decode(), auth_data.password.decode()) == (USER, PASSWORD)
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def server() -> Iterator[tuple[int, Handler]]:
    handler, port = Handler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def message() -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "portal@example.com", "pat@example.com", "Hello"
    m.set_content("Hello")
    return m


def test_the_urls_user_and_password_sign_in(server: tuple[int, Handler]) -> None:
    port, handler = server
    url = f"smtp://portal%40example.com:p%3Ass%2Fw%40rd@127.0.0.1:{port}"
    asyncio.run(Mailer(url, "portal@example.com").send(message()))
    assert handler.received == [(True, ["pat@example.com"])]
    # Refused beside it: a wrong password, no password.
    for wrong in (f"smtp://portal%40example.com:nope@127.0.0.1:{port}",
                  f"smtp://127.0.0.1:{port}"):
        with pytest.raises(MailError, match=r"answered 5\d\d"):
            asyncio.run(Mailer(wrong, "portal@example.com").send(message()))
    assert len(handler.received) == 1


def test_no_password_in_the_clear_to_another_host() -> None:
    with pytest.raises(MailError, match="in the clear"):
        asyncio.run(Mailer("smtp://u:p@192.0.2.1:25", "a@b.example").send(message()))
