"""The command line as an administrator runs it: `broker apply` declares an organization and
places a member account in an OU; `broker accounts list` shows each account's organization,
whether it manages it, and its OU path — and "-" for an account in none."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

from broker.clock import SystemClock
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.organizations.service import OrganizationsService
from broker.runtime import open_entity_store
from broker.settings import load
from tests.e2e.support import BIN, ROOT, clean_env


def broker(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([str(BIN / "broker"), *args], env=clean_env(), capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def join(data: Path, management: str, member: str) -> None:
    """The member accepts the management account's invitation (the API's InviteAccount and
    AcceptHandshake, which `broker apply` never does for it)."""
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data)})

    async def go() -> None:
        store = open_entity_store(settings)
        try:
            iam = IamService(store, Keyring.load(settings.keyring_path), SystemClock())
            organizations = OrganizationsService(iam, SystemClock())
            handshake = await organizations.invite(
                management, {"Type": "ACCOUNT", "Id": member}, None, [])
            await organizations.accept(member, handshake["id"])
        finally:
            await store.close()

    asyncio.run(go())


def test_apply_places_a_member_and_accounts_list_shows_where(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    for command in (("init", "--account-id", "111111111111"),
                    ("accounts", "create", "--account-id", "222222222222"),
                    ("accounts", "create", "--account-id", "333333333333")):
        code, _, err = broker(*command, "--data-dir", data, "--json")
        assert code == 0, err
    plan = tmp_path / "org.toml"
    plan.write_text("""
[[accounts]]
id = "111111111111"
  [accounts.organization]
  ous = ["Workloads", "Workloads/Prod"]
""")
    code, out, err = broker("apply", str(plan), "--data-dir", data)
    assert code == 0, err
    org_id = re.fullmatch(r"\+ organization (o-[a-z0-9]{10}) \(111111111111\)",
                          out.splitlines()[0])
    assert org_id is not None, out
    assert out.splitlines()[1:] == ["+ ou Workloads (111111111111)",
                                    "+ ou Workloads/Prod (111111111111)", "3 change(s)."]
    # Not a member yet: refused, and the file's other changes are not made either.
    plan.write_text(plan.read_text() + """
  [[accounts.organization.accounts]]
  id = "222222222222"
  ou = "Workloads/Prod"
""")
    code, out, err = broker("apply", str(plan), "--data-dir", data)
    assert code == 2 and out == ""
    assert err == (f"broker: error: 111111111111: organization: account 222222222222 is not a "
                   f"member of {org_id[1]}: apply places members, it invites no one "
                   "(InviteAccountToOrganization, then AcceptHandshake by the account)\n")
    join(tmp_path / "d", "111111111111", "222222222222")
    code, out, err = broker("apply", str(plan), "--data-dir", data)
    assert code == 0, err
    assert out.splitlines()[-2:] == [
        "~ account 222222222222 (111111111111): ou Root -> Workloads/Prod", "1 change(s)."]

    code, out, err = broker("accounts", "list", "--data-dir", data)
    assert code == 0, err
    rows = {line.split()[0]: line.split("  ") for line in out.splitlines()}
    assert [row[0] for row in rows.values()] == ["111111111111", "222222222222", "333333333333"]
    assert rows["111111111111"][1:2] == ["-"] and rows["111111111111"][2].startswith("created ")
    assert rows["111111111111"][3:] == [org_id[1], "management", "Root"]
    assert rows["222222222222"][3:] == [org_id[1], "member", "Root/Workloads/Prod"]
    assert rows["333333333333"][3:] == ["-", "-", "-"]
    code, out, err = broker("accounts", "list", "--data-dir", data, "--json")
    assert code == 0, err
    assert {a["account_id"]: a["organization"] for a in json.loads(out)} == {
        "111111111111": {"id": org_id[1], "management": True, "path": "Root"},
        "222222222222": {"id": org_id[1], "management": False, "path": "Root/Workloads/Prod"},
        "333333333333": None}
