"""An identity provider's SAML 2.0 metadata (saml-metadata-2.0-os), as an administrator uploads
it with CreateSAMLProvider / UpdateSAMLProvider.

``parse_metadata(text)`` reads what the broker needs to trust the provider's responses: its
entity id (the Issuer of its assertions), the certificates it signs with, its single sign-on
endpoints and the metadata's ``validUntil``. The document is read through ``xmlsafe`` (no DTD,
no entities, no network, size and depth limits). Anything the broker could not use, or could
only use by guessing, is a ``MetadataError`` whose reason says what to fix; the IAM API reports
it as ``InvalidInput: Could not parse metadata: <reason>``.

What is accepted:

- the root is an ``md:EntityDescriptor``, or an ``md:EntitiesDescriptor`` of which exactly one
  ``md:EntityDescriptor`` describes an identity provider (§2.3.1, §2.3.2);
- that entity has an ``entityID`` (at most 1024 characters, §2.2.1) and exactly one
  ``md:IDPSSODescriptor`` whose ``protocolSupportEnumeration`` lists SAML 2.0 (§2.4.1, §2.4.3);
- every ``md:KeyDescriptor`` of it whose ``use`` is ``signing`` or absent (§2.4.1.1) holds one
  certificate in ``ds:KeyInfo/ds:X509Data/ds:X509Certificate``; each is an X.509 certificate
  with an RSA key of at least 2048 bits or an EC key on P-256, P-384 or P-521; there is at
  least one, and at most ten different ones (so that keys can roll over); repeats count once.

Certificates' own validity dates are not checked: metadata is trust the administrator gave, and
identity providers commonly sign with long-expired self-signed certificates.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID
from lxml import etree

from broker.errors import BrokerError
from broker.idp import xmlsafe

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
SAML2_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

MAX_CERTIFICATES = 10
MIN_RSA_BITS = 2048
MAX_ENTITY_ID = 1024
# IAM takes documents of up to 10,000,000 characters; UTF-8 spends at most four bytes on one.
LIMITS = xmlsafe.Limits(max_bytes=10_000_000 * 4, max_depth=32, max_elements=20_000)

_ENTITY = f"{{{MD}}}EntityDescriptor"
_ENTITIES = f"{{{MD}}}EntitiesDescriptor"
_IDP = f"{{{MD}}}IDPSSODescriptor"
_KEY_DESCRIPTOR = f"{{{MD}}}KeyDescriptor"
_SSO = f"{{{MD}}}SingleSignOnService"
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_OTHER_KEYS = {PublicKeyAlgorithmOID.DSA: "DSA", PublicKeyAlgorithmOID.ED25519: "Ed25519",
               PublicKeyAlgorithmOID.ED448: "Ed448"}
_DATETIME = re.compile(
    r"(-?\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?")

SigningKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class MetadataError(BrokerError):
    """Metadata the broker cannot use; the message is the reason, for the administrator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    signing_certificates: tuple[bytes, ...]  # DER, in document order
    sso_redirect_url: str | None
    sso_post_url: str | None
    valid_until: datetime | None  # the earliest validUntil that applies to the provider


def parse_metadata(text: str) -> IdpMetadata:
    try:
        root = xmlsafe.parse(text.encode("utf-8"), LIMITS)
    except xmlsafe.UnsafeXml as exc:
        raise MetadataError(str(exc)) from None
    entity = _entity(root)
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise MetadataError("the EntityDescriptor has no entityID")
    if len(entity_id) > MAX_ENTITY_ID:
        raise MetadataError(f"the entityID is longer than {MAX_ENTITY_ID} characters")
    idp = _idp_descriptor(entity)
    certificates = _signing_certificates(idp)
    # validUntil may be set on the provider's descriptor, its entity and any group holding it.
    limits = [_valid_until(el) for el in (idp, entity, *entity.iterancestors())
              if el.get("validUntil") is not None]
    return IdpMetadata(
        entity_id=entity_id,
        signing_certificates=certificates,
        sso_redirect_url=_sso_location(idp, HTTP_REDIRECT),
        sso_post_url=_sso_location(idp, HTTP_POST),
        valid_until=min(limits, default=None),
    )


def signing_key(der: bytes) -> SigningKey:
    """The public key of a certificate ``parse_metadata`` accepted."""
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MetadataError("a signing certificate's key is neither RSA nor EC")
    return key


# -- the parts ----------------------------------------------------------------------------------


def _entity(root: etree._Element) -> etree._Element:
    if root.tag == _ENTITY:
        return root
    if root.tag != _ENTITIES:
        raise MetadataError(f"the document's root element is {_name(root)}, not "
                            "md:EntityDescriptor or md:EntitiesDescriptor")
    providers = [e for e in root.iter(_ENTITY) if e.find(_IDP) is not None]
    if not providers:
        raise MetadataError("the EntitiesDescriptor holds no EntityDescriptor with an "
                            "IDPSSODescriptor")
    if len(providers) > 1:
        raise MetadataError(f"the EntitiesDescriptor holds {len(providers)} identity providers; "
                            "upload the metadata of one")
    return providers[0]


