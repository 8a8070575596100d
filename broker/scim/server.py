"""The SCIM 2.0 server's use cases: a parsed request in, a status and a JSON document out.

``PUBLIC_URL/scim/v2/{identity store id}/…``: every request needs a bearer token of that
instance (``tokens.py``), or it is 401. Users and Groups are the identity store's, read and
written through ``Directory`` — the very records ``identitystore`` reads — and every write is
an ``sso_*`` record, so the hot path's caches of every process see it at the next request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker import jsontext
from broker.clock import Clock
from broker.identitycenter import store_api
from broker.identitycenter.directory import Directory, DirectoryGroup, DirectoryUser, StoreError
from broker.identitycenter.instances import Instance, Instances
from broker.scim import filters, patch
from broker.scim import resources as res
from broker.scim.errors import (
    ScimError,
    invalid_filter,
    invalid_syntax,
    invalid_value,
    not_found,
    precondition,
    unauthorized,
    uniqueness,
)
from broker.scim.tokens import ScimTokens

log = logging.getLogger("broker.scim")

MAX_RESULTS = 100
MAX_SCAN = 100_000  # resources a filter without a key reads at most
_STORE_ID = re.compile(r"d-[0-9a-f]{10}")
_ENTITY_ID = re.compile(r"[0-9A-Za-z-]{1,100}")
_VERSION = re.compile(r'(?:W/)?"([0-9]{1,20})"')
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"


@dataclass(frozen=True)
class ScimRequest:
    method: str
    identity_store_id: str
    segments: tuple[str, ...]  # after the store id: ("Users", id), ("Schemas",), ...
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class ScimResponse:
    status: int
    document: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Caller:
    instance: Instance
    token_id: str
    base_url: str

    @property
    def by(self) -> str:
        return f"scim:{self.token_id}"


def _store_error(exc: StoreError) -> ScimError:
    if exc.code == "ConflictException":
        if exc.reason == "CONCURRENT_MODIFICATION":
            return precondition(exc.message)
        return uniqueness(exc.message)
    if exc.code == "ResourceNotFoundException":
        return not_found(exc.message)
    return invalid_value(exc.message)


class ScimServer:
    def __init__(self, instances: Instances, directory: Directory, tokens: ScimTokens,
                 clock: Clock, *, public_url: str) -> None:
        self._instances = instances
        self._directory = directory
        self._tokens = tokens
        self._clock = clock
        self._public_url = public_url.rstrip("/")

    def base_url(self, identity_store_id: str) -> str:
        return f"{self._public_url}/scim/v2/{identity_store_id}"

    # -- the request ------------------------------------------------------------------------

    async def handle(self, request: ScimRequest) -> ScimResponse:
        try:
            caller = await self._authenticate(request)
            return await self._route(caller, request)
        except StoreError as exc:
            raise _store_error(exc) from None

    async def _authenticate(self, request: ScimRequest) -> _Caller:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise unauthorized("A bearer token is needed (Authorization: Bearer …).")
        if not _STORE_ID.fullmatch(request.identity_store_id):
            raise unauthorized()
        instance = await self._instances.by_store(request.identity_store_id)
        if instance is None:
            raise unauthorized()
        info = await self._tokens.check(instance, presented.strip())
        if info is None:
            raise unauthorized()
        return _Caller(instance, info.token_id, self.base_url(instance.identity_store_id))

    async def _route(self, caller: _Caller, request: ScimRequest) -> ScimResponse:
        segments, method = request.segments, request.method
        if not segments:
            raise not_found("Nothing is here: the resources are /Users and /Groups.")
        head = segments[0]
        discovery: dict[str, Callable[[_Caller, tuple[str, ...]], dict[str, Any]]] = {
            "ServiceProviderConfig": self._config, "Schemas": self._schemas,
            "ResourceTypes": self._resource_types}
        if head in discovery:
            _allow(method, ("GET",))
            return ScimResponse(200, discovery[head](caller, segments[1:]))
        if head in ("Bulk", "Me") or head.endswith(".search") or \
                (len(segments) == 2 and segments[1] == ".search"):
            raise ScimError(501, f"/{head} is not offered by this server.")
        kind = res.KINDS.get(head)
        if kind is None or len(segments) > 2:
            raise not_found(f"/{'/'.join(s[:64] for s in segments)} is not a resource here.")
        if len(segments) == 1:
            _allow(method, ("GET", "POST"))
            if method == "GET":
                return await self._list(caller, kind, request.query)
            return await self._create(caller, kind, _json(request.body))
        entity_id = segments[1]
        _allow(method, ("GET", "PUT", "PATCH", "DELETE"))
        if not _ENTITY_ID.fullmatch(entity_id):
            raise not_found(f"The {kind.name} {entity_id[:100]} does not exist.")
        revision = _if_match(request.headers.get("if-match"))
        if method == "GET":
            return await self._get(caller, kind, entity_id, request)
        if method == "DELETE":
            await self._delete(caller, kind, entity_id, revision)
            return ScimResponse(204)
        body = _json(request.body)
        for attempt in range(3):
            try:
                if kind is res.USER:
                    user = await self._user(caller, entity_id)
                    _precondition(revision, user.revision)
                    return await self._write_user(caller, user, body, method, revision)
                group = await self._group(caller, entity_id)
                _precondition(revision, group.revision)
                return await self._write_group(caller, group, body, method, revision,
                                               request.query)
            except StoreError as exc:
                # Changed between the read and the write: without If-Match, read it again
                # and apply the request to what is there now.
                if revision is not None or exc.reason != "CONCURRENT_MODIFICATION" or \
                        attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- discovery ----------------------------------------------------------------------------

    def _config(self, caller: _Caller, rest: tuple[str, ...]) -> dict[str, Any]:
        if rest:
            raise not_found("ServiceProviderConfig has no sub-resources.")
        return {
            "schemas": [SPC_SCHEMA],
            "documentationUri": "https://docs.aws.amazon.com/singlesignon/latest/"
                                "developerguide/what-is-scim.html",
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": False}, "sort": {"supported": False},
            "etag": {"supported": True},
            "authenticationSchemes": [{
                "type": "oauthbearertoken", "name": "OAuth Bearer Token",
                "description": "A token from 'broker sso scim-token create'.",
                "primary": True}],
            "meta": {"resourceType": "ServiceProviderConfig",
                     "location": f"{caller.base_url}/ServiceProviderConfig"}}

    def _schema_documents(self, caller: _Caller) -> list[dict[str, Any]]:
        at = f"{caller.base_url}/Schemas/"
        return [
            res.schema_document(res.USER_SCHEMA, "User", res.USER_ATTRS,
                                at + res.USER_SCHEMA, "User Account"),
            res.schema_document(res.ENTERPRISE, "EnterpriseUser", res.ENTERPRISE_ATTRS,
                                at + res.ENTERPRISE, "Enterprise User"),
            res.schema_document(res.GROUP_SCHEMA, "Group", res.GROUP_ATTRS,
                                at + res.GROUP_SCHEMA, "Group"),
        ]

    def _schemas(self, caller: _Caller, rest: tuple[str, ...]) -> dict[str, Any]:
        found = self._schema_documents(caller)
        if not rest:
            return _list_response(found, len(found), 1)
        wanted = [d for d in found if len(rest) == 1 and d["id"] == rest[0]]
        if not wanted:
            raise not_found(f"There is no schema {'/'.join(rest)[:200]}.")
        return wanted[0]

    def _resource_types(self, caller: _Caller, rest: tuple[str, ...]) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            {"schemas": [RT_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
             "description": "User Account", "schema": res.USER_SCHEMA,
             "schemaExtensions": [{"schema": res.ENTERPRISE, "required": False}],
             "meta": {"resourceType": "ResourceType",
                      "location": f"{caller.base_url}/ResourceTypes/User"}},
            {"schemas": [RT_SCHEMA], "id": "Group", "name": "Group", "endpoint": "/Groups",
             "description": "Group", "schema": res.GROUP_SCHEMA,
             "meta": {"resourceType": "ResourceType",
                      "location": f"{caller.base_url}/ResourceTypes/Group"}}]
        if not rest:
            return _list_response(found, len(found), 1)
        wanted = [d for d in found if len(rest) == 1 and d["id"] == rest[0]]
        if not wanted:
            raise not_found(f"There is no resource type {'/'.join(rest)[:200]}.")
        return wanted[0]

    # -- reading ------------------------------------------------------------------------------

    async def _user(self, caller: _Caller, user_id: str) -> DirectoryUser:
        found = await self._directory.user(caller.instance.account_id,
                                           caller.instance.identity_store_id, user_id.lower())
        if found is None:
            raise not_found(f"The User {user_id[:100]} does not exist.")
        return found

    async def _group(self, caller: _Caller, group_id: str) -> DirectoryGroup:
        try:
            return await self._directory.group(caller.instance, group_id.lower())
        except StoreError:
            raise not_found(f"The Group {group_id[:100]} does not exist.") from None

    async def members(self, caller: _Caller, group_id: str) -> list[dict[str, Any]]:
        """The group's direct members: its users, then its groups."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            found, after = await self._directory.members(caller.instance, group_id, 100, after)
            out.extend(res.member_entry(caller.base_url, m.user_id, "User") for m in found)
            if after is None:
                break
        for child in await self._directory.member_groups(caller.instance, group_id):
            out.append(res.member_entry(caller.base_url, child, "Group"))
        return out

    async def _render_group(self, caller: _Caller, group: DirectoryGroup,
                            with_members: bool) -> dict[str, Any]:
        members = await self.members(caller, group.group_id) if with_members else None
        return res.render_group(group, caller.base_url, members)

    async def _get(self, caller: _Caller, kind: res.Kind, entity_id: str,
                   request: ScimRequest) -> ScimResponse:
        shape = _Projection.of(kind, request.query)
        if kind is res.USER:
            user = await self._user(caller, entity_id)
            doc = res.render_user(user, caller.base_url)
        else:
            group = await self._group(caller, entity_id)
            doc = await self._render_group(caller, group, shape.wants("members"))
        version = doc["meta"]["version"]
        if request.headers.get("if-none-match") in (version, version.removeprefix("W/")):
            return ScimResponse(304, None, (("ETag", version),))
        return _resource(200, shape.apply(doc))

    async def _all_users(self, caller: _Caller) -> list[DirectoryUser]:
        out: list[DirectoryUser] = []
        after: str | None = None
        while True:
            found, after = await self._directory.list_users(
                caller.instance, user_name=None, limit=100, after=after)
            out.extend(found)
            if len(out) > MAX_SCAN:
                raise _too_many()
            if after is None:
                return out

    async def _all_groups(self, caller: _Caller) -> list[DirectoryGroup]:
        out: list[DirectoryGroup] = []
        after: str | None = None
        while True:
            found, after = await self._directory.list_groups(
                caller.instance, display_name=None, limit=100, after=after)
            out.extend(found)
            if len(out) > MAX_SCAN:
                raise _too_many()
            if after is None:
                return out

    async def _list(self, caller: _Caller, kind: res.Kind,
                    query: Mapping[str, str]) -> ScimResponse:
        start = _integer(query, "startIndex", 1)
        count = min(_integer(query, "count", MAX_RESULTS), MAX_RESULTS)
        start = max(start, 1)
        shape = _Projection.of(kind, query)
        node = None
        if "filter" in query:
            node = filters.parse(query["filter"])
            for path in filters.paths(node):
                try:
                    kind.resolve(path)
                except KeyError:
                    raise invalid_filter(f"{kind.name} cannot be filtered on "
                                         f"{str(path)[:200]}.") from None
        docs: list[dict[str, Any]]
        if kind is res.USER:
            users = await self._user_candidates(caller, node)
            if node is None:  # no filter: only the page is rendered
                page_users = users[start - 1:start - 1 + count]
                return ScimResponse(200, _list_response(
                    [shape.apply(res.render_user(u, caller.base_url)) for u in page_users],
                    len(users), start))
            docs = [res.render_user(u, caller.base_url) for u in users]
        else:
            # Members are read for every candidate only when the filter asks about them;
            # otherwise for the page's groups alone.
            by_members = node is not None and any(
                p.attr.lower() == "members" for p in filters.paths(node))
            groups = await self._group_candidates(caller, node)
            by_id = {g.group_id: g for g in groups}
            docs = [await self._render_group(caller, g, by_members) for g in groups]
        if node is not None:
            docs = [d for d in docs if filters.matches(node, d, kind.case_exact)]
        page = docs[start - 1:start - 1 + count]
        if kind is res.GROUP and shape.wants("members") and not by_members:
            page = [await self._render_group(caller, by_id[d["id"]], True) for d in page]
        return ScimResponse(200, _list_response([shape.apply(d) for d in page], len(docs),
                                                start))

    async def _user_candidates(self, caller: _Caller,
                               node: filters.Filter | None) -> list[DirectoryUser]:
        if node is not None:
            by_id = filters.equality_key(node, "id")
            if by_id is not None:
                found = await self._directory.user(caller.instance.account_id,
                                                   caller.instance.identity_store_id,
                                                   by_id.lower()) \
                    if _ENTITY_ID.fullmatch(by_id) else None
                return [found] if found is not None else []
            name = filters.equality_key(node, "userName")
            if name is not None:
                users, _ = await self._directory.list_users(caller.instance, user_name=name,
                                                            limit=None, after=None)
                return users
        return await self._all_users(caller)

    async def _group_candidates(self, caller: _Caller,
                                node: filters.Filter | None) -> list[DirectoryGroup]:
        if node is not None:
            by_id = filters.equality_key(node, "id")
            if by_id is not None:
                if not _ENTITY_ID.fullmatch(by_id):
                    return []
                try:
                    return [await self._directory.group(caller.instance, by_id.lower())]
                except StoreError:
                    return []
            name = filters.equality_key(node, "displayName")
            if name is not None:
                groups, _ = await self._directory.list_groups(
                    caller.instance, display_name=name, limit=None, after=None)
                return groups
        return await self._all_groups(caller)

    # -- writing users ------------------------------------------------------------------------

    def _external_ids(self, current: Sequence[Any], external: str | None
                      ) -> list[tuple[str, str]]:
        kept = []
        for entry in current:
            issuer, ident = (entry["Issuer"], entry["Id"]) if isinstance(entry, Mapping) \
                else entry
            if issuer != res.EXTERNAL_ISSUER:
                kept.append((str(issuer), str(ident)))
        if external is not None:
            kept.append((res.EXTERNAL_ISSUER, external))
        return kept

    async def _create(self, caller: _Caller, kind: res.Kind, body: Any) -> ScimResponse:
        if not isinstance(body, Mapping):
            raise invalid_syntax(f"A new {kind.name} is a JSON object.")
        if kind is res.USER:
            given = res.user_input(body)
            user = await self._directory.create_user(
                caller.instance, given.attrs, caller.by,
                external_ids=self._external_ids((), given.external_id),
                active=given.active is not False)
            log.info("SCIM %s created user %s", caller.token_id, user.user_id)
            return _resource(201, res.render_user(user, caller.base_url))
        group_in = res.group_input(body)
        attrs = _group_attrs(group_in.display_name)
        group = await self._directory.create_group(
            caller.instance, attrs, caller.by,
            external_ids=self._external_ids((), group_in.external_id))
        if group_in.members:
            try:
                await self._change_members(caller, group.group_id,
                                           [patch.MemberOp("add", group_in.members)])
            except BaseException:
                await self._directory.delete_group(caller.instance, group.group_id, None)
                raise
            group = await self._directory.group(caller.instance, group.group_id)
        log.info("SCIM %s created group %s", caller.token_id, group.group_id)
        return _resource(201, await self._render_group(caller, group, True))

    async def _write_user(self, caller: _Caller, user: DirectoryUser, body: Any, method: str,
                          revision: str | None) -> ScimResponse:
        stored = user.attributes()
        if method == "PATCH":
            operations = patch.parse(res.USER, body)
            doc, _ = patch.apply(res.USER, res.render_user(user, caller.base_url), operations)
        else:
            if not isinstance(body, Mapping):
                raise invalid_syntax("A User is a JSON object.")
            doc = dict(body)
        given = res.user_input(doc)
        changes = res.user_changes(
            {k: v for k, v in stored.items() if k not in ("CreatedBy", "UpdatedBy",
                                                           "ExternalIds")}, given.attrs)
        updated = await self._directory.update_user(
            caller.instance, user.user_id, changes, revision or str(user.revision), caller.by,
            external_ids=self._external_ids(stored.get("ExternalIds") or (),
                                            given.external_id),
            active=given.active)
        if user.active and not updated.active:
            log.info("SCIM %s deactivated user %s", caller.token_id, user.user_id)
        return _resource(200, res.render_user(updated, caller.base_url))

    async def _delete(self, caller: _Caller, kind: res.Kind, entity_id: str,
                      revision: str | None) -> None:
        if kind is res.USER:
            user = await self._user(caller, entity_id)
            _precondition(revision, user.revision)
            await self._directory.delete_user(caller.instance, user.user_id, revision)
        else:
            group = await self._group(caller, entity_id)
            _precondition(revision, group.revision)
            await self._directory.delete_group(caller.instance, group.group_id, revision)
        log.info("SCIM %s deleted %s %s", caller.token_id, kind.name, entity_id.lower())

    # -- writing groups -----------------------------------------------------------------------

    async def _write_group(self, caller: _Caller, group: DirectoryGroup, body: Any,
                           method: str, revision: str | None,
                           query: Mapping[str, str]) -> ScimResponse:
        if method == "PATCH":
            operations = patch.parse(res.GROUP, body)
            current = res.render_group(group, caller.base_url, None)
            doc, member_ops = patch.apply(res.GROUP, current, operations)
            given = res.group_input(doc)
        else:
            if not isinstance(body, Mapping):
                raise invalid_syntax("A Group is a JSON object.")
            given = res.group_input(body)
            member_ops = [patch.MemberOp("replace", given.members or [])]
        if given.display_name is None:
            raise invalid_value("displayName is required for a Group.")
        ext = res.external_id(group.external_ids)
        updated = [group]
        if given.display_name != group.display_name or given.external_id != ext:
            changes = [] if given.display_name == group.display_name else \
                _group_changes(given.display_name)
            before = group

            async def rename() -> None:
                updated[0] = await self._directory.update_group(
                    caller.instance, before.group_id, changes,
                    revision or str(before.revision), caller.by,
                    external_ids=self._external_ids(before.external_ids, given.external_id))
            # The members first (each change can be undone), the group's own attributes
            # last: when they fail, the members are put back.
            await self._change_members(caller, group.group_id, member_ops, then=rename)
        elif member_ops:
            await self._change_members(caller, group.group_id, member_ops)
            updated[0] = await self._directory.group(caller.instance, group.group_id)
        group = updated[0]
        shape = _Projection.of(res.GROUP, query)
        return _resource(200, shape.apply(await self._render_group(
            caller, group, shape.wants("members"))))

    async def _kind_of(self, caller: _Caller, item: Mapping[str, Any]) -> tuple[str, str]:
        value, wanted = str(item["value"]).lower(), item.get("type")
        instance = caller.instance
        if _ENTITY_ID.fullmatch(value):
            if wanted in (None, "User") and await self._directory.user(
                    instance.account_id, instance.identity_store_id, value) is not None:
                return "User", value
            if wanted in (None, "Group"):
                try:
                    await self._directory.group(instance, value)
                    return "Group", value
                except StoreError:
                    pass
        raise invalid_value(f"{str(item['value'])[:100]} is not a "
                            f"{wanted or 'User or Group'} of this identity store.")

    async def _change_members(self, caller: _Caller, group_id: str,
                              operations: Sequence[patch.MemberOp], *,
                              then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Carry out member changes in order, then ``then``; when one fails, those done are
        undone, so a request changes all of its members or none."""
        undo: list[Callable[[], Awaitable[None]]] = []
        try:
            for op in operations:
                if op.action in ("replace", "filter"):
                    current = await self.members(caller, group_id)
                    if op.action == "replace":
                        wanted = {(await self._kind_of(caller, v)) for v in op.values}
                        have = {(m["type"], m["value"]) for m in current}
                        for kind, ident in sorted(have - wanted):
                            await self._remove(caller, group_id, kind, ident, undo)
                        for kind, ident in sorted(wanted - have):
                            await self._add(caller, group_id, kind, ident, undo)
                    else:
                        assert op.filter is not None
                        for m in current:
                            if filters.matches(op.filter, m, res.GROUP.case_exact):
                                await self._remove(caller, group_id, m["type"], m["value"],
                                                   undo)
                elif op.action == "add":
                    for value in op.values:
                        kind, ident = await self._kind_of(caller, value)
                        await self._add(caller, group_id, kind, ident, undo)
                else:
                    for value in op.values:
                        ident = str(value["value"]).lower()
                        for kind in ("User", "Group"):
                            if value.get("type") in (None, kind):
                                await self._remove(caller, group_id, kind, ident, undo)
            if then is not None:
                await then()  # the group's own change: a new version
            elif undo:  # members changed: the group is a new version (its ETag changes)
                await self._directory.update_group(caller.instance, group_id, [], None,
                                                   caller.by)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("SCIM: undoing a member change of group %s", group_id)
            raise

    async def _add(self, caller: _Caller, group_id: str, kind: str, ident: str,
                   undo: list[Callable[[], Awaitable[None]]]) -> None:
        instance = caller.instance
        try:
            if kind == "User":
                await self._directory.create_membership(instance, group_id, ident, caller.by)
            else:
                await self._directory.add_group_member(instance, group_id, ident, caller.by)
        except StoreError as exc:
            if exc.code == "ConflictException":
                return  # a member already: adding it again changes nothing (RFC 7644)
            if exc.reason == "GROUP_CYCLE":
                raise invalid_value(f"The group {ident} cannot be a member of {group_id}: "
                                    "it is that group or a group it contains, and groups "
                                    "may not form a cycle.") from None
            raise

        async def back() -> None:
            await self._remove(caller, group_id, kind, ident, [])
        undo.append(back)

    async def _remove(self, caller: _Caller, group_id: str, kind: str, ident: str,
                      undo: list[Callable[[], Awaitable[None]]]) -> None:
        instance = caller.instance
        if kind == "User":
            found = await self._directory.membership_of(instance, group_id, ident)
            if found is None:
                return
            try:
                await self._directory.delete_membership(instance, found.membership_id)
            except StoreError:
                return
        else:
            try:
                await self._directory.remove_group_member(instance, group_id, ident)
            except StoreError:
                return

        async def back() -> None:
            await self._add(caller, group_id, kind, ident, [])
        undo.append(back)


# -- helpers ----------------------------------------------------------------------------------

def _too_many() -> ScimError:
    """RFC 7644 §3.4.2.2: more resources than the server reads for one listing."""
    return ScimError(400, f"More than {MAX_SCAN} resources would be read for this listing: "
                     "filter by userName, displayName, externalId or id.", "tooMany")


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise ScimError(405, f"{method[:16]} is not allowed here: {', '.join(allowed)} is.")


def _json(body: bytes) -> Any:
    if not body:
        raise invalid_syntax("The request needs a JSON body.")
    try:
        return jsontext.loads(body)
    except jsontext.JsonRefused as exc:
        raise invalid_syntax(f"The body is not JSON the server reads: {exc}") from None


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", text):
        raise invalid_value(f"{name} must be an integer.")
    return max(int(text), 0)


def _if_match(value: str | None) -> str | None:
    if value is None or value.strip() == "*":
        return None
    found = _VERSION.fullmatch(value.strip())
    if found is None:
        raise precondition("If-Match names no version of this resource.")
    return found.group(1)


def _precondition(revision: str | None, current: int) -> None:
    if revision is not None and revision != str(current):
        raise precondition(f"The resource is at version W/\"{current}\", not "
                           f"W/\"{revision}\".")


def _group_attrs(display_name: str | None) -> dict[str, Any]:
    if display_name is None:
        raise invalid_value("displayName is required for a Group.")
    _group_changes(display_name)
    return {"DisplayName": display_name}


def _group_changes(display_name: str) -> list[Any]:
    try:
        return list(store_api.changes([{"AttributePath": "displayName",
                                        "AttributeValue": display_name}], user=False))
    except StoreError as exc:
        raise invalid_value(exc.message) from None


def _list_response(resources: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    return {"schemas": [res.LIST_SCHEMA], "totalResults": total, "startIndex": start,
            "itemsPerPage": len(resources), "Resources": resources}


def _resource(status: int, doc: dict[str, Any]) -> ScimResponse:
    meta = doc.get("meta") or {}
    headers = [("ETag", meta["version"])] if "version" in meta else []
    if status == 201 and "location" in meta:
        headers.append(("Location", meta["location"]))
    return ScimResponse(status, doc, tuple(headers))


@dataclass(frozen=True)
class _Projection:
    """``attributes`` / ``excludedAttributes`` (RFC 7644 §3.4.2.5): each a (top-level name,
    sub-attribute or None) in lower case, an extension's attributes under the extension's
    URN; ``id``, ``schemas`` and ``meta`` are always returned."""

    kind: res.Kind
    include: frozenset[tuple[str, str | None]] | None
    exclude: frozenset[tuple[str, str | None]]

    @classmethod
    def of(cls, kind: res.Kind, query: Mapping[str, str]) -> _Projection:
        def names(text: str | None) -> frozenset[tuple[str, str | None]] | None:
            if text is None:
                return None
            return frozenset(_projection_path(kind, item.strip())
                             for item in text.split(",") if item.strip())

        return cls(kind, names(query.get("attributes")),
                   names(query.get("excludedAttributes")) or frozenset())

    def wants(self, attr: str) -> bool:
        lowered = attr.lower()
        if self.include is not None:
            return any(top == lowered for top, _ in self.include)
        return (lowered, None) not in self.exclude

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        always = ("schemas", "id", "meta")
        out: dict[str, Any] = {}
        for key, value in doc.items():
            lowered = key.lower()
            if key in always:
                out[key] = value
            elif self.include is not None:
                subs = {sub for top, sub in self.include if top == lowered and sub}
                if (lowered, None) in self.include:
                    out[key] = value
                elif subs and isinstance(value, dict):
                    out[key] = {k: v for k, v in value.items() if k.lower() in subs}
                elif subs and isinstance(value, list):
                    out[key] = [{k: v for k, v in i.items() if k.lower() in subs}
                                for i in value if isinstance(i, dict)]
            elif (lowered, None) not in self.exclude:
                subs = {sub for top, sub in self.exclude if top == lowered and sub}
                if subs and isinstance(value, dict):
                    value = {k: v for k, v in value.items() if k.lower() not in subs}
                elif subs and isinstance(value, list):
                    value = [{k: v for k, v in i.items() if k.lower() not in subs}
                             if isinstance(i, dict) else i for i in value]
                out[key] = value
        return out


def _projection_path(kind: res.Kind, text: str) -> tuple[str, str | None]:
    """An attribute of ``attributes``: (``attr``, None), (``attr``, ``sub``), or an
    extension's (``urn``, ``attr``) or (``urn``, None) — in lower case."""
    if kind.extension(text) is not None:
        return text.lower(), None
    try:
        path = filters.attr_path(text)
        kind.resolve(path)
    except (ScimError, KeyError):
        raise invalid_value(f"{text[:200]} is not an attribute of {kind.name}.") from None
    if path.urn is not None and kind.extension(path.urn) is not None:
        return path.urn.lower(), path.attr.lower()
    return path.attr.lower(), path.sub.lower() if path.sub else None
