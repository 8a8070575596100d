"""`broker apply` / `broker check` with an organization: OUs, SCPs and RCPs, their attachments,
and where each member account sits, converged on a real broker and seen through boto3 — an SCP
the file attaches refuses the member's root, and allows it again once the file takes it off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.errors import ConfigError
from broker.iam import declarative
from tests.helpers import Broker, Creds

SCP = "SERVICE_CONTROL_POLICY"
RCP = "RESOURCE_CONTROL_POLICY"
DENY_CREATE_USER = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]})
# An RCP (deny only, Principal "*" only): no principal tagged blocked assumes the roles.
NO_BLOCKED = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole", "Resource": "*",
     "Condition": {"StringEquals": {"aws:PrincipalTag/blocked": "true"}}}]})


def join(broker: Broker, management_root: Creds, member: str, member_root: Creds) -> None:
    """The member accepts the management account's invitation (apply invites no one)."""
    handshake = broker.client("organizations", management_root).invite_account_to_organization(
        Target={"Id": member, "Type": "ACCOUNT"})["Handshake"]
    broker.client("organizations", member_root).accept_handshake(HandshakeId=handshake["Id"])


def member_of_new_org(broker: Broker) -> tuple[str, Creds, str, Creds]:
    """A management account whose organization the file will declare, and an account that
    joined it by invitation."""
    management, management_root = broker.new_account()
    member, member_root = broker.new_account()
    broker.client("organizations", management_root).create_organization(FeatureSet="ALL")
    join(broker, management_root, member, member_root)
    return management, management_root, member, member_root


def org_file(management: str, body: str = "", *, ous: list[str] | None = None) -> str:
    """A file declaring the organization of one management account: its OUs, then ``body``
    (policy and placement tables)."""
    listed = "" if ous is None else f"  ous = {json.dumps(ous)}\n"
    return f'[[accounts]]\nid = "{management}"\n  [accounts.organization]\n{listed}{body}'


def policy(name: str, targets: str | None = None, *, policy_type: str = SCP,
           content: str = f"'{DENY_CREATE_USER}'", description: str | None = None) -> str:
    """A [[accounts.organization.policies]] table; ``targets`` and ``content`` as TOML."""
    return "".join([
        f'  [[accounts.organization.policies]]\n  name = "{name}"\n  type = "{policy_type}"\n',
        "" if description is None else f'  description = "{description}"\n',
        f"  content = {content}\n",
        "" if targets is None else f"  targets = {targets}\n"])


def placement(account: str, ou: str) -> str:
    return f'  [[accounts.organization.accounts]]\n  id = "{account}"\n  ou = "{ou}"\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def apply(broker: Broker, path: Path) -> list[str]:
    """`broker apply`'s use case on the serving broker's own services (its caches see the
    change at once, as any API call's)."""
    runtime = broker.runtime
    return broker.server.call(declarative.apply(declarative.load(path), runtime.iam,
                                                runtime.organizations))


def refused(broker: Broker, path: Path) -> str:
    """What `broker apply` refuses the file with, before it changes anything."""
    with pytest.raises(ConfigError) as fault:
        apply(broker, path)
    return str(fault.value)


