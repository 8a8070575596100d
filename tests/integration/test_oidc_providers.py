"""OpenID Connect providers through the IAM API (CreateOpenIDConnectProvider and the rest), driven
by boto3 and the AWS CLI against a real server: round trips, AWS's errors (code, message,
status), botocore's shapes, authorization. Every refusal has a control beside it that succeeds.

Where AWS's own answer is known it is what the test expects: "Provider with url URL already
exists." (409), "OpenIDConnect Provider not found for arn ARN" (404), "Thumbprint list must
contain fewer than 5 entries." (InvalidInput, 400), "Cannot exceed quota for
ClientIdsPerOpenIdConnectProvider: 100" (409).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.e2e.support import aws
from tests.helpers import Broker, Creds, signed_request
from tests.helpers import allow_policy as allow

ClientError = botocore.exceptions.ClientError
THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
OTHER_THUMBPRINT = "1c58a3a8518e8759bf075b76b750d4f2df264fcd"


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def host() -> str:
    return f"idp-{uuid.uuid4().hex[:10]}.example.com"


def account_iam(broker: Broker) -> tuple[str, Any]:
    """A fresh account (its listings hold only what the test makes) and its root's client."""
    account_id, root = broker.new_account()
    return account_id, broker.client("iam", root)


def create(iam: Any, url: str | None = None, **params: Any) -> str:
    params.setdefault("ClientIDList", ["client-1"])
    params.setdefault("ThumbprintList", [THUMBPRINT])
    created = iam.create_open_id_connect_provider(Url=url or f"https://{host()}", **params)
    return str(created["OpenIDConnectProviderArn"])


def set_jwks(broker: Broker, creds: Creds, provider_arn: str,
             jwks: str | None = None) -> httpx.Response:
    """SetOpenIDConnectProviderJWKS, the broker's own action (boto3 has no method for it)."""
    params = {"Action": "SetOpenIDConnectProviderJWKS", "Version": "2010-05-08",
              "OpenIDConnectProviderArn": provider_arn}
    if jwks is not None:
        params["Jwks"] = jwks
    method, url, headers, body = signed_request(broker.url, params, creds, service="iam")
    return httpx.request(method, url, headers=headers, content=body)


def outcome(attempt: Callable[[], Any]) -> tuple[str, str, int]:
    """(code, message, status) of an IAM call through boto3 or a ``set_jwks`` response;
    ("", "", 200) when it succeeds."""
    try:
        result = attempt()
    except ClientError as exc:
        r = exc.response
        return (r["Error"]["Code"], r["Error"]["Message"],
                r["ResponseMetadata"]["HTTPStatusCode"])
    if isinstance(result, httpx.Response) and result.status_code != 200:
        code = re.search(r"<Code>(.*?)</Code>", result.text)
        message = re.search(r"<Message>(.*?)</Message>", result.text, re.S)
        return (code.group(1) if code else "", message.group(1) if message else "",
                result.status_code)
    return ("", "", 200)


# -- round trips --------------------------------------------------------------------------------


def test_create_get_list_and_delete(broker: Broker) -> None:
    account, iam = account_iam(broker)
    name = host()
    created = iam.create_open_id_connect_provider(
        Url=f"https://{name}:8443/realms/blue", ClientIDList=["web", "cli"],
        ThumbprintList=[THUMBPRINT, OTHER_THUMBPRINT],
        Tags=[{"Key": "team", "Value": "blue"}, {"Key": "cost", "Value": "42"}])
    provider_arn = created["OpenIDConnectProviderArn"]
    assert provider_arn == f"arn:aws:iam::{account}:oidc-provider/{name}:8443/realms/blue"
    assert created["Tags"] == [{"Key": "cost", "Value": "42"}, {"Key": "team", "Value": "blue"}]

    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert got["Url"] == f"{name}:8443/realms/blue"  # without its scheme, as AWS answers
    assert got["ClientIDList"] == ["web", "cli"]
    assert got["ThumbprintList"] == [THUMBPRINT, OTHER_THUMBPRINT]
    assert got["Tags"] == [{"Key": "cost", "Value": "42"}, {"Key": "team", "Value": "blue"}]
    created_at: datetime = got["CreateDate"]
    assert abs((created_at - datetime.now(UTC)).total_seconds()) < 60

    plain = create(iam, f"https://{name}")  # the same host without port or path: another one
    assert plain == f"arn:aws:iam::{account}:oidc-provider/{name}"
    listed = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert sorted(p["Arn"] for p in listed) == sorted([provider_arn, plain])

    iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert [p["Arn"] for p in iam.list_open_id_connect_providers()[
        "OpenIDConnectProviderList"]] == [plain]
    for attempt in (iam.get_open_id_connect_provider, iam.delete_open_id_connect_provider):
        with pytest.raises(ClientError) as info:
            attempt(OpenIDConnectProviderArn=provider_arn)
        assert error_of(info) == ("NoSuchEntity",
                                  f"OpenIDConnect Provider not found for arn {provider_arn}", 404)
    iam.get_open_id_connect_provider(OpenIDConnectProviderArn=plain)  # the control


