"""Attacks on AssumeRoleWithSAML, sent through boto3 to a real server, each beside its honest
control: built by the same fixture with the same parameters except the attack, and accepted.

First the signature and the document (wrapping, stripped and foreign signatures, weak
algorithms, comments, DTDs, transforms, parser bombs, encryption), then what a validly signed
response claims and where it is sent (replay, audience, recipient, destination, times, status,
roles and providers). The attacks come from tests/saml_attacks.py, the responses from the test
suite's own IdP (tests/saml_idp.py, signed by xmlsec).
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest
from lxml import etree

from tests import saml_attacks as attacks
from tests.helpers import Broker
from tests.saml_attacks import DoctypeKind, Target
from tests.saml_idp import (
    AES128_GCM,
    AES256_CBC,
    AES256_GCM,
    ATTR_SESSION_NAME,
    AWS_AUDIENCE,
    DS,
    MD5,
    RSA_1_5,
    RSA_MD5,
    RSA_OAEP,
    RSA_OAEP_MGF1P,
    RSA_SHA1,
    RSA_SHA256,
    SAML,
    SHA1,
    SHA256,
    STATUS_RESPONDER,
    IdpKey,
    Sign,
    TestIdp,
    TransformKind,
    encode,
    new_id,
    serialize,
)
from tests.saml_world import SamlWorld, issued_sessions, session_arn, trust_policy

SUBJECT = "alice@example.test"
SIGNATURE_INVALID = ("InvalidIdentityToken", "Response signature invalid", 400)
ONE_ASSERTION = ("InvalidIdentityToken",
                 "Invalid SAML response: a response must hold exactly one assertion.", 400)
NO_DTD = ("InvalidIdentityToken", "Invalid SAML response: the document declares a document "
          "type (DTDs are not accepted).", 400)
NOT_DECRYPTED = ("InvalidIdentityToken", "Invalid SAML response: the encrypted assertion could "
                 "not be decrypted.", 400)
USED = ("InvalidIdentityToken", "The SAML assertion has already been used.", 400)
NO_AUDIENCE = ("InvalidIdentityToken", "Response does not contain the required audience", 400)
NOT_YET = ("InvalidIdentityToken", "Invalid SAML response: the assertion is not valid yet.", 400)
EXPIRED = ("ExpiredTokenException",
           "The SAML assertion has expired; sign in to the identity provider again.", 400)
NOT_AUTHORIZED = ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithSAML", 403)


@pytest.fixture(scope="module")
def world(broker: Broker) -> SamlWorld:
    """A provider and one role (engineers) that its responses offer."""
    return SamlWorld.make(broker)


@pytest.fixture(scope="module")
def admins(world: SamlWorld) -> str:
    """A second role trusting the same provider, which honest responses do not offer."""
    return create_role(world, world.provider_arn)


@pytest.fixture(scope="module")
def other(broker: Broker) -> SamlWorld:
    """Another identity provider, with its own key, registered as another provider."""
    return SamlWorld.make(broker)


def fresh_name() -> str:
    """A session name no other test uses, so the audit log tells this test's sessions apart."""
    return "s" + uuid.uuid4().hex[:12]


def create_role(world: SamlWorld, provider_arn: str, *, iam: Any = None) -> str:
    """A role trusting ``provider_arn`` (in the broker's first account unless ``iam`` is
    another account's client)."""
    iam = iam or world.broker.client("iam")
    return str(iam.create_role(
        RoleName=f"role-{uuid.uuid4().hex[:8]}",
        AssumeRolePolicyDocument=trust_policy(provider_arn, world.acs_url),
    )["Role"]["Arn"])


def assert_honest(result: dict[str, Any], world: SamlWorld, name: str = "alice") -> None:
    assert result["AssumedRoleUser"]["Arn"] == session_arn(world.role_arn, name)
    assert result["Subject"] == SUBJECT


# XML Signature Wrapping ---------------------------------------------------------------------------

