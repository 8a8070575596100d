from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.clock import SystemClock
from broker.iam.service import IamService
from broker.keyring import Keyring
from broker.settings import load
from broker.store.sql import SqlEntityStore


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def init(data: Path, *extra: str) -> dict[str, object]:
    code, out, err = run("init", "--data-dir", str(data), "--json", *extra)
    assert code == 0, err
    doc: dict[str, object] = json.loads(out)
    return doc


def test_init_json_is_exactly_the_documented_shape(tmp_path: Path) -> None:
    doc = init(tmp_path / "d", "--account-id", "123456789012")
    assert list(doc) == ["account_id", "root"]
    assert doc["account_id"] == "123456789012"
    root = doc["root"]
    assert isinstance(root, dict) and list(root) == ["access_key_id", "secret_access_key"]
    assert root["access_key_id"].startswith("AKIA") and len(root["secret_access_key"]) == 40
    keyring = tmp_path / "d" / "keyring.json"
    assert stat.S_IMODE(os.stat(keyring).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    assert root["secret_access_key"] not in (tmp_path / "d" / "broker.db").read_bytes().decode(
        "latin-1")


def test_init_refuses_an_initialised_directory(tmp_path: Path) -> None:
    init(tmp_path / "d")
    before = (tmp_path / "d" / "keyring.json").read_bytes()
    code, out, err = run("init", "--data-dir", str(tmp_path / "d"))
    assert code == 2 and out == ""
    assert err.startswith("broker: error: ") and "already initialised" in err
    assert err.count("\n") == 1
    assert (tmp_path / "d" / "keyring.json").read_bytes() == before


def test_init_refuses_a_bad_account_id(tmp_path: Path) -> None:
    code, _, err = run("init", "--data-dir", str(tmp_path / "d"), "--account-id", "12")
    assert code == 2 and "12-digit" in err
    assert not (tmp_path / "d").exists()


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    code, _, err = run("init", "--data-dir", str(tmp_path / "d"),
                       env={"BROKER_SIGV4_CLOCK_SKEW_SECONDS": "forever"})
    assert code == 2
    assert err == ("broker: error: setting sigv4.clock_skew_seconds (from "
                   "BROKER_SIGV4_CLOCK_SKEW_SECONDS): must be an integer from 60 to 900; "
                   "got 'forever'\n")


def test_accounts(tmp_path: Path) -> None:
    first = init(tmp_path / "d")
    code, out, _ = run("accounts", "create", "--data-dir", str(tmp_path / "d"), "--json",
                       "--account-id", "999999999999")
    assert code == 0 and json.loads(out)["account_id"] == "999999999999"
    code, out, err = run("accounts", "create", "--data-dir", str(tmp_path / "d"),
                         "--account-id", "999999999999")
    assert code == 2 and "EntityAlreadyExists" in err
    code, out, _ = run("accounts", "list", "--data-dir", str(tmp_path / "d"), "--json")
    ids = [a["account_id"] for a in json.loads(out)]
    assert sorted(ids) == sorted([first["account_id"], "999999999999"])


def secret_works(data: Path, access_key_id: str, secret: str) -> bool:
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data)})

    async def check() -> bool:
        store = SqlEntityStore(settings.database_url)
        try:
            iam = IamService(store, Keyring.load(settings.keyring_path), SystemClock())
            key = await iam.find_access_key(access_key_id)
            return key is not None and iam.secret_of(key) == secret
        finally:
            await store.close()

    return asyncio.run(check())


def test_key_rotation_and_retirement(tmp_path: Path) -> None:
    data = tmp_path / "d"
    doc = init(data)
    root = doc["root"]
    assert isinstance(root, dict)
    first = Keyring.load(data / "keyring.json").sealing.id
    code, out, _ = run("keys", "rotate", "--data-dir", str(data))
    # The root's access-key secret and the broker's SAML service-provider key.
    assert code == 0 and "now seals; resealed 2 stored secrets" in out
    second = Keyring.load(data / "keyring.json").sealing.id
    assert second != first
    code, out, _ = run("keys", "list", "--data-dir", str(data))
    assert f"{first}" in out and "seals 0 secrets" in out and "seals 2 secrets" in out
    assert f"{second}  created" in out and "sealing" in out
    code, _, err = run("keys", "retire", second, "--data-dir", str(data))
    assert code == 2 and "sealing key" in err
    code, out, _ = run("keys", "retire", first, "--data-dir", str(data))
    assert code == 0 and f"Retired {first}" in out
    ring = Keyring.load(data / "keyring.json")
    assert [k.active for k in ring.keys] == [False, True]
    assert secret_works(data, root["access_key_id"], root["secret_access_key"])
    assert sp_key_opens(data)


