"""Account assignments, and the roles they provision.

An assignment gives a directory user or group a permission set in an account. Three kinds of
record of the instance's owner account hold them:

* ``sso_assignment`` — one per assignment, keyed ``INSTANCE/TYPE/PRINCIPAL/ACCOUNT/PS`` (so the
  assignments of a principal, which the portal reads on every request, are one key range), a
  child of its permission set (a permission set with assignments cannot be deleted);
* ``sso_provisioned`` — one per permission set and account, keyed ``INSTANCE/ACCOUNT/PS``: the
  principals assigned there and the permission set revision last provisioned. It is what
  decides whether the role exists, and it changes atomically;
* ``sso_request`` — the status of each asynchronous request (CreateAccountAssignment,
  DeleteAccountAssignment, ProvisionPermissionSet), a child of the instance.

**Provisioning is real.** While a permission set has principals in an account, that account
has the role ``AWSReservedSSO_{NAME}_{16 hex}`` under ``/aws-reserved/sso.amazonaws.com/``,
trusting the account's SAML provider ``AWSSSO_{instance hex}_DO_NOT_DELETE`` for
``sts:AssumeRoleWithSAML``, with the permission set's policies (inline as
``AwsSSOInlinePolicy``), boundary and session duration; when the last principal goes, the role
goes. The role is written as one record (every policy with it), so no request ever sees half a
role. Concurrent requests converge: each one, after acting, reads the ``sso_provisioned``
record again and acts again if another request changed it meanwhile — whoever saw the last
change leaves the role as that change wants it. Administrators of the account cannot change
the role (iam/roles.py refuses every change under the reserved path).

A request cut short (its process killed) stays IN_PROGRESS; asking for its status later than
``RESUME_AFTER`` seconds finishes it — every step can run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from broker.aws import ids
from broker.aws.errors import AwsError
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import Inline, PolicyRef, Role, decode, encode
from broker.iam.service import IamService
from broker.identitycenter.instances import INSTANCE, KEY, Instance, SsoError
from broker.identitycenter.permission_sets import (
    PERMISSION_SET,
    PermissionSet,
    PermissionSets,
)
from broker.store.base import EntityStore, Record, Ref

ASSIGNMENT = "sso_assignment"
PROVISIONED = "sso_provisioned"
REQUEST = "sso_request"
RESERVED_PATH = "/aws-reserved/sso.amazonaws.com/"
INLINE_NAME = "AwsSSOInlinePolicy"
RESUME_AFTER = 30
_PAGE = 500
_CONVERGE = 20  # rounds of "act, then look again" before a request gives up (FAILED)


def provider_name(instance: Instance) -> str:
    return f"AWSSSO_{instance.instance_id.removeprefix('ssoins-')}_DO_NOT_DELETE"


def role_name(instance: Instance, permission_set: PermissionSet, account: str) -> str:
    digest = hashlib.sha256(
        f"{instance.instance_id}/{permission_set.permission_set_id}/{account}".encode())
    return f"AWSReservedSSO_{permission_set.name}_{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class Assignment:
    instance_id: str
    principal_type: str  # USER or GROUP
    principal_id: str
    account_id: str
    permission_set_id: str

    def key(self) -> str:
        return (f"{self.instance_id}/{self.principal_type}/{self.principal_id}/"
                f"{self.account_id}/{self.permission_set_id}")

    @property
    def principal(self) -> str:
        return f"{self.principal_type}/{self.principal_id}"


@dataclass(frozen=True)
class RequestStatus:
    instance_id: str
    request_id: str
    operation: str  # CREATE, DELETE (assignments) or PROVISION
    status: str  # IN_PROGRESS, FAILED, SUCCEEDED
    created: datetime
    account_id: str
    permission_set_arn: str
    principal_type: str | None = None
    principal_id: str | None = None
    failure_reason: str | None = None

    def record(self, owner: str) -> Record:
        return Record(kind=REQUEST, account=owner, key=f"{self.instance_id}/{self.request_id}",
                      data=encode(self), parent=Ref(INSTANCE, owner, KEY))

    def assignment_wire(self) -> dict[str, Any]:
        return {"Status": self.status, "RequestId": self.request_id,
                "FailureReason": self.failure_reason, "TargetId": self.account_id,
                "TargetType": "AWS_ACCOUNT", "PermissionSetArn": self.permission_set_arn,
                "PrincipalType": self.principal_type, "PrincipalId": self.principal_id,
                "CreatedDate": self.created}

    def provisioning_wire(self) -> dict[str, Any]:
        return {"Status": self.status, "RequestId": self.request_id,
                "AccountId": self.account_id, "PermissionSetArn": self.permission_set_arn,
                "FailureReason": self.failure_reason, "CreatedDate": self.created}

    def metadata(self) -> dict[str, Any]:
        return {"Status": self.status, "RequestId": self.request_id,
                "CreatedDate": self.created}


class ProvisioningFailed(Exception):
    """The role could not be written as the permission set wants (a customer managed policy
    missing in the account, a role of that name not Identity Center's)."""


class Assignments:
    def __init__(self, store: EntityStore, iam: IamService, permission_sets: PermissionSets,
                 clock: Clock, *, provider_metadata: Callable[[Instance], str],
                 saml_audience: str,
                 can_assign: Callable[[Instance, str], Awaitable[bool]],
                 principal_exists: Callable[[Instance, str, str], Awaitable[bool]]) -> None:
        self._store = store
        self._iam = iam
        self._sets = permission_sets
        self._clock = clock
        self._metadata = provider_metadata
        self._audience = saml_audience
        self._can_assign = can_assign
        self._principal_exists = principal_exists

    # -- the asynchronous requests --------------------------------------------------------------

    async def create(self, instance: Instance, permission_set_arn: str, account: str,
                     principal_type: str, principal_id: str) -> RequestStatus:
        permission_set = await self._sets.get(instance, permission_set_arn)
        await self._check_target(instance, account)
        if not await self._principal_exists(instance, principal_type, principal_id):
            raise SsoError("ResourceNotFoundException",
                           f"The {principal_type.lower()} {principal_id} does not exist in "
                           f"the identity store {instance.identity_store_id}.")
        request = await self._begin(instance, "CREATE", account, permission_set.arn,
                                    principal_type, principal_id)
        return await self._run(instance, request)

    async def delete(self, instance: Instance, permission_set_arn: str, account: str,
                     principal_type: str, principal_id: str) -> RequestStatus:
        permission_set = await self._sets.get(instance, permission_set_arn)
        assignment = Assignment(instance.instance_id, principal_type, principal_id, account,
                                permission_set.permission_set_id)
        try:
            await self._store.get(Ref(ASSIGNMENT, instance.account_id, assignment.key()))
        except NotFound:
            raise SsoError("ResourceNotFoundException",
                           "There is no such account assignment.") from None
        request = await self._begin(instance, "DELETE", account, permission_set.arn,
                                    principal_type, principal_id)
        return await self._run(instance, request)

    async def provision(self, instance: Instance, permission_set_arn: str,
                        account: str | None) -> RequestStatus:
        """ProvisionPermissionSet: bring the role up to date in ``account``, or in every
        account the permission set is provisioned to (``None``)."""
        permission_set = await self._sets.get(instance, permission_set_arn)
        if account is not None:
            await self._check_target(instance, account)
        request = await self._begin(instance, "PROVISION", account or "", permission_set.arn)
        return await self._run(instance, request)

    async def status(self, instance: Instance, request_id: str, operation: str
                     ) -> RequestStatus:
        try:
            record = await self._store.get(Ref(REQUEST, instance.account_id,
                                               f"{instance.instance_id}/{request_id}"))
        except NotFound:
            record = None
        found = None if record is None else decode(RequestStatus, record.data)
        if found is None or found.operation != operation:
            raise SsoError("ResourceNotFoundException",
                           f"There is no request {request_id[:100]}.")
        if found.status == "IN_PROGRESS" and \
                self._clock.now() - found.created > timedelta(seconds=RESUME_AFTER):
            return await self._run(instance, found)  # cut short: finish it
        return found

    async def requests(self, instance: Instance, operations: tuple[str, ...],
                       status: str | None) -> list[RequestStatus]:
        found = [decode(RequestStatus, r.data) for r in await self._range(
            REQUEST, instance.account_id, f"{instance.instance_id}/")]
        found = [s for s in found if s.operation in operations
                 and (status is None or s.status == status)]
        return sorted(found, key=lambda s: (s.created, s.request_id))

    async def _begin(self, instance: Instance, operation: str, account: str,
                     permission_set_arn: str, principal_type: str | None = None,
                     principal_id: str | None = None) -> RequestStatus:
        request = RequestStatus(instance.instance_id, str(uuid.uuid4()), operation,
                                "IN_PROGRESS", self._clock.now(), account, permission_set_arn,
                                principal_type, principal_id)
        try:
            await self._store.create(request.record(instance.account_id))
        except NotFound:
            raise SsoError("ResourceNotFoundException",
                           f"Instance {instance.arn} does not exist.") from None
        return request

    async def _run(self, instance: Instance, request: RequestStatus) -> RequestStatus:
        try:
            permission_set = await self._sets.get(instance, request.permission_set_arn)
            if request.operation == "PROVISION":
                accounts = [request.account_id] if request.account_id else \
                    [p.data["account_id"] for p in await self._provisioned(instance)
                     if p.data["permission_set_id"] == permission_set.permission_set_id]
                for account in accounts:
                    if await self._can_assign(instance, account):  # not one that left
                        await self._converge(instance, permission_set, account)
            else:
                assert request.principal_type is not None and request.principal_id is not None
                assignment = Assignment(instance.instance_id, request.principal_type,
                                        request.principal_id, request.account_id,
                                        permission_set.permission_set_id)
                if request.operation == "CREATE":
                    await self._assign(instance, permission_set, assignment)
                else:
                    await self._unassign(instance, permission_set, assignment)
            done = replace(request, status="SUCCEEDED")
        except (ProvisioningFailed, SsoError) as exc:
            done = replace(request, status="FAILED", failure_reason=str(exc)[:1000])
        await self._store.update(Ref(REQUEST, instance.account_id,
                                     f"{instance.instance_id}/{request.request_id}"),
                                 lambda _: encode(done))
        return done

    async def _assign(self, instance: Instance, permission_set: PermissionSet,
                      assignment: Assignment) -> None:
        ps_ref = Ref(PERMISSION_SET, instance.account_id,
                     f"{instance.instance_id}/{permission_set.permission_set_id}")
        await self._change_principals(instance, permission_set, assignment.account_id,
                                      add=assignment.principal)
        try:
            await self._store.create(Record(
                kind=ASSIGNMENT, account=instance.account_id, key=assignment.key(),
                data=encode(assignment), parent=ps_ref))
        except AlreadyExists:
            pass  # assigned already: the same answer again
        except NotFound:
            raise SsoError("ResourceNotFoundException", "The permission set is gone.") from None
        try:
            await self._converge(instance, permission_set, assignment.account_id)
        except ProvisioningFailed:
            # As on AWS a failed assignment is not made: take it back, leaving the account as
            # it was.
            await self._store.delete(Ref(ASSIGNMENT, instance.account_id, assignment.key()))
            await self._change_principals(instance, permission_set, assignment.account_id,
                                          remove=assignment.principal)
            await self._converge(instance, permission_set, assignment.account_id,
                                 failing=False)
            raise

    async def _unassign(self, instance: Instance, permission_set: PermissionSet,
                        assignment: Assignment) -> None:
        with contextlib.suppress(NotFound):  # a resumed request that got this far before
            await self._store.delete(Ref(ASSIGNMENT, instance.account_id, assignment.key()))
        await self._change_principals(instance, permission_set, assignment.account_id,
                                      remove=assignment.principal)
        await self._converge(instance, permission_set, assignment.account_id)

    def _provisioned_ref(self, instance: Instance, permission_set: PermissionSet,
                         account: str) -> Ref:
        return Ref(PROVISIONED, instance.account_id,
                   f"{instance.instance_id}/{account}/{permission_set.permission_set_id}")

    async def _change_principals(self, instance: Instance, permission_set: PermissionSet,
                                 account: str, *, add: str | None = None,
                                 remove: str | None = None) -> None:
        ref = self._provisioned_ref(instance, permission_set, account)

        def change(record: Record) -> dict[str, Any]:
            principals = [p for p in record.data["principals"] if p != remove]
            if add is not None and add not in principals:
                principals.append(add)
            return {**record.data, "principals": principals}

        for _ in range(3):
            try:
                await self._store.update(ref, change)
                return
            except NotFound:
                if add is None:
                    return
            try:
                await self._store.create(Record(
                    kind=PROVISIONED, account=instance.account_id, key=ref.key,
                    data={"account_id": account,
                          "permission_set_id": permission_set.permission_set_id,
                          "principals": [add], "revision": None},
                    parent=Ref(PERMISSION_SET, instance.account_id,
                               f"{instance.instance_id}/{permission_set.permission_set_id}")))
                return
            except AlreadyExists:
                continue  # made meanwhile: add to it
            except NotFound:
                raise SsoError("ResourceNotFoundException",
                               "The permission set is gone.") from None
        raise SsoError("ConflictException", "The assignment changed under this request; "
                                            "try again.")

    # -- provisioning ---------------------------------------------------------------------------

    async def _converge(self, instance: Instance, permission_set: PermissionSet, account: str,
                        *, failing: bool = True) -> None:
        """Make the account's role what its ``sso_provisioned`` record wants, until the record
        no longer changes under us."""
        ref = self._provisioned_ref(instance, permission_set, account)
        seen: int | None = -1
        for _ in range(_CONVERGE):
            try:
                record: Record | None = await self._store.get(ref)
            except NotFound:
                record = None
            version = None if record is None else record.version
            if version == seen:
                return
            seen = version
            current = await self._sets.get(instance, permission_set.arn)
            name = role_name(instance, current, account)
            try:
                if record is not None and record.data["principals"]:
                    await self._write_role(instance, current, account, name)
                    revision = (await self._store.get(Ref(
                        PERMISSION_SET, instance.account_id,
                        f"{instance.instance_id}/{current.permission_set_id}"))).version
                    if record.data.get("revision") != revision:
                        await self._store.update(ref, _with_revision(revision))
                        seen = None  # our own write: look once more
                else:
                    await self._remove_role(account, name)
            except ProvisioningFailed:
                if failing:
                    raise
                return
        raise ProvisioningFailed("The assignment kept changing while it was provisioned.")

    async def _write_role(self, instance: Instance, permission_set: PermissionSet,
                          account: str, name: str) -> None:
        provider_arn = await self._provider(instance, account)
        trust = _trust(provider_arn, self._audience)
        attached = [await self._reference(account, a) for a in permission_set.managed]
        attached += [await self._reference(account, r.arn_in(account))
                     for r in permission_set.customer_managed]
        boundary = None if permission_set.boundary is None else \
            await self._reference(account, permission_set.boundary.arn_in(account))
        inline = () if permission_set.inline_policy is None else \
            (Inline(INLINE_NAME, permission_set.inline_policy),)
        fields: dict[str, Any] = {
            "trust": trust, "trust_ids": await self._iam.roles.check_trust(trust),
            "attached": tuple(attached), "boundary": boundary, "inline": inline,
            "max_session": permission_set.session_seconds}
        ref = Role.ref(account, name)

        def update(record: Record) -> dict[str, Any]:
            role = Role.of(record)
            if role.path != RESERVED_PATH:
                raise ProvisioningFailed(
                    f"Account {account} already has a role named {name}, not made by IAM "
                    "Identity Center.")
            return encode(replace(role, **fields), skip=("account_id",))

        try:
            await self._store.update(ref, update)
            return
        except NotFound:
            pass
        role = Role(account_id=account, name=name, path=RESERVED_PATH,
                    role_id=_role_id(), created=self._clock.now(), **fields)
        try:
            await self._store.create(role.record())
        except AlreadyExists:
            await self._store.update(ref, update)  # made meanwhile by another request
        except NotFound:
            raise ProvisioningFailed(f"Account {account} does not exist.") from None

    async def _remove_role(self, account: str, name: str) -> None:
        def ours(record: Record) -> None:
            if Role.of(record).path != RESERVED_PATH:
                raise ProvisioningFailed(f"The role {name} is not IAM Identity Center's.")

        with contextlib.suppress(NotFound):
            await self._store.delete(Role.ref(account, name), check=ours)

    async def _reference(self, account: str, policy_arn: str) -> PolicyRef:
        try:
            return await self._iam.policies.reference(account, policy_arn)
        except AwsError:
            raise ProvisioningFailed(
                f"The policy {policy_arn} does not exist in account {account}.") from None

    async def _provider(self, instance: Instance, account: str) -> str:
        """The account's SAML provider for this instance, made if missing (an administrator of
        the account may have deleted it)."""
        name = provider_name(instance)
        found = f"arn:aws:iam::{account}:saml-provider/{name}"
        ours = self._metadata(instance)
        try:
            try:
                current = await self._iam.saml_providers.get(account, found)
            except AwsError:
                await self._iam.saml_providers.create(account, name, ours)
            else:
                if current.metadata != ours:  # not the instance's own: made so again
                    await self._iam.saml_providers.update(account, found, metadata=ours)
        except AwsError as exc:
            if exc.code != "EntityAlreadyExists":
                raise ProvisioningFailed(
                    f"The SAML provider {name} cannot be made in account {account}: "
                    f"{exc.message}") from None
        return found

    # -- taking everything back -----------------------------------------------------------------

    async def deprovision(self, instance: Instance, account: str | None = None) -> None:
        """Take back what the instance provisioned in ``account`` (every account: None): its
        assignments there, and their roles. For an account that left the organization, and
        for an instance about to be deleted. Each step can run again."""
        sets = {p.permission_set_id: p for p in await self._sets.listing(instance)}
        for record in await self._provisioned(instance):
            target = record.data["account_id"]
            if account is not None and target != account:
                continue
            ps = sets.get(record.data["permission_set_id"])
            if ps is None:
                continue
            for principal in record.data["principals"]:
                kind, _, principal_id = principal.partition("/")
                assignment = Assignment(instance.instance_id, kind, principal_id, target,
                                        ps.permission_set_id)
                with contextlib.suppress(NotFound):
                    await self._store.delete(Ref(ASSIGNMENT, instance.account_id,
                                                 assignment.key()))
            with contextlib.suppress(ProvisioningFailed):  # a role not ours stays
                await self._remove_role(target, role_name(instance, ps, target))
            with contextlib.suppress(NotFound):
                await self._store.delete(record.ref)

    # -- what the portal and the list actions read ----------------------------------------------

    async def of_principals(self, instance: Instance,
                            principals: list[tuple[str, str]]) -> list[Assignment]:
        """Every assignment of these principals (a user and the groups it is in)."""
        found: list[Assignment] = []
        for principal_type, principal_id in principals:
            prefix = f"{instance.instance_id}/{principal_type}/{principal_id}/"
            found += [decode(Assignment, r.data) for r in await self._range(
                ASSIGNMENT, instance.account_id, prefix)]
        return found

    async def _provisioned(self, instance: Instance) -> list[Record]:
        return await self._range(PROVISIONED, instance.account_id, f"{instance.instance_id}/")

    async def provisioned(self, instance: Instance) -> list[tuple[str, str, bool]]:
        """(account, permission set id, up to date) of every account a permission set is
        provisioned to."""
        out = []
        revisions = {p.permission_set_id: v for p, v in await self._set_revisions(instance)}
        for record in await self._provisioned(instance):
            if not record.data["principals"]:
                continue
            ps_id = record.data["permission_set_id"]
            out.append((record.data["account_id"], ps_id,
                        record.data.get("revision") == revisions.get(ps_id)))
        return out

    async def principals_of(self, instance: Instance, permission_set: PermissionSet,
                            account: str) -> list[tuple[str, str]]:
        try:
            record = await self._store.get(self._provisioned_ref(instance, permission_set,
                                                                 account))
        except NotFound:
            return []
        return [(p.partition("/")[0], p.partition("/")[2]) for p in record.data["principals"]]

    async def _set_revisions(self, instance: Instance) -> list[tuple[PermissionSet, int]]:
        records = await self._store.list(PERMISSION_SET, instance.account_id,
                                         parent=Ref(INSTANCE, instance.account_id, KEY))
        return [(decode(PermissionSet, {**r.data, "account_id": r.account}), r.version)
                for r in records]

    async def _range(self, kind: str, account: str, prefix: str) -> list[Record]:
        """Every record of a kind whose key starts with ``prefix`` (keys are ordered
        bytewise; ``prefix`` ends with a separator, so no key equals it)."""
        found: list[Record] = []
        after = prefix
        while True:
            batch = await self._store.list(kind, account, after=after, limit=_PAGE)
            for record in batch:
                if not record.key.startswith(prefix):
                    return found
                found.append(record)
            if len(batch) < _PAGE:
                return found
            after = batch[-1].key

    async def can_assign(self, instance: Instance, account: str) -> bool:
        """Whether the instance may give access to the account now: its own account, or an
        account of its organization (an account that left no longer is)."""
        return await self._can_assign(instance, account)

    async def _check_target(self, instance: Instance, account: str) -> None:
        if not await self._can_assign(instance, account):
            raise SsoError("ValidationException",
                           f"Account {account} is not an account this instance can assign "
                           "(its own account, or for an organization's instance, an account "
                           "of the organization).")


def _with_revision(revision: int) -> Callable[[Record], dict[str, Any]]:
    return lambda record: {**record.data, "revision": revision}


def _trust(provider_arn: str, audience: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": provider_arn},
        "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession"],
        "Condition": {"StringEquals": {"SAML:aud": audience}}}]})


def _role_id() -> str:
    return ids.new_unique_id(ids.ROLE_ID_PREFIX)
