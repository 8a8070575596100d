"""Real SCIM clients against the broker's SCIM server: the compliance checker
``scim2-tester`` (every check that applies must pass), and Okta's and Entra ID's documented
provisioning requests replayed literally, with ``identitystore`` (boto3) and the portal's role
list asked after each step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from scim2_client import BaseSyncSCIMClient
from scim2_tester import Status, check_server

from tests.helpers import start_broker
from tests.integration.test_scim import new_token
from tests.sso_world import MovableClock, SsoWorld, make_world


class HttpxScimClient(BaseSyncSCIMClient):
    """scim2-client over httpx (its own network engine needs httpx2, which the suite does
    not install): the three methods an engine implements."""

    def __init__(self, client: httpx.Client, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        url = self.client.build_request("GET", endpoint).url
        base = self.client.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port) and \
            url.raw_path.startswith(base.raw_path)

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.client.request(method, url, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoWorld]:
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("scim-clients"), clock=clock)
    try:
        yield make_world(broker, clock)
    finally:
        broker.stop()


def test_scim2_tester_passes(world: SsoWorld) -> None:
    token = new_token(world, world.one)
    with httpx.Client(base_url=f"{world.broker.url}/scim/v2/{world.one.identity_store_id}/",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        results = check_server(HttpxScimClient(http))
    failed = [(r.title, r.resource_type, r.reason) for r in results
              if r.status in (Status.ERROR, Status.CRITICAL) and
              (r.title, r.resource_type, r.reason) not in LEFT_OUT]
    assert results and not failed, "\n".join(map(str, failed))
    assert sum(r.status == Status.SUCCESS for r in results) > 50


# The checks that do not apply, each named in docs/identity-center.md ("Automatic
# provisioning (SCIM)"): a user's ``active`` is their status in the directory (ENABLED or
# DISABLED), which always has a value, so removing it cannot leave it absent.
LEFT_OUT = {("check_remove_attribute", "User",
             "PATCH modify() did not remove attribute 'active'")}


# -- the identity providers' documented requests ------------------------------------------------

class Provider:
    """An identity provider's requests to the broker's SCIM endpoint, and what the rest of
    Identity Center says after each."""

    def __init__(self, world: SsoWorld, http: httpx.Client) -> None:
        self.world = world
        self.tenant = world.one
        self.http = http
        self.store = world.broker.client("identitystore", world.one.root)

    def send(self, method: str, path: str, body: Any = None, status: int = 200,
             params: dict[str, str] | None = None) -> Any:
        reply = self.http.request(method, path, json=body, params=params)
        assert reply.status_code == status, reply.text
        return reply.json() if reply.content else None

    def roles(self, user_id: str) -> list[str]:
        """The portal's role list for the user (what /start and the sso API show)."""
        runtime = self.world.broker.runtime

        async def run() -> list[str]:
            instance = await runtime.identity_center.instances.by_store(
                self.tenant.identity_store_id)
            assert instance is not None
            found = await runtime.identity_center.access.portal_roles(instance, user_id)
            return [r.role_name for r in found]
        return self.world.broker.server.call(run())

    def assign_group(self, group_id: str) -> None:
        admin = self.world.broker.client("sso-admin", self.tenant.root)
        status = admin.create_account_assignment(
            InstanceArn=self.tenant.instance_arn, TargetId=self.tenant.account_id,
            TargetType="AWS_ACCOUNT", PermissionSetArn=self.tenant.permission_set_arn,
            PrincipalType="GROUP", PrincipalId=group_id)["AccountAssignmentCreationStatus"]
        assert status["Status"] in ("SUCCEEDED", "IN_PROGRESS"), status

    def portal_token(self, user_id: str) -> str:
        """An sso API access token of the user, as the CLI's device flow gets one."""
        world = self.world
        client = world.register()
        oidc = world.client("sso-oidc")
        started = oidc.start_device_authorization(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            startUrl=self.tenant.start_url)
        world.approve(started["userCode"], self.tenant, user_id=user_id)
        token: str = oidc.create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="urn:ietf:params:oauth:grant-type:device_code",
            deviceCode=started["deviceCode"])["accessToken"]
        return token

    def portal_works(self, token: str) -> bool:
        try:
            self.world.client("sso").list_accounts(accessToken=token)
        except Exception as exc:  # botocore's UnauthorizedException
            assert "Unauthorized" in str(exc), exc
            return False
        return True


