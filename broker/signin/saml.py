"""SAML sign-in in a browser: what AWS's ``https://signin.aws.amazon.com/saml`` does.

``SamlSignIn`` holds the use cases behind the web endpoints (web/saml.py):

* ``offer``: a posted SAMLResponse verified against every provider its Role attribute names
  (at most ``MAX_PROVIDERS``); the roles it offers, by account. Nothing is consumed: the JSON
  role-chooser API uses this alone.
* ``receive``: ``offer``, then the answer matched to the pending request of the browser that
  posts it (SP-initiated sign-in: the request's record holds the digest of a secret only that
  browser's cookie knows) or accepted as IdP-initiated if the broker allows that, and the
  assertion consumed (each assertion signs in once, across every process).
* ``sign_in``: the chosen role assumed and a console session made.
* ``hold`` / ``take_choice``: the verified assertion kept server-side while the person picks a
  role, behind a random handle and a CSRF token, for at most ``CHOICE_SECONDS``; taken once.
* ``begin``: an AuthnRequest for SP-initiated sign-in (HTTP-Redirect binding), remembered for
  ``REQUEST_SECONDS``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from broker.aws import arn
from broker.aws.errors import AwsError, InvalidIdentityToken
from broker.clock import Clock, iso8601
from broker.iam.entities import SamlProvider
from broker.iam.service import IamService
from broker.idp import saml, xmlsafe
from broker.signin.destinations import CONSOLE, Destinations
from broker.signin.sessions import ConsoleSessions
from broker.store.base import EphemeralStore
from broker.sts.saml import ROLE, RolePair, SamlFederation, Verified, pairs_of

MAX_PROVIDERS = 10
CHOICE_SECONDS = 600
REQUEST_SECONDS = 600
_CHOICE = "saml-choice:"
_REQUEST = "saml-request:"


@dataclass(frozen=True)
class OfferedRole:
    role_arn: str
    provider_arn: str
    account_id: str
    account_alias: str | None

    @property
    def role_name(self) -> str:
        parsed = arn.parse(self.role_arn)
        return parsed.resource.rsplit("/", 1)[-1] if parsed else self.role_arn

    def json(self) -> dict[str, str | None]:
        return {"roleArn": self.role_arn, "principalArn": self.provider_arn,
                "roleName": self.role_name, "accountId": self.account_id,
                "accountAlias": self.account_alias}


@dataclass(frozen=True)
class Offer:
    verified: tuple[Verified, ...]
    roles: tuple[OfferedRole, ...]

    @property
    def assertion(self) -> saml.VerifiedAssertion:
        return self.verified[0].assertion

    def accounts(self) -> list[tuple[str, str | None, list[OfferedRole]]]:
        """The offered roles grouped by account, in the order the assertion gave them."""
        groups: dict[str, list[OfferedRole]] = {}
        for role in self.roles:
            groups.setdefault(role.account_id, []).append(role)
        return [(account, roles[0].account_alias, roles) for account, roles in groups.items()]


@dataclass(frozen=True)
class Choice:
    """A verified assertion waiting for its person to pick a role."""

    handle: str  # the cookie value
    csrf: str  # the form's token


class SamlSignIn:
    def __init__(self, federation: SamlFederation, sessions: ConsoleSessions, iam: IamService,
                 ephemeral: EphemeralStore, destinations: Destinations, clock: Clock, *,
                 sp_entity_id: str, idp_initiated: bool) -> None:
        self._federation = federation
        self.sessions = sessions
        self._iam = iam
        self._ephemeral = ephemeral
        self.destinations = destinations
        self._clock = clock
        self._entity_id = sp_entity_id
        self._idp_initiated = idp_initiated

    # -- receiving a response ------------------------------------------------------------------

    async def offer(self, encoded: str) -> Offer:
        xml = _decode(encoded)
        named, issuer = _named_providers(xml)
        candidates = named or await self._providers_of(issuer)
        if not candidates:
            raise InvalidIdentityToken(
                "Your request included an invalid SAML response: it names no role "
                f"({ROLE}).")
        verified: list[Verified] = []
        first_error: AwsError | None = None
        for provider_arn in candidates:
            try:
                verified.append(await self._federation.verify(xml, provider_arn))
            except AwsError as exc:
                first_error = first_error or exc
        if not verified:
            assert first_error is not None
            raise first_error
        roles: list[OfferedRole] = []
        aliases: dict[str, str | None] = {}
        for v in verified:
            for pair in v.roles:
                if pair.account_id != v.provider.account_id:
                    continue
                if pair.account_id not in aliases:
                    aliases[pair.account_id] = await self._alias(pair.account_id)
                roles.append(OfferedRole(pair.role_arn, pair.provider_arn, pair.account_id,
                                         aliases[pair.account_id]))
        if not roles:
            raise InvalidIdentityToken(
                "Your request included an invalid SAML response: it offers no role of the "
                "provider's account.")
        return Offer(tuple(verified), tuple(roles))

    async def receive(self, encoded: str, browser: str | None) -> Offer:
        """``offer``, then the replies-to check and the one-time use of the assertion.
        ``browser`` is the secret this browser's request cookie holds, if any: an answer to a
        request counts only in the browser that started it."""
        offer = await self.offer(encoded)
        answered = offer.assertion.in_response_to
        if answered is not None:
            foreign = InvalidIdentityToken("The SAML response answers a sign-in request this "
                                           "browser did not make (InResponseTo).")
            if not browser or len(browser) > 128:
                raise foreign
            key = _REQUEST + _digest(answered)
            asked = _pending(await self._ephemeral.get(key))
            # Compared before it is taken, so that a wrong cookie spends nothing (whoever holds
            # someone's answer cannot burn their request); taken atomically, so that of two
            # posts with the right cookie one wins.
            if asked is None or not _same(asked["browser"], _digest(browser)) or \
                    await self._ephemeral.take(key) is None:
                raise foreign
            # The answer must come from the provider the request went to.
            mine = tuple(v for v in offer.verified if v.provider.arn == asked["provider"])
            if not mine:
                raise foreign
            offer = Offer(mine, tuple(r for r in offer.roles
                                      if r.provider_arn == asked["provider"]))
        elif not self._idp_initiated:
            raise InvalidIdentityToken("Sign-in must start at the broker (/saml/login): "
                                       "IdP-initiated sign-in is switched off.")
        await self._federation.consume(offer.verified[0])
        return offer

    async def sign_in(self, offer: Offer, role_arn: str, provider_arn: str) -> tuple[str, int]:
        """Assume the chosen role; returns the new console session's cookie value and how
        many seconds it lasts."""
        found = [v for v in offer.verified if v.provider.arn == provider_arn]
        if not found or (role_arn, provider_arn) not in {(r.role_arn, r.provider_arn)
                                                         for r in offer.roles}:
            raise InvalidIdentityToken("That role is not one the SAML response offers.")
        verified = found[0]
        role = await self._federation.role(verified, RolePair(role_arn, provider_arn))
        issued = await self._federation.assume(verified, role)
        cookie = await self.sessions.create(issued, issuer=provider_arn)
        return cookie, issued.session.expires_at - issued.session.issued_at

    def destination(self, relay_state: str | None) -> str:
        if relay_state:
            allowed = self.destinations.check(relay_state)
            if allowed is not None:
                return allowed
        return CONSOLE

    # -- the role chooser ----------------------------------------------------------------------

    async def hold(self, offer: Offer, relay_state: str | None) -> Choice:
        handle, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        state = {"csrf": csrf, "relay": relay_state, "verified": [
            {"provider": v.provider.arn, "assertion": _assertion_json(v.assertion)}
            for v in offer.verified], "roles": [asdict(r) for r in offer.roles]}
        await self._ephemeral.set(_CHOICE + _digest(handle), json.dumps(state).encode(),
                                  CHOICE_SECONDS)
        return Choice(handle, csrf)

    async def take_choice(self, handle: str | None, csrf: str | None
                          ) -> tuple[Offer, str | None]:
        """The held offer and its RelayState, once, if the form's CSRF token matches."""
        if not handle or not csrf or len(handle) > 128:
            raise InvalidIdentityToken("The role choice has expired or was already made; "
                                       "sign in again.")
        raw = await self._ephemeral.take(_CHOICE + _digest(handle))
        if raw is None:
            raise InvalidIdentityToken("The role choice has expired or was already made; "
                                       "sign in again.")
        state = json.loads(raw)
        if not _same(state["csrf"], csrf):
            raise InvalidIdentityToken("The role choice form is not this browser's (CSRF "
                                       "token mismatch); sign in again.")
        verified: list[Verified] = []
        for item in state["verified"]:
            provider = await self._federation.provider(item["provider"])
            if provider is None:
                raise InvalidIdentityToken("Specified provider doesn't exist")
            verified.append(Verified(provider, _assertion_of(item["assertion"])))
        roles = tuple(OfferedRole(**r) for r in state["roles"])
        return Offer(tuple(verified), roles), state["relay"]

    # -- SP-initiated sign-in ------------------------------------------------------------------

    async def begin(self, provider_name: str, account_id: str | None,
                    relay_state: str | None) -> tuple[str, str]:
        """(the identity provider's sign-in URL with an AuthnRequest, the secret that binds
        the request to this browser). The request id travels through the identity provider
        and back in the answer, so it cannot be the proof that a browser asked: the secret,
        kept only in the browser's cookie, is."""
        provider = await self._find_provider(provider_name, account_id)
        sso = provider.sso_redirect_url
        if not sso:
            raise InvalidIdentityToken(f"The metadata of provider {provider_name} names no "
                                       "HTTP-Redirect sign-in service.")
        request_id = "_" + secrets.token_hex(20)
        now = self._clock.now()
        request = (
            '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{request_id}" Version="2.0" IssueInstant="{iso8601(now)}" '
            f'Destination={quoteattr(sso)} '
            f'AssertionConsumerServiceURL={quoteattr(self._federation.sp.acs_url)} '
            'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
            f'<saml:Issuer>{escape(self._entity_id)}</saml:Issuer>'
            '<samlp:NameIDPolicy AllowCreate="true"/></samlp:AuthnRequest>'
        )
        deflated = zlib.compress(request.encode())[2:-4]  # raw DEFLATE (saml-bindings §3.4.4.1)
        query = {"SAMLRequest": base64.b64encode(deflated).decode()}
        if relay_state:
            query["RelayState"] = relay_state
        browser = secrets.token_urlsafe(32)
        pending = {"provider": provider.arn, "browser": _digest(browser)}
        await self._ephemeral.set(_REQUEST + _digest(request_id), json.dumps(pending).encode(),
                                  REQUEST_SECONDS)
        joiner = "&" if "?" in sso else "?"
        return f"{sso}{joiner}{urlencode(query)}", browser

    async def _find_provider(self, name: str, account_id: str | None) -> SamlProvider:
        accounts = [account_id] if account_id else [a.id for a in await self._iam.list_accounts()]
        found = []
        for account in accounts:
            provider = await self._federation.provider(arn.saml_provider(account, name))
            if provider is not None:
                found.append(provider)
        if not found:
            raise InvalidIdentityToken(f"There is no SAML provider named {name}.")
        if len(found) > 1:
            raise InvalidIdentityToken(f"Several accounts have a SAML provider named {name}: "
                                       "add account=ACCOUNT_ID to the sign-in URL.")
        return found[0]

    async def _providers_of(self, issuer: str | None) -> list[str]:
        """When the Role attribute cannot be read before decryption: the providers registered
        for the response's Issuer, in every account (at most MAX_PROVIDERS)."""
        if not issuer:
            return []

        async def scan() -> list[str]:
            found: list[str] = []
            for account in await self._iam.list_accounts():
                for provider in await self._iam.saml_providers.listing(account.id):
                    if provider.entity_id == issuer:
                        found.append(provider.arn)
            return found[:MAX_PROVIDERS]

        # Kept as long as IAM's other answers: an unauthenticated POST must not cost a scan
        # of every account each time.
        return await self._federation.cached(("saml-issuer", issuer), scan)

    async def _alias(self, account_id: str) -> str | None:
        try:
            return (await self._iam.get_account(account_id)).alias
        except AwsError:
            return None


