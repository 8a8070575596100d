"""External identity providers for Identity Center's identity-source tests.

``OidcIdp`` is the suite's OIDC issuer (tests/oidc_issuer.py: real TLS, keys, discovery, a
JWKS, tokens signed by jwcrypto) with what an OpenID Connect provider adds for a browser's
sign-in: an authorization endpoint (``/authorize``: response_type code, the client's registered
redirect URI, a PKCE S256 challenge; it signs in ``person`` at once and redirects back with a
code and the state) and a token endpoint (``/token``: the client authenticated with
client_secret_basic, the code redeemed once, with its redirect URI and a verifier whose SHA-256
is the challenge — else ``invalid_grant`` — and an ID token carrying the request's nonce).
``id_token_overrides`` and ``signing_key`` turn it into an attacker's provider.

``saml_request_id`` reads the AuthnRequest a broker sends through the HTTP-Redirect binding.
Nothing here imports from ``broker``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import zlib
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from lxml import etree

from tests.oidc_issuer import IssuerKey, TestIssuer, _Handler, _Listener, _Server

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


def saml_request(location: str) -> etree._Element:
    """The AuthnRequest in a redirect's SAMLRequest (raw DEFLATE, base64)."""
    value = parse_qs(urlsplit(location).query)["SAMLRequest"][0]
    return etree.fromstring(zlib.decompress(base64.b64decode(value), -15))


def saml_request_id(location: str) -> str:
    return str(saml_request(location).get("ID"))


class _Answer:
    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


class _FullHandler(_Handler):
    server: _FullServer

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.idp.answer(self.command, self.path, body,
                                        self.headers.get("Authorization", ""))
        self.send_response(answer.status)
        for name, value in {"Content-Length": str(len(answer.body)), **answer.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_POST = _reply


class _FullServer(_Server):
    def __init__(self, port: int, idp: OidcIdp, context: Any) -> None:
        self.idp = idp
        self.responder = idp._respond
        self.context = context
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", port), _FullHandler)


class _FullListener(_Listener):
    def __init__(self, idp: OidcIdp, context: Any) -> None:
        super().__init__(idp._respond, context)
        self.idp = idp

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already listening")
        self._server = _FullServer(self.port, self.idp, self.context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()


def _json(status: int, value: dict[str, Any]) -> _Answer:
    return _Answer(status, json.dumps(value).encode(), {"Content-Type": "application/json",
                                                       "Cache-Control": "no-store"})


class OidcIdp(TestIssuer):
    """An OpenID Connect provider at ``https://127.0.0.1:PORT`` for one client."""

    __test__ = False

    def __init__(self, *, client_id: str = "broker-portal",
                 client_secret: str = "s3cret+/=:%") -> None:  # noqa: S107
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uris: set[str] = set()
        self.person: dict[str, Any] = {}  # the claims of whoever signs in next
        self.id_token_overrides: dict[str, Any] = {}
        self.signing_key: IssuerKey | None = None  # another key: a forger's token
        self.codes: dict[str, dict[str, Any]] = {}
        self.authorizations: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._listener = _FullListener(self, self._listener.context)

    def discovery(self) -> dict[str, Any]:
        return {**super().discovery(), "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token", "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"]}

    def answer(self, method: str, target: str, body: bytes, authorization: str) -> _Answer:
        parts = urlsplit(target)
        if parts.path == "/authorize" and method == "GET":
            return self._authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
        if parts.path == "/token" and method == "POST":
            return self._token({k: v[0] for k, v in parse_qs(body.decode()).items()},
                               authorization)
        reply = self._respond(method, parts.path)
        return _Answer(reply.status, reply.body, dict(reply.headers))

    def _authorize(self, params: dict[str, str]) -> _Answer:
        with self._lock:
            self.authorizations.append(params)
        if params.get("client_id") != self.client_id or \
                params.get("redirect_uri") not in self.redirect_uris:
            return _json(400, {"error": "invalid_request"})  # never redirect elsewhere
        redirect = params["redirect_uri"]
        if params.get("response_type") != "code" or \
                params.get("code_challenge_method") != "S256" or \
                len(params.get("code_challenge", "")) != 43 or "openid" not in \
                params.get("scope", "").split():
            back = {"error": "invalid_request", "state": params.get("state", "")}
            return _Answer(302, headers={"Location": f"{redirect}?{urlencode(back)}"})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = {"redirect_uri": redirect, "challenge": params["code_challenge"],
                                "nonce": params.get("nonce"), "claims": dict(self.person)}
        back = {"code": code, "state": params.get("state", "")}
        return _Answer(302, headers={"Location": f"{redirect}?{urlencode(back)}"})

    def _token(self, form: dict[str, str], authorization: str) -> _Answer:
        expected = base64.b64encode(
            f"{self._q(self.client_id)}:{self._q(self.client_secret)}".encode()).decode()
        if authorization != f"Basic {expected}":
            return _json(401, {"error": "invalid_client"})
        with self._lock:
            entry = self.codes.pop(form.get("code", ""), None)  # used once, whatever follows
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if entry is None or form.get("grant_type") != "authorization_code" or \
                form.get("redirect_uri") != entry["redirect_uri"] or \
                challenge != entry["challenge"]:
            return _json(400, {"error": "invalid_grant"})
        claims = {"aud": self.client_id, "sub": f"sub-{secrets.token_hex(4)}",
                  "nonce": entry["nonce"], **entry["claims"], **self.id_token_overrides}
        token = self.token(key=self.signing_key, **claims)
        return _json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                           "expires_in": 300, "id_token": token})

    @staticmethod
    def _q(value: str) -> str:
        from urllib.parse import quote

        return quote(value, safe="")


class SamlIdpSite:
    """The suite's SAML IdP (tests/saml_idp.py) as a browser meets it, over plain http on
    127.0.0.1: ``/sso`` takes an AuthnRequest (HTTP-Redirect binding) and answers a page whose
    form posts the signed response to the request's ACS with its RelayState (the HTTP-POST
    binding; the person presses "Continue"); ``/start`` makes an unsolicited response for
    ``acs_url`` (IdP-initiated). The person signed in is ``name_id``."""

    def __init__(self, idp: Any, *, acs_url: str, audience: str, name_id: str) -> None:
        self.idp, self.acs_url, self.audience, self.name_id = idp, acs_url, audience, name_id
        self.attributes: dict[str, list[str]] = {}
        site = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                body = site.page(parts.path, params).encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def page(self, path: str, params: dict[str, str]) -> str:
        from html import escape

        from tests.saml_idp import encode

        acs, in_response_to = self.acs_url, None
        if path == "/sso":
            request = etree.fromstring(zlib.decompress(
                base64.b64decode(params["SAMLRequest"]), -15))
            acs, in_response_to = str(request.get("AssertionConsumerServiceURL")), \
                str(request.get("ID"))
        elif path != "/start":
            return ""
        response = encode(self.idp.response(
            acs_url=acs, audience=self.audience, roles=None, session_name=None,
            name_id=self.name_id, name_id_format=None, in_response_to=in_response_to,
            attributes=self.attributes))
        relay = params.get("RelayState", "")
        return (f'<!doctype html><title>Test IdP</title><h1>Test IdP</h1>'
                f'<form method="post" action="{escape(acs)}">'
                f'<input type="hidden" name="SAMLResponse" value="{escape(response)}">'
                f'<input type="hidden" name="RelayState" value="{escape(relay)}">'
                f'<button type="submit">Continue</button></form>')

    def __enter__(self) -> SamlIdpSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
