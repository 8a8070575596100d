"""Every kind of audit record the Query protocol writes, through a real broker: credentials issued
and refused by each STS action, IAM writes (access keys, passwords), a refused signature, and
the password sign-in page — each in CloudTrail's shape (who, what, from where, the parameters,
the public parts of what was issued), and no secret the request carried or the answer held
anywhere in the line: passwords, SAML responses, web identity tokens, MFA codes, secret access
keys, session tokens. Beside each secret hidden, the request's other parameters are there as
sent (the control: the rendering hides secrets, not everything)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.helpers import Broker, Creds, allow_policy, creds_of, signed_request, start_broker
from tests.oidc_issuer import TestIssuer
from tests.oidc_world import OidcWorld
from tests.saml_idp import encode
from tests.saml_world import SamlWorld


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def user(broker: Broker) -> tuple[str, Creds]:
    """An IAM user allowed to assume one role, with a console password."""
    iam = broker.client("iam")
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="assume", PolicyDocument=allow_policy(
        ["sts:AssumeRole", "sts:TagSession"], "*"))
    return name, creds


def records(broker: Broker, request_id: str) -> list[dict[str, Any]]:
    lines = Path(broker.settings.audit.path).read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc.get("requestID") == request_id]


def record(broker: Broker, request_id: str, *secrets: str) -> dict[str, Any]:
    """The one record of the request, after checking that its line holds none of the secrets
    (also in their JSON-escaped forms) and has CloudTrail's members."""
    lines = [line for line in Path(broker.settings.audit.path).read_text().splitlines()
             if f'"requestID":"{request_id}"' in line]
    assert len(lines) == 1, lines
    for secret in secrets:
        assert secret and secret not in lines[0] and json.dumps(secret)[1:-1] not in lines[0]
    doc: dict[str, Any] = json.loads(lines[0])
    assert doc["eventVersion"] == "1.11" and doc["managementEvent"] is True
    assert re.fullmatch(r"[0-9a-f-]{36}", doc["eventID"])
    return doc


def request_id(error: botocore.exceptions.ClientError) -> str:
    return str(error.response["ResponseMetadata"]["RequestId"])


def test_get_session_token_and_the_calls_of_its_credentials(broker: Broker,
                                                            user: tuple[str, Creds]) -> None:
    name, creds = user
    result = broker.client("sts", creds).get_session_token(DurationSeconds=900)
    issued = creds_of(result)
    doc = record(broker, result["ResponseMetadata"]["RequestId"], creds.secret_access_key,
                 issued.secret_access_key, issued.session_token or "")
    assert (doc["eventSource"], doc["eventName"], doc["readOnly"]) == (
        "sts.amazonaws.com", "GetSessionToken", True)
    assert doc["requestParameters"] == {"durationSeconds": 900}
    assert doc["responseElements"]["credentials"]["accessKeyId"] == issued.access_key_id
    who = doc["userIdentity"]
    assert (who["type"], who["userName"], who["accessKeyId"]) == ("IAMUser", name,
                                                                  creds.access_key_id)
    assert who["principalId"].startswith("AIDA")
    assert doc["recipientAccountId"] == broker.account_id


def test_assume_role_with_a_token_code_refused_and_issued(broker: Broker,
                                                          user: tuple[str, Creds]) -> None:
    _, creds = user
    iam = broker.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{broker.account_id}:root"},
        "Action": ["sts:AssumeRole", "sts:TagSession"]}]})
    role = iam.create_role(RoleName=f"r-{uuid.uuid4().hex[:8]}",
                           AssumeRolePolicyDocument=trust)["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="chain",
                        PolicyDocument=allow_policy("sts:AssumeRole", "*"))
    sts = broker.client("sts", creds)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="with-code",
                        SerialNumber=f"arn:aws:iam::{broker.account_id}:mfa/none",
                        TokenCode="864209")
    doc = record(broker, request_id(refused.value), "864209", creds.secret_access_key)
    assert doc["errorCode"] == refused.value.response["Error"]["Code"]
    assert doc["requestParameters"]["tokenCode"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    assert doc["requestParameters"]["roleSessionName"] == "with-code"  # the control
    assert "responseElements" not in doc

    result = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="tagged",
                             Tags=[{"Key": "project", "Value": "apollo"}])
    issued = creds_of(result)
    doc = record(broker, result["ResponseMetadata"]["RequestId"], issued.secret_access_key,
                 issued.session_token or "", creds.secret_access_key)
    assert doc["requestParameters"] == {"roleArn": role["Arn"], "roleSessionName": "tagged",
                                        "tags": [{"key": "project", "value": "apollo"}]}
    assert doc["responseElements"]["assumedRoleUser"]["arn"].endswith(":assumed-role/"
                                                                       f"{role['RoleName']}/tagged")
    # The role session's own call: AssumedRole, with its issuer in sessionContext.
    again = broker.client("sts", issued).assume_role(RoleArn=role["Arn"],
                                                     RoleSessionName="chained")
    doc = record(broker, again["ResponseMetadata"]["RequestId"], issued.secret_access_key,
                 issued.session_token or "", creds_of(again).secret_access_key)
    who = doc["userIdentity"]
    assert (who["type"], who["accessKeyId"]) == ("AssumedRole", issued.access_key_id)
    assert who["sessionContext"]["sessionIssuer"] == {
        "type": "Role", "principalId": role["RoleId"], "arn": role["Arn"],
        "accountId": broker.account_id, "userName": role["RoleName"]}
    assert who["sessionContext"]["attributes"]["mfaAuthenticated"] == "false"


