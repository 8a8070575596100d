"""docs/organizations.md's walk-through, run with the AWS CLI as an administrator runs it:
an SCP on an OU denies iam:CreateUser; the member account's root user is refused, the
management account is not; detached, the member's root may again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.support import aws
from tests.helpers import Broker


def test_the_walk_through_with_the_aws_cli(broker: Broker, tmp_path: Path) -> None:
    management = (broker.root.access_key_id, broker.root.secret_access_key)
    member_id, member_creds = broker.new_account()
    member = (member_creds.access_key_id, member_creds.secret_access_key)

    def run(creds: tuple[str, str], *args: str) -> object:
        code, out, err = aws(broker.url, creds, *args, endpoint_env=True)
        assert code == 0, err
        return out

    run(management, "organizations", "create-organization", "--feature-set", "ALL")
    root_id = run(management, "organizations", "list-roots")["Roots"][0]["Id"]  # type: ignore
    run(management, "organizations", "enable-policy-type", "--root-id", root_id,
        "--policy-type", "SERVICE_CONTROL_POLICY")
    ou = run(management, "organizations", "create-organizational-unit", "--parent-id",
             root_id, "--name", "Workloads")["OrganizationalUnit"]["Id"]  # type: ignore
    handshake = run(management, "organizations", "invite-account-to-organization", "--target",
                    f"Id={member_id},Type=ACCOUNT")["Handshake"]["Id"]  # type: ignore
    run(member, "organizations", "accept-handshake", "--handshake-id", handshake)
    run(management, "organizations", "move-account", "--account-id", member_id,
        "--source-parent-id", root_id, "--destination-parent-id", ou)
    scp = tmp_path / "deny-create-user.json"
    scp.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]}))
    policy = run(management, "organizations", "create-policy", "--name", "deny-create-user",
                 "--type", "SERVICE_CONTROL_POLICY", "--description", "No new IAM users",
                 "--content", f"file://{scp}")["Policy"]["PolicySummary"]["Id"]  # type: ignore
    run(management, "organizations", "attach-policy", "--policy-id", policy, "--target-id", ou)

    code, _, err = aws(broker.url, member, "iam", "create-user", "--user-name", "blocked",
                       endpoint_env=True)
    assert code != 0
    assert "(AccessDenied)" in err and "explicit deny in a service control policy" in err
    run(management, "iam", "create-user", "--user-name", "management-may")  # never bound

    run(management, "organizations", "detach-policy", "--policy-id", policy, "--target-id", ou)
    run(member, "iam", "create-user", "--user-name", "allowed-again")
    listed = run(management, "organizations", "list-accounts-for-parent", "--parent-id", ou)
    assert [a["Id"] for a in listed["Accounts"]] == [member_id]  # type: ignore
