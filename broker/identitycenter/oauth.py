"""IAM Identity Center's OAuth 2.0 server (``sso-oidc``): clients, device codes, authorization
codes with PKCE, access and refresh tokens.

* **Clients** (RFC 7591 as AWS has it): public clients only. A client's id is its
  registration (redirect URIs, grant types, issuer URL, expiry) sealed by the keyring, and its
  secret a sealed value bound to that id: any broker process reads and verifies both with
  nothing stored, across restarts; a registration lasts 90 days, as AWS's.
* **The device authorization grant** (RFC 8628): a device code, and a user code
  (``ABCD-EFGH``) the person types at the portal (``{PUBLIC_URL}/start/device``) of the
  instance whose start URL the client named. The portal approves or denies it once (``take``);
  the client polls CreateToken no faster than every ``interval`` seconds (§3.5
  ``slow_down``) and redeems an approval once. User-code lookups that miss are counted per
  source address; past ``USER_CODE_MISSES`` the address finds no code for a while. An address
  starts at most ``DEVICE_STARTS`` device authorizations in ten minutes.
* **The authorization code grant** (RFC 6749 §4.1) with PKCE S256 (RFC 7636) and a loopback
  redirect URI (RFC 8252 §7.3: the port is the client's to choose at request time), as AWS
  CLI v2 signs in. The code is single use, lives five minutes, and is redeemed only by its
  client, with its redirect URI and its verifier.
* **Tokens**: opaque random values, kept only as their SHA-256 in the EphemeralStore. Every
  token of one sign-in belongs to one *grant* (a key whose lifetime is the portal session's):
  the access token lasts an hour (never past the grant), each refresh gives a new refresh
  token (RFC 6819 §5.2.2.3 rotation), and an old refresh token presented again ends the grant:
  every token descended from it stops working. Logout ends the grant too. Each use checks that
  the grant is alive and that its user still exists and is not disabled
  (``DirectoryUser.active``); a use that finds them gone or disabled ends the grant, so
  enabling them again revives no token.
* **Refresh-token reuse** (RFC 6819 §5.2.2.3, OAuth 2.1 §4.3.1) is decided by one atomic
  step: the first presenter of a refresh token claims its ``refreshed`` marker
  (``put_if_absent``) *before* the token is retired, and only the claimant rotates. Whoever
  else presents the same token — at the same moment on another process, or any time later —
  finds the marker already there (or the token gone and the marker there), is answered
  InvalidGrantException and ends the grant, so the claimant's new tokens stop working too: a
  thief racing the victim cannot win quietly. A client that retries a refresh whose answer it
  lost is treated the same way, and signs in again.

The portal calls ``device_request``, ``approve_device``, ``deny_device``,
``authorization_request`` and ``issue_code`` (refusals are ``Refused``); the ``sso`` API
calls ``resolve`` and ``logout``; CreateToken and the rest are for ``oidc_api``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

from broker.aws.restjson import RestError
from broker.clock import Clock
from broker.errors import SealError
from broker.identitycenter.instances import Instance, Instances
from broker.keyring import Keyring
from broker.store.base import EphemeralStore

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"  # noqa: S105 (a grant type's name)
GRANT_TYPES = frozenset({DEVICE_CODE, AUTHORIZATION_CODE, REFRESH_TOKEN})
SCOPES = frozenset({"sso:account:access"})

CLIENT_SECONDS = 90 * 24 * 3600
DEVICE_SECONDS = 600
INTERVAL = 1
CODE_SECONDS = 300
ACCESS_SECONDS = 3600
SESSION_SECONDS = 8 * 3600
# An expired device code is remembered this much longer, to be answered ExpiredTokenException.
EXPIRED_GRACE = 600
USER_CODE_MISSES = 10
DEVICE_STARTS = 200  # device authorizations per address per MISS_WINDOW
MISS_WINDOW = 600

_ID_PURPOSE = "sso-oidc-client-id"
_PROOF_PURPOSE = "sso-oidc-client-proof"  # the sealing that makes a secret
_PREFIX = "sso-oidc:"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,4096}")
_STORE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), none that look alike
_USER_CODE = re.compile(rf"[{_USER_CODE_LETTERS}]{{4}}-?[{_USER_CODE_LETTERS}]{{4}}")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class OidcError(RestError):
    """An sso-oidc error: its shape's name and description (oidc_api adds OAuth's code)."""


def _error(code: str, description: str) -> OidcError:
    return OidcError(code, description)


class Refused(Exception):
    """What the portal asked cannot be done: ``error`` is OAuth's code (``invalid_request``,
    ``access_denied``, ...). ``redirect`` says whether the client may be told at its
    redirect URI (RFC 6749 §4.1.2.1: not when the client or the URI itself is in doubt)."""

    def __init__(self, error: str, description: str, *, redirect: bool = False) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect


class UserDirectory(Protocol):
    async def active_user(self, account_id: str, identity_store_id: str,
                          user_id: str) -> object | None:
        """The user, None when the directory no longer has them or has disabled them."""
        ...


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    issuer_url: str | None
    issued_at: int
    expires_at: int

    def allows(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def refreshes(self) -> bool:
        """Whether its tokens come with refresh tokens (AWS: only for clients registered
        with scopes, or that asked for the refresh_token grant)."""
        return self.allows(REFRESH_TOKEN)


@dataclass(frozen=True)
class Registration:
    client: Client
    secret: str
    authorization_endpoint: str | None
    token_endpoint: str | None


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DeviceRequest:
    user_code: str
    client_id: str
    client_name: str
    account_id: str
    identity_store_id: str
    expires_at: datetime
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    client_name: str
    redirect_uri: str
    code_challenge: str
    scopes: tuple[str, ...]
    state: str | None
    account_id: str
    identity_store_id: str


@dataclass(frozen=True)
class Grant:
    account_id: str
    identity_store_id: str
    user_id: str
    client_id: str
    expires_at: datetime  # of the access token
    grant_id: str = ""
    session_expires_at: datetime | None = None
    # What the portal session that approved the sign-in carried: the external identity
    # provider's AccessControl attributes (None: the directory's alone) and the stamp of the
    # identity source it was made under (a sign-in made under another source has ended).
    asserted: Mapping[str, str] | None = None
    source: str = ""


@dataclass(frozen=True)
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str | None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(kind: str, value: str) -> str:
    return f"{_PREFIX}{kind}:{value}"


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _load(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def canonical_user_code(text: str) -> str | None:
    """``ABCD-EFGH`` from what a person typed (any case, with or without the hyphen)."""
    code = text.strip().upper().replace(" ", "")
    if not _USER_CODE.fullmatch(code):
        return None
    code = code.replace("-", "")
    return f"{code[:4]}-{code[4:]}"


def is_loopback_redirect(uri: str) -> bool:
    """An http URI on a loopback address (RFC 8252 §7.3), with no fragment."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    del port  # read only to be validated
    return (parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
            and not parts.fragment and "@" not in parts.netloc)


