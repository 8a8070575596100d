"""Every implemented STS and IAM action against botocore's service models.

Static: each declared input shape has exactly the model's members, types, required members,
lengths, ranges, patterns and enums. Over the wire: for every constraint the model states, a
real server refuses a value that breaks it with AWS's ValidationError wording, and the XML of
every result uses only elements the model's output shape knows.
"""

from __future__ import annotations

import time
from typing import Any
from xml.etree import ElementTree

import botocore.session
import httpx
import pyotp
import pytest

from broker.aws import shapes
from broker.aws.query import Operation
from broker.iam import api as iam_api
from broker.identitycenter import api as sso_api
from broker.identitycenter import store_api
from broker.organizations import api as org_api
from broker.sts import api as sts_api
from tests import saml_metadata
from tests.helpers import Broker, signed_request
from tests.oidc_issuer import TestIssuer
from tests.oidc_world import OidcWorld
from tests.saml_idp import encode
from tests.saml_world import SamlWorld

SESSION = botocore.session.get_session()
MODELS = {"sts": SESSION.get_service_model("sts"), "iam": SESSION.get_service_model("iam")}
ALL_OPERATIONS: list[Operation] = [
    *sts_api.operations(None, None, None, None),  # type: ignore[arg-type]  # not called here
    *iam_api.operations(None, None, None),  # type: ignore[arg-type]
]
# The broker's own actions, which AWS's models do not have (docs/compatibility.md lists them).
BROKER_ONLY = {"SetOpenIDConnectProviderJWKS"}
OPERATIONS = [op for op in ALL_OPERATIONS if op.name not in BROKER_ONLY]
IDS = [f"{op.service.name}:{op.name}" for op in OPERATIONS]


def test_only_the_broker_own_actions_are_missing_from_the_models() -> None:
    missing = {op.name for op in ALL_OPERATIONS
               if op.name not in MODELS[op.service.name].operation_names}
    assert missing == BROKER_ONLY


def model_of(op: Operation) -> Any:
    return MODELS[op.service.name].operation_model(op.name)


# -- static comparison --------------------------------------------------------------------------


def compare(ours: shapes.Shape, theirs: Any, where: str) -> None:
    assert ours.type_name == theirs.type_name, f"{where}: type"
    meta = theirs.metadata
    assert isinstance(ours, shapes.Document) == bool(meta.get("document")), f"{where}: document"
    if isinstance(ours, shapes.String):
        assert (ours.min, ours.max, ours.pattern) == (
            meta.get("min"), meta.get("max"), meta.get("pattern")), where
        assert ours.enum == (tuple(theirs.enum) if theirs.enum else None), f"{where}: enum"
        assert ours.sensitive == bool(meta.get("sensitive")), f"{where}: sensitive"
    elif isinstance(ours, shapes.Integer):
        assert (ours.min, ours.max) == (meta.get("min"), meta.get("max")), where
    elif isinstance(ours, shapes.ListOf):
        assert (ours.min, ours.max) == (meta.get("min"), meta.get("max")), where
        compare(ours.member, theirs.member, f"{where}.member")
    elif isinstance(ours, shapes.MapOf):
        assert (ours.min, ours.max) == (meta.get("min"), meta.get("max")), where
        compare(ours.key, theirs.key, f"{where}.key")
        compare(ours.value, theirs.value, f"{where}.value")
    elif isinstance(ours, shapes.Structure):
        assert [m.name for m in ours.members] == list(theirs.members), f"{where}: members"
        required = {m.name for m in ours.members if m.required}
        assert required == set(theirs.required_members), f"{where}: required"
        for member in ours.members:
            compare(member.shape, theirs.members[member.name], f"{where}.{member.name}")


@pytest.mark.parametrize("op", OPERATIONS, ids=IDS)
def test_declared_input_is_the_model(op: Operation) -> None:
    model = model_of(op)
    assert op.service.version == MODELS[op.service.name].api_version
    assert op.service.namespace == MODELS[op.service.name].metadata["xmlNamespace"]
    if model.input_shape is None:
        assert op.input.members == ()
    else:
        compare(op.input, model.input_shape, op.name)


