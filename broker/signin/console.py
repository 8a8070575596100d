"""What a console session may do: open the applications behind the gateway, switch role, and
pass the gateway's forward-auth check.

A console session holds temporary credentials. Every decision here is made for the principal
those credentials speak for, by the same policy evaluation as a signed request: the identity
policies of the role or user, its permissions boundary, the session policies, and any policy
that revokes older sessions. A session is in standing while its credentials open, its role or
user exists and no policy denies it ``signin:UseConsole`` explicitly (a revoke-sessions policy,
denying ``*``, does). An application mapped to a resource ARN is open to a session in standing
only if policy allows ``gateway:Access`` on that ARN; one without a resource is open to every
session in standing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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
class Origin:
    """Where a browser's request came from: the aws:SourceIp, aws:UserAgent and
    aws:SecureTransport of every decision made for it, as for a signed request."""

    source_ip: str | None = None
    user_agent: str | None = None
    secure: bool = False


NOWHERE = Origin()  # a decision made outside any request (tests, the command line)


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
        """The application whose URL prefix ``url`` lies under (the longest prefix), compared
        as the proxy routes it: the path percent-decoded first. A URL that cannot be placed
        without guessing — dot segments, an encoded slash or backslash, a control character,
        user info — lies under no application."""
        target = _placed(url)
        if target is None:
            return None
        found: tuple[int, Application] | None = None
        for app in self.applications:
            prefix = _placed(app.url)
            if prefix is None or prefix[0] != target[0]:
                continue
            base = prefix[1].rstrip("/")
            path = target[1]
            if (path == base or path.startswith(base + "/") or not base) and \
                    (found is None or len(base) > found[0]):
                found = (len(base), app)
        return found[1] if found else None

    async def standing(self, session: ConsoleSession,
                       origin: Origin = NOWHERE) -> Principal | None:
        """Who the session speaks for, if it is in standing: its credentials still open, the
        role or user they speak for exists, and no policy denies them the console
        (``signin:UseConsole``; a revoke-sessions policy's Deny of ``*`` does). None
        otherwise."""
        principal = self.principal(session)
        if principal is None or await self._authz.revoked(
                principal, source_ip=origin.source_ip, user_agent=origin.user_agent,
                secure=origin.secure):
            return None
        return principal

    async def alive(self, session: ConsoleSession) -> Principal | None:
        """Who the session speaks for while its credentials open and its user or role exists,
        whatever policies deny: the security credentials page of the broker's own sign-in
        needs no more, as each of its actions is authorized as the IAM action it is (so AWS's
        policy that denies everything but MFA self-management without MFA leaves a user who
        signed in without MFA that page, and a policy that denies everything leaves nothing
        on it)."""
        principal = self.principal(session)
        if principal is None or await self._authz.policy_set(principal) is None:
            return None
        return principal

    async def may_open(self, principal: Principal, app: Application,
                       origin: Origin = NOWHERE) -> bool:
        """Whether a session in standing may open ``app``: always, unless the application
        is mapped to a resource, on which policy must then allow gateway:Access."""
        if app.resource is None:
            return True
        try:
            await self._authz.check(principal, ACCESS, app.resource,
                                    source_ip=origin.source_ip, user_agent=origin.user_agent,
                                    secure=origin.secure)
        except AccessDenied:
            return False
        return True

    async def open_applications(self, principal: Principal,
                                origin: Origin = NOWHERE) -> list[Application]:
        return [app for app in self.applications
                if await self.may_open(principal, app, origin)]

    async def admit(self, session: ConsoleSession | None, url: str | None,
                    origin: Origin = NOWHERE) -> Identity | None:
        """Forward-auth: the identity to pass upstream, or None (401). The URL the proxy was
        asked for must lie under a configured application, the session must be in standing,
        and an application mapped to a resource must be allowed gateway:Access on it: a URL
        the broker cannot place is refused, never waved through."""
        if session is None or url is None:
            return None
        app = self.application_for(url)
        if app is None:
            return None
        principal = await self.standing(session, origin)
        if principal is None or not await self.may_open(principal, app, origin):
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


def _placed(url: str) -> tuple[tuple[str, str, int], str] | None:
    """((scheme, host, port), decoded path) of an absolute http(s) URL, or None when it cannot
    be placed without guessing."""
    if any(ord(c) < 0x21 or c in "\\\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    raw = parts.path or "/"
    if re.search(r"%2f|%5c|%00", raw, re.IGNORECASE):
        return None
    path = unquote(raw)
    if "%" in path and unquote(path) != path:  # encoded twice
        return None
    if any(segment in (".", "..") for segment in path.split("/")) or "//" in path:
        return None
    return (parts.scheme, parts.hostname.lower(), port), path
