"""SAML providers through the IAM API (CreateSAMLProvider and the rest), driven by boto3 against a
real server: round trips, AWS's errors (code, message, status), authorization, private keys.
Every refusal has a control beside it that succeeds."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning

from broker.iam.entities import SamlProvider
from broker.iam.saml_providers import signing_keys
from tests.helpers import Broker
from tests.helpers import allow_policy as allow
from tests.saml_metadata import (
    certificate,
    certificates,
    document,
    ec_key,
    entity,
    idp_descriptor,
    key_descriptor,
    private_key_pem,
    rsa_key,
)

ClientError = botocore.exceptions.ClientError
NOTHING_TO_UPDATE = ("Unable to update identity provider. No updates are defined for metadata or "
                     "encryption assertion.")
REQUIRED_WITHOUT_KEY = ("Unable to set assertion encryption mode to Required because no private "
                        "key is provided.")


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def unique(prefix: str = "idp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def account_iam(broker: Broker) -> tuple[str, Any]:
    """A fresh account (its listings hold only what the test makes) and its root's client."""
    account_id, root = broker.new_account()
    return account_id, broker.client("iam", root)


def create(iam: Any, name: str | None = None, metadata: str | None = None, **params: Any) -> str:
    created = iam.create_saml_provider(Name=name or unique(), **params,
                                       SAMLMetadataDocument=metadata or document())
    return str(created["SAMLProviderArn"])