def test_get_federation_token(broker: Broker, user: tuple[str, Creds]) -> None:
    _, creds = user
    broker.client("iam").put_user_policy(UserName=user[0], PolicyName="federate",
                                         PolicyDocument=allow_policy("sts:*", "*"))
    result = broker.client("sts", creds).get_federation_token(Name="bob")
    issued = creds_of(result)
    doc = record(broker, result["ResponseMetadata"]["RequestId"], issued.secret_access_key,
                 issued.session_token or "")
    assert doc["requestParameters"] == {"name": "bob"}
    assert doc["responseElements"]["federatedUser"]["arn"].endswith(":federated-user/bob")


def test_assume_role_with_saml_issued_and_refused(broker: Broker) -> None:
    world = SamlWorld.make(broker, roles=("audit-saml",))
    honest = world.response(name_id="jo@example.test")
    result = world.assume(honest)
    issued = creds_of(result)
    encoded = encode(honest)
    doc = record(broker, result["ResponseMetadata"]["RequestId"], encoded[:200],
                 encoded[-200:], issued.secret_access_key, issued.session_token or "")
    assert doc["userIdentity"]["type"] == "SAMLUser"
    assert doc["userIdentity"]["userName"] == "jo@example.test"
    assert doc["requestParameters"]["sAMLAssertion"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    assert doc["requestParameters"]["roleArn"] == world.role_arn  # the control
    assert doc["responseElements"]["subject"] == "jo@example.test"

    tampered = encode(honest.replace(b"jo@example.test", b"admin@example.test"))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        world.sts().assume_role_with_saml(RoleArn=world.role_arn,
                                          PrincipalArn=world.provider_arn,
                                          SAMLAssertion=tampered)
    doc = record(broker, request_id(refused.value), tampered[:200], tampered[-200:])
    assert doc["userIdentity"] == {"type": "SAMLUser"}  # nothing claimed is believed
    assert doc["errorCode"] == refused.value.response["Error"]["Code"]


def test_assume_role_with_web_identity_issued_and_refused(broker: Broker) -> None:
    with TestIssuer(path="/realms/audit") as issuer:
        world = OidcWorld.make(broker, issuer)
        token = world.token()
        result = world.assume(token)
        issued = creds_of(result)
        doc = record(broker, result["ResponseMetadata"]["RequestId"], token,
                     token.split(".")[2], issued.secret_access_key, issued.session_token or "")
        assert doc["userIdentity"]["type"] == "WebIdentityUser"
        assert doc["requestParameters"]["webIdentityToken"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
        assert doc["requestParameters"]["roleSessionName"] == "ci-run"  # the control
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            world.sts().assume_role_with_web_identity(
                RoleArn=world.role_arn, RoleSessionName="forged", WebIdentityToken=forged)
        doc = record(broker, request_id(refused.value), forged, forged.split(".")[2])
        assert doc["errorCode"] == "InvalidIdentityToken"
        assert doc["userIdentity"] == {"type": "WebIdentityUser"}


def test_iam_writes_with_keys_and_passwords(broker: Broker) -> None:
    iam = broker.client("iam")
    name = f"pw-{uuid.uuid4().hex[:8]}"
    created = iam.create_user(UserName=name)
    doc = record(broker, created["ResponseMetadata"]["RequestId"])
    assert (doc["eventName"], doc["readOnly"], doc["requestParameters"]) == (
        "CreateUser", False, {"userName": name})
    assert doc["userIdentity"]["type"] == "Root"
    key = iam.create_access_key(UserName=name)
    secret = key["AccessKey"]["SecretAccessKey"]
    doc = record(broker, key["ResponseMetadata"]["RequestId"], secret)
    assert doc["responseElements"]["accessKey"]["accessKeyId"] == \
        key["AccessKey"]["AccessKeyId"]
    password = "Correct horse 1!"
    made = iam.create_login_profile(UserName=name, Password=password)
    doc = record(broker, made["ResponseMetadata"]["RequestId"], password)
    assert doc["requestParameters"] == {"userName": name,
                                        "password": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    with pytest.raises(botocore.exceptions.ClientError) as short:
        iam.update_login_profile(UserName=name, Password="x")  # refused by the policy
    record(broker, request_id(short.value), '"x"')
    # Reads are not audited.
    read = iam.get_user(UserName=name)
    assert records(broker, read["ResponseMetadata"]["RequestId"]) == []


def test_a_refused_signature_names_the_action_and_keeps_the_secret_out(
        broker: Broker, user: tuple[str, Creds]) -> None:
    _, creds = user
    wrong = Creds(creds.access_key_id, "W" * 40)
    method, url, headers, body = signed_request(
        broker.url, {"Action": "GetSessionToken", "Version": "2011-06-15"}, wrong)
    r = httpx.request(method, url, headers=headers, content=body)
    assert r.status_code == 403
    doc = record(broker, r.headers["x-amzn-RequestId"], "W" * 40, creds.secret_access_key,
                 headers["Authorization"].rsplit("Signature=", 1)[1])
    assert (doc["eventName"], doc["errorCode"]) == ("GetSessionToken", "SignatureDoesNotMatch")
    # Not believed: only the key it presented, no user.
    assert doc["userIdentity"] == {"type": "Unknown", "accessKeyId": creds.access_key_id}
    assert "responseElements" not in doc and "additionalEventData" not in doc


def test_a_console_password_sign_in(broker: Broker) -> None:
    iam = broker.client("iam")
    name = f"console-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    password = "Console password 7!"
    iam.create_login_profile(UserName=name, Password=password)
    with httpx.Client(base_url=broker.url) as client:
        for attempt in (password + "wrong", password):
            page = client.get("/signin").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf, page
            client.post("/signin", data={"csrf": csrf.group(1), "kind": "iam",
                                         "account": broker.account_id, "username": name,
                                         "password": attempt})
    text = Path(broker.settings.audit.path).read_text()
    assert password not in text
    logins = [doc for doc in map(json.loads, text.splitlines())
              if doc["eventName"] == "ConsoleLogin"
              and doc["userIdentity"].get("arn", "").endswith(f":user/{name}")]
    assert [d["responseElements"]["ConsoleLogin"] for d in logins][-1] == "Success"
    assert logins[-1]["eventType"] == "AwsConsoleSignIn"
    # The console session's key, which no answer shows, beside MFAUsed; never its secret.
    assert logins[-1]["additionalEventData"]["MFAUsed"] == "No"
    assert logins[-1]["additionalEventData"]["IssuedAccessKeyId"].startswith("ASIA")


def test_organizations_writes_and_refusals_but_not_reads(broker: Broker,
                                                         user: tuple[str, Creds]) -> None:
    orgs = broker.client("organizations")
    made = orgs.create_organization(FeatureSet="ALL")
    doc = record(broker, made["ResponseMetadata"]["RequestId"])
    assert (doc["eventSource"], doc["eventName"], doc["readOnly"]) == (
        "organizations.amazonaws.com", "CreateOrganization", False)
    assert doc["requestParameters"] == {"featureSet": "ALL"}
    assert doc["userIdentity"]["type"] == "Root"
    # CreateAccount's Email is sensitive in botocore's model: hidden, as CloudTrail does.
    email = f"audit-{uuid.uuid4().hex[:8]}@example.test"
    asked = orgs.create_account(Email=email, AccountName="Audited")
    doc = record(broker, asked["ResponseMetadata"]["RequestId"], email)
    assert doc["requestParameters"]["email"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        broker.client("organizations", user[1]).create_policy(
            Name="deny", Description="", Type="SERVICE_CONTROL_POLICY",
            Content=allow_policy("*", "*"))
    doc = record(broker, request_id(refused.value), user[1].secret_access_key)
    assert (doc["errorCode"], doc["userIdentity"]["type"]) == ("AccessDeniedException",
                                                               "IAMUser")
    read = orgs.describe_organization()
    assert records(broker, read["ResponseMetadata"]["RequestId"]) == []
