"""AssumeRoleWithSAML through boto3 against a real server: AWS's semantics for an honest
response from the test suite's identity provider (attacks are in test_saml_attacks.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import botocore.exceptions
import pytest
from lxml import etree

from tests.helpers import Broker, creds_of
from tests.saml_idp import (
    NAMEID_TRANSIENT,
    SAML,
    TestIdp,
    encode,
    serialize,
    sign_element,
    verify_with_xmlsec,
)
from tests.saml_world import SamlWorld, trust_policy


@pytest.fixture(scope="module")
def world(broker: Broker) -> SamlWorld:
    return SamlWorld.make(broker, roles=("engineers", "auditors"))


def test_assume_role_with_saml_issues_role_credentials(world: SamlWorld) -> None:
    result = world.assume(world.response(name_id="alice@example.test"))
    session_arn = world.role_arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
    assert result["AssumedRoleUser"]["Arn"] == f"{session_arn}/alice"
    assert result["Subject"] == "alice@example.test"
    assert result["SubjectType"] == "persistent"
    assert result["Issuer"] == world.idp.entity_id
    assert result["Audience"] == world.acs_url
    name = world.provider_arn.rsplit("/", 1)[1]
    expected = base64.b64encode(hashlib.sha1(  # AWS's definition
        f"{world.idp.entity_id}{world.account_id}/{name}".encode()).digest()).decode()
    assert result["NameQualifier"] == expected
    expires = result["Credentials"]["Expiration"]
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    # The credentials work: the caller is the role session.
    me = world.broker.client("sts", creds_of(result)).get_caller_identity()
    assert me["Arn"] == f"{session_arn}/alice"


def test_either_order_of_the_role_pair_is_accepted(world: SamlWorld) -> None:
    result = world.assume(world.response(role_value_order="provider,role"))
    assert result["AssumedRoleUser"]["Arn"].endswith("/alice")


def test_transient_subject_type_and_session_duration(world: SamlWorld) -> None:
    result = world.assume(world.response(name_id_format=NAMEID_TRANSIENT,
                                         session_duration=1800))
    assert result["SubjectType"] == "transient"
    left = result["Credentials"]["Expiration"] - datetime.now(UTC)
    assert timedelta(minutes=29) < left <= timedelta(minutes=30)
    # DurationSeconds, when given, wins over the attribute.
    result = world.assume(world.response(session_duration=1800), DurationSeconds=3600)
    assert result["Credentials"]["Expiration"] - datetime.now(UTC) > timedelta(minutes=59)


def test_duration_beyond_the_role_maximum_is_refused(world: SamlWorld) -> None:
    code, message, status = world.refused(world.response(), DurationSeconds=7201)
    assert (code, status) == ("ValidationError", 400)
    assert "MaxSessionDuration" in message
    assert world.assume(world.response(), DurationSeconds=7200)["Credentials"]


def test_session_not_on_or_after_caps_the_session(world: SamlWorld) -> None:
    cap = datetime.now(UTC) + timedelta(minutes=20)
    result = world.assume(world.response(session_not_on_or_after=cap))
    assert result["Credentials"]["Expiration"] <= cap + timedelta(seconds=1)
    assert result["Credentials"]["Expiration"] > cap - timedelta(minutes=1)


def test_session_tags_transitive_keys_and_source_identity(broker: Broker) -> None:
    world = SamlWorld.make(broker)
    role_name = world.role_arn.rsplit("/", 1)[1]
    broker.client("iam").put_role_policy(
        RoleName=role_name, PolicyName="by-tag", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalTag/team": "platform",
                                               "aws:SourceIdentity": "alice"}}}]}))
    result = world.assume(world.response(principal_tags={"team": "platform", "cost": "42"},
                                         transitive_tag_keys=["team"],
                                         source_identity="alice"))
    assert result["SourceIdentity"] == "alice"
    assert result["PackedPolicySize"] > 0
    tagged = broker.client("iam", creds_of(result))
    assert "Roles" in tagged.list_roles()
    # The control: the same role, a session without the tag.
    untagged = broker.client("iam", creds_of(world.assume(world.response())))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        untagged.list_roles()
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_tags_need_sts_tag_session_in_the_trust_policy(broker: Broker) -> None:
    world = SamlWorld.make(broker)
    iam = broker.client("iam")
    doc = json.loads(trust_policy(world.provider_arn, world.acs_url))
    doc["Statement"][0]["Action"] = "sts:AssumeRoleWithSAML"
    arn = iam.create_role(RoleName=f"no-tags-{world.provider_arn[-6:]}",
                          AssumeRolePolicyDocument=json.dumps(doc))["Role"]["Arn"]
    roles = [(arn, world.provider_arn)]
    assert world.refused(world.response(roles=roles, principal_tags={"team": "x"}),
                         role_arn=arn)[0] == "AccessDenied"
    assert world.assume(world.response(roles=roles), role_arn=arn)["Credentials"]


def test_session_policy_narrows_the_session(world: SamlWorld) -> None:
    iam = world.broker.client("iam")
    role_name = world.role_arn.rsplit("/", 1)[1]
    iam.put_role_policy(RoleName=role_name, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iam:ListRoles", "iam:ListUsers"], "Resource": "*"}]}))
    session_policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}]})
    creds = creds_of(world.assume(world.response(), Policy=session_policy))
    as_session = world.broker.client("iam", creds)
    assert "Roles" in as_session.list_roles()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        as_session.list_users()
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_trust_policy_conditions_see_the_saml_keys(world: SamlWorld) -> None:
    iam = world.broker.client("iam")
    mail = "urn:oid:0.9.2342.19200300.100.1.3"
    affiliation = "urn:oid:1.3.6.1.4.1.5923.1.1.1.1"
    strict = trust_policy(world.provider_arn, world.acs_url, **{
        "SAML:iss": world.idp.entity_id, "SAML:sub_type": "persistent",
        "SAML:mail": "alice@example.test",
        "SAML:doc": f"{world.account_id}/{world.provider_arn.rsplit('/', 1)[1]}"})
    doc = json.loads(strict)
    doc["Statement"][0]["Condition"]["ForAnyValue:StringEquals"] = {
        "SAML:edupersonaffiliation": "staff"}
    role = iam.create_role(RoleName="saml-conditions", AssumeRolePolicyDocument=json.dumps(doc))
    arn = role["Role"]["Arn"]
    roles = [(arn, world.provider_arn)]
    honest = world.response(roles=roles, attributes={
        mail: ["alice@example.test"], affiliation: ["member", "staff"]})
    assert world.assume(honest, role_arn=arn)["Credentials"]
    # The same response with a value the policy does not allow: refused.
    other = world.response(roles=roles, attributes={
        mail: ["alice@example.test"], affiliation: ["member", "student"]})
    assert world.refused(other, role_arn=arn) == (
        "AccessDenied", "Not authorized to perform sts:AssumeRoleWithSAML", 403)


def test_a_role_whose_trust_policy_does_not_name_the_provider_is_refused(
        world: SamlWorld) -> None:
    iam = world.broker.client("iam")
    arn = iam.create_role(RoleName="saml-untrusted", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{world.account_id}:root"},
            "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    xml = world.response(roles=[(arn, world.provider_arn)])
    assert world.refused(xml, role_arn=arn) == (
        "AccessDenied", "Not authorized to perform sts:AssumeRoleWithSAML", 403)


def test_role_session_name_rules(world: SamlWorld) -> None:
    assert world.refused(world.response(session_name=None)) == (
        "InvalidIdentityToken", "RoleSessionName is required in AuthnResponse", 400)
    assert world.refused(world.response(session_name="a b")) == (
        "InvalidIdentityToken",
        "RoleSessionName in AuthnResponse must match [a-zA-Z_0-9+=,.@-]{2,64}", 400)
    assert world.assume(world.response(session_name="a.b@c"))["AssumedRoleUser"]


def test_a_missing_provider_is_refused(world: SamlWorld) -> None:
    missing = world.provider_arn + "-gone"
    assert world.refused(world.response(), provider_arn=missing) == (
        "InvalidIdentityToken", "Specified provider doesn't exist", 400)


def test_an_issuer_of_another_provider_is_refused(world: SamlWorld) -> None:
    # Signed by this provider's key, but claiming another issuer.
    xml = world.response(issuer="https://other-idp.example.test/metadata")
    assert world.refused(xml) == (
        "InvalidIdentityToken", "Issuer not present in specified provider", 400)


def test_key_rollover_accepts_every_certificate_of_the_metadata(broker: Broker) -> None:
    from tests.saml_idp import IdpKey

    new_key = IdpKey.generate("rollover")
    idp = TestIdp("https://rollover.example.test/metadata", extra_certs=[new_key])
    world = SamlWorld.make(broker, idp=idp)
    assert world.assume(world.response())["Credentials"]
    assert world.assume(world.response(signing_key=new_key))["Credentials"]
    # After the metadata drops the old certificate, only the new key works.
    broker.client("iam").update_saml_provider(
        SAMLProviderArn=world.provider_arn,
        SAMLMetadataDocument=idp.metadata(certs=[new_key]))
    code, message, _ = world.refused(world.response())
    assert (code, message) == ("InvalidIdentityToken", "Response signature invalid")
    assert world.assume(world.response(signing_key=new_key))["Credentials"]


def test_audit_lines_for_issued_and_refused(world: SamlWorld) -> None:
    world.assume(world.response(name_id="audited@example.test"))
    world.refused(world.response(session_name=None))
    path = world.broker.settings.audit.path
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    saml_lines = [line for line in lines if line["eventName"] == "AssumeRoleWithSAML"]
    outcomes = {"refused" if "errorCode" in line else "issued" for line in saml_lines}
    assert outcomes == {"issued", "refused"}
    assert all("SAMLAssertion" not in json.dumps(line) for line in saml_lines)


def test_the_assertion_is_sent_base64_with_line_breaks(world: SamlWorld) -> None:
    encoded = encode(world.response())
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    assert world.assume(wrapped)["Credentials"]


# Signatures laid out as other signers lay them out: xmlsec verifies each, so must the broker.


def signed_alone(world: SamlWorld, element: str, *, whitespace_after_signature: bool = False,
                 reference_c14n: bool = True) -> bytes:
    """An honest response with one signature, on ``element``, made by ``sign_element``."""
    root = etree.fromstring(world.response(sign=None))
    if whitespace_after_signature:
        etree.indent(root)
    target = root if element == "response" else root.find(f"{{{SAML}}}Assertion")
    assert target is not None
    signature = sign_element(target, world.idp.key, reference_c14n=reference_c14n)
    if whitespace_after_signature:
        # Inserted before the whitespace that follows the Issuer rather than after it: the
        # signed content, once the enveloped-signature transform has removed the Signature
        # element (and nothing else), is the same.
        issuer = signature.getprevious()
        assert issuer is not None and issuer.tail and not signature.tail
        signature.tail, issuer.tail = issuer.tail, None
    verify_with_xmlsec(signature, world.idp.key)
    return serialize(root)


@pytest.mark.parametrize("element", ["assertion", "response"])
def test_whitespace_after_the_signature_is_signed_content(world: SamlWorld,
                                                         element: str) -> None:
    # A signer that inserts the ds:Signature into an indented document next to the Issuer
    # (DOM's insertBefore(issuer.nextSibling)) leaves the Issuer's whitespace after it.
    assert world.assume(signed_alone(world, element))["Subject"] == "alice@example.test"
    laid_out = signed_alone(world, element, whitespace_after_signature=True)
    assert world.assume(laid_out)["Subject"] == "alice@example.test"


@pytest.mark.parametrize("element", ["assertion", "response"])
def test_a_reference_without_a_canonicalization_transform_digests_canonical_xml(
        world: SamlWorld, element: str) -> None:
    # XML-DSig section 4.3.3.2: after the enveloped-signature transform, the node-set is
    # digested as Canonical XML 1.0 (inclusive); saml-core section 5.4.4 allows this Reference.
    assert world.assume(signed_alone(world, element))["Subject"] == "alice@example.test"
    inclusive = signed_alone(world, element, reference_c14n=False)
    assert world.assume(inclusive)["Subject"] == "alice@example.test"
