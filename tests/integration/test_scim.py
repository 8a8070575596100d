"""Identity Center's SCIM 2.0 server against a real broker over HTTP: discovery, users and
groups read back through boto3's ``identitystore`` (and the reverse), filters, pages, PATCH,
ETags, nested groups, tokens; each attack beside the honest request that succeeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.scim.tokens import ScimTokens
from tests.helpers import start_broker
from tests.sso_world import MovableClock, SsoWorld, Tenant, make_world

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


class Scim:
    """An instance's SCIM endpoint with a bearer token."""

    def __init__(self, world: SsoWorld, tenant: Tenant, token: str) -> None:
        self.base = f"{world.broker.url}/scim/v2/{tenant.identity_store_id}"
        self.token = token
        self.http = HTTP


    def __call__(self, method: str, path: str, body: Any = None, *,
                 token: str | None = None, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None, raw: bytes | None = None
                 ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {token or self.token}",
                "Content-Type": "application/scim+json", **(headers or {})}
        content = raw if raw is not None else None if body is None else json.dumps(body)
        return self.http.request(method, self.base + path, content=content, headers=sent,
                                 params=params)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200,
           **kw: Any) -> Any:
        reply = self(method, path, body, **kw)
        assert reply.status_code == status, reply.text
        if status == 204:
            return None
        assert reply.headers["content-type"].startswith("application/scim+json")
        return reply.json()


HTTP = httpx.Client(timeout=30, headers={"Connection": "close"})


def refused(reply: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body: dict[str, Any] = reply.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status), body
    if scim_type is not None:
        assert body["scimType"] == scim_type, body
    return body


def new_token(world: SsoWorld, tenant: Tenant, days: int = 365) -> str:
    runtime = world.broker.runtime

    async def run() -> str:
        instance = await runtime.identity_center.instances.by_store(tenant.identity_store_id)
        assert instance is not None
        made = await ScimTokens(runtime.identity_center.store, runtime.clock).create(
            instance, days=days)
        return made.token
    return world.broker.server.call(run())


def user_body(name: str, **more: Any) -> dict[str, Any]:
    return {"schemas": [USER], "userName": name, "displayName": f"{name} Example",
            "name": {"givenName": name.title(), "familyName": "Example"},
            "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}],
            **more}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoWorld]:
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("scim"), clock=clock)
    try:
        yield make_world(broker, clock)
    finally:
        HTTP.close()
        broker.stop()


@pytest.fixture(scope="module")
def scim(world: SsoWorld) -> Scim:
    return Scim(world, world.one, new_token(world, world.one))


def test_discovery(scim: Scim) -> None:
    config = scim.ok("GET", "/ServiceProviderConfig")
    assert config["patch"] == {"supported": True} and config["etag"] == {"supported": True}
    assert config["filter"]["supported"] and not config["bulk"]["supported"]
    types = scim.ok("GET", "/ResourceTypes")
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    assert scim.ok("GET", "/ResourceTypes/User")["schemaExtensions"] == [
        {"schema": ENTERPRISE, "required": False}]
    schemas = scim.ok("GET", "/Schemas")
    assert {s["id"] for s in schemas["Resources"]} == {USER, GROUP, ENTERPRISE}
    user = scim.ok("GET", f"/Schemas/{USER}")
    names = {a["name"]: a for a in user["attributes"]}
    assert names["id"]["mutability"] == "readOnly" and names["userName"]["required"]
    refused(scim("GET", "/Schemas/urn:nothing"), 404)
    refused(scim("GET", "/Bulk"), 501)
    refused(scim("DELETE", "/ServiceProviderConfig"), 405)
    refused(scim("GET", "/Nothing"), 404)


