"""An OpenID Connect provider's keys as AssumeRoleWithWebIdentity gets them (broker/idp/jwks.py),
driven by boto3 against real brokers and real issuers over TLS (tests/oidc_issuer.py): trust by
thumbprint and by a private CA, plain http, discovery and the JWKS fetch, the cache, an issuer
that is down, and a static JWKS. Every refusal has an honest control beside it.

The brokers keep keys for as little as the issuer's Cache-Control says (FAST_KEYS). The one most
tests use, ``fast``, may also fetch again at once after a failure (refetch interval 0), so that
an attack refused can be followed by its control on the same issuer without waiting.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers import Broker, signed_request, start_broker
from tests.oidc_issuer import (
    CountingServer,
    IssuerKey,
    TestIssuer,
    _json_reply,
    _Listener,
    _Reply,
    _server_context,
    default_claims,
    sign_with,
)
from tests.oidc_world import FAST_KEYS, OidcWorld

ClientError = botocore.exceptions.ClientError

COULD_NOT_RETRIEVE = ("Couldn't retrieve verification key from your identity provider, please "
                      "reference AssumeRoleWithWebIdentity documentation for requirements")
REFUSED = ("InvalidIdentityToken", COULD_NOT_RETRIEVE, 400)
UNREACHABLE = ("IDPCommunicationError", "The identity provider that was asked to verify the "
               "incoming identity token could not be reached. Try again later.", 400)
HTTP_REFUSED = ("InvalidInput", "Invalid URL: the provider URL must use https (http is allowed "
                "only for loopback issuers, with the setting oidc.allow_http_loopback).", 400)
MAX_JWKS_BYTES = 512 * 1024
MAX_DISCOVERY_BYTES = 64 * 1024
DISCOVERY = "/.well-known/openid-configuration"


# -- brokers and issuers ------------------------------------------------------------------------


def _broker(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("broker"), env={**FAST_KEYS, **env})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, BROKER_OIDC_REFETCH_INTERVAL_SECONDS="0")


@pytest.fixture(scope="module")
def refetch_5s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, BROKER_OIDC_REFETCH_INTERVAL_SECONDS="5")


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Keys kept 1 s at most, and 2 s more when the issuer cannot be reached."""
    yield from _broker(tmp_path_factory, BROKER_OIDC_MAX_STALE_SECONDS="2",
                       BROKER_OIDC_KEY_CACHE_MAX_SECONDS="1",
                       BROKER_OIDC_REFETCH_INTERVAL_SECONDS="0")


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker's own cache settings (keys kept 60 s at least)."""
    b = start_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def http_loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, BROKER_OIDC_ALLOW_HTTP_LOOPBACK="true")


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    with TestIssuer() as started:
        yield started


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with CountingServer() as started:
        yield started


class ChainIssuer(TestIssuer):
    """The test issuer serving ``chain`` (leaf first) with the leaf's ``key``."""

    __test__ = False

    def __init__(self, chain: Sequence[x509.Certificate], key: ec.EllipticCurvePrivateKey,
                 **options: Any) -> None:
        super().__init__(**options)
        self.certificate = chain[0]
        self.certificate_der = chain[0].public_bytes(serialization.Encoding.DER)
        self.certificate_pem = chain[0].public_bytes(serialization.Encoding.PEM)
        self.thumbprint = thumbprint_of(chain[0])
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self._listener = _Listener(self._respond, _server_context(pem, key))


class PlainHttpIssuer(TestIssuer):
    """The test issuer at ``http://127.0.0.1:PORT``, without TLS."""

    __test__ = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._listener = _Listener(self._respond)

    @property
    def url(self) -> str:
        return f"http://{self.host_port}{self.path}"


class MovedKeysIssuer(TestIssuer):
    """The test issuer that also serves its JWKS at ``/current/keys``, where ``/keys`` may
    redirect."""

    __test__ = False

    def _respond(self, method: str, path: str) -> _Reply:
        if path != f"{self.path}/current/keys":
            return super()._respond(method, path)
        with self._fetches_lock:
            self.fetches[path] += 1
        cache = {"Cache-Control": self.cache_control} if self.cache_control is not None else {}
        return _json_reply(200, self.jwks(), **cache)


