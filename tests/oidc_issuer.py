"""An OpenID Connect issuer for the tests: signing keys, a JWKS and discovery over real TLS.

``TestIssuer`` serves ``{path}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0
§4) and a JWKS at ``{path}/keys`` (RFC 7517 §5) over TLS 1.2+ on 127.0.0.1, from a thread, with
a self-signed certificate whose SHA-1 thumbprint is what CreateOpenIDConnectProvider takes. Its
ID tokens are compact JWS (RFC 7515) signed by jwcrypto, so they share no code with the broker's
verifier (pyjwt); keys come from ``cryptography``. What a real issuer gets wrong, or an attacker
turns, is an attribute set at runtime: the JWKS's Cache-Control, a redirect or an error in its
place, a discovery document naming another issuer or JWKS, keys taken out, the server down.

``compact``, ``hs_token`` and ``sign_with`` build forged tokens by hand (any header, any
algorithm, no JOSE library); ``CountingServer`` counts what a ``jku`` or ``x5u`` would make a
careless verifier fetch.

Nothing here imports from ``broker``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import ipaddress
import json
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwcrypto import jwk as jose_jwk
from jwcrypto import jws as jose_jws

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ALGS: Final = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
DEFAULT_AUDIENCE: Final = "client-1"
DEFAULT_SUBJECT: Final = "repo:corp/app:ref:refs/heads/main"

_HASHES: Final[dict[str, hashes.HashAlgorithm]] = {
    "256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512(),
}
# The public key's members in a JWK (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2).
_KEY_MEMBERS: Final = ("n", "e", "crv", "x", "y")
_CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1(),
}


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _part(value: Mapping[str, Any] | bytes) -> str:
    return b64url(value if isinstance(value, bytes) else _json(value))


def compact(header: Mapping[str, Any] | bytes, payload: Mapping[str, Any] | bytes,
            signature: bytes = b"") -> str:
    """``header.payload.signature`` in the JWS compact serialization; bytes are taken as is."""
    return f"{_part(header)}.{_part(payload)}.{b64url(signature)}"


def hs_token(secret: bytes, header: Mapping[str, Any], payload: Mapping[str, Any] | bytes,
             hash_name: str = "sha256") -> str:
    """A compact JWS MACed with HMAC-``hash_name`` over ``secret``, whatever the header says."""
    signing_input = f"{_part(header)}.{_part(payload)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hash_name).digest()
    return f"{signing_input}.{b64url(mac)}"


def generate_key(alg: str) -> PrivateKey:
    """A new private key of the type and size ``alg`` signs with (RSA 2048 for RS and PS)."""
    if alg.startswith(("RS", "PS")) and alg[2:] in _HASHES:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg in _CURVES:
        return ec.generate_private_key(_CURVES[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown JWS algorithm {alg!r}; one of {', '.join(ALGS)}")


@dataclass(eq=False)
class IssuerKey:
    """One signing key: its ``kid``, its ``alg``, the public JWK the issuer publishes.

    ``jwk`` is published as it stands, so a test may change it (a ``use`` of ``enc``, a
    ``key_ops``, a wrong ``kty``) and the next JWKS fetch serves the change.
    """

    kid: str
    alg: str
    jwk: dict[str, Any]
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, alg: str = "RS256", *, kid: str | None = None,
                 private_key: PrivateKey | None = None, published_alg: bool = True) -> IssuerKey:
        """A key for ``alg`` (a new one unless ``private_key``), its ``kid`` by default the
        RFC 7638 thumbprint of its JWK."""
        private_key = private_key or generate_key(alg)
        jose = jose_jwk.JWK.from_pyca(private_key)
        kid = kid if kid is not None else str(jose.thumbprint())
        public: dict[str, Any] = jose.export_public(as_dict=True)
        published: dict[str, Any] = {"kty": public["kty"], "kid": kid, "use": "sig"}
        if published_alg:
            published["alg"] = alg
        published.update((name, public[name]) for name in _KEY_MEMBERS if name in public)
        return cls(kid, alg, published, private_key)

    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_der(self) -> bytes:
        return self.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_with(key: IssuerKey, header: Mapping[str, Any] | bytes,
              payload: Mapping[str, Any] | bytes, *, alg: str | None = None) -> str:
    """A compact JWS over any header and payload, signed with ``cryptography`` directly.

    The signature uses ``alg`` (default ``key.alg``), whatever the header says: RSASSA-PKCS1-v1_5,
    RSASSA-PSS with MGF1 and a salt the length of the digest, ECDSA as raw ``r || s`` (RFC 7518
    §3.4), Ed25519.
    """
    alg = alg or key.alg
    signing_input = f"{_part(header)}.{_part(payload)}".encode("ascii")
    private_key = key.private_key
    signature: bytes
    if isinstance(private_key, rsa.RSAPrivateKey) and alg[:2] in ("RS", "PS"):
        digest = _HASHES[alg[2:]]
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15() if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        )
        signature = private_key.sign(signing_input, pad, digest)
    elif isinstance(private_key, ec.EllipticCurvePrivateKey) and alg.startswith("ES"):
        der = private_key.sign(signing_input, ec.ECDSA(_HASHES[alg[2:]]))
        r, s = decode_dss_signature(der)
        size = (private_key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif isinstance(private_key, ed25519.Ed25519PrivateKey) and alg == "EdDSA":
        signature = private_key.sign(signing_input)
    else:
        raise ValueError(f"a {type(private_key).__name__} cannot sign {alg}")
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def default_claims(issuer: TestIssuer, **claims: Any) -> dict[str, Any]:
    """An ID token's claims from ``issuer``, valid for ten minutes; a claim given as None is
    left out."""
    now = int(time.time())
    merged: dict[str, Any] = {
        "iss": issuer.url, "aud": DEFAULT_AUDIENCE, "sub": DEFAULT_SUBJECT,
        "iat": now, "exp": now + 600,
    }
    merged.update(claims)
    return {name: value for name, value in merged.items() if value is not None}


def self_signed_certificate(private_key: PrivateKey, common_name: str = "localhost", *,
                            valid_for: timedelta = timedelta(days=30)) -> x509.Certificate:
    """A server certificate for 127.0.0.1 and localhost, valid from a day ago."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.now(UTC) - timedelta(days=1)
    public_key = private_key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=isinstance(private_key, rsa.RSAPrivateKey),
            content_commitment=False, data_encipherment=False, key_agreement=False,
            key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(private_key, algorithm)
    )