def test_a_user_is_what_identitystore_reads_and_the_reverse(world: SsoWorld,
                                                            scim: Scim) -> None:
    made = scim.ok("POST", "/Users", user_body(
        "ada", externalId="okta-00u1", title="Engineer",
        **{ENTERPRISE: {"department": "R&D", "manager": {"value": "boss-1"}}}), status=201)
    assert made["meta"]["location"] == f"{scim.base}/Users/{made['id']}"
    assert made["meta"]["version"] == 'W/"1"' and made["active"] is True
    store = world.broker.client("identitystore", world.one.root)
    described = store.describe_user(IdentityStoreId=world.one.identity_store_id,
                                    UserId=made["id"],
                                    Extensions=["aws:identitystore:enterprise"])
    assert described["UserName"] == "ada" and described["Title"] == "Engineer"
    assert described["Emails"] == [{"Value": "ada@example.com", "Type": "work",
                                    "Primary": True}]
    assert described["Extensions"]["aws:identitystore:enterprise"] == {
        "department": "R&D", "manager": {"value": "boss-1"}}
    assert store.get_user_id(
        IdentityStoreId=world.one.identity_store_id,
        AlternateIdentifier={"ExternalId": {"Issuer": "scim", "Id": "okta-00u1"}}
    )["UserId"] == made["id"]
    # The reverse: identitystore's change is what SCIM reads next.
    store.update_user(IdentityStoreId=world.one.identity_store_id, UserId=made["id"],
                      Operations=[{"AttributePath": "title", "AttributeValue": "Lead"}])
    got = scim("GET", f"/Users/{made['id']}")
    assert got.json()["title"] == "Lead" and got.headers["etag"] == 'W/"2"'
    assert got.json()[ENTERPRISE]["department"] == "R&D"
    # A user name is unique without regard to case: 409 uniqueness.
    refused(scim("POST", "/Users", user_body("ADA")), 409, "uniqueness")
    scim.ok("DELETE", f"/Users/{made['id']}", status=204)
    refused(scim("GET", f"/Users/{made['id']}"), 404)


def test_filters_and_pages(scim: Scim) -> None:
    ids = {}
    for name in ("fil-ann", "fil-bob", "fil-cyd"):
        ids[name] = scim.ok("POST", "/Users", user_body(name, externalId=f"x-{name}"),
                            status=201)["id"]

    def found(expression: str) -> set[str]:
        listed = scim.ok("GET", "/Users", params={"filter": expression})
        return {u["userName"] for u in listed["Resources"]}

    assert found('userName eq "FIL-ANN"') == {"fil-ann"}  # userName is not caseExact
    assert found('externalId eq "x-fil-bob"') == {"fil-bob"}
    assert found('externalId eq "X-FIL-BOB"') == set()  # externalId is caseExact
    assert found('userName sw "fil-" and not (userName ew "bob")') == {"fil-ann", "fil-cyd"}
    assert found('userName eq "fil-ann" or emails.value co "cyd@"') == {"fil-ann", "fil-cyd"}
    assert found('emails[type eq "work" and value sw "fil-b"]') == {"fil-bob"}
    assert found(f'id eq "{ids["fil-cyd"]}"') == {"fil-cyd"}
    assert "fil-ann" in found("title pr or userName pr")
    # The injection: a quote inside the value is the value's, never the filter's.
    assert found('userName eq "fil-ann\\" or userName pr \\""') == set()
    assert found('userName eq "fil-ann" or userName pr') >= {"fil-ann", "fil-bob"}  # control
    for bad in ('userName eq', 'userName xx "a"', 'password eq "a"', 'userName eq "a" )',
                '(userName eq "a"', 'userName eq "a" and', 'urn:x:y:z eq "a"', '"a" eq "a"',
                "userName eq 'a'", "not userName eq \"a\"", "x" * 5000):
        refused(scim("GET", "/Users", params={"filter": bad}), 400, "invalidFilter")
    # Pages (RFC 7644 §3.4.2.4): 1-based startIndex, count, totalResults of them all.
    listed = scim.ok("GET", "/Users", params={"filter": 'userName sw "fil-"',
                                              "startIndex": "2", "count": "1"})
    assert listed["totalResults"] == 3 and listed["startIndex"] == 2
    assert listed["itemsPerPage"] == 1 and [u["userName"] for u in listed["Resources"]] == \
        [sorted(ids, key=lambda n: ids[n])[1]]
    assert scim.ok("GET", "/Users", params={"count": "0"})["Resources"] == []
    every = scim.ok("GET", "/Users")  # no filter: pages of the whole store, in one order
    pages = [scim.ok("GET", "/Users", params={"startIndex": str(i), "count": "2"})
             for i in range(1, every["totalResults"] + 1, 2)]
    assert [u["id"] for p in pages for u in p["Resources"]] == \
        [u["id"] for u in every["Resources"]]
    assert all(p["totalResults"] == every["totalResults"] for p in pages)
    refused(scim("GET", "/Users", params={"count": "many"}), 400, "invalidValue")
    only = scim.ok("GET", "/Users", params={"filter": 'userName eq "fil-ann"',
                                            "attributes": "userName,name.givenName"})
    assert set(only["Resources"][0]) == {"schemas", "id", "meta", "userName", "name"}
    assert only["Resources"][0]["name"] == {"givenName": "Fil-Ann"}
    for user_id in ids.values():
        scim.ok("DELETE", f"/Users/{user_id}", status=204)