def sp_key_opens(data: Path) -> bool:
    """The broker's SAML key, resealed with the new keyring key, still opens."""
    from broker.idp import sp
    from broker.runtime import open_entity_store

    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data)})

    async def check() -> bool:
        store = open_entity_store(settings)
        try:
            credentials = await sp.load(settings, store, Keyring.load(data / "keyring.json"),
                                        SystemClock())
            return credentials.key.key_size >= 2048
        finally:
            await store.close()

    return asyncio.run(check())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_apply_is_idempotent_and_prints_changes(tmp_path: Path) -> None:
    data = tmp_path / "d"
    account = init(data)["account_id"]
    plan = write(tmp_path / "iam.toml", f"""
[[accounts]]
id = "{account}"

  [[accounts.users]]
  name = "alice"
  path = "/eng/"
  tags = {{ team = "platform" }}

  [[accounts.users]]
  name = "bob"
""")
    code, out, err = run("check", str(plan))
    assert code == 0 and "valid (1 account(s), 2 user(s), 0 group(s)" in out, err
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines() == [f"+ user alice ({account})", f"+ user bob ({account})",
                                "2 change(s)."]
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines() == [f"= user alice ({account})", f"= user bob ({account})",
                                "0 change(s)."]
    write(plan, plan.read_text().replace('team = "platform"', 'team = "infra"')
          .replace('path = "/eng/"', 'path = "/ops/"'))
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[0] == f"~ user alice ({account}): path /eng/ -> /ops/, tags"


@pytest.mark.parametrize(("text", "fault"), [
    ('[[accounts]]\nid = "1"\n', "accounts[0].id: must be a 12-digit account id"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "bad name!"\n',
     "accounts[0].users[0]: 1 validation error detected: Value 'bad name!' at 'userName'"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "a"\nshell = "x"\n',
     "unknown key(s): shell"),
    ('[[roles]]\nname = "x"\n', "unknown table(s): roles"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "a"\n'
     'policies = ["nowhere"]\n', "names policy nowhere, which is neither an ARN nor a policy"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.policies]]\nname = "p"\n'
     'document = \'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*",'
     '"Resource":"*","Principal":"*"}]}\'\n',
     "MalformedPolicyDocument: Policy document should not specify a principal."),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.roles]]\nname = "r"\n',
     "a role needs a trust policy"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "a"\n'
     '[[accounts.users]]\nname = "A"\n', "user A is listed twice"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "a"\n'
     'tags = { "aws:x" = "1" }\n', "reserved prefix"),
    ("not toml [", "not valid TOML"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.policies]]\nname = "p"\n'
     'document = \'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*",'
     '"Resource":"arn:aws:s3:::' + "x" * 6100 + '"}]}\'\n',
     "Cannot exceed quota for PolicySize: 6144"),
    ('[[accounts]]\nid = "123456789012"\n[[accounts.users]]\nname = "a"\n'
     'inline = { one = \'{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
     '"Action":"s3:*","Resource":"arn:aws:s3:::' + "x" * 1100 + '"}]}\', '
     'two = \'{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
     '"Action":"s3:*","Resource":"arn:aws:s3:::' + "y" * 1100 + '"}]}\' }\n',
     "Maximum policy size of 2048 bytes exceeded for user a"),
])
def test_check_names_the_fault(tmp_path: Path, text: str, fault: str) -> None:
    code, out, err = run("check", str(write(tmp_path / "bad.toml", text)))
    assert code == 2 and out == ""
    assert fault in err and err.count("\n") == 1


def test_apply_to_a_missing_account_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "d"
    init(data)
    plan = write(tmp_path / "iam.toml",
                 '[[accounts]]\nid = "000000000001"\n[[accounts.users]]\nname = "a"\n')
    code, _, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 2 and "NoSuchEntity" in err


