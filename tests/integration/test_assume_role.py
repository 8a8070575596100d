"""AssumeRole within an account and across accounts, through boto3 against a real server."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest

from tests.helpers import Broker, Creds, creds_of


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust(*principals: str, **extra: Any) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": list(principals)},
                                 "Action": ["sts:AssumeRole", "sts:TagSession",
                                            "sts:SetSourceIdentity"]}
    statement.update(extra)
    return doc(statement)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def make_role(broker: Broker, trust_policy: str, *, creds: Creds | None = None,
              max_session: int = 3600, policy: str | None = None) -> tuple[str, str]:
    iam = broker.client("iam", creds)
    name = unique("role")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy,
                           MaxSessionDuration=max_session)["Role"]
    if policy is not None:
        iam.put_role_policy(RoleName=name, PolicyName="perms", PolicyDocument=policy)
    return name, role["Arn"]


def test_user_named_in_the_trust_policy_needs_no_identity_policy(broker: Broker) -> None:
    user, creds = broker.new_user()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{user}"
    name, role_arn = make_role(broker, trust(user_arn))
    result = broker.client("sts", creds).assume_role(RoleArn=role_arn, RoleSessionName="s1")
    assumed = result["AssumedRoleUser"]
    assert assumed["Arn"] == f"arn:aws:sts::{broker.account_id}:assumed-role/{name}/s1"
    role_id = broker.client("iam").get_role(RoleName=name)["Role"]["RoleId"]
    assert role_id.startswith("AROA") and assumed["AssumedRoleId"] == f"{role_id}:s1"
    who = broker.client("sts", creds_of(result)).get_caller_identity()
    assert (who["Arn"], who["UserId"]) == (assumed["Arn"], assumed["AssumedRoleId"])
    # Another user of the same account is not named: refused.
    _, other = broker.new_user()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", other).assume_role(RoleArn=role_arn, RoleSessionName="s1")
    code, message, status = error(info)
    assert (code, status) == ("AccessDenied", 403)
    assert message.startswith(f"User: arn:aws:iam::{broker.account_id}:user/")
    assert f"is not authorized to perform: sts:AssumeRole on resource: {role_arn}" in message


def test_the_root_user_cannot_assume_roles(broker: Broker) -> None:
    """AWS refuses AssumeRole with root credentials, even when the trust policy names the
    account; a user of the account, with an identity policy, assumes the same role."""
    _, role_arn = make_role(broker, trust(broker.account_id))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="root")
    assert error(info) == ("AccessDenied", "Roles may not be assumed by root accounts.", 403)
    user, creds = broker.new_user()
    broker.client("iam").put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}))
    broker.client("sts", creds).assume_role(RoleArn=role_arn, RoleSessionName="user")


def test_account_named_in_the_trust_policy_needs_an_identity_policy(broker: Broker) -> None:
    user, creds = broker.new_user()
    _, role_arn = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:root"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds).assume_role(RoleArn=role_arn, RoleSessionName="s0")
    assert "because no identity-based policy allows the sts:AssumeRole action" in \
        error(info)[1]
    broker.client("iam").put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}))
    broker.client("sts", creds).assume_role(RoleArn=role_arn, RoleSessionName="s0")


def test_role_permissions_apply_to_the_session(broker: Broker) -> None:
    user, creds = broker.new_user()
    _, role_arn = make_role(
        broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"),
        policy=doc({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    session = creds_of(broker.client("sts", creds).assume_role(RoleArn=role_arn,
                                                               RoleSessionName="s0"))
    assert broker.client("iam", session).list_roles()["Roles"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", session).list_users()
    assert error(info)[0] == "AccessDenied"


def test_session_policies_only_narrow(broker: Broker) -> None:
    user, creds = broker.new_user()
    _, role_arn = make_role(
        broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"),
        policy=doc({"Effect": "Allow", "Action": ["iam:ListRoles", "iam:ListUsers"],
                    "Resource": "*"}))
    result = broker.client("sts", creds).assume_role(
        RoleArn=role_arn, RoleSessionName="narrow",
        Policy=doc({"Effect": "Allow", "Action": ["iam:ListRoles", "iam:ListGroups"],
                    "Resource": "*"}))
    assert 0 < result["PackedPolicySize"] <= 100
    session = creds_of(result)
    broker.client("iam", session).list_roles()  # in both: allowed
    for refused in ("list_users", "list_groups"):  # in one only: refused
        with pytest.raises(botocore.exceptions.ClientError) as info:
            getattr(broker.client("iam", session), refused)()
        assert error(info)[0] == "AccessDenied"


def test_external_id(broker: Broker) -> None:
    user, creds = broker.new_user()
    _, role_arn = make_role(broker, trust(
        f"arn:aws:iam::{broker.account_id}:user/{user}",
        Condition={"StringEquals": {"sts:ExternalId": "s3cr3t-id"}}))
    sts = broker.client("sts", creds)
    for wrong in ({}, {"ExternalId": "other-id"}):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sts.assume_role(RoleArn=role_arn, RoleSessionName="s0", **wrong)
        assert error(info)[0] == "AccessDenied"
    sts.assume_role(RoleArn=role_arn, RoleSessionName="s0", ExternalId="s3cr3t-id")


def test_durations(broker: Broker) -> None:
    user, creds = broker.new_user()
    _, role_arn = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"),
                            max_session=7200)
    sts = broker.client("sts", creds)
    before = datetime.now(UTC)
    default = sts.assume_role(RoleArn=role_arn, RoleSessionName="d0")["Credentials"]
    assert default["Expiration"] - before <= timedelta(seconds=3601)
    longer = sts.assume_role(RoleArn=role_arn, RoleSessionName="l0", DurationSeconds=7200)
    assert longer["Credentials"]["Expiration"] - before > timedelta(seconds=7100)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="x0", DurationSeconds=7201)
    assert error(info) == ("ValidationError", "The requested DurationSeconds exceeds the "
                           "MaxSessionDuration set for this role.", 400)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds, validate=False).assume_role(
            RoleArn=role_arn, RoleSessionName="x0", DurationSeconds=899)
    assert error(info)[0] == "ValidationError"


def test_role_chaining_is_capped_at_an_hour(broker: Broker) -> None:
    user, creds = broker.new_user()
    first_name, first = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"))
    _, second = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:role/{first_name}"),
                          max_session=43200)
    session = creds_of(broker.client("sts", creds).assume_role(RoleArn=first,
                                                               RoleSessionName="hop1"))
    sts = broker.client("sts", session)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=second, RoleSessionName="hop2", DurationSeconds=3601)
    assert error(info) == ("ValidationError", "The requested DurationSeconds exceeds the 1 hour "
                           "session limit for roles assumed by role chaining.", 400)
    chained = sts.assume_role(RoleArn=second, RoleSessionName="hop2", DurationSeconds=3600)
    assert chained["AssumedRoleUser"]["Arn"].endswith("/hop2")


def test_session_tags_need_tag_session_and_carry_transitively(broker: Broker) -> None:
    user, creds = broker.new_user()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{user}"
    no_tags = doc({"Effect": "Allow", "Principal": {"AWS": user_arn},
                   "Action": "sts:AssumeRole"})
    _, untaggable = make_role(broker, no_tags)
    sts = broker.client("sts", creds)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=untaggable, RoleSessionName="t0",
                        Tags=[{"Key": "team", "Value": "blue"}])
    assert "sts:TagSession" in error(info)[1]
    sts.assume_role(RoleArn=untaggable, RoleSessionName="t0")  # the control: no tags

    first_name, first = make_role(broker, trust(user_arn))
    _, second = make_role(
        broker, trust(f"arn:aws:iam::{broker.account_id}:role/{first_name}"),
        policy=doc({"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*",
                    "Condition": {"StringEquals": {"aws:PrincipalTag/team": "blue"}}}))
    session = creds_of(sts.assume_role(
        RoleArn=first, RoleSessionName="t1", Tags=[{"Key": "team", "Value": "blue"},
                                                   {"Key": "cost", "Value": "1"}],
        TransitiveTagKeys=["team"]))
    chained = broker.client("sts", session)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        chained.assume_role(RoleArn=second, RoleSessionName="t2",
                            Tags=[{"Key": "TEAM", "Value": "red"}])
    assert error(info)[0] == "InvalidParameterValue"
    hop = creds_of(chained.assume_role(RoleArn=second, RoleSessionName="t2"))
    # The transitive tag reached the second session, where a condition reads it.
    assert broker.client("iam", hop).list_users()["Users"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=first, RoleSessionName="t0", Tags=[{"Key": "a", "Value": "1"}],
                        TransitiveTagKeys=["b"])
    assert error(info)[0] == "InvalidParameterValue"


def test_source_identity_is_permitted_and_immutable(broker: Broker) -> None:
    user, creds = broker.new_user()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{user}"
    _, plain = make_role(broker, doc({"Effect": "Allow", "Principal": {"AWS": user_arn},
                                      "Action": "sts:AssumeRole"}))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds).assume_role(RoleArn=plain, RoleSessionName="s0",
                                                SourceIdentity="alice")
    assert "sts:SetSourceIdentity" in error(info)[1]
    first_name, first = make_role(broker, trust(user_arn))
    result = broker.client("sts", creds).assume_role(RoleArn=first, RoleSessionName="s0",
                                                     SourceIdentity="alice")
    assert result["SourceIdentity"] == "alice"
    _, second = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:role/{first_name}"))
    chained = broker.client("sts", creds_of(result))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        chained.assume_role(RoleArn=second, RoleSessionName="s2", SourceIdentity="mallory")
    assert error(info)[0] == "InvalidParameterValue"
    kept = chained.assume_role(RoleArn=second, RoleSessionName="s2")
    assert kept["SourceIdentity"] == "alice"


def test_missing_role_answers_like_a_refusal(broker: Broker) -> None:
    _, creds = broker.new_user()
    missing = f"arn:aws:iam::{broker.account_id}:role/does-not-exist"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", creds).assume_role(RoleArn=missing, RoleSessionName="s0")
    code, message, status = error(info)
    assert (code, status) == ("AccessDenied", 403)
    assert message.endswith(f"sts:AssumeRole on resource: {missing}")


def test_cross_account_needs_both_sides(broker: Broker) -> None:
    account_b, root_b = broker.new_account()
    name_b = unique("b-user")
    iam_b = broker.client("iam", root_b)
    iam_b.create_user(UserName=name_b)
    key = iam_b.create_access_key(UserName=name_b)["AccessKey"]
    creds_b = Creds(key["AccessKeyId"], key["SecretAccessKey"])
    # A role in account A that trusts account B.
    _, role_arn = make_role(
        broker, trust(f"arn:aws:iam::{account_b}:root"),
        policy=doc({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    sts_b = broker.client("sts", creds_b)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts_b.assume_role(RoleArn=role_arn, RoleSessionName="x0")
    assert "because no identity-based policy allows the sts:AssumeRole action" in \
        error(info)[1]
    iam_b.put_user_policy(UserName=name_b, PolicyName="assume", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}))
    result = sts_b.assume_role(RoleArn=role_arn, RoleSessionName="x0")
    session = creds_of(result)
    who = broker.client("sts", session).get_caller_identity()
    assert who["Account"] == broker.account_id != account_b
    assert broker.client("iam", session).list_roles()["Roles"]
    # A role of A that does not trust B: B's own policy allowing it is not enough.
    _, closed = make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:root"))
    iam_b.put_user_policy(UserName=name_b, PolicyName="assume", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts_b.assume_role(RoleArn=closed, RoleSessionName="x0")
    assert "because no resource-based policy allows the sts:AssumeRole action" in \
        error(info)[1]


def test_revoking_older_sessions_by_token_issue_time(broker: Broker) -> None:
    user, creds = broker.new_user()
    role_name, role_arn = make_role(
        broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"),
        policy=doc({"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}))
    sts = broker.client("sts", creds)
    old = creds_of(sts.assume_role(RoleArn=role_arn, RoleSessionName="old"))
    broker.client("iam", old).list_roles()  # the control: works before the revocation
    time.sleep(1.1)  # token issue times have a one-second grain
    cutoff = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # What the console's "Revoke active sessions" writes.
    broker.client("iam").put_role_policy(RoleName=role_name, PolicyName="AWSRevokeOlderSessions",
                                         PolicyDocument=doc({
                                             "Effect": "Deny", "Action": ["*"],
                                             "Resource": ["*"],
                                             "Condition": {"DateLessThan": {
                                                 "aws:TokenIssueTime": cutoff}}}))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", old).list_roles()
    assert "with an explicit deny in an identity-based policy" in error(info)[1]
    time.sleep(1.1)
    fresh = creds_of(sts.assume_role(RoleArn=role_arn, RoleSessionName="new"))
    broker.client("iam", fresh).list_roles()
