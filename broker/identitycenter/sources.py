"""Identity Center's identity sources: where an instance's people prove who they are.

An instance's source is its own directory (the default: passwords and MFA of
broker.identitycenter.portal), an external SAML 2.0 identity provider (as AWS's "Change
identity source" → "External identity provider": the IdP's metadata uploaded, the instance's
SP metadata downloaded), or — beyond AWS — an OpenID Connect provider (authorization code with
PKCE S256, ``state`` and ``nonce``).

The source is one record of the instance's owner account (kind ``sso_identity_source``, key the
identity store id, a child of the instance record: deleting the instance deletes it; its
``sso_`` kind makes every process's Identity Center cache see a change at the next request).
Every change gives it a new ``stamp``; a portal session remembers the stamp it was made under
and ends when the source's is another (switching source ends the instance's portal sessions,
as AWS warns it does).

The instance as a SAML service provider, under its own portal (so that an assertion made for
another instance's audience or recipient is refused by the broker's unchanged validation,
idp/saml.py):

* entity id and metadata: ``PUBLIC_URL/start/{identity store id}/saml/metadata``;
* assertion consumer service: ``PUBLIC_URL/start/{identity store id}/saml/acs`` (HTTP-POST);
* SP-initiated sign-in: ``PUBLIC_URL/start/{identity store id}/saml/login``.

An assertion is accepted once across every process (the ``saml-assertion:`` record AWS's
sign-in endpoint and AssumeRoleWithSAML use); an answer to an AuthnRequest only in the browser
that started it (its cookie's secret, as broker.signin.saml), and only for that instance.

An OIDC provider's endpoints come from its discovery document, read when the administrator
sets the source; its keys through idp/jwks.py's KeySource at each sign-in, and the ID token is
verified by idp/oidc.py exactly as AssumeRoleWithWebIdentity verifies one (signature by the
provider's keys only, ``iss``, ``aud``/``azp`` = the client id, times), then its ``nonce``.
TLS to the provider: the system's CAs, else the listed thumbprints (as IAM's OIDC providers).
The redirect URI is ``PUBLIC_URL/start/{identity store id}/oidc/callback``.

Either way the person is the directory user whose ``userName`` is the assertion's NameID (or
the ID token's ``user_claim``, ``preferred_username`` by default), compared as the directory
compares names (without regard to case); a person the directory does not have, or has
disabled, is refused. The IdP's ``https://aws.amazon.com/SAML/Attributes/AccessControl:{Key}``
attributes (for OIDC: claims of those names, and claims named as a key of the instance's ABAC
configuration) ride along for the session tags (broker.identitycenter.abac).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from xml.sax.saxutils import escape, quoteattr

import httpx

from broker import jsontext
from broker.aws.errors import AccessDenied, InvalidInput, ServiceUnavailable
from broker.clock import Clock, iso8601
from broker.errors import AlreadyExists, NotFound, SealError
from broker.iam.entities import decode, encode
from broker.identitycenter.abac import ASSERTED_PREFIX, AccessControl
from broker.identitycenter.directory import Directory, DirectoryUser
from broker.identitycenter.instances import INSTANCE, KEY, Instance
from broker.identitycenter.reads import Reads
from broker.idp import oidc, saml, sp
from broker.idp.jwks import (
    Issuer,
    KeySource,
    KeysUnavailable,
    served_chain,
    thumbprint,
    url_problem,
)
from broker.idp.metadata import MetadataError, parse_metadata, signing_key
from broker.idp.oidc import TokenRefused
from broker.idp.saml import IdentityProvider, SamlRefused, ServiceProvider
from broker.idp.sp import SpCredentials
from broker.keyring import Keyring
from broker.settings import OidcSettings
from broker.store.base import EntityStore, EphemeralStore, Record, Ref, Spent

log = logging.getLogger("broker.identitycenter")

SOURCE = "sso_identity_source"
DIRECTORY, SAML, OIDC = "directory", "saml", "oidc"
KINDS = (DIRECTORY, SAML, OIDC)
SECRET_PURPOSE = "sso-identity-source-secret"  # noqa: S105 - a sealing purpose
REQUEST_SECONDS = 600
DEFAULT_SCOPES = ("openid", "profile", "email")
DEFAULT_USER_CLAIM = "preferred_username"
MAX_METADATA = 1_000_000
MAX_SECRET = 1024
MAX_CODE = 2048
MAX_DISCOVERY_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 256 * 1024
# Where a person may be sent back to after signing in (the portal's own pages).
NEXT_PREFIXES = ("/start/device?", "/authorize?")
_SAML_REQUEST = "portal-saml-request:"
_OIDC_REQUEST = "portal-oidc-request:"
_SCOPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "-._:/~")

EXTERNAL = ("This access portal signs people in through the organization's identity provider: "
            "passwords, one-time passwords and invitations of the directory are not used.")


@dataclass(frozen=True)
class SamlSource:
    entity_id: str  # the IdP's, its assertions' Issuer
    signing_certificates: tuple[str, ...]  # base64 DER
    sso_url: str | None  # HTTP-Redirect single sign-on (SP-initiated sign-in)
    metadata: str  # as uploaded


@dataclass(frozen=True)
class OidcSource:
    issuer: str
    client_id: str
    sealed_secret: str | None  # base64 of the keyring's sealing; None: a public client
    scopes: tuple[str, ...]
    thumbprints: tuple[str, ...]
    authorization_endpoint: str
    token_endpoint: str
    user_claim: str = DEFAULT_USER_CLAIM


@dataclass(frozen=True)
class IdentitySource:
    kind: str = DIRECTORY
    stamp: str = ""  # new at every change: portal sessions made under another one end
    changed: datetime | None = None
    saml: SamlSource | None = None
    oidc: OidcSource | None = None

    @property
    def external(self) -> bool:
        return self.kind != DIRECTORY

    def show(self) -> dict[str, Any]:
        """What ``broker sso identity-source show --json`` prints (no secret)."""
        shown: dict[str, Any] = {"kind": self.kind,
                                 "changed": self.changed.isoformat() if self.changed else None}
        if self.saml is not None:
            shown["saml"] = {"entity_id": self.saml.entity_id, "sso_url": self.saml.sso_url,
                             "signing_certificates": len(self.saml.signing_certificates)}
        if self.oidc is not None:
            o = self.oidc
            shown["oidc"] = {"issuer": o.issuer, "client_id": o.client_id,
                             "client_secret": o.sealed_secret is not None,
                             "scopes": list(o.scopes), "thumbprints": list(o.thumbprints),
                             "user_claim": o.user_claim,
                             "authorization_endpoint": o.authorization_endpoint,
                             "token_endpoint": o.token_endpoint}
        return shown


@dataclass(frozen=True)
class ServiceProviderUrls:
    """The instance as a service provider (SAML) and relying party (OIDC)."""

    entity_id: str
    acs_url: str
    login_url: str
    redirect_uri: str  # OIDC


@dataclass(frozen=True)
class ExternalSignIn:
    """A person the identity provider vouched for, found in the directory."""

    user: DirectoryUser
    asserted: Mapping[str, str]  # AccessControl key → value
    next: str  # the portal page to go to ("" for the portal's home)
    stamp: str
    ends_at: datetime | None = None  # the provider's SessionNotOnOrAfter, if it gave one


def urls(public_url: str, instance: Instance) -> ServiceProviderUrls:
    base = f"{public_url.rstrip('/')}/start/{instance.identity_store_id}"
    return ServiceProviderUrls(f"{base}/saml/metadata", f"{base}/saml/acs", f"{base}/saml/login",
                               f"{base}/oidc/callback")


def next_path(value: str | None) -> str:
    """``value`` if it is a portal page a sign-in may return to, else ""."""
    if value and len(value) <= 2048 and value.startswith(NEXT_PREFIXES) and \
            value.isprintable() and "\\" not in value:
        return value
    return ""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class IdentitySources:
    def __init__(self, store: EntityStore, ephemeral: EphemeralStore, keyring: Keyring,
                 clock: Clock, directory: Directory, keys: KeySource, *,
                 public_url: str, sp_credentials: SpCredentials, oidc_settings: OidcSettings,
                 saml_skew: timedelta = timedelta(seconds=60), idp_initiated: bool = True,
                 access_control: AccessControl | None = None,
                 reads: Reads | None = None) -> None:
        self._store = store
        self._ephemeral = ephemeral
        self._keyring = keyring
        self._clock = clock
        self._directory = directory
        self._keys = keys
        self._public_url = public_url.rstrip("/")
        self._sp = sp_credentials
        self._oidc = oidc_settings
        self._skew = saml_skew
        self._idp_initiated = idp_initiated
        self._access_control = access_control
        self._reads = reads

    # -- the record -----------------------------------------------------------------------------

    @staticmethod
    def _ref(instance: Instance) -> Ref:
        return Ref(SOURCE, instance.account_id, instance.identity_store_id)

    async def get(self, instance: Instance) -> IdentitySource:
        """The instance's source (its directory when none was set)."""
        async def load() -> IdentitySource:
            try:
                return decode(IdentitySource, (await self._store.get(self._ref(instance))).data)
            except NotFound:
                return IdentitySource()

        if self._reads is None:
            return await load()
        return await self._reads.cached(instance.account_id,
                                        ("identity-source", instance.identity_store_id), load)

    async def _put(self, instance: Instance, source: IdentitySource) -> IdentitySource:
        source = replace(source, stamp=secrets.token_hex(16), changed=self._clock.now())
        ref = self._ref(instance)
        for _ in range(2):
            try:
                await self._store.update(ref, lambda _r: encode(source))
                return source
            except NotFound:
                try:
                    await self._store.create(Record(
                        kind=SOURCE, account=ref.account, key=ref.key, data=encode(source),
                        parent=Ref(INSTANCE, instance.account_id, KEY)))
                    return source
                except AlreadyExists:
                    continue
                except NotFound:
                    break  # the instance is gone
        raise InvalidInput(f"The instance of {instance.identity_store_id} no longer exists.")

    async def set_directory(self, instance: Instance) -> IdentitySource:
        return await self._put(instance, IdentitySource())

    async def set_saml(self, instance: Instance, metadata_text: str) -> IdentitySource:
        """The IdP's metadata (saml-metadata-2.0-os, as IAM's CreateSAMLProvider reads it)."""
        if len(metadata_text) > MAX_METADATA:
            raise InvalidInput(f"The metadata is longer than {MAX_METADATA} characters.")
        try:
            parsed = parse_metadata(metadata_text)
        except MetadataError as exc:
            raise InvalidInput(f"Could not parse metadata: {exc.reason}") from None
        redirect = parsed.sso_redirect_url
        if redirect is not None and url_problem(redirect, allow_http_loopback=True) is not None:
            raise InvalidInput("Could not parse metadata: the HTTP-Redirect "
                               "SingleSignOnService Location is not an http(s) URL.")
        return await self._put(instance, IdentitySource(kind=SAML, saml=SamlSource(
            entity_id=parsed.entity_id,
            signing_certificates=tuple(base64.b64encode(c).decode("ascii")
                                       for c in parsed.signing_certificates),
            sso_url=redirect, metadata=metadata_text)))

    async def set_oidc(self, instance: Instance, *, issuer: str, client_id: str,
                       client_secret: str | None, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                       thumbprints: tuple[str, ...] = (),
                       user_claim: str = DEFAULT_USER_CLAIM) -> IdentitySource:
        """An OpenID Connect provider: its discovery document read now (the endpoints kept),
        its keys fetched once to prove they can be."""
        issuer = issuer.strip()
        problem = url_problem(issuer, allow_http_loopback=self._oidc.allow_http_loopback) \
            if len(issuer) <= 255 else "is longer than 255 characters"
        if problem:
            raise InvalidInput(f"The issuer URL {problem}.")
        if not client_id or len(client_id) > 255 or not client_id.isprintable():
            raise InvalidInput("The client id must be 1 to 255 printable characters.")
        if client_secret is not None and (not client_secret or len(client_secret) > MAX_SECRET
                                          or not client_secret.isprintable()):
            raise InvalidInput(f"The client secret must be 1 to {MAX_SECRET} printable "
                               "characters.")
        if "openid" not in scopes or any(not s or not set(s) <= _SCOPE_CHARS for s in scopes):
            raise InvalidInput("The scopes must include openid, each of letters, digits and "
                               "-._:/~.")
        if not user_claim or len(user_claim) > 128 or not user_claim.isprintable():
            raise InvalidInput("The user claim must be a claim name of 1 to 128 characters.")
        prints = tuple(t.strip().lower() for t in thumbprints)
        if any(len(t) != 40 or any(c not in "0123456789abcdef" for c in t) for t in prints):
            raise InvalidInput("A thumbprint is the SHA-1 of a certificate: 40 hexadecimal "
                               "digits.")
        authorization, token = await self._discover(issuer, prints)
        try:
            await self._keys.keys(Issuer(issuer, prints))
        except KeysUnavailable as exc:
            raise InvalidInput(f"The provider's keys could not be fetched: {exc.reason}") \
                from None
        sealed = None
        if client_secret is not None:
            sealed = base64.b64encode(self._keyring.seal(
                client_secret.encode(), purpose=SECRET_PURPOSE,
                aad=self._secret_aad(instance))).decode("ascii")
        return await self._put(instance, IdentitySource(kind=OIDC, oidc=OidcSource(
            issuer=issuer, client_id=client_id, sealed_secret=sealed,
            scopes=tuple(dict.fromkeys(scopes)), thumbprints=prints,
            authorization_endpoint=authorization, token_endpoint=token,
            user_claim=user_claim)))

    @staticmethod
    def _secret_aad(instance: Instance) -> str:
        return f"{instance.account_id}/{instance.identity_store_id}"

    # -- SAML -----------------------------------------------------------------------------------

    def sp_metadata(self, instance: Instance) -> str:
        """The instance's SP metadata, for the IdP (its entity id, ACS URL and the broker's
        encryption certificate)."""
        u = urls(self._public_url, instance)
        return sp.metadata(u.entity_id, u.acs_url, self._sp)

    async def _external(self, instance: Instance, kind: str) -> IdentitySource:
        source = await self.get(instance)
        if source.kind != kind:
            raise AccessDenied(f"This access portal does not sign in through "
                               f"{'a SAML' if kind == SAML else 'an OpenID Connect'} identity "
                               "provider.")
        return source

    async def saml_begin(self, instance: Instance, next_page: str) -> tuple[str, str]:
        """(the IdP's sign-in URL with an AuthnRequest, HTTP-Redirect binding; the secret that
        binds the request to this browser's cookie)."""
        source = await self._external(instance, SAML)
        assert source.saml is not None
        target = source.saml.sso_url
        if not target:
            raise InvalidInput("The identity provider's metadata names no HTTP-Redirect "
                               "sign-in service: start the sign-in at the identity provider.")
        u = urls(self._public_url, instance)
        request_id = "_" + secrets.token_hex(20)
        request = (
            '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{request_id}" Version="2.0" IssueInstant="{iso8601(self._clock.now())}" '
            f'Destination={quoteattr(target)} '
            f'AssertionConsumerServiceURL={quoteattr(u.acs_url)} '
            'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
            f'<saml:Issuer>{escape(u.entity_id)}</saml:Issuer>'
            '<samlp:NameIDPolicy AllowCreate="true"/></samlp:AuthnRequest>')
        deflated = zlib.compress(request.encode())[2:-4]  # raw DEFLATE (saml-bindings §3.4.4.1)
        query = {"SAMLRequest": base64.b64encode(deflated).decode()}
        relay = next_path(next_page)
        # The page to return to is kept in the request's record; RelayState carries it too
        # where SAML allows (at most 80 bytes, saml-bindings §3.4.3), for IdPs that show it.
        if relay and len(relay.encode()) <= 80:
            query["RelayState"] = relay
        browser = secrets.token_urlsafe(32)
        pending = {"store": instance.identity_store_id, "browser": _digest(browser),
                   "stamp": source.stamp, "next": relay}
        await self._ephemeral.set(_SAML_REQUEST + _digest(request_id),
                                  json.dumps(pending).encode(), REQUEST_SECONDS)
        return f"{target}{'&' if '?' in target else '?'}{urlencode(query)}", browser

    async def saml_receive(self, instance: Instance, encoded: str, relay_state: str | None,
                           browser: str | None) -> ExternalSignIn:
        """A SAMLResponse posted to the instance's ACS: verified (idp/saml.py), matched to this
        browser's request when it answers one (else IdP-initiated), used once, its NameID
        found in the directory."""
        source = await self._external(instance, SAML)
        assert source.saml is not None
        u = urls(self._public_url, instance)
        try:
            xml = saml.decode(encoded)
            keys = tuple(signing_key(base64.b64decode(c))
                         for c in source.saml.signing_certificates)
            assertion = saml.validate(
                xml, IdentityProvider(source.saml.entity_id, keys,
                                      decryption_keys=(self._sp.key,)),
                ServiceProvider(u.acs_url, frozenset({u.entity_id}), self._skew),
                self._clock.now())
        except SamlRefused as exc:
            raise AccessDenied(f"The identity provider's response is refused: {exc.message}") \
                from None
        except MetadataError as exc:
            raise AccessDenied(f"The identity provider's certificates are not usable: "
                               f"{exc.reason}") from None
        if assertion.in_response_to is not None:
            pending = await self._answered(_SAML_REQUEST + _digest(assertion.in_response_to),
                                           instance, browser)
            following = str(pending.get("next", ""))
        elif not self._idp_initiated:
            raise AccessDenied("Sign-in must start at the access portal: IdP-initiated "
                               "sign-in is switched off (saml.idp_initiated).")
        else:
            following = next_path(relay_state)
        key = "saml-assertion:" + _digest(f"{assertion.issuer}\0{assertion.assertion_id}")
        ttl = max(1.0, (assertion.not_on_or_after + self._skew
                        - self._clock.now()).total_seconds())
        # The session the IdP grants ends the portal's (as for AssumeRoleWithSAML).
        ends = assertion.session_not_on_or_after
        if ends is not None and ends <= self._clock.now():
            raise AccessDenied("The session the identity provider granted "
                               "(SessionNotOnOrAfter) has ended: sign in again.")
        spent = await self._ephemeral.spend(
            key, ttl, (assertion.issue_instant - self._skew).timestamp())
        if spent is Spent.BEFORE:
            raise AccessDenied("The SAML assertion has already been used: sign in again.")
        if spent is Spent.UNKNOWN:  # issued before the record of used ones was lost
            raise AccessDenied("The SAML assertion was issued before the broker lost its "
                               "record of used assertions: sign in again.")
        asserted = {name[len(ASSERTED_PREFIX):]: values[0]
                    for name, values in assertion.attributes
                    if name.startswith(ASSERTED_PREFIX) and len(values) == 1}
        user = await self._person(instance, assertion.subject)
        return ExternalSignIn(user, asserted, next_path(following), source.stamp, ends)

    async def _answered(self, key: str, instance: Instance,
                        browser: str | None) -> dict[str, Any]:
        """The pending request this answer is for, taken once, if this browser made it for
        this instance; compared before it is taken, so a wrong cookie spends nothing."""
        foreign = AccessDenied("The identity provider's answer is for a sign-in this browser "
                               "did not start here: sign in again.")
        if not browser or len(browser) > 128:
            raise foreign
        raw = await self._ephemeral.get(key)
        try:
            pending = json.loads(raw) if raw is not None else None
        except ValueError:
            pending = None
        if not isinstance(pending, dict) or pending.get("store") != instance.identity_store_id \
                or not _same(str(pending.get("browser", "")), _digest(browser)) \
                or await self._ephemeral.take(key) is None:
            raise foreign
        return pending

    async def _person(self, instance: Instance, name: str) -> DirectoryUser:
        name = name.strip()
        user = None
        if 0 < len(name) <= 128:
            user = await self._directory.user_by_name(instance.account_id,
                                                      instance.identity_store_id, name)
        if user is None or not user.active:
            raise AccessDenied(f"The identity provider signed in {name[:128]!r}, but this "
                               "access portal has no enabled user of that user name: ask your "
                               "administrator to add you to the directory.")
        return user

    # -- OpenID Connect -------------------------------------------------------------------------

    async def oidc_begin(self, instance: Instance, next_page: str) -> tuple[str, str]:
        """(the provider's authorization URL: code, PKCE S256, state, nonce; the secret that
        binds the sign-in to this browser's cookie)."""
        source = await self._external(instance, OIDC)
        o = source.oidc
        assert o is not None
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        browser = secrets.token_urlsafe(32)
        pending = {"store": instance.identity_store_id, "browser": _digest(browser),
                   "nonce": nonce, "verifier": verifier, "stamp": source.stamp,
                   "next": next_path(next_page)}
        await self._ephemeral.set(_OIDC_REQUEST + _digest(state), json.dumps(pending).encode(),
                                  REQUEST_SECONDS)
        query = urlencode({
            "response_type": "code", "client_id": o.client_id,
            "redirect_uri": urls(self._public_url, instance).redirect_uri,
            "scope": " ".join(o.scopes), "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        target = o.authorization_endpoint
        return f"{target}{'&' if '?' in target else '?'}{query}", browser

    async def oidc_finish(self, instance: Instance, *, code: str, state: str, error: str,
                          error_description: str, browser: str | None) -> ExternalSignIn:
        """The provider's redirect back: the state of this browser's sign-in (taken once), the
        code redeemed with its PKCE verifier, the ID token verified, its nonce checked."""
        source = await self._external(instance, OIDC)
        o = source.oidc
        assert o is not None
        if not state or len(state) > 128:
            raise AccessDenied("The identity provider's answer has no state of a sign-in "
                               "started here: sign in again.")
        pending = await self._answered(_OIDC_REQUEST + _digest(state), instance, browser)
        if error:
            described = f": {error_description[:200]}" if error_description.isprintable() \
                else ""
            raise AccessDenied(f"The identity provider refused the sign-in "
                               f"({error[:64]!r}){described}")
        if not code or len(code) > MAX_CODE:
            raise AccessDenied("The identity provider's answer has no code.")
        id_token = await self._redeem(instance, o, code, str(pending["verifier"]))
        try:
            jws = oidc.parse(id_token)
            kid = jws.header.get("kid")
            keys = await self._keys.keys(Issuer(o.issuer, o.thumbprints),
                                         kid=kid if isinstance(kid, str) else None,
                                         kid_given="kid" in jws.header)
            oidc.verify_signature(jws, keys)
            claims = oidc.check_claims(jws, issuer=o.issuer, client_ids=(o.client_id,),
                                       now=self._clock.now(),
                                       skew_seconds=self._oidc.clock_skew_seconds)
        except TokenRefused as exc:
            raise AccessDenied(f"The identity provider's ID token is refused: {exc.message}") \
                from None
        except KeysUnavailable as exc:
            raise AccessDenied(f"The identity provider's keys could not be had: {exc.reason}") \
                from None
        nonce = claims.values.get("nonce")
        if not isinstance(nonce, str) or not _same(nonce, str(pending["nonce"])):
            raise AccessDenied("The identity provider's ID token is refused: its nonce is not "
                               "this sign-in's.")
        name = claims.values.get(o.user_claim)
        if o.user_claim == "email" and claims.values.get("email_verified") is not True:
            raise AccessDenied("The identity provider's ID token has an email address it has "
                               "not verified (email_verified): it cannot find you in the "
                               "directory by it.")
        if not isinstance(name, str):
            raise AccessDenied(f"The identity provider's ID token has no {o.user_claim!r} "
                               "claim to find you in the directory by.")
        user = await self._person(instance, name)
        return ExternalSignIn(user, await self._claims(instance, claims.values),
                              str(pending.get("next", "")), source.stamp)

    async def _claims(self, instance: Instance, values: Mapping[str, Any]) -> dict[str, str]:
        """The ID token's AccessControl claims only: a claim of another name (``email``,
        ``locale``, ...) is often one the person edits at the provider, and must not become a
        tag that policies trust."""
        del instance
        return {name[len(ASSERTED_PREFIX):]: value for name, value in values.items()
                if name.startswith(ASSERTED_PREFIX) and isinstance(value, str)}

    async def _redeem(self, instance: Instance, o: OidcSource, code: str,
                      verifier: str) -> str:
        """The token endpoint's ID token for this code (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": urls(self._public_url, instance).redirect_uri,
                "code_verifier": verifier}
        headers = {"Accept": "application/json"}
        if o.sealed_secret is not None:
            try:
                secret = self._keyring.unseal(base64.b64decode(o.sealed_secret),
                                              purpose=SECRET_PURPOSE,
                                              aad=self._secret_aad(instance)).decode()
            except SealError:
                # A key retired before `broker sso identity-source set-oidc` was run again.
                log.error("identity source of %s: the client secret does not open (%s)",
                          instance.identity_store_id, "its keyring key is retired or unknown")
                raise ServiceUnavailable("The access portal's identity provider settings "
                                         "cannot be read: ask your administrator.") from None
            pair = f"{quote(o.client_id, safe='')}:{quote(secret, safe='')}"  # RFC 6749 §2.3.1
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = o.client_id
        try:
            status, body = await self._http("POST", o.token_endpoint, o.thumbprints,
                                             MAX_TOKEN_BYTES, data=form, headers=headers)
        except KeysUnavailable as exc:
            raise AccessDenied(f"The identity provider's token endpoint could not be used: "
                               f"{exc.reason}") from None
        try:
            answer = jsontext.loads(body)
        except jsontext.JsonRefused:
            answer = None
        if not isinstance(answer, dict):
            raise AccessDenied(f"The identity provider's token endpoint answered HTTP {status} "
                               "without a JSON object.")
        if status != 200:
            error = answer.get("error")
            raise AccessDenied("The identity provider refused the sign-in code "
                               f"({str(error)[:64]!r}): sign in again.")
        token = answer.get("id_token")
        if not isinstance(token, str) or not token:
            raise AccessDenied("The identity provider's token endpoint answered no ID token "
                               "(is the openid scope allowed for this client?).")
        return token

    async def _discover(self, issuer: str, thumbprints: tuple[str, ...]) -> tuple[str, str]:
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            status, body = await self._http("GET", url, thumbprints, MAX_DISCOVERY_BYTES)
        except KeysUnavailable as exc:
            raise InvalidInput(f"The provider's discovery document could not be read: "
                               f"{exc.reason}") from None
        try:
            document = jsontext.loads(body) if status == 200 else None
        except jsontext.JsonRefused:
            document = None
        if not isinstance(document, dict):
            raise InvalidInput(f"{url} answered HTTP {status}, not a discovery document.")
        if document.get("issuer") != issuer:
            raise InvalidInput("The discovery document's issuer is not the issuer URL given "
                               "(give it exactly as the provider names itself).")
        found = []
        for name in ("authorization_endpoint", "token_endpoint"):
            value = document.get(name)
            if not isinstance(value, str) or len(value) > 2048 or url_problem(
                    value.split("?", 1)[0] if name == "authorization_endpoint" else value,
                    allow_http_loopback=self._oidc.allow_http_loopback):
                raise InvalidInput(f"The discovery document's {name} is missing or not an "
                                   "https URL.")
            found.append(value)
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise InvalidInput("The provider does not support PKCE with S256 "
                               "(code_challenge_methods_supported).")
        return found[0], found[1]

    async def _http(self, method: str, url: str, thumbprints: tuple[str, ...], limit: int, *,
                    data: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """One request to the provider: TLS verified by the system's CAs, else by the listed
        thumbprints (as KeySource trusts the provider); a timeout, a size limit, no redirect,
        nothing from the environment. KeysUnavailable when it cannot be made."""
        problem = url_problem(url, allow_http_loopback=self._oidc.allow_http_loopback)
        if problem:
            raise KeysUnavailable(f"{url[:256]} {problem}")
        parts = urlsplit(url)
        attempts: list[bool] = [False] + ([True] if thumbprints and parts.scheme == "https"
                                          else [])
        timeout = self._oidc.timeout_seconds
        last = KeysUnavailable(f"{url[:256]} could not be reached")
        for pinned in attempts:
            try:
                async with asyncio.timeout(timeout):
                    context = await self._context(parts, thumbprints, pinned)
                    async with httpx.AsyncClient(
                            verify=context if context is not None else False,
                            timeout=httpx.Timeout(timeout), follow_redirects=False,
                            trust_env=False, headers={"User-Agent": "broker-oidc",
                                                      "Accept-Encoding": "identity"}) as client, \
                            client.stream(method, url, data=data, headers=headers) as response:
                        body = bytearray()
                        async for chunk in response.aiter_raw():
                            body += chunk
                            if len(body) > limit:
                                raise KeysUnavailable(f"{url[:256]} answered more than "
                                                      f"{limit} bytes")
                        return response.status_code, bytes(body)
            except TimeoutError:
                raise KeysUnavailable(f"{url[:256]} did not answer within {timeout} s",
                                      unreachable=True) from None
            except httpx.ConnectError as exc:
                if _tls_refused(exc):
                    last = KeysUnavailable("the provider's TLS certificate is not trusted (it "
                                           "does not chain to a trusted CA, and no listed "
                                           "thumbprint matches)")
                    continue
                raise KeysUnavailable(f"{url[:256]} could not be reached",
                                      unreachable=True) from None
            except (httpx.HTTPError, ValueError, OSError, ssl.SSLError) as exc:
                raise KeysUnavailable(f"{url[:256]} could not be read "
                                      f"({type(exc).__name__})") from None
        raise last

    async def _context(self, parts: Any, thumbprints: tuple[str, ...],
                       pinned: bool) -> ssl.SSLContext | None:
        if parts.scheme != "https":
            return None
        if not pinned:
            context = ssl.create_default_context()
        else:
            port = parts.port or 443
            chain = await asyncio.to_thread(served_chain, parts.hostname or "", port,
                                            float(self._oidc.timeout_seconds))
            anchors = [der for der in chain if thumbprint(der) in thumbprints]
            if not anchors:
                raise KeysUnavailable("the provider's TLS certificate doesn't match a "
                                      "configured thumbprint")
            context = ssl.create_default_context(cadata=b"".join(anchors))
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def _tls_refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or \
                "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- the keyring: resealing client secrets (broker keys activate / rotate / retire) ----------


async def reseal_secrets(store: EntityStore, keyring: Keyring, accounts: list[str]) -> int:
    """Seal every OIDC source's client secret with the keyring's sealing key."""
    count = 0
    for account in accounts:
        for record in await store.list(SOURCE, account):
            oidc_data = record.data.get("oidc") or {}
            sealed = oidc_data.get("sealed_secret")
            if not sealed:
                continue
            blob = base64.b64decode(sealed)
            if keyring.key_id_of(blob) == keyring.sealing.id:
                continue
            aad = f"{account}/{record.key}"
            fresh = base64.b64encode(keyring.seal(
                keyring.unseal(blob, purpose=SECRET_PURPOSE, aad=aad),
                purpose=SECRET_PURPOSE, aad=aad)).decode("ascii")

            def change(current: Record, old: str = sealed, fresh: str = fresh
                       ) -> dict[str, Any]:
                data = dict(current.data)
                if (data.get("oidc") or {}).get("sealed_secret") == old:
                    data["oidc"] = {**data["oidc"], "sealed_secret": fresh}
                return data

            await store.update(record.ref, change)
            count += 1
    return count


async def sealed_with(store: EntityStore, keyring: Keyring, accounts: list[str],
                      key_id: str) -> int:
    count = 0
    for account in accounts:
        for record in await store.list(SOURCE, account):
            sealed = (record.data.get("oidc") or {}).get("sealed_secret")
            if sealed:
                count += int(keyring.key_id_of(base64.b64decode(sealed)) == key_id)
    return count