def new_rsa_pem(bits: int = 2048) -> tuple[str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private_key_pem(key), key


def sized(length: int) -> str:
    """A valid metadata document of exactly ``length`` characters (EC keys keep it short)."""
    text = entity(idp_descriptor([key_descriptor(certificate(ec_key()))], sso=False))
    pad = length - len(text) - len("<!---->")
    assert pad >= 0, len(text)
    return f"{text}<!--{'x' * pad}-->"


# -- round trips --------------------------------------------------------------------------------


def test_create_get_list_and_delete(broker: Broker) -> None:
    account, iam = account_iam(broker)
    metadata = document()
    name = unique()
    created = iam.create_saml_provider(Name=name, SAMLMetadataDocument=metadata,
                                       Tags=[{"Key": "team", "Value": "blue"},
                                             {"Key": "cost", "Value": "42"}])
    provider_arn = created["SAMLProviderArn"]
    assert provider_arn == f"arn:aws:iam::{account}:saml-provider/{name}"
    assert created["Tags"] == [{"Key": "cost", "Value": "42"}, {"Key": "team", "Value": "blue"}]

    got = iam.get_saml_provider(SAMLProviderArn=provider_arn)
    assert re.fullmatch(r"[A-Z0-9]{22,64}", got["SAMLProviderUUID"])
    assert got["SAMLMetadataDocument"] == metadata
    assert got["AssertionEncryptionMode"] == "Allowed"
    assert got["PrivateKeyList"] == []
    assert got["Tags"] == [{"Key": "cost", "Value": "42"}, {"Key": "team", "Value": "blue"}]
    created_at: datetime = got["CreateDate"]
    assert abs((created_at - datetime.now(UTC)).total_seconds()) < 60
    # No validUntil in the metadata: a hundred years on, as AWS answers.
    assert got["ValidUntil"] == created_at.replace(year=created_at.year + 100)

    listed = iam.list_saml_providers()["SAMLProviderList"]
    assert listed == [{"Arn": provider_arn, "ValidUntil": got["ValidUntil"],
                       "CreateDate": created_at}]

    iam.delete_saml_provider(SAMLProviderArn=provider_arn)
    assert iam.list_saml_providers()["SAMLProviderList"] == []
    with pytest.raises(ClientError) as info:
        iam.get_saml_provider(SAMLProviderArn=provider_arn)
    assert error_of(info) == ("NoSuchEntity", f"Manifest not found for arn {provider_arn}", 404)


def test_get_without_tags_answers_empty_lists(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    created = iam.create_saml_provider(Name=unique(), SAMLMetadataDocument=document())
    assert "Tags" not in created  # as AWS answers a CreateSAMLProvider without tags
    got = iam.get_saml_provider(SAMLProviderArn=provider_arn)
    assert (got["Tags"], got["PrivateKeyList"]) == ([], [])


def test_valid_until_comes_from_the_metadata(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, metadata=document(valid_until="2031-05-06T07:08:09Z"))
    expected = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert iam.get_saml_provider(SAMLProviderArn=provider_arn)["ValidUntil"] == expected
    assert iam.list_saml_providers()["SAMLProviderList"][0]["ValidUntil"] == expected


def test_update_replaces_the_metadata(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    before = iam.get_saml_provider(SAMLProviderArn=provider_arn)
    replacement = document(certificate(name="rolled-over"), entity_id="https://new.example.com",
                           valid_until="2030-01-01T00:00:00Z")
    updated = iam.update_saml_provider(SAMLProviderArn=provider_arn,
                                       SAMLMetadataDocument=replacement)
    assert updated["SAMLProviderArn"] == provider_arn
    after = iam.get_saml_provider(SAMLProviderArn=provider_arn)
    assert after["SAMLMetadataDocument"] == replacement
    assert after["ValidUntil"] == datetime(2030, 1, 1, tzinfo=UTC)
    assert (after["SAMLProviderUUID"], after["CreateDate"]) == \
        (before["SAMLProviderUUID"], before["CreateDate"])
    found = find(broker, provider_arn)
    assert found is not None and found.entity_id == "https://new.example.com"


def test_an_update_that_changes_nothing_is_refused(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn)
    assert error_of(info) == ("InvalidInput", NOTHING_TO_UPDATE, 400)
    # the control: naming one thing to change is enough
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AssertionEncryptionMode="Allowed")


def test_tags_round_trip_in_pages(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, Tags=[{"Key": "a", "Value": "1"}])
    iam.tag_saml_provider(SAMLProviderArn=provider_arn,
                          Tags=[{"Key": "A", "Value": "2"}, {"Key": "b", "Value": "3"},
                                {"Key": "c", "Value": "4"}])
    first = iam.list_saml_provider_tags(SAMLProviderArn=provider_arn, MaxItems=2)
    assert first["Tags"] == [{"Key": "A", "Value": "2"}, {"Key": "b", "Value": "3"}]
    assert first["IsTruncated"] is True
    rest = iam.list_saml_provider_tags(SAMLProviderArn=provider_arn, Marker=first["Marker"])
    assert rest["Tags"] == [{"Key": "c", "Value": "4"}] and rest["IsTruncated"] is False
    iam.untag_saml_provider(SAMLProviderArn=provider_arn, TagKeys=["b", "missing"])
    assert iam.get_saml_provider(SAMLProviderArn=provider_arn)["Tags"] == \
        [{"Key": "A", "Value": "2"}, {"Key": "c", "Value": "4"}]


def test_tag_keys_are_unique_regardless_of_case(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    with pytest.raises(ClientError) as info:
        iam.tag_saml_provider(SAMLProviderArn=provider_arn,
                              Tags=[{"Key": "k", "Value": "1"}, {"Key": "K", "Value": "2"}])
    assert error_of(info) == ("InvalidInput", "Duplicate tag keys found. Please note that Tag "
                              "keys are case insensitive.", 400)
    iam.tag_saml_provider(SAMLProviderArn=provider_arn, Tags=[{"Key": "k", "Value": "1"}])


def test_at_most_fifty_tags(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(49)])
    iam.tag_saml_provider(SAMLProviderArn=provider_arn, Tags=[{"Key": "k49", "Value": "v"}])
    with pytest.raises(ClientError) as info:
        iam.tag_saml_provider(SAMLProviderArn=provider_arn, Tags=[{"Key": "k50", "Value": "v"}])
    assert error_of(info) == ("LimitExceeded", "Cannot exceed quota for TagsPerEntity: 50", 409)


# -- AWS's errors -------------------------------------------------------------------------------


def test_every_action_on_a_missing_provider_is_no_such_entity(broker: Broker) -> None:
    account, iam = account_iam(broker)
    existing = create(iam)
    missing = f"arn:aws:iam::{account}:saml-provider/{unique('missing')}"
    actions = {
        "get": lambda a: iam.get_saml_provider(SAMLProviderArn=a),
        "update": lambda a: iam.update_saml_provider(SAMLProviderArn=a,
                                                     AssertionEncryptionMode="Allowed"),
        "tag": lambda a: iam.tag_saml_provider(SAMLProviderArn=a,
                                               Tags=[{"Key": "k", "Value": "v"}]),
        "untag": lambda a: iam.untag_saml_provider(SAMLProviderArn=a, TagKeys=["k"]),
        "list tags": lambda a: iam.list_saml_provider_tags(SAMLProviderArn=a),
        "delete": lambda a: iam.delete_saml_provider(SAMLProviderArn=a),
    }
    for what, action in actions.items():
        with pytest.raises(ClientError) as info:
            action(missing)
        assert error_of(info) == ("NoSuchEntity", f"Manifest not found for arn {missing}",
                                  404), what
        action(existing)  # the control (delete last)


@pytest.mark.parametrize("shape", ["arn:aws:iam::{account}:role/{name}",
                                   "arn:aws:iam::{account}:saml-provider/a/{name}",
                                   "arn:aws:sts::{account}:saml-provider/{name}",
                                   "not-an-arn-at-all-{name}"])
def test_an_arn_that_names_no_provider_is_no_such_entity(broker: Broker, shape: str) -> None:
    account, iam = account_iam(broker)
    name = unique()
    create(iam, name)
    iam.get_saml_provider(SAMLProviderArn=f"arn:aws:iam::{account}:saml-provider/{name}")
    wrong = shape.format(account=account, name=name)
    with pytest.raises(ClientError) as info:
        iam.get_saml_provider(SAMLProviderArn=wrong)
    assert error_of(info) == ("NoSuchEntity", f"Manifest not found for arn {wrong}", 404)


def test_another_account_sees_none_of_them(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    iam.get_saml_provider(SAMLProviderArn=provider_arn)
    _, other = account_iam(broker)
    assert other.list_saml_providers()["SAMLProviderList"] == []
    with pytest.raises(ClientError) as info:
        other.get_saml_provider(SAMLProviderArn=provider_arn)
    assert error_of(info) == ("NoSuchEntity", f"Manifest not found for arn {provider_arn}", 404)
    with pytest.raises(ClientError) as info:
        other.delete_saml_provider(SAMLProviderArn=provider_arn)
    assert error_of(info)[0] == "NoSuchEntity"
    iam.get_saml_provider(SAMLProviderArn=provider_arn)  # still there


def test_names_are_unique_regardless_of_case(broker: Broker) -> None:
    account, iam = account_iam(broker)
    name = unique("Okta")
    create(iam, name)
    with pytest.raises(ClientError) as info:
        create(iam, name.lower())
    assert error_of(info) == ("EntityAlreadyExists",
                              f"Provider with name {name.lower()} already exists.", 409)
    create(iam, name + "-2")  # the control: another name is free
    # The name as created is kept; an ARN in another case still finds it.
    got = iam.get_saml_provider(SAMLProviderArn=f"arn:aws:iam::{account}:saml-provider/"
                                                f"{name.lower()}")
    assert got["SAMLProviderUUID"]


def test_an_account_holds_at_most_100_providers(broker: Broker) -> None:
    account, iam = account_iam(broker)
    metadata = document()
    for i in range(100):
        create(iam, f"idp-{i:03d}", metadata)
    with pytest.raises(ClientError) as info:
        create(iam, "idp-100", metadata)
    assert error_of(info) == ("LimitExceeded",
                              "Cannot exceed quota for SAMLProvidersPerAccount: 100", 409)
    iam.delete_saml_provider(SAMLProviderArn=f"arn:aws:iam::{account}:saml-provider/idp-000")
    create(iam, "idp-100", metadata)  # the control: room again
    assert len(iam.list_saml_providers()["SAMLProviderList"]) == 100


def test_metadata_of_999_characters_is_a_validation_error(broker: Broker) -> None:
    _, root = broker.new_account()
    iam = broker.client("iam", root)
    unchecked = broker.client("iam", root, validate=False)  # boto3 would refuse it itself
    short = sized(999)
    with pytest.raises(ClientError) as info:
        unchecked.create_saml_provider(Name=unique(), SAMLMetadataDocument=short)
    code, message, status = error_of(info)
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("1 validation error detected: Value '")
    assert message.endswith("' at 'sAMLMetadataDocument' failed to satisfy constraint: Member "
                            "must have length greater than or equal to 1000")
    create(iam, metadata=sized(1000))  # the control


def test_a_doctype_in_metadata_is_invalid_input(broker: Broker) -> None:
    _, iam = account_iam(broker)
    metadata = document()
    create(iam, metadata=metadata)  # the control
    prolog = '<?xml version="1.0" encoding="UTF-8"?>'
    for declaration in ('<!DOCTYPE md:EntityDescriptor [<!ENTITY idp "https://evil.example">]>',
                        '<!DOCTYPE md:EntityDescriptor SYSTEM "http://evil.example/x.dtd">'):
        evil = metadata.replace(prolog, prolog + declaration)
        with pytest.raises(ClientError) as info:
            create(iam, metadata=evil)
        assert error_of(info) == ("InvalidInput", "Could not parse metadata: the document "
                                  "declares a document type (DTDs are not accepted)", 400)


@pytest.mark.parametrize(("metadata", "reason"), [
    ("<md:EntityDescriptor " + "x" * 1000, "the document is not well-formed XML"),
    (entity(idp_descriptor([key_descriptor(use="encryption")])) + " " * 600,
     "the IDPSSODescriptor has no signing certificate"),
    (document(certificate(rsa_key(1024), name="weak")),
     'the signing certificate "CN=weak" has an RSA key of 1024 bits'),
])
def test_unusable_metadata_is_invalid_input(broker: Broker, metadata: str, reason: str) -> None:
    _, iam = account_iam(broker)
    with pytest.raises(ClientError) as info:
        create(iam, metadata=metadata)
    code, message, status = error_of(info)
    assert (code, status) == ("InvalidInput", 400)
    assert message.startswith(f"Could not parse metadata: {reason}"), message
    assert iam.list_saml_providers()["SAMLProviderList"] == []


def test_eleven_signing_certificates_are_refused(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, metadata=document(*certificates(10)))  # the control
    eleven = document(*certificates(11))
    expected = ("InvalidInput", "Could not parse metadata: the IDPSSODescriptor has 11 signing "
                "certificates; at most 10 are accepted", 400)
    with pytest.raises(ClientError) as info:
        create(iam, metadata=eleven)
    assert error_of(info) == expected
    before = iam.get_saml_provider(SAMLProviderArn=provider_arn)["SAMLMetadataDocument"]
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, SAMLMetadataDocument=eleven)
    assert error_of(info) == expected
    assert iam.get_saml_provider(SAMLProviderArn=provider_arn)["SAMLMetadataDocument"] == before


@pytest.mark.parametrize("parameter", [
    {"ContextProvider": {"SubjectSourceKey": "email"}},
    {"IdentityCenterInstanceArn": "arn:aws:sso:::instance/ssoins-1234567890abcdef"},
])
def test_identity_center_parameters_are_refused(broker: Broker,
                                                parameter: dict[str, Any]) -> None:
    _, iam = account_iam(broker)
    name = next(iter(parameter))
    message = (f"{name} configures trusted identity propagation with IAM Identity Center, which "
               "this broker does not have.")
    with pytest.raises(ClientError) as info:
        create(iam, **parameter)
    assert error_of(info) == ("InvalidInput", message, 400)
    provider_arn = create(iam)  # the control
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, **parameter)
    assert error_of(info) == ("InvalidInput", message, 400)
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, RemoveContextProvider=True)
    assert error_of(info)[:2] == ("InvalidInput", "RemoveContextProvider configures trusted "
                                  "identity propagation with IAM Identity Center, which this "
                                  "broker does not have.")