def check(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["check", str(path)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def check_fails(path: Path) -> str:
    """`broker check`'s error (exit status 2, nothing on stdout)."""
    code, out, err = check(path)
    assert code == 2 and out == "", (code, out)
    return err


def estate_file(management: str, member: str, *, targets: str = '["Workloads/Prod"]') -> str:
    return org_file(management, "".join([
        policy("deny-create-user", targets, description="No new IAM users"),
        policy("no-blocked", '["Root"]', policy_type=RCP, content=f"'{NO_BLOCKED}'"),
        placement(member, "Workloads/Prod")]), ous=["Workloads", "Workloads/Prod", "Sandbox"])


def root_id(orgs: Any) -> str:
    return str(orgs.list_roots()["Roots"][0]["Id"])


def ou_id(orgs: Any, name: str) -> str:
    """The id of the OU of that name under the root."""
    return next(ou["Id"] for ou in orgs.list_organizational_units_for_parent(
        ParentId=root_id(orgs))["OrganizationalUnits"] if ou["Name"] == name)


def scps_of(orgs: Any, target: str) -> list[str]:
    return sorted(p["Name"] for p in orgs.list_policies_for_target(
        TargetId=target, Filter=SCP)["Policies"])


def create_user_denied(iam: Any) -> str:
    """The member's root is refused CreateUser; the refusal's message."""
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        iam.create_user(UserName="blocked")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    message: str = denied.value.response["Error"]["Message"]
    assert "with an explicit deny in a service control policy" in message
    return message


def tree(orgs: Any) -> dict[str, Any]:
    """The organization as ListOrganizationalUnitsForParent and friends show it: OU paths,
    where each account sits, what each target has attached (policy names)."""
    root = orgs.list_roots()["Roots"][0]
    out: dict[str, Any] = {"types": sorted(t["Type"] for t in root["PolicyTypes"]
                                           if t["Status"] == "ENABLED")}

    def walk(parent: str, path: str) -> None:
        names = []
        for policy_type in out["types"]:
            names += [p["Name"] for p in orgs.list_policies_for_target(
                TargetId=parent, Filter=policy_type)["Policies"]]
        out[path] = sorted(names)
        for account in orgs.list_accounts_for_parent(ParentId=parent)["Accounts"]:
            out[account["Id"]] = path
        for ou in orgs.list_organizational_units_for_parent(ParentId=parent)[
                "OrganizationalUnits"]:
            walk(ou["Id"], f"{path}/{ou['Name']}")

    walk(root["Id"], "Root")
    return out


def test_apply_declares_the_organization_and_twice_changes_nothing(broker: Broker,
                                                                   tmp_path: Path) -> None:
    management, management_root, member, _ = member_of_new_org(broker)
    plan = write(tmp_path / "org.toml", estate_file(management, member))
    code, out, err = check(plan)
    assert code == 0, err
    assert out.endswith("1 organization(s) with 3 OU(s), 2 SCP(s) and RCP(s), 1 placed "
                        "account(s)).\n")
    lines = apply(broker, plan)
    org_id = broker.client("organizations", management_root).describe_organization()[
        "Organization"]["Id"]
    assert lines == [
        f"~ organization {org_id} ({management}): enabled {SCP}, {RCP}",
        f"+ ou Workloads ({management})", f"+ ou Workloads/Prod ({management})",
        f"+ ou Sandbox ({management})",
        f"+ scp deny-create-user ({management})", f"+ rcp no-blocked ({management})",
        f"~ account {member} ({management}): ou Root -> Workloads/Prod"]
    assert tree(broker.client("organizations", management_root)) == {
        "types": [RCP, SCP],
        "Root": ["FullAWSAccess", "RCPFullAWSAccess", "no-blocked"], management: "Root",
        "Root/Workloads": ["FullAWSAccess", "RCPFullAWSAccess"],
        "Root/Workloads/Prod": ["FullAWSAccess", "RCPFullAWSAccess", "deny-create-user"],
        member: "Root/Workloads/Prod",
        "Root/Sandbox": ["FullAWSAccess", "RCPFullAWSAccess"]}
    # The second run changes nothing, and says so line by line.
    assert apply(broker, plan) == [
        f"= organization {org_id} ({management})",
        f"= ou Workloads ({management})", f"= ou Workloads/Prod ({management})",
        f"= ou Sandbox ({management})",
        f"= scp deny-create-user ({management})", f"= rcp no-blocked ({management})",
        f"= account {member} ({management})"]
    # A change of content, description and targets is one line saying what changed.
    write(plan, estate_file(management, member, targets='["Sandbox", "Workloads/Prod"]')
          .replace("No new IAM users", "Still no new IAM users")
          .replace('"iam:CreateUser"', '["iam:CreateUser", "iam:CreateRole"]'))
    assert apply(broker, plan)[4] == (f"~ scp deny-create-user ({management}): content, "
                                      "description, attached to Sandbox")


def test_an_attached_scp_denies_until_the_file_takes_it_off(broker: Broker,
                                                            tmp_path: Path) -> None:
    management, management_root, member, member_root = member_of_new_org(broker)
    member_iam = broker.client("iam", member_root)
    member_iam.create_user(UserName="before-apply")  # the control: allowed before the SCP
    plan = write(tmp_path / "org.toml", estate_file(management, member))
    apply(broker, plan)

    assert (f"arn:aws:iam::{member}:root is not authorized to perform: iam:CreateUser"
            in create_user_denied(member_iam))
    member_iam.list_users()  # what the SCP does not deny, the member's root still may
    broker.client("iam", management_root).create_user(UserName="management-may")

    write(plan, estate_file(management, member, targets="[]"))
    assert apply(broker, plan)[4] == \
        f"~ scp deny-create-user ({management}): detached from Workloads/Prod"
    member_iam.create_user(UserName="allowed-again")
    # The policy the file keeps stays, attached nowhere.
    orgs = broker.client("organizations", management_root)
    kept = next(p for p in orgs.list_policies(Filter=SCP)["Policies"]
                if p["Name"] == "deny-create-user")
    assert orgs.list_targets_for_policy(PolicyId=kept["Id"])["Targets"] == []


def test_apply_creates_the_organization_and_keeps_what_the_file_does_not_manage(
        broker: Broker, tmp_path: Path) -> None:
    """An account in no organization gets one. What the file does not name — an OU, a
    policy, its attachments — is left as it is; an OU is never renamed."""
    management, management_root = broker.new_account()
    as_table = ('{ Version = "2012-10-17", Statement = [{ Effect = "Deny", '
                'Action = "iam:CreateUser", Resource = "*" }] }')
    plan = write(tmp_path / "org.toml", org_file(management, policy(
        "deny-create-user", f'["Platform", "{management}"]', content=as_table),
        ous=["Platform"]))
    lines = apply(broker, plan)
    orgs = broker.client("organizations", management_root)
    org = orgs.describe_organization()["Organization"]
    assert org["MasterAccountId"] == management
    assert lines == [f"+ organization {org['Id']} ({management})",
                     f"+ ou Platform ({management})", f"+ scp deny-create-user ({management})"]
    # Made through the API beside the file: an OU, a policy attached where the file's is.
    orgs.create_organizational_unit(ParentId=root_id(orgs), Name="Elsewhere")
    other = orgs.create_policy(Name="by-hand", Description="", Type=SCP,
                               Content=DENY_CREATE_USER)["Policy"]["PolicySummary"]["Id"]
    platform = ou_id(orgs, "Platform")
    orgs.attach_policy(PolicyId=other, TargetId=platform)
    assert apply(broker, plan) == [f"= organization {org['Id']} ({management})",
                                   f"= ou Platform ({management})",
                                   f"= scp deny-create-user ({management})"]
    assert scps_of(orgs, platform) == ["FullAWSAccess", "by-hand", "deny-create-user"]
    # An OU whose name differs only in case is not the file's, and is not renamed: refused.
    write(plan, plan.read_text().replace('"Platform"', '"platform"'))
    assert refused(broker, plan) == (
        f"{management}: organization: OU platform is not in the organization, but Platform "
        "is: apply creates and renames no OU whose name differs only in case (rename it with "
        "UpdateOrganizationalUnit, or use its name)")
    assert sorted(ou["Name"] for ou in orgs.list_organizational_units_for_parent(
        ParentId=root_id(orgs))["OrganizationalUnits"]) == ["Elsewhere", "Platform"]


def test_apply_places_members_only_and_changes_nothing_first(broker: Broker,
                                                             tmp_path: Path) -> None:
    management, management_root = broker.new_account()
    outsider, outsider_root = broker.new_account()
    not_made = '  [[accounts.users]]\n  name = "not-made"\n'
    plan = write(tmp_path / "org.toml", org_file(
        management, placement(outsider, "Workloads") + not_made, ous=["Workloads"]))
    assert refused(broker, plan) == (
        f"{management}: organization: account {outsider} is not a member of the organization "
        "apply would create: apply places members, it invites no one "
        "(InviteAccountToOrganization, then AcceptHandshake by the account)")
    # Nothing was written: no organization, no user.
    with pytest.raises(botocore.exceptions.ClientError) as none:
        broker.client("organizations", management_root).describe_organization()
    assert none.value.response["Error"]["Code"] == "AWSOrganizationsNotInUseException"
    assert broker.client("iam", management_root).list_users()["Users"] == []
    # The control: placing the management account itself needs no invitation.
    write(plan, plan.read_text().replace(outsider, management))
    assert apply(broker, plan)[-1] == f"~ account {management} ({management}): ou Root -> " \
        "Workloads"
    # A member may not declare the organization it belongs to.
    join(broker, management_root, outsider, outsider_root)
    fault = refused(broker, write(tmp_path / "member.toml", org_file(outsider)))
    assert f"{outsider} is a member of o-" in fault
    assert f"which {management} manages" in fault


def test_quotas_are_checked_before_anything_changes(broker: Broker, tmp_path: Path) -> None:
    """Five SCPs per target, FullAWSAccess included: the sixth is refused before any write."""
    management, management_root = broker.new_account()

    def file(on_root: range) -> str:
        return org_file(management, "".join(
            policy(f"deny-{n}", '["Root"]' if n in on_root else "[]") for n in range(5)))

    plan = write(tmp_path / "org.toml", file(range(5)))
    assert refused(broker, plan) == (
        f"{management}: organization: 6 policies of type {SCP} would be attached to Root "
        "(the file's and FullAWSAccess): ConstraintViolationException: You attempted to attach "
        "more policies of this type to an entity than allowed (5).")
    with pytest.raises(botocore.exceptions.ClientError):
        broker.client("organizations", management_root).describe_organization()
    # The control: four of the file's and FullAWSAccess fit.
    write(plan, file(range(4)))
    assert apply(broker, plan)[0].startswith("+ organization o-")
    # Swapping one for another on a full target detaches to make room, then attaches.
    write(plan, file(range(1, 5)))
    assert apply(broker, plan)[1:] == [
        f"~ scp deny-0 ({management}): detached from Root",
        f"= scp deny-1 ({management})", f"= scp deny-2 ({management})",
        f"= scp deny-3 ({management})", f"~ scp deny-4 ({management}): attached to Root"]


def test_check_refuses_an_scp_with_a_principal(tmp_path: Path) -> None:
    with_principal = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "iam:CreateUser", "Resource": "*"}]})
    text = org_file("123456789012", policy("deny-create-user", content=f"'{with_principal}'"))
    plan = write(tmp_path / "org.toml", text)
    assert check_fails(plan) == (
        f"broker: error: {plan}: accounts[0].organization.policies[0].content: "
        "MalformedPolicyDocumentException: Policy document should not specify a principal.\n")
    # The control: the same statement without its Principal is a valid SCP.
    write(plan, text.replace('"Principal": "*", ', ""))
    code, _, err = check(plan)
    assert code == 0, err