def test_a_provider_without_lists_or_tags_answers_empty_lists(broker: Broker) -> None:
    _, iam = account_iam(broker)
    created = iam.create_open_id_connect_provider(Url=f"https://{host()}")
    assert "Tags" not in created  # as AWS answers a create without tags
    got = iam.get_open_id_connect_provider(
        OpenIDConnectProviderArn=created["OpenIDConnectProviderArn"])
    assert (got["ClientIDList"], got["ThumbprintList"], got["Tags"]) == ([], [], [])


def test_a_url_already_registered_is_entity_already_exists(broker: Broker) -> None:
    _, iam = account_iam(broker)
    url = f"https://{host()}/tenant"
    provider_arn = create(iam, url, ClientIDList=["first"])
    with pytest.raises(ClientError) as info:
        create(iam, url, ClientIDList=["second"])
    assert error_of(info) == ("EntityAlreadyExists", f"Provider with url {url} already exists.",
                              409)
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert got["ClientIDList"] == ["first"]  # untouched
    create(iam, url + "/other")  # the control: another path is another provider
    # another account may register the same URL
    _, other = account_iam(broker)
    create(other, url)


def test_client_ids_are_added_and_removed_idempotently(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, ClientIDList=["a"])

    def client_ids() -> list[str]:
        got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
        return list(got["ClientIDList"])

    iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                  ClientID="b")
    assert client_ids() == ["a", "b"]
    iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                  ClientID="b")
    assert client_ids() == ["a", "b"]
    iam.remove_client_id_from_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                       ClientID="a")
    assert client_ids() == ["b"]
    iam.remove_client_id_from_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                       ClientID="a")
    assert client_ids() == ["b"]


def test_at_most_100_client_ids(broker: Broker) -> None:
    _, iam = account_iam(broker)
    quota = ("LimitExceeded", "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: 100",
             409)
    with pytest.raises(ClientError) as info:
        create(iam, ClientIDList=[f"c{i}" for i in range(101)])
    assert error_of(info) == quota
    provider_arn = create(iam, ClientIDList=[f"c{i}" for i in range(100)])  # the control
    with pytest.raises(ClientError) as info:
        iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                      ClientID="c100")
    assert error_of(info) == quota
    iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                                  ClientID="c99")  # already there


def test_thumbprints_are_replaced(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, ThumbprintList=[THUMBPRINT])
    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn,
                                                   ThumbprintList=[OTHER_THUMBPRINT, THUMBPRINT])
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert got["ThumbprintList"] == [OTHER_THUMBPRINT, THUMBPRINT]
    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn,
                                                   ThumbprintList=[THUMBPRINT])
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert got["ThumbprintList"] == [THUMBPRINT]


def test_tags_round_trip_in_pages(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam, Tags=[{"Key": "a", "Value": "1"}])
    iam.tag_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                     Tags=[{"Key": "A", "Value": "2"}, {"Key": "b", "Value": "3"},
                                           {"Key": "c", "Value": "4"}])
    first = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider_arn,
                                                   MaxItems=2)
    assert first["Tags"] == [{"Key": "A", "Value": "2"}, {"Key": "b", "Value": "3"}]
    assert first["IsTruncated"] is True
    rest = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider_arn,
                                                  Marker=first["Marker"])
    assert rest["Tags"] == [{"Key": "c", "Value": "4"}] and rest["IsTruncated"] is False
    iam.untag_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn,
                                       TagKeys=["b", "missing"])
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)["Tags"] == \
        [{"Key": "A", "Value": "2"}, {"Key": "c", "Value": "4"}]


# -- AWS's errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://{host}", "https://{host}/?tenant=blue", "https://{host}/#tenant",
    "https://user@{host}", "https://user:secret@{host}", "ftp://{host}",
])
def test_an_unusable_url_is_invalid_input(broker: Broker, url: str) -> None:
    _, iam = account_iam(broker)
    name = host()
    with pytest.raises(ClientError) as info:
        create(iam, url.format(host=name))
    code, message, status = error_of(info)
    assert (code, status) == ("InvalidInput", 400)
    assert message.startswith("Invalid URL: "), message
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    create(iam, f"https://{name}")  # the control


