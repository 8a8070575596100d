"""Identity-provider metadata: what parse_metadata reads, and every document it refuses, each
refusal beside a control that parses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from broker.idp.metadata import MetadataError, parse_metadata
from tests.saml_metadata import (
    DS,
    ENTITY_ID,
    MD,
    b64,
    certificate,
    certificates,
    document,
    ec_key,
    entities,
    entity,
    idp_descriptor,
    key_descriptor,
    rsa_key,
)

SAML11 = "urn:oasis:names:tc:SAML:1.1:protocol"
SP = ('<md:EntityDescriptor entityID="https://sp.example.com"><md:SPSSODescriptor '
      'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/>'
      "</md:EntityDescriptor>")


def refused(text: str) -> str:
    with pytest.raises(MetadataError) as exc:
        parse_metadata(text)
    return exc.value.reason


# -- what is read -------------------------------------------------------------------------------


def test_a_minimal_entity_descriptor_is_read() -> None:
    der = certificate()
    parsed = parse_metadata(document(der))
    assert parsed.entity_id == ENTITY_ID
    assert parsed.signing_certificates == (der,)
    assert parsed.sso_redirect_url == "https://idp.example.com/sso/redirect"
    assert parsed.sso_post_url == "https://idp.example.com/sso/post"
    assert parsed.valid_until is None


def test_single_sign_on_urls_are_optional() -> None:
    parsed = parse_metadata(entity(idp_descriptor(sso=False)))
    assert (parsed.sso_redirect_url, parsed.sso_post_url) == (None, None)


def test_valid_until_is_the_earliest_that_applies() -> None:
    later, sooner = "2031-01-01T00:00:00Z", "2030-06-01T12:30:00.250+02:00"
    text = entities(entity(idp_descriptor(attributes=f' validUntil="{sooner}"'),
                           attributes=f' validUntil="{later}"'))
    parsed = parse_metadata(text)
    assert parsed.valid_until == datetime(2030, 6, 1, 10, 30, 0, 250000, tzinfo=UTC)
    assert parse_metadata(document(valid_until=later)).valid_until == \
        datetime(2031, 1, 1, tzinfo=UTC)
    # A date without a zone is UTC, as SAML's times are.
    assert parse_metadata(document(valid_until="2032-02-29T23:59:59")).valid_until == \
        datetime(2032, 2, 29, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize("value", ["tomorrow", "2030-02-30T00:00:00Z", "2030-01-01",
                                   "2030-01-01T25:00:00Z", ""])
def test_a_valid_until_that_is_not_a_date_is_refused(value: str) -> None:
    assert "validUntil of md:EntityDescriptor" in refused(document(valid_until=value) if value
                                                         else entity(attributes=' validUntil=""'))


def test_a_comment_inside_a_certificate_is_not_part_of_it() -> None:
    der = certificate()
    text = b64(der)
    inner = (f"<ds:X509Data><ds:X509Certificate>{text[:100]}<!-- a comment -->{text[100:]}"
             "</ds:X509Certificate></ds:X509Data>")
    assert parse_metadata(entity(idp_descriptor([key_descriptor(inner=inner)]))) \
        .signing_certificates == (der,)


def test_certificates_may_be_wrapped_over_lines() -> None:
    der = certificate()
    wrapped = "\n".join(b64(der)[i:i + 64] for i in range(0, len(b64(der)), 64))
    inner = f"<ds:X509Data><ds:X509Certificate>\n{wrapped}\n</ds:X509Certificate></ds:X509Data>"
    assert parse_metadata(entity(idp_descriptor([key_descriptor(inner=inner)]))) \
        .signing_certificates == (der,)


# -- the document -------------------------------------------------------------------------------


def test_a_doctype_is_refused() -> None:
    text = document()
    assert parse_metadata(text)
    evil = text.replace('<?xml version="1.0" encoding="UTF-8"?>',
                        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "entity">]>')
    assert "DTDs are not accepted" in refused(evil)


def test_a_document_that_is_not_xml_is_refused() -> None:
    assert "not well-formed XML" in refused(document()[:-10])


def test_deep_nesting_is_refused() -> None:
    def nested(depth: int) -> str:
        return f"<md:Extensions>{'<x>' * depth}{'</x>' * depth}</md:Extensions>"

    body = idp_descriptor()
    assert parse_metadata(entity(nested(20) + body))
    assert "nests deeper than 32" in refused(entity(nested(40) + body))


def test_the_root_must_be_an_entity_or_entities_descriptor() -> None:
    assert "root element is md:IDPSSODescriptor" in refused(
        idp_descriptor().replace("<md:IDPSSODescriptor",
                                 f'<md:IDPSSODescriptor xmlns:md="{MD}" xmlns:ds="{DS}"', 1))
    other = entity().replace(f'xmlns:md="{MD}"', 'xmlns:md="urn:example:not-metadata"')
    assert "root element is {urn:example:not-metadata}EntityDescriptor" in refused(other)


# -- the entity ---------------------------------------------------------------------------------


def test_an_entities_descriptor_with_one_identity_provider_is_read() -> None:
    parsed = parse_metadata(entities(SP, entity(namespaces=False)))
    assert parsed.entity_id == ENTITY_ID


def test_an_entities_descriptor_with_two_identity_providers_is_refused() -> None:
    second = entity(namespaces=False, entity_id="https://other.example.com")
    assert "holds 2 identity providers" in refused(
        entities(entity(namespaces=False), second))


def test_an_entities_descriptor_without_an_identity_provider_is_refused() -> None:
    assert "no EntityDescriptor with an IDPSSODescriptor" in refused(entities(SP))


@pytest.mark.parametrize(("entity_id", "reason"), [
    (None, "the EntityDescriptor has no entityID"),
    ("  ", "the EntityDescriptor has no entityID"),
    ("https://idp.example.com/" + "x" * 1001, "the entityID is longer than 1024 characters"),
])
def test_the_entity_id_is_required_and_bounded(entity_id: str | None, reason: str) -> None:
    assert parse_metadata(entity(entity_id="https://idp.example.com/" + "x" * 1000))
    assert refused(entity(entity_id=entity_id)) == reason


def test_an_entity_without_an_identity_provider_is_refused() -> None:
    assert refused(entity("<md:Organization/>")) == "the EntityDescriptor has no IDPSSODescriptor"


def test_the_identity_provider_must_speak_saml_2() -> None:
    assert parse_metadata(entity(idp_descriptor(protocol=f"{SAML11} "
                                                         "urn:oasis:names:tc:SAML:2.0:protocol")))
    assert "no IDPSSODescriptor supports the protocol urn:oasis:names:tc:SAML:2.0:protocol" in \
        refused(entity(idp_descriptor(protocol=SAML11)))


def test_two_saml_2_identity_providers_in_one_entity_are_refused() -> None:
    assert "more than one IDPSSODescriptor" in refused(
        entity(idp_descriptor() + idp_descriptor()))


# -- signing certificates -----------------------------------------------------------------------


def test_a_key_descriptor_without_use_signs() -> None:
    der = certificate()
    assert parse_metadata(entity(idp_descriptor([key_descriptor(der, use=None)]))) \
        .signing_certificates == (der,)


def test_encryption_keys_are_not_signing_keys() -> None:
    signing, encryption = certificate(name="signing"), certificate(name="encryption")
    parsed = parse_metadata(entity(idp_descriptor([key_descriptor(encryption, use="encryption"),
                                                   key_descriptor(signing)])))
    assert parsed.signing_certificates == (signing,)
    assert "has no signing certificate" in refused(
        entity(idp_descriptor([key_descriptor(encryption, use="encryption")])))


def test_no_key_descriptor_at_all_is_refused() -> None:
    assert "has no signing certificate" in refused(entity(idp_descriptor([])))


def test_a_use_saml_does_not_define_is_refused() -> None:
    assert 'a KeyDescriptor has use="both"' in refused(
        entity(idp_descriptor([key_descriptor(use="both")])))


def test_a_signing_key_descriptor_needs_a_certificate() -> None:
    assert "a signing KeyDescriptor has no ds:KeyInfo/ds:X509Data/ds:X509Certificate" in \
        refused(entity(idp_descriptor([key_descriptor(inner="<ds:KeyName>k</ds:KeyName>")])))


def test_a_certificate_that_is_not_base64_is_refused() -> None:
    inner = "<ds:X509Data><ds:X509Certificate>MIIB*not base64*</ds:X509Certificate></ds:X509Data>"
    assert refused(entity(idp_descriptor([key_descriptor(inner=inner)]))) == \
        "a ds:X509Certificate is not valid base64"


def test_base64_that_is_not_a_certificate_is_refused() -> None:
    inner = (f"<ds:X509Data><ds:X509Certificate>{b64(b'not a certificate' * 10)}"
             "</ds:X509Certificate></ds:X509Data>")
    assert refused(entity(idp_descriptor([key_descriptor(inner=inner)]))) == \
        "a ds:X509Certificate is not a DER-encoded X.509 certificate"


def test_two_different_certificates_in_one_key_descriptor_are_refused() -> None:
    one, two = certificates(2)
    same = (f"<ds:X509Data><ds:X509Certificate>{b64(one)}</ds:X509Certificate>"
            f"<ds:X509Certificate>{b64(one)}</ds:X509Certificate></ds:X509Data>")
    assert parse_metadata(entity(idp_descriptor([key_descriptor(inner=same)])))
    inner = (f"<ds:X509Data><ds:X509Certificate>{b64(one)}</ds:X509Certificate>"
             f"<ds:X509Certificate>{b64(two)}</ds:X509Certificate></ds:X509Data>")
    assert "a signing KeyDescriptor holds 2 different certificates" in refused(
        entity(idp_descriptor([key_descriptor(inner=inner)])))


@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1"])
def test_ec_keys_on_nist_curves_are_accepted(curve: str) -> None:
    der = certificate(ec_key(curve))
    assert parse_metadata(document(der)).signing_certificates == (der,)


def test_rsa_keys_need_2048_bits() -> None:
    assert parse_metadata(document(certificate(rsa_key(2048))))
    assert refused(document(certificate(rsa_key(1024), name="weak"))) == \
        'the signing certificate "CN=weak" has an RSA key of 1024 bits; at least 2048 are required'


def test_ec_keys_on_other_curves_are_refused() -> None:
    assert "has an EC key on the curve secp256k1; P-256, P-384 or P-521 are required" in \
        refused(document(certificate(ec_key("secp256k1"))))


def test_other_kinds_of_key_are_refused() -> None:
    dsa_der = certificate(dsa.generate_private_key(key_size=2048))
    assert "has a DSA key; RSA or EC keys are required" in refused(document(dsa_der))
    ed_der = certificate(ed25519.Ed25519PrivateKey.generate())
    assert "has a Ed25519 key; RSA or EC keys are required" in refused(document(ed_der))


def test_up_to_ten_signing_certificates_for_rollover() -> None:
    ten = certificates(10)
    assert parse_metadata(document(*ten)).signing_certificates == tuple(ten)
    assert refused(document(*certificates(11))) == \
        "the IDPSSODescriptor has 11 signing certificates; at most 10 are accepted"


def test_a_certificate_listed_twice_counts_once() -> None:
    ten = certificates(10)
    parsed = parse_metadata(document(*ten, ten[0]))
    assert parsed.signing_certificates == tuple(ten)


def test_the_key_types_the_certificates_hold_are_usable() -> None:
    from broker.idp.metadata import signing_key

    rsa_der, ec_der = certificate(), certificate(ec_key())
    assert isinstance(signing_key(rsa_der), rsa.RSAPublicKey)
    assert signing_key(ec_der).public_numbers() == ec_key().public_key().public_numbers()
