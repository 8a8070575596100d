"""Identity-provider metadata documents for tests: self-signed certificates made with
cryptography, and the XML of an ``md:EntityDescriptor`` around them."""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
SAML2 = "urn:oasis:names:tc:SAML:2.0:protocol"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
ENTITY_ID = "https://idp.example.com/saml"

PrivateKey = (rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey
              | ed25519.Ed25519PrivateKey)


@functools.cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


_CURVES: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1(), "secp521r1": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1()}


@functools.cache
def ec_key(curve: str = "secp256r1") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVES[curve])


def certificate(key: PrivateKey | None = None, *, name: str = "idp.example.com") -> bytes:
    """The DER of a self-signed certificate for ``key`` (RSA 2048 by default)."""
    key = key or rsa_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=365)))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def certificates(count: int) -> list[bytes]:
    """``count`` different certificates (one key, different names and serial numbers)."""
    return [certificate(name=f"idp-{i}.example.com") for i in range(count)]


def private_key_pem(key: rsa.RSAPrivateKey | None = None) -> str:
    key = key or rsa_key()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def key_descriptor(der: bytes | None = None, *, use: str | None = "signing",
                   inner: str | None = None) -> str:
    """An md:KeyDescriptor holding the certificate (or ``inner`` as its KeyInfo's content)."""
    attribute = f' use="{use}"' if use is not None else ""
    content = inner if inner is not None else \
        f"<ds:X509Data><ds:X509Certificate>{b64(der or certificate())}</ds:X509Certificate>" \
        "</ds:X509Data>"
    return f"<md:KeyDescriptor{attribute}><ds:KeyInfo>{content}</ds:KeyInfo></md:KeyDescriptor>"


def idp_descriptor(keys: Sequence[str] | None = None, *, protocol: str = SAML2,
                   sso: bool = True, attributes: str = "") -> str:
    keys = [key_descriptor()] if keys is None else keys
    services = (f'<md:SingleSignOnService Binding="{REDIRECT}" '
                'Location="https://idp.example.com/sso/redirect"/>'
                f'<md:SingleSignOnService Binding="{POST}" '
                'Location="https://idp.example.com/sso/post"/>') if sso else ""
    return (f'<md:IDPSSODescriptor protocolSupportEnumeration="{protocol}"{attributes}>'
            f"{''.join(keys)}{services}</md:IDPSSODescriptor>")


def entity(body: str | None = None, *, entity_id: str | None = ENTITY_ID,
           attributes: str = "", namespaces: bool = True) -> str:
    body = idp_descriptor() if body is None else body
    xmlns = f' xmlns:md="{MD}" xmlns:ds="{DS}"' if namespaces else ""
    id_attribute = f' entityID="{entity_id}"' if entity_id is not None else ""
    return f"<md:EntityDescriptor{xmlns}{id_attribute}{attributes}>{body}</md:EntityDescriptor>"


def document(*ders: bytes, entity_id: str = ENTITY_ID, valid_until: str | None = None) -> str:
    """A complete metadata document: one identity provider signing with these certificates (a
    fresh RSA one if none), at least 1000 characters long as IAM requires."""
    keys = [key_descriptor(der) for der in (ders or (certificate(),))]
    attributes = f' validUntil="{valid_until}"' if valid_until else ""
    return '<?xml version="1.0" encoding="UTF-8"?>' + entity(
        idp_descriptor(keys), entity_id=entity_id, attributes=attributes)


def entities(*members: str) -> str:
    return (f'<md:EntitiesDescriptor xmlns:md="{MD}" xmlns:ds="{DS}">{"".join(members)}'
            "</md:EntitiesDescriptor>")
