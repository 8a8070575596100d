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
    assert error(info) == ("AccessDenied", f"User: arn:aws:iam::{broker.account_id}:user/{user} "
                           f"is not authorized to perform: sts:AssumeRole on resource: "
                           f"{role_arn}", 403)
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
    # GetUser without a name from a role session: there is no user to be, AWS's ValidationError.
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", session).get_user()
    assert error(info) == ("ValidationError",
                           "Must specify userName when calling with non-User credentials", 400)
    # The control: with a name, the question is one of permission.
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", session).get_user(UserName=user)
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

    def bare(arn: str, action: str = "sts:AssumeRole") -> tuple[str, str, int]:
        return ("AccessDenied", f"User: arn:aws:iam::{account_b}:user/{name_b} is not "
                f"authorized to perform: {action} on resource: {arn}", 403)

    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts_b.assume_role(RoleArn=role_arn, RoleSessionName="x0")
    assert error(info) == bare(role_arn)  # B's own policy does not allow it yet
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
    assert error(info) == bare(closed)
    # A role that does not exist is refused in the very same words: nothing to learn about
    # which of A's roles exist, or what their trust policies ask for.
    missing = f"arn:aws:iam::{broker.account_id}:role/{unique('none')}"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts_b.assume_role(RoleArn=missing, RoleSessionName="x0")
    assert error(info) == bare(missing)


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


def test_a_trust_policy_names_the_identity_not_the_name(broker: Broker) -> None:
    """As on AWS, a trust policy holds the unique id of each user and role it names: a user
    deleted and made again under the same name is not trusted until the policy is saved again,
    and the sessions of deleted users and roles can do nothing."""
    iam = broker.client("iam")
    user, creds = broker.new_user()
    user_arn = f"arn:aws:iam::{broker.account_id}:user/{user}"
    role_name, role_arn = make_role(broker, trust(user_arn), policy=doc(
        {"Effect": "Allow", "Action": ["iam:ListRoles", "sts:AssumeRole"], "Resource": "*"}))
    broker.client("sts", creds).assume_role(RoleArn=role_arn, RoleSessionName="s0")  # control
    old_session = creds_of(broker.client("sts", creds).get_session_token())
    # The user goes; another of the same name comes.
    iam.delete_access_key(UserName=user, AccessKeyId=creds.access_key_id)
    iam.delete_user(UserName=user)
    _, reborn = broker.new_user(name=user)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", reborn).assume_role(RoleArn=role_arn, RoleSessionName="s1")
    assert error(info)[0] == "AccessDenied"
    # The old user's session names the old id, which the trust policy does hold; but its user
    # is gone, so it can do nothing at all.
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", old_session).assume_role(RoleArn=role_arn, RoleSessionName="s2")
    assert error(info)[0] == "AccessDenied"
    # Saving the trust policy again binds the name to the new user, as on AWS.
    iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=trust(user_arn))
    chained = creds_of(broker.client("sts", reborn).assume_role(RoleArn=role_arn,
                                                                RoleSessionName="s3"))
    broker.client("iam", chained).list_roles()

    # A role named in another role's trust policy: the same, for role sessions.
    _, target = make_role(broker, trust(role_arn))
    broker.client("sts", chained).assume_role(RoleArn=target, RoleSessionName="hop")  # control
    iam.delete_role_policy(RoleName=role_name, PolicyName="perms")
    iam.delete_role(RoleName=role_name)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("sts", chained).assume_role(RoleArn=target, RoleSessionName="hop")
    assert error(info)[0] == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        broker.client("iam", chained).list_roles()
    assert error(info)[0] == "AccessDenied"
    make_role_named = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust(
        user_arn))["Role"]
    assert make_role_named["Arn"] == role_arn
    new_session = creds_of(broker.client("sts", reborn).assume_role(RoleArn=role_arn,
                                                                    RoleSessionName="s4"))
    with pytest.raises(botocore.exceptions.ClientError) as info:  # the new role: not trusted
        broker.client("sts", new_session).assume_role(RoleArn=target, RoleSessionName="hop")
    assert error(info)[0] == "AccessDenied"


def test_trust_policies_name_users_and_roles_only(broker: Broker) -> None:
    iam = broker.client("iam")
    group = unique("grp")
    iam.create_group(GroupName=group)
    for principal in (f"arn:aws:iam::{broker.account_id}:group/{group}",
                      "arn:aws:iam::aws:policy/IAMReadOnlyAccess"):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            make_role(broker, trust(principal))
        assert error(info) == ("MalformedPolicyDocument",
                               f'Invalid principal in policy: "AWS":"{principal}"', 400)
    user, _ = broker.new_user()
    make_role(broker, trust(f"arn:aws:iam::{broker.account_id}:user/{user}"))  # the control


def test_a_trust_policy_follows_its_identities_when_they_move(broker: Broker) -> None:
    """Entries bound to a unique id name that identity whatever its ARN becomes: a Deny keeps
    applying, and an Allow keeps allowing, after the user moves to another path."""
    iam = broker.client("iam")
    account = broker.account_id
    mallory, creds = broker.new_user()
    iam.put_user_policy(UserName=mallory, PolicyName="self", PolicyDocument=doc(
        {"Effect": "Allow", "Action": ["sts:AssumeRole", "iam:UpdateUser"], "Resource": "*"}))
    _, guarded = make_role(broker, doc(
        {"Effect": "Allow", "Principal": {"AWS": account}, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{account}:user/{mallory}"},
         "Action": "sts:AssumeRole"}))
    _, named = make_role(broker, trust(f"arn:aws:iam::{account}:user/{mallory}"))
    sts = broker.client("sts", creds)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=guarded, RoleSessionName="s0")
    assert error(info)[0] == "AccessDenied"
    sts.assume_role(RoleArn=named, RoleSessionName="s0")  # the control
    broker.client("iam", creds).update_user(UserName=mallory, NewPath="/moved/")
    assert iam.get_user(UserName=mallory)["User"]["Arn"].endswith(f":user/moved/{mallory}")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sts.assume_role(RoleArn=guarded, RoleSessionName="s1")
    assert error(info)[0] == "AccessDenied"
    sts.assume_role(RoleArn=named, RoleSessionName="s1")