def test_patch_in_the_dialects_of_okta_and_entra_id(world: SsoWorld, scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body("pat"), status=201)
    path = f"/Users/{user['id']}"

    def patched(*operations: dict[str, Any]) -> dict[str, Any]:
        got: dict[str, Any] = scim.ok("PATCH", path, {"schemas": [PATCH],
                                                      "Operations": list(operations)})
        return got

    got = patched({"op": "Replace", "path": 'emails[type eq "work"].value',
                   "value": "pat@new.example"},
                  {"op": "Replace", "path": "name.familyName", "value": "Newname"})
    assert got["emails"] == [{"value": "pat@new.example", "type": "work", "primary": True}]
    assert got["name"]["familyName"] == "Newname"
    got = patched({"op": "add", "path": f"{ENTERPRISE}:department", "value": "Ops"},
                  {"op": "replace", "value": {"title": "Boss", "name.givenName": "Patty",
                                              ENTERPRISE: {"costCenter": "42"}}})
    assert got[ENTERPRISE] == {"department": "Ops", "costCenter": "42"}
    assert got["title"] == "Boss" and got["name"]["givenName"] == "Patty"
    got = patched({"op": "remove", "path": "title"},
                  {"op": "remove", "path": f"{ENTERPRISE}:department"})
    assert "title" not in got and got[ENTERPRISE] == {"costCenter": "42"}
    assert patched({"op": "Replace", "path": "active", "value": "False"})["active"] is False
    store = world.broker.client("identitystore", world.one.root)
    assert store.describe_user(IdentityStoreId=world.one.identity_store_id,
                               UserId=user["id"])["UserStatus"] == "DISABLED"
    assert patched({"op": "replace", "value": {"active": True}})["active"] is True
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": 'emails[type eq "home"]'}]}), 400, "noTarget")
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "nothing", "value": 1}]}), 400, "invalidPath")
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "move", "path": "title", "value": "x"}]}), 400, "invalidSyntax")
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "userName", "value": "has space"}]}), 400, "invalidValue")
    # Nothing of a refused request is written: the second operation fails, the first stays
    # undone.
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "title", "value": "Half"},
        {"op": "replace", "path": "emails", "value": [{"value": "a@x"}, {"value": "b@x"}]}]}),
        400, "invalidValue")
    assert "title" not in scim.ok("GET", path)
    scim.ok("DELETE", path, status=204)