# -- private keys -------------------------------------------------------------------------------


def test_private_keys_are_added_listed_and_removed(broker: Broker) -> None:
    _, iam = account_iam(broker)
    pem, key = new_rsa_pem()
    provider_arn = create(iam, AddPrivateKey=pem)
    keys = iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"]
    assert len(keys) == 1 and set(keys[0]) == {"KeyId", "Timestamp"}  # never the key
    assert re.fullmatch(r"[A-Z0-9]{22,64}", keys[0]["KeyId"])
    first = keys[0]["KeyId"]

    second_pem, second = new_rsa_pem(3072)
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=second_pem)
    keys = iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"]
    assert len(keys) == 2 and keys[0]["KeyId"] == first
    provider = find(broker, provider_arn)
    assert provider is not None
    opened = broker.runtime.iam.saml_providers.decryption_keys(provider)
    assert [k.private_numbers() for k in opened] == \
        [key.private_numbers(), second.private_numbers()]

    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=new_rsa_pem()[0])
    assert error_of(info) == ("LimitExceeded", "Private key limit of 2 is reached.", 409)

    iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey=first)
    keys = iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"]
    assert [k["KeyId"] for k in keys] == [keys[0]["KeyId"]] and keys[0]["KeyId"] != first
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=pem)  # room again


