"""IAM users and access keys through boto3 against a real uvicorn server."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import pytest

from tests.helpers import Broker, Creds, creds_of


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def without_encoded(message: str) -> str:
    """AWS's sentence, without the encoded authorization message the broker appends."""
    return message.split(". Encoded authorization failure message: ", 1)[0]


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_user_lifecycle(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique()
    created = iam.create_user(UserName=name, Path="/eng/team/",
                              Tags=[{"Key": "team", "Value": "blue"}])["User"]
    assert created["Arn"] == f"arn:aws:iam::{broker.account_id}:user/eng/team/{name}"
    assert created["UserId"].startswith("AIDA") and created["Path"] == "/eng/team/"
    got = iam.get_user(UserName=name.upper())["User"]  # names are case-insensitive
    assert got["UserId"] == created["UserId"]
    assert got["Tags"] == [{"Key": "team", "Value": "blue"}]
    listed = iam.list_users(PathPrefix="/eng/")["Users"]
    assert [u["UserName"] for u in listed] == [name]
    assert "Tags" not in listed[0]  # listings leave tags out, as AWS's do
    iam.delete_user(UserName=name)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.get_user(UserName=name)
    assert error_of(info) == ("NoSuchEntity", f"The user with name {name} cannot be found.", 404)


def test_user_names_are_unique_regardless_of_case(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique()
    iam.create_user(UserName=name)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.create_user(UserName=name.upper())
    assert error_of(info) == ("EntityAlreadyExists",
                              f"User with name {name.upper()} already exists.", 409)


def test_list_users_pages(broker: Broker) -> None:
    _, root = broker.new_account()
    iam = broker.client("iam", root)
    names = sorted(f"p{i:02d}" for i in range(7))
    for name in names:
        iam.create_user(UserName=name)
    first = iam.list_users(MaxItems=3)
    assert first["IsTruncated"] and [u["UserName"] for u in first["Users"]] == names[:3]
    second = iam.list_users(MaxItems=3, Marker=first["Marker"])
    third = iam.list_users(MaxItems=3, Marker=second["Marker"])
    assert not third["IsTruncated"] and "Marker" not in third
    assert [u["UserName"] for u in second["Users"] + third["Users"]] == names[3:]
    paginated = [u["UserName"] for page in iam.get_paginator("list_users").paginate(
        PaginationConfig={"PageSize": 2}) for u in page["Users"]]
    assert paginated == names
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.list_users(Marker="not-a-marker!")
    assert error_of(info)[0] == "InvalidInput"


def test_users_of_one_account_are_invisible_to_another(broker: Broker) -> None:
    name = unique()
    broker.client("iam").create_user(UserName=name)
    _, other = broker.new_account()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", other).get_user(UserName=name)
    assert error_of(info)[0] == "NoSuchEntity"
    assert broker.client("iam", other).list_users()["Users"] == []


def test_access_key_lifecycle(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique()
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and len(key["AccessKeyId"]) == 20
    assert len(key["SecretAccessKey"]) == 40 and key["Status"] == "Active"
    creds = Creds(key["AccessKeyId"], key["SecretAccessKey"])
    sts = broker.client("sts", creds)
    assert sts.get_caller_identity()["Arn"].endswith(f":user/{name}")

    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in listed] == [(key["AccessKeyId"], "Active")]
    assert "SecretAccessKey" not in listed[0]

    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_caller_identity()
    assert error_of(info) == ("InvalidClientTokenId",
                              "The security token included in the request is invalid.", 403)
    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Active")
    sts.get_caller_identity()

    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.delete_user(UserName=name)
    assert error_of(info) == ("DeleteConflict",
                              "Cannot delete entity, must delete access keys first.", 409)
    iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.get_caller_identity()
    assert error_of(info)[0] == "InvalidClientTokenId"
    iam.delete_user(UserName=name)


def test_at_most_two_keys_even_when_raced(broker: Broker) -> None:
    iam = broker.client("iam")
    name = unique()
    iam.create_user(UserName=name)

    def attempt(_: int) -> str:
        try:
            broker.client("iam").create_access_key(UserName=name)
        except botocore.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"] + ": " + exc.response["Error"]["Message"]
        return "created"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert outcomes.count("created") == 2
    assert set(outcomes) - {"created"} == {
        "LimitExceeded: Cannot exceed quota for AccessKeysPerUser: 2"}
    assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 2


def test_root_keys_without_user_name(broker: Broker) -> None:
    _, root = broker.new_account()
    iam = broker.client("iam", root)
    listed = iam.list_access_keys()["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [root.access_key_id]
    second = iam.create_access_key()["AccessKey"]
    assert broker.client("sts", Creds(second["AccessKeyId"], second["SecretAccessKey"])) \
        .get_caller_identity()["Arn"].endswith(":root")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.create_access_key()
    assert error_of(info)[0] == "LimitExceeded"
    root_user = iam.get_user()["User"]
    assert root_user["Arn"].endswith(":root") and "UserName" not in root_user


def test_keys_are_addressed_through_their_owner(broker: Broker) -> None:
    iam = broker.client("iam")
    a, b = unique(), unique()
    iam.create_user(UserName=a)
    iam.create_user(UserName=b)
    key = iam.create_access_key(UserName=a)["AccessKey"]["AccessKeyId"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.delete_access_key(UserName=b, AccessKeyId=key)
    assert error_of(info) == ("NoSuchEntity",
                              f"The Access Key with id {key} cannot be found.", 404)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.update_access_key(AccessKeyId=key, Status="Inactive")  # root's own keys
    assert error_of(info)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.update_access_key(UserName=a, AccessKeyId=key, Status="Expired")
    assert error_of(info)[0] == "InvalidInput"
    iam.delete_access_key(UserName=a, AccessKeyId=key)  # the control


def test_last_used_is_recorded_and_survives_a_flush(broker: Broker) -> None:
    name, creds = broker.new_user()
    iam = broker.client("iam")
    never = iam.get_access_key_last_used(AccessKeyId=creds.access_key_id)
    assert never["UserName"] == name
    assert never["AccessKeyLastUsed"] == {"ServiceName": "N/A", "Region": "N/A"}
    broker.client("sts", creds, region="eu-central-1").get_caller_identity()
    used = iam.get_access_key_last_used(AccessKeyId=creds.access_key_id)["AccessKeyLastUsed"]
    assert (used["ServiceName"], used["Region"]) == ("sts", "eu-central-1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        key = broker.server.call(broker.runtime.iam.find_access_key(creds.access_key_id))
        if key is not None and key.last_used is not None:
            break
        time.sleep(0.2)
    assert key is not None and key.last_used is not None
    assert (key.last_used.service, key.last_used.region) == ("sts", "eu-central-1")


def test_last_used_of_other_accounts_keys_is_not_told(broker: Broker) -> None:
    _, other = broker.new_account()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam").get_access_key_last_used(AccessKeyId=other.access_key_id)
    assert error_of(info)[0] == "AccessDenied"


def test_iam_users_without_policies_are_refused(broker: Broker) -> None:
    name, creds = broker.new_user()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", creds).create_user(UserName="x")
    arn = f"arn:aws:iam::{broker.account_id}:user/{name}"
    code, message, status = error_of(info)
    assert (code, status) == ("AccessDenied", 403)
    assert without_encoded(message) == (
        f"User: {arn} is not authorized to perform: iam:CreateUser on resource: "
        f"arn:aws:iam::{broker.account_id}:user/x because no identity-based policy allows the "
        "iam:CreateUser action")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", creds).list_access_keys()
    assert f"iam:ListAccessKeys on resource: {arn} because" in error_of(info)[1]


def test_session_credentials_call_iam_only_with_mfa(broker: Broker) -> None:
    root_session = creds_of(broker.client("sts").get_session_token())
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", root_session).list_users()
    assert "without multi-factor authentication" in error_of(info)[1]
    broker.client("iam").list_users()  # the control: the same root, long-term key


def test_user_validation_uses_aws_messages(broker: Broker) -> None:
    iam = broker.client("iam", validate=False)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.create_user(UserName="x" * 65, Path="nope")
    code, message, status = error_of(info)
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("2 validation errors detected: ")
    assert "at 'userName' failed to satisfy constraint: Member must have length less than or " \
           "equal to 64" in message
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.create_user(UserName=unique(), Tags=[{"Key": "aws:x", "Value": "1"}])
    assert error_of(info)[0] == "InvalidInput"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        iam.create_user(UserName=unique(),
                        PermissionsBoundary="arn:aws:iam::aws:policy/PowerUserAccess")
    assert error_of(info)[0] == "NoSuchEntity"


def test_user_names_in_any_case_address_the_same_keys(broker: Broker) -> None:
    iam = broker.client("iam")
    name = "Mixed-" + uuid.uuid4().hex[:6]
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name.upper())["AccessKey"]
    assert key["UserName"] == name  # the name as created, whatever case was asked
    listed = iam.list_access_keys(UserName=name.lower())["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["UserName"]) for k in listed] == [(key["AccessKeyId"], name)]
    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    iam.delete_access_key(UserName=name.lower(), AccessKeyId=key["AccessKeyId"])
    iam.delete_user(UserName=name)


def test_concurrent_aliases_leave_one_and_reserve_no_other(broker: Broker) -> None:
    """Eight different aliases asked for one account at once: one wins, the rest are
    LimitExceeded, and none of the losers' names stays reserved."""
    _, creds = broker.new_account()
    iam = broker.client("iam", creds)
    names = [unique("alias") for _ in range(8)]

    def ask(name: str) -> str:
        try:
            iam.create_account_alias(AccountAlias=name)
        except botocore.exceptions.ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ask, names))
    assert sorted(outcomes) == ["LimitExceeded"] * 7 + ["ok"], outcomes
    winner = names[outcomes.index("ok")]
    assert iam.list_account_aliases()["AccountAliases"] == [winner]
    # Every losing name is free for another account; the winner is not.
    _, other_creds = broker.new_account()
    other = broker.client("iam", other_creds)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        other.create_account_alias(AccountAlias=winner)
    assert error_of(info)[0] == "EntityAlreadyExists"
    for name in names:
        if name != winner:
            other.create_account_alias(AccountAlias=name)
            other.delete_account_alias(AccountAlias=name)
