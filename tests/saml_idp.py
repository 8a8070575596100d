"""A SAML 2.0 identity provider for the tests: keys, signing, encryption, responses.

``TestIdp`` issues what a real IdP posts to AWS's sign-in endpoint for AssumeRoleWithSAML: a
``samlp:Response`` holding one ``saml:Assertion`` with the attributes AWS documents
(``https://aws.amazon.com/SAML/Attributes/Role``, ``RoleSessionName``, ``SessionDuration``,
``SourceIdentity``, ``PrincipalTag:*``, ``TransitiveTagKeys``), signed with enveloped XML-DSig
(exclusive c14n) and optionally encrypted to the service provider (XML-Enc). It signs and
encrypts with python-xmlsec, the binding of the xmlsec C library that python3-saml and
SimpleSAMLphp's peers use, so it shares no code with the broker's verifier (lxml and
cryptography); keys and certificates come from ``cryptography``. Every knob that a real IdP gets
wrong, or that an attacker turns, is a keyword argument of ``TestIdp.response``: weak algorithms
(SHA-1, MD5, DSA), another signer, no KeyInfo, a foreign certificate in KeyInfo, expired
conditions, a wrong audience or recipient, two assertions.

The attacks on what it signs (signature wrapping, stripped or foreign signatures, comment
injection, DTDs, transforms, parser bombs) are in ``tests/saml_attacks.py``.

Nothing here imports from ``broker``.
"""

from __future__ import annotations

import base64
import copy
import enum
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

if TYPE_CHECKING:
    # The stubs' name for an algorithm (a named tuple of name, href, usage).
    from xmlsec.constants import __Transform as XmlsecTransform

# Namespaces.
SAMLP: Final = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML: Final = "urn:oasis:names:tc:SAML:2.0:assertion"
MD: Final = "urn:oasis:names:tc:SAML:2.0:metadata"
DS: Final = "http://www.w3.org/2000/09/xmldsig#"
XENC: Final = "http://www.w3.org/2001/04/xmlenc#"
XS: Final = "http://www.w3.org/2001/XMLSchema"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"

# SAML values.
STATUS_SUCCESS: Final = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_RESPONDER: Final = "urn:oasis:names:tc:SAML:2.0:status:Responder"
NAMEID_PERSISTENT: Final = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT: Final = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NAMEID_EMAIL: Final = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_UNSPECIFIED: Final = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
BEARER: Final = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
ATTRNAME_URI: Final = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
AUTHN_PASSWORD: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
BINDING_REDIRECT: Final = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST: Final = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

# AWS's SAML attributes (IAM User Guide, "Configure SAML assertions for the authentication
# response").
AWS_ATTR: Final = "https://aws.amazon.com/SAML/Attributes/"
ATTR_ROLE: Final = AWS_ATTR + "Role"
ATTR_SESSION_NAME: Final = AWS_ATTR + "RoleSessionName"
ATTR_SESSION_DURATION: Final = AWS_ATTR + "SessionDuration"
ATTR_SOURCE_IDENTITY: Final = AWS_ATTR + "SourceIdentity"
ATTR_PRINCIPAL_TAG: Final = AWS_ATTR + "PrincipalTag:"
ATTR_TRANSITIVE_TAG_KEYS: Final = AWS_ATTR + "TransitiveTagKeys"
AWS_AUDIENCE: Final = "urn:amazon:webservices"

# Algorithm identifiers (XML-DSig, RFC 6931, XML-Enc 1.0 and 1.1).
RSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA512: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
RSA_SHA1: Final = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_MD5: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-md5"
DSA_SHA1: Final = "http://www.w3.org/2000/09/xmldsig#dsa-sha1"
ECDSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256: Final = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA512: Final = "http://www.w3.org/2001/04/xmlenc#sha512"
SHA1: Final = "http://www.w3.org/2000/09/xmldsig#sha1"
MD5: Final = "http://www.w3.org/2001/04/xmldsig-more#md5"
ENVELOPED: Final = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
XSLT: Final = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH: Final = "http://www.w3.org/TR/1999/REC-xpath-19991116"
RSA_OAEP_MGF1P: Final = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
RSA_OAEP: Final = "http://www.w3.org/2009/xmlenc11#rsa-oaep"
RSA_1_5: Final = "http://www.w3.org/2001/04/xmlenc#rsa-1_5"
AES128_CBC: Final = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
AES256_CBC: Final = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
AES128_GCM: Final = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
AES256_GCM: Final = "http://www.w3.org/2009/xmlenc11#aes256-gcm"