def test_six_thumbprints_are_refused(broker: Broker) -> None:
    """AWS answers InvalidInput (400) "Thumbprint list must contain fewer than 5 entries." to
    six thumbprints, on create and on update, though five are accepted."""
    _, iam = account_iam(broker)
    five = [f"{i}" * 40 for i in range(5)]
    six = [*five, "ab" * 20]
    expected = ("InvalidInput", "Thumbprint list must contain fewer than 5 entries.", 400)
    with pytest.raises(ClientError) as info:
        create(iam, ThumbprintList=six)
    assert error_of(info) == expected
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    provider_arn = create(iam, ThumbprintList=five)  # the control
    with pytest.raises(ClientError) as info:
        iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn,
                                                       ThumbprintList=six)
    assert error_of(info) == expected
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert got["ThumbprintList"] == five


@pytest.mark.parametrize(("params", "member", "constraint"), [
    ({"ThumbprintList": ["a" * 39]}, "thumbprintList",
     "Member must have length greater than or equal to 40"),
    ({"ThumbprintList": ["a" * 41]}, "thumbprintList",
     "Member must have length less than or equal to 40"),
    ({"ClientIDList": [""]}, "clientIDList",
     "Member must have length greater than or equal to 1"),
    ({"url": "https://" + "a" * 248}, "url", "Member must have length less than or equal to 255"),
])
def test_values_outside_botocores_shapes_are_validation_errors(
        broker: Broker, params: dict[str, Any], member: str, constraint: str) -> None:
    _, root = broker.new_account()
    unchecked = broker.client("iam", root, validate=False)  # boto3 would refuse them itself
    with pytest.raises(ClientError) as info:
        create(unchecked, **params)
    code, message, status = error_of(info)
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("1 validation error detected: Value '"), message
    assert f"' at '{member}" in message and message.endswith(constraint), message
    create(unchecked)  # the control


def test_a_thumbprint_that_is_not_hexadecimal_is_invalid_input(broker: Broker) -> None:
    _, iam = account_iam(broker)
    for bad in ("g" * 40, "9e:99:a4:8a:99:60:b1:49:26:bb:7f:3b:02:e2"[:40], " " * 40):
        with pytest.raises(ClientError) as info:
            create(iam, ThumbprintList=[bad])
        code, message, status = error_of(info)
        assert (code, status) == ("InvalidInput", 400), bad
        assert bad in message, message
    provider_arn = create(iam, ThumbprintList=[THUMBPRINT.upper()])  # the control
    with pytest.raises(ClientError) as info:
        iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=provider_arn,
                                                       ThumbprintList=["z" * 40])
    assert error_of(info)[0::2] == ("InvalidInput", 400)


def test_every_action_on_a_missing_provider_is_no_such_entity(broker: Broker) -> None:
    account, iam = account_iam(broker)
    existing = create(iam)
    missing = f"arn:aws:iam::{account}:oidc-provider/{host()}"
    actions: dict[str, Callable[[str], Any]] = {
        "get": lambda a: iam.get_open_id_connect_provider(OpenIDConnectProviderArn=a),
        "add client id": lambda a: iam.add_client_id_to_open_id_connect_provider(
            OpenIDConnectProviderArn=a, ClientID="x"),
        "remove client id": lambda a: iam.remove_client_id_from_open_id_connect_provider(
            OpenIDConnectProviderArn=a, ClientID="x"),
        "update thumbprint": lambda a: iam.update_open_id_connect_provider_thumbprint(
            OpenIDConnectProviderArn=a, ThumbprintList=[THUMBPRINT]),
        "tag": lambda a: iam.tag_open_id_connect_provider(
            OpenIDConnectProviderArn=a, Tags=[{"Key": "k", "Value": "v"}]),
        "untag": lambda a: iam.untag_open_id_connect_provider(OpenIDConnectProviderArn=a,
                                                              TagKeys=["k"]),
        "list tags": lambda a: iam.list_open_id_connect_provider_tags(
            OpenIDConnectProviderArn=a),
        "delete": lambda a: iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=a),
    }
    for what, action in actions.items():
        with pytest.raises(ClientError) as info:
            action(missing)
        assert error_of(info) == ("NoSuchEntity",
                                  f"OpenIDConnect Provider not found for arn {missing}",
                                  404), what
        action(existing)  # the control (delete last)


