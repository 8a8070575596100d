"""STS through boto3 against a real uvicorn server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest

from broker.aws import ids
from tests.helpers import Broker, Creds, creds_of


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def test_root_caller_identity(broker: Broker) -> None:
    who = broker.client("sts").get_caller_identity()
    assert who["Account"] == broker.account_id
    assert who["Arn"] == f"arn:aws:iam::{broker.account_id}:root"
    assert who["UserId"] == broker.account_id


def test_user_caller_identity(broker: Broker) -> None:
    name, creds = broker.new_user()
    who = broker.client("sts", creds).get_caller_identity()
    assert who["Arn"] == f"arn:aws:iam::{broker.account_id}:user/{name}"
    assert who["UserId"].startswith("AIDA") and len(who["UserId"]) == 21
    user = broker.client("iam").get_user(UserName=name)["User"]
    assert who["UserId"] == user["UserId"]


def test_session_token_for_a_user_speaks_as_the_user(broker: Broker) -> None:
    name, creds = broker.new_user()
    before = datetime.now(UTC)
    result = broker.client("sts", creds).get_session_token()
    session = creds_of(result)
    assert session.access_key_id.startswith("ASIA") and len(session.access_key_id) == 20
    assert len(session.secret_access_key) == 40
    lifetime = result["Credentials"]["Expiration"] - before
    assert timedelta(seconds=43190) < lifetime <= timedelta(seconds=43201)
    who = broker.client("sts", session).get_caller_identity()
    assert who["Arn"] == f"arn:aws:iam::{broker.account_id}:user/{name}"


def test_session_token_durations(broker: Broker) -> None:
    _, creds = broker.new_user()
    sts = broker.client("sts", creds)
    before = datetime.now(UTC)
    result = sts.get_session_token(DurationSeconds=900)
    assert result["Credentials"]["Expiration"] - before <= timedelta(seconds=901)
    result = sts.get_session_token(DurationSeconds=129600)
    assert result["Credentials"]["Expiration"] - before > timedelta(seconds=129500)
    raw = broker.client("sts", creds, validate=False)
    for bad, fault in ((899, "greater than or equal to 900"),
                       (129601, "less than or equal to 129600")):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            raw.get_session_token(DurationSeconds=bad)
        code, message = error_of(info)
        assert code == "ValidationError"
        assert message == (f"1 validation error detected: Value '{bad}' at 'durationSeconds' "
                           f"failed to satisfy constraint: Member must have value {fault}")


def test_root_sessions_last_at_most_an_hour(broker: Broker) -> None:
    before = datetime.now(UTC)
    result = broker.client("sts").get_session_token(DurationSeconds=7200)
    assert result["Credentials"]["Expiration"] - before <= timedelta(seconds=3601)
    who = broker.client("sts", creds_of(result)).get_caller_identity()
    assert who["Arn"].endswith(":root")


def test_session_credentials_cannot_get_another_session(broker: Broker) -> None:
    _, creds = broker.new_user()
    session = creds_of(broker.client("sts", creds).get_session_token())
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", session).get_session_token()
    assert error_of(info) == ("AccessDenied",
                              "Cannot call GetSessionToken with session credentials")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", session).get_federation_token(Name="fed")
    assert error_of(info) == ("AccessDenied",
                              "Cannot call GetFederationToken with session credentials")


def test_mfa_parameters_are_refused_without_a_device(broker: Broker) -> None:
    _, creds = broker.new_user()
    sts = broker.client("sts", creds)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_session_token(SerialNumber="arn:aws:iam::123456789012:mfa/x", TokenCode="123456")
    code, message = error_of(info)
    assert code == "AccessDenied" and "unable to validate MFA code" in message
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_session_token(TokenCode="123456")
    assert "must provide both" in error_of(info)[1]
    sts.get_session_token()  # the control: no MFA asked, none needed


def test_minimum_session_token_size(broker: Broker) -> None:
    result = broker.client("sts").get_session_token(MinimumSessionTokenSize=3000)
    token = result["Credentials"]["SessionToken"]
    assert len(token) >= 3000
    assert result["SessionTokenSize"] == len(token)
    assert 73 <= result["SessionTokenUtilization"] <= 100
    broker.client("sts", creds_of(result)).get_caller_identity()


def test_federation_token(broker: Broker) -> None:
    policy = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",'
              '"Resource":"*"}]}')
    before = datetime.now(UTC)
    result = broker.client("sts").get_federation_token(
        Name="bob@example.com", Policy=policy, DurationSeconds=900,
        Tags=[{"Key": "team", "Value": "blue"}],
        PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
    )
    user = result["FederatedUser"]
    assert user["Arn"] == f"arn:aws:sts::{broker.account_id}:federated-user/bob@example.com"
    assert user["FederatedUserId"] == f"{broker.account_id}:bob@example.com"
    assert 0 < result["PackedPolicySize"] < 100
    assert result["Credentials"]["Expiration"] - before <= timedelta(seconds=901)
    fed = creds_of(result)
    who = broker.client("sts", fed).get_caller_identity()
    assert (who["Arn"], who["UserId"]) == (user["Arn"], user["FederatedUserId"])


def test_federated_users_may_call_only_get_caller_identity(broker: Broker) -> None:
    fed = creds_of(broker.client("sts").get_federation_token(Name="carol"))
    arn = f"arn:aws:sts::{broker.account_id}:federated-user/carol"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", fed).get_access_key_info(AccessKeyId=fed.access_key_id)
    assert error_of(info) == ("AccessDenied",
                              f"User: {arn} is not authorized to perform: sts:GetAccessKeyInfo "
                              "on resource: *")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", fed).list_users()
    code, message = error_of(info)
    assert code == "AccessDenied"
    assert message.startswith(f"User: {arn} is not authorized to perform: iam:ListUsers")
    broker.client("sts", fed).get_caller_identity()  # the control


def test_federation_token_needs_a_policy_for_iam_users(broker: Broker) -> None:
    name, creds = broker.new_user()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds).get_federation_token(Name="fed")
    code, message = error_of(info)
    assert code == "AccessDenied"
    assert message.split(". Encoded authorization failure message: ")[0] == (
        f"User: arn:aws:iam::{broker.account_id}:user/{name} is not authorized to perform: "
        f"sts:GetFederationToken on resource: arn:aws:sts::{broker.account_id}:"
        "federated-user/fed because no identity-based policy allows the "
        "sts:GetFederationToken action")


def test_federation_token_faults(broker: Broker) -> None:
    sts = broker.client("sts", validate=False)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_federation_token(Name="b")
    assert error_of(info)[1] == (
        "1 validation error detected: Value 'b' at 'name' failed to satisfy constraint: "
        "Member must have length greater than or equal to 2")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_federation_token(Name="bob", Tags=[{"Key": "a", "Value": "1"},
                                                   {"Key": "A", "Value": "2"}])
    assert error_of(info) == ("InvalidParameterValue", "Duplicate tag keys found. Please note "
                              "that Tag keys are case insensitive.")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_federation_token(Name="bob", Policy="{not json")
    assert error_of(info) == ("MalformedPolicyDocument", "Syntax errors in policy.")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_federation_token(Name="bob", Tags=[
            {"Key": f"k{i}" + "x" * 100,
             "Value": "".join(ids.new_secret_access_key() for _ in range(6))}
            for i in range(50)])
    code, message = error_of(info)
    assert code == "PackedPolicyTooLarge" and "% of allotted space" in message
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_federation_token(Name="bob", PolicyArns=[
            {"arn": f"arn:aws:iam::aws:policy/P{i:02d}-padding"} for i in range(11)])
    assert error_of(info)[0] == "ValidationError"


def test_access_key_info(broker: Broker) -> None:
    sts = broker.client("sts")
    assert sts.get_access_key_info(AccessKeyId=broker.root.access_key_id)["Account"] == \
        broker.account_id
    other_account, other_root = broker.new_account()
    assert sts.get_access_key_info(AccessKeyId=other_root.access_key_id)["Account"] == \
        other_account
    session = creds_of(broker.client("sts", other_root).get_session_token())
    assert sts.get_access_key_info(AccessKeyId=session.access_key_id)["Account"] == \
        other_account
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_access_key_info(AccessKeyId="AKIA0000000000000000")
    assert error_of(info)[0] == "InvalidParameterValue"
    # Like AWS, any id of the broker's form names an account, issued or not.
    assert sts.get_access_key_info(AccessKeyId="AKIAIOSFODNN7EXAMPLE")["Account"].isdigit()


def test_users_need_a_policy_for_access_key_info(broker: Broker) -> None:
    _, creds = broker.new_user()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds).get_access_key_info(AccessKeyId=creds.access_key_id)
    assert "no identity-based policy allows the sts:GetAccessKeyInfo action" in error_of(info)[1]


def test_any_region_name_signs(broker: Broker) -> None:
    assert broker.client("sts", region="eu-west-3").get_caller_identity()["Account"] == \
        broker.account_id


def test_credentials_of_one_account_are_not_another(broker: Broker) -> None:
    account, root = broker.new_account()
    assert broker.client("sts", root).get_caller_identity()["Account"] == account != \
        broker.account_id
    forged = Creds(root.access_key_id, broker.root.secret_access_key)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", forged).get_caller_identity()
    assert error_of(info)[0] == "SignatureDoesNotMatch"


def test_session_token_credentials_call_no_sts_action_but_caller_identity(broker: Broker) -> None:
    session = creds_of(broker.client("sts").get_session_token())
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", session).get_access_key_info(AccessKeyId=session.access_key_id)
    code, message = error_of(info)
    assert code == "AccessDenied"
    assert message.endswith("may call no STS action but AssumeRole and GetCallerIdentity")
    # The control: the same call with the long-term key of the same root user.
    broker.client("sts").get_access_key_info(AccessKeyId=session.access_key_id)
    broker.client("sts", session).get_caller_identity()
