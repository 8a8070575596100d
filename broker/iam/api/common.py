"""What every IAM Query action shares: registration, authorization, tags, paging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.query import IAM, Call, Operation, Result
from broker.aws.shapes import Structure
from broker.iam import model
from broker.iam.entities import PolicyRef, Tag
from broker.iam.lastused import LastUsedRecorder
from broker.iam.records import Page
from broker.iam.service import IamService

Handler = Callable[[Call], Awaitable[Result]]


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


class Registry:
    """Collects an API module's actions; each takes its input shape from broker.iam.model."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def action(self, name: str, *, issued: Any = None) -> Callable[[Handler], Handler]:
        shape: Structure = getattr(model, f"{name}Request")

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