def _idp_descriptor(entity: etree._Element) -> etree._Element:
    descriptors = entity.findall(_IDP)
    if not descriptors:
        raise MetadataError("the EntityDescriptor has no IDPSSODescriptor")
    saml2 = [d for d in descriptors
             if SAML2_PROTOCOL in (d.get("protocolSupportEnumeration") or "").split()]
    if not saml2:
        raise MetadataError(f"no IDPSSODescriptor supports the protocol {SAML2_PROTOCOL}")
    if len(saml2) > 1:
        raise MetadataError("the EntityDescriptor has more than one IDPSSODescriptor for "
                            "SAML 2.0")
    return saml2[0]


def _signing_certificates(idp: etree._Element) -> tuple[bytes, ...]:
    found: list[bytes] = []
    for descriptor in idp.findall(_KEY_DESCRIPTOR):
        use = descriptor.get("use")
        if use == "encryption":
            continue
        if use not in (None, "signing"):
            raise MetadataError(f"a KeyDescriptor has use=\"{use}\"; SAML allows \"signing\" "
                                "or \"encryption\"")
        texts = descriptor.findall(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
        if not texts:
            raise MetadataError("a signing KeyDescriptor has no "
                                "ds:KeyInfo/ds:X509Data/ds:X509Certificate")
        ders = list(dict.fromkeys(_certificate(el) for el in texts))
        if len(ders) > 1:
            raise MetadataError(f"a signing KeyDescriptor holds {len(ders)} different "
                                "certificates; give each signing certificate a KeyDescriptor "
                                "of its own")
        found.append(ders[0])
    certificates = tuple(dict.fromkeys(found))  # a certificate listed twice counts once
    if not certificates:
        raise MetadataError("the IDPSSODescriptor has no signing certificate (a KeyDescriptor "
                            "with use=\"signing\" or no use, holding a ds:X509Certificate)")
    if len(certificates) > MAX_CERTIFICATES:
        raise MetadataError(f"the IDPSSODescriptor has {len(certificates)} signing "
                            f"certificates; at most {MAX_CERTIFICATES} are accepted")
    return certificates


def _certificate(element: etree._Element) -> bytes:
    text = "".join(xmlsafe.text_of(element).split())
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MetadataError("a ds:X509Certificate is not valid base64") from None
    try:
        certificate = x509.load_der_x509_certificate(der)
        other = _OTHER_KEYS.get(certificate.public_key_algorithm_oid)
        # Told apart by the key's algorithm before the key is loaded: loading a DSA key (or
        # naming cryptography's DSA classes) is deprecated and warns.
        key = None if other else certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise MetadataError("a ds:X509Certificate is not a DER-encoded X.509 "
                            "certificate") from None
    subject = _subject(certificate)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise MetadataError(f"the signing certificate {subject} has an RSA key of "
                                f"{key.key_size} bits; at least {MIN_RSA_BITS} are required")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise MetadataError(f"the signing certificate {subject} has an EC key on the curve "
                                f"{key.curve.name}; P-256, P-384 or P-521 are required")
    else:
        raise MetadataError(f"the signing certificate {subject} has a {other or 'unsupported'} "
                            "key; RSA or EC keys are required")
    return der


def _subject(certificate: x509.Certificate) -> str:
    try:
        return f'"{certificate.subject.rfc4514_string()}"'
    except ValueError:
        return "(with an unreadable subject)"


def _sso_location(idp: etree._Element, binding: str) -> str | None:
    for service in idp.findall(_SSO):
        location = (service.get("Location") or "").strip()
        if service.get("Binding") == binding and location:
            return location
    return None


def _valid_until(element: etree._Element) -> datetime:
    text = (element.get("validUntil") or "").strip()
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise MetadataError(f"the validUntil of {_name(element)} ({text[:64]}) is not an "
                            "xs:dateTime")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    try:
        if year < 1 or year > 9999:
            raise ValueError
        at = datetime(year, month, day, hour, minute, second,
                      int(((fraction or ".0") + "000000")[1:7]), tzinfo=UTC)
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            at -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    except (ValueError, OverflowError):
        raise MetadataError(f"the validUntil of {_name(element)} ({text[:64]}) is not a "
                            "valid date and time") from None
    return at


def _name(element: etree._Element) -> str:
    """md:EntityDescriptor, or {namespace}name for an element of another namespace."""
    qname = etree.QName(element)
    prefix = {MD: "md:", DS: "ds:"}.get(qname.namespace or "")
    return str(qname.text) if prefix is None else prefix + str(qname.localname)