# The server: one ThreadingHTTPServer per listening period, answering through a function of the
# method and path.


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


_Responder = Callable[[str, str], _Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, responder: _Responder, context: ssl.SSLContext | None) -> None:
        self.responder = responder
        self.context = context
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        if self.context is None:
            return sock, address
        # The handshake happens in the request's thread, so a client that never sends a
        # ClientHello holds up only itself.
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(_Handler.timeout)
            request.do_handshake()
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that reject the certificate or hang up are part of the tests.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.responder(self.command, urlsplit(self.path).path)
        self.send_response(reply.status)
        headers = {"Content-Length": str(len(reply.body)), **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Listener:
    """A ``_Server`` serving from a daemon thread, on the same port each time it starts."""

    def __init__(self, responder: _Responder, context: ssl.SSLContext | None = None) -> None:
        self.responder = responder
        self.context = context
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already listening")
        self._server = _Server(self.port, self.responder, self.context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _json_reply(status: int, body: Mapping[str, Any], **headers: str) -> _Reply:
    return _Reply(status, _json(body), {"Content-Type": "application/json", **headers})


class TestIssuer:
    """An OpenID Connect issuer at ``https://127.0.0.1:PORT{path}``, with one key per ``algs``.

    ``keys`` are the keys in the JWKS, in order; ``token()`` signs with the first unless told
    otherwise. Everything a test turns is a plain attribute: ``cache_control``,
    ``discovery_overrides`` (a None value removes the field), ``redirect_jwks_to``,
    ``jwks_status``. ``fetches`` counts requests by path (query left out), answered or not.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, *, path: str = "", algs: Sequence[str] = ("RS256",),
                 cache_control: str | None = "max-age=300") -> None:
        if path and (not path.startswith("/") or path.endswith("/")):
            raise ValueError(f"path {path!r}: starts with / and has no trailing /")
        self.path = path
        self.cache_control = cache_control
        self.discovery_overrides: dict[str, Any] = {}
        self.redirect_jwks_to: str | None = None
        self.jwks_status = 200
        self.fetches: collections.Counter[str] = collections.Counter()
        self._fetches_lock = threading.Lock()
        self.keys: list[IssuerKey] = []
        for alg in algs:
            self.add_key(alg)
        tls_key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = self_signed_certificate(tls_key)
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self.certificate_der = self.certificate.public_bytes(serialization.Encoding.DER)
        self.thumbprint = hashlib.sha1(self.certificate_der).hexdigest()
        self._listener = _Listener(self._respond,
                                   _server_context(self.certificate_pem, tls_key))

    # Lifecycle.

    def start(self) -> Self:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        self._listener.stop()

    def up(self) -> None:
        """Listen again, on the same port with the same certificate."""
        self._listener.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._listener.port:
            raise RuntimeError("the issuer has not started: it has no port yet")
        return self._listener.port

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host_port}{self.path}"

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/keys"

    # Keys and tokens.

    def add_key(self, alg: str = "RS256", *, kid: str | None = None, publish: bool = True,
                published_alg: bool = True, private_key: PrivateKey | None = None) -> IssuerKey:
        """A new key (or ``private_key``) for ``alg``, appended to the JWKS if ``publish``.

        ``published_alg=False`` leaves ``alg`` out of its JWK, as many issuers do.
        """
        key = IssuerKey.generate(alg, kid=kid, private_key=private_key,
                                 published_alg=published_alg)
        if publish:
            self.keys.append(key)
        return key

    def publish(self, key: IssuerKey) -> None:
        """Put ``key`` (back) at the end of the JWKS."""
        self.keys.append(key)

    def unpublish(self, kid: str) -> None:
        """Take every key with this ``kid`` out of the JWKS; the key objects still sign."""
        if not any(key.kid == kid for key in self.keys):
            raise KeyError(f"no published key has kid {kid!r}")
        self.keys = [key for key in self.keys if key.kid != kid]

    def token(self, *, key: IssuerKey | None = None, headers: Mapping[str, Any] | None = None,
              **claims: Any) -> str:
        """A compact JWS ID token signed by jwcrypto with ``key`` (default: ``keys[0]``).

        The claims are ``default_claims`` with ``claims`` over them. The header is ``alg`` and
        ``kid`` of the key with ``headers`` over them (a None value removes a field); it is signed
        with the header's ``alg``, so ``headers={"alg": "RS512"}`` on an RS256 key is a genuine
        RS512 signature. For a header whose ``alg`` the key cannot make, use ``sign_with``.
        """
        if key is None:
            if not self.keys:
                raise ValueError("the issuer publishes no key: pass key=")
            key = self.keys[0]
        header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, **(headers or {})}
        header = {name: value for name, value in header.items() if value is not None}
        signer = jose_jws.JWSCore(str(header.get("alg", key.alg)),
                                  jose_jwk.JWK.from_pyca(key.private_key),
                                  _json(header).decode(), _json(default_claims(self, **claims)))
        signed: dict[str, str] = signer.sign()
        return ".".join([signed["protected"], _text(signed["payload"]), signed["signature"]])

    # What the server answers.

    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(dict.fromkeys(
                key.alg for key in self.keys)),
        }
        document.update(self.discovery_overrides)
        return {name: value for name, value in document.items() if value is not None}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in list(self.keys)]}

    def _respond(self, method: str, path: str) -> _Reply:
        with self._fetches_lock:
            self.fetches[path] += 1
        if method not in ("GET", "HEAD"):
            return _json_reply(405, {"error": "method not allowed"}, Allow="GET, HEAD")
        if path == f"{self.path}/.well-known/openid-configuration":
            return _json_reply(200, self.discovery())
        if path == f"{self.path}/keys":
            if self.redirect_jwks_to is not None:
                return _Reply(302, headers={"Location": self.redirect_jwks_to})
            if self.jwks_status != 200:
                return _json_reply(self.jwks_status, {"error": "the JWKS is broken on purpose"})
            cache = {"Cache-Control": self.cache_control} if self.cache_control is not None else {}
            return _json_reply(200, self.jwks(), **cache)
        return _json_reply(404, {"error": f"no {path} here"})


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _server_context(certificate_pem: bytes, private_key: PrivateKey) -> ssl.SSLContext:
    """A TLS 1.2+ server context; ``load_cert_chain`` reads only files, so they live briefly."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    key_pem = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_path.write_bytes(certificate_pem)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


class CountingServer:
    """A plain-HTTP server on 127.0.0.1 that answers ``200 {}`` to anything and counts hits."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._listener = _Listener(self._respond)

    def _respond(self, method: str, path: str) -> _Reply:
        with self._lock:
            self.paths.append(path)
        return _json_reply(200, {})

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.paths)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.port}"

    def start(self) -> Self:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