# XSW1 and XSW2 wrap a signed Response; the others a signed assertion.
XSW_SIGNS: dict[str, Sign] = {name: "response" if name in ("xsw1", "xsw2") else "assertion"
                              for name in attacks.XSW}


def test_the_wrapping_target_is_within_reach_when_honestly_offered(
        world: SamlWorld, admins: str) -> None:
    # Without this, the refusals below could come from the admins role being out of reach.
    result = world.assume(world.response(roles=[(admins, world.provider_arn)]), role_arn=admins)
    assert result["AssumedRoleUser"]["Arn"] == session_arn(admins, "alice")


@pytest.mark.parametrize("evil", ["role", "session-name", "name-id"])
@pytest.mark.parametrize("variant", sorted(attacks.XSW))
def test_signature_wrapping_is_refused(world: SamlWorld, admins: str, variant: str,
                                       evil: str) -> None:
    name = fresh_name()
    change, role_arn = {
        "role": (attacks.evil_role(admins, world.provider_arn), admins),
        "session-name": (attacks.evil_session_name("mallory-" + name), world.role_arn),
        "name-id": (attacks.evil_name_id("admin@example.test"), world.role_arn),
    }[evil]
    sign = XSW_SIGNS[variant]
    assert_honest(world.assume(world.response(sign=sign, session_name=name)), world, name)
    wrapped = attacks.XSW[variant](world.response(sign=sign, session_name=name), change)
    assert world.refused(wrapped, role_arn=role_arn) == ONE_ASSERTION
    issued = issued_sessions(world.broker)
    assert session_arn(world.role_arn, name) in issued  # the control's: the log is read
    assert session_arn(admins, name) not in issued
    assert session_arn(world.role_arn, "mallory-" + name) not in issued


# Signatures removed, emptied, or made by someone else ---------------------------------------------

STRIPPED: dict[str, tuple[Sign, Target, bool]] = {
    # name: (what the IdP signed, which signatures the attacker touches, emptied rather than
    # removed)
    "assertion-stripped": ("assertion", "assertion", False),
    "response-stripped": ("response", "response", False),
    "both-stripped": ("both", "all", False),
    "assertion-stripped-under-a-signed-response": ("both", "assertion", False),
    "assertion-value-emptied": ("assertion", "assertion", True),
    "response-value-emptied": ("response", "response", True),
}


@pytest.mark.parametrize("case", sorted(STRIPPED))
def test_a_removed_or_emptied_signature_is_refused(world: SamlWorld, case: str) -> None:
    sign, which, emptied = STRIPPED[case]
    attack = attacks.empty_signature_value if emptied else attacks.strip_signature
    assert_honest(world.assume(world.response(sign=sign)), world)
    assert world.refused(attack(world.response(sign=sign), which)) == SIGNATURE_INVALID


@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_an_element_carrying_two_signatures_is_refused(world: SamlWorld, sign: Sign) -> None:
    # Not a server error: the response is refused as badly signed, as any other.
    assert_honest(world.assume(world.response(sign=sign)), world)
    assert world.refused(attacks.repeat_signature(world.response(sign=sign), sign)) == \
        SIGNATURE_INVALID


def test_a_response_signed_twice_still_stands_on_the_assertions_signature(
        world: SamlWorld) -> None:
    # Beside the stripping attacks: without the Response's signature, the assertion's own
    # signature still vouches for everything that is read.
    stripped = attacks.strip_signature(world.response(sign="both"), "response")
    assert_honest(world.assume(stripped), world)


@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_a_certificate_in_key_info_is_not_trusted(world: SamlWorld, sign: Sign) -> None:
    attacker = IdpKey.generate("attacker.example.test")
    assert_honest(world.assume(world.response(sign=sign)), world)
    forged = attacks.replace_key_info(world.response(sign=sign), attacker)
    assert world.refused(forged) == SIGNATURE_INVALID


def test_another_providers_key_does_not_sign_for_this_issuer(world: SamlWorld,
                                                             other: SamlWorld) -> None:
    # The other key is a good key, for its own provider.
    assert other.assume(other.response())["Issuer"] == other.idp.entity_id
    assert_honest(world.assume(world.response()), world)
    assert world.refused(world.response(signing_key=other.idp.key)) == SIGNATURE_INVALID


