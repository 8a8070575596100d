"""An OpenID Connect provider's signing keys: discovery, the JWKS, TLS trust and the cache.

``KeySource.keys(issuer)`` answers the provider's ``KeySet``:

- from the provider's static JWKS when it has one (nothing is fetched, ever);
- else from this process's cache while it is fresh;
- else by fetching ``ISSUER/.well-known/openid-configuration`` (whose ``issuer`` must equal the
  provider's URL) and its ``jwks_uri`` (same scheme, host and port) with httpx: a timeout,
  size limits, redirects followed only within the same origin, no proxy from the environment.

TLS: the issuer's certificate is first verified against the system's trusted CAs, as usual. If
that fails and the provider lists thumbprints, the chain the issuer serves is read; each of its
certificates whose SHA-1 thumbprint is listed becomes a trust anchor, and the connection is made
again, verified against those anchors alone (chain, validity dates and host name all checked by
OpenSSL). Plain http is refused unless the issuer is on a loopback host and the development
setting allows it.

The cache keeps a set for the provider's Cache-Control max-age (bounded by the settings). A
token whose ``kid`` the set lacks makes one fetch per ``refetch_interval`` at most, however many
such tokens arrive (one fetch at a time per provider; the others wait for its answer). When a
fetch fails, the keys already held are kept until ``max_stale`` after their time ran out: an
outage of the issuer neither opens the door nor empties the cache. Past that, ``KeysUnavailable``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from broker import jsontext
from broker.errors import BrokerError
from broker.frozen import frozen
from broker.idp.oidc import KeySet, load_jwks
from broker.settings import OidcSettings

log = logging.getLogger("broker.oidc")

MAX_DISCOVERY_BYTES = 64 * 1024
MAX_JWKS_BYTES = 512 * 1024
MAX_REDIRECTS = 3
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)
LOOPBACK_NAMES = frozenset({"localhost"})
_DER = 2  # _ssl.ENCODING_DER: the encoding Certificate.public_bytes takes for DER


class KeysUnavailable(BrokerError):
    """The provider's keys could not be had. ``unreachable``: the issuer did not answer at all
    (IDPCommunicationError); otherwise it answered with something unusable, or its TLS
    certificate is not trusted (InvalidIdentityToken)."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


@frozen
class Issuer:
    """What the broker needs to fetch a provider's keys."""

    url: str  # https://HOST[:PORT][/PATH], as registered: the tokens' iss
    thumbprints: tuple[str, ...] = ()
    static_jwks: str | None = None


