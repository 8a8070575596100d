"""The AWS CLI, run as a user runs it, against a real broker server."""

from __future__ import annotations

from pathlib import Path

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


def test_cli_roles_policies_and_refusals(broker: Broker) -> None:
    """The README's role walk-through with the AWS CLI: a role trusting a user, a managed
    policy attached, assume-role, the role's permissions, and a decoded refusal."""
    import json

    root = (broker.root.access_key_id, broker.root.secret_access_key)
    account = broker.account_id
    code, _, err = aws(broker.url, root, "iam", "create-user", "--user-name", "cli-alice")
    assert code == 0, err
    code, key, err = aws(broker.url, root, "iam", "create-access-key", "--user-name", "cli-alice")
    alice = (key["AccessKey"]["AccessKeyId"], key["AccessKey"]["SecretAccessKey"])
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": f"arn:aws:iam::{account}:user/cli-alice"}}]})
    code, role, err = aws(broker.url, root, "iam", "create-role", "--role-name", "cli-reader",
                          "--assume-role-policy-document", trust)
    assert code == 0, err
    code, _, err = aws(broker.url, root, "iam", "attach-role-policy", "--role-name",
                       "cli-reader", "--policy-arn",
                       "arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    assert code == 0, err

    # Alice has no policy of her own: she cannot list users, but she can assume the role.
    code, _, err = aws(broker.url, alice, "iam", "list-users")
    assert code != 0 and "(AccessDenied)" in err and "because no identity-based policy " \
        "allows the iam:ListUsers action" in err
    code, assumed, err = aws(broker.url, alice, "sts", "assume-role", "--role-arn",
                             role["Role"]["Arn"], "--role-session-name", "alice")
    assert code == 0, err
    assert assumed["AssumedRoleUser"]["Arn"] == \
        f"arn:aws:sts::{account}:assumed-role/cli-reader/alice"
    c = assumed["Credentials"]
    session = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    code, listed, err = aws(broker.url, session, "iam", "list-users")
    assert code == 0 and "cli-alice" in [u["UserName"] for u in listed["Users"]], err
    # Read-only: creating is refused, and the refusal decodes (by root) to what decided it.
    code, _, err = aws(broker.url, session, "iam", "create-user", "--user-name", "nope")
    assert code != 0 and "(AccessDenied)" in err
    encoded = err.rsplit("Encoded authorization failure message: ", 1)[1].strip()
    code, decoded, err = aws(broker.url, root, "sts", "decode-authorization-message",
                             "--encoded-message", encoded)
    assert code == 0, err
    message = json.loads(decoded["DecodedMessage"])
    assert message["allowed"] is False and message["context"]["action"] == "iam:CreateUser"
    # The root user may not assume roles, as on AWS.
    code, _, err = aws(broker.url, root, "sts", "assume-role", "--role-arn",
                       role["Role"]["Arn"], "--role-session-name", "root")
    assert code != 0 and "Roles may not be assumed by root accounts." in err


def test_cli_mfa_device_and_mfa_flagged_session(broker: Broker, tmp_path: Path) -> None:
    """docs/operations.md's MFA walk-through with the AWS CLI: a virtual device written to a
    file (its seed), enabled with two codes an authenticator computes from it, and
    get-session-token with a code, whose credentials pass a policy that denies everything
    without MFA; the same user's plain session credentials do not (the control)."""
    import json
    import time

    import pyotp

    root = (broker.root.access_key_id, broker.root.secret_access_key)
    account = broker.account_id
    for args in (("create-user", "--user-name", "cli-mfa"),
                 ("put-user-policy", "--user-name", "cli-mfa", "--policy-name", "mfa-only",
                  "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                      {"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"},
                      {"Effect": "Deny", "Action": "iam:ListUsers", "Resource": "*",
                       "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}}
                  ]}))):
        code, _, err = aws(broker.url, root, "iam", *args)
        assert code == 0, err
    code, key, err = aws(broker.url, root, "iam", "create-access-key", "--user-name", "cli-mfa")
    user = (key["AccessKey"]["AccessKeyId"], key["AccessKey"]["SecretAccessKey"])
    seed_file = tmp_path / "seed.txt"
    code, device, err = aws(broker.url, root, "iam", "create-virtual-mfa-device",
                            "--virtual-mfa-device-name", "cli-mfa", "--outfile", str(seed_file),
                            "--bootstrap-method", "Base32StringSeed")
    assert code == 0, err
    serial = device["VirtualMFADevice"]["SerialNumber"]
    assert serial == f"arn:aws:iam::{account}:mfa/cli-mfa"
    totp, now = pyotp.TOTP(seed_file.read_text().strip()), time.time()
    # The previous step's code and this one's (the broker accepts two steps of drift when a
    # device is enabled), so that the next step's code is unspent and valid whenever the
    # broker's clock crosses a step boundary during the test.
    code, _, err = aws(broker.url, root, "iam", "enable-mfa-device", "--user-name", "cli-mfa",
                       "--serial-number", serial,
                       "--authentication-code1", totp.at(now, counter_offset=-1),
                       "--authentication-code2", totp.at(now))
    assert code == 0, err

    code, plain, err = aws(broker.url, user, "sts", "get-session-token")
    assert code == 0, err
    c = plain["Credentials"]
    code, _, err = aws(broker.url, (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]),
                       "iam", "list-users")
    assert code != 0 and "(AccessDenied)" in err
    code, flagged, err = aws(broker.url, user, "sts", "get-session-token", "--serial-number",
                             serial, "--token-code", totp.at(now, counter_offset=1))
    assert code == 0, err
    c = flagged["Credentials"]
    code, listed, err = aws(broker.url, (c["AccessKeyId"], c["SecretAccessKey"],
                                         c["SessionToken"]), "iam", "list-users")
    assert code == 0, err
    assert "cli-mfa" in [u["UserName"] for u in listed["Users"]]