def _decode(encoded: str) -> bytes:
    try:
        return saml.decode(encoded)
    except saml.SamlRefused as exc:
        raise InvalidIdentityToken(exc.message) from None


def _named_providers(xml: bytes) -> tuple[list[str], str | None]:
    """The provider ARNs an (unverified) response's Role attribute names, and its Issuer: only
    where to look for the keys; the roles offered are read again from the verified
    assertion."""
    try:
        root = xmlsafe.parse(xml, saml.LIMITS)
    except xmlsafe.UnsafeXml as exc:
        raise InvalidIdentityToken(f"Invalid SAML response: {exc}.") from None
    values = [xmlsafe.text_of(v) for a in root.iter(f"{{{saml.SAML}}}Attribute")
              if a.get("Name") == ROLE for v in a.iter(f"{{{saml.SAML}}}AttributeValue")]
    providers = list(dict.fromkeys(pair.provider_arn for pair in pairs_of(values)))
    issuer = root.find(f"{{{saml.SAML}}}Issuer")
    return providers[:MAX_PROVIDERS], xmlsafe.text_of(issuer).strip() if issuer is not None \
        else None


def _pending(raw: bytes | None) -> dict[str, str] | None:
    """A pending request's record, or None for none (or one this version cannot read)."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str)
                                              for k in ("provider", "browser")):
        return None
    return value


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any characters."""
    return hmac.compare_digest(a.encode(), b.encode())


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


_TIMES = ("not_on_or_after", "issue_instant", "session_not_on_or_after")


def _assertion_json(a: saml.VerifiedAssertion) -> dict[str, object]:
    data = asdict(a)
    for name in _TIMES:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    return data


def _assertion_of(data: dict[str, object]) -> saml.VerifiedAssertion:
    values = dict(data)
    for name in _TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(str(values[name]))
    values["audiences"] = tuple(values["audiences"])  # type: ignore[arg-type]
    values["attributes"] = tuple((n, tuple(vs))
                                 for n, vs in values["attributes"])  # type: ignore[attr-defined]
    return saml.VerifiedAssertion(**values)  # type: ignore[arg-type]