def test_id_and_meta_are_read_only(scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body("ro"), status=201)
    path = f"/Users/{user['id']}"
    for operation in ({"op": "replace", "path": "id", "value": "0123456789-forged"},
                      {"op": "replace", "value": {"id": "0123456789-forged"}},
                      {"op": "replace", "path": "meta.version", "value": 'W/"99"'},
                      {"op": "replace", "path": "meta", "value": {"created": "2000-01-01"}},
                      {"op": "remove", "path": "id"}):
        refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [operation]}), 400,
                "mutability")
    # Control: the id's own value (Okta sends it back) changes nothing and is accepted.
    same = scim.ok("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"id": user["id"], "title": "Same"}}]})
    assert same["id"] == user["id"] and same["title"] == "Same"
    # PUT: readOnly values are ignored (RFC 7643 §2.2, RFC 7644 §3.5.1).
    put = scim.ok("PUT", path, {**user_body("ro"), "id": "0123456789-forged",
                                "meta": {"created": "2000-01-01T00:00:00Z"}})
    assert put["id"] == user["id"] and put["meta"]["created"] == user["meta"]["created"]
    assert "title" not in put  # PUT replaces: what it does not give is gone
    scim.ok("DELETE", path, status=204)


def test_etags(scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body("etag"), status=201)
    path = f"/Users/{user['id']}"
    version = user["meta"]["version"]
    assert scim("GET", path, headers={"If-None-Match": version}).status_code == 304
    changed = scim.ok("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "title", "value": "One"}]}, headers={"If-Match": version})
    assert changed["meta"]["version"] != version
    refused(scim("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "title", "value": "Two"}]}, headers={"If-Match": version}),
        412)
    refused(scim("DELETE", path, headers={"If-Match": version}), 412)
    assert scim.ok("GET", path)["title"] == "One"
    scim.ok("DELETE", path, headers={"If-Match": changed["meta"]["version"]}, status=204)

    # A group's members are part of it: a member added or removed is a new version, so a
    # client holding the old one cannot replace the group over the change (a lost update).
    group = scim.ok("POST", "/Groups", {"schemas": [GROUP], "displayName": "etag-group"},
                    status=201)
    member = scim.ok("POST", "/Users", user_body("etag-member"), status=201)
    gpath, before = f"/Groups/{group['id']}", group["meta"]["version"]
    added = scim.ok("PATCH", gpath, {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": member["id"]}]}]},
        headers={"If-Match": before})
    assert added["meta"]["version"] != before
    assert scim.ok("GET", gpath)["meta"]["version"] == added["meta"]["version"]
    refused(scim("PUT", gpath, {"schemas": [GROUP], "displayName": "etag-group",
                                "members": []}, headers={"If-Match": before}), 412)
    assert [m["value"] for m in scim.ok("GET", gpath)["members"]] == [member["id"]]
    emptied = scim.ok("PUT", gpath, {"schemas": [GROUP], "displayName": "etag-group",
                                     "members": []}, headers={"If-Match": added["meta"]["version"]})
    assert emptied["meta"]["version"] != added["meta"]["version"]
    assert "members" not in emptied or emptied["members"] == []


def test_tokens(world: SsoWorld, scim: Scim) -> None:
    other = new_token(world, world.two)
    refused(scim("GET", "/Users", token=other), 401)  # another instance's token
    other_url = Scim(world, world.two, other)
    assert other_url("GET", "/Users").status_code == 200  # control: its own instance
    refused(other_url("GET", "/Users", token=scim.token), 401)  # and the reverse
    refused(scim("GET", "/Users", token="scim-" + "0" * 32 + "." + "A" * 43), 401)
    refused(scim("GET", "/Users", headers={"Authorization": "Basic eDp5"}), 401)
    refused(scim("GET", "/Users", token=scim.token[:-1] + ("A" if scim.token[-1] != "A"
                                                            else "B")), 401)
    # At most two per instance; revoked at once; rotated.
    runtime = world.broker.runtime

    async def instance() -> Any:
        return await runtime.identity_center.instances.by_store(world.two.identity_store_id)

    tokens = ScimTokens(runtime.identity_center.store, runtime.clock)
    found = world.broker.server.call(instance())
    second = world.broker.server.call(tokens.create(found))
    with pytest.raises(Exception, match="2 tokens already"):
        world.broker.server.call(tokens.create(found))
    world.broker.server.call(tokens.revoke(found, second.info.token_id))
    refused(other_url("GET", "/Users", token=second.token), 401)
    assert other_url("GET", "/Users").status_code == 200
    old_id = next(t.token_id for t in world.broker.server.call(tokens.list(found)))
    rotated = world.broker.server.call(tokens.rotate(found, old_id))
    refused(other_url("GET", "/Users"), 401)
    assert other_url("GET", "/Users", token=rotated.token).status_code == 200
    # An expired token: a short one, after its day.
    short = world.broker.server.call(tokens.create(found, days=1))
    assert other_url("GET", "/Users", token=short.token).status_code == 200
    with world.clock.later(2 * 86400):
        refused(other_url("GET", "/Users", token=short.token), 401)
        assert other_url("GET", "/Users", token=rotated.token).status_code == 200


def test_nested_groups_and_cycles(world: SsoWorld, scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body("nest"), status=201)
    groups = [scim.ok("POST", "/Groups", {"schemas": [GROUP], "displayName": f"nest-{n}"},
                      status=201) for n in "abc"]
    a, b, c = (g["id"] for g in groups)

    def add(parent: str, *members: dict[str, Any]) -> httpx.Response:
        return scim("PATCH", f"/Groups/{parent}", {"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": list(members)}]})

    assert add(a, {"value": b, "type": "Group"}).status_code == 200
    assert add(b, {"value": c}).status_code == 200  # a group's id needs no type
    assert add(c, {"value": user["id"]}).status_code == 200
    got = scim.ok("GET", f"/Groups/{a}")
    assert got["members"] == [{"value": b, "$ref": f"{scim.base}/Groups/{b}", "type": "Group"}]
    assert scim.ok("GET", f"/Groups/{c}")["members"][0]["type"] == "User"
    # The user is in a through b and c: identitystore says so.
    store = world.broker.client("identitystore", world.one.root)
    results = store.is_member_in_groups(
        IdentityStoreId=world.one.identity_store_id, MemberId={"UserId": user["id"]},
        GroupIds=[a, b, c])["Results"]
    assert all(r["MembershipExists"] for r in results)
    # Cycles: a group in itself, and c → a closing a → b → c.
    refused(add(a, {"value": a}), 400, "invalidValue")
    refused(add(c, {"value": a, "type": "Group"}), 400, "invalidValue")
    assert scim.ok("GET", f"/Groups/{c}")["members"] == [
        {"value": user["id"], "$ref": f"{scim.base}/Users/{user['id']}", "type": "User"}]
    refused(add(a, {"value": "0123456789-00000000-0000-0000-0000-000000000000"}), 400,
            "invalidValue")
    # Filters over members.
    listed = scim.ok("GET", "/Groups", params={"filter": f'members.value eq "{b}"'})
    assert [g["id"] for g in listed["Resources"]] == [a]
    slim = scim.ok("GET", f"/Groups/{a}", params={"excludedAttributes": "members"})
    assert "members" not in slim
    # Okta's removal by value filter; then the group's deletion.
    scim.ok("PATCH", f"/Groups/{b}", {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": f'members[value eq "{c}"]'}]})
    results = store.is_member_in_groups(
        IdentityStoreId=world.one.identity_store_id, MemberId={"UserId": user["id"]},
        GroupIds=[a, c])["Results"]
    assert [r["MembershipExists"] for r in results] == [False, True]
    for group in (a, b, c):
        scim.ok("DELETE", f"/Groups/{group}", status=204)
    scim.ok("DELETE", f"/Users/{user['id']}", status=204)


def test_bad_requests_are_scim_errors(scim: Scim) -> None:
    refused(scim("POST", "/Users", raw=b"{not json"), 400, "invalidSyntax")
    refused(scim("POST", "/Users", raw=b'{"userName": "a", "userName": "b"}'), 400,
            "invalidSyntax")
    refused(scim("POST", "/Users", [1, 2]), 400, "invalidSyntax")
    refused(scim("POST", "/Users", {"userName": "x", "shoeSize": 42}), 400, "invalidValue")
    refused(scim("POST", "/Users", {"userName": "nobody"}), 400, "invalidValue")
    refused(scim("POST", "/Groups", {"displayName": ""}), 400, "invalidValue")
    refused(scim("GET", "/Users/%00"), 404)
    refused(scim("PUT", "/Users"), 405)
    refused(scim("POST", "/Users", raw=b"x" * (2 * 1024 * 1024)), 413)


def test_attributes_and_excluded_attributes(scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body(
        "proj", **{ENTERPRISE: {"department": "Ops", "costCenter": "7"}}), status=201)
    path = f"/Users/{user['id']}"
    got = scim.ok("GET", path, params={"attributes": f"{ENTERPRISE}:department"})
    assert set(got) == {"schemas", "id", "meta", ENTERPRISE}
    assert got[ENTERPRISE] == {"department": "Ops"}
    got = scim.ok("GET", path, params={"excludedAttributes": f"name.givenName,emails,"
                                                             f"{ENTERPRISE}"})
    assert "emails" not in got and ENTERPRISE not in got
    assert got["name"] == {"familyName": "Example"}
    refused(scim("GET", path, params={"attributes": "shoeSize"}), 400, "invalidValue")
    group = scim.ok("POST", "/Groups", {"displayName": "proj-group",
                                        "members": [{"value": user["id"]}]}, status=201)
    listed = scim.ok("GET", "/Groups", params={"filter": 'displayName sw "proj-"'})
    assert listed["Resources"][0]["members"][0]["value"] == user["id"]
    slim = scim.ok("GET", "/Groups", params={"filter": 'displayName sw "proj-"',
                                             "excludedAttributes": "members"})
    assert "members" not in slim["Resources"][0]
    scim.ok("DELETE", f"/Groups/{group['id']}", status=204)
    scim.ok("DELETE", path, status=204)


def test_the_command_line_manages_tokens(world: SsoWorld, tmp_path: Any) -> None:
    """broker sso scim-token create|list|rotate|revoke --json against the broker's data."""
    from click.testing import CliRunner

    from broker.cli import main

    settings = world.broker.settings
    runner = CliRunner()
    env = {"BROKER_SERVER_DATA_DIR": str(settings.data_dir)}
    store = world.two.identity_store_id

    def run(*args: str) -> Any:
        result = runner.invoke(main, ["sso", "scim-token", *args, "--identity-store-id", store,
                                      "--json"], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    for old in run("list")["tokens"]:  # test_tokens may have left some
        run("revoke", "--token-id", old["token_id"])
    made = run("create", "--days", "30")
    assert made["status"] == "ACTIVE" and made["token"].startswith("scim-")
    assert made["scim_endpoint"].endswith(f"/scim/v2/{store}")
    two = Scim(world, world.two, made["token"])
    assert two("GET", "/Users").status_code == 200
    assert [t["token_id"] for t in run("list")["tokens"]] == [made["token_id"]]
    rotated = run("rotate", "--token-id", made["token_id"])
    refused(two("GET", "/Users"), 401)
    assert two("GET", "/Users", token=rotated["token"]).status_code == 200
    run("revoke", "--token-id", rotated["token_id"])
    refused(two("GET", "/Users", token=rotated["token"]), 401)
    failed = runner.invoke(main, ["sso", "scim-token", "revoke", "--identity-store-id", store,
                                  "--token-id", "nope"], env=env)
    assert failed.exit_code != 0 and "no token" in failed.output


def test_a_refused_group_patch_changes_no_member(scim: Scim) -> None:
    user = scim.ok("POST", "/Users", user_body("half"), status=201)
    taken = scim.ok("POST", "/Groups", {"displayName": "half-taken"}, status=201)
    group = scim.ok("POST", "/Groups", {"displayName": "half-group"}, status=201)
    refused(scim("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": user["id"]}]},
        {"op": "replace", "path": "displayName", "value": "HALF-TAKEN"}]}), 409, "uniqueness")
    assert "members" not in scim.ok("GET", f"/Groups/{group['id']}")
    refused(scim("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": user["id"]}]},
        {"op": "add", "path": "members", "value": [{"value": group["id"]}]}]}),
        400, "invalidValue")  # the second is a cycle: the first is undone
    assert "members" not in scim.ok("GET", f"/Groups/{group['id']}")
    # The control: the same member alone, and a free name.
    got = scim.ok("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": user["id"]}]},
        {"op": "replace", "path": "displayName", "value": "half-renamed"}]})
    assert got["displayName"] == "half-renamed" and len(got["members"]) == 1
    for path in (f"/Groups/{group['id']}", f"/Groups/{taken['id']}", f"/Users/{user['id']}"):
        scim.ok("DELETE", path, status=204)