class DripIssuer(TestIssuer):
    """The test issuer over plain http, whose JWKS arrives in ``chunks`` pieces ``pause``
    seconds apart: each piece well within a read timeout, the whole far beyond the fetch's."""

    __test__ = False

    def __init__(self, *, pause: float, chunks: int, **options: Any) -> None:
        super().__init__(**options)
        self.pause, self.chunks = pause, chunks
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with issuer._fetches_lock:
                    issuer.fetches[path] += 1
                slow = path == f"{issuer.path}/keys"
                document = issuer.jwks() if slow else issuer.discovery()
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = -(-len(body) // (issuer.chunks if slow else 1))
                try:
                    for start in range(0, len(body), step):
                        if start:
                            time.sleep(issuer.pause)
                        self.wfile.write(body[start:start + step])
                        self.wfile.flush()
                except OSError:
                    pass  # the broker gave up: what the test hopes for

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._drip = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._drip.daemon_threads = True
        self._thread = threading.Thread(target=self._drip.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._drip.server_address[1]}{self.path}"

    def start(self) -> DripIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._drip.shutdown()
        self._drip.server_close()
        self._thread.join(timeout=10)


# -- certificates -------------------------------------------------------------------------------


def thumbprint_of(certificate: x509.Certificate) -> str:
    return hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate_authority(common_name: str = "Test Private CA"
                          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.now(UTC) - timedelta(days=1)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def issued_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                names: Sequence[x509.GeneralName]
                ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for ``names``, issued by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.now(UTC) - timedelta(days=1)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("oidc issuer")).issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


LOOPBACK = [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]


# -- calls --------------------------------------------------------------------------------------


def set_jwks(broker: Broker, provider_arn: str, jwks: str | None) -> tuple[int, str, str]:
    """SetOpenIDConnectProviderJWKS (the broker's own action, so no boto3 method): its HTTP
    status, error code and message ("" on success)."""
    params = {"Action": "SetOpenIDConnectProviderJWKS", "Version": "2010-05-08",
              "OpenIDConnectProviderArn": provider_arn}
    if jwks is not None:
        params["Jwks"] = jwks
    method, url, headers, body = signed_request(broker.url, params, broker.root, service="iam")
    resp = httpx.request(method, url, headers=headers, content=body)
    code = re.search(r"<Code>(.*?)</Code>", resp.text)
    message = re.search(r"<Message>(.*?)</Message>", resp.text, re.S)
    return (resp.status_code, code.group(1) if code else "",
            message.group(1) if message else "")


def works(world: OidcWorld, **claims: Any) -> None:
    result = world.assume(world.token(**claims))
    assert result["AssumedRoleUser"]["Arn"].endswith("/ci-run")


def works_with(world: OidcWorld, key: IssuerKey) -> None:
    result = world.assume(world.issuer.token(key=key))
    assert result["AssumedRoleUser"]["Arn"].endswith("/ci-run")


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def flood(world: OidcWorld, count: int = 30) -> list[tuple[str, str, int]]:
    """``count`` concurrent AssumeRoleWithWebIdentity calls, each with a token signed by the
    issuer's key but naming a random kid: each call's (code, message, status)."""
    sts = boto3.client("sts", endpoint_url=world.broker.url, region_name="us-east-1",
                       aws_access_key_id="unused", aws_secret_access_key="unused",
                       config=botocore.config.Config(
                           retries={"max_attempts": 1, "mode": "standard"},
                           max_pool_connections=count))
    key, claims = world.issuer.keys[0], default_claims(world.issuer)
    tokens = [sign_with(key, {"alg": key.alg, "kid": secrets.token_hex(8)}, claims)
              for _ in range(count)]

    def attempt(token: str) -> tuple[str, str, int]:
        try:
            sts.assume_role_with_web_identity(RoleArn=world.role_arn, RoleSessionName="flood",
                                              WebIdentityToken=token)
        except ClientError as exc:
            r = exc.response
            return (r["Error"]["Code"], r["Error"]["Message"],
                    r["ResponseMetadata"]["HTTPStatusCode"])
        return ("accepted", "", 200)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(attempt, tokens))


