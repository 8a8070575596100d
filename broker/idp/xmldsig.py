"""XML Signature verification (W3C XML-DSig 1.1), narrowed to what SAML 2.0 needs.

SAML signs one element with an *enveloped* signature: a ``ds:Signature`` child of the element,
whose single ``ds:Reference`` points back at that element's ``ID``. Everything else the XML-DSig
grammar allows (several references, XPath and XSLT transforms, inclusive or commented
canonicalization, keys taken from the message) is a way in for an attacker and is refused here:

* the signature must be a direct child of the element it signs, and its one Reference must be
  ``#`` + that element's own ``ID`` (signature wrapping needs a reference to somewhere else);
* SignedInfo is canonicalized with exclusive XML canonicalization without comments; the only
  transforms are enveloped-signature and exclusive canonicalization (a Reference with the
  enveloped-signature transform alone is digested as Canonical XML 1.0, as XML-DSig says);
* signatures are RSA PKCS#1 v1.5 or ECDSA with SHA-256, SHA-384 or SHA-512, and digests are
  SHA-256, SHA-384 or SHA-512 (SHA-1, MD5 and DSA are refused);
* the key is one the administrator configured; ``KeyInfo`` is never read.

``verify`` returns the canonical bytes of the signed element — exactly the bytes the digest
covers. The caller parses *those* bytes again and reads nothing from anywhere else, so whatever
an attacker wraps around or beside the signed element can never be mistaken for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from broker.errors import BrokerError
from broker.idp.xmlsafe import children_by_tag

DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

_SIGNATURE = f"{{{DS}}}Signature"
_SIGNED_INFO = f"{{{DS}}}SignedInfo"
_C14N_METHOD = f"{{{DS}}}CanonicalizationMethod"
_SIGNATURE_METHOD = f"{{{DS}}}SignatureMethod"
_REFERENCE = f"{{{DS}}}Reference"
_TRANSFORMS = f"{{{DS}}}Transforms"
_TRANSFORM = f"{{{DS}}}Transform"
_DIGEST_METHOD = f"{{{DS}}}DigestMethod"
_DIGEST_VALUE = f"{{{DS}}}DigestValue"
_SIGNATURE_VALUE = f"{{{DS}}}SignatureValue"
_INCLUSIVE = f"{{{EXC_C14N}}}InclusiveNamespaces"

_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
_ENC = "http://www.w3.org/2001/04/xmlenc#"
SIGNATURE_METHODS: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    f"{_MORE}rsa-sha256": ("rsa", hashes.SHA256()),
    f"{_MORE}rsa-sha384": ("rsa", hashes.SHA384()),
    f"{_MORE}rsa-sha512": ("rsa", hashes.SHA512()),
    f"{_MORE}ecdsa-sha256": ("ec", hashes.SHA256()),
    f"{_MORE}ecdsa-sha384": ("ec", hashes.SHA384()),
    f"{_MORE}ecdsa-sha512": ("ec", hashes.SHA512()),
}
DIGEST_METHODS: dict[str, Callable[[bytes], Any]] = {
    f"{_ENC}sha256": hashlib.sha256,
    f"{_MORE}sha384": hashlib.sha384,
    f"{_ENC}sha512": hashlib.sha512,
}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class SignatureError(BrokerError):
    """The signature is missing, malformed, uses a refused algorithm, or does not verify."""


def signature_of(element: etree._Element) -> etree._Element | None:
    """The element's enveloped signature: its one ds:Signature child, or None."""
    found = list(element.iterchildren(_SIGNATURE))
    if len(found) > 1:
        raise SignatureError("the element carries more than one signature")
    return found[0] if found else None