@pytest.mark.parametrize("shape", ["arn:aws:iam::{account}:role/{name}",
                                   "arn:aws:iam::{account}:saml-provider/{name}",
                                   "arn:aws:sts::{account}:oidc-provider/{name}",
                                   "arn:aws:iam::{account}:oidc-provider/{name}/extra",
                                   "not-an-arn-at-all-{name}"])
def test_an_arn_that_names_no_provider_is_no_such_entity(broker: Broker, shape: str) -> None:
    account, iam = account_iam(broker)
    name = host()
    create(iam, f"https://{name}")
    iam.get_open_id_connect_provider(
        OpenIDConnectProviderArn=f"arn:aws:iam::{account}:oidc-provider/{name}")
    wrong = shape.format(account=account, name=name)
    with pytest.raises(ClientError) as info:
        iam.get_open_id_connect_provider(OpenIDConnectProviderArn=wrong)
    assert error_of(info) == ("NoSuchEntity", f"OpenIDConnect Provider not found for arn {wrong}",
                              404)


def test_another_account_sees_none_of_them(broker: Broker) -> None:
    _, iam = account_iam(broker)
    provider_arn = create(iam)
    iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    _, other = account_iam(broker)
    assert other.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    for attempt in (other.get_open_id_connect_provider, other.delete_open_id_connect_provider):
        with pytest.raises(ClientError) as info:
            attempt(OpenIDConnectProviderArn=provider_arn)
        assert error_of(info) == ("NoSuchEntity",
                                  f"OpenIDConnect Provider not found for arn {provider_arn}", 404)
    iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)  # still there


# -- authorization ------------------------------------------------------------------------------


def test_a_user_without_permission_is_refused(broker: Broker) -> None:
    account = broker.account_id
    iam = broker.client("iam")
    provider_arn = create(iam)
    name, creds = broker.new_user()
    as_user = broker.client("iam", creds)
    jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "kid": "k1",
                                 "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                 "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})

    attempts: dict[str, Callable[[], Any]] = {
        "CreateOpenIDConnectProvider": lambda: create(as_user),
        "GetOpenIDConnectProvider": lambda: as_user.get_open_id_connect_provider(
            OpenIDConnectProviderArn=provider_arn),
        "ListOpenIDConnectProviders": lambda: as_user.list_open_id_connect_providers(),
        "AddClientIDToOpenIDConnectProvider":
            lambda: as_user.add_client_id_to_open_id_connect_provider(
                OpenIDConnectProviderArn=provider_arn, ClientID="new"),
        "RemoveClientIDFromOpenIDConnectProvider":
            lambda: as_user.remove_client_id_from_open_id_connect_provider(
                OpenIDConnectProviderArn=provider_arn, ClientID="new"),
        "UpdateOpenIDConnectProviderThumbprint":
            lambda: as_user.update_open_id_connect_provider_thumbprint(
                OpenIDConnectProviderArn=provider_arn, ThumbprintList=[OTHER_THUMBPRINT]),
        "TagOpenIDConnectProvider": lambda: as_user.tag_open_id_connect_provider(
            OpenIDConnectProviderArn=provider_arn, Tags=[{"Key": "k", "Value": "v"}]),
        "UntagOpenIDConnectProvider": lambda: as_user.untag_open_id_connect_provider(
            OpenIDConnectProviderArn=provider_arn, TagKeys=["k"]),
        "ListOpenIDConnectProviderTags": lambda: as_user.list_open_id_connect_provider_tags(
            OpenIDConnectProviderArn=provider_arn),
        "SetOpenIDConnectProviderJWKS": lambda: set_jwks(broker, creds, provider_arn, jwks),
        "DeleteOpenIDConnectProvider": lambda: as_user.delete_open_id_connect_provider(
            OpenIDConnectProviderArn=provider_arn),
    }
    for action, attempt in attempts.items():
        code, message, status = outcome(attempt)
        assert (code, status) == ("AccessDenied", 403), action
        assert message.startswith(f"User: arn:aws:iam::{account}:user/{name} is not authorized "
                                  f"to perform: iam:{action} on resource: "), message
    iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)  # untouched
    # the control: a policy allowing the actions lets the same user do each of them
    iam.put_user_policy(UserName=name, PolicyName="oidc",
                        PolicyDocument=allow("iam:*OpenIDConnectProvider*", "*"))
    for action, attempt in attempts.items():
        assert outcome(attempt) == ("", "", 200), action


