"""What a console session may do: open the applications behind the gateway, switch role, and
pass the gateway's forward-auth check.

A console session holds temporary credentials. Every decision here is made for the principal
those credentials speak for, by the same policy evaluation as a signed request: the identity
policies of the role or user, its permissions boundary, the session policies, and any policy
that revokes older sessions. An application mapped to a resource ARN is open to a session only
if policy allows ``gateway:Access`` on that ARN; one without a resource is open to every
session.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import AccessDenied, AwsError
from broker.clock import Clock
from broker.keyring import Keyring
from broker.principal import Principal
from broker.settings import Application
from broker.signin.sessions import ConsoleSession
from broker.sts.api import authorized_assume_role
from broker.sts.service import IssuedCredentials, StsService
from broker.sts.tokens import open_token

ACCESS = "gateway:Access"


@dataclass(frozen=True)
class Identity:
    """The headers forward-auth answers with."""

    principal_arn: str
    account: str
    session_name: str
    role: str  # the role's name, or empty for a federated user


class Console:
    def __init__(self, sts: StsService, authz: Authorizer, keyring: Keyring, clock: Clock,
                 applications: tuple[Application, ...]) -> None:
        self._sts = sts
        self._authz = authz
        self._keyring = keyring
        self._clock = clock
        self.applications = applications

    def principal(self, session: ConsoleSession) -> Principal | None:
        """Who the session's credentials speak for; None once they no longer open."""
        try:
            opened = open_token(session.session_token, session.access_key_id, self._keyring,
                                now=self._clock.now())
        except AwsError:
            return None
        return Principal.of_session(opened)

    def identity(self, session: ConsoleSession) -> Identity:
        parsed = arn.parse(session.role_arn)
        role = ""
        if parsed is not None and parsed.resource.startswith("role/"):
            role = parsed.resource.rsplit("/", 1)[-1]
        return Identity(session.arn, session.account_id, session.session_name, role)

    def application_for(self, url: str) -> Application | None:
        """The application whose URL prefix ``url`` lies under (the longest one)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        found: Application | None = None
        for app in self.applications:
            prefix = urlsplit(app.url)
            if (parts.scheme, (parts.hostname or "").lower(), port or _default(parts.scheme)) \
                    != (prefix.scheme, (prefix.hostname or "").lower(),
                        prefix.port or _default(prefix.scheme)):
                continue
            base = prefix.path.rstrip("/")
            path = parts.path or "/"
            under = (path == base or path.startswith(base + "/") or not base) and \
                ".." not in path.split("/")
            if under and (found is None or len(prefix.path) > len(urlsplit(found.url).path)):
                found = app
        return found

    async def may_open(self, session: ConsoleSession, app: Application) -> bool:
        if app.resource is None:
            return True
        principal = self.principal(session)
        if principal is None:
            return False
        try:
            await self._authz.check(principal, ACCESS, app.resource)
        except AccessDenied:
            return False
        return True

    async def open_applications(self, session: ConsoleSession) -> list[Application]:
        return [app for app in self.applications if await self.may_open(session, app)]

    async def admit(self, session: ConsoleSession | None, url: str | None) -> Identity | None:
        """Forward-auth: the identity to pass upstream, or None (401). A request for a URL
        that is under a mapped application must also be allowed gateway:Access on it."""
        if session is None or self.principal(session) is None:
            return None
        app = self.application_for(url) if url else None
        if app is not None and not await self.may_open(session, app):
            return None
        return self.identity(session)

    async def switch_role(self, session: ConsoleSession, role_arn: str, session_name: str, *,
                          source_ip: str | None, user_agent: str | None,
                          secure: bool) -> IssuedCredentials:
        """AssumeRole with the session's credentials, allowed by the role's trust policy and
        the session's own policies exactly as an SDK's AssumeRole would be."""
        principal = self.principal(session)
        if principal is None:
            raise AccessDenied("The console session's credentials have expired.")
        return await authorized_assume_role(
            self._sts, self._authz, principal, role_arn, session_name, source_ip=source_ip,
            user_agent=user_agent, secure=secure)


def _default(scheme: str) -> int:
    return 443 if scheme == "https" else 80
