"""IAM Identity Center over boto3's ``sso-admin`` client: instances (the first part of issue
16), each refusal beside the honest request that succeeds."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from broker.identitycenter.instances import Instances
from tests.helpers import Broker
from tests.integration.test_organizations import conforms

MODEL = botocore.session.get_session().get_service_model("sso-admin")


def strict(client: Any) -> Any:
    """A client whose answers are checked against the model's output shapes, and whose
    errors against the errors the model lists for the action."""
    def check(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        op = operation_model
        body = json.loads(response_dict["body"] or b"{}")
        if response_dict["status_code"] == 200:
            if op.output_shape is not None:
                conforms(body, op.output_shape, op.name)
        else:
            documented = {e.name for e in op.error_shapes}
            assert body["__type"] in documented, (op.name, body)

    client.meta.events.register("before-parse.sso-admin.*", check)
    return client


def test_an_instance_per_account(broker: Broker) -> None:
    _, root = broker.new_account()
    sso = strict(broker.client("sso-admin", root))
    assert sso.list_instances()["Instances"] == []
    made = sso.create_instance(Name="corp", ClientToken="first")
    arn = made["InstanceArn"]
    assert arn.startswith("arn:aws:sso:::instance/ssoins-") and len(arn.rsplit("-", 1)[1]) == 16
    # The same client token: the same instance; another: ConflictException (one per account).
    again = sso.create_instance(Name="corp", ClientToken="first")
    assert again["InstanceArn"] == arn
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.create_instance(Name="second", ClientToken="second")
    assert refused.value.response["Error"]["Code"] == "ConflictException"
    described = sso.describe_instance(InstanceArn=arn)
    account = broker.client("sts", root).get_caller_identity()["Account"]
    assert described["OwnerAccountId"] == account
    assert described["IdentityStoreId"].startswith("d-")
    assert described["IdentityStoreArn"] == (
        f"arn:aws:identitystore::{account}:identitystore/{described['IdentityStoreId']}")
    assert described["Status"] == "ACTIVE" and described["Name"] == "corp"
    sso.update_instance(InstanceArn=arn, Name="renamed")
    listed = sso.list_instances()["Instances"]
    assert [(i["InstanceArn"], i["Name"]) for i in listed] == [(arn, "renamed")]
    sso.delete_instance(InstanceArn=arn)
    assert sso.list_instances()["Instances"] == []
    sso.create_instance()  # free again: the control


def test_another_accounts_instance_is_not_seen(broker: Broker) -> None:
    _, owner = broker.new_account()
    _, other = broker.new_account()
    arn = broker.client("sso-admin", owner).create_instance()["InstanceArn"]
    theirs = strict(broker.client("sso-admin", other))
    for action, params in (("describe_instance", {"InstanceArn": arn}),
                           ("delete_instance", {"InstanceArn": arn})):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            getattr(theirs, action)(**params)
        assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        theirs.update_instance(InstanceArn=arn, Name="x")
    assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert theirs.list_instances()["Instances"] == []
    # The owner still has it, unchanged: the control.
    kept = broker.client("sso-admin", owner).describe_instance(InstanceArn=arn)
    assert kept["InstanceArn"] == arn


def test_instances_are_authorized_and_validated(broker: Broker) -> None:
    _, root = broker.new_account()
    name, user = broker.new_user(root)
    sso = strict(broker.client("sso-admin", user))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.create_instance()
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    broker.client("iam", root).put_user_policy(
        UserName=name, PolicyName="sso", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sso:*",'
            '"Resource":"*"}]}'))
    sso.create_instance(Name="allowed")  # the control
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        broker.client("sso-admin", user, validate=False).describe_instance(InstanceArn="x" * 9)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "failed to satisfy constraint" in refused.value.response["Error"]["Message"]


def test_an_instance_made_in_a_management_account_is_the_organizations(broker: Broker) -> None:
    management, management_root = broker.new_account()
    broker.client("organizations", management_root).create_organization()
    broker.client("sso-admin", management_root).create_instance()
    alone, alone_root = broker.new_account()  # the control: an account in no organization
    broker.client("sso-admin", alone_root).create_instance()
    reader = Instances(broker.runtime.store, broker.runtime.clock)
    scopes = [broker.server.call(reader.of_account(a)) for a in (management, alone)]
    assert [s.scope if s else None for s in scopes] == ["ORGANIZATION", "ACCOUNT"]