WEAK = {
    "rsa-sha1/sha1": (RSA_SHA1, SHA1),
    "rsa-sha256/sha1": (RSA_SHA256, SHA1),
    "rsa-sha1/sha256": (RSA_SHA1, SHA256),
    "rsa-md5/md5": (RSA_MD5, MD5),
}


@pytest.mark.parametrize("sign", ["assertion", "response"])
@pytest.mark.parametrize("weak", sorted(WEAK))
def test_weak_signature_and_digest_algorithms_are_refused(world: SamlWorld, weak: str,
                                                          sign: Sign) -> None:
    method, digest = WEAK[weak]
    strong = world.response(sign=sign, signature_algorithm=RSA_SHA256, digest_algorithm=SHA256)
    assert_honest(world.assume(strong), world)
    xml = world.response(sign=sign, signature_algorithm=method, digest_algorithm=digest)
    assert world.refused(xml) == SIGNATURE_INVALID


def test_dsa_is_refused(broker: Broker, world: SamlWorld) -> None:
    # The control: an IdP with an EC key is registered and its ECDSA signatures are accepted.
    ec_idp = TestIdp("https://ec-idp.example.test/metadata",
                     key=IdpKey.generate("ec-idp.example.test", kind="ec"))
    ec_world = SamlWorld.make(broker, idp=ec_idp)
    assert ec_world.assume(ec_world.response())["Issuer"] == ec_idp.entity_id
    # A DSA key cannot be trusted: its certificate is refused in the metadata ...
    dsa_key = IdpKey.generate("dsa-idp.example.test", kind="dsa")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        SamlWorld.make(broker, idp=TestIdp("https://dsa-idp.example.test/metadata", key=dsa_key))
    assert exc.value.response["Error"] == {
        "Type": "Sender", "Code": "InvalidInput",
        "Message": 'Could not parse metadata: the signing certificate "CN=dsa-idp.example.test" '
                   "has a DSA key; RSA or EC keys are required"}
    # ... and a dsa-sha1 signature is refused.
    assert world.refused(world.response(signing_key=dsa_key)) == SIGNATURE_INVALID


@pytest.mark.parametrize("kind", ["xslt", "xpath"])
def test_xslt_and_xpath_transforms_are_refused(world: SamlWorld, kind: TransformKind) -> None:
    # Re-signed by the IdP's own key: only the transform is at fault.
    assert_honest(world.assume(world.response()), world)
    xml = attacks.with_transform(world.response(), kind, world.idp.key)
    assert world.refused(xml) == SIGNATURE_INVALID


# Comment injection --------------------------------------------------------------------------------

COMMENTED = {
    # where: (the signed value, the text before the comment)
    "name-id": ("admin@example.test.evil.test", "admin@example.test"),
    "session-name": ("admin.evil.test", "admin"),
}


@pytest.mark.parametrize("sign", ["assertion", "response"])
@pytest.mark.parametrize("where", sorted(COMMENTED))
def test_a_comment_never_cuts_a_signed_value_short(world: SamlWorld, where: str,
                                                   sign: Sign) -> None:
    signed, before = COMMENTED[where]
    if where == "name-id":
        changes: dict[str, Any] = {"name_id": signed}
        attribute = None
    else:
        changes = {"session_name": signed}
        attribute = ATTR_SESSION_NAME

    def identity(result: dict[str, Any]) -> str:
        if where == "name-id":
            return str(result["Subject"])
        return str(result["AssumedRoleUser"]["Arn"]).rsplit("/", 1)[1]

    control = world.assume(world.response(sign=sign, **changes))
    injected = attacks.inject_comment(world.response(sign=sign, **changes), before,
                                      signed[len(before):], attribute=attribute)
    # Still signed, so accepted: as the whole signed value, never as the text before the comment.
    assert identity(world.assume(injected)) == identity(control) == signed
    if where == "session-name":
        issued = issued_sessions(world.broker)
        assert session_arn(world.role_arn, signed) in issued
        assert session_arn(world.role_arn, before) not in issued