def _without_port(uri: str) -> tuple[str, str, str, str]:
    parts = urlsplit(uri)
    return parts.scheme, parts.hostname or "", parts.path or "/", parts.query


class OAuth:
    def __init__(self, ephemeral: EphemeralStore, keyring: Keyring, clock: Clock,
                 instances: Instances, users: UserDirectory, *, public_url: str,
                 session_seconds: int = SESSION_SECONDS) -> None:
        self._ephemeral = ephemeral
        self._keyring = keyring
        self._clock = clock
        self._instances = instances
        self._users = users
        self._public_url = public_url.rstrip("/")
        self._session_seconds = session_seconds

    # -- URLs ---------------------------------------------------------------------------------

    def start_url(self, identity_store_id: str) -> str:
        return f"{self._public_url}/start/{identity_store_id}"

    async def instance_of_start_url(self, start_url: str) -> Instance | None:
        prefix = f"{self._public_url}/start/"
        url = start_url.split("#", 1)[0].rstrip("/")
        if not url.startswith(prefix):
            return None
        store_id = url[len(prefix):]
        if not _STORE_ID.fullmatch(store_id):
            return None
        return await self._instances.by_store(store_id)

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    # -- clients --------------------------------------------------------------------------------

    async def register(self, *, name: str, client_type: str, scopes: Sequence[str],
                       redirect_uris: Sequence[str], grant_types: Sequence[str] | None,
                       issuer_url: str | None) -> Registration:
        if client_type != "public":
            raise _error("InvalidClientMetadataException",
                         "clientType must be public: this service registers public clients "
                         "only.")
        unknown = sorted(set(scopes) - SCOPES)
        if unknown:
            raise _error("InvalidScopeException",
                         f"Unknown scope {unknown[0][:128]!r}: this service offers "
                         f"{', '.join(sorted(SCOPES))}.")
        grants: tuple[str, ...]
        if grant_types is None:
            # botocore's device flow registers with no grant types: refresh tokens only for
            # clients that registered scopes, as AWS.
            grants = (DEVICE_CODE, REFRESH_TOKEN) if scopes else (DEVICE_CODE,)
        else:
            bad = sorted(set(grant_types) - GRANT_TYPES)
            if bad:
                raise _error("UnsupportedGrantTypeException",
                             f"Unsupported grant type {bad[0][:128]!r}.")
            grants = tuple(dict.fromkeys(grant_types))
        for uri in redirect_uris:
            if not is_loopback_redirect(uri):
                raise _error("InvalidRedirectUriException",
                             "A redirect URI must be http on a loopback address (127.0.0.1, "
                             "[::1] or localhost), such as http://127.0.0.1/oauth/callback.")
        if AUTHORIZATION_CODE in grants:
            if not redirect_uris:
                raise _error("InvalidRedirectUriException",
                             "The authorization_code grant needs a redirect URI.")
            if issuer_url is None or await self.instance_of_start_url(issuer_url) is None:
                raise _error("InvalidRequestException",
                             "The authorization_code grant needs issuerUrl: the start URL of "
                             "an instance of this broker.")
        if issuer_url is not None and len(issuer_url) > 1024:
            raise _error("InvalidRequestException", "issuerUrl is too long.")
        now = self._now()
        registered = Client(
            client_id="", name=name[:256], scopes=tuple(scopes),
            redirect_uris=tuple(redirect_uris), grant_types=grants, issuer_url=issuer_url,
            issued_at=now, expires_at=now + CLIENT_SECONDS)
        fields = asdict(registered)
        del fields["client_id"]
        client_id = _b64(self._keyring.seal(_dump(fields), purpose=_ID_PURPOSE, aad=""))
        secret = _b64(self._keyring.seal(secrets.token_bytes(16), purpose=_PROOF_PURPOSE,
                                         aad=_digest(client_id)))
        code_flow = AUTHORIZATION_CODE in grants
        return Registration(
            replace(registered, client_id=client_id), secret,
            f"{self._public_url}/authorize" if code_flow else None,
            f"{self._public_url}/token" if code_flow else None)

    def registered(self, client_id: str) -> Client | None:
        """The registration a client id carries (sealed in it: no store holds clients, and
        every process reads them), None when it is not one of ours or has expired."""
        if not _CLIENT_ID.fullmatch(client_id):
            return None
        try:
            raw = _load(self._keyring.unseal(_unb64(client_id), purpose=_ID_PURPOSE, aad=""))
            client = Client(client_id=client_id, name=raw["name"],
                            scopes=tuple(raw["scopes"]),
                            redirect_uris=tuple(raw["redirect_uris"]),
                            grant_types=tuple(raw["grant_types"]),
                            issuer_url=raw["issuer_url"], issued_at=raw["issued_at"],
                            expires_at=raw["expires_at"])
        except (SealError, ValueError, TypeError, KeyError):
            return None
        return client if client.expires_at > self._now() else None

    def client(self, client_id: str, client_secret: str | None) -> Client:
        """The client the id and secret name, or InvalidClientException."""
        refused = _error("InvalidClientException", "The client id or secret is not valid, "
                         "or the registration has expired: register again.")
        client = self.registered(client_id)
        if client is None or not client_secret or not _CLIENT_ID.fullmatch(client_secret):
            raise refused
        try:
            self._keyring.unseal(_unb64(client_secret), purpose=_PROOF_PURPOSE,
                                 aad=_digest(client_id))
        except (SealError, ValueError):
            raise refused from None
        return client

    # -- the device authorization grant ---------------------------------------------------------

    async def start_device(self, client_id: str, client_secret: str, start_url: str, *,
                           source_ip: str | None = None) -> DeviceAuthorization:
        client = self.client(client_id, client_secret)
        if not client.allows(DEVICE_CODE):
            raise _error("UnauthorizedClientException",
                         "The client did not register for the device code grant.")
        instance = await self.instance_of_start_url(start_url)
        if instance is None:
            raise _error("InvalidRequestException",
                         "startUrl is not the start URL of an instance of this broker "
                         f"({self._public_url}/start/IDENTITY_STORE_ID).")
        if client.issuer_url is not None and \
                await self.instance_of_start_url(client.issuer_url) != instance:
            raise _error("InvalidRequestException",
                         "startUrl is not the issuer URL the client registered with.")
        starts = await self._ephemeral.incr(_key("starts", source_ip or "-"), MISS_WINDOW)
        if starts > DEVICE_STARTS:
            raise _error("SlowDownException", "Too many device authorizations from this "
                         "address: try again in a few minutes.")
        device_code = secrets.token_urlsafe(48)
        user_code = "-".join("".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(4))
                             for _ in range(2))
        expires_at = self._now() + DEVICE_SECONDS
        request = {"user_code": user_code, "client_id": client.client_id,
                   "client_name": client.name, "account_id": instance.account_id,
                   "identity_store_id": instance.identity_store_id, "expires_at": expires_at,
                   "scopes": list(client.scopes), "device": _digest(device_code)}
        await self._ephemeral.set(_key("device", _digest(device_code)), _dump(request),
                                  DEVICE_SECONDS + EXPIRED_GRACE)
        stored = await self._ephemeral.put_if_absent(
            _key("user-code", _digest(user_code)), _dump(request), DEVICE_SECONDS)
        if not stored:  # one in 25 billion: draw again
            return await self.start_device(client_id, client_secret, start_url,
                                           source_ip=source_ip)
        verification = f"{self._public_url}/start/device"
        return DeviceAuthorization(device_code, user_code, verification,
                                   f"{verification}?user_code={user_code}", DEVICE_SECONDS,
                                   INTERVAL)

    async def device_request(self, user_code: str, *,
                             source_ip: str | None) -> DeviceRequest | None:
        """The pending request of a user code, for the portal to show; None when there is
        none (unknown, decided, expired) or when this address has missed too often."""
        address = _key("misses", source_ip or "-")
        if await self._ephemeral.get(_key("blocked", source_ip or "-")) is not None:
            return None
        code = canonical_user_code(user_code) if len(user_code) < 64 else None
        raw = await self._ephemeral.get(_key("user-code", _digest(code))) if code else None
        if raw is None:
            if await self._ephemeral.incr(address, MISS_WINDOW) >= USER_CODE_MISSES:
                await self._ephemeral.set(_key("blocked", source_ip or "-"), b"1",
                                          MISS_WINDOW)
            return None
        request = _load(raw)
        if request["expires_at"] <= self._now():
            return None
        return _device_request(request)

    async def approve_device(self, user_code: str, *, account_id: str, identity_store_id: str,
                             user_id: str, session_expires_at: datetime | None = None,
                             asserted: Mapping[str, str] | None = None,
                             source: str = "") -> None:
        """Approve a pending request for this user of this instance, once; Refused when the
        code is unknown, decided or expired, or belongs to another instance. The tokens end
        with the portal session (``session_expires_at``; otherwise ``session_seconds``)."""
        code = canonical_user_code(user_code) if len(user_code) < 64 else None
        key = _key("user-code", _digest(code)) if code else None
        raw = await self._ephemeral.get(key) if key else None
        if key is None or raw is None:
            raise Refused("invalid_grant", "This code is not valid: it may have expired or "
                          "been used. Ask the application for a new one.")
        request = _load(raw)
        if (request["account_id"], request["identity_store_id"]) != \
                (account_id, identity_store_id):
            raise Refused("invalid_grant", "This code was issued for another start URL.")
        if await self._ephemeral.take(key) is None:
            raise Refused("invalid_grant", "This code has just been used.")
        now = self._now()
        session_end = now + self._session_seconds
        if session_expires_at is not None:
            session_end = min(session_end, int(session_expires_at.timestamp()))
        decision = {"approved": True, "account_id": account_id,
                    "identity_store_id": identity_store_id, "user_id": user_id,
                    "session_end": session_end, "sign_in": _sign_in(asserted, source)}
        await self._ephemeral.set(_key("decision", request["device"]), _dump(decision),
                                  max(request["expires_at"] - now, 1) + EXPIRED_GRACE)

    async def deny_device(self, user_code: str) -> None:
        code = canonical_user_code(user_code) if len(user_code) < 64 else None
        raw = await self._ephemeral.take(_key("user-code", _digest(code))) if code else None
        if raw is None:
            return
        request = _load(raw)
        await self._ephemeral.set(_key("decision", request["device"]),
                                  _dump({"approved": False}),
                                  max(request["expires_at"] - self._now(), 1) + EXPIRED_GRACE)

    async def _redeem_device(self, client: Client, device_code: str | None) -> Tokens:
        if not client.allows(DEVICE_CODE):
            raise _error("UnauthorizedClientException",
                         "The client did not register for the device code grant.")
        unknown = _error("InvalidGrantException", "The device code is not valid: it is "
                         "unknown, or was used already.")
        if not device_code or not _TOKEN.fullmatch(device_code):
            raise unknown
        digest = _digest(device_code)
        raw = await self._ephemeral.get(_key("device", digest))
        if raw is None:
            raise unknown
        request = _load(raw)
        if request["client_id"] != client.client_id:
            raise _error("InvalidGrantException", "The device code was issued to another "
                         "client.")
        if request["expires_at"] <= self._now():
            raise _error("ExpiredTokenException", "The device code has expired: start the "
                         "device authorization again.")
        if not await self._ephemeral.put_if_absent(_key("poll", digest), b"1", INTERVAL):
            raise _error("SlowDownException", f"Poll no more often than every {INTERVAL} "
                         "seconds.")
        decision_key = _key("decision", digest)
        decision = await self._ephemeral.get(decision_key)
        if decision is None:
            raise _error("AuthorizationPendingException",
                         "The person has not approved the request yet.")
        if not _load(decision)["approved"]:
            raise _error("AccessDeniedException", "The person denied the request.")
        taken = await self._ephemeral.take(decision_key)
        if taken is None:
            raise unknown
        await self._ephemeral.delete(_key("device", digest))
        approval = _load(taken)
        if (approval["account_id"], approval["identity_store_id"]) != \
                (request["account_id"], request["identity_store_id"]):
            raise unknown  # never: approve_device checks the instance
        return await self._issue(client, approval["account_id"],
                                 approval["identity_store_id"], approval["user_id"],
                                 approval["session_end"], sign_in=approval.get("sign_in"))

    # -- the authorization code grant -----------------------------------------------------------

    async def authorization_request(self, *, client_id: str, redirect_uri: str,
                                    code_challenge: str | None,
                                    code_challenge_method: str | None,
                                    scopes: Sequence[str] = (), state: str | None = None,
                                    response_type: str = "code") -> AuthorizationRequest:
        """The request of ``GET /authorize`` checked: the client (its id carries its
        registration; the browser never sees the secret, so the registered loopback redirect
        and PKCE are what bind the code to the client), its redirect URI, a PKCE S256
        challenge, the scopes. Refused otherwise; ``redirect`` only once the client and its
        redirect URI are known good (RFC 6749 §4.1.2.1): ``_redirect_target`` checks them
        first, and nothing before it may be told at the URI."""
        client, instance = await self._redirect_target(client_id, redirect_uri)
        if response_type != "code":
            raise Refused("unsupported_response_type", "response_type must be code.",
                          redirect=True)
        if code_challenge_method != "S256" or not code_challenge or \
                not re.fullmatch(r"[A-Za-z0-9_-]{43}", code_challenge):
            raise Refused("invalid_request", "A PKCE code_challenge with "
                          "code_challenge_method S256 is required.", redirect=True)
        unknown = sorted(set(scopes) - SCOPES)
        if unknown:
            raise Refused("invalid_scope", f"Unknown scope {unknown[0][:128]!r}.",
                          redirect=True)
        return AuthorizationRequest(client.client_id, client.name, redirect_uri,
                                    code_challenge, tuple(scopes or client.scopes), state,
                                    instance.account_id, instance.identity_store_id)

    async def _redirect_target(self, client_id: str, redirect_uri: str
                               ) -> tuple[Client, Instance]:
        """The client and its instance, if ``redirect_uri`` is one it registered (any port,
        RFC 8252 §7.3); Refused without ``redirect`` otherwise: an error for a client or a
        URI in doubt is shown to the person, never sent to the URI."""
        client = self.registered(client_id)
        if client is None or not client.allows(AUTHORIZATION_CODE):
            raise Refused("invalid_client", "The client is not registered for the "
                          "authorization code grant, or its registration has expired.")
        if not is_loopback_redirect(redirect_uri):
            raise Refused("invalid_request", "The redirect URI is not a loopback http URI.")
        if not any(_without_port(redirect_uri) == _without_port(registered)
                   for registered in client.redirect_uris):
            raise Refused("invalid_request", "The redirect URI is not one the client "
                          "registered.")
        instance = await self.instance_of_start_url(client.issuer_url or "")
        if instance is None:
            raise Refused("invalid_client", "The client's issuer URL names no instance.")
        return client, instance

    async def issue_code(self, request: AuthorizationRequest, *, account_id: str,
                         identity_store_id: str, user_id: str,
                         session_expires_at: datetime | None = None,
                         asserted: Mapping[str, str] | None = None, source: str = "") -> str:
        """A code for this person's approval of the request (Refused for a person of
        another instance); the portal sends the browser to
        ``redirect_uri?code=…&state=…``."""
        if (request.account_id, request.identity_store_id) != (account_id, identity_store_id):
            raise Refused("access_denied", "This sign-in request is for another start URL.")
        now = self._now()
        session_end = now + self._session_seconds
        if session_expires_at is not None:
            session_end = min(session_end, int(session_expires_at.timestamp()))
        code = secrets.token_urlsafe(32)
        record = {"client_id": request.client_id, "redirect_uri": request.redirect_uri,
                  "challenge": request.code_challenge, "account_id": account_id,
                  "identity_store_id": identity_store_id, "user_id": user_id,
                  "session_end": session_end, "sign_in": _sign_in(asserted, source)}
        await self._ephemeral.set(_key("code", _digest(code)), _dump(record), CODE_SECONDS)
        return code

    async def _redeem_code(self, client: Client, code: str | None, redirect_uri: str | None,
                           verifier: str | None) -> Tokens:
        if not client.allows(AUTHORIZATION_CODE):
            raise _error("UnauthorizedClientException",
                         "The client did not register for the authorization code grant.")
        invalid = _error("InvalidGrantException", "The authorization code is not valid: it "
                         "is unknown, expired or used, or was issued for another client or "
                         "redirect URI.")
        if not code or not _TOKEN.fullmatch(code):
            raise invalid
        raw = await self._ephemeral.take(_key("code", _digest(code)))
        if raw is None:
            raise invalid
        record = _load(raw)
        if record["client_id"] != client.client_id or redirect_uri != record["redirect_uri"]:
            raise invalid
        if not verifier or not re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier):
            raise _error("InvalidGrantException", "The PKCE code verifier is not valid.")
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, record["challenge"]):
            raise _error("InvalidGrantException", "The PKCE code verifier does not match the "
                         "challenge.")
        return await self._issue(client, record["account_id"], record["identity_store_id"],
                                 record["user_id"], record["session_end"],
                                 sign_in=record.get("sign_in"))

    # -- tokens ---------------------------------------------------------------------------------

    async def create_token(self, *, client_id: str, client_secret: str, grant_type: str,
                           device_code: str | None = None, code: str | None = None,
                           refresh_token: str | None = None, scopes: Sequence[str] = (),
                           redirect_uri: str | None = None,
                           code_verifier: str | None = None) -> Tokens:
        client = self.client(client_id, client_secret)
        if grant_type not in GRANT_TYPES:
            raise _error("UnsupportedGrantTypeException",
                         f"Unsupported grant type {grant_type[:128]!r}.")
        if set(scopes) - set(client.scopes):
            raise _error("InvalidScopeException", "A scope the client did not register.")
        if grant_type == DEVICE_CODE:
            return await self._redeem_device(client, device_code)
        if grant_type == AUTHORIZATION_CODE:
            return await self._redeem_code(client, code, redirect_uri, code_verifier)
        return await self._refresh(client, refresh_token)

    async def _issue(self, client: Client, account_id: str, identity_store_id: str,
                     user_id: str, session_end: int, grant_id: str | None = None, *,
                     sign_in: Any = None) -> Tokens:
        now = self._now()
        if session_end <= now:
            raise _error("InvalidGrantException", "The sign-in has ended.")
        if await self._users.active_user(account_id, identity_store_id, user_id) is None:
            if grant_id is not None:
                await self._ephemeral.delete(_key("grant", grant_id))
            raise _error("InvalidGrantException", "The sign-in has ended: the user no longer "
                         "exists or is disabled.")
        if grant_id is None:
            grant_id = secrets.token_hex(16)
            await self._ephemeral.set(_key("grant", grant_id), b"1", session_end - now)
        access = "aoa" + secrets.token_urlsafe(48)
        expires = min(now + ACCESS_SECONDS, session_end)
        grant = {"account_id": account_id, "identity_store_id": identity_store_id,
                 "user_id": user_id, "client_id": client.client_id, "expires_at": expires,
                 "grant_id": grant_id, "session_end": session_end,
                 "sign_in": sign_in if isinstance(sign_in, dict) else _sign_in(None, "")}
        await self._ephemeral.set(_key("access", _digest(access)), _dump(grant), expires - now)
        refresh = None
        if client.refreshes:
            refresh = "aor" + secrets.token_urlsafe(48)
            await self._ephemeral.set(_key("refresh", _digest(refresh)), _dump(grant),
                                      session_end - now)
        return Tokens(access, expires - now, refresh)

    async def _refresh(self, client: Client, refresh_token: str | None) -> Tokens:
        if not client.allows(REFRESH_TOKEN):
            raise _error("UnauthorizedClientException",
                         "The client did not register for the refresh_token grant.")
        invalid = _error("InvalidGrantException", "The refresh token is not valid.")
        if not refresh_token or not _TOKEN.fullmatch(refresh_token):
            raise invalid
        digest = _digest(refresh_token)
        marker = _key("refreshed", digest)
        raw = await self._ephemeral.get(_key("refresh", digest))
        if raw is None:
            # Retired already: its marker was claimed before it was, so it is still there.
            used = await self._ephemeral.get(marker)
            if used is not None:
                await self._end_reused(used.decode())
            raise invalid
        grant = _load(raw)
        if grant["client_id"] != client.client_id:  # another client holds it: stolen
            await self._ephemeral.delete(_key("grant", grant["grant_id"]))
            raise invalid
        # The grant is checked alive before the claim: whoever loses the claim below ends it
        # only after, so the claimant's answer does not depend on how the two interleave.
        if await self._ephemeral.get(_key("grant", grant["grant_id"])) is None:
            raise _error("InvalidGrantException", "The sign-in has ended. Sign in again.")
        # The arbiter, atomic across processes: one presenter claims the marker, and only it
        # rotates; every other presenter of this token, now or later, is a reuse.
        if not await self._ephemeral.put_if_absent(
                marker, grant["grant_id"].encode(),
                max(grant["session_end"] - self._now(), 1)):
            await self._end_reused(grant["grant_id"])
        await self._ephemeral.delete(_key("refresh", digest))
        return await self._issue(client, grant["account_id"], grant["identity_store_id"],
                                 grant["user_id"], grant["session_end"], grant["grant_id"],
                                 sign_in=grant.get("sign_in"))

    async def _end_reused(self, grant_id: str) -> NoReturn:
        """A refresh token presented again (stolen, copied, or raced by a thief): end its
        grant, every access and refresh token of the sign-in, the newest ones too."""
        await self._ephemeral.delete(_key("grant", grant_id))
        raise _error("InvalidGrantException", "The refresh token was used already: the "
                     "sign-in is ended. Sign in again.")

    async def resolve(self, access_token: str) -> Grant | None:
        """The grant of a live access token: None when unknown, expired, logged out, ended
        by a reused refresh token, or when its user no longer exists or is disabled."""
        if not access_token or not _TOKEN.fullmatch(access_token):
            return None
        raw = await self._ephemeral.get(_key("access", _digest(access_token)))
        if raw is None:
            return None
        grant = _load(raw)
        if grant["expires_at"] <= self._now():
            return None
        if await self._ephemeral.get(_key("grant", grant["grant_id"])) is None:
            return None
        if await self._users.active_user(grant["account_id"], grant["identity_store_id"],
                                         grant["user_id"]) is None:
            # Ended, as the portal ends their sessions: enabling them again revives nothing.
            await self._ephemeral.delete(_key("grant", grant["grant_id"]))
            return None
        sign_in = grant.get("sign_in") or {}
        asserted = sign_in.get("asserted")
        return Grant(grant["account_id"], grant["identity_store_id"], grant["user_id"],
                     grant["client_id"], datetime.fromtimestamp(grant["expires_at"], UTC),
                     grant["grant_id"], datetime.fromtimestamp(grant["session_end"], UTC),
                     {str(k): str(v) for k, v in asserted.items()}
                     if isinstance(asserted, dict) else None,
                     str(sign_in.get("source") or ""))

    async def logout(self, access_token: str) -> None:
        """End the grant of this access token: it, its refresh token and every token
        descended from the same sign-in stop working."""
        if not access_token or not _TOKEN.fullmatch(access_token):
            return
        key = _key("access", _digest(access_token))
        raw = await self._ephemeral.take(key)
        if raw is not None:
            await self._ephemeral.delete(_key("grant", _load(raw)["grant_id"]))


def _sign_in(asserted: Mapping[str, str] | None, source: str) -> dict[str, Any]:
    """What a sign-in keeps of the portal session that approved it (see ``Grant``)."""
    return {"asserted": None if asserted is None else dict(asserted), "source": source}


def _device_request(request: dict[str, Any]) -> DeviceRequest:
    return DeviceRequest(request["user_code"], request["client_id"], request["client_name"],
                         request["account_id"], request["identity_store_id"],
                         datetime.fromtimestamp(request["expires_at"], UTC),
                         tuple(request["scopes"]))