def test_private_keys_are_stored_sealed(broker: Broker) -> None:
    _, iam = account_iam(broker)
    pem, _ = new_rsa_pem()
    provider_arn = create(iam, AddPrivateKey=pem)
    provider = find(broker, provider_arn)
    assert provider is not None
    record = broker.server.call(broker.runtime.store.get(SamlProvider.ref(provider.account_id,
                                                                          provider.name)))
    stored = json.dumps(record.data)
    body = "".join(pem.splitlines()[1:-1])
    assert "PRIVATE KEY" not in stored and body[40:100] not in stored
    assert len(provider.private_keys) == 1  # the control: the key is there, sealed


def test_removing_a_key_that_is_not_there_is_refused(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, AddPrivateKey=new_rsa_pem()[0])
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey="A" * 26)
    assert error_of(info) == ("InvalidInput", "Failed to remove private key because the Key ID "
                              "does not match a private key.", 400)
    key_id = iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"][0]["KeyId"]
    iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey=key_id)


def test_adding_and_removing_in_one_request_is_refused(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, AddPrivateKey=new_rsa_pem()[0])
    key_id = iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"][0]["KeyId"]
    pem = new_rsa_pem()[0]
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=pem,
                                 RemovePrivateKey=key_id)
    assert error_of(info) == ("InvalidInput", "Unable to add and remove private keys in the same "
                              "request. Set a value for only one of the two parameters.", 400)
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=pem)
    iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey=key_id)