JSON_OPERATIONS = [
    *org_api.operations(None, None),  # type: ignore[arg-type]  # not called here
    *sso_api.operations(None, None, None),  # type: ignore[arg-type]
    *store_api.operations(None, None),  # type: ignore[arg-type]
]
JSON_MODELS = {m.metadata["targetPrefix"]: m for m in (
    SESSION.get_service_model("organizations"), SESSION.get_service_model("sso-admin"),
    SESSION.get_service_model("identitystore"))}


@pytest.mark.parametrize("op", JSON_OPERATIONS,
                         ids=[f"{op.service.name}:{op.name}" for op in JSON_OPERATIONS])
def test_declared_json_input_is_the_model(op: Any) -> None:
    model = JSON_MODELS[op.service.target]
    assert op.service.name == model.metadata.get("signingName", model.metadata["endpointPrefix"])
    assert model.metadata["protocol"] == "json" and model.metadata["jsonVersion"] == "1.1"
    theirs = model.operation_model(op.name).input_shape
    if theirs is None:
        assert op.input.members == ()
    else:
        compare(op.input, theirs, op.name)


# -- constraints enforced over the wire ---------------------------------------------------------

POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
VALID = {  # a valid value for every member a request needs
    "UserName": "alice", "Name": "fed-user", "AccessKeyId": "AKIAAAAAAAAAAAAAAAAA",
    "Status": "Active", "Key": "k", "Value": "v", "arn": "arn:aws:iam::aws:policy/Pol",
    "AccountAlias": "example-alias", "ActionNames": "s3:GetObject",
    "AssumeRolePolicyDocument": POLICY, "Description": "a description",
    "EncodedMessage": "abc", "GroupName": "devs", "NewPassword": "New-Passw0rd!",
    "OldPassword": "Old-Passw0rd!", "PermissionsBoundary": "arn:aws:iam::aws:policy/Pol",
    "PolicyArn": "arn:aws:iam::aws:policy/Pol", "PolicyDocument": POLICY,
    "PolicyInputList": POLICY, "PolicyName": "pol", "PolicySourceArn":
    "arn:aws:iam::123456789012:user/alice", "RoleArn": "arn:aws:iam::123456789012:role/r",
    "RoleName": "role", "RoleSessionName": "session", "TagKeys": "k", "VersionId": "v1",
    "Password": "Passw0rd-Passw0rd!", "SAMLMetadataDocument": "<x/>" + " " * 1000,
    "SAMLProviderArn": "arn:aws:iam::123456789012:saml-provider/idp",
    "PrincipalArn": "arn:aws:iam::123456789012:saml-provider/idp", "SAMLAssertion": "PHg+",
    "WebIdentityToken": "a.b.c", "Url": "https://issuer.example",
    "OpenIDConnectProviderArn": "arn:aws:iam::123456789012:oidc-provider/issuer.example",
    "ClientID": "client", "ThumbprintList": "a" * 40,
    "VirtualMFADeviceName": "device", "SerialNumber": "arn:aws:iam::123456789012:mfa/device",
    "AuthenticationCode1": "123456", "AuthenticationCode2": "654321",
    "TargetPrincipal": "123456789012",
}
# A value longer than the broker accepts in a request body (server.max_body_bytes, 1 MiB by
# default) is refused with RequestEntityTooLarge before validation: SAMLMetadataDocument's
# maximum of 10,000,000 characters cannot be exceeded over the wire.
BODY_LIMIT = 1_048_576


def valid_member(name: str, shape: shapes.Shape) -> dict[str, str]:
    """Flat parameters that give a required member a valid value."""
    if isinstance(shape, shapes.ListOf):
        item = shape.member
        if isinstance(item, shapes.Structure):
            return {f"{name}.member.1.{m.name}": VALID[m.name] for m in item.members
                    if m.required}
        return {f"{name}.member.1": VALID[name]}
    if isinstance(shape, shapes.Structure):  # a structure member (AssumeRoot's TaskPolicyArn)
        return {f"{name}.{m.name}": VALID[m.name] for m in shape.members if m.required}
    return {name: VALID[name]}


def filler(shape: shapes.String, length: int) -> str | None:
    """A string of the given length that satisfies the shape's pattern, if one is easy."""
    pattern = shapes.compile_pattern(shape.pattern) if shape.pattern else None
    candidates = [c * length for c in "a1"] + (["/" + "a" * (length - 2) + "/"]
                                                 if length >= 2 else [])
    for text in candidates:
        if pattern is None or pattern.fullmatch(text):
            return text
    return None