# Document types and parser bombs ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["internal", "external", "parameter", "billion-laughs"])
def test_a_document_type_is_refused(world: SamlWorld, tmp_path: Path,
                                    kind: DoctypeKind) -> None:
    # The internal entity's value, and the file the external entities name, are the NameID's
    # signed text: a parser that expanded or read them would answer otherwise (the general
    # entities would rebuild the signed document, to be accepted; the parameter entity would
    # fail to parse as a DTD).
    name_file = tmp_path / "name-id.txt"
    name_file.write_text(SUBJECT)
    assert_honest(world.assume(world.response()), world)
    xml = attacks.with_doctype(world.response(), kind, system=name_file.as_uri())
    assert world.refused(xml) == NO_DTD


def utf16(xml: bytes) -> bytes:
    return xml.decode().replace("encoding='UTF-8'", "encoding='UTF-16'").replace(
        'encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")


def test_a_document_type_in_utf16_is_refused(world: SamlWorld) -> None:
    # "<!DOCTYPE" is not in the bytes: the check after parsing must catch it.
    assert_honest(world.assume(utf16(world.response())), world)
    xml = utf16(attacks.with_doctype(world.response(), "internal"))
    assert b"<!DOCTYPE" not in xml
    assert world.refused(xml) == NO_DTD


def test_a_deeply_nested_document_is_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(attacks.deeply_nested(world.response(), 10)), world)
    assert world.refused(attacks.deeply_nested(world.response(), 40)) == (
        "InvalidIdentityToken",
        "Invalid SAML response: the document nests deeper than 24 elements.", 400)


def test_a_document_of_too_many_elements_is_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(attacks.many_elements(world.response(), 1_000)), world)
    wide = attacks.many_elements(world.response(), 2_100)
    assert len(encode(wide)) < 30_000  # far below any size limit
    assert world.refused(wide) == (
        "InvalidIdentityToken",
        "Invalid SAML response: the document has more than 2000 elements.", 400)


LONG_NAMESPACE = ("InvalidIdentityToken", "Invalid SAML response: the document declares a "
                  "namespace longer than 512 characters.", 400)


def test_a_namespace_uri_beyond_the_limit_is_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(attacks.namespace_bomb(world.response(), 512, 1_000)), world)
    assert world.refused(attacks.namespace_bomb(world.response(), 513, 1_000)) == \
        LONG_NAMESPACE


def test_a_canonicalization_bomb_under_a_valid_signed_info_is_refused(world: SamlWorld) -> None:
    """The reviewed attack: any signed response of a trusted provider, padded with one long
    namespace URI that 1,800 elements use. Its SignedInfo still verifies, so the broker would
    canonicalize the Response (to over 100 MB) before finding its digest wrong: it is refused
    while parsing, before any signature is looked at."""
    assert_honest(world.assume(world.response(sign="response")), world)
    # At the limit, the padding reaches the signature check, which canonicalizes it.
    at_limit = attacks.namespace_bomb(world.response(sign="response"), 512, 1_800)
    assert world.refused(at_limit) == SIGNATURE_INVALID
    bomb = attacks.namespace_bomb(world.response(sign="response"), 55_000, 1_800)
    assert len(encode(bomb)) <= 100_000  # within AssumeRoleWithSAML's limit, and LIMITS'
    assert world.refused(bomb) == LONG_NAMESPACE


def test_more_namespaces_in_scope_than_the_limit_are_refused(world: SamlWorld) -> None:
    # Thousands of declarations at the root make inclusive canonicalization take seconds.
    assert_honest(world.assume(attacks.namespace_bomb(world.response(), 12, 1,
                                                      declarations=50)), world)
    wide = attacks.namespace_bomb(world.response(sign="response"), 12, 1, declarations=2_000)
    assert len(encode(wide)) <= 100_000
    assert world.refused(wide) == (
        "InvalidIdentityToken", "Invalid SAML response: the document has more than 64 "
        "namespaces in scope at one element.", 400)