@pytest.mark.parametrize("bad", [
    "not a key at all",
    private_key_pem(rsa_key()).replace("A", "B", 40),
    "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
])
def test_an_invalid_private_key_is_refused(broker: Broker, bad: str) -> None:
    _, iam = account_iam(broker)
    with pytest.raises(ClientError) as info:
        create(iam, AddPrivateKey=bad)
    assert error_of(info) == ("InvalidInput", "Invalid private key.", 400)
    provider_arn = create(iam)
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=bad)
    assert error_of(info) == ("InvalidInput", "Invalid private key.", 400)
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AddPrivateKey=new_rsa_pem()[0])


def test_weak_and_non_rsa_private_keys_are_refused(broker: Broker) -> None:
    from cryptography.hazmat.primitives import serialization

    _, iam = account_iam(broker)
    ec_pem = ec_key().private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    # A DSA key: loading one makes cryptography warn, which the suite turns into an error in
    # the server's thread too: refused with InvalidInput, not a 500.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        from cryptography.hazmat.primitives.asymmetric import dsa

        dsa_pem = dsa.generate_private_key(2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
    for bad in (private_key_pem(rsa_key(1024)), ec_pem, dsa_pem):
        with pytest.raises(ClientError) as info:
            create(iam, AddPrivateKey=bad)
        assert error_of(info) == ("InvalidInput", "Invalid private key.", 400)
    create(iam, AddPrivateKey=private_key_pem(rsa_key(2048)))  # the control


def test_required_encryption_needs_a_private_key(broker: Broker) -> None:
    _, iam = account_iam(broker)
    with pytest.raises(ClientError) as info:
        create(iam, AssertionEncryptionMode="Required")
    assert error_of(info) == ("InvalidInput", REQUIRED_WITHOUT_KEY, 400)
    provider_arn = create(iam)
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, AssertionEncryptionMode="Required")
    assert error_of(info) == ("InvalidInput", REQUIRED_WITHOUT_KEY, 400)

    # the controls: with a key, Required is accepted at creation and by an update
    required = create(iam, AssertionEncryptionMode="Required", AddPrivateKey=new_rsa_pem()[0])
    assert iam.get_saml_provider(SAMLProviderArn=required)["AssertionEncryptionMode"] == \
        "Required"
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AssertionEncryptionMode="Required",
                             AddPrivateKey=new_rsa_pem()[0])
    got = iam.get_saml_provider(SAMLProviderArn=provider_arn)
    assert got["AssertionEncryptionMode"] == "Required" and len(got["PrivateKeyList"]) == 1

    # Required keeps its last key; Allowed lets it go.
    key_id = got["PrivateKeyList"][0]["KeyId"]
    with pytest.raises(ClientError) as info:
        iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey=key_id)
    assert error_of(info)[0::2] == ("InvalidInput", 400)
    iam.update_saml_provider(SAMLProviderArn=provider_arn, AssertionEncryptionMode="Allowed")
    iam.update_saml_provider(SAMLProviderArn=provider_arn, RemovePrivateKey=key_id)
    assert iam.get_saml_provider(SAMLProviderArn=provider_arn)["PrivateKeyList"] == []