# -- trust by thumbprint ------------------------------------------------------------------------


@pytest.mark.parametrize("listed", ["exact", "upper case", "among others"])
def test_the_listed_leaf_thumbprint_is_trusted(fast: Broker, issuer: TestIssuer,
                                               listed: str) -> None:
    thumbprints = {"exact": [issuer.thumbprint], "upper case": [issuer.thumbprint.upper()],
                   "among others": ["ab" * 20, "cd" * 20, "ef" * 20, "01" * 20,
                                    issuer.thumbprint]}[listed]
    world = OidcWorld.make(fast, issuer, thumbprints=thumbprints)
    works(world)
    assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


def test_without_a_thumbprint_a_self_signed_issuer_is_not_trusted(fast: Broker,
                                                                  issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer, thumbprints=[])
    assert world.refused(world.token()) == REFUSED
    assert sum(issuer.fetches.values()) == 0  # nothing was asked over the untrusted connection
    # the control: the same provider, once its thumbprint is listed
    fast.client("iam").update_open_id_connect_provider_thumbprint(
        OpenIDConnectProviderArn=world.provider_arn, ThumbprintList=[issuer.thumbprint])
    works(world)


def test_a_thumbprint_taken_off_the_list_is_no_longer_trusted(fast: Broker,
                                                              issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    works(world)
    with TestIssuer() as other:
        fast.client("iam").update_open_id_connect_provider_thumbprint(
            OpenIDConnectProviderArn=world.provider_arn, ThumbprintList=[other.thumbprint])
    # the keys fetched while the issuer was trusted are not used for it now
    assert world.refused(world.token()) == REFUSED
    assert issuer.fetches["/keys"] == 1


def test_a_wrong_thumbprint_is_refused_until_the_right_one_is_listed(
        fast: Broker, issuer: TestIssuer) -> None:
    with TestIssuer() as other:  # a real certificate, of another server
        world = OidcWorld.make(fast, issuer, thumbprints=[other.thumbprint])
        assert world.refused(world.token()) == REFUSED
        assert sum(issuer.fetches.values()) == 0
        assert sum(other.fetches.values()) == 0
    fast.client("iam").update_open_id_connect_provider_thumbprint(
        OpenIDConnectProviderArn=world.provider_arn, ThumbprintList=[issuer.thumbprint])
    works(world)
    assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


# -- a private CA -------------------------------------------------------------------------------


def test_a_private_ca_listed_by_thumbprint_is_trusted_for_its_leaves(fast: Broker) -> None:
    ca, ca_key = certificate_authority()
    leaf, leaf_key = issued_leaf(ca, ca_key, LOOPBACK)
    with ChainIssuer([leaf, ca], leaf_key) as issuer:
        world = OidcWorld.make(fast, issuer, thumbprints=[thumbprint_of(ca)])
        works(world)
        assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


def test_a_leaf_for_another_host_is_refused_under_the_listed_ca(fast: Broker) -> None:
    ca, ca_key = certificate_authority()
    honest, honest_key = issued_leaf(ca, ca_key, LOOPBACK)
    elsewhere, elsewhere_key = issued_leaf(ca, ca_key, [x509.DNSName("idp.example.com")])
    with ChainIssuer([elsewhere, ca], elsewhere_key) as wrong_host, \
            ChainIssuer([honest, ca], honest_key) as control:
        world = OidcWorld.make(fast, wrong_host, thumbprints=[thumbprint_of(ca)])
        assert world.refused(world.token()) == REFUSED
        assert sum(wrong_host.fetches.values()) == 0
        works(OidcWorld.make(fast, control, thumbprints=[thumbprint_of(ca)]))


def test_a_served_chain_carrying_the_listed_ca_over_a_leaf_it_did_not_sign_is_refused(
        fast: Broker) -> None:
    ca, ca_key = certificate_authority()
    rogue_ca, rogue_key = certificate_authority("Rogue CA")  # same name, another key
    rogue_leaf, rogue_leaf_key = issued_leaf(rogue_ca, rogue_key, LOOPBACK)
    honest, honest_key = issued_leaf(ca, ca_key, LOOPBACK)
    with ChainIssuer([rogue_leaf, ca], rogue_leaf_key) as impostor, \
            ChainIssuer([honest, ca], honest_key) as control:
        world = OidcWorld.make(fast, impostor, thumbprints=[thumbprint_of(ca)])
        assert world.refused(world.token()) == REFUSED
        assert sum(impostor.fetches.values()) == 0
        works(OidcWorld.make(fast, control, thumbprints=[thumbprint_of(ca)]))


def test_a_listed_ca_the_server_does_not_present_is_not_an_anchor(fast: Broker) -> None:
    """The anchors are the listed certificates of the chain the issuer serves: a leaf served
    alone is not trusted by its CA's thumbprint (it is by its own)."""
    ca, ca_key = certificate_authority()
    leaf, leaf_key = issued_leaf(ca, ca_key, LOOPBACK)
    with ChainIssuer([leaf], leaf_key) as issuer:
        world = OidcWorld.make(fast, issuer, thumbprints=[thumbprint_of(ca)])
        assert world.refused(world.token()) == REFUSED
        fast.client("iam").update_open_id_connect_provider_thumbprint(
            OpenIDConnectProviderArn=world.provider_arn, ThumbprintList=[thumbprint_of(leaf)])
        works(world)


# -- plain http ---------------------------------------------------------------------------------


def test_an_http_issuer_is_refused_at_creation_by_default(fast: Broker,
                                                          issuer: TestIssuer) -> None:
    iam = fast.client("iam")
    with PlainHttpIssuer() as plain:
        with pytest.raises(ClientError) as info:
            iam.create_open_id_connect_provider(Url=plain.url, ClientIDList=["client-1"])
        r = info.value.response
        assert (r["Error"]["Code"], r["Error"]["Message"],
                r["ResponseMetadata"]["HTTPStatusCode"]) == HTTP_REFUSED
    assert all(p["Arn"].rsplit("/", 1)[1] != plain.host_port
               for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"])
    works(OidcWorld.make(fast, issuer))  # the control: https


def test_an_http_loopback_issuer_works_when_the_setting_allows_it(http_loopback: Broker) -> None:
    with PlainHttpIssuer() as plain:
        world = OidcWorld.make(http_loopback, plain, thumbprints=[])
        works(world)
        assert plain.fetches == {DISCOVERY: 1, "/keys": 1}


@pytest.mark.parametrize("url", ["http://idp.example.com", "http://10.0.0.8:8080/realms/x",
                                 "http://127.0.0.1.nip.io", "http://[2001:db8::1]"])
def test_an_http_issuer_off_loopback_is_refused_even_when_the_setting_allows_loopback(
        http_loopback: Broker, url: str) -> None:
    iam = http_loopback.client("iam")
    with pytest.raises(ClientError) as info:
        iam.create_open_id_connect_provider(Url=url, ClientIDList=["client-1"])
    r = info.value.response
    assert (r["Error"]["Code"], r["Error"]["Message"],
            r["ResponseMetadata"]["HTTPStatusCode"]) == HTTP_REFUSED
    # the control: the same URL in https is accepted
    iam.create_open_id_connect_provider(Url="https" + url[4:], ClientIDList=["client-1"])


# -- discovery and the JWKS fetch ---------------------------------------------------------------


@pytest.mark.parametrize("claimed", ["https://accounts.example.com", "{url}/", "{url}/other"])
def test_a_discovery_document_naming_another_issuer_is_refused(fast: Broker, issuer: TestIssuer,
                                                               claimed: str) -> None:
    world = OidcWorld.make(fast, issuer)
    issuer.discovery_overrides["issuer"] = claimed.format(url=issuer.url)
    assert world.refused(world.token()) == REFUSED
    assert issuer.fetches == {DISCOVERY: 1}  # the JWKS it names is not fetched
    issuer.discovery_overrides.clear()
    works(world)


def test_a_jwks_uri_on_another_origin_is_never_fetched(fast: Broker, issuer: TestIssuer,
                                                       counting: CountingServer) -> None:
    world = OidcWorld.make(fast, issuer)
    issuer.discovery_overrides["jwks_uri"] = f"{counting.url}/keys"
    assert world.refused(world.token()) == REFUSED
    assert counting.hits == 0
    # localhost is the same machine, and the issuer's certificate names it, but it is another
    # host than the provider's URL names
    issuer.discovery_overrides["jwks_uri"] = f"https://localhost:{issuer.port}/keys"
    assert world.refused(world.token()) == REFUSED
    assert issuer.fetches == {DISCOVERY: 2}
    issuer.discovery_overrides.clear()
    works(world)


def test_a_jwks_redirected_to_another_host_is_not_followed(fast: Broker, issuer: TestIssuer,
                                                           counting: CountingServer) -> None:
    world = OidcWorld.make(fast, issuer)
    issuer.redirect_jwks_to = f"{counting.url}/keys"
    assert world.refused(world.token()) == REFUSED
    assert counting.hits == 0
    assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}
    issuer.redirect_jwks_to = None
    works(world)


@pytest.mark.parametrize("location", ["{url}/current/keys", "/current/keys"])
def test_a_jwks_redirected_within_the_issuers_origin_is_followed(fast: Broker,
                                                                 location: str) -> None:
    with MovedKeysIssuer() as issuer:
        issuer.redirect_jwks_to = location.format(url=issuer.url)
        works(OidcWorld.make(fast, issuer))
        assert issuer.fetches == {DISCOVERY: 1, "/keys": 1, "/current/keys": 1}


def test_a_jwks_answering_500_is_an_idp_communication_error(fast: Broker,
                                                            issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    issuer.jwks_status = 500
    assert world.refused(world.token()) == UNREACHABLE
    issuer.jwks_status = 503
    assert world.refused(world.token()) == UNREACHABLE
    # an answer that is not an outage: 404 says the keys are not there
    issuer.jwks_status = 404
    assert world.refused(world.token()) == REFUSED
    issuer.jwks_status = 200
    works(world)


def test_a_jwks_that_trickles_in_is_given_up_after_the_timeout(http_loopback: Broker) -> None:
    """oidc.timeout_seconds (2 s here) bounds the whole fetch, not only each read: a JWKS sent
    a piece every 0.5 s for 5 s is an issuer that did not answer in time. Had the broker waited
    for the last piece, the token — honestly signed — would have been accepted; IDPCommunication
    Error says it gave up (no duration is asserted)."""
    with DripIssuer(pause=0.5, chunks=11) as issuer:
        world = OidcWorld.make(http_loopback, issuer, thumbprints=[])
        # One attempt (the suite's clients retry once, and IDPCommunicationError is retryable).
        once = boto3.client("sts", endpoint_url=http_loopback.url, region_name="us-east-1",
                            aws_access_key_id="x", aws_secret_access_key="x",
                            config=botocore.config.Config(retries={"total_max_attempts": 1}))
        try:
            once.assume_role_with_web_identity(RoleArn=world.role_arn, RoleSessionName="drip",
                                               WebIdentityToken=world.token())
            outcome = ("accepted", "", 200)
        except ClientError as exc:
            r = exc.response
            outcome = (r["Error"]["Code"], r["Error"]["Message"],
                       r["ResponseMetadata"]["HTTPStatusCode"])
        assert outcome == UNREACHABLE
        issuer.pause = 0.0  # the control: the same issuer, answering at once
        works(world)


def test_a_jwks_larger_than_512_kib_is_refused(fast: Broker, issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    key = issuer.keys[0]

    def pad_to(size: int) -> None:
        key.jwk["x-padding"] = ""
        base = len(json.dumps(issuer.jwks(), separators=(",", ":")).encode())
        key.jwk["x-padding"] = "A" * (size - base)
        assert len(json.dumps(issuer.jwks(), separators=(",", ":")).encode()) == size

    pad_to(MAX_JWKS_BYTES + 1)
    assert world.refused(world.token()) == REFUSED
    assert issuer.fetches["/keys"] == 1
    pad_to(MAX_JWKS_BYTES)  # the control: exactly the limit
    works(world)


def test_a_discovery_document_larger_than_64_kib_is_refused(fast: Broker,
                                                            issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)

    def pad_to(size: int) -> None:
        issuer.discovery_overrides["x-padding"] = ""
        base = len(json.dumps(issuer.discovery(), separators=(",", ":")).encode())
        issuer.discovery_overrides["x-padding"] = "A" * (size - base)

    pad_to(MAX_DISCOVERY_BYTES + 1)
    assert world.refused(world.token()) == REFUSED
    assert issuer.fetches == {DISCOVERY: 1}
    pad_to(MAX_DISCOVERY_BYTES)  # the control: exactly the limit
    works(world)


# -- the cache ----------------------------------------------------------------------------------


def test_keys_are_fetched_once_while_fresh(fast: Broker, issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    works(world)
    works(world, sub="repo:corp/app:ref:refs/heads/other")
    works(world)
    assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


def test_an_unpublished_key_works_until_the_cache_lifetime_ends(fast: Broker) -> None:
    with TestIssuer(algs=("RS256", "ES256"), cache_control="max-age=2") as issuer:
        world = OidcWorld.make(fast, issuer)
        retired, kept = issuer.keys
        works_with(world, retired)
        fetched = time.monotonic()
        issuer.unpublish(retired.kid)
        works_with(world, retired)  # still in the keys held
        works_with(world, kept)
        assert issuer.fetches["/keys"] == 1
        sleep_until(fetched + 2.3)
        assert world.refused(issuer.token(key=retired)) == REFUSED
        works_with(world, kept)  # the control: the key still published
        assert issuer.fetches["/keys"] == 2


@pytest.mark.parametrize("cache_control", ["no-store", "max-age=0", "max-age=5"])
def test_keys_are_kept_at_least_key_cache_min_seconds(defaults: Broker,
                                                      cache_control: str) -> None:
    with TestIssuer(cache_control=cache_control) as issuer:
        world = OidcWorld.make(defaults, issuer)
        works(world)
        works(world)
        assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


@pytest.mark.parametrize("cache_control", ["max-age=86400", None])
def test_keys_are_kept_at_most_key_cache_max_seconds(short_lived: Broker,
                                                     cache_control: str | None) -> None:
    with TestIssuer(cache_control=cache_control) as issuer:
        world = OidcWorld.make(short_lived, issuer)
        works(world)
        fetched = time.monotonic()
        works(world)
        assert issuer.fetches["/keys"] == 1
        sleep_until(fetched + 1.2)
        works(world)
        assert issuer.fetches["/keys"] == 2


def test_an_unknown_kid_flood_makes_at_most_one_fetch_per_refetch_interval(
        refetch_5s: Broker, issuer: TestIssuer) -> None:
    world = OidcWorld.make(refetch_5s, issuer)
    works(world)
    fetched = time.monotonic()
    assert issuer.fetches["/keys"] == 1

    assert flood(world) == [REFUSED] * 30
    assert issuer.fetches["/keys"] == 1  # the interval since the fetch is not over

    sleep_until(fetched + 5.3)
    assert flood(world) == [REFUSED] * 30
    assert issuer.fetches["/keys"] == 2  # one fetch for the thirty
    assert flood(world) == [REFUSED] * 30
    assert issuer.fetches["/keys"] == 2
    works(world)  # the control: the known key is still accepted, from the cache
    assert issuer.fetches == {DISCOVERY: 2, "/keys": 2}


def test_a_rotated_key_is_picked_up_by_an_unknown_kid_after_the_interval(
        refetch_5s: Broker, issuer: TestIssuer) -> None:
    world = OidcWorld.make(refetch_5s, issuer)
    works(world)
    fetched = time.monotonic()
    new = issuer.add_key("ES256")
    assert world.refused(issuer.token(key=new)) == REFUSED  # within the refetch interval
    assert issuer.fetches["/keys"] == 1
    sleep_until(fetched + 5.3)
    works_with(world, new)
    works_with(world, issuer.keys[0])  # the control: the old key too
    assert issuer.fetches["/keys"] == 2


# -- an issuer that is down ---------------------------------------------------------------------


def test_cached_keys_outlive_an_outage_for_max_stale_seconds(short_lived: Broker) -> None:
    with TestIssuer(cache_control="max-age=1") as issuer:
        world = OidcWorld.make(short_lived, issuer)
        works(world)
        fetched = time.monotonic()
        issuer.down()
        sleep_until(fetched + 1.3)  # the keys' lifetime is over; max_stale (2 s) is not
        works(world)
        sleep_until(fetched + 3.4)
        assert world.refused(world.token()) == UNREACHABLE
        issuer.up()
        works(world)
        assert issuer.fetches["/keys"] == 2


def test_an_issuer_down_before_any_fetch_is_an_idp_communication_error(
        fast: Broker, issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    issuer.down()
    assert world.refused(world.token()) == UNREACHABLE
    issuer.up()
    works(world)


# -- a static JWKS ------------------------------------------------------------------------------


def test_a_static_jwks_is_used_without_calling_the_issuer(fast: Broker,
                                                          issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    assert set_jwks(fast, world.provider_arn, json.dumps(issuer.jwks())) == (200, "", "")
    issuer.down()
    works(world)
    assert sum(issuer.fetches.values()) == 0
    # Jwks absent: the broker fetches the keys again, from an issuer that is down...
    assert set_jwks(fast, world.provider_arn, None) == (200, "", "")
    assert world.refused(world.token()) == UNREACHABLE
    # ...and from one that is up
    issuer.up()
    works(world)
    assert issuer.fetches == {DISCOVERY: 1, "/keys": 1}


def test_a_static_jwks_without_the_tokens_key_is_refused(fast: Broker,
                                                         issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    stranger = IssuerKey.generate("RS256")
    assert set_jwks(fast, world.provider_arn,
                    json.dumps({"keys": [stranger.jwk]})) == (200, "", "")
    assert world.refused(world.token()) == REFUSED
    assert sum(issuer.fetches.values()) == 0  # no fall back to the issuer
    assert set_jwks(fast, world.provider_arn, json.dumps(issuer.jwks())) == (200, "", "")
    works(world)
    assert sum(issuer.fetches.values()) == 0


def _weak_jwks() -> str:
    """A JWKS whose one key is RSA of 1024 bits, too short to verify with."""
    bits = 1024
    weak = IssuerKey.generate("RS256", private_key=rsa.generate_private_key(65537, bits))
    return json.dumps({"keys": [weak.jwk]})


@pytest.mark.parametrize("document", [
    "not json", "[]", '{"keys": "none"}', '{"keys": []}', '{"issuer": "x"}',
    _weak_jwks(),
])
def test_an_unusable_static_jwks_is_invalid_input(fast: Broker, issuer: TestIssuer,
                                                  document: str) -> None:
    world = OidcWorld.make(fast, issuer)
    status, code, message = set_jwks(fast, world.provider_arn, document)
    assert (status, code) == (400, "InvalidInput")
    assert message.startswith("The JWKS "), message
    works(world)  # the provider still fetches its keys
    assert issuer.fetches["/keys"] == 1
    assert set_jwks(fast, world.provider_arn, json.dumps(issuer.jwks())) == (200, "", "")


def test_a_static_jwks_for_a_missing_provider_is_no_such_entity(fast: Broker,
                                                                issuer: TestIssuer) -> None:
    world = OidcWorld.make(fast, issuer)
    missing = world.provider_arn + "/missing"
    assert set_jwks(fast, missing, json.dumps(issuer.jwks())) == \
        (404, "NoSuchEntity", f"OpenIDConnect Provider not found for arn {missing}")
    assert set_jwks(fast, world.provider_arn, json.dumps(issuer.jwks())) == (200, "", "")