@functools.lru_cache(maxsize=512)
def url_problem(url: str, *, allow_http_loopback: bool) -> str | None:
    """Why ``url`` cannot be an issuer the broker fetches keys from, or None. (A pure function
    of its arguments, asked on every AssumeRoleWithWebIdentity: the answers are kept.)"""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    if parts.scheme == "http":
        if not (allow_http_loopback and is_loopback(parts.hostname or "")):
            return ("must use https (http is allowed only for loopback issuers, with the "
                    "setting oidc.allow_http_loopback)")
    elif parts.scheme != "https":
        return "must begin with https://"
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return "must name a host, without user information"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "must not have a query or a fragment"
    if port == 0:
        return "has an invalid port"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Entry:
    keys: KeySet | None = None
    fresh_until: float = 0.0  # monotonic
    last_fetch: float = float("-inf")  # monotonic time of the last attempt
    failure: KeysUnavailable | None = None  # why the last attempt failed, if it did
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KeySource:
    def __init__(self, settings: OidcSettings, *, ca_file: str | None = None) -> None:
        self._settings = settings
        self._ca_file = ca_file
        self._entries: dict[tuple[str, tuple[str, ...]], _Entry] = {}
        self._static: dict[str, KeySet] = {}
        self.fetches = 0  # how many times keys were fetched (for operators and tests)

    async def keys(self, issuer: Issuer, *, kid: str | None = None,
                   kid_given: bool = False) -> KeySet:
        """The provider's keys. ``kid_given``: the token names ``kid``; if the keys held do not
        have it, fetch again when the refetch interval allows."""
        if issuer.static_jwks is not None:
            return self._static_keys(issuer.static_jwks)
        cache_key = (issuer.url, issuer.thumbprints)
        entry = self._entries.get(cache_key)
        if entry is None:
            if len(self._entries) > 4096:
                self._entries.clear()
            entry = self._entries[cache_key] = _Entry()
        if self._usable(entry, kid, kid_given):
            assert entry.keys is not None
            return entry.keys
        async with entry.lock:
            # Another request may have fetched while this one waited.
            if self._usable(entry, kid, kid_given):
                assert entry.keys is not None
                return entry.keys
            now = time.monotonic()
            if entry.failure is not None and \
                    now - entry.last_fetch < self._settings.refetch_interval_seconds:
                # The last attempt failed moments ago: no new one before the interval is over.
                return self._stale_or_fail(entry, now, entry.failure)
            entry.last_fetch = now
            try:
                try:
                    keys, lifetime = await self._fetch(issuer)
                except KeysUnavailable:
                    raise
                except Exception as exc:  # anything else a hostile answer may cause
                    log.exception("OIDC provider %s: fetching keys failed unexpectedly",
                                  issuer.url)
                    raise KeysUnavailable(f"fetching the keys failed ({type(exc).__name__})") \
                        from None
            except KeysUnavailable as exc:
                log.warning("OIDC provider %s: keys could not be fetched: %s", issuer.url,
                            exc.reason)
                entry.failure = exc
                return self._stale_or_fail(entry, time.monotonic(), exc)
            self.fetches += 1
            entry.keys, entry.failure = keys, None
            entry.fresh_until = time.monotonic() + lifetime
            return keys

    def forget(self) -> None:
        self._entries.clear()
        self._static.clear()

    # -- the cache ------------------------------------------------------------------------------

    def _usable(self, entry: _Entry, kid: str | None, kid_given: bool) -> bool:
        if entry.keys is None or time.monotonic() >= entry.fresh_until:
            return False
        if not kid_given or entry.keys.knows(kid):
            return True
        # An unknown kid: the keys held are still the answer until a fetch is allowed.
        return time.monotonic() - entry.last_fetch < self._settings.refetch_interval_seconds

    def _stale_or_fail(self, entry: _Entry, now: float, error: KeysUnavailable) -> KeySet:
        if entry.keys is not None and now < entry.fresh_until + self._settings.max_stale_seconds:
            return entry.keys
        raise error

    def _static_keys(self, document: str) -> KeySet:
        found = self._static.get(document)
        if found is None:
            try:
                found = load_jwks(document)
            except ValueError as exc:
                raise KeysUnavailable(f"the provider's static JWKS is not usable: {exc}") \
                    from None
            if len(self._static) > 1024:
                self._static.clear()
            self._static[document] = found
        return found

    def _lifetime(self, cache_control: str | None) -> float:
        s = self._settings
        seconds = s.key_cache_seconds
        if cache_control:
            if _NO_STORE.search(cache_control):
                seconds = 0
            else:
                found = _MAX_AGE.search(cache_control)
                if found:
                    seconds = int(found.group(1))
        return float(min(max(seconds, s.key_cache_min_seconds), s.key_cache_max_seconds))

    # -- fetching -------------------------------------------------------------------------------

    async def _fetch(self, issuer: Issuer) -> tuple[KeySet, float]:
        problem = url_problem(issuer.url, allow_http_loopback=self._settings.allow_http_loopback)
        if problem:
            raise KeysUnavailable(f"the provider URL {problem}")
        origin = urlsplit(issuer.url)
        last: KeysUnavailable | None = None
        for candidate in self._contexts(issuer):
            try:
                context = await candidate.context() if isinstance(candidate, _Pinned) \
                    else candidate
                # Discovery and keys together within the timeout, not each read: an issuer
                # that trickles its answer would otherwise hold this provider's fetch (and
                # every token waiting on it) for as long as it likes.
                async with asyncio.timeout(self._settings.timeout_seconds), \
                        self._client(context) as client:
                    discovery, _ = await self._get(
                        client, issuer.url.rstrip("/") + "/.well-known/openid-configuration",
                        origin, MAX_DISCOVERY_BYTES)
                    jwks_uri = _discovered(discovery, issuer.url)
                    if not _same_origin(urlsplit(jwks_uri), origin):
                        raise KeysUnavailable("the discovery document's jwks_uri is not on the "
                                              "issuer's host")
                    body, cache_control = await self._get(client, jwks_uri, origin,
                                                          MAX_JWKS_BYTES)
            except _Untrusted as exc:
                last = KeysUnavailable(exc.reason)
                continue
            except TimeoutError:
                raise KeysUnavailable(f"{issuer.url} did not answer within "
                                      f"{self._settings.timeout_seconds} s",
                                      unreachable=True) from None
            except (ValueError, httpx.InvalidURL) as exc:
                # A URL in the provider's answers (jwks_uri, a redirect) that cannot be read.
                raise KeysUnavailable(f"the provider's answer is not usable ({exc})") from None
            try:
                keys = load_jwks(body)
            except ValueError as exc:
                raise KeysUnavailable(f"the provider's JWKS is not usable: {exc}") from None
            return keys, self._lifetime(cache_control)
        assert last is not None
        raise last

    def _contexts(self, issuer: Issuer) -> list[ssl.SSLContext | _Pinned | None]:
        """The TLS contexts to try, in order: the system's CAs, then (when the provider lists
        thumbprints and the system's CAs do not vouch for it) the listed certificates of the
        chain the issuer serves. [None] for plain http."""
        parts = urlsplit(issuer.url)
        if parts.scheme == "http":
            return [None]
        system = ssl.create_default_context(cafile=self._ca_file)
        system.minimum_version = ssl.TLSVersion.TLSv1_2
        if not issuer.thumbprints:
            return [system]
        return [system, _Pinned(parts.hostname or "", parts.port or 443, issuer.thumbprints,
                                self._settings.timeout_seconds)]

    def _client(self, context: ssl.SSLContext | None) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self._settings.timeout_seconds)
        return httpx.AsyncClient(verify=context if context is not None else False,
                                 timeout=timeout, follow_redirects=False, trust_env=False,
                                 headers={"Accept": "application/json",
                                          "Accept-Encoding": "identity",
                                          "User-Agent": "broker-oidc"})

    async def _get(self, client: httpx.AsyncClient, url: str, origin: Any,
                   limit: int) -> tuple[bytes, str | None]:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect:
                        target = urljoin(url, response.headers.get("location", ""))
                        if not _same_origin(urlsplit(target), origin):
                            raise KeysUnavailable("the provider redirected to another host")
                        url = target
                        continue
                    if response.status_code != 200:
                        raise KeysUnavailable(
                            f"{url} answered HTTP {response.status_code}",
                            unreachable=response.status_code >= 500)
                    # Identity only (asked for in the request): a compressed answer would be
                    # inflated, chunk by chunk, before the size limit could be checked.
                    encoding = response.headers.get("content-encoding", "identity")
                    if encoding.strip().lower() != "identity":
                        raise KeysUnavailable(f"{url} answered in a content encoding "
                                              f"({encoding}); only identity is accepted")
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > limit:
                            raise KeysUnavailable(f"{url} answered more than {limit} bytes")
                    return bytes(body), response.headers.get("cache-control")
            except httpx.ConnectError as exc:
                if _tls_refused(exc):
                    raise _Untrusted("the provider's TLS certificate is not trusted (it does "
                                     "not chain to a trusted CA, and no listed thumbprint "
                                     "matches)") from None
                raise KeysUnavailable(f"{url} could not be reached ({exc})",
                                      unreachable=True) from None
            except httpx.TimeoutException:
                raise KeysUnavailable(f"{url} did not answer in time", unreachable=True) \
                    from None
            except httpx.HTTPError as exc:
                raise KeysUnavailable(f"{url} could not be read ({exc})", unreachable=True) \
                    from None
        raise KeysUnavailable("the provider redirected too many times")