def test_keyring_rotation_reseals_private_keys(broker: Broker) -> None:
    _, iam = account_iam(broker)
    pem, key = new_rsa_pem()
    provider_arn = create(iam, AddPrivateKey=pem)
    runtime = broker.runtime
    old = runtime.keyring.sealing.id

    async def rotate() -> tuple[int, int, int]:
        before = await runtime.iam.secrets_sealed_with(old)
        runtime.keyring.rotate(runtime.clock)
        runtime.keyring.save()
        resealed = await runtime.iam.reseal_secrets()
        return before, resealed, await runtime.iam.secrets_sealed_with(old)

    before, resealed, left = broker.server.call(rotate())
    assert before >= 1 and resealed >= before and left == 0
    provider = find(broker, provider_arn)
    assert provider is not None
    assert [k.private_numbers() for k in
            runtime.iam.saml_providers.decryption_keys(provider)] == [key.private_numbers()]


# -- what STS uses ------------------------------------------------------------------------------


def find(broker: Broker, provider_arn: str) -> SamlProvider | None:
    return broker.server.call(broker.runtime.iam.saml_providers.find(provider_arn))


def test_find_takes_exactly_the_providers_arn(broker: Broker) -> None:
    account, iam = account_iam(broker)
    name = unique("Corp")
    provider_arn = create(iam, name, metadata=document(certificate(), certificate(ec_key())))
    found = find(broker, provider_arn)
    assert found is not None and found.arn == provider_arn  # the control
    for other in (provider_arn.replace(name, name.lower()), provider_arn + "x",
                  f"arn:aws:iam::{account}:role/{name}", "not an arn", ""):
        assert find(broker, other) is None, other
    keys = signing_keys(found)
    assert len(keys) == 2
    assert keys[0].public_numbers() == rsa_key().public_key().public_numbers()
    assert keys[1].public_numbers() == ec_key().public_key().public_numbers()


# -- authorization ------------------------------------------------------------------------------