def test_check_refuses_an_ou_deeper_than_five(tmp_path: Path) -> None:
    def file(depth: int) -> str:
        return org_file("123456789012", ous=["/".join(f"L{n}" for n in range(1, d + 1))
                                             for d in range(1, depth + 1)])

    code, out, err = check(write(tmp_path / "five.toml", file(5)))
    assert code == 0 and "with 5 OU(s)" in out, err  # the control: five levels are allowed
    plan = write(tmp_path / "six.toml", file(6))
    assert check_fails(plan) == (
        f"broker: error: {plan}: accounts[0].organization.ous[5]: OU L1/L2/L3/L4/L5/L6 is 6 "
        "levels deep: ConstraintViolationException: You attempted to create an OU tree that is "
        "too many levels deep (at most 5).\n")


@pytest.mark.parametrize(("organization", "fault"), [
    ('ous = ["Workloads/Prod"]',
     "organization.ous[0]: OU Workloads/Prod is under Workloads, which is not listed"),
    ('ous = ["Root/Workloads"]', "a path starts below the root (Workloads/Prod, not"),
    ('ous = ["Workloads//Prod"]', "a path is OU names joined by /"),
    ('ous = ["Workloads", "workloads"]', "organization.ous: OU workloads is listed twice"),
    ('ous = ["' + "x" * 129 + '"]', "Member must have length less than or equal to 128"),
    ('shell = "x"', "organization: unknown key(s): shell"),
    ('[[accounts.organization.policies]]\nname = "p"\ntype = "TAG_POLICY"\ncontent = "{}"',
     f"organization.policies[0].type: must be {SCP} or {RCP}"),
    ('[[accounts.organization.policies]]\nname = "FullAWSAccess"\n'
     f"type = \"{SCP}\"\ncontent = '{DENY_CREATE_USER}'",
     "policies[0].name: FullAWSAccess is an AWS managed policy"),
    ('[[accounts.organization.policies]]\nname = "p"\n'
     f"type = \"{SCP}\"\ncontent = '{DENY_CREATE_USER}'\ntargets = [\"Nowhere\"]",
     "policies[0].targets: Nowhere is neither Root nor an OU of ous"),
    ('[[accounts.organization.policies]]\nname = "p"\n'
     f"type = \"{RCP}\"\ncontent = '{DENY_CREATE_USER}'",
     "policies[0].content: MalformedPolicyDocumentException:"),
    ('[[accounts.organization.policies]]\nname = "p"\ntype = "' + SCP + '"\ncontent = \'' +
     json.dumps({"Version": "2012-10-17", "Statement": [
         {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "x" * 5200}]}) + "'",
     "ConstraintViolationException: The policy is larger than the maximum size of 5120"),
    ('[[accounts.organization.accounts]]\nid = "210987654321"\nou = "Nowhere"',
     "accounts[0].ou: Nowhere is neither Root nor an OU of ous"),
    ('[[accounts.organization.accounts]]\nid = "210987654321"',
     'accounts[0].ou: the account\'s place: "Root" or an OU of ous'),
])
def test_check_names_organization_faults(tmp_path: Path, organization: str, fault: str) -> None:
    err = check_fails(write(tmp_path / "bad.toml", org_file("123456789012", organization + "\n")))
    assert err.count("\n") == 1
    assert fault in err, err


