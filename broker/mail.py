"""E-mail out, through the SMTP server ``sso.smtp_url`` names: the standard library's smtplib,
run in a thread (the event loop never waits on the network), each socket operation bounded by
a timeout.

* ``smtp://HOST[:PORT]``                   SMTP in the clear (port 25): a relay on the host;
* ``smtp+starttls://[USER:PASS@]HOST[:PORT]`` STARTTLS, required (port 587);
* ``smtps://[USER:PASS@]HOST[:PORT]``      TLS from the first byte (port 465).

TLS verifies the server's certificate against the system's authorities and its host name. A
user name and password in the URL (percent-encoded) sign in with AUTH after TLS; in plain
SMTP only when the server is on a loopback address (a password is not sent in the clear).
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from broker.errors import BrokerError

TIMEOUT_SECONDS = 30
PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailError(BrokerError):
    """The SMTP server could not be reached, or did not take the message."""


class Mailer:
    def __init__(self, url: str, sender: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in PORTS or not parts.hostname:
            raise ValueError(f"not an SMTP URL: {parts.scheme}://…")
        self._scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or PORTS[parts.scheme]
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "")
        self.sender = sender
        self._timeout = timeout

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, message: EmailMessage) -> None:
        """Hand the message to the server; MailError (with the server's reason) if it is not
        taken by every recipient."""
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with self._connect() as smtp:
                if self._user is not None:
                    smtp.login(self._user, self._password)
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"the mail server {self.server} refused the address "
                            f"{', '.join(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            reason = exc.smtp_error.decode("utf-8", "replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            raise MailError(f"the mail server {self.server} answered {exc.smtp_code} "
                            f"{reason}") from None
        except UnicodeError:
            raise MailError("the SMTP user name and password must be ASCII") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, TLS, timeout
            raise MailError(f"could not send through the mail server {self.server}: "
                            f"{exc or type(exc).__name__}") from None
        if refused:
            raise MailError(f"the mail server {self.server} refused the address "
                            f"{', '.join(refused)}")

    def _connect(self) -> smtplib.SMTP:
        if self._scheme == "smtp" and self._user is not None and not loopback(self.host):
            raise MailError(f"not sending a password in the clear to {self.server}: use "
                            f"smtp+starttls:// or smtps://")
        context = ssl.create_default_context()
        if self._scheme == "smtps":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout,
                                    context=context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self._timeout)
        if self._scheme == "smtp+starttls":
            try:
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()
                raise
        return smtp


def loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