def test_a_response_beyond_the_parameter_limit_is_refused(world: SamlWorld) -> None:
    # 75,000 bytes are exactly 100,000 base64 characters, AssumeRoleWithSAML's limit: read.
    at_limit = attacks.oversized(world.response(), 75_000)
    assert len(encode(at_limit)) == 100_000
    assert_honest(world.assume(at_limit), world)
    beyond = attacks.oversized(world.response(), 75_003)
    assert len(encode(beyond)) == 100_004
    code, message, status = world.refused(beyond)
    assert (code, status) == ("ValidationError", 400)
    # AWS's model marks the assertion sensitive: the message never repeats it.
    assert message == ("1 validation error detected: Value at 'sAMLAssertion' failed to "
                       "satisfy constraint: Member must have length less than or equal to "
                       "100000")


def test_a_response_whose_canonical_form_outgrows_the_limit_is_read(world: SamlWorld) -> None:
    """The limit is the input's: a response of many roles within AWS's 100,000 characters is
    read although its signed assertion's canonical form, which the broker parses again to
    read what the signature covers, is longer than 75,000 bytes."""
    account = world.role_arn.split(":")[4]
    many = [(f"arn:aws:iam::{account}:role/role-number-{i:04d}", world.provider_arn)
            for i in range(369)] + [(world.role_arn, world.provider_arn)]
    xml = world.response(roles=many)
    assertion = etree.fromstring(xml).find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    assert assertion is not None
    canonical = etree.tostring(assertion, method="c14n", exclusive=True)
    assert len(encode(xml)) <= 100_000 and len(canonical) > 75_000  # the case
    assert_honest(world.assume(xml), world)


# Documents that are not one SAML response ---------------------------------------------------------


def test_the_assertion_alone_is_not_a_response(world: SamlWorld) -> None:
    assert_honest(world.assume(world.response()), world)
    assertion = etree.fromstring(world.response()).find(f"{{{SAML}}}Assertion")
    assert assertion is not None
    assert world.refused(serialize(assertion)) == (
        "InvalidIdentityToken",
        "Invalid SAML response: the document is not a SAML 2.0 Response.", 400)


def test_two_assertions_are_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(world.response()), world)
    assert world.refused(world.response(two_assertions=True)) == ONE_ASSERTION


def test_what_is_not_base64_or_not_xml_is_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(encode(world.response())), world)
    assert world.refused("%%%% not base64 %%%%") == (
        "InvalidIdentityToken", "The SAML response is not valid base64.", 400)
    code, message, status = world.refused(encode(b"This is not XML at all."))
    assert (code, status) == ("InvalidIdentityToken", 400)
    # libxml2's own words follow, in parentheses.
    assert message.startswith("Invalid SAML response: the document is not well-formed XML (")


# Encryption ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp_certificate(broker: Broker) -> bytes:
    """The broker's encryption certificate (DER), as an IdP imports it from the SP metadata."""
    response = httpx.get(f"{broker.url}/saml/metadata")
    response.raise_for_status()
    text = etree.fromstring(response.content).findtext(f".//{{{DS}}}X509Certificate")
    assert text
    return base64.b64decode(text)


@pytest.mark.parametrize(("transport", "cipher"), [
    (RSA_OAEP_MGF1P, AES256_CBC), (RSA_OAEP_MGF1P, AES128_GCM), (RSA_OAEP, AES256_GCM),
])
def test_an_encrypted_assertion_must_still_be_signed(world: SamlWorld, sp_certificate: bytes,
                                                     transport: str, cipher: str) -> None:
    # Anyone can encrypt to the broker's public certificate: encryption proves no origin.
    encrypted = {"encrypt_to": sp_certificate, "key_transport": transport,
                 "data_cipher": cipher}
    assert_honest(world.assume(world.response(sign="assertion", **encrypted)), world)
    # The Response's signature over the ciphertext covers the assertion too.
    assert_honest(world.assume(world.response(sign="response", **encrypted)), world)
    assert world.refused(world.response(sign=None, **encrypted)) == SIGNATURE_INVALID