class _Untrusted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _tls_refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen) or "certificate verify failed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _same_origin(parts: Any, origin: Any) -> bool:
    def port(p: Any) -> int | None:
        try:
            return p.port or (443 if p.scheme == "https" else 80)
        except ValueError:
            return None

    return (parts.scheme == origin.scheme and (parts.hostname or "") == (origin.hostname or "")
            and port(parts) == port(origin) and parts.username is None)


def _discovered(document: bytes, issuer_url: str) -> str:
    try:
        data = jsontext.loads(document)
    except jsontext.JsonRefused:
        raise KeysUnavailable("the discovery document is not JSON") from None
    if not isinstance(data, dict):
        raise KeysUnavailable("the discovery document is not a JSON object")
    if data.get("issuer") != issuer_url:
        raise KeysUnavailable("the discovery document's issuer is not the provider's URL")
    jwks_uri = data.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise KeysUnavailable("the discovery document has no jwks_uri")
    return jwks_uri


# -- trust by thumbprint ------------------------------------------------------------------------


def served_chain(host: str, port: int, timeout: float) -> list[bytes]:
    """The certificates (DER) the server at ``host:port`` presents, leaf first, unverified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        chain = _unverified_chain(tls)
        if not chain:
            leaf = tls.getpeercert(binary_form=True)
            chain = [leaf] if leaf else []
    return chain


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13 and later
    found: Sequence[Any] | None = public() if public is not None else None
    if found is None:
        inner = getattr(tls, "_sslobj", None)
        method = getattr(inner, "get_unverified_chain", None)
        found = method() if method is not None else None
    out: list[bytes] = []
    for cert in found or ():
        out.append(cert if isinstance(cert, bytes) else cert.public_bytes(_DER))
    return out


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


class _Pinned:
    """A TLS context made on demand: the served certificates whose thumbprints are listed,
    as the only trust anchors (partial chains allowed, so an intermediate or the leaf itself
    can be one), host name checked."""

    def __init__(self, host: str, port: int, thumbprints: Sequence[str],
                 timeout: float) -> None:
        self.host, self.port = host, port
        self.thumbprints = frozenset(t.lower() for t in thumbprints)
        self.timeout = timeout

    async def context(self) -> ssl.SSLContext:
        try:
            chain = await asyncio.to_thread(served_chain, self.host, self.port, self.timeout)
        except (OSError, ssl.SSLError) as exc:
            raise KeysUnavailable(f"{self.host}:{self.port} could not be reached ({exc})",
                                  unreachable=True) from None
        anchors = [der for der in chain if thumbprint(der) in self.thumbprints]
        if not anchors:
            raise _Untrusted("OpenIDConnect provider's HTTPS certificate doesn't match "
                             "configured thumbprint")
        context = ssl.create_default_context(cadata=b"".join(anchors))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        return context