def test_staged_rotation(tmp_path: Path) -> None:
    data = tmp_path / "d"
    root = init(data)["root"]
    assert isinstance(root, dict)
    first = Keyring.load(data / "keyring.json").sealing.id
    code, out, _ = run("keys", "add", "--data-dir", str(data))
    staged = out.split()[2].rstrip(".")
    assert code == 0 and f"broker keys activate {staged}" in out
    code, out, _ = run("keys", "list", "--data-dir", str(data))
    assert f"{staged}  created" in out and "staged" in out
    assert Keyring.load(data / "keyring.json").sealing.id == first
    code, out, _ = run("keys", "activate", staged, "--data-dir", str(data))
    assert code == 0 and "resealed 2 stored secrets" in out
    assert Keyring.load(data / "keyring.json").sealing.id == staged
    assert secret_works(data, root["access_key_id"], root["secret_access_key"])
    code, _, err = run("keys", "activate", "k-nope", "--data-dir", str(data))
    assert code == 2 and "no key with id" in err


def test_keys_issued_from_the_command_line_are_audited(tmp_path: Path) -> None:
    data = tmp_path / "d"
    code, out, err = run("init", "--data-dir", str(data), "--json")
    assert code == 0
    root = json.loads(out)["root"]  # stdout stays exactly the documented JSON
    event = json.loads(err.strip().splitlines()[-1])
    assert (event["eventName"], "errorCode" in event,
            event["additionalEventData"]["IssuedAccessKeyId"]) == (
        "CreateAccessKey", False, root["access_key_id"])
    assert event["userAgent"] == "broker init" and root["secret_access_key"] not in err
    log = tmp_path / "audit.jsonl"
    code, out, _ = run("accounts", "create", "--data-dir", str(data), "--json",
                       env={"BROKER_AUDIT_SINK": "file", "BROKER_AUDIT_PATH": str(log)})
    created = json.loads(out)
    event = json.loads(log.read_text())
    assert (event["recipientAccountId"], event["additionalEventData"]["IssuedAccessKeyId"],
            event["userAgent"]) == (
        created["account_id"], created["root"]["access_key_id"], "broker accounts create")


def test_apply_manages_policies_groups_and_roles(tmp_path: Path) -> None:
    data = tmp_path / "d"
    account = init(data)["account_id"]
    allow = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"%s","Resource":"*"}]}'
    trust = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":'
             f'"arn:aws:iam::{account}:root"}},"Action":"sts:AssumeRole"}}]}}')
    plan = write(tmp_path / "iam.toml", f"""
[[accounts]]
id = "{account}"

  [[accounts.policies]]
  name = "deploy"
  document = '{allow % "s3:*"}'

  [[accounts.groups]]
  name = "developers"
  policies = ["deploy"]

  [[accounts.users]]
  name = "alice"
  groups = ["developers"]
  inline = {{ reader = '{allow % "iam:Get*"}' }}

  [[accounts.roles]]
  name = "deployer"
  trust = '{trust}'
  max_session = 7200
  policies = ["deploy", "arn:aws:iam::aws:policy/IAMReadOnlyAccess"]
""")
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0, err
    assert out.splitlines() == [f"+ policy deploy ({account})", f"+ group developers ({account})",
                                f"+ user alice ({account})", f"+ role deployer ({account})",
                                "4 change(s)."]
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[-1] == "0 change(s)."
    write(plan, plan.read_text().replace('"s3:*"', '"s3:Get*"')
          .replace("max_session = 7200", "max_session = 3600")
          .replace(', "arn:aws:iam::aws:policy/IAMReadOnlyAccess"', ""))
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"~ policy deploy ({account}): document (new default version v2)"
    assert lines[3] == f"~ role deployer ({account}): policies, max_session"
    assert lines[-1] == "2 change(s)."