def test_rsa_1_5_key_transport_is_refused(world: SamlWorld, sp_certificate: bytes) -> None:
    control = world.response(encrypt_to=sp_certificate, key_transport=RSA_OAEP_MGF1P)
    assert_honest(world.assume(control), world)
    xml = world.response(encrypt_to=sp_certificate, key_transport=RSA_1_5)
    assert world.refused(xml) == NOT_DECRYPTED


# Replay -------------------------------------------------------------------------------------------


def test_an_assertion_is_used_once(world: SamlWorld) -> None:
    xml = world.response()
    assert_honest(world.assume(xml), world)
    assert world.refused(xml) == USED


def test_a_used_assertion_in_a_new_response_is_still_used(world: SamlWorld) -> None:
    # The assertion alone is signed: the Response around it may be remade at will.
    xml = world.response()
    assert_honest(world.assume(xml), world)
    root = etree.fromstring(xml)
    root.set("ID", new_id())
    assert world.refused(serialize(root)) == USED


def test_an_assertion_sent_twenty_times_at_once_is_used_once(world: SamlWorld) -> None:
    name = fresh_name()
    assertion = encode(world.response(session_name=name))
    clients = [world.sts() for _ in range(20)]
    start = threading.Barrier(len(clients))
    outcomes: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def send(client: Any) -> None:
        start.wait()
        try:
            result = client.assume_role_with_saml(
                RoleArn=world.role_arn, PrincipalArn=world.provider_arn, SAMLAssertion=assertion)
            outcome: tuple[str, ...] = ("issued", result["AssumedRoleUser"]["Arn"])
        except botocore.exceptions.ClientError as exc:
            error = exc.response["Error"]
            outcome = (error["Code"], error["Message"])
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == sorted(
        [("issued", session_arn(world.role_arn, name))] + [USED[:2]] * 19)
    assert issued_sessions(world.broker).count(session_arn(world.role_arn, name)) == 1


# Audience, recipient, destination, subject confirmation -------------------------------------------


AUDIENCES: dict[str, Callable[[str], str | None]] = {
    "another-sp": lambda sp: "https://other-sp.example.test/saml/metadata",
    "aws": lambda sp: AWS_AUDIENCE,  # not this broker's unless saml.accept_aws_audience
    "prefix": lambda sp: sp[:-1],
    "extended": lambda sp: sp + "/evil",
    "missing": lambda sp: None,
}


@pytest.mark.parametrize("case", sorted(AUDIENCES))
def test_a_response_for_another_audience_is_refused(world: SamlWorld, case: str) -> None:
    assert_honest(world.assume(world.response(audience=world.audience)), world)
    xml = world.response(audience=AUDIENCES[case](world.audience))
    assert world.refused(xml) == NO_AUDIENCE


RECIPIENTS: dict[str, Callable[[str], str | None]] = {
    "extended": lambda acs: acs + "/evil",
    "acs-in-query": lambda acs: "https://evil.test/?" + acs,
    "prefix": lambda acs: acs[:-1],
    "missing": lambda acs: None,
}


@pytest.mark.parametrize("case", sorted(RECIPIENTS))
def test_a_recipient_other_than_the_acs_url_is_refused(world: SamlWorld, case: str) -> None:
    assert_honest(world.assume(world.response(recipient=world.acs_url)), world)
    xml = world.response(recipient=RECIPIENTS[case](world.acs_url))
    assert world.refused(xml) == (
        "InvalidIdentityToken", "Invalid SAML response: the Recipient is not this service "
        "provider's assertion consumer service URL.", 400)