def breaker(shape: shapes.String) -> str | None:
    """A string of acceptable length that the shape's pattern refuses."""
    assert shape.pattern is not None
    pattern = shapes.compile_pattern(shape.pattern)
    length = max(shape.min or 1, 1)
    for c in ["!", "\x01", "*", "é", "a", " "]:
        if not pattern.fullmatch(c * length):
            return c * length
    return None


def valid_params(op: Operation) -> dict[str, str]:
    params = {"Action": op.name, "Version": op.service.version}
    for member in op.input.members:
        if member.required:
            params.update(valid_member(member.name, member.shape))
    return params


def cases() -> list[Any]:
    """(operation, extra params, member to drop, expected fault) for every constraint."""
    found = []
    for op in OPERATIONS:
        for member in op.input.members:
            at = member.name[0].lower() + member.name[1:]
            shape = member.shape
            wire = member.name
            if isinstance(shape, shapes.ListOf):
                if shape.max is not None and (
                        not isinstance(shape.member, shapes.Structure)
                        or all(s.name in VALID for s in shape.member.members)):
                    item = shape.member
                    extra = {}
                    for i in range(1, shape.max + 2):
                        if isinstance(item, shapes.Structure):
                            for sub in item.members:
                                if sub.name in VALID:
                                    extra[f"{wire}.member.{i}.{sub.name}"] = \
                                        f"{VALID[sub.name]}{i}"
                        else:
                            extra[f"{wire}.member.{i}"] = f"{VALID.get(wire, 'a')}{i}"
                    found.append((op, extra, None,
                                  f"at '{at}' failed to satisfy constraint: Member must have "
                                  f"length less than or equal to {shape.max}"))
                item = shape.member
                if member.required:
                    found.append((op, {}, member.name, f"Value null at '{at}' failed to "
                                  "satisfy constraint: Member must not be null"))
                if isinstance(item, shapes.String):
                    for extra_value, fault in string_faults(item):
                        found.append((op, {f"{wire}.member.1": extra_value}, None,
                                      f"at '{at}.1.member' {fault}"))
                if isinstance(item, shapes.Structure) and \
                        all(s.name in VALID for s in item.members):
                    for sub in item.members:
                        sub_at = f"{at}.1.member.{sub.name[0].lower() + sub.name[1:]}"
                        base = {f"{wire}.member.1.{s.name}": VALID[s.name] for s in item.members}
                        for extra_value, fault in string_faults(sub.shape):
                            found.append((op, {**base, f"{wire}.member.1.{sub.name}":
                                               extra_value}, None, f"at '{sub_at}' {fault}"))
                        if sub.required:
                            found.append((op, base, f"{wire}.member.1.{sub.name}",
                                          f"Value null at '{sub_at}' failed to satisfy "
                                          "constraint: Member must not be null"))
                continue
            if member.required:
                found.append((op, {}, member.name, f"Value null at '{at}' failed to satisfy "
                              "constraint: Member must not be null"))
            if isinstance(shape, shapes.Integer):
                if shape.min is not None:
                    found.append((op, {wire: str(shape.min - 1)}, None,
                                  f"Value '{shape.min - 1}' at '{at}' failed to satisfy "
                                  f"constraint: Member must have value greater than or equal "
                                  f"to {shape.min}"))
                if shape.max is not None:
                    found.append((op, {wire: str(shape.max + 1)}, None,
                                  f"Value '{shape.max + 1}' at '{at}' failed to satisfy "
                                  f"constraint: Member must have value less than or equal "
                                  f"to {shape.max}"))
            elif isinstance(shape, shapes.String):
                for value, fault in string_faults(shape):
                    found.append((op, {wire: value}, None, f"at '{at}' {fault}"))
    return found


def string_faults(shape: shapes.Shape) -> list[tuple[str, str]]:
    assert isinstance(shape, shapes.String)
    faults = []
    if shape.max is not None and shape.max < BODY_LIMIT:
        value = filler(shape, shape.max + 1)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must have length "
                           f"less than or equal to {shape.max}"))
    if shape.min:
        value = filler(shape, shape.min - 1)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must have length "
                           f"greater than or equal to {shape.min}"))
    if shape.pattern is not None:
        value = breaker(shape)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must satisfy regular "
                           f"expression pattern: {shape.pattern}"))
    if shape.enum is not None:
        faults.append(("NotAValue", "failed to satisfy constraint: Member must satisfy enum "
                       f"value set: [{', '.join(shape.enum)}]"))
    return faults


