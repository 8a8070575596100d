"""The broker as a SAML service provider: its key, its certificate, its metadata.

The key decrypts assertions that identity providers encrypt to the broker. By default it is
made on first start and kept in the entity store, sealed by the keyring (purpose
``saml-sp-key``), so that every process of a deployment shares it with nothing to copy; the
first process to start creates it, the others read it (the store's create is atomic). An
administrator may bring their own key and certificate files instead (``saml.sp_key_file``).
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from broker.clock import Clock
from broker.errors import AlreadyExists, ConfigError, NotFound, SealError
from broker.keyring import Keyring
from broker.settings import Settings
from broker.store.base import EntityStore, Record, Ref

KIND = "sp_key"
REF = Ref(KIND, "", "saml")
PURPOSE = "saml-sp-key"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


@dataclass(frozen=True)
class SpCredentials:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def certificate_b64(self) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode()


async def load(settings: Settings, store: EntityStore, keyring: Keyring,
               clock: Clock) -> SpCredentials:
    if settings.saml.sp_key_file or settings.saml.sp_certificate_file:
        return _from_files(settings.saml.sp_key_file, settings.saml.sp_certificate_file)
    try:
        record = await store.get(REF)
    except NotFound:
        made = _generate(settings.public_url, clock.now())
        key_pem = made.key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        sealed = keyring.seal(key_pem, purpose=PURPOSE, aad=REF.key)
        cert_pem = made.certificate.public_bytes(serialization.Encoding.PEM).decode()
        try:
            await store.create(Record(KIND, "", REF.key, {
                "key": base64.b64encode(sealed).decode(), "certificate": cert_pem}))
            return made
        except AlreadyExists:  # another process made one first: use theirs
            record = await store.get(REF)
    try:
        key_pem = keyring.unseal(base64.b64decode(record.data["key"]), purpose=PURPOSE,
                                 aad=REF.key)
    except SealError as exc:
        # The first sealed record every start opens: a keyring of another broker (a restore
        # beside the wrong keyring file, a host given another copy) ends here, before serving.
        raise SealError(
            f"this keyring does not open the database's sealed records ({exc}): is it this "
            "database's keyring? Restore the keyring file backed up with the database, or "
            "copy the keyring of the nodes already serving it") from exc
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return SpCredentials(key, x509.load_pem_x509_certificate(record.data["certificate"].encode()))


async def reseal(store: EntityStore, keyring: Keyring) -> int:
    """Seal the stored SP key with the keyring's sealing key (1 if it was resealed)."""
    try:
        record = await store.get(REF)
    except NotFound:
        return 0
    sealed = base64.b64decode(record.data["key"])
    if keyring.key_id_of(sealed) == keyring.sealing.id:
        return 0
    plain = keyring.unseal(sealed, purpose=PURPOSE, aad=REF.key)
    fresh = base64.b64encode(keyring.seal(plain, purpose=PURPOSE, aad=REF.key)).decode()
    await store.update(REF, lambda current: {**current.data, "key": fresh})
    return 1


async def sealed_with(store: EntityStore, keyring: Keyring, key_id: str) -> int:
    try:
        record = await store.get(REF)
    except NotFound:
        return 0
    return int(keyring.key_id_of(base64.b64decode(record.data["key"])) == key_id)


def load_private_key(pem: bytes) -> PrivateKeyTypes:
    """A PEM private key (unencrypted), as cryptography loads it, but quietly: loading a DSA
    key makes cryptography warn that DSA is deprecated, and every caller refuses anything but
    RSA anyway. ValueError, TypeError or UnsupportedAlgorithm when it is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return serialization.load_pem_private_key(pem, password=None)


def public_key_of(certificate: x509.Certificate) -> CertificatePublicKeyTypes:
    """A certificate's public key, as quietly as load_private_key."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return certificate.public_key()


def _from_files(key_file: str, cert_file: str) -> SpCredentials:
    if not (key_file and cert_file):
        raise ConfigError("saml.sp_key_file and saml.sp_certificate_file go together")
    try:
        key = load_private_key(Path(key_file).read_bytes())
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"saml.sp_key_file / saml.sp_certificate_file: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ConfigError("saml.sp_key_file: must be an RSA private key of at least 2048 bits")
    public = public_key_of(cert)
    if not isinstance(public, rsa.RSAPublicKey) or \
            public.public_numbers() != key.public_key().public_numbers():
        raise ConfigError("saml.sp_certificate_file: the certificate is not for sp_key_file")
    return SpCredentials(key, cert)


def _generate(public_url: str, now: datetime) -> SpCredentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker SAML service provider"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, public_url[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return SpCredentials(key, cert)


def metadata(entity_id: str, acs_url: str, credentials: SpCredentials) -> str:
    """The broker's SP metadata (saml-metadata-2.0-os): what an identity provider imports."""
    cert = credentials.certificate_b64
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID={quoteattr(entity_id)}>\n'
        '  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">\n'
        '    <md:KeyDescriptor use="encryption">\n'
        f'      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>'
        '</ds:X509Data></ds:KeyInfo>\n'
        '      <md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/>\n'
        '      <md:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/>\n'
        '      <md:EncryptionMethod '
        'Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"/>\n'
        '    </md:KeyDescriptor>\n'
        '    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent'
        '</md:NameIDFormat>\n'
        '    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:transient'
        '</md:NameIDFormat>\n'
        f'    <md:AssertionConsumerService index="0" isDefault="true" '
        f'Binding="{POST_BINDING}" Location={quoteattr(acs_url)}/>\n'
        '  </md:SPSSODescriptor>\n'
        '</md:EntityDescriptor>\n'
    )
