"""The AWS CLI, run as a user runs it, against a real broker server."""

from __future__ import annotations

from tests.e2e.support import aws
from tests.helpers import Broker


def test_cli_sts_and_iam(broker: Broker) -> None:
    root = (broker.root.access_key_id, broker.root.secret_access_key)
    code, who, err = aws(broker.url, root, "sts", "get-caller-identity")
    assert code == 0, err
    assert who == {"UserId": broker.account_id, "Account": broker.account_id,
                   "Arn": f"arn:aws:iam::{broker.account_id}:root"}

    code, created, err = aws(broker.url, root, "iam", "create-user", "--user-name", "cli-user",
                             "--path", "/cli/", "--tags", "Key=team,Value=cli")
    assert code == 0, err
    assert created["User"]["Arn"] == f"arn:aws:iam::{broker.account_id}:user/cli/cli-user"

    code, key, err = aws(broker.url, root, "iam", "create-access-key", "--user-name", "cli-user")
    assert code == 0, err
    user = (key["AccessKey"]["AccessKeyId"], key["AccessKey"]["SecretAccessKey"])
    code, who, err = aws(broker.url, user, "sts", "get-caller-identity", region="ap-south-1")
    assert code == 0, err
    assert who["Arn"].endswith(":user/cli/cli-user")

    code, session, err = aws(broker.url, user, "sts", "get-session-token",
                             "--duration-seconds", "900")
    assert code == 0, err
    c = session["Credentials"]
    code, who, err = aws(broker.url, (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]),
                         "sts", "get-caller-identity")
    assert code == 0 and who["Arn"].endswith(":user/cli/cli-user"), err

    code, listed, err = aws(broker.url, root, "iam", "list-users", "--path-prefix", "/cli/")
    assert [u["UserName"] for u in listed["Users"]] == ["cli-user"]


def test_cli_reports_aws_errors(broker: Broker) -> None:
    root = (broker.root.access_key_id, broker.root.secret_access_key)
    code, _, err = aws(broker.url, root, "iam", "get-user", "--user-name", "nobody-here")
    assert code != 0
    assert "An error occurred (NoSuchEntity) when calling the GetUser operation: " \
           "The user with name nobody-here cannot be found." in err
    code, _, err = aws(broker.url, (root[0], "wrong" * 8), "sts", "get-caller-identity")
    assert code != 0 and "(SignatureDoesNotMatch)" in err
