"""The test IdP checked against xmlsec itself: what it signs verifies, what it wraps still does.

Each attack builder is an attack only if the original signature still verifies after it (with an
independent verifier, xmlsec) while a changed copy sits where a careless consumer reads it; each
test here proves that, with a control that a real change does break the signature.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import xmlsec
from lxml import etree

from tests import saml_attacks as attacks
from tests import saml_idp as idp_module
from tests.saml_attacks import DoctypeKind
from tests.saml_idp import (
    AES128_GCM,
    AES256_CBC,
    AES256_GCM,
    ATTR_PRINCIPAL_TAG,
    ATTR_ROLE,
    ATTR_SESSION_DURATION,
    ATTR_SESSION_NAME,
    ATTR_SOURCE_IDENTITY,
    ATTR_TRANSITIVE_TAG_KEYS,
    AWS_AUDIENCE,
    BEARER,
    DS,
    DSA_SHA1,
    ECDSA_SHA256,
    ENVELOPED,
    EXC_C14N,
    MD,
    MD5,
    RSA_1_5,
    RSA_MD5,
    RSA_OAEP,
    RSA_OAEP_MGF1P,
    RSA_SHA1,
    RSA_SHA256,
    SAML,
    SAMLP,
    SHA1,
    SHA256,
    STATUS_SUCCESS,
    XENC,
    XPATH,
    XSLT,
    IdpKey,
    KeyKind,
    TestIdp,
    TransformKind,
)

ACS = "https://signin.aws.amazon.com/saml"
ROLE = "arn:aws:iam::123456789012:role/Developer"
ADMIN = "arn:aws:iam::123456789012:role/Admin"
PROVIDER = "arn:aws:iam::123456789012:saml-provider/TestIdp"
NS = {"samlp": SAMLP, "saml": SAML, "ds": DS, "xenc": XENC, "md": MD}


@pytest.fixture(scope="module")
def idp() -> TestIdp:
    return TestIdp("https://idp.example.test/metadata")


@pytest.fixture(scope="module")
def sp_key() -> IdpKey:
    return IdpKey.generate("sp.example.test")


@pytest.fixture(scope="module")
def attacker() -> IdpKey:
    return IdpKey.generate("attacker.example.test")


def issue(idp: TestIdp, **overrides: Any) -> bytes:
    arguments: dict[str, Any] = {"acs_url": ACS, "audience": AWS_AUDIENCE,
                                    "roles": [(ROLE, PROVIDER)]}
    arguments.update(overrides)
    return idp.response(**arguments)


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True,
                                                 huge_tree=True))


def one(element: etree._Element | None, path: str) -> etree._Element:
    """The element at ``path``, which must be there."""
    assert element is not None
    found = element.find(path, NS)
    assert found is not None, f"{element.tag!r} has no {path}"
    return found


def algorithm(element: etree._Element | None, path: str) -> str:
    return str(one(element, path).get("Algorithm"))


def signature_of(element: etree._Element | None) -> etree._Element:
    return one(element, "ds:Signature")


def assertion_of(root: etree._Element) -> etree._Element:
    return one(root, "saml:Assertion")


def detach(element: etree._Element) -> None:
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)


def verifies(signature: etree._Element, cert: IdpKey,
             resolve_to: etree._Element | None = None) -> bool:
    try:
        idp_module.verify_with_xmlsec(signature, cert, resolve_to=resolve_to)
    except xmlsec.Error:
        return False
    return True


def name_id(assertion: etree._Element) -> str:
    return "".join(one(assertion, "saml:Subject/saml:NameID").itertext())


def attribute(assertion: etree._Element, name: str) -> list[str]:
    return [value.text or "" for value in assertion.iterfind(
        f"saml:AttributeStatement/saml:Attribute[@Name='{name}']/saml:AttributeValue", NS)]


def by_id(root: etree._Element, element_id: str) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str) and e.get("ID") == element_id]


# What the IdP signs -------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", ["assertion", "response", "both"])
def test_signed_messages_verify_with_xmlsec(idp: TestIdp, sign: str) -> None:
    root = parse(issue(idp, sign=sign))
    assertion = root.find("saml:Assertion", NS)
    assert assertion is not None
    signed = {"assertion": [assertion], "response": [root], "both": [assertion, root]}[sign]
    unsigned = {"assertion": [root], "response": [assertion], "both": []}[sign]
    for element in signed:
        assert verifies(signature_of(element), idp.key)
    for element in unsigned:
        assert element.find("ds:Signature", NS) is None


@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_signature_is_enveloped_after_the_issuer(idp: TestIdp, sign: str) -> None:
    root = parse(issue(idp, sign=sign))
    element = root if sign == "response" else root.find("saml:Assertion", NS)
    assert element is not None
    assert [child.tag for child in element[:2]] == [f"{{{SAML}}}Issuer", f"{{{DS}}}Signature"]
    signed_info = signature_of(element).find("ds:SignedInfo", NS)
    assert signed_info is not None
    assert algorithm(signed_info, "ds:CanonicalizationMethod") == EXC_C14N
    assert algorithm(signed_info, "ds:SignatureMethod") == RSA_SHA256
    reference = signed_info.find("ds:Reference", NS)
    assert reference is not None and reference.get("URI") == "#" + element.get("ID", "")
    assert [t.get("Algorithm") for t in reference.iterfind("ds:Transforms/ds:Transform", NS)] \
        == [ENVELOPED, EXC_C14N]
    assert algorithm(reference, "ds:DigestMethod") == SHA256


def test_a_changed_assertion_no_longer_verifies(idp: TestIdp) -> None:
    """The control for every attack below: xmlsec does notice a change to signed content."""
    root = parse(issue(idp))
    assertion = root.find("saml:Assertion", NS)
    assert assertion is not None
    assert verifies(signature_of(assertion), idp.key)
    one(assertion, "saml:Subject/saml:NameID").text = "admin@example.test"
    assert not verifies(signature_of(assertion), idp.key)


def test_content_follows_aws_documented_assertion(idp: TestIdp) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    xml = issue(idp, now=now, roles=[(ROLE, PROVIDER), (ADMIN, PROVIDER)],
                role_value_order="provider,role", session_name="alice", session_duration=7200,
                source_identity="alice-src", principal_tags={"Dept": "eng", "Team": "core"},
                transitive_tag_keys=["Dept", "Team"], attributes={"urn:oid:0.9": ["x", "y"]},
                in_response_to="_req1", session_not_on_or_after=now + timedelta(hours=8),
                audience=[AWS_AUDIENCE, "urn:other"])
    root = parse(xml)
    assert root.tag == f"{{{SAMLP}}}Response"
    assert root.get("Version") == "2.0" and root.get("Destination") == ACS
    assert root.get("InResponseTo") == "_req1"
    assert root.get("IssueInstant") == "2030-01-02T03:04:05Z"
    assert root.get("ID", "").startswith("_")
    assert root.findtext("saml:Issuer", namespaces=NS) == idp.entity_id
    assert one(root, "samlp:Status/samlp:StatusCode").get("Value") == STATUS_SUCCESS
    assertion = root.find("saml:Assertion", NS)
    assert assertion is not None and assertion.get("ID", "").startswith("_")
    assert assertion.findtext("saml:Issuer", namespaces=NS) == idp.entity_id
    assert name_id(assertion) == "alice@example.test"
    confirmation = assertion.find("saml:Subject/saml:SubjectConfirmation", NS)
    assert confirmation is not None and confirmation.get("Method") == BEARER
    data = confirmation.find("saml:SubjectConfirmationData", NS)
    assert data is not None
    assert dict(data.attrib) == {"InResponseTo": "_req1", "NotOnOrAfter": "2030-01-02T03:09:05Z",
                           "Recipient": ACS}
    conditions = assertion.find("saml:Conditions", NS)
    assert conditions is not None
    assert conditions.get("NotBefore") == "2030-01-02T03:03:05Z"
    assert conditions.get("NotOnOrAfter") == "2030-01-02T03:09:05Z"
    assert [a.text for a in conditions.iterfind("saml:AudienceRestriction/saml:Audience", NS)] \
        == [AWS_AUDIENCE, "urn:other"]
    authn = assertion.find("saml:AuthnStatement", NS)
    assert authn is not None and authn.get("SessionNotOnOrAfter") == "2030-01-02T11:04:05Z"
    assert attribute(assertion, ATTR_ROLE) == [f"{PROVIDER},{ROLE}", f"{PROVIDER},{ADMIN}"]
    assert attribute(assertion, ATTR_SESSION_NAME) == ["alice"]
    assert attribute(assertion, ATTR_SESSION_DURATION) == ["7200"]
    assert attribute(assertion, ATTR_SOURCE_IDENTITY) == ["alice-src"]
    assert attribute(assertion, ATTR_PRINCIPAL_TAG + "Dept") == ["eng"]
    assert attribute(assertion, ATTR_TRANSITIVE_TAG_KEYS) == ["Dept", "Team"]
    assert attribute(assertion, "urn:oid:0.9") == ["x", "y"]
    assert verifies(signature_of(assertion), idp.key)


def test_none_omits_and_extra_shapes(idp: TestIdp) -> None:
    root = parse(issue(idp, recipient=None, destination=None, not_before=None, audience=None,
                       session_name=None, issuer=None, extra_subject_confirmations=2,
                       two_assertions=True))
    assert root.get("Destination") is None and root.find("saml:Issuer", NS) is None
    assertions = root.findall("saml:Assertion", NS)
    assert len(assertions) == 2 and assertions[0].get("ID") != assertions[1].get("ID")
    for assertion in assertions:
        assert assertion[0].tag == f"{{{DS}}}Signature"  # first, with no Issuer before it
        assert verifies(signature_of(assertion), idp.key)
        confirmations = assertion.findall("saml:Subject/saml:SubjectConfirmation", NS)
        assert len(confirmations) == 3
        assert one(confirmations[-1], "saml:SubjectConfirmationData").get("Recipient") is None
        assert one(assertion, "saml:Conditions").get("NotBefore") is None
        assert assertion.find("saml:Conditions/saml:AudienceRestriction", NS) is None
        assert attribute(assertion, ATTR_SESSION_NAME) == []


def test_unsigned_and_failed(idp: TestIdp) -> None:
    root = parse(issue(idp, sign=None, status="urn:oasis:names:tc:SAML:2.0:status:Responder"))
    assert root.find(".//ds:Signature", NS) is None
    assert one(root, "samlp:Status/samlp:StatusCode").get("Value") \
        == "urn:oasis:names:tc:SAML:2.0:status:Responder"


# Weak and foreign signatures ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "digest"), [(RSA_SHA1, SHA1), (RSA_MD5, MD5)])
def test_weak_algorithms_are_signed_as_asked(idp: TestIdp, method: str, digest: str) -> None:
    root = parse(issue(idp, sign="both", signature_algorithm=method, digest_algorithm=digest))
    for element in (root, root.find("saml:Assertion", NS)):
        assert element is not None
        signature = signature_of(element)
        assert algorithm(signature, "ds:SignedInfo/ds:SignatureMethod") == method
        assert algorithm(signature, ".//ds:DigestMethod") == digest
        assert verifies(signature, idp.key)


@pytest.mark.parametrize(("kind", "method"), [("dsa", DSA_SHA1), ("ec", ECDSA_SHA256)])
def test_dsa_and_ec_keys(kind: KeyKind, method: str) -> None:
    key = IdpKey.generate(f"{kind}.example.test", kind=kind)
    other = TestIdp("https://other.example.test", key=key)
    root = parse(issue(other, sign="assertion"))
    signature = signature_of(assertion_of(root))
    assert algorithm(signature, "ds:SignedInfo/ds:SignatureMethod") == method
    assert verifies(signature, key)


def test_signed_by_another_key_fails_against_the_idp_cert(idp: TestIdp, attacker: IdpKey) -> None:
    root = parse(issue(idp, signing_key=attacker))
    signature = signature_of(assertion_of(root))
    assert not verifies(signature, idp.key)
    assert verifies(signature, attacker)
    assert signature.findtext(".//ds:X509Certificate", namespaces=NS) == attacker.b64_cert()


def test_key_info_can_be_left_out_or_name_another_cert(idp: TestIdp, attacker: IdpKey) -> None:
    bare = parse(issue(idp, include_key_info=False))
    signature = signature_of(assertion_of(bare))
    assert signature.find("ds:KeyInfo", NS) is None and verifies(signature, idp.key)
    lying = parse(issue(idp, key_info_cert=attacker))
    signature = signature_of(assertion_of(lying))
    assert signature.findtext(".//ds:X509Certificate", namespaces=NS) == attacker.b64_cert()
    assert verifies(signature, idp.key) and not verifies(signature, attacker)


def test_replace_key_info_is_a_self_consistent_attacker_signature(
        idp: TestIdp, attacker: IdpKey) -> None:
    root = parse(attacks.replace_key_info(issue(idp, sign="both"), attacker))
    for element in (root.find("saml:Assertion", NS), root):
        assert element is not None
        signature = signature_of(element)
        assert signature.findtext(".//ds:X509Certificate", namespaces=NS) == attacker.b64_cert()
        assert verifies(signature, attacker) and not verifies(signature, idp.key)


def test_strip_and_empty_signatures(idp: TestIdp) -> None:
    xml = issue(idp, sign="both")
    stripped = parse(attacks.strip_signature(xml, "assertion"))
    assert stripped.find("saml:Assertion/ds:Signature", NS) is None
    assert verifies(signature_of(stripped), idp.key) is False  # the response covered it
    assert parse(attacks.strip_signature(xml)).find(".//ds:Signature", NS) is None
    emptied = parse(attacks.empty_signature_value(xml))
    for signature in emptied.iter(f"{{{DS}}}Signature"):
        assert signature.findtext("ds:SignatureValue", namespaces=NS) == ""
        assert not verifies(signature, idp.key)


# Encryption -------------------------------------------------------------------------------------


def decrypt_standalone(encrypted_data: etree._Element, key: IdpKey) -> etree._Element:
    """Decrypt in a document of its own: the plaintext must not lean on outer namespaces."""
    document = etree.fromstring(etree.tostring(encrypted_data))
    manager = xmlsec.KeysManager()
    manager.add_key(key.xmlsec_key())
    return xmlsec.EncryptionContext(manager).decrypt(document)


@pytest.mark.parametrize(("transport", "cipher"), [
    (RSA_OAEP_MGF1P, AES256_CBC), (RSA_OAEP_MGF1P, AES128_GCM), (RSA_OAEP_MGF1P, AES256_GCM),
    (RSA_OAEP, AES256_GCM), (RSA_1_5, AES256_CBC),
])
def test_encrypted_assertion_decrypts_to_a_signed_assertion(
        idp: TestIdp, sp_key: IdpKey, transport: str, cipher: str) -> None:
    root = parse(issue(idp, sign="both", encrypt_to=sp_key.pem_cert(), key_transport=transport,
                       data_cipher=cipher))
    assert root.find("saml:Assertion", NS) is None
    assert verifies(signature_of(root), idp.key)  # the response is signed over the ciphertext
    data = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data is not None and data.get("Type") == "http://www.w3.org/2001/04/xmlenc#Element"
    assert algorithm(data, "xenc:EncryptionMethod") == cipher
    method = data.find("ds:KeyInfo/xenc:EncryptedKey/xenc:EncryptionMethod", NS)
    assert method is not None and method.get("Algorithm") == transport
    assertion = decrypt_standalone(data, sp_key)
    assert assertion.tag == f"{{{SAML}}}Assertion"
    assert verifies(signature_of(assertion), idp.key)
    assert name_id(assertion) == "alice@example.test"


def test_encrypted_assertion_needs_the_sp_key(
        idp: TestIdp, sp_key: IdpKey, attacker: IdpKey) -> None:
    root = parse(issue(idp, encrypt_to=sp_key.pem_cert()))
    data = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data is not None
    with pytest.raises(xmlsec.Error):
        decrypt_standalone(data, attacker)


# Metadata and encoding ----------------------------------------------------------------------------


def test_metadata_is_long_and_well_formed(idp: TestIdp, attacker: IdpKey) -> None:
    text = idp.metadata(certs=[idp.key, attacker],
                        valid_until=datetime(2031, 1, 1, tzinfo=UTC))
    assert len(text) >= 1000
    root = etree.fromstring(text.encode())
    assert root.tag == f"{{{MD}}}EntityDescriptor" and root.get("entityID") == idp.entity_id
    assert root.get("validUntil") == "2031-01-01T00:00:00Z"
    descriptor = root.find("md:IDPSSODescriptor", NS)
    assert descriptor is not None
    assert descriptor.get("protocolSupportEnumeration") == SAMLP
    certs = [k.findtext(".//ds:X509Certificate", namespaces=NS)
             for k in descriptor.iterfind("md:KeyDescriptor[@use='signing']", NS)]
    assert certs == [idp.key.b64_cert(), attacker.b64_cert()]
    assert {s.get("Binding") for s in descriptor.iterfind("md:SingleSignOnService", NS)} == {
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
    }
    assert descriptor.findall("md:NameIDFormat", NS)
    ec = TestIdp("https://ec.example.test", key=IdpKey.generate("ec", kind="ec"))
    assert len(ec.metadata()) >= 1000


def test_encode_is_the_post_binding_base64(idp: TestIdp) -> None:
    xml = issue(idp)
    assert base64.b64decode(idp_module.encode(xml), validate=True) == xml


# XML Signature Wrapping ---------------------------------------------------------------------------

EVIL_NAME = "admin@example.test"


def evil(assertion: etree._Element) -> None:
    attacks.evil_name_id(EVIL_NAME)(assertion)
    attacks.evil_role(ADMIN, PROVIDER)(assertion)
    attacks.evil_session_name("admin")(assertion)


# The variants that put the untouched copy inside the ds:Signature that references it.
INSIDE_THE_SIGNATURE = {"xsw1", "xsw6", "xsw8"}


def verifies_with_local_enveloped(signature: etree._Element, target: etree._Element,
                                  cert: IdpKey) -> bool:
    """Verify as a verifier does whose enveloped transform strips only a Signature in the target.

    Such a verifier digests ``target`` as it stands (no signature inside it) and checks the
    SignatureValue over the SignedInfo as carried: exactly what xmlsec checks when the signature,
    stripped of what was wrapped into it, is put back into a copy of the target.
    """
    document = copy.deepcopy(target)
    for inner in list(document.iter(f"{{{DS}}}Signature")):
        detach(inner)
    carried = copy.deepcopy(signature)
    carried.tail = None
    for child in list(carried):
        if child.tag not in (f"{{{DS}}}SignedInfo", f"{{{DS}}}SignatureValue", f"{{{DS}}}KeyInfo"):
            carried.remove(child)
    issuer = document.find("saml:Issuer", NS)
    document.insert(0 if issuer is None else document.index(issuer) + 1, carried)
    return verifies(carried, cert)


# Where each variant puts the evil assertion, as an XPath from the Response.
EVIL_AT = {
    "xsw1": "saml:Assertion", "xsw2": "saml:Assertion", "xsw3": "saml:Assertion[1]",
    "xsw4": "saml:Assertion", "xsw5": "saml:Assertion[1]", "xsw6": "saml:Assertion",
    "xsw7": "samlp:Extensions/saml:Assertion", "xsw8": "saml:Assertion",
}


@pytest.mark.parametrize("variant", sorted(attacks.XSW))
def test_xsw_keeps_the_original_signature_valid(idp: TestIdp, variant: str) -> None:
    wraps_response = variant in ("xsw1", "xsw2")
    original = parse(issue(idp, sign="response" if wraps_response else "assertion"))
    signed = original if wraps_response else original.find("saml:Assertion", NS)
    assert signed is not None
    signed_id = signed.get("ID", "")

    wrapped = parse(attacks.XSW[variant](etree.tostring(original), evil))

    # The signature still verifies, over an untouched copy of what the IdP signed...
    copies = by_id(wrapped, signed_id)
    duplicated = variant in ("xsw7", "xsw8")
    assert len(copies) == (2 if duplicated else 1)
    untouched = copies[-1]
    signatures = [s for s in wrapped.iter(f"{{{DS}}}Signature")
                  if one(s, "ds:SignedInfo/ds:Reference").get("URI") == "#" + signed_id]
    assert len(signatures) == 1
    if variant in INSIDE_THE_SIGNATURE:
        # xmlsec's conforming enveloped transform drops the copy with the signature...
        assert not verifies(signatures[0], idp.key, resolve_to=untouched if duplicated else None)
        # ...but a verifier that strips only a signature inside the referenced element accepts.
        assert verifies_with_local_enveloped(signatures[0], untouched, idp.key)
    else:
        assert verifies(signatures[0], idp.key, resolve_to=untouched if duplicated else None)
    untouched_assertion = untouched if untouched.tag == f"{{{SAML}}}Assertion" else \
        untouched.find("saml:Assertion", NS)
    assert untouched_assertion is not None
    assert name_id(untouched_assertion) == "alice@example.test"

    # ...while the evil copy, where this variant puts it, says what the attacker wants.
    fake = wrapped.find(EVIL_AT[variant], NS)
    assert fake is not None and fake is not untouched_assertion
    assert name_id(fake) == EVIL_NAME
    assert attribute(fake, ATTR_ROLE) == [f"{ADMIN},{PROVIDER}"]
    assert attribute(fake, ATTR_SESSION_NAME) == ["admin"]
    evil_holder = wrapped if wraps_response else fake
    # Control: however a verifier treats the enveloped transform, the evil copy is not signed.
    evil_only = copy.deepcopy(evil_holder)
    for inner in by_id(evil_only, signed_id):
        if inner is not evil_only:
            detach(inner)
    assert not verifies_with_local_enveloped(signatures[0], evil_only, idp.key)
    if variant in ("xsw7", "xsw8"):
        assert evil_holder.get("ID") == signed_id
        # Control: resolved to the evil copy, the same signature fails.
        assert not verifies(signatures[0], idp.key, resolve_to=fake)
    else:
        assert evil_holder.get("ID", "").startswith("_evil_")


def test_xsw_needs_the_signature_it_wraps(idp: TestIdp) -> None:
    with pytest.raises(ValueError, match="response is not signed"):
        attacks.xsw1(issue(idp, sign="assertion"), evil)
    with pytest.raises(ValueError, match="assertion is not signed"):
        attacks.xsw3(issue(idp, sign="response"), evil)


# Other document attacks ---------------------------------------------------------------------------


def test_comment_injection_leaves_the_signature_valid(idp: TestIdp) -> None:
    xml = issue(idp, name_id="admin@example.test.evil.test",
                attributes={"urn:mail": ["admin@example.test.evil.test"]})
    injected = attacks.inject_comment(xml, "admin@example.test", ".evil.test")
    injected = attacks.inject_comment(injected, "admin@example.test", ".evil.test",
                                         attribute="urn:mail")
    assert b"admin@example.test<!---->.evil.test" in injected
    assertion = parse(injected).find("saml:Assertion", NS)
    assert assertion is not None
    assert verifies(signature_of(assertion), idp.key)
    name = assertion.find("saml:Subject/saml:NameID", NS)
    assert name is not None and name.text == "admin@example.test"  # the first text node
    assert name_id(assertion) == "admin@example.test.evil.test"
    with pytest.raises(ValueError, match="no text node"):
        attacks.inject_comment(xml, "bob", "@example.test")


@pytest.mark.parametrize("kind", ["internal", "external", "parameter", "billion-laughs"])
def test_doctypes(idp: TestIdp, kind: DoctypeKind) -> None:
    doc = attacks.with_doctype(issue(idp), kind)
    assert b"<!DOCTYPE samlp:Response [" in doc
    expected = {"internal": b"&name;", "external": b"&xxe;", "parameter": b"%xxe;",
                "billion-laughs": b"&lol9;"}[kind]
    assert expected in doc
    if kind == "internal":
        # Expanded, the document is the one the IdP signed: only the DOCTYPE is wrong with it.
        root = etree.fromstring(doc, etree.XMLParser(resolve_entities=True, no_network=True,
                                                     load_dtd=False))
        assertion = root.find("saml:Assertion", NS)
        assert assertion is not None and name_id(assertion) == "alice@example.test"
        assert verifies(signature_of(assertion), idp.key)


@pytest.mark.parametrize(("kind", "uri"), [("xslt", XSLT), ("xpath", XPATH)])
def test_extra_transforms_sign_validly(idp: TestIdp, kind: TransformKind, uri: str) -> None:
    root = parse(attacks.with_transform(issue(idp), kind, idp.key))
    signature = signature_of(assertion_of(root))
    transforms = [t.get("Algorithm") for t in signature.iterfind(".//ds:Transform", NS)]
    assert transforms == [ENVELOPED, uri, EXC_C14N]
    assert verifies(signature, idp.key)


def test_a_reference_may_leave_canonicalization_to_the_default(idp: TestIdp) -> None:
    root = parse(issue(idp, sign=None))
    signature = idp_module.sign_element(assertion_of(root), idp.key, reference_c14n=False)
    transforms = [t.get("Algorithm") for t in signature.iterfind(".//ds:Transform", NS)]
    assert transforms == [ENVELOPED]
    # The assertion inherits xmlns:samlp, which inclusive canonicalization writes into the
    # digested octets and exclusive canonicalization leaves out: xmlsec digests the former.
    assertion = assertion_of(root)
    assert b"xmlns:samlp" in etree.tostring(assertion, method="c14n")
    assert b"xmlns:samlp" not in etree.tostring(assertion, method="c14n", exclusive=True)
    assert verifies(signature, idp.key)


def depth(element: etree._Element) -> int:
    return 1 + max((depth(child) for child in element), default=0)


def test_deeply_nested_wide_and_oversized_keep_the_assertion_signature(idp: TestIdp) -> None:
    xml = issue(idp)
    nested = parse(attacks.deeply_nested(xml, 200))
    assert depth(nested) > 200
    assert verifies(signature_of(assertion_of(nested)), idp.key)
    big = attacks.oversized(xml, 200_000)
    assert len(big) == 200_000
    assert verifies(signature_of(assertion_of(parse(big))), idp.key)
    with pytest.raises(ValueError, match="already"):
        attacks.oversized(xml, 100)
    wide = parse(attacks.many_elements(xml, 3000))
    assert sum(1 for _ in wide.iter()) > 3000
    assert verifies(signature_of(assertion_of(wide)), idp.key)


def test_builders_leave_their_input_alone(idp: TestIdp) -> None:
    xml = issue(idp)
    before = bytes(xml)
    builders: list[Callable[[bytes], bytes]] = [
        lambda x: attacks.xsw3(x, evil), attacks.strip_signature,
        lambda x: attacks.deeply_nested(x, 3),
    ]
    for builder in builders:
        builder(xml)
    assert xml == before