def test_an_account_belongs_to_one_organization_of_the_file(tmp_path: Path) -> None:
    def file(placed_by_first: str) -> str:
        return (org_file("111111111111", placement(placed_by_first, "Root")) + "\n" +
                org_file("222222222222", placement("333333333333", "Root")))

    assert ("accounts[1].organization: account 333333333333 is named in the organization of "
            "111111111111 too: an account belongs to one") in \
        check_fails(write(tmp_path / "two.toml", file("333333333333")))
    assert "account 222222222222 manages an organization of its own in this file" in \
        check_fails(write(tmp_path / "manager.toml", file("222222222222")))


def test_the_documented_organization_file_applies(broker: Broker, tmp_path: Path) -> None:
    """The example of docs/operations.md ("Organizations in the file") is valid, converges,
    and its SCP binds the member it places."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    example = re.search(r"```toml\n(\[\[accounts\]\]\nid = \"123456789012\" +# the management "
                        r"account.*?)```", text, re.S)
    assert example is not None
    plan = write(tmp_path / "org.toml", example.group(1))
    code, out, err = check(plan)
    assert code == 0 and "1 organization(s) with 3 OU(s)" in out, err
    made = {}
    for account in ("123456789012", "210987654321"):
        _, key = broker.server.call(broker.runtime.iam.create_account(account))
        made[account] = Creds(key.key.access_key_id, key.secret_access_key)
    # The member joins first: the organization exists before the file (apply invites no one).
    broker.client("organizations", made["123456789012"]).create_organization(FeatureSet="ALL")
    join(broker, made["123456789012"], "210987654321", made["210987654321"])
    lines = apply(broker, plan)
    assert lines[1:] == [
        "+ ou Workloads (123456789012)", "+ ou Workloads/Prod (123456789012)",
        "+ ou Sandbox (123456789012)", "+ scp deny-create-user (123456789012)",
        "~ account 210987654321 (123456789012): ou Root -> Workloads/Prod"]
    assert all(line.startswith("=") for line in apply(broker, plan))
    create_user_denied(broker.client("iam", made["210987654321"]))


def test_apply_leaves_no_target_without_an_scp(broker: Broker, tmp_path: Path) -> None:
    """FullAWSAccess taken off an OU through the API: the file's SCP is the OU's last, and
    the file taking it off is refused before anything changes."""
    management, management_root = broker.new_account()

    def file(targets: str) -> str:
        return org_file(management, policy("deny-create-user", targets), ous=["Platform"])

    plan = write(tmp_path / "org.toml", file('["Platform"]'))
    apply(broker, plan)
    orgs = broker.client("organizations", management_root)
    platform = ou_id(orgs, "Platform")
    orgs.detach_policy(PolicyId="p-FullAWSAccess", TargetId=platform)
    write(plan, file("[]"))
    assert refused(broker, plan) == (
        f"{management}: organization: Platform would be left with no service control policy: "
        "every root, OU and account keeps one (attach another first, FullAWSAccess for "
        "instance)")
    assert scps_of(orgs, platform) == ["deny-create-user"]
    orgs.attach_policy(PolicyId="p-FullAWSAccess", TargetId=platform)  # the control
    assert apply(broker, plan)[-1] == \
        f"~ scp deny-create-user ({management}): detached from Platform"
