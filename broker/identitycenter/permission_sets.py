"""Permission sets: what a person assigned to an account may do there, as the policies of the
role Identity Center provisions for it (assignments.py).

A permission set is a record of the instance's owner account (kind ``sso_permission_set``, key
``INSTANCE_ID/ps-…``, a child of the instance record: deleting the instance deletes its
permission sets), its name unique in the instance (the record's lookup value). It holds
everything the provisioned role gets — an inline policy, AWS managed policies, references to
customer managed policies by name and path (each account provisioned must have them), a
permissions boundary, the session duration — and its tags. A change takes effect in an
account when the permission set is provisioned there again (ProvisionPermissionSet), as on AWS.

AWS's quotas: 2,000 permission sets per instance, 20 managed policies and 20 customer managed
policy references each, an inline policy of 32,768 characters, sessions of 1 to 12 hours.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import isodate

from broker.aws import arn
from broker.aws.errors import AwsError
from broker.clock import Clock
from broker.errors import AlreadyExists, Conflict, NotFound, QuotaExceeded
from broker.iam.entities import Tag, decode, encode
from broker.identitycenter.instances import INSTANCE, KEY, Instance, SsoError, check_tags
from broker.policy.document import PolicyKind, parse
from broker.store.base import EntityStore, Record, Ref

PERMISSION_SET = "sso_permission_set"
MAX_PERMISSION_SETS = 2000
MAX_MANAGED = 20
INLINE_SIZE = 32_768
DEFAULT_SESSION = "PT1H"
MIN_SESSION, MAX_SESSION = 3600, 12 * 3600


@dataclass(frozen=True)
class PolicyReference:
    """A customer managed policy, named as it must exist in every account provisioned."""

    name: str
    path: str = "/"

    def arn_in(self, account: str) -> str:
        return f"arn:{arn.PARTITION}:iam::{account}:policy{self.path}{self.name}"

    def wire(self) -> dict[str, str]:
        return {"Name": self.name, "Path": self.path}


@dataclass(frozen=True)
class Boundary:
    managed_policy_arn: str | None = None
    reference: PolicyReference | None = None

    def wire(self) -> dict[str, Any]:
        if self.reference is not None:
            return {"CustomerManagedPolicyReference": self.reference.wire()}
        return {"ManagedPolicyArn": self.managed_policy_arn}

    def arn_in(self, account: str) -> str:
        if self.reference is not None:
            return self.reference.arn_in(account)
        assert self.managed_policy_arn is not None
        return self.managed_policy_arn


@dataclass(frozen=True)
class PermissionSet:
    account_id: str  # the instance's owner
    instance_id: str
    permission_set_id: str  # ps-…
    name: str
    created: datetime
    description: str | None = None
    session_duration: str = DEFAULT_SESSION
    relay_state: str | None = None
    inline_policy: str | None = None
    managed: tuple[str, ...] = ()  # AWS managed policy ARNs
    customer_managed: tuple[PolicyReference, ...] = ()
    boundary: Boundary | None = None
    tags: tuple[Tag, ...] = ()

    @property
    def arn(self) -> str:
        return (f"arn:{arn.PARTITION}:sso:::permissionSet/{self.instance_id}/"
                f"{self.permission_set_id}")

    @property
    def session_seconds(self) -> int:
        return session_seconds(self.session_duration)

    def record(self) -> Record:
        return Record(kind=PERMISSION_SET, account=self.account_id,
                      key=f"{self.instance_id}/{self.permission_set_id}",
                      data=encode(self, skip=("account_id",)),
                      parent=Ref(INSTANCE, self.account_id, KEY),
                      lookup=f"{self.instance_id}/{self.name.lower()}")

    def wire(self) -> dict[str, Any]:
        return {"Name": self.name, "PermissionSetArn": self.arn,
                "Description": self.description, "CreatedDate": self.created,
                "SessionDuration": self.session_duration, "RelayState": self.relay_state}


def _of(record: Record) -> PermissionSet:
    return decode(PermissionSet, {**record.data, "account_id": record.account})


def session_seconds(duration: str) -> int:
    """An ISO 8601 duration (``PT8H``) in seconds; ValidationException outside AWS's 1 to 12
    hours."""
    try:
        parsed = isodate.parse_duration(duration)
    except (isodate.ISO8601Error, ValueError, OverflowError):
        raise SsoError("ValidationException",
                       f"SessionDuration {duration[:100]} is not an ISO 8601 duration.") from None
    if not isinstance(parsed, timedelta):  # years or months: no fixed length
        raise SsoError("ValidationException",
                       "SessionDuration must be given in days, hours, minutes or seconds.")
    seconds = parsed.total_seconds()
    if not MIN_SESSION <= seconds <= MAX_SESSION or seconds != int(seconds):
        raise SsoError("ValidationException",
                       "SessionDuration must be between 1 hour and 12 hours.")
    return int(seconds)


def not_found(permission_set_arn: str) -> SsoError:
    return SsoError("ResourceNotFoundException",
                    f"Could not find PermissionSet with PermissionSetArn "
                    f"{permission_set_arn[:1224]}.")


class PermissionSets:
    def __init__(self, store: EntityStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, instance: Instance, name: str, *, description: str | None,
                     session_duration: str | None, relay_state: str | None,
                     tags: tuple[Tag, ...]) -> PermissionSet:
        check_tags(tags)
        if session_duration is not None:
            session_seconds(session_duration)
        permission_set = PermissionSet(
            account_id=instance.account_id, instance_id=instance.instance_id,
            permission_set_id="ps-" + secrets.token_hex(8), name=name,
            created=self._clock.now(), description=description,
            session_duration=session_duration or DEFAULT_SESSION, relay_state=relay_state,
            tags=tags)
        try:
            await self._store.create(permission_set.record(),
                                     max_siblings=MAX_PERMISSION_SETS)
        except AlreadyExists:
            raise SsoError("ConflictException",
                           f"A permission set named {name} already exists.") from None
        except QuotaExceeded:
            raise SsoError("ServiceQuotaExceededException",
                           f"An instance holds at most {MAX_PERMISSION_SETS} permission "
                           "sets.") from None
        except NotFound:  # the instance went away meanwhile
            raise SsoError("ResourceNotFoundException",
                           f"Instance {instance.arn} does not exist.") from None
        return permission_set

    async def get(self, instance: Instance, permission_set_arn: str) -> PermissionSet:
        ref = self._ref(instance, permission_set_arn)
        try:
            return _of(await self._store.get(ref))
        except NotFound:
            raise not_found(permission_set_arn) from None

    async def listing(self, instance: Instance) -> list[PermissionSet]:
        records = await self._store.list(PERMISSION_SET, instance.account_id,
                                         parent=Ref(INSTANCE, instance.account_id, KEY))
        return [p for p in map(_of, records) if p.instance_id == instance.instance_id]

    async def change(self, instance: Instance, permission_set_arn: str,
                     change: Callable[[PermissionSet], PermissionSet]) -> PermissionSet:
        def apply(record: Record) -> dict[str, Any]:
            return encode(change(_of(record)), skip=("account_id",))

        try:
            return _of(await self._store.update(self._ref(instance, permission_set_arn), apply))
        except NotFound:
            raise not_found(permission_set_arn) from None

    async def update(self, instance: Instance, permission_set_arn: str, *,
                     description: str | None, session_duration: str | None,
                     relay_state: str | None) -> PermissionSet:
        if session_duration is not None:
            session_seconds(session_duration)

        def apply(p: PermissionSet) -> PermissionSet:
            return replace(
                p, description=p.description if description is None else description,
                session_duration=session_duration or p.session_duration,
                relay_state=p.relay_state if relay_state is None else relay_state)

        return await self.change(instance, permission_set_arn, apply)

    async def delete(self, instance: Instance, permission_set_arn: str,
                     blocked_by: tuple[str, ...]) -> None:
        try:
            await self._store.delete(self._ref(instance, permission_set_arn),
                                     blocked_by=blocked_by)
        except NotFound:
            raise not_found(permission_set_arn) from None
        except Conflict:
            raise SsoError("ConflictException",
                           "The permission set is still assigned or provisioned: delete its "
                           "account assignments first.") from None

    # -- its policies ---------------------------------------------------------------------------

    async def put_inline(self, instance: Instance, permission_set_arn: str,
                         document: str) -> None:
        if len(document) > INLINE_SIZE:
            raise SsoError("ValidationException",
                           f"The inline policy is longer than {INLINE_SIZE} characters.")
        _check_policy(document)
        await self.change(instance, permission_set_arn,
                          lambda p: replace(p, inline_policy=document))

    async def attach_managed(self, instance: Instance, permission_set_arn: str,
                             policy_arn: str) -> None:
        def apply(p: PermissionSet) -> PermissionSet:
            if policy_arn in p.managed:
                raise SsoError("ConflictException",
                               f"Policy {policy_arn} is already attached.")
            if len(p.managed) >= MAX_MANAGED:
                raise SsoError("ServiceQuotaExceededException",
                               f"A permission set holds at most {MAX_MANAGED} managed "
                               "policies.")
            return replace(p, managed=(*p.managed, policy_arn))

        await self.change(instance, permission_set_arn, apply)

    async def detach_managed(self, instance: Instance, permission_set_arn: str,
                             policy_arn: str) -> None:
        def apply(p: PermissionSet) -> PermissionSet:
            if policy_arn not in p.managed:
                raise SsoError("ResourceNotFoundException",
                               f"Policy {policy_arn} is not attached.")
            return replace(p, managed=tuple(a for a in p.managed if a != policy_arn))

        await self.change(instance, permission_set_arn, apply)

    async def attach_reference(self, instance: Instance, permission_set_arn: str,
                               reference: PolicyReference) -> None:
        def apply(p: PermissionSet) -> PermissionSet:
            if reference in p.customer_managed:
                raise SsoError("ConflictException",
                               f"Policy {reference.path}{reference.name} is already "
                               "attached.")
            if len(p.customer_managed) >= MAX_MANAGED:
                raise SsoError("ServiceQuotaExceededException",
                               f"A permission set holds at most {MAX_MANAGED} customer "
                               "managed policy references.")
            return replace(p, customer_managed=(*p.customer_managed, reference))

        await self.change(instance, permission_set_arn, apply)

    async def detach_reference(self, instance: Instance, permission_set_arn: str,
                               reference: PolicyReference) -> None:
        def apply(p: PermissionSet) -> PermissionSet:
            if reference not in p.customer_managed:
                raise SsoError("ResourceNotFoundException",
                               f"Policy {reference.path}{reference.name} is not attached.")
            return replace(p, customer_managed=tuple(
                r for r in p.customer_managed if r != reference))

        await self.change(instance, permission_set_arn, apply)

    def _ref(self, instance: Instance, permission_set_arn: str) -> Ref:
        prefix = f"arn:{arn.PARTITION}:sso:::permissionSet/{instance.instance_id}/"
        if not permission_set_arn.startswith(prefix):
            raise not_found(permission_set_arn)
        return Ref(PERMISSION_SET, instance.account_id,
                   f"{instance.instance_id}/{permission_set_arn[len(prefix):]}")


def _check_policy(document: str) -> None:
    try:
        parse(document, PolicyKind.IDENTITY)
    except AwsError as exc:
        raise SsoError("ValidationException", f"The policy document is not valid: "
                                              f"{exc.message}") from None