def test_a_user_without_permission_is_refused(broker: Broker) -> None:
    account = broker.account_id
    iam = broker.client("iam")
    provider_arn = create(iam)
    name, creds = broker.new_user()
    as_user = broker.client("iam", creds)
    attempts = {
        "CreateSAMLProvider": lambda: create(as_user),
        "GetSAMLProvider": lambda: as_user.get_saml_provider(SAMLProviderArn=provider_arn),
        "ListSAMLProviders": lambda: as_user.list_saml_providers(),
        "UpdateSAMLProvider": lambda: as_user.update_saml_provider(
            SAMLProviderArn=provider_arn, AssertionEncryptionMode="Allowed"),
        "TagSAMLProvider": lambda: as_user.tag_saml_provider(
            SAMLProviderArn=provider_arn, Tags=[{"Key": "k", "Value": "v"}]),
        "UntagSAMLProvider": lambda: as_user.untag_saml_provider(
            SAMLProviderArn=provider_arn, TagKeys=["k"]),
        "ListSAMLProviderTags": lambda: as_user.list_saml_provider_tags(
            SAMLProviderArn=provider_arn),
        "DeleteSAMLProvider": lambda: as_user.delete_saml_provider(
            SAMLProviderArn=provider_arn),
    }
    for action, attempt in attempts.items():
        with pytest.raises(ClientError) as info:
            attempt()
        code, message, status = error_of(info)
        assert (code, status) == ("AccessDenied", 403), action
        assert message.startswith(f"User: arn:aws:iam::{account}:user/{name} is not authorized "
                                  f"to perform: iam:{action} on resource: "), message
    # the control: a policy allowing the actions lets the same user do each of them
    iam.put_user_policy(UserName=name, PolicyName="saml",
                        PolicyDocument=allow("iam:*SAMLProvider*", "*"))
    for attempt in attempts.values():
        attempt()


def test_permissions_follow_the_provider_arn(broker: Broker) -> None:
    account = broker.account_id
    iam = broker.client("iam")
    allowed, other = create(iam, unique("allowed")), create(iam, unique("other"))
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="saml", PolicyDocument=allow(
        ["iam:GetSAMLProvider", "iam:CreateSAMLProvider"],
        f"arn:aws:iam::{account}:saml-provider/allowed-*"))
    as_user = broker.client("iam", creds)
    as_user.get_saml_provider(SAMLProviderArn=allowed)
    create(as_user, unique("allowed"))
    with pytest.raises(ClientError) as info:
        as_user.get_saml_provider(SAMLProviderArn=other)
    assert error_of(info)[0] == "AccessDenied"
    assert f"on resource: {other} because" in error_of(info)[1]
    with pytest.raises(ClientError) as info:
        create(as_user, unique("other"))
    assert error_of(info)[0] == "AccessDenied"


def test_tag_conditions_apply(broker: Broker) -> None:
    iam = broker.client("iam")
    blue = create(iam, Tags=[{"Key": "team", "Value": "blue"}])
    red = create(iam, Tags=[{"Key": "team", "Value": "red"}])
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="saml", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:GetSAMLProvider", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
            {"Effect": "Allow", "Action": ["iam:CreateSAMLProvider", "iam:TagSAMLProvider"],
             "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"},
                           "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}},
            {"Effect": "Allow", "Action": "iam:UntagSAMLProvider", "Resource": "*",
             "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["note"]}}}]}))
    as_user = broker.client("iam", creds)

    as_user.get_saml_provider(SAMLProviderArn=blue)
    with pytest.raises(ClientError) as info:
        as_user.get_saml_provider(SAMLProviderArn=red)
    assert error_of(info)[0] == "AccessDenied"

    create(as_user, Tags=[{"Key": "team", "Value": "blue"}])
    with pytest.raises(ClientError) as info:
        create(as_user, Tags=[{"Key": "team", "Value": "red"}])
    assert error_of(info)[0] == "AccessDenied"
    with pytest.raises(ClientError) as info:
        as_user.tag_saml_provider(SAMLProviderArn=red,
                                  Tags=[{"Key": "team", "Value": "blue"},
                                        {"Key": "owner", "Value": "me"}])
    assert error_of(info)[0] == "AccessDenied"
    as_user.tag_saml_provider(SAMLProviderArn=red, Tags=[{"Key": "team", "Value": "blue"}])

    with pytest.raises(ClientError) as info:
        as_user.untag_saml_provider(SAMLProviderArn=red, TagKeys=["team"])
    assert error_of(info)[0] == "AccessDenied"
    as_user.untag_saml_provider(SAMLProviderArn=red, TagKeys=["note"])
