"""Benchmark: IAM Identity Center's GetRoleCredentials beside GetCallerIdentity, in one run.

One broker (one uvicorn worker, the file audit sink) and the bare Starlette baseline of
``caller_identity.py``. Set up as an administrator and a person would, through the broker's
own interfaces only: an instance, a directory user in a group, a permission set assigned to
the group; ``broker sso reset-password`` for a one-time password; the person signs in to the
access portal over HTTP (new password, a TOTP device) and approves a device authorization
that the benchmark, as the CLI, started; CreateToken gives the access token. Then rounds
alternate baseline, GetCallerIdentity (the root user's long-term key, SigV4) and
GetRoleCredentials (``GET /federation/credentials`` with the bearer token: the token, the
user, their groups, their assignments and the role are read, the role's trust policy decides,
and a session is minted and sealed, with its audit line). The figure is the median over
rounds of GetRoleCredentials requests per second divided by GetCallerIdentity's.

    .venv/bin/python benchmarks/role_credentials.py [--seconds 5] [--rounds 3] [--connections 16]

Writes benchmarks/results/role_credentials.json and prints a table. Target: at least a
quarter of GetCallerIdentity's rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "role_credentials.json"
TARGET = 0.25
PASSWORD = "Bench-Portal-Passw0rd!"  # noqa: S105  # the benchmark person's own

sys.path.insert(0, str(HERE))
from caller_identity import (  # noqa: E402
    measure,
    raw_request,
    report,
    start_servers,
    stop_servers,
    summary_head,
)


def administer(url: str, root: dict[str, str]) -> tuple[str, str, str]:
    """An instance, a person in a group, a permission set assigned to the group in the
    account: (identity store id, user name, account id)."""
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id=root["access_key_id"],
                            aws_secret_access_key=root["secret_access_key"])

    account = client("sts").get_caller_identity()["Account"]
    sso, store = client("sso-admin"), client("identitystore")
    instance = sso.create_instance(Name="bench")["InstanceArn"]
    store_id = sso.describe_instance(InstanceArn=instance)["IdentityStoreId"]
    user = store.create_user(IdentityStoreId=store_id, UserName="bench-person",
                             DisplayName="Bench Person",
                             Name={"GivenName": "Bench", "FamilyName": "Person"})["UserId"]
    group = store.create_group(IdentityStoreId=store_id, DisplayName="Engineers")["GroupId"]
    store.create_group_membership(IdentityStoreId=store_id, GroupId=group,
                                  MemberId={"UserId": user})
    ps = sso.create_permission_set(InstanceArn=instance, Name="Engineers",
                                   SessionDuration="PT8H")["PermissionSet"]["PermissionSetArn"]
    sso.put_inline_policy_to_permission_set(
        InstanceArn=instance, PermissionSetArn=ps, InlinePolicy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                 "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
                {"Effect": "Deny", "Action": "iam:*", "Resource": "*"}]}))
    sso.attach_managed_policy_to_permission_set(
        InstanceArn=instance, PermissionSetArn=ps,
        ManagedPolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    status = sso.create_account_assignment(
        InstanceArn=instance, TargetId=account, TargetType="AWS_ACCOUNT", PermissionSetArn=ps,
        PrincipalType="GROUP", PrincipalId=group)["AccountAssignmentCreationStatus"]
    if status["Status"] != "SUCCEEDED":
        raise SystemExit(f"the assignment did not provision: {status}")
    return store_id, "bench-person", account


def form(page: httpx.Response, suffix: str) -> tuple[str, dict[str, str]]:
    import lxml.html

    for f in lxml.html.fromstring(page.text).iter("form"):
        if (f.get("action") or "").endswith(suffix):
            return f.get("action") or "", {e.get("name"): e.get("value") or ""
                                           for e in f.iter("input") if e.get("name")}
    raise SystemExit(f"the portal page has no {suffix} form: {page.text[:300]}")


def person_signs_in(url: str, data_dir: str, store_id: str, user_name: str) -> str:
    """The person's first sign-in, then a device authorization they approve: the access
    token the CLI would get."""
    import lxml.html
    import pyotp

    reset = subprocess.run(
        [str(BIN / "broker"), "sso", "reset-password", "--data-dir", data_dir,
         "--identity-store-id", store_id, "--user-name", user_name, "--json"],
        capture_output=True, text=True, check=True)
    one_time = json.loads(reset.stdout)["one_time_password"]
    start = f"/start/{store_id}"
    with httpx.Client(base_url=url, timeout=30) as http:
        action, fields = form(http.get(start), start)
        page = http.post(action, data={**fields, "username": user_name,
                                       "password": one_time})
        action, fields = form(page, "/change")
        page = http.post(action, data={**fields, "new_password": PASSWORD,
                                       "confirm_password": PASSWORD})
        seed = lxml.html.fromstring(page.text).xpath(
            "//dt[text()='Key']/following-sibling::dd[1]/code/text()")[0]
        action, fields = form(page, "/enrol")
        done = http.post(action, data={**fields, "code": pyotp.TOTP(seed).now()})
        if done.status_code != 303:
            raise SystemExit(f"the portal sign-in failed: {done.text[:300]}")
        client = http.post("/client/register", json={
            "clientName": "bench", "clientType": "public"}).json()
        device = http.post("/device_authorization", json={
            "clientId": client["clientId"], "clientSecret": client["clientSecret"],
            "startUrl": f"{url}{start}"}).json()
        page = http.get(f"/start/device?{urlencode({'user_code': device['userCode']})}")
        action, fields = form(page, "/start/device")
        http.post(action, data={**fields, "action": "allow"})
        time.sleep(1.1)  # the polling interval
        token = http.post("/token", json={
            "clientId": client["clientId"], "clientSecret": client["clientSecret"],
            "grantType": "urn:ietf:params:oauth:grant-type:device_code",
            "deviceCode": device["deviceCode"]})
        if token.status_code != 200:
            raise SystemExit(f"CreateToken failed: {token.text}")
        return str(token.json()["accessToken"])


def role_credentials_request(port: int, token: str, account: str) -> bytes:
    query = urlencode({"role_name": "Engineers", "account_id": account})
    return (f"GET /federation/credentials?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"x-amz-sso_bearer_token: {token}\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.helpers import Creds, signed_request

    servers, broker_port, baseline_port, created = start_servers()
    root = created["root"]
    rounds = []
    try:
        url = f"http://127.0.0.1:{broker_port}"
        store_id, user_name, account = administer(url, root)
        token = person_signs_in(url, created["data_dir"], store_id, user_name)
        rc_request = role_credentials_request(broker_port, token, account)
        check = httpx.get(f"{url}/federation/credentials", params={
            "role_name": "Engineers", "account_id": account},
            headers={"x-amz-sso_bearer_token": token})
        if check.status_code != 200 or "roleCredentials" not in check.text:
            raise SystemExit(f"the broker refused GetRoleCredentials: {check.text}")
        creds = Creds(root["access_key_id"], root["secret_access_key"], None)
        identity = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
        for i in range(args.rounds):
            _, _, id_headers, id_body = signed_request(url, identity, creds)
            base = measure(baseline_port, raw_request(baseline_port, id_headers, id_body),
                           args.seconds, args.connections, servers[1].pid)
            ident = measure(broker_port, raw_request(broker_port, id_headers, id_body),
                            args.seconds, args.connections, servers[0].pid)
            role = measure(broker_port, rc_request, args.seconds, args.connections,
                           servers[0].pid)
            rounds.append({"baseline": base, "get_caller_identity": ident,
                           "get_role_credentials": role, "ratio": role["rps"] / ident["rps"],
                           "ratio_to_baseline": role["rps"] / base["rps"]})
            print(f"round {i + 1}: baseline {base['rps']:7.0f} rps   GetCallerIdentity "
                  f"{ident['rps']:7.0f} rps   GetRoleCredentials {role['rps']:7.0f} rps "
                  f"({role['server_cpu_us_per_request']:.0f} us cpu/req)   "
                  f"ratio {rounds[-1]['ratio']:.2f}", flush=True)
    finally:
        stop_servers(servers)

    head = summary_head("GetRoleCredentials vs GetCallerIdentity (same broker, same run)",
                        "role_credentials.py", args, rounds)
    parts = (("baseline", "baseline"), ("GetCallerIdentity", "get_caller_identity"),
             ("GetRoleCredentials", "get_role_credentials"))
    report(RESULTS, head, rounds, parts, target=TARGET,
           figure="GetRoleCredentials / GetCallerIdentity")


if __name__ == "__main__":
    main()