CASES = cases()


def test_every_operation_has_constraint_cases() -> None:
    constrained = {op.name for op in OPERATIONS if op.input.members}
    assert {c[0].name for c in CASES} == constrained
    assert len(CASES) > 60


@pytest.mark.parametrize(("op", "extra", "drop", "fault"), CASES,
                         ids=[f"{c[0].name}-{i}" for i, c in enumerate(CASES)])
def test_constraint_is_enforced_with_aws_wording(broker: Broker, op: Operation,
                                                 extra: dict[str, str], drop: str | None,
                                                 fault: str) -> None:
    params = {**valid_params(op), **extra}
    if drop is not None:
        params = {k: v for k, v in params.items() if k != drop and not k.startswith(drop + ".")}
    method, url, headers, body = signed_request(broker.url, params, broker.root,
                                                service=op.service.name)
    resp = httpx.request(method, url, headers=headers, content=body)
    root = ElementTree.fromstring(resp.content)
    ns = {"a": op.service.namespace}
    assert resp.status_code == 400, resp.text
    assert root.findtext("a:Error/a:Code", namespaces=ns) == "ValidationError"
    message = root.findtext("a:Error/a:Message", namespaces=ns) or ""
    assert message.startswith(("1 validation error detected: ",
                               "2 validation errors detected: ")), message
    assert fault in message, message


# -- results use only what the output shapes know ----------------------------------------------


def check_xml(element: ElementTree.Element, shape: Any, where: str,
              absent: dict[str, set[str]] | None = None) -> None:
    """``absent``: required members AWS's own answer leaves out too, by place."""
    absent = absent or {}
    if shape.type_name == "structure":
        names = [child.tag.split("}")[1] for child in element]
        unknown = set(names) - set(shape.members)
        assert not unknown, f"{where}: elements the model does not know: {unknown}"
        missing = set(shape.required_members) - set(names) - absent.get(where, set())
        assert not missing, f"{where}: required elements missing: {missing}"
        for child, name in zip(element, names, strict=True):
            check_xml(child, shape.members[name], f"{where}.{name}", absent)
    elif shape.type_name == "list":
        for child in element:
            assert child.tag.split("}")[1] == "member", where
            check_xml(child, shape.member, f"{where}.member")
    else:
        assert len(element) == 0, f"{where}: a scalar with children"
        text = element.text or ""
        if shape.type_name == "timestamp":
            assert text.endswith("Z") and "T" in text, f"{where}: {text}"
        elif shape.type_name == "integer":
            int(text)
        elif shape.type_name == "boolean":
            assert text in ("true", "false"), where


TRUST = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":'
         '"arn:aws:iam::%s:root"},"Action":"sts:AssumeRole"}]}')
POLICY_ASSUME = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                 '"Action":"sts:AssumeRole","Resource":"arn:aws:iam::%s:role/shape-role"}]}')