FILTER_PIECES = st.sampled_from([
    "userName", "emails", "emails.value", "name.givenName", "members", "value", "type",
    f"{ENTERPRISE}:department", "urn:x", " ", "eq", "ne", "co", "sw", "ew", "gt", "pr", "and",
    "or", "not", "(", ")", "[", "]", '"a"', '"\\""', '"\\u0000"', "true", "null", "1.5",
    "-0", "1e999", ".", ":", "$ref", "\\", '"', "é", "\x00"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pieces=st.lists(FILTER_PIECES, max_size=25))
def test_any_filter_or_patch_path_is_parsed_or_refused(pieces: list[str]) -> None:
    """Whatever a filter or a PATCH path holds: it parses, or it is a SCIM 400 — never
    another exception, in the parser or in matching."""
    from broker.scim import filters, patch
    from broker.scim import resources as res
    from broker.scim.errors import ScimError

    text = " ".join(pieces)
    doc = {"userName": "a", "displayName": "A", "emails": [{"value": "a", "type": "work"}],
           "active": True, "name": {"givenName": "b", "familyName": "c"},
           ENTERPRISE: {"department": "a"}}
    try:
        node = filters.parse(text)
    except ScimError as exc:
        assert exc.status == 400 and exc.scim_type == "invalidFilter"
    else:
        filters.matches(node, doc, res.USER.case_exact)
    for joined in (text, "".join(pieces)):
        try:
            ops = patch.parse(res.USER, {"Operations": [
                {"op": "replace", "path": joined, "value": "x"}]})
            changed, _ = patch.apply(res.USER, doc, ops)
            res.user_input(changed)
        except ScimError as exc:
            assert exc.status == 400


def test_a_replace_without_active_keeps_a_deactivated_user_inactive(scim: Scim) -> None:
    """Deprovisioning sticks: a PUT that does not mention ``active`` keeps the stored status
    (a script replacing the profile must not re-enable a person the IdP deactivated); the
    control, a PUT that says ``active: true``, enables them."""
    user = scim.ok("POST", "/Users", user_body("sticky"), status=201)
    assert user["active"] is True  # a new user without ``active`` is active
    path = f"/Users/{user['id']}"
    scim.ok("PATCH", path, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": False}}]})
    replaced = scim.ok("PUT", path, user_body("sticky", title="Renamed"))
    assert replaced["active"] is False and replaced["title"] == "Renamed"
    assert scim.ok("PUT", path, user_body("sticky", active=True))["active"] is True


def test_a_listing_beyond_what_the_server_reads_is_too_many(
        scim: Scim, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter without a key reads at most MAX_SCAN resources: beyond that the answer is
    SCIM's ``tooMany``, never a wrong totalResults; the control, a keyed filter, answers."""
    from broker.scim import server

    made = [scim.ok("POST", "/Users", user_body(f"many-{n}"), status=201) for n in range(3)]
    monkeypatch.setattr(server, "MAX_SCAN", 2)
    refused(scim("GET", "/Users", params={"filter": 'title pr'}), 400, "tooMany")
    found = scim.ok("GET", "/Users", params={"filter": f'userName eq "{made[0]["userName"]}"'})
    assert found["totalResults"] == 1
