"""The federation endpoint's use cases: temporary credentials in, a one-use sign-in token out,
and the token exchanged for a console session — what AWS's ``/federation`` does for a custom
identity broker.

``signin_token`` takes the credentials a broker program got from AssumeRole or
GetFederationToken (``{"sessionId", "sessionKey", "sessionToken"}``), verifies them exactly as
a SigV4 request's credentials are verified (the token opens with the keyring, is bound to the
access key id, has not expired, and the secret matches), and keeps them, sealed, under the
SHA-256 of a new random token for 15 minutes. ``SessionDuration`` (900 to 43,200 seconds) asks
for a console session of that length: only for role sessions (refused for GetFederationToken
credentials, as AWS does), at most 3,600 seconds for a chained role session, and never longer
than the role's maximum session duration; the console then gets new keys of the same role
session (same issue time) that last that long, but never past the role's maximum session
duration counted from when the role was assumed. Without it, the console session lasts as long
as the credentials. Credentials that are revoked (a policy denying ``signin:UseConsole`` or
``*``, or their role or user deleted) get no token.

``redeem`` takes the token back out of the ephemeral store atomically: of any number of
concurrent uses, in any number of broker processes, exactly one gets the credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from broker import jsontext
from broker.authz import Authorizer
from broker.aws.errors import AccessDenied, AwsError, ExpiredToken, InvalidParameterValue
from broker.clock import Clock
from broker.errors import SealError
from broker.keyring import Keyring
from broker.principal import Principal
from broker.signin.console import NOWHERE, Origin
from broker.store.base import EphemeralStore
from broker.sts.service import IssuedCredentials, StsService
from broker.sts.tokens import Session, SessionKind, open_token

SIGNIN_TOKEN_SECONDS = 900
MIN_DURATION, MAX_DURATION, MAX_CHAINED = 900, 43_200, 3_600
PURPOSE = "signin-token"
_PREFIX = "signin-token:"
MAX_SESSION_PARAMETER = 8_192


class Federation:
    def __init__(self, ephemeral: EphemeralStore, keyring: Keyring, sts: StsService,
                 authz: Authorizer, clock: Clock) -> None:
        self._ephemeral = ephemeral
        self._authz = authz
        self._keyring = keyring
        self._sts = sts
        self._clock = clock

    async def signin_token(self, session: Session, token: str, duration: int | None,
                           origin: Origin = NOWHERE) -> str:
        """A sign-in token for credentials ``verify`` accepted (session and session token)."""
        if await self._authz.revoked(Principal.of_session(session), source_ip=origin.source_ip,
                                     user_agent=origin.user_agent, secure=origin.secure):
            raise AccessDenied("These credentials may not sign in to the console: they were "
                               "revoked, or their role or user no longer exists.")
        issued = IssuedCredentials(session, token)
        if session.kind is SessionKind.SESSION_TOKEN:
            raise AccessDenied("Credentials from GetSessionToken cannot sign in to the console; "
                               "use credentials from AssumeRole or GetFederationToken.")
        if session.kind is SessionKind.ROOT_TASK:
            raise AccessDenied("Credentials from AssumeRoot cannot sign in to the console: they "
                               "are for one root task through the API.")
        if duration is not None:
            if session.kind is SessionKind.FEDERATED_USER:
                raise InvalidParameterValue(
                    "SessionDuration is not supported for credentials from "
                    "GetFederationToken; their console session lasts as long as they do.")
            if not MIN_DURATION <= duration <= MAX_DURATION:
                raise InvalidParameterValue(
                    f"SessionDuration must be between {MIN_DURATION} and {MAX_DURATION} "
                    "seconds.")
            if session.chain_depth > 1 and duration > MAX_CHAINED:
                raise InvalidParameterValue(
                    f"SessionDuration may be at most {MAX_CHAINED} seconds for credentials of "
                    "a role assumed by another role (role chaining).")
            role = await self._sts.role(session.source_arn)
            if role is None:
                raise AccessDenied("The role of these credentials no longer exists.")
            if duration > role.max_session:
                raise InvalidParameterValue(
                    "SessionDuration exceeds the MaxSessionDuration set for the role.")
            # New keys, but the same session: its issue time is kept (a revoke-sessions policy
            # on aws:TokenIssueTime still matches), and it ends no later than the role allows
            # from when the role was assumed — asking again does not extend it.
            until = min(int(self._clock.now().timestamp()) + duration,
                        session.issued_at + role.max_session)
            issued = self._sts.console_credentials(session, until)
        signin_token = secrets.token_urlsafe(48)
        key = _key(signin_token)
        record = {"access_key_id": issued.session.access_key_id, "token": issued.token}
        sealed = self._keyring.seal(json.dumps(record).encode(), purpose=PURPOSE, aad=key)
        await self._ephemeral.set(key, sealed, SIGNIN_TOKEN_SECONDS)
        return signin_token

    def verify(self, session_json: str) -> tuple[Session, str]:
        """The temporary credentials of a ``Session`` parameter, verified; AWS's error
        otherwise."""
        if len(session_json) > MAX_SESSION_PARAMETER:
            raise InvalidParameterValue("The Session parameter is too long.")
        try:
            value: Any = jsontext.loads(session_json)
        except jsontext.JsonRefused as exc:
            raise InvalidParameterValue(f"The Session parameter is not JSON: {exc}.") from None
        fields = ("sessionId", "sessionKey", "sessionToken")
        if not isinstance(value, dict) or not all(isinstance(value.get(f), str) and value[f]
                                                  for f in fields):
            raise InvalidParameterValue(
                'The Session parameter must be {"sessionId": ..., "sessionKey": ..., '
                '"sessionToken": ...} with the temporary credentials.')
        try:
            session = open_token(value["sessionToken"], value["sessionId"], self._keyring,
                                 now=self._clock.now())
        except ExpiredToken:
            raise ExpiredToken("The credentials in the Session parameter have expired.") \
                from None
        except AwsError:
            raise AccessDenied("The credentials in the Session parameter are not valid.") \
                from None
        if not hmac.compare_digest(session.secret_access_key.encode(),
                                   value["sessionKey"].encode()):
            raise AccessDenied("The credentials in the Session parameter are not valid.")
        return session, value["sessionToken"]

    async def redeem(self, signin_token: str) -> IssuedCredentials | None:
        """The credentials behind a sign-in token, once; None for an unknown, used or expired
        token."""
        if not signin_token or len(signin_token) > 256:
            return None
        key = _key(signin_token)
        sealed = await self._ephemeral.take(key)
        if sealed is None:
            return None
        try:
            record = json.loads(self._keyring.unseal(sealed, purpose=PURPOSE, aad=key))
            session = open_token(record["token"], record["access_key_id"], self._keyring,
                                 now=self._clock.now())
        except (SealError, AwsError, ValueError, TypeError, KeyError):
            return None  # expired meanwhile, or sealed with a key since retired
        return IssuedCredentials(session, record["token"])


def _key(signin_token: str) -> str:
    return _PREFIX + hashlib.sha256(signin_token.encode()).hexdigest()