def test_apply_creates_roles_that_trust_each_other_and_later_accounts(tmp_path: Path) -> None:
    """Trust policies may name roles of the same file (even in a cycle) and users of accounts
    listed later: every entity exists before any trust policy is checked."""
    data = tmp_path / "d"
    first = init(data, "--account-id", "111111111111")["account_id"]
    code, out, err = run("accounts", "create", "--account-id", "222222222222", "--json",
                         "--data-dir", str(data))
    assert code == 0, err

    def trust(*principals: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": list(principals)},
            "Action": "sts:AssumeRole"}]})

    plan = write(tmp_path / "iam.toml", f"""
[[accounts]]
id = "{first}"
  [[accounts.roles]]
  name = "a"
  trust = '{trust("arn:aws:iam::111111111111:role/b", "arn:aws:iam::222222222222:user/bob")}'
  [[accounts.roles]]
  name = "b"
  trust = '{trust("arn:aws:iam::111111111111:role/a")}'

[[accounts]]
id = "222222222222"
  [[accounts.users]]
  name = "bob"
""")
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0, err
    assert out.splitlines() == ["+ user bob (222222222222)", "+ role a (111111111111)",
                                "+ role b (111111111111)", "3 change(s)."]
    # Unchanged on the second run: each role holds the trust policy of the file, not the
    # placeholder it was created with.
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[-1] == "0 change(s).", out
    # The control: a principal that exists nowhere is still refused, and nothing is created.
    write(plan, plan.read_text().replace("user/bob", "user/nobody").replace(
        'name = "b"', 'name = "c"'))
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 2 and "Invalid principal in policy" in err, (out, err)
    assert out == ""
    write(plan, plan.read_text().replace("user/nobody", "user/bob"))
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0 and out.splitlines() == [  # c had not been made: it is made now
        "= user bob (222222222222)", "= role a (111111111111)", "+ role c (111111111111)",
        "1 change(s)."], (out, err)


def test_the_documented_apply_file_applies(tmp_path: Path) -> None:
    """The example of docs/operations.md is valid and converges."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    example = re.search(r"```toml\n(\[\[accounts\]\].*?)```", text, re.S)
    assert example is not None
    data = tmp_path / "d"
    init(data, "--account-id", "123456789012")
    plan = write(tmp_path / "iam.toml", example.group(1))
    code, out, err = run("check", str(plan))
    assert code == 0 and "1 role(s), 1 managed policies" in out, err
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0 and out.splitlines()[-1] == "4 change(s).", (out, err)
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[-1] == "0 change(s).", (out, err)


@pytest.mark.parametrize(("entry", "fault"), [
    ('groups = ["nosuchgroup"]', "The group with name nosuchgroup cannot be found."),
    ('policies = ["arn:aws:iam::123456789012:policy/nowhere"]', "NoSuchEntity"),
])
def test_apply_changes_nothing_when_something_it_names_is_missing(
        tmp_path: Path, entry: str, fault: str) -> None:
    """Faults that only the store can tell are found before anything is written."""
    data = tmp_path / "d"
    init(data, "--account-id", "123456789012")
    plan = write(tmp_path / "iam.toml", f"""
[[accounts]]
id = "123456789012"
  [[accounts.policies]]
  name = "p1"
  document = '''{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:*",
    "Resource":"*"}}]}}'''
  [[accounts.users]]
  name = "alice"
  {entry}
""")
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 2 and fault in err, (out, err)
    assert out == ""
    # Nothing was written: without the faulty line, everything is new.
    write(plan, plan.read_text().replace(entry, ""))
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert code == 0 and out.splitlines() == [
        "+ policy p1 (123456789012)", "+ user alice (123456789012)", "2 change(s)."], err


def test_apply_takes_local_policies_by_arn_and_moves_roles_before_trusts(
        tmp_path: Path) -> None:
    """A policy of the file may be named by its ARN; a role moved by the file may be named at
    its new path by a role listed before it."""
    data = tmp_path / "d"
    init(data, "--account-id", "123456789012")

    def trust(principal: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]})

    def plan(path: str) -> str:
        return f"""
[[accounts]]
id = "123456789012"
  [[accounts.policies]]
  name = "p1"
  document = '''{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:*",
    "Resource":"*"}}]}}'''
  [[accounts.users]]
  name = "alice"
  policies = ["arn:aws:iam::123456789012:policy/p1"]
  [[accounts.roles]]
  name = "b"
  trust = '{trust(f"arn:aws:iam::123456789012:role{path}a")}'
  [[accounts.roles]]
  name = "a"
  path = "{path}"
  trust = '{trust("arn:aws:iam::123456789012:user/alice")}'
