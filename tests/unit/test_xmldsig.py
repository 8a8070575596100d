"""broker.idp.xmldsig on its own: every shape rule of the narrowed XML-DSig, each refused beside
an honest control that verifies.

Each case starts from an element signed by xmlsec (tests/saml_idp.py's signer), then changes the
signature's shape. Where the change is inside SignedInfo, SignedInfo is signed again with the
identity provider's key (``resign``), so that the signature value is right for what it now
says: the refusal can only come from the shape rule, never from a broken signature. Each rule's
refusal is told apart by its message.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from broker.idp import xmldsig
from broker.idp.xmldsig import DS, ENVELOPED, EXC_C14N, SignatureError
from tests.saml_idp import SAML, IdpKey, sign_element

KEY = IdpKey.generate("idp.example.test")
OTHER = IdpKey.generate("other.example.test")


def public(key: IdpKey) -> xmldsig.PublicKey:
    found = key.certificate.public_key()
    assert isinstance(found, rsa.RSAPublicKey)
    return found


PUBLIC = (public(KEY),)
EC = "http://www.w3.org/2001/10/xml-exc-c14n#"


def ds(name: str) -> str:
    return f"{{{DS}}}{name}"


def signed(key: IdpKey = KEY, **options: object) -> etree._Element:
    """A small signed saml:Assertion, inside a Response, as the broker receives it."""
    response = etree.fromstring(
        f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="r1">'
        f'<saml:Assertion xmlns:saml="{SAML}" ID="a1" Version="2.0">'
        f"<saml:Issuer>https://idp.example.test</saml:Issuer>"
        f"<saml:Subject><saml:NameID>alice</saml:NameID></saml:Subject>"
        f"</saml:Assertion></samlp:Response>".encode())
    sign_element(response[0], key, **options)  # type: ignore[arg-type]
    return received(response[0])


def received(element: etree._Element) -> etree._Element:
    """The element as the broker has it: its whole document serialized and parsed again (the
    tree xmlsec builds does not share the parser's interned names, which lxml's lookups by
    tag rely on)."""
    document = etree.fromstring(etree.tostring(element.getroottree().getroot()))
    found = document.find(f".//{{{SAML}}}Assertion")
    assert found is not None
    return found


def resign(element: etree._Element, key: IdpKey = KEY) -> None:
    """Sign the (changed) SignedInfo again: RSA-SHA256 over its exclusive canonical form."""
    signature = element.find(ds("Signature"))
    assert signature is not None
    info = signature.find(ds("SignedInfo"))
    assert info is not None
    data = etree.tostring(info, method="c14n", exclusive=True, with_comments=False)
    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    value = key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    holder = signature.find(ds("SignatureValue"))
    assert holder is not None
    holder.text = base64.b64encode(value).decode()


def refusal(element: etree._Element) -> str:
    with pytest.raises(SignatureError) as exc:
        xmldsig.verify(received(element), PUBLIC)
    return str(exc.value)


def part(element: etree._Element, path: str) -> etree._Element:
    found = element.find("/".join(ds(step) for step in path.split("/")))
    assert found is not None, path
    return found


# The honest controls ------------------------------------------------------------------------------


def test_an_honest_signature_verifies_and_gives_the_signed_bytes() -> None:
    element = signed()
    unsigned = received(element)
    unsigned.remove(part(unsigned, "Signature"))
    content = xmldsig.verify(element, PUBLIC)
    assert content == etree.tostring(unsigned, method="c14n", exclusive=True)
    assert b"<saml:NameID>alice</saml:NameID>" in content
    assert element.find(ds("Signature")) is None  # the enveloped signature is taken out


def test_resigning_an_unchanged_signed_info_still_verifies() -> None:
    element = signed()
    resign(element)
    assert xmldsig.verify(element, PUBLIC)


def test_any_one_of_several_configured_keys_verifies() -> None:
    element = signed()
    assert xmldsig.verify(element, (public(OTHER), *PUBLIC))


def test_a_reference_with_the_enveloped_transform_alone_is_inclusive_c14n() -> None:
    element = signed(reference_c14n=False)
    unsigned = received(element)  # in its document: inclusive c14n takes in the Response's
    unsigned.remove(part(unsigned, "Signature"))  # namespace declarations
    assert xmldsig.verify(element, PUBLIC) == etree.tostring(unsigned, method="c14n")


def test_the_references_own_inclusive_prefixes_are_honoured() -> None:
    # "samlp" is declared on the Response and not used inside the assertion: exclusive c14n
    # leaves it out unless the Reference's transform lists it, as this one does (and
    # SignedInfo's CanonicalizationMethod does not).
    element = signed(inclusive_prefixes=["samlp", "#default"])
    content = xmldsig.verify(element, PUBLIC)
    assert b'xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"' in content
    plain = xmldsig.verify(signed(), PUBLIC)
    assert b"xmlns:samlp" not in plain


def test_a_signature_handed_in_must_be_the_elements_own() -> None:
    element = signed()
    other = signed()
    with pytest.raises(SignatureError) as exc:
        xmldsig.verify(element, PUBLIC, part(other, "Signature"))
    assert str(exc.value) == "the signature given is not the element's own"
    with pytest.raises(SignatureError):
        xmldsig.verify(element, PUBLIC, part(element, "Signature/SignedInfo"))
    assert xmldsig.verify(element, PUBLIC, part(element, "Signature"))


def test_signature_of_finds_the_one_signature_child() -> None:
    element = signed()
    assert xmldsig.signature_of(element) is element.find(ds("Signature"))
    assert xmldsig.signature_of(part(element, "Signature/SignedInfo")) is None


# Shape rules ----------------------------------------------------------------------------------


def _second_signature(element: etree._Element) -> None:
    element.append(copy.deepcopy(part(element, "Signature")))


def _no_id(element: etree._Element) -> None:
    del element.attrib["ID"]


def _comment_first(element: etree._Element) -> None:
    part(element, "Signature").insert(0, etree.Comment("first"))


def _signed_info_second(element: etree._Element) -> None:
    signature = part(element, "Signature")
    info = part(element, "Signature/SignedInfo")
    signature.remove(info)
    signature.insert(1, info)


def _two_signed_infos(element: etree._Element) -> None:
    part(element, "Signature").append(copy.deepcopy(part(element, "Signature/SignedInfo")))


def _no_signature_value(element: etree._Element) -> None:
    part(element, "Signature").remove(part(element, "Signature/SignatureValue"))


def _two_signature_values(element: etree._Element) -> None:
    part(element, "Signature").append(copy.deepcopy(part(element,
                                                         "Signature/SignatureValue")))


def _inside_signed_info(change: Callable[[etree._Element], None]
                        ) -> Callable[[etree._Element], None]:
    def changed(element: etree._Element) -> None:
        change(part(element, "Signature/SignedInfo"))
        resign(element)
    return changed


def _two_c14n_methods(info: etree._Element) -> None:
    method = info.find(ds("CanonicalizationMethod"))
    assert method is not None
    method.addnext(copy.deepcopy(method))


def _inclusive_c14n_method(info: etree._Element) -> None:
    method = info.find(ds("CanonicalizationMethod"))
    assert method is not None
    method.set("Algorithm", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315")


def _c14n_method_with_comments(info: etree._Element) -> None:
    method = info.find(ds("CanonicalizationMethod"))
    assert method is not None
    method.set("Algorithm", EXC_C14N + "WithComments")


def _c14n_method_with_a_strange_parameter(info: etree._Element) -> None:
    method = info.find(ds("CanonicalizationMethod"))
    assert method is not None
    etree.SubElement(method, ds("Strange"))


def _no_signature_method(info: etree._Element) -> None:
    method = info.find(ds("SignatureMethod"))
    assert method is not None
    info.remove(method)


def _rsa_sha1(info: etree._Element) -> None:
    method = info.find(ds("SignatureMethod"))
    assert method is not None
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")


def _two_references(info: etree._Element) -> None:
    reference = info.find(ds("Reference"))
    assert reference is not None
    reference.addnext(copy.deepcopy(reference))


def _reference_elsewhere(info: etree._Element) -> None:
    reference = info.find(ds("Reference"))
    assert reference is not None
    reference.set("URI", "#r1")


def _reference_to_the_document(info: etree._Element) -> None:
    reference = info.find(ds("Reference"))
    assert reference is not None
    reference.set("URI", "")


def _no_transforms(info: etree._Element) -> None:
    reference = info.find(ds("Reference"))
    assert reference is not None
    transforms = reference.find(ds("Transforms"))
    assert transforms is not None
    reference.remove(transforms)


def _two_transform_lists(info: etree._Element) -> None:
    transforms = info.find(f"{ds('Reference')}/{ds('Transforms')}")
    assert transforms is not None
    transforms.addnext(copy.deepcopy(transforms))


def _transform(info: etree._Element, index: int) -> etree._Element:
    found = info.findall(f"{ds('Reference')}/{ds('Transforms')}/{ds('Transform')}")
    return found[index]


def _xpath_transform(info: etree._Element) -> None:
    _transform(info, 1).set("Algorithm", "http://www.w3.org/TR/1999/REC-xpath-19991116")


def _transforms_reversed(info: etree._Element) -> None:
    first, second = _transform(info, 0), _transform(info, 1)
    first.set("Algorithm", EXC_C14N)
    second.set("Algorithm", ENVELOPED)


def _enveloped_twice(info: etree._Element) -> None:
    _transform(info, 1).set("Algorithm", ENVELOPED)


def _something_among_the_transforms(info: etree._Element) -> None:
    _transform(info, 0).addnext(etree.Element(ds("Other")))


def _enveloped_with_a_parameter(info: etree._Element) -> None:
    etree.SubElement(_transform(info, 0), ds("Parameter"))


def _two_inclusive_namespace_lists(info: etree._Element) -> None:
    c14n = _transform(info, 1)
    for _ in range(2):
        etree.SubElement(c14n, f"{{{EC}}}InclusiveNamespaces", PrefixList="xs")


def _no_digest_method(info: etree._Element) -> None:
    method = info.find(f"{ds('Reference')}/{ds('DigestMethod')}")
    assert method is not None
    method.getparent().remove(method)  # type: ignore[union-attr]


def _two_digest_methods(info: etree._Element) -> None:
    method = info.find(f"{ds('Reference')}/{ds('DigestMethod')}")
    assert method is not None
    method.addnext(copy.deepcopy(method))


def _two_signature_methods(info: etree._Element) -> None:
    method = info.find(ds("SignatureMethod"))
    assert method is not None
    method.addnext(copy.deepcopy(method))


def _sha1_digest(info: etree._Element) -> None:
    method = info.find(f"{ds('Reference')}/{ds('DigestMethod')}")
    assert method is not None
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#sha1")


def _two_digest_values(info: etree._Element) -> None:
    value = info.find(f"{ds('Reference')}/{ds('DigestValue')}")
    assert value is not None
    value.addnext(copy.deepcopy(value))


def _digest_value_with_an_element(info: etree._Element) -> None:
    value = info.find(f"{ds('Reference')}/{ds('DigestValue')}")
    assert value is not None
    etree.SubElement(value, ds("Inner"))


def _digest_value_not_base64(info: etree._Element) -> None:
    value = info.find(f"{ds('Reference')}/{ds('DigestValue')}")
    assert value is not None
    value.text = "not*base64"


def _other_digest(info: etree._Element) -> None:
    value = info.find(f"{ds('Reference')}/{ds('DigestValue')}")
    assert value is not None
    value.text = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()


def _content_changed(element: etree._Element) -> None:
    name = element.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID")
    assert name is not None
    name.text = "mallory"


def _signature_value_not_base64(element: etree._Element) -> None:
    part(element, "Signature/SignatureValue").text = "%%%"


def _signature_value_with_an_element(element: etree._Element) -> None:
    etree.SubElement(part(element, "Signature/SignatureValue"), ds("Inner"))


def _signed_by_another_key(element: etree._Element) -> None:
    resign(element, OTHER)


SHAPES: dict[str, tuple[Callable[[etree._Element], None], str]] = {
    "two signatures": (_second_signature, "the element carries more than one signature"),
    "no ID": (_no_id, "the signed element has no ID"),
    "a comment before SignedInfo": (_comment_first,
                                     "SignedInfo must be the signature's first child"),
    "SignedInfo second": (_signed_info_second,
                          "SignedInfo must be the signature's first child"),
    "two SignedInfo": (_two_signed_infos, "the signature must have exactly one SignedInfo"),
    "no SignatureValue": (_no_signature_value,
                          "the signature must have exactly one SignatureValue"),
    "two SignatureValue": (_two_signature_values,
                           "the signature must have exactly one SignatureValue"),
    "SignatureValue not base64": (_signature_value_not_base64, "SignatureValue is not base64"),
    "two CanonicalizationMethod": (
        _inside_signed_info(_two_c14n_methods),
        "the signature must have exactly one CanonicalizationMethod"),
    "inclusive c14n of SignedInfo": (
        _inside_signed_info(_inclusive_c14n_method),
        "the canonicalization method must be exclusive XML canonicalization without comments"),
    "c14n with comments": (
        _inside_signed_info(_c14n_method_with_comments),
        "the canonicalization method must be exclusive XML canonicalization without comments"),
    "a strange c14n parameter": (
        _inside_signed_info(_c14n_method_with_a_strange_parameter),
        "exclusive canonicalization takes only an InclusiveNamespaces parameter"),
    "no SignatureMethod": (_inside_signed_info(_no_signature_method),
                           "the signature must have exactly one SignatureMethod"),
    "RSA-SHA1": (_inside_signed_info(_rsa_sha1),
                 "the signature algorithm is not accepted "
                 "(RSA or ECDSA with SHA-256, SHA-384 or SHA-512 only)"),
    "two References": (_inside_signed_info(_two_references),
                       "the signature must have exactly one Reference"),
    "a Reference elsewhere": (
        _inside_signed_info(_reference_elsewhere),
        "the signature's Reference does not point at the signed element"),
    "a Reference to the document": (
        _inside_signed_info(_reference_to_the_document),
        "the signature's Reference does not point at the signed element"),
    "no Transforms": (_inside_signed_info(_no_transforms),
                      "the Reference must list its transforms"),
    "two Transforms": (_inside_signed_info(_two_transform_lists),
                       "the Reference must list its transforms"),
    "an XPath transform": (_inside_signed_info(_xpath_transform),
                           "only the enveloped-signature and exclusive canonicalization "
                           "transforms are accepted"),
    "transforms reversed": (_inside_signed_info(_transforms_reversed),
                            "the transforms must be enveloped-signature, then exclusive "
                            "canonicalization"),
    "enveloped twice": (_inside_signed_info(_enveloped_twice),
                        "the transforms must be enveloped-signature, then exclusive "
                        "canonicalization"),
    "something else among the transforms": (
        _inside_signed_info(_something_among_the_transforms),
        "Transforms may hold only Transform elements"),
    "an enveloped transform with a parameter": (
        _inside_signed_info(_enveloped_with_a_parameter),
        "the enveloped-signature transform takes no parameters"),
    "two InclusiveNamespaces": (
        _inside_signed_info(_two_inclusive_namespace_lists),
        "exclusive canonicalization takes only an InclusiveNamespaces parameter"),
    "no DigestMethod": (_inside_signed_info(_no_digest_method),
                        "the signature must have exactly one DigestMethod"),
    "two DigestMethod": (_inside_signed_info(_two_digest_methods),
                         "the signature must have exactly one DigestMethod"),
    "two SignatureMethod": (_inside_signed_info(_two_signature_methods),
                            "the signature must have exactly one SignatureMethod"),
    "a SignatureValue holding an element": (_signature_value_with_an_element,
                                            "SignatureValue must hold only text"),
    "a SHA-1 digest": (_inside_signed_info(_sha1_digest),
                       "the digest algorithm is not accepted (SHA-256, SHA-384 or SHA-512 only)"),
    "two DigestValue": (_inside_signed_info(_two_digest_values),
                        "the signature must have exactly one DigestValue"),
    "a DigestValue holding an element": (_inside_signed_info(_digest_value_with_an_element),
                                         "DigestValue must hold only text"),
    "a DigestValue not base64": (_inside_signed_info(_digest_value_not_base64),
                                 "DigestValue is not base64"),
    "the digest of something else": (_inside_signed_info(_other_digest),
                                     "the digest of the signed element does not match"),
    "changed content": (_content_changed, "the digest of the signed element does not match"),
    "another key": (_signed_by_another_key,
                    "the signature does not verify with any configured certificate"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_rule_refuses_with_its_own_reason(shape: str) -> None:
    change, message = SHAPES[shape]
    honest = signed()
    assert xmldsig.verify(copy.deepcopy(honest), PUBLIC)  # the control, from the same element
    change(honest)
    assert refusal(honest) == message


def test_an_unsigned_element_is_refused() -> None:
    assert xmldsig.verify(signed(), PUBLIC)  # the control: signed, it verifies
    element = signed()
    element.remove(part(element, "Signature"))
    assert refusal(element) == "the element is not signed"
