"""A software FIDO2 authenticator for the tests: an EC P-256 key per credential, "none"
attestation, a signature counter, and the browser's part (clientDataJSON with the origin it
claims). Independent of the broker: it is built from the WebAuthn specification with
cryptography and cbor2, and the broker checks it with py_webauthn."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Authenticator:
    origin: str  # what the "browser" writes into clientDataJSON
    rp_id: str
    credentials: dict[bytes, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    counter: int = 0
    present: bool = True  # the user-presence flag

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode()

    def _flags(self, extra: int) -> bytes:
        return bytes([(0x01 if self.present else 0) | extra])

    def create(self, options: dict[str, Any]) -> str:
        """navigator.credentials.create's answer to the options, as the JSON the page posts."""
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = secrets.token_bytes(32)
        self.credentials[credential_id] = key
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        self.counter += 1
        auth_data = (hashlib.sha256(self.rp_id.encode()).digest() + self._flags(0x40)
                     + self.counter.to_bytes(4, "big") + bytes(16)
                     + len(credential_id).to_bytes(2, "big") + credential_id + cose)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({
            "id": b64url(credential_id), "rawId": b64url(credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64url(self._client_data("webauthn.create",
                                                                    options["challenge"])),
                         "attestationObject": b64url(attestation)},
            "clientExtensionResults": {}})

    def get(self, options: dict[str, Any], *, count: bool = True) -> str:
        """navigator.credentials.get's answer (an assertion of the first allowed credential)."""
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        credential_id = next(c for c in allowed if c in self.credentials)
        if count:
            self.counter += 1
        auth_data = (hashlib.sha256(self.rp_id.encode()).digest() + self._flags(0)
                     + self.counter.to_bytes(4, "big"))
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = self.credentials[credential_id].sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({
            "id": b64url(credential_id), "rawId": b64url(credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data),
                         "authenticatorData": b64url(auth_data), "signature": b64url(signature),
                         "userHandle": None},
            "clientExtensionResults": {}})