@pytest.mark.parametrize("destination", ["https://evil.test/saml", "{acs}/evil"])
def test_a_destination_other_than_the_acs_url_is_refused(world: SamlWorld,
                                                         destination: str) -> None:
    assert_honest(world.assume(world.response(destination=world.acs_url)), world)
    xml = world.response(destination=destination.format(acs=world.acs_url))
    assert world.refused(xml) == (
        "InvalidIdentityToken", "Invalid SAML response: the Destination is not this service "
        "provider's assertion consumer service URL.", 400)


def test_a_subject_confirmation_without_not_on_or_after_is_refused(world: SamlWorld) -> None:
    until = datetime.now(UTC) + timedelta(minutes=5)
    assert_honest(world.assume(world.response(subject_not_on_or_after=until)), world)
    assert world.refused(world.response(subject_not_on_or_after=None)) == (
        "InvalidIdentityToken",
        "Invalid SAML response: SubjectConfirmationData has no NotOnOrAfter.", 400)


def test_several_subject_confirmations_are_refused(world: SamlWorld) -> None:
    assert_honest(world.assume(world.response(extra_subject_confirmations=0)), world)
    assert world.refused(world.response(extra_subject_confirmations=1)) == (
        "InvalidIdentityToken",
        "Invalid SAML response: the Subject must have exactly one SubjectConfirmation.", 400)


@pytest.mark.parametrize(("part", "message"), [
    ("Issuer", "expected exactly an Issuer."),
    ("Subject", "expected exactly a Subject."),
    ("Subject/NameID", "expected exactly a NameID."),
    ("Conditions", "the assertion must have one Conditions."),
    ("Subject/SubjectConfirmation/SubjectConfirmationData",
     "expected exactly a SubjectConfirmationData."),
])
def test_a_part_written_twice_is_refused(world: SamlWorld, part: str, message: str) -> None:
    # Signed by the identity provider as it stands: which of the two to believe is a question
    # the broker does not answer; the copy names someone else.
    assert_honest(world.assume(world.response(repeated=())), world)
    assert world.refused(world.response(repeated=[part])) == (
        "InvalidIdentityToken", f"Invalid SAML response: {message}", 400)


def test_a_response_issuer_other_than_the_assertions_is_refused(world: SamlWorld) -> None:
    # The assertion is signed and names this provider; the Response around it names another.
    assert_honest(world.assume(world.response(response_issuer=True)), world)
    xml = world.response(response_issuer="https://other-idp.example.test/metadata")
    assert world.refused(xml) == (
        "InvalidIdentityToken",
        "Invalid SAML response: the Response and the Assertion have different issuers.", 400)


# Times, to the clock skew -------------------------------------------------------------------------

# Outside by this much, or inside by this much: more than the seconds SAML's times drop, and
# than a request takes.
MARGIN = timedelta(seconds=5)


def skew(world: SamlWorld) -> timedelta:
    return timedelta(seconds=world.broker.settings.saml.clock_skew_seconds)


def test_not_before_is_honoured_to_the_clock_skew(world: SamlWorld) -> None:
    now = datetime.now(UTC)
    inside = world.response(now=now, not_before=now + skew(world) - MARGIN)
    assert_honest(world.assume(inside), world)
    beyond = world.response(now=now, not_before=now + skew(world) + MARGIN)
    assert world.refused(beyond) == NOT_YET



def test_an_assertion_issued_in_the_future_is_not_valid_yet(world: SamlWorld) -> None:
    """IssueInstant is honoured as NotBefore is (an assertion without NotBefore included): no
    assertion is accepted before its issue, less the skew, the moment from which the broker
    can tell whether a store that lost its data had seen it (EphemeralStore.spend)."""
    issued = datetime.now(UTC) + skew(world)
    inside = world.response(now=issued - MARGIN, not_before=None)
    assert_honest(world.assume(inside), world)
    beyond = world.response(now=issued + MARGIN, not_before=None)
    assert world.refused(beyond) == (
        "InvalidIdentityToken", "Invalid SAML response: the assertion is not valid yet "
        "(its IssueInstant is in the future).", 400)

