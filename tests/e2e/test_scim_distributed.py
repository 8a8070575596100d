"""Deprovisioning through SCIM across broker processes on PostgreSQL and Redis: a user removed
from a group, deactivated or deleted through SCIM on process A loses the group's role, the
portal and their refresh token on process B (and A's other worker) at the very next request,
with iam.policy_cache_seconds at 60 so that no cache running out explains it; a SCIM token
revoked elsewhere is refused at once."""

from __future__ import annotations

from typing import Any

import httpx

from broker.scim.tokens import ScimTokens
from tests.e2e import test_sso_distributed as sso_e2e
from tests.e2e.test_sso_distributed import DEVICE, Cluster, refused, register, unsigned

cluster = sso_e2e.cluster  # the fixture: two processes (a with two workers), PostgreSQL, Redis

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def scim_token(cluster: Cluster) -> tuple[str, str]:
    async def make() -> tuple[str, str]:
        ic = cluster.runtime.identity_center
        instance = await ic.instances.by_store(cluster.identity_store_id)
        assert instance is not None
        made = await ScimTokens(ic.store, cluster.runtime.clock).create(instance)
        return made.token, made.info.token_id
    found: tuple[str, str] = cluster.run(make())
    return found


def sign_in(cluster: Cluster, user_id: str) -> dict[str, Any]:
    """The user's CLI sign-in (device flow) on a, approved by the portal, redeemed on b."""
    client = register(cluster.a.url)
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    started = unsigned(cluster.a.url, "sso-oidc").start_device_authorization(
        **secret, startUrl=cluster.start_url)
    cluster.run(cluster.runtime.oauth.approve_device(
        started["userCode"], account_id=cluster.account_id,
        identity_store_id=cluster.identity_store_id, user_id=user_id))
    tokens: dict[str, Any] = unsigned(cluster.b.url, "sso-oidc").create_token(
        **secret, grantType=DEVICE, deviceCode=started["deviceCode"])
    return {**tokens, **secret}


def test_deprovisioning_through_scim_is_immediate_on_every_process(cluster: Cluster) -> None:
    token, token_id = scim_token(cluster)
    auth = {"Authorization": f"Bearer {token}"}
    base = f"/scim/v2/{cluster.identity_store_id}"
    a = httpx.Client(base_url=cluster.a.url + base, headers=auth, timeout=30)
    b = httpx.Client(base_url=cluster.b.url + base, headers=auth, timeout=30)
    with a, b:
        def person(name: str) -> str:
            made = a.post("/Users", json={
                "userName": name, "displayName": name,
                "name": {"givenName": "Dist", "familyName": "Ributed"}})
            assert made.status_code == 201, made.text
            return str(made.json()["id"])

        ada, bob = person("scim-ada"), person("scim-bob")
        group = a.post("/Groups", json={"displayName": "scim-distributed", "members": [
            {"value": ada}, {"value": bob}]})
        assert group.status_code == 201, group.text
        group_id = group.json()["id"]
        assert {m["value"] for m in b.get(f"/Groups/{group_id}").json()["members"]} == \
            {ada, bob}  # what a wrote, b reads
        sso = cluster.admin("sso-admin")
        instance = sso.list_instances()["Instances"][0]["InstanceArn"]
        ps = sso.create_permission_set(InstanceArn=instance, Name="ScimDistributed")[
            "PermissionSet"]["PermissionSetArn"]
        status = sso.create_account_assignment(
            InstanceArn=instance, TargetId=cluster.account_id, TargetType="AWS_ACCOUNT",
            PermissionSetArn=ps, PrincipalType="GROUP", PrincipalId=group_id)
        assert status["AccountAssignmentCreationStatus"]["Status"] == "SUCCEEDED"
        sessions = {user: sign_in(cluster, user) for user in (ada, bob)}
        portals = [unsigned(url, "sso") for url in (cluster.a.url, cluster.a.url,
                                                     cluster.b.url)]

        def role(user: str) -> dict[str, str]:
            return {"accessToken": sessions[user]["accessToken"],
                    "accountId": cluster.account_id, "roleName": "ScimDistributed"}

        for portal in portals:  # every process (a has two workers) has read and kept it
            for user in (ada, bob):
                assert portal.get_role_credentials(**role(user))["roleCredentials"]
        # Removed from the group on a: the role is gone on every process; bob keeps his.
        removed = a.patch(f"/Groups/{group_id}", json={"schemas": [PATCH], "Operations": [
            {"op": "remove", "path": f'members[value eq "{ada}"]'}]})
        assert removed.status_code == 200, removed.text
        for portal in portals:
            assert refused(portal.get_role_credentials, **role(ada)) == \
                "ResourceNotFoundException"
            assert portal.get_role_credentials(**role(bob))["roleCredentials"]
        # The control: back in the group through b, and every process sees that too.
        assert b.patch(f"/Groups/{group_id}", json={"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": ada}]}]}).status_code == 200
        for portal in portals:
            assert portal.get_role_credentials(**role(ada))["roleCredentials"]
        # Deactivated on a: the portal, the role and the refresh token end on b at once.
        off = a.patch(f"/Users/{ada}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "value": {"active": False}}]})
        assert off.status_code == 200 and off.json()["active"] is False, off.text
        for portal in portals:
            assert refused(portal.list_accounts, accessToken=sessions[ada]["accessToken"]) \
                == "UnauthorizedException"
            assert refused(portal.get_role_credentials, **role(ada)) == \
                "UnauthorizedException"
            assert portal.get_role_credentials(**role(bob))["roleCredentials"]
        refresh = {"clientId": sessions[ada]["clientId"],
                   "clientSecret": sessions[ada]["clientSecret"],
                   "grantType": "refresh_token", "refreshToken": sessions[ada]["refreshToken"]}
        assert refused(unsigned(cluster.b.url, "sso-oidc").create_token, **refresh) == \
            "InvalidGrantException"
        # Deleted on a: bob's sign-in ends on every process too.
        assert a.delete(f"/Users/{bob}").status_code == 204
        for portal in portals:
            assert refused(portal.list_accounts, accessToken=sessions[bob]["accessToken"]) \
                == "UnauthorizedException"
        assert b.get(f"/Users/{bob}").status_code == 404
        # A SCIM token revoked by another process is refused by both at once.
        assert b.get("/Users").status_code == 200

        async def revoke() -> None:
            ic = cluster.runtime.identity_center
            found = await ic.instances.by_store(cluster.identity_store_id)
            assert found is not None
            await ScimTokens(ic.store, cluster.runtime.clock).revoke(found, token_id)

        cluster.run(revoke())
        for client in (a, b, a):
            answer = client.get("/Users")
            assert answer.status_code == 401 and answer.json()["status"] == "401", answer.text