"""

    file = write(tmp_path / "iam.toml", plan("/old/"))
    code, out, err = run("apply", str(file), "--data-dir", str(data))
    assert code == 0 and out.splitlines()[-1] == "4 change(s).", (out, err)
    write(file, plan("/new/"))
    code, out, err = run("apply", str(file), "--data-dir", str(data))
    assert code == 0, err
    assert out.splitlines() == [
        "= policy p1 (123456789012)", "= user alice (123456789012)",
        "~ role b (123456789012): trust", "~ role a (123456789012): path /old/ -> /new/",
        "2 change(s)."]
    code, out, err = run("apply", str(file), "--data-dir", str(data))
    assert out.splitlines()[-1] == "0 change(s).", (out, err)


def _jwks() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(ECAlgorithm.to_jwk(key))
    return json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]})


def test_apply_manages_oidc_providers(tmp_path: Path) -> None:
    data = tmp_path / "d"
    account = init(data)["account_id"]
    jwks = _jwks()
    plan = write(tmp_path / "iam.toml", f"""
[[accounts]]
id = "{account}"

  [[accounts.oidc_providers]]
  url = "https://token.actions.githubusercontent.com"
  client_ids = ["sts.amazonaws.com"]
  thumbprints = ["6938fd4d98bab03faadb97b34396831e3780aea1"]

  [[accounts.oidc_providers]]
  url = "https://issuer.internal.example:8443/realms/corp"
  client_ids = ["broker"]
  jwks = '{jwks}'