def test_results_match_output_shapes(broker: Broker) -> None:
    """Every action with a result, called for real, answers with only what the model knows."""
    account = broker.account_id
    pol = f"arn:aws:iam::{account}:policy/shape-pol"
    idp = f"arn:aws:iam::{account}:saml-provider/shape-idp"
    oidc = f"arn:aws:iam::{account}:oidc-provider/shape.example/x"
    calls: list[tuple[str, dict[str, str]]] = [
        ("sts", {"Action": "GetCallerIdentity"}),
        ("sts", {"Action": "GetSessionToken", "DurationSeconds": "900"}),
        ("sts", {"Action": "GetFederationToken", "Name": "shape-check",
                 "Policy": POLICY, "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("sts", {"Action": "GetAccessKeyInfo", "AccessKeyId": broker.root.access_key_id}),
        ("iam", {"Action": "CreateUser", "UserName": "shape-check", "Path": "/x/",
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetUser", "UserName": "shape-check"}),
        ("iam", {"Action": "GetUser"}),  # the root user
        ("iam", {"Action": "ListUsers", "MaxItems": "1"}),
        ("iam", {"Action": "ListUserTags", "UserName": "shape-check"}),
        ("iam", {"Action": "CreateAccessKey", "UserName": "shape-check"}),
        ("iam", {"Action": "ListAccessKeys", "UserName": "shape-check"}),
        ("iam", {"Action": "GetAccessKeyLastUsed", "AccessKeyId": broker.root.access_key_id}),
        ("iam", {"Action": "CreateLoginProfile", "UserName": "shape-check",
                 "Password": "Sh4pe-Check-Password!"}),
        ("iam", {"Action": "GetLoginProfile", "UserName": "shape-check"}),
        ("iam", {"Action": "UpdateAccountPasswordPolicy", "MinimumPasswordLength": "10"}),
        ("iam", {"Action": "GetAccountPasswordPolicy"}),
        ("iam", {"Action": "CreateGroup", "GroupName": "shape-group"}),
        ("iam", {"Action": "AddUserToGroup", "GroupName": "shape-group",
                 "UserName": "shape-check"}),
        ("iam", {"Action": "GetGroup", "GroupName": "shape-group"}),
        ("iam", {"Action": "ListGroups"}),
        ("iam", {"Action": "ListGroupsForUser", "UserName": "shape-check"}),
        ("iam", {"Action": "CreateRole", "RoleName": "shape-role",
                 "AssumeRolePolicyDocument": TRUST % account, "Description": "d",
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetRole", "RoleName": "shape-role"}),
        ("iam", {"Action": "ListRoles"}),
        ("iam", {"Action": "UpdateRole", "RoleName": "shape-role",
                 "MaxSessionDuration": "7200"}),
        ("iam", {"Action": "UpdateRoleDescription", "RoleName": "shape-role",
                 "Description": "e"}),
        ("iam", {"Action": "ListRoleTags", "RoleName": "shape-role"}),
        ("iam", {"Action": "CreatePolicy", "PolicyName": "shape-pol", "PolicyDocument": POLICY,
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetPolicy", "PolicyArn": pol}),
        ("iam", {"Action": "ListPolicies", "Scope": "Local"}),
        ("iam", {"Action": "CreatePolicyVersion", "PolicyArn": pol, "PolicyDocument": POLICY,
                 "SetAsDefault": "true"}),
        ("iam", {"Action": "GetPolicyVersion", "PolicyArn": pol, "VersionId": "v2"}),
        ("iam", {"Action": "ListPolicyVersions", "PolicyArn": pol}),
        ("iam", {"Action": "ListPolicyTags", "PolicyArn": pol}),
        ("iam", {"Action": "AttachUserPolicy", "UserName": "shape-check", "PolicyArn": pol}),
        ("iam", {"Action": "AttachGroupPolicy", "GroupName": "shape-group", "PolicyArn": pol}),
        ("iam", {"Action": "AttachRolePolicy", "RoleName": "shape-role", "PolicyArn": pol}),
        ("iam", {"Action": "ListEntitiesForPolicy", "PolicyArn": pol}),
        ("iam", {"Action": "ListAttachedUserPolicies", "UserName": "shape-check"}),
        ("iam", {"Action": "ListAttachedGroupPolicies", "GroupName": "shape-group"}),
        ("iam", {"Action": "ListAttachedRolePolicies", "RoleName": "shape-role"}),
        ("iam", {"Action": "PutUserPolicy", "UserName": "shape-check", "PolicyName": "in",
                 "PolicyDocument": POLICY}),
        ("iam", {"Action": "PutGroupPolicy", "GroupName": "shape-group", "PolicyName": "in",
                 "PolicyDocument": POLICY}),
        ("iam", {"Action": "PutRolePolicy", "RoleName": "shape-role", "PolicyName": "in",
                 "PolicyDocument": POLICY}),
        ("iam", {"Action": "GetUserPolicy", "UserName": "shape-check", "PolicyName": "in"}),
        ("iam", {"Action": "GetGroupPolicy", "GroupName": "shape-group", "PolicyName": "in"}),
        ("iam", {"Action": "GetRolePolicy", "RoleName": "shape-role", "PolicyName": "in"}),
        ("iam", {"Action": "ListUserPolicies", "UserName": "shape-check"}),
        ("iam", {"Action": "ListGroupPolicies", "GroupName": "shape-group"}),
        ("iam", {"Action": "ListRolePolicies", "RoleName": "shape-role"}),
        ("iam", {"Action": "CreateAccountAlias", "AccountAlias": f"shape-{account}"}),
        ("iam", {"Action": "ListAccountAliases"}),
        ("iam", {"Action": "GetAccountAuthorizationDetails"}),
        ("iam", {"Action": "SimulatePrincipalPolicy", "PolicySourceArn":
                 f"arn:aws:iam::{account}:user/x/shape-check",
                 "ActionNames.member.1": "s3:GetObject"}),
        ("iam", {"Action": "CreateSAMLProvider", "Name": "shape-idp",
                 "SAMLMetadataDocument": saml_metadata.document(),
                 "AddPrivateKey": saml_metadata.private_key_pem(),
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetSAMLProvider", "SAMLProviderArn": idp}),
        ("iam", {"Action": "ListSAMLProviders"}),
        ("iam", {"Action": "UpdateSAMLProvider", "SAMLProviderArn": idp,
                 "AssertionEncryptionMode": "Required"}),
        ("iam", {"Action": "ListSAMLProviderTags", "SAMLProviderArn": idp}),
        ("iam", {"Action": "CreateOpenIDConnectProvider", "Url": "https://shape.example/x",
                 "ClientIDList.member.1": "c", "ThumbprintList.member.1": "a" * 40,
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetOpenIDConnectProvider", "OpenIDConnectProviderArn": oidc}),
        ("iam", {"Action": "ListOpenIDConnectProviders"}),
        ("iam", {"Action": "ListOpenIDConnectProviderTags",
                 "OpenIDConnectProviderArn": oidc}),
        ("iam", {"Action": "SimulateCustomPolicy", "PolicyInputList.member.1": POLICY,
                 "ActionNames.member.1": "s3:GetObject",
                 "ContextEntries.member.1.ContextKeyName": "aws:SourceIp",
                 "ContextEntries.member.1.ContextKeyValues.member.1": "10.0.0.1",
                 "ContextEntries.member.1.ContextKeyType": "ip"}),
    ]
    # MFA devices: one enabled (with codes pyotp computes from its seed), so that GetMFADevice
    # and ListMFADevices answer with everything they can.
    iam = broker.client("iam")
    iam.create_user(UserName="shape-mfa-user")
    device = iam.create_virtual_mfa_device(
        VirtualMFADeviceName="shape-mfa", Tags=[{"Key": "a", "Value": "b"}])["VirtualMFADevice"]
    totp = pyotp.TOTP(device["Base32StringSeed"].decode("ascii"))
    iam.enable_mfa_device(UserName="shape-mfa-user", SerialNumber=device["SerialNumber"],
                          AuthenticationCode1=totp.now(),
                          AuthenticationCode2=totp.at(time.time(), counter_offset=1))
    calls += [
        ("iam", {"Action": "CreateVirtualMFADevice", "VirtualMFADeviceName": "shape-mfa-2",
                 "Path": "/x/", "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "ListVirtualMFADevices"}),
        ("iam", {"Action": "ListMFADevices", "UserName": "shape-mfa-user"}),
        ("iam", {"Action": "GetMFADevice", "SerialNumber": device["SerialNumber"],
                 "UserName": "shape-mfa-user"}),
        ("iam", {"Action": "ListMFADeviceTags", "SerialNumber": device["SerialNumber"]}),
        ("iam", {"Action": "GenerateCredentialReport"}),
        ("iam", {"Action": "GetCredentialReport"}),
    ]
    # AssumeRole, which the root user may not call: by a user the role's trust (the account)
    # and the user's own policy allow.
    assumer, assumer_creds = broker.new_user(name="shape-assumer")
    broker.client("iam").put_user_policy(
        UserName=assumer, PolicyName="assume", PolicyDocument=POLICY_ASSUME % account)
    assume = ("sts", {"Action": "AssumeRole",
                      "RoleArn": f"arn:aws:iam::{account}:role/shape-role",
                      "RoleSessionName": "shape"})
    # AssumeRoleWithSAML, unsigned, with every optional result member the broker fills.
    world = SamlWorld.make(broker)
    saml = ("sts", {"Action": "AssumeRoleWithSAML", "RoleArn": world.role_arn,
                    "PrincipalArn": world.provider_arn, "SAMLAssertion": encode(world.response(
                        source_identity="shape", principal_tags={"a": "b"}))})
    # AssumeRoleWithWebIdentity, unsigned, with every optional result member the broker fills.
    with TestIssuer(path="/shape") as issuer:
        web = OidcWorld.make(broker, issuer)
        web_identity = ("sts", {
            "Action": "AssumeRoleWithWebIdentity", "RoleArn": web.role_arn,
            "RoleSessionName": "shape", "WebIdentityToken": issuer.token(**{
                "https://aws.amazon.com/source_identity": "shape",
                "https://aws.amazon.com/tags": {"principal_tags": {"a": ["b"]}}})})
        seen = _check_results(broker, [*calls, assume, saml, web_identity,
                                       *_centralized_root_access(broker, assumer)],
                              assumer_creds)
    _check_decoded_message(broker, seen)


def _centralized_root_access(broker: Broker, assumer: str) -> list[tuple[str, dict[str, str]]]:
    """An organization with a member, IAM's trusted access, and the assumer allowed
    sts:AssumeRoot: the calls of centralized root access, with AssumeRoot last."""
    orgs = broker.client("organizations")
    orgs.create_organization()
    orgs.enable_aws_service_access(ServicePrincipal="iam.amazonaws.com")
    member, member_root = broker.new_account()
    invited = orgs.invite_account_to_organization(Target={"Id": member, "Type": "ACCOUNT"})
    broker.client("organizations", member_root).accept_handshake(
        HandshakeId=invited["Handshake"]["Id"])
    broker.client("iam").put_user_policy(
        UserName=assumer, PolicyName="assume-root", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
            '"Action":"sts:AssumeRoot","Resource":"*"}]}'))
    return [
        ("iam", {"Action": "EnableOrganizationsRootCredentialsManagement"}),
        ("iam", {"Action": "EnableOrganizationsRootSessions"}),
        ("iam", {"Action": "ListOrganizationsFeatures"}),
        ("sts", {"Action": "AssumeRoot", "TargetPrincipal": member, "TaskPolicyArn.arn":
                 "arn:aws:iam::aws:policy/root-task/IAMAuditRootUserCredentials"}),
        ("iam", {"Action": "DisableOrganizationsRootSessions"}),
        ("iam", {"Action": "DisableOrganizationsRootCredentialsManagement"}),
    ]


def _check_results(broker: Broker, calls: list[tuple[str, dict[str, str]]],
                   assumer_creds: Any) -> set[str]:
    seen = set()
    for service, params in calls:
        model = MODELS[service]
        full = {**params, "Version": model.api_version}
        signer = assumer_creds if params["Action"] in ("AssumeRole", "AssumeRoot") \
            else broker.root
        method, url, headers, body = signed_request(broker.url, full, signer, service=service)
        resp = httpx.request(method, url, headers=headers, content=body)
        assert resp.status_code == 200, resp.text
        action = params["Action"]
        op = model.operation_model(action)
        if op.output_shape is None:
            continue
        root = ElementTree.fromstring(resp.content)
        result = root.find(f"{{{model.metadata['xmlNamespace']}}}{action}Result")
        assert result is not None, resp.text
        # GetUser for the root user has no path and no user name, on AWS as here.
        absent = {"GetUser.User": {"Path", "UserName"}} if params == {"Action": "GetUser"} \
            else None
        check_xml(result, op.output_shape, action, absent)
        seen.add(action)
    return seen


def _check_decoded_message(broker: Broker, seen: set[str]) -> None:
    encoded = denied_message(broker)
    method, url, headers, body = signed_request(
        broker.url, {"Action": "DecodeAuthorizationMessage", "Version": "2011-06-15",
                     "EncodedMessage": encoded}, broker.root)
    resp = httpx.request(method, url, headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    result = ElementTree.fromstring(resp.content).find(
        "{https://sts.amazonaws.com/doc/2011-06-15/}DecodeAuthorizationMessageResult")
    assert result is not None
    check_xml(result, MODELS["sts"].operation_model("DecodeAuthorizationMessage").output_shape,
              "DecodeAuthorizationMessage")
    seen.add("DecodeAuthorizationMessage")
    outputs = {op.name for op in OPERATIONS if model_of(op).output_shape is not None}
    assert outputs - seen == set()


def denied_message(broker: Broker) -> str:
    """The encoded authorization message of a real refusal."""
    import re

    _, creds = broker.new_user()
    method, url, headers, body = signed_request(
        broker.url, {"Action": "ListRoles", "Version": "2010-05-08"}, creds, service="iam")
    resp = httpx.request(method, url, headers=headers, content=body)
    assert resp.status_code == 403
    found = re.search(r"Encoded authorization failure message: (\S+?)</Message>", resp.text)
    assert found is not None, resp.text
    return found.group(1)
