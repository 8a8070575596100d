"""What every IAM Query action shares: registration, authorization, tags, paging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import NoSuchEntity
from broker.aws.query import IAM, Call, Operation, Result
from broker.aws.shapes import Structure
from broker.iam import model
from broker.iam.entities import GROUP, ROLE, USER, Group, PolicyRef, Tag
from broker.iam.lastused import LastUsedRecorder
from broker.iam.policies import merge_tags
from broker.iam.records import Page, paginate
from broker.iam.service import IamService

Handler = Callable[[Call], Awaitable[Result]]
ENTITY_ARN = {USER: arn.user, GROUP: arn.group, ROLE: arn.role}


@dataclass(frozen=True)
class IamContext:
    iam: IamService
    authz: Authorizer
    last_used: LastUsedRecorder

    async def allow(self, call: Call, action: str, resource: str,
                    context: Mapping[str, str | list[str]] | None = None) -> None:
        """Authorize ``iam:ACTION`` on ``resource`` for the caller, or raise AccessDenied."""
        await self.authz.check(call.principal, f"iam:{action}", resource,
                               source_ip=call.source_ip, user_agent=call.user_agent,
                               secure=call.secure, context=context)

    async def allow_on(self, call: Call, kind: str, action: str, name: str,
                       extra: Mapping[str, str | list[str]] | None = None) -> str:
        """Authorize ``iam:ACTION`` on the user, group or role of the caller's account with
        this name (in any case), with its tags and boundary in the context; returns the name as
        created. For one that does not exist, the ARN it would have at the root path: the
        action then fails with NoSuchEntity, if the caller may perform it at all."""
        account = call.principal.account_id
        try:
            entity = await self.iam.policies.principal(kind, account, name)
        except NoSuchEntity:
            await self.allow(call, action, ENTITY_ARN[kind](account, "/", name), extra)
            return name
        context = {} if isinstance(entity, Group) else \
            entity_context(action, entity.tags, entity.boundary)
        await self.allow(call, action, entity.arn, {**context, **(extra or {})})
        return entity.name


class Registry:
    """Collects an API module's actions; each takes its input shape from broker.iam.model."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def action(self, name: str, *, issued: Any = None,
               shape: Structure | None = None) -> Callable[[Handler], Handler]:
        """``shape``: for the broker's own actions, which AWS's model does not have."""
        shape = shape if shape is not None else getattr(model, f"{name}Request")
        assert shape is not None

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(IAM, name, shape, handler, issued=issued))
            return handler

        return register


def tags_of(params: Mapping[str, Any]) -> tuple[Tag, ...]:
    return tuple(Tag(t["Key"], t["Value"]) for t in params.get("Tags", []))


def request_tags(tags: tuple[Tag, ...]) -> dict[str, str | list[str]]:
    """aws:RequestTag/KEY and aws:TagKeys of a request that passes tags."""
    context: dict[str, str | list[str]] = {f"aws:RequestTag/{t.key}": t.value for t in tags}
    if tags:
        context["aws:TagKeys"] = [t.key for t in tags]
    return context


def resource_tags(tags: tuple[Tag, ...]) -> dict[str, str | list[str]]:
    return {f"aws:ResourceTag/{t.key}": t.value for t in tags}


# The actions on a user or role whose context holds iam:PermissionsBoundary: the boundary the
# entity has (the one requested, for CreateUser, CreateRole and Put*PermissionsBoundary).
_ON_BOUNDED = ("Attach{}Policy", "Detach{}Policy", "Put{}Policy", "Delete{}Policy",
               "Delete{}PermissionsBoundary")
BOUNDARY_ACTIONS = frozenset(a.format(n) for a in _ON_BOUNDED for n in ("User", "Role"))


def boundary_key(boundary_arn: str | None) -> dict[str, str | list[str]]:
    """iam:PermissionsBoundary, when there is a boundary."""
    return {} if boundary_arn is None else {"iam:PermissionsBoundary": boundary_arn}


def entity_context(action: str, tags: tuple[Tag, ...], boundary: PolicyRef | None
                   ) -> dict[str, str | list[str]]:
    """What an action on an existing user or role adds to the request context: the entity's
    tags (aws:ResourceTag/KEY) and, for the actions that have it, iam:PermissionsBoundary."""
    context = resource_tags(tags)
    if action in BOUNDARY_ACTIONS and boundary is not None:
        context.update(boundary_key(boundary.arn))
    return context


def paged(page: Page, name: str, render: Callable[[Any], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: [render(item) for item in page.items],
                           "IsTruncated": page.marker is not None}
    if page.marker is not None:
        out["Marker"] = page.marker
    return out


def listing_arn(account: str, kind: str) -> str:
    """The resource List* actions are authorized on: ``arn:aws:iam::ACCOUNT:user/``."""
    return f"arn:{arn.PARTITION}:iam::{account}:{kind}/"



def register_tags_and_boundary(ops: Registry, ctx: IamContext, kind: str) -> None:
    """Tag, Untag, List...Tags, Put...PermissionsBoundary and Delete...PermissionsBoundary for
    users or roles: the same five actions, the same rules."""
    iam = ctx.iam
    noun = "User" if kind == USER else "Role"
    name_param = f"{noun}Name"

    async def change(call: Call, name: str, apply: Callable[[Any], Any]) -> None:
        await iam.policies.change_principal(kind, call.principal.account_id, name, apply)

    @ops.action(f"Tag{noun}")
    async def tag(call: Call) -> Result:
        tags = tags_of(call.params)
        name = await ctx.allow_on(call, kind, f"Tag{noun}", call.params[name_param],
                                  request_tags(tags))
        await change(call, name, lambda e: replace(e, tags=merge_tags(e.tags, tags, ())))
        return None

    @ops.action(f"Untag{noun}")
    async def untag(call: Call) -> Result:
        keys = tuple(call.params["TagKeys"])
        name = await ctx.allow_on(call, kind, f"Untag{noun}", call.params[name_param],
                                  {"aws:TagKeys": list(keys)})
        await change(call, name, lambda e: replace(e, tags=merge_tags(e.tags, (), keys)))
        return None

    @ops.action(f"List{noun}Tags")
    async def list_tags(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"List{noun}Tags", p[name_param])
        entity: Any = await iam.policies.principal(kind, call.principal.account_id, name)
        page = paginate(list(entity.tags), lambda t: t.key, p.get("Marker"), p.get("MaxItems"))
        return paged(page, "Tags", lambda t: t.wire())

    @ops.action(f"Put{noun}PermissionsBoundary")
    async def put_boundary(call: Call) -> Result:
        p = call.params
        name = await ctx.allow_on(call, kind, f"Put{noun}PermissionsBoundary", p[name_param],
                                  boundary_key(p["PermissionsBoundary"]))
        boundary = await iam.policies.reference(call.principal.account_id,
                                                p["PermissionsBoundary"])
        await change(call, name, lambda e: replace(e, boundary=boundary))
        return None

    @ops.action(f"Delete{noun}PermissionsBoundary")
    async def delete_boundary(call: Call) -> Result:
        name = await ctx.allow_on(call, kind, f"Delete{noun}PermissionsBoundary",
                                  call.params[name_param])
        await change(call, name, lambda e: replace(e, boundary=None))
        return None