""")
    code, out, err = run("check", str(plan))
    assert code == 0, err
    code, out, err = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines() == [
        f"+ oidc-provider token.actions.githubusercontent.com ({account})",
        f"+ oidc-provider issuer.internal.example:8443/realms/corp ({account})",
        "2 change(s)."], err
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[-1] == "0 change(s)."
    write(plan, plan.read_text().replace('["sts.amazonaws.com"]', '["sts.amazonaws.com", "x"]')
          .replace(f"jwks = '{jwks}'\n", ""))
    code, out, _ = run("apply", str(plan), "--data-dir", str(data))
    assert out.splitlines()[:2] == [
        f"~ oidc-provider token.actions.githubusercontent.com ({account}): client ids",
        f"~ oidc-provider issuer.internal.example:8443/realms/corp ({account}): static jwks"]


@pytest.mark.parametrize(("entry", "fault"), [
    ('url = "http://issuer.example"', "must use https"),
    ('url = "https://issuer.example?x=1"', "must not have a query"),
    ('url = "https://issuer.example"\nthumbprints = ["' + "z" * 40 + '"]',
     "is not a SHA-1 thumbprint"),
    ('url = "https://issuer.example"\njwks = \'{"keys": []}\'',
     "no key that can verify signatures"),
    ('url = "https://issuer.example"\nshell = "x"', "unknown key(s): shell"),
])
def test_check_names_oidc_provider_faults(tmp_path: Path, entry: str, fault: str) -> None:
    text = f'[[accounts]]\nid = "123456789012"\n[[accounts.oidc_providers]]\n{entry}\n'
    code, out, err = run("check", str(write(tmp_path / "bad.toml", text)))
    assert code == 2 and out == "" and fault in err, err


def root_user(data: Path, account: str) -> object:
    """The root user record of an account, as the store keeps it."""
    from broker.iam.entities import RootUser, decode
    from broker.runtime import open_entity_store

    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data)})

    async def read() -> object:
        store = open_entity_store(settings)
        try:
            record = await store.get(RootUser.ref(account))
            return decode(RootUser, {**record.data, "account_id": account})
        finally:
            await store.close()

    return asyncio.run(read())


def test_root_email_and_password_from_a_file(tmp_path: Path) -> None:
    from broker.iam.logins import verify

    password = tmp_path / "root-password"
    password.write_text("Root-Passw0rd-1\n")
    data = tmp_path / "d"
    doc = init(data, "--root-email", "Ops@Example.com", "--root-password-file", str(password))
    root = root_user(data, str(doc["account_id"]))
    assert root.email == "Ops@Example.com"  # type: ignore[attr-defined]
    stored = root.password_hash  # type: ignore[attr-defined]
    assert stored.startswith("$argon2id$") and verify(stored, "Root-Passw0rd-1")
    assert b"Root-Passw0rd-1" not in (data / "broker.db").read_bytes()  # hashed, never kept
    # One account per root email address, whatever its case; the control: another address.
    code, _, err = run("accounts", "create", "--data-dir", str(data), "--json",
                       "--root-email", "ops@example.COM")
    assert code == 2 and "root email address ops@example.COM already exists" in err
    code, out, err = run("accounts", "create", "--data-dir", str(data), "--json",
                         "--root-email", "billing@example.com")
    assert code == 0, err
    other = root_user(data, json.loads(out)["account_id"])
    # --json and no file: no password, so root console sign-in stays off.
    assert other.email == "billing@example.com" and other.password_hash is None  # type: ignore


@pytest.mark.parametrize(("flags", "fault"), [
    (("--root-email", "not-an-email"), "must be an email address"),
    (("--root-email", "a@" + "b" * 70 + ".com"), "at most 64 characters"),
    (("--root-email", "weak@example.com", "--root-password-file", "WEAK"),
     "PasswordPolicyViolation"),
])
def test_bad_root_credentials_are_refused_and_nothing_is_made(tmp_path: Path,
                                                              flags: tuple[str, ...],
                                                              fault: str) -> None:
    data = tmp_path / "d"
    init(data)
    weak = tmp_path / "weak"
    weak.write_text("short\n")
    flags = tuple(str(weak) if f == "WEAK" else f for f in flags)
    code, _, err = run("accounts", "create", "--data-dir", str(data), "--json", *flags)
    assert code == 2 and fault in err
    code, out, _ = run("accounts", "list", "--data-dir", str(data), "--json")
    assert code == 0 and len(json.loads(out)) == 1  # the first account only


def test_signin_status_and_unlock_on_redis(tmp_path: Path, redis_url: str) -> None:
    """An administrator sees a user's failed sign-ins and lock-out, and clears it, in the
    Redis every broker process shares; with in-process memory the command says why it
    cannot (the control of the refusal)."""
    import uuid

    from broker.runtime import open_ephemeral_store
    from broker.signin.password import Throttle, Who

    data = tmp_path / "d"
    init(data)
    env = {"BROKER_STORE_EPHEMERAL_URL": redis_url,
           "BROKER_STORE_REDIS_PREFIX": f"broker-cli-{uuid.uuid4().hex[:8]}:"}
    settings = load(None, environ={"BROKER_SERVER_DATA_DIR": str(data), **env})

    async def fail_five_times() -> None:
        ephemeral = open_ephemeral_store(settings, SystemClock())
        try:
            throttle = Throttle(ephemeral, max_failures=5, lock_seconds=900)
            for _ in range(5):
                await throttle.failed(Who("123456789012", "alice"), "192.0.2.1")
        finally:
            await ephemeral.close()

    asyncio.run(fail_five_times())
    args = ("--data-dir", str(data), "--account", "123456789012", "--user", "alice")
    code, out, err = run("signin", "status", *args, env=env)
    assert code == 0, err
    assert "5 failed sign-ins" in out and "locked out" in out
    code, out, err = run("signin", "unlock", *args, env=env)
    assert code == 0 and "unlocked" in out, err
    code, out, _ = run("signin", "status", *args, env=env)
    assert "0 failed sign-ins" in out and "not locked" in out
    code, _, err = run("signin", "status", *args)
    assert code == 2 and "in-process memory" in err


def test_a_worker_that_cannot_build_its_app_exits_with_uvicorns_startup_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What `serve --workers N` runs in each worker: a setting it refuses (here, several workers
    on the in-process ephemeral store) or any other fault while building the app exits 3, on
    which uvicorn's supervisor stops and fails instead of starting the worker again. The
    control: the same worker given a shared store builds its app."""
    from uvicorn.config import STARTUP_FAILURE

    import broker.app
    from broker.cli import worker_app

    for name in [n for n in os.environ if n.startswith("BROKER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_SERVER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BROKER_SERVER_WORKERS", "2")
    with pytest.raises(SystemExit) as refused:
        worker_app()
    assert refused.value.code == STARTUP_FAILURE
    assert "worker cannot start: setting server.workers" in caplog.text
    monkeypatch.setenv("BROKER_STORE_EPHEMERAL_URL", "redis://127.0.0.1:6379/0")
    assert isinstance(worker_app(), broker.app.BrokerApp)  # built; no store is opened yet

    def broken() -> broker.app.BrokerApp:
        raise RuntimeError("an unforeseen fault")

    monkeypatch.setattr(broker.app, "app_from_environment", broken)
    with pytest.raises(SystemExit) as faulted:
        worker_app()
    assert faulted.value.code == STARTUP_FAILURE
    assert "RuntimeError: an unforeseen fault" in caplog.text  # with its traceback