def verify(element: etree._Element, keys: Sequence[PublicKey],
           signature: etree._Element | None = None) -> bytes:
    """Verify the enveloped signature of ``element`` with one of ``keys``; return the canonical
    bytes the signature covers. ``element`` is changed: its signature is removed.
    ``signature``: what ``signature_of(element)`` returned, when the caller asked already."""
    if signature is None:
        signature = signature_of(element)
        if signature is None:
            raise SignatureError("the element is not signed")
    elif signature.getparent() is not element or signature.tag != _SIGNATURE:
        raise SignatureError("the signature given is not the element's own")
    element_id = element.get("ID")
    if not element_id:
        raise SignatureError("the signed element has no ID")
    # Each element's children are read once, grouped by name; the rules below count them.
    parts = children_by_tag(signature)
    signed_info = _only(parts, _SIGNED_INFO)
    if signature[0] is not signed_info:  # counting comments: SignedInfo comes first
        raise SignatureError("SignedInfo must be the signature's first child")
    info = children_by_tag(signed_info)
    prefixes = _c14n_prefixes(_only(info, _C14N_METHOD))
    method = SIGNATURE_METHODS.get(_only(info, _SIGNATURE_METHOD).get("Algorithm", ""))
    if method is None:
        raise SignatureError("the signature algorithm is not accepted "
                             "(RSA or ECDSA with SHA-256, SHA-384 or SHA-512 only)")
    reference = _only(info, _REFERENCE)
    if reference.get("URI") != f"#{element_id}":
        raise SignatureError("the signature's Reference does not point at the signed element")
    referenced = children_by_tag(reference)
    transforms = referenced.get(_TRANSFORMS)
    if transforms is None or len(transforms) != 1:
        raise SignatureError("the Reference must list its transforms")
    exclusive, ref_prefixes = _transforms(transforms[0])
    digest = DIGEST_METHODS.get(_only(referenced, _DIGEST_METHOD).get("Algorithm", ""))
    if digest is None:
        raise SignatureError("the digest algorithm is not accepted "
                             "(SHA-256, SHA-384 or SHA-512 only)")
    expected_digest = _base64(_text(_only(referenced, _DIGEST_VALUE)), "DigestValue")
    signature_value = _base64(_text(_only(parts, _SIGNATURE_VALUE)), "SignatureValue")

    signed_info_bytes = _c14n(signed_info, prefixes)
    if not any(_signature_ok(key, method, signature_value, signed_info_bytes) for key in keys):
        raise SignatureError("the signature does not verify with any configured certificate")
    # The enveloped-signature transform: the element without its Signature (and only the
    # Signature: the text after it, which lxml keeps as its "tail", stays), canonicalized.
    _remove_keeping_tail(signature)
    content = _c14n(element, ref_prefixes) if exclusive else _inclusive_c14n(element)
    if not hmac.compare_digest(digest(content).digest(), expected_digest):
        raise SignatureError("the digest of the signed element does not match")
    return content


def _only(parts: dict[object, list[etree._Element]], tag: str) -> etree._Element:
    found = parts.get(tag)
    if found is None or len(found) != 1:
        name = tag.rsplit("}", 1)[-1]
        raise SignatureError(f"the signature must have exactly one {name}")
    return found[0]


def _text(element: etree._Element) -> str:
    if len(element):
        raise SignatureError(f"{etree.QName(element).localname} must hold only text")
    return "".join((element.text or "").split())


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64") from None


def _c14n_prefixes(method: etree._Element) -> list[str] | None:
    if method.get("Algorithm") != EXC_C14N:
        raise SignatureError("the canonicalization method must be exclusive XML "
                             "canonicalization without comments")
    return _inclusive_prefixes(method)


def _inclusive_prefixes(parent: etree._Element) -> list[str] | None:
    children = list(parent)
    if not children:
        return None
    if len(children) != 1 or children[0].tag != _INCLUSIVE or len(children[0]):
        raise SignatureError("exclusive canonicalization takes only an InclusiveNamespaces "
                             "parameter")
    return children[0].get("PrefixList", "").split()


def _remove_keeping_tail(node: etree._Element) -> None:
    tail = node.tail
    previous = node.getprevious()
    parent = node.getparent()
    assert parent is not None
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(node)


def _inclusive_c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=False, with_comments=False)


def _transforms(transforms: etree._Element) -> tuple[bool, list[str] | None]:
    """(exclusive canonicalization?, its inclusive prefixes), from a Reference's Transforms.
    A Reference whose only transform is enveloped-signature is digested as Canonical XML 1.0,
    inclusive and without comments (XML-DSig §4.3.3.2); saml-core §5.4.4 allows it."""
    algorithms = []
    prefixes: list[str] | None = None
    for transform in transforms:
        if transform.tag != _TRANSFORM:
            raise SignatureError("Transforms may hold only Transform elements")
        algorithm = transform.get("Algorithm")
        if algorithm == ENVELOPED:
            if len(transform):
                raise SignatureError("the enveloped-signature transform takes no parameters")
        elif algorithm == EXC_C14N:
            prefixes = _inclusive_prefixes(transform)
        else:
            raise SignatureError("only the enveloped-signature and exclusive canonicalization "
                                 "transforms are accepted")
        algorithms.append(algorithm)
    if algorithms == [ENVELOPED]:
        return False, None
    if algorithms != [ENVELOPED, EXC_C14N]:
        raise SignatureError("the transforms must be enveloped-signature, then exclusive "
                             "canonicalization")
    return True, prefixes


def _c14n(element: etree._Element, prefixes: list[str] | None) -> bytes:
    # libxml2 reads "#default" in the prefix list as the default namespace, as XML-DSig means.
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False,
                          inclusive_ns_prefixes=prefixes or None)


def _signature_ok(key: PublicKey, method: tuple[str, hashes.HashAlgorithm], value: bytes,
                  data: bytes) -> bool:
    kind, digest = method
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, data, padding.PKCS1v15(), digest)
            return True
        if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            # XML-DSig carries ECDSA signatures as r || s, each as long as the curve's order.
            size = (key.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                return False
            r = int.from_bytes(value[:size], "big")
            s = int.from_bytes(value[size:], "big")
            if r == 0 or s == 0:
                return False
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
            return True
    except InvalidSignature:
        return False
    return False