@pytest.mark.parametrize("element", ["not_on_or_after", "subject_not_on_or_after"])
def test_not_on_or_after_is_honoured_to_the_clock_skew(world: SamlWorld, element: str) -> None:
    # Conditions' NotOnOrAfter, or the bearer confirmation's.
    now = datetime.now(UTC)
    since = {"now": now, "not_before": now - timedelta(minutes=10)}
    inside = world.response(**since, **{element: now - skew(world) + MARGIN})
    assert_honest(world.assume(inside), world)
    outside = world.response(**since, **{element: now - skew(world) - MARGIN})
    assert world.refused(outside) == EXPIRED


# The identity provider's answer -------------------------------------------------------------------


def test_a_response_that_reports_a_failure_is_rejected(world: SamlWorld) -> None:
    assert_honest(world.assume(world.response()), world)
    assert world.refused(world.response(status=STATUS_RESPONDER)) == (
        "IDPRejectedClaim", "The identity provider reported that authentication failed "
        "(status urn:oasis:names:tc:SAML:2.0:status:Responder).", 403)
    # As identity providers send refusals: unsigned, with no assertion at all.
    bare = attacks.strip_signature(world.response(status=STATUS_RESPONDER))
    root = etree.fromstring(bare)
    for assertion in root.findall("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion"):
        root.remove(assertion)
    assert world.refused(etree.tostring(root))[:2] == (
        "IDPRejectedClaim", "The identity provider reported that authentication failed "
        "(status urn:oasis:names:tc:SAML:2.0:status:Responder).")


# Roles and providers ------------------------------------------------------------------------------


def test_a_role_the_assertion_does_not_offer_is_refused(world: SamlWorld, admins: str) -> None:
    offered = world.response(roles=[(admins, world.provider_arn)])
    assert world.assume(offered, role_arn=admins)["AssumedRoleUser"]["Arn"] == \
        session_arn(admins, "alice")
    assert world.refused(world.response(), role_arn=admins) == NOT_AUTHORIZED


def test_a_role_of_another_account_is_refused(broker: Broker, world: SamlWorld) -> None:
    # A role in a second account whose trust policy names this account's provider.
    _, creds = broker.new_account()
    foreign = create_role(world, world.provider_arn, iam=broker.client("iam", creds))
    assert_honest(world.assume(world.response(roles=[(world.role_arn, world.provider_arn)])),
                  world)
    xml = world.response(roles=[(foreign, world.provider_arn)])
    assert world.refused(xml, role_arn=foreign) == NOT_AUTHORIZED


def test_a_role_paired_with_another_provider_is_refused(world: SamlWorld,
                                                        other: SamlWorld) -> None:
    # The Role attribute pairs the role with the other provider; the request names this one.
    assert_honest(world.assume(world.response(roles=[(world.role_arn, world.provider_arn)])),
                  world)
    xml = world.response(roles=[(world.role_arn, other.provider_arn)])
    assert world.refused(xml) == NOT_AUTHORIZED


def test_a_role_trusting_another_provider_is_refused(world: SamlWorld,
                                                     other: SamlWorld) -> None:
    theirs = create_role(world, other.provider_arn)
    result = other.assume(other.response(roles=[(theirs, other.provider_arn)]), role_arn=theirs)
    assert result["AssumedRoleUser"]["Arn"] == session_arn(theirs, "alice")
    xml = world.response(roles=[(theirs, world.provider_arn)])
    assert world.refused(xml, role_arn=theirs) == NOT_AUTHORIZED


def test_a_provider_whose_issuer_is_another_is_refused(broker: Broker, world: SamlWorld) -> None:
    # The twin provider trusts the very same key under another entity id: only the Issuer
    # tells the two apart.
    twin = SamlWorld.make(broker, idp=TestIdp("https://twin-idp.example.test/metadata",
                                              key=world.idp.key))
    roles = [(twin.role_arn, twin.provider_arn)]
    assert twin.assume(twin.response(roles=roles))["Issuer"] == twin.idp.entity_id
    assert twin.refused(world.response(roles=roles)) == (
        "InvalidIdentityToken", "Issuer not present in specified provider", 400)