@pytest.fixture(scope="module")
def provider(world: SsoWorld) -> Iterator[Provider]:
    token = new_token(world, world.one)
    with httpx.Client(base_url=f"{world.broker.url}/scim/v2/{world.one.identity_store_id}",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        yield Provider(world, http)


def test_entra_ids_documented_sequence(provider: Provider) -> None:
    """Microsoft's "Tutorial: Develop and plan provisioning for a SCIM endpoint", its
    request examples in order (ids are the server's)."""
    p, store_id = provider, provider.tenant.identity_store_id
    made = p.send("POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
        "active": True,
        "emails": [{"primary": True, "type": "work",
                    "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName",
                 "givenName": "givenName"},
        "roles": []}, status=201)
    uid = made["id"]
    assert made["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
    described = p.store.describe_user(IdentityStoreId=store_id, UserId=uid)
    assert described["DisplayName"] == "givenName familyName"  # from the formatted name
    assert p.send("GET", f"/Users/{uid}")["userName"] == made["userName"]
    found = p.send("GET", "/Users", params={
        "filter": 'userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"'})
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == uid
    assert p.send("GET", "/Users", params={"filter": 'userName eq "non-existent user"'}
                  )["totalResults"] == 0
    p.send("PATCH", f"/Users/{uid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "emails[type eq \"work\"].value",
             "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}]})
    p.send("PATCH", f"/Users/{uid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "userName",
                        "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}]})
    described = p.store.describe_user(IdentityStoreId=store_id, UserId=uid)
    assert described["UserName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    assert described["Emails"][0]["Value"] == "updatedEmail@microsoft.com"
    assert described["Name"]["FamilyName"] == "updatedFamilyName"
    group = p.send("POST", "/Groups", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
        "meta": {"resourceType": "Group"}}, status=201)
    gid = group["id"]
    assert "members" not in p.send("GET", f"/Groups/{gid}",
                                   params={"excludedAttributes": "members"})
    listed = p.send("GET", "/Groups", params={"excludedAttributes": "members",
                                              "filter": 'displayName eq "displayName"'})
    assert [g["id"] for g in listed["Resources"]] == [gid]
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "displayName",
                        "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]})
    assert p.store.describe_group(IdentityStoreId=store_id, GroupId=gid)["DisplayName"] == \
        "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    p.assign_group(gid)
    token = p.portal_token(uid)
    assert p.roles(uid) == []
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Add", "path": "members",
                        "value": [{"$ref": None, "value": uid}]}]})
    assert p.roles(uid) == [p.tenant.role_name]  # at the very next request
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Remove", "path": "members",
                        "value": [{"$ref": None, "value": uid}]}]})
    assert p.roles(uid) == []
    assert p.portal_works(token)
    p.send("PATCH", f"/Users/{uid}", {
        "Operations": [{"op": "Replace", "path": "active", "value": False}],
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]})
    assert p.store.describe_user(IdentityStoreId=store_id, UserId=uid)["UserStatus"] == \
        "DISABLED"
    assert not p.portal_works(token)  # the disabled user's tokens end at once
    p.send("DELETE", f"/Users/{uid}", status=204)
    p.send("DELETE", f"/Groups/{gid}", status=204)
    assert p.store.list_groups(IdentityStoreId=store_id, Filters=[{
        "AttributePath": "DisplayName",
        "AttributeValue": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]
    )["Groups"] == []


def test_oktas_documented_sequence_with_nesting(provider: Provider) -> None:
    """Okta's "SCIM 2.0 protocol reference", its requests in order; then a group nested in
    an assigned group, which AWS refuses and the broker offers."""
    p, store_id = provider, provider.tenant.identity_store_id
    assert p.send("GET", "/Users", params={"filter": 'userName eq "test.user@example.com"',
                                           "startIndex": "1", "count": "100"}
                  )["Resources"] == []
    made = p.send("POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@example.com",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@example.com", "type": "work"}],
        "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [], "password": "1mz050nq", "active": True}, status=201)
    uid = made["id"]
    assert p.store.get_user_id(IdentityStoreId=store_id, AlternateIdentifier={
        "ExternalId": {"Issuer": "scim", "Id": "00ujl29u0le5T6Aj10h7"}})["UserId"] == uid
    p.send("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                              "userName": "test.user@example.com",
                              "name": {"givenName": "Test", "familyName": "User"},
                              "displayName": "Test User"}, status=409)
    assert p.send("GET", "/Users", params={"startIndex": "1", "count": "100"}
                  )["totalResults"] >= 1
    assert p.send("GET", f"/Users/{uid}")["userName"] == "test.user@example.com"
    put = p.send("PUT", f"/Users/{uid}", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "23a35c27-23d3-4c03-b4c5-6443c09e7173",
        "userName": "another.user@okta.com",
        "name": {"givenName": "Another", "middleName": "", "familyName": "User"},
        "emails": [{"primary": True, "value": "another.user@example.com", "type": "work",
                    "display": "another.user@example.com"}],
        "active": True, "groups": [], "meta": {"resourceType": "User"}})
    assert put["id"] == uid and put["userName"] == "another.user@okta.com"
    assert p.store.describe_user(IdentityStoreId=store_id, UserId=uid)["UserName"] == \
        "another.user@okta.com"
    group = p.send("POST", "/Groups", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Test SCIM", "members": []}, status=201)
    gid = group["id"]
    assert p.send("GET", f"/Groups/{gid}")["displayName"] == "Test SCIM"
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace",
                        "value": {"id": gid, "displayName": "Test SCIM2"}}]})
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members",
                        "value": [{"value": uid, "display": "test.user@example.com"}]}]})
    # Nested: Test SCIM2 inside an assigned parent; the role reaches its member.
    parent = p.send("POST", "/Groups", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Engineering", "members": [{"value": gid, "type": "Group"}]},
        status=201)
    assert parent["members"] == [{"value": gid, "type": "Group",
                                  "$ref": f"{p.http.base_url}/Groups/{gid}".replace(
                                      "//Groups", "/Groups")}]
    p.assign_group(parent["id"])
    assert p.roles(uid) == [p.tenant.role_name]
    token = p.portal_token(uid)
    assert p.store.is_member_in_groups(
        IdentityStoreId=store_id, MemberId={"UserId": uid}, GroupIds=[parent["id"]]
    )["Results"][0]["MembershipExists"]
    p.send("PATCH", f"/Groups/{gid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": f"members[value eq \"{uid}\"]"}]})
    assert p.roles(uid) == []
    assert p.portal_works(token)
    deactivated = p.send("PATCH", f"/Users/{uid}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": False}}]})
    assert deactivated["active"] is False and not p.portal_works(token)
    p.send("DELETE", f"/Groups/{gid}", status=204)
    p.send("DELETE", f"/Groups/{parent['id']}", status=204)