def test_permissions_follow_the_provider_arn(broker: Broker) -> None:
    account = broker.account_id
    iam = broker.client("iam")
    allowed, other = create(iam), create(iam)
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="oidc",
                        PolicyDocument=allow("iam:GetOpenIDConnectProvider", allowed))
    as_user = broker.client("iam", creds)
    got = as_user.get_open_id_connect_provider(OpenIDConnectProviderArn=allowed)
    assert got["Url"] == allowed.split(":oidc-provider/", 1)[1]
    with pytest.raises(ClientError) as info:
        as_user.get_open_id_connect_provider(OpenIDConnectProviderArn=other)
    code, message, status = error_of(info)
    assert (code, status) == ("AccessDenied", 403)
    assert message.startswith(f"User: arn:aws:iam::{account}:user/{name} is not authorized to "
                              f"perform: iam:GetOpenIDConnectProvider on resource: {other} "
                              "because"), message
    # other actions on the allowed provider are not allowed
    assert outcome(lambda: as_user.delete_open_id_connect_provider(
        OpenIDConnectProviderArn=allowed))[0] == "AccessDenied"
    assert outcome(lambda: as_user.list_open_id_connect_provider_tags(
        OpenIDConnectProviderArn=allowed))[0] == "AccessDenied"
    iam.get_open_id_connect_provider(OpenIDConnectProviderArn=allowed)  # not deleted


def test_tag_conditions_apply(broker: Broker) -> None:
    iam = broker.client("iam")
    blue = create(iam, Tags=[{"Key": "team", "Value": "blue"}])
    red = create(iam, Tags=[{"Key": "team", "Value": "red"}])
    name, creds = broker.new_user()
    iam.put_user_policy(UserName=name, PolicyName="oidc", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:GetOpenIDConnectProvider", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
            {"Effect": "Allow", "Action": "iam:CreateOpenIDConnectProvider", "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"},
                           "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}}]}))
    as_user = broker.client("iam", creds)
    as_user.get_open_id_connect_provider(OpenIDConnectProviderArn=blue)
    with pytest.raises(ClientError) as info:
        as_user.get_open_id_connect_provider(OpenIDConnectProviderArn=red)
    assert error_of(info)[0] == "AccessDenied"
    create(as_user, Tags=[{"Key": "team", "Value": "blue"}])
    with pytest.raises(ClientError) as info:
        create(as_user, Tags=[{"Key": "team", "Value": "red"}])
    assert error_of(info)[0] == "AccessDenied"


# -- the AWS CLI --------------------------------------------------------------------------------


def test_the_aws_cli_creates_lists_and_gets_a_provider(broker: Broker) -> None:
    account, root_creds = broker.new_account()
    root = (root_creds.access_key_id, root_creds.secret_access_key)
    name = host()
    code, created, err = aws(broker.url, root, "iam", "create-open-id-connect-provider",
                             "--url", f"https://{name}/tenant", "--client-id-list", "web", "cli",
                             "--thumbprint-list", THUMBPRINT,
                             "--tags", "Key=team,Value=cli")
    assert code == 0, err
    provider_arn = f"arn:aws:iam::{account}:oidc-provider/{name}/tenant"
    assert created == {"OpenIDConnectProviderArn": provider_arn,
                       "Tags": [{"Key": "team", "Value": "cli"}]}

    code, listed, err = aws(broker.url, root, "iam", "list-open-id-connect-providers")
    assert code == 0, err
    assert listed == {"OpenIDConnectProviderList": [{"Arn": provider_arn}]}

    code, got, err = aws(broker.url, root, "iam", "get-open-id-connect-provider",
                         "--open-id-connect-provider-arn", provider_arn)
    assert code == 0, err
    assert got["Url"] == f"{name}/tenant"
    assert (got["ClientIDList"], got["ThumbprintList"]) == (["web", "cli"], [THUMBPRINT])
    assert got["Tags"] == [{"Key": "team", "Value": "cli"}]
    assert abs((datetime.fromisoformat(got["CreateDate"]) - datetime.now(UTC))
               .total_seconds()) < 60

    # the refusal: the same URL again
    code, _, err = aws(broker.url, root, "iam", "create-open-id-connect-provider",
                       "--url", f"https://{name}/tenant", "--thumbprint-list", THUMBPRINT)
    assert code != 0
    assert ("An error occurred (EntityAlreadyExists) when calling the "
            f"CreateOpenIDConnectProvider operation: Provider with url https://{name}/tenant "
            "already exists.") in err
