"""XML Encryption (W3C XML Encryption 1.1), narrowed to SAML's EncryptedAssertion.

An ``EncryptedAssertion`` holds an ``xenc:EncryptedData`` (the assertion, under a fresh AES
key) and an ``xenc:EncryptedKey`` (that AES key, under the service provider's RSA key), either
inside the EncryptedData's KeyInfo or beside it. Accepted algorithms:

* key transport: RSA-OAEP (``rsa-oaep-mgf1p``, and XML Encryption 1.1's ``rsa-oaep`` with its
  MGF) — RSA PKCS#1 v1.5 key transport is refused (Bleichenbacher's attack);
* content: AES-128/192/256 in GCM or CBC mode.

Decryption says nothing about who wrote the assertion: the caller still requires a signature.
Every failure raises one ``DecryptionError`` with one message, so that a caller probing with
tampered ciphertexts learns nothing about why (padding oracles on CBC).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

from broker.errors import BrokerError

XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
DS = "http://www.w3.org/2000/09/xmldsig#"

_CBC = {f"{XENC}aes128-cbc": 16, f"{XENC}aes192-cbc": 24, f"{XENC}aes256-cbc": 32}
_GCM = {f"{XENC11}aes128-gcm": 16, f"{XENC11}aes192-gcm": 24, f"{XENC11}aes256-gcm": 32}
_OAEP = {f"{XENC}rsa-oaep-mgf1p", f"{XENC11}rsa-oaep"}
_DIGESTS: dict[str, hashes.HashAlgorithm] = {
    "http://www.w3.org/2000/09/xmldsig#sha1": hashes.SHA1(),  # noqa: S303 - OAEP's default
    f"{XENC}sha256": hashes.SHA256(),
    "http://www.w3.org/2001/04/xmldsig-more#sha384": hashes.SHA384(),
    f"{XENC}sha512": hashes.SHA512(),
}
_MGFS: dict[str, hashes.HashAlgorithm] = {
    f"{XENC11}mgf1sha1": hashes.SHA1(),  # noqa: S303 - OAEP's default
    f"{XENC11}mgf1sha256": hashes.SHA256(),
    f"{XENC11}mgf1sha384": hashes.SHA384(),
    f"{XENC11}mgf1sha512": hashes.SHA512(),
}


class DecryptionError(BrokerError):
    """The encrypted assertion could not be decrypted with any of the service provider's keys."""

    def __init__(self) -> None:
        super().__init__("the encrypted assertion could not be decrypted")


def decrypt(encrypted: etree._Element, keys: Sequence[rsa.RSAPrivateKey]) -> bytes:
    """The plaintext of the EncryptedAssertion ``encrypted``, with one of ``keys``."""
    try:
        return _decrypt(encrypted, keys)
    except DecryptionError:
        raise
    except (ValueError, TypeError, binascii.Error, KeyError, InvalidTag):
        raise DecryptionError() from None


def _decrypt(encrypted: etree._Element, keys: Sequence[rsa.RSAPrivateKey]) -> bytes:
    data = _one(encrypted.findall(f"{{{XENC}}}EncryptedData"))
    if data.get("Type") not in (None, f"{XENC}Element"):
        raise DecryptionError()
    method = _one(data.findall(f"{{{XENC}}}EncryptionMethod")).get("Algorithm", "")
    size = _CBC.get(method) or _GCM.get(method)
    if size is None:
        raise DecryptionError()
    ciphertext = _cipher_value(data)
    candidates = data.findall(f"{{{DS}}}KeyInfo/{{{XENC}}}EncryptedKey")
    candidates += encrypted.findall(f"{{{XENC}}}EncryptedKey")
    for encrypted_key in candidates:
        for key in keys:
            content_key = _unwrap(encrypted_key, key)
            if content_key is not None and len(content_key) == size:
                return _content(method, content_key, ciphertext)
    raise DecryptionError()


def _one(found: list[etree._Element]) -> etree._Element:
    if len(found) != 1:
        raise DecryptionError()
    return found[0]


def _cipher_value(holder: etree._Element) -> bytes:
    value = _one(holder.findall(f"{{{XENC}}}CipherData/{{{XENC}}}CipherValue"))
    return base64.b64decode("".join((value.text or "").split()), validate=True)


def _unwrap(encrypted_key: etree._Element, key: rsa.RSAPrivateKey) -> bytes | None:
    method = _one(encrypted_key.findall(f"{{{XENC}}}EncryptionMethod"))
    if method.get("Algorithm") not in _OAEP:
        return None  # PKCS#1 v1.5 and anything else: refused
    digest_el = method.find(f"{{{DS}}}DigestMethod")
    # SHA-1 is OAEP's default digest and mask function (RFC 8017), not a signature here.
    default: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303
    digest = _DIGESTS[digest_el.get("Algorithm", "")] if digest_el is not None else default
    mgf_el = method.find(f"{{{XENC11}}}MGF")
    mgf = default if mgf_el is None else _MGFS[mgf_el.get("Algorithm", "")]
    if method.get("Algorithm") == f"{XENC}rsa-oaep-mgf1p" and mgf_el is not None:
        return None
    params = method.find(f"{{{XENC}}}OAEPparams")
    label = base64.b64decode(params.text or "", validate=True) if params is not None else None
    try:
        return key.decrypt(_cipher_value(encrypted_key),
                           padding.OAEP(mgf=padding.MGF1(mgf), algorithm=digest, label=label))
    except ValueError:
        return None


def _content(method: str, key: bytes, ciphertext: bytes) -> bytes:
    if method in _GCM:
        if len(ciphertext) < 12 + 16:
            raise DecryptionError()
        return AESGCM(key).decrypt(ciphertext[:12], ciphertext[12:], None)
    if len(ciphertext) < 32 or len(ciphertext) % 16:
        raise DecryptionError()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(ciphertext[:16])).decryptor()
    padded = decryptor.update(ciphertext[16:]) + decryptor.finalize()
    # XML Encryption's padding: the last byte says how many bytes to drop (the others are
    # arbitrary, unlike PKCS#7).
    pad = padded[-1]
    if not 1 <= pad <= 16:
        raise DecryptionError()
    return padded[:-pad]