KeyKind = Literal["rsa", "ec", "dsa"]
Sign = Literal["assertion", "response", "both"]
TransformKind = Literal["xslt", "xpath"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey
_T = TypeVar("_T")

_TRANSFORMS: Final[dict[str, XmlsecTransform]] = {
    value.href: value
    for value in vars(xmlsec.constants).values()
    if isinstance(value, type(xmlsec.constants.TransformSha256)) and value.href
}
# xmlsec resolves the key transport by the Algorithm URI it reads back from the template, so the
# XML-Enc 1.1 spelling of RSA-OAEP (which python-xmlsec has no constant for) is written over the
# 1.0 one after the template is made.
_KEY_TRANSPORT_TEMPLATES: Final = {RSA_OAEP: RSA_OAEP_MGF1P}
_SESSION_KEYS: Final = {
    AES128_CBC: 128, AES256_CBC: 256, AES128_GCM: 128, AES256_GCM: 256,
    "http://www.w3.org/2001/04/xmlenc#aes192-cbc": 192,
    "http://www.w3.org/2009/xmlenc11#aes192-gcm": 192,
}
DEFAULT_SIGNATURE: Final[dict[KeyKind, str]] = {
    "rsa": RSA_SHA256, "ec": ECDSA_SHA256, "dsa": DSA_SHA1,
}


class Default(enum.Enum):
    """The marker of an argument left to its documented default (``None`` means "omit")."""

    TOKEN = 0


DEFAULT: Final = Default.TOKEN
Defaulted = Literal[Default.TOKEN]


def _transform(uri: str) -> XmlsecTransform:
    try:
        return _TRANSFORMS[uri]
    except KeyError:
        raise ValueError(f"python-xmlsec has no transform for {uri}") from None


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def new_id() -> str:
    """A fresh XML ID as IdPs make them: an underscore and 32 hex digits."""
    return "_" + secrets.token_hex(16)


def instant(when: datetime) -> str:
    """SAML's dateTime: UTC, seconds, ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serialize(root: etree._Element) -> bytes:
    """A document as the IdP posts it: UTF-8 with an XML declaration."""
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def signature_algorithms(kind: KeyKind) -> set[str]:
    """Every signature algorithm xmlsec knows for a key of ``kind``."""
    prefix = {"rsa": "#rsa-", "ec": "#ecdsa-", "dsa": "#dsa-"}[kind]
    return {uri for uri in _TRANSFORMS if prefix in uri}


def encode(xml: bytes) -> str:
    """The ``SAMLResponse`` form value of the HTTP-POST binding: plain base64."""
    return base64.b64encode(xml).decode("ascii")


# Keys ------------------------------------------------------------------------------------------


@dataclass
class IdpKey:
    """A private key and its self-signed X.509 certificate (RSA, EC or DSA)."""

    private_key: PrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str, *, kind: KeyKind = "rsa", bits: int | None = None,
                 valid_for: timedelta = timedelta(days=365)) -> IdpKey:
        """A new key with a certificate for ``CN=common_name``, valid from a minute ago.

        ``bits``: RSA modulus (default 2048); DSA modulus (default 1024, the size whose 160-bit
        subgroup DSA-SHA1, the only DSA signature XML-DSig 1.0 names, can use: xmlsec refuses
        to sign dsa-sha1 with a 2048-bit key); EC curve size, 256, 384 or 521 (default 256).
        """
        private_key: PrivateKey
        if kind == "rsa":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits or 2048)
        elif kind == "dsa":
            private_key = dsa.generate_private_key(key_size=bits or 1024)
        else:
            curves: dict[int, ec.EllipticCurve] = {
                256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1(),
            }
            private_key = ec.generate_private_key(curves[bits or 256])
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = datetime.now(UTC) - timedelta(minutes=1)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(private_key, hashes.SHA256())
        )
        return cls(private_key, certificate)

    @property
    def kind(self) -> KeyKind:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return "rsa"
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return "ec"
        return "dsa"

    def pem_key(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def pem_cert(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def der_cert(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def b64_cert(self) -> str:
        """The certificate as ``ds:X509Certificate`` and metadata carry it: base64 DER."""
        return base64.b64encode(self.der_cert()).decode("ascii")

    def xmlsec_key(self) -> xmlsec.Key:
        """The private key loaded into xmlsec, for signing."""
        return xmlsec.Key.from_memory(self.pem_key(), xmlsec.constants.KeyDataFormatPem)

    def xmlsec_cert(self) -> xmlsec.Key:
        """The certificate's public key loaded into xmlsec, for verifying and encrypting."""
        return xmlsec.Key.from_memory(self.pem_cert(), xmlsec.constants.KeyDataFormatCertPem)


# Signing and encrypting with xmlsec --------------------------------------------------------------


def sign_element(element: etree._Element, key: IdpKey, *,
                 signature_algorithm: str | None = None, digest_algorithm: str = SHA256,
                 key_info: IdpKey | None = None, inclusive_prefixes: Sequence[str] = (),
                 extra_transform: TransformKind | None = None,
                 reference_c14n: bool = True,
                 position: int | None = None) -> etree._Element:
    """Sign ``element`` (which must carry an ``ID``) with an enveloped signature, in place.

    The ``ds:Signature`` goes right after the element's ``saml:Issuer`` (or first, without one),
    as the SAML schema orders them, or at ``position`` among the children when given. Its one
    Reference is ``#ID`` with the enveloped-signature and exclusive c14n transforms (and the
    ``extra_transform`` between them, for the attacks); the SignedInfo is canonicalized with
    exclusive c14n. ``reference_c14n=False`` leaves the enveloped-signature transform alone, so
    that the digest covers Canonical XML 1.0 (inclusive), XML-DSig's default conversion of a
    node-set to octets (section 4.3.3.2), which SAML allows (saml-core section 5.4.4).
    ``key_info`` is the certificate written into KeyInfo (``None``: no KeyInfo).
    Returns the signature element.
    """
    element_id = element.get("ID")
    if not element_id:
        raise ValueError("the element to sign has no ID attribute")
    constants = xmlsec.constants
    signature = xmlsec.template.create(
        element, constants.TransformExclC14N,
        _transform(signature_algorithm or DEFAULT_SIGNATURE[key.kind]), ns="ds",
    )
    if position is None:
        issuer = element.find(_q(SAML, "Issuer"))
        position = 0 if issuer is None else element.index(issuer) + 1
    element.insert(position, signature)
    reference = xmlsec.template.add_reference(
        signature, _transform(digest_algorithm), uri="#" + element_id,
    )
    xmlsec.template.add_transform(reference, constants.TransformEnveloped)
    if extra_transform == "xslt":
        xslt = xmlsec.template.add_transform(reference, constants.TransformXslt)
        xslt.append(etree.fromstring(_IDENTITY_XSLT))
    elif extra_transform == "xpath":
        xpath = xmlsec.template.add_transform(reference, constants.TransformXPath)
        expression = etree.SubElement(xpath, _q(DS, "XPath"), nsmap={"ds": DS})
        expression.text = "not(ancestor-or-self::ds:Signature)"
    if reference_c14n:
        c14n = xmlsec.template.add_transform(reference, constants.TransformExclC14N)
        if inclusive_prefixes:
            xmlsec.template.transform_add_c14n_inclusive_namespaces(c14n,
                                                                    list(inclusive_prefixes))
    if key_info is not None:
        info = xmlsec.template.ensure_key_info(signature)
        data = xmlsec.template.add_x509_data(info)
        certificate = xmlsec.template.x509_data_add_certificate(data)
        certificate.text = key_info.b64_cert()
    xmlsec.tree.add_ids(element.getroottree().getroot(), ["ID"])
    context = xmlsec.SignatureContext()
    context.key = key.xmlsec_key()
    context.sign(signature)
    return signature


_IDENTITY_XSLT: Final = (
    b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
    b'<xsl:output method="xml" omit-xml-declaration="yes"/>'
    b'<xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/>'
    b"</xsl:copy></xsl:template></xsl:stylesheet>"
)


def encrypt_assertion(assertion: bytes, recipient_cert: bytes, *,
                      key_transport: str = RSA_OAEP_MGF1P,
                      data_cipher: str = AES256_CBC) -> etree._Element:
    """``saml:EncryptedAssertion`` around ``xenc:EncryptedData`` (Type Element) of ``assertion``.

    ``assertion`` is a serialized ``saml:Assertion`` whose namespaces are declared on itself, so
    that the plaintext a service provider decrypts is a document of its own. The session key
    (``data_cipher``) is made by xmlsec and encrypted to ``recipient_cert`` (PEM or DER) with
    ``key_transport`` in an ``xenc:EncryptedKey`` inside the EncryptedData's KeyInfo.
    """
    constants = xmlsec.constants
    root = etree.fromstring(assertion)
    template = xmlsec.template.encrypted_data_create(
        root, _transform(data_cipher), type=constants.TypeEncElement, ns="xenc",
    )
    xmlsec.template.encrypted_data_ensure_cipher_value(template)
    info = xmlsec.template.encrypted_data_ensure_key_info(template, ns="ds")
    transport = _transform(_KEY_TRANSPORT_TEMPLATES.get(key_transport, key_transport))
    encrypted_key = xmlsec.template.add_encrypted_key(info, transport)
    method = encrypted_key.find(_q(XENC, "EncryptionMethod"))
    if method is not None:
        method.set("Algorithm", key_transport)
    xmlsec.template.encrypted_data_ensure_cipher_value(encrypted_key)
    manager = xmlsec.KeysManager()
    cert_format = (constants.KeyDataFormatCertPem if recipient_cert.lstrip().startswith(b"-----")
                   else constants.KeyDataFormatCertDer)
    manager.add_key(xmlsec.Key.from_memory(recipient_cert, cert_format))
    context = xmlsec.EncryptionContext(manager)
    context.key = xmlsec.Key.generate(
        constants.KeyDataAes, _SESSION_KEYS[data_cipher], constants.KeyDataTypeSession,
    )
    encrypted_data = context.encrypt_xml(template, root)
    wrapper = etree.Element(_q(SAML, "EncryptedAssertion"), nsmap={"saml": SAML})
    wrapper.append(etree.fromstring(etree.tostring(encrypted_data)))
    return wrapper


def verify_with_xmlsec(signature: etree._Element, cert: IdpKey, *,
                       resolve_to: etree._Element | None = None) -> None:
    """Verify one ``ds:Signature`` with xmlsec and ``cert``; raise ``xmlsec.Error`` if invalid.

    IDs are registered for every element with an ``ID`` attribute, the first occurrence of a
    duplicated ID winning, as ``xmlsec.tree.add_ids`` does; ``resolve_to`` registers that element
    first, so its ID resolves to it (XSW7 duplicates the signed ID and verifies when the reference
    resolves to the untouched copy).
    """
    context = xmlsec.SignatureContext()
    if resolve_to is not None:
        context.register_id(resolve_to, "ID")
    xmlsec.tree.add_ids(signature.getroottree().getroot(), ["ID"])
    context.key = cert.xmlsec_cert()
    context.verify(signature)


# The identity provider ---------------------------------------------------------------------------


class TestIdp:
    """A SAML 2.0 identity provider: an entity id, a signing key and its metadata.

    ``key`` defaults to a new RSA 2048 key. ``extra_certs`` are further certificates its
    metadata lists (a key rollover: the broker must accept a signature by any of them).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, entity_id: str, *, key: IdpKey | None = None,
                 extra_certs: Sequence[IdpKey] = ()) -> None:
        self.entity_id = entity_id
        self.key = key or IdpKey.generate(entity_id.split("//")[-1][:64] or "test-idp")
        self.extra_certs = tuple(extra_certs)

    def metadata(self, *, certs: Sequence[IdpKey] | None = None,
                 sso_url: str = "https://idp.example.test/sso",
                 valid_until: datetime | None = None) -> str:
        """The IdP's SAML 2.0 metadata, as an administrator uploads it to CreateSAMLProvider.

        An ``md:EntityDescriptor`` with one ``md:IDPSSODescriptor`` (SAML 2.0 protocol), one
        ``md:KeyDescriptor use="signing"`` per certificate (default: the key's certificate and
        ``extra_certs``), single logout, the NameID formats, single sign-on for the HTTP-Redirect
        and HTTP-POST bindings, the organization and a technical contact. With one certificate
        it is longer than the 1,000 characters AWS requires.
        """
        nsmap = {"md": MD, "ds": DS}
        root = etree.Element(_q(MD, "EntityDescriptor"), nsmap=nsmap)
        root.set("entityID", self.entity_id)
        root.set("ID", new_id())
        if valid_until is not None:
            root.set("validUntil", instant(valid_until))
        idp = etree.SubElement(root, _q(MD, "IDPSSODescriptor"))
        idp.set("WantAuthnRequestsSigned", "false")
        idp.set("protocolSupportEnumeration", SAMLP)
        for cert in [self.key, *self.extra_certs] if certs is None else certs:
            descriptor = etree.SubElement(idp, _q(MD, "KeyDescriptor"), use="signing")
            info = etree.SubElement(descriptor, _q(DS, "KeyInfo"))
            data = etree.SubElement(info, _q(DS, "X509Data"))
            etree.SubElement(data, _q(DS, "X509Certificate")).text = cert.b64_cert()
        base = sso_url.rsplit("/", 1)[0]
        for binding in (BINDING_REDIRECT, BINDING_POST):
            etree.SubElement(idp, _q(MD, "SingleLogoutService"), Binding=binding,
                             Location=base + "/slo")
        for name_format in (NAMEID_PERSISTENT, NAMEID_TRANSIENT, NAMEID_EMAIL,
                            NAMEID_UNSPECIFIED):
            etree.SubElement(idp, _q(MD, "NameIDFormat")).text = name_format
        for binding in (BINDING_REDIRECT, BINDING_POST):
            etree.SubElement(idp, _q(MD, "SingleSignOnService"), Binding=binding,
                             Location=sso_url)
        organization = etree.SubElement(root, _q(MD, "Organization"))
        for tag, text in (("OrganizationName", "Example Test IdP"),
                          ("OrganizationDisplayName", "Example Test Identity Provider"),
                          ("OrganizationURL", base + "/")):
            child = etree.SubElement(organization, _q(MD, tag))
            child.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            child.text = text
        contact = etree.SubElement(root, _q(MD, "ContactPerson"), contactType="technical")
        etree.SubElement(contact, _q(MD, "GivenName")).text = "Identity Team"
        etree.SubElement(contact, _q(MD, "EmailAddress")).text = "mailto:idp@example.test"
        return bytes(etree.tostring(root, pretty_print=True, xml_declaration=True,
                                    encoding="UTF-8")).decode("utf-8")

    def response(
        self, *,
        acs_url: str,
        audience: str | Sequence[str] | None,
        roles: Sequence[tuple[str, str]] | None,
        session_name: str | None = "alice",
        now: datetime | None = None,
        name_id: str = "alice@example.test",
        name_id_format: str | None = NAMEID_PERSISTENT,
        attributes: Mapping[str, Sequence[str]] | None = None,
        session_duration: int | str | None = None,
        session_not_on_or_after: datetime | None = None,
        source_identity: str | None = None,
        principal_tags: Mapping[str, str] | None = None,
        transitive_tag_keys: Sequence[str] = (),
        not_before: datetime | Defaulted | None = DEFAULT,
        not_on_or_after: datetime | Defaulted | None = DEFAULT,
        subject_not_on_or_after: datetime | Defaulted | None = DEFAULT,
        recipient: str | Defaulted | None = DEFAULT,
        destination: str | Defaulted | None = DEFAULT,
        in_response_to: str | None = None,
        issuer: str | Defaulted | None = DEFAULT,
        response_issuer: bool | str = True,
        status: str = STATUS_SUCCESS,
        assertion_id: str | None = None,
        response_id: str | None = None,
        sign: Sign | None = "assertion",
        signature_algorithm: str | None = None,
        digest_algorithm: str = SHA256,
        signing_key: IdpKey | None = None,
        include_key_info: bool = True,
        key_info_cert: IdpKey | None = None,
        inclusive_prefixes: Sequence[str] = (),
        encrypt_to: bytes | None = None,
        key_transport: str = RSA_OAEP_MGF1P,
        data_cipher: str = AES256_CBC,
        role_value_order: Literal["role,provider", "provider,role"] = "role,provider",
        extra_subject_confirmations: int = 0,
        two_assertions: bool = False,
        repeated: Sequence[str] = (),
    ) -> bytes:
        """A ``samlp:Response`` for AssumeRoleWithSAML, signed (and encrypted) as asked.

        Content (AWS's documented assertion): Response (Version 2.0, ID, IssueInstant,
        Destination, InResponseTo) → Issuer → Status → Assertion (Issuer, Subject with NameID and
        a bearer SubjectConfirmation, Conditions with an AudienceRestriction, AuthnStatement,
        AttributeStatement with AWS's attributes and ``attributes``).

        Defaults: ``now`` is the current time; Conditions are valid from a minute before
        ``now`` to five minutes after it; the bearer confirmation's ``NotOnOrAfter`` is five
        minutes after ``now``;
        ``recipient`` and ``destination`` are ``acs_url``; ``issuer`` is the entity id, written
        in the Response (unless ``response_issuer`` is false; a string is written there
        instead) and in the Assertion. ``None``
        omits an element or attribute. ``roles`` are (role ARN, provider ARN) pairs, one
        AttributeValue each, written in ``role_value_order``.

        Signing: ``sign`` picks the signed element ("both" signs the assertion, then the
        response over it); ``signature_algorithm`` defaults to the key's (rsa-sha256,
        ecdsa-sha256, dsa-sha1); ``signing_key`` defaults to the IdP's key; KeyInfo carries
        ``key_info_cert`` (default: the signer's certificate) unless ``include_key_info`` is
        false. ``inclusive_prefixes`` adds an ``InclusiveNamespaces PrefixList`` to the
        exclusive c14n transform (as Okta and Shibboleth do for ``xs``).

        Encryption: with ``encrypt_to`` (the service provider's certificate, PEM or DER), each
        assertion, once signed, becomes a ``saml:EncryptedAssertion`` (``key_transport`` for the
        session key, ``data_cipher`` for the assertion).

        Weird shapes: ``extra_subject_confirmations`` bearer confirmations addressed to other
        service providers come before the real one; ``two_assertions`` adds a second,
        independently signed assertion with its own ID; ``repeated`` names parts of the
        assertion ("Issuer", "Subject", "Subject/NameID", "Conditions", ...; a path of their
        local names, the first of each) written twice, the
        copy naming ``mallory`` where the part holds a name — signed as they stand.
        """
        moment = now or datetime.now(UTC)
        entity = self.entity_id if issuer is DEFAULT else issuer
        key = signing_key or self.key

        def signed(element: etree._Element) -> None:
            sign_element(element, key, signature_algorithm=signature_algorithm,
                         digest_algorithm=digest_algorithm,
                         key_info=(key_info_cert or key) if include_key_info else None,
                         inclusive_prefixes=inclusive_prefixes)

        audiences = [audience] if isinstance(audience, str) else audience
        role_values = None if roles is None else [
            f"{role},{provider}" if role_value_order == "role,provider" else f"{provider},{role}"
            for role, provider in roles
        ]
        aws: dict[str, list[str]] = {}
        if role_values is not None:
            aws[ATTR_ROLE] = role_values
        if session_name is not None:
            aws[ATTR_SESSION_NAME] = [session_name]
        if session_duration is not None:
            aws[ATTR_SESSION_DURATION] = [str(session_duration)]
        if source_identity is not None:
            aws[ATTR_SOURCE_IDENTITY] = [source_identity]
        for tag_key, tag_value in (principal_tags or {}).items():
            aws[ATTR_PRINCIPAL_TAG + tag_key] = [tag_value]
        if transitive_tag_keys:
            aws[ATTR_TRANSITIVE_TAG_KEYS] = list(transitive_tag_keys)
        for name, values in (attributes or {}).items():
            aws[name] = list(values)

        def assertion(assertion_id: str) -> etree._Element:
            return _assertion(
                assertion_id=assertion_id, issuer=entity, now=moment, name_id=name_id,
                name_id_format=name_id_format,
                subject_not_on_or_after=_pick(subject_not_on_or_after,
                                              moment + timedelta(minutes=5)),
                recipient=_pick(recipient, acs_url), in_response_to=in_response_to,
                extra_confirmations=extra_subject_confirmations,
                not_before=_pick(not_before, moment - timedelta(minutes=1)),
                not_on_or_after=_pick(not_on_or_after, moment + timedelta(minutes=5)),
                audiences=audiences, session_not_on_or_after=session_not_on_or_after,
                attributes=aws, repeated=repeated,
            )

        placed: list[etree._Element] = []
        ids = [assertion_id or new_id()] + ([new_id()] if two_assertions else [])
        for one_id in ids:
            element = assertion(one_id)
            if sign in ("assertion", "both"):
                signed(element)
            serialized = etree.tostring(element)
            if encrypt_to is not None:
                placed.append(encrypt_assertion(serialized, encrypt_to,
                                                key_transport=key_transport,
                                                data_cipher=data_cipher))
            else:
                placed.append(etree.fromstring(serialized))

        root = etree.Element(_q(SAMLP, "Response"), nsmap={"samlp": SAMLP, "saml": SAML})
        root.set("ID", response_id or new_id())
        root.set("Version", "2.0")
        root.set("IssueInstant", instant(moment))
        target = _pick(destination, acs_url)
        if target is not None:
            root.set("Destination", target)
        if in_response_to is not None:
            root.set("InResponseTo", in_response_to)
        if entity is not None and response_issuer:
            etree.SubElement(root, _q(SAML, "Issuer")).text = (
                response_issuer if isinstance(response_issuer, str) else entity)
        status_element = etree.SubElement(root, _q(SAMLP, "Status"))
        etree.SubElement(status_element, _q(SAMLP, "StatusCode"), Value=status)
        for element in placed:
            root.append(element)
        if sign in ("response", "both"):
            signed(root)
        return serialize(root)


def _pick(value: _T | Defaulted | None, default: _T) -> _T | None:
    return default if value is DEFAULT else value


def _assertion(*, assertion_id: str, issuer: str | None, now: datetime, name_id: str,
               name_id_format: str | None, subject_not_on_or_after: datetime | None,
               recipient: str | None, in_response_to: str | None, extra_confirmations: int,
               not_before: datetime | None, not_on_or_after: datetime | None,
               audiences: Sequence[str] | None, session_not_on_or_after: datetime | None,
               attributes: Mapping[str, Sequence[str]],
               repeated: Sequence[str] = ()) -> etree._Element:
    # The assertion is a document of its own, its namespaces declared on itself: what it signs
    # and what it encrypts do not depend on the Response around it.
    root = etree.Element(_q(SAML, "Assertion"), nsmap={"saml": SAML, "xs": XS, "xsi": XSI})
    root.set("ID", assertion_id)
    root.set("IssueInstant", instant(now))
    root.set("Version", "2.0")
    if issuer is not None:
        etree.SubElement(root, _q(SAML, "Issuer")).text = issuer

    subject = etree.SubElement(root, _q(SAML, "Subject"))
    name = etree.SubElement(subject, _q(SAML, "NameID"))
    if name_id_format is not None:
        name.set("Format", name_id_format)
    name.text = name_id
    confirmations = [f"https://sp{n}.example.test/saml" for n in range(extra_confirmations)]
    for confirmation_recipient in [*confirmations, recipient]:
        confirmation = etree.SubElement(subject, _q(SAML, "SubjectConfirmation"), Method=BEARER)
        data = etree.SubElement(confirmation, _q(SAML, "SubjectConfirmationData"))
        if in_response_to is not None:
            data.set("InResponseTo", in_response_to)
        if subject_not_on_or_after is not None:
            data.set("NotOnOrAfter", instant(subject_not_on_or_after))
        if confirmation_recipient is not None:
            data.set("Recipient", confirmation_recipient)

    conditions = etree.SubElement(root, _q(SAML, "Conditions"))
    if not_before is not None:
        conditions.set("NotBefore", instant(not_before))
    if not_on_or_after is not None:
        conditions.set("NotOnOrAfter", instant(not_on_or_after))
    if audiences is not None:
        restriction = etree.SubElement(conditions, _q(SAML, "AudienceRestriction"))
        for audience in audiences:
            etree.SubElement(restriction, _q(SAML, "Audience")).text = audience

    authn = etree.SubElement(root, _q(SAML, "AuthnStatement"), AuthnInstant=instant(now),
                             SessionIndex=new_id())
    if session_not_on_or_after is not None:
        authn.set("SessionNotOnOrAfter", instant(session_not_on_or_after))
    context = etree.SubElement(authn, _q(SAML, "AuthnContext"))
    etree.SubElement(context, _q(SAML, "AuthnContextClassRef")).text = AUTHN_PASSWORD

    if attributes:
        statement = etree.SubElement(root, _q(SAML, "AttributeStatement"))
        for attribute_name, values in attributes.items():
            attribute = etree.SubElement(statement, _q(SAML, "Attribute"), Name=attribute_name,
                                         NameFormat=ATTRNAME_URI)
            for value in values:
                element = etree.SubElement(attribute, _q(SAML, "AttributeValue"))
                element.set(_q(XSI, "type"), "xs:string")
                element.text = value
    for path in repeated:
        original = root.find("/".join(f"{{{SAML}}}{step}" for step in path.split("/")))
        assert original is not None, path
        twin = copy.deepcopy(original)
        for named in twin.iter(_q(SAML, "Issuer"), _q(SAML, "NameID")):
            named.text = "mallory"
        original.addnext(twin)
    return root
