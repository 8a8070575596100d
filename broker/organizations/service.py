"""AWS Organizations' use cases: the organization, its OUs, accounts, policies and handshakes.

An organization is one durable record (kind ``organization``, keyed by its id) whose document
holds its whole tree: the root, the OUs, the member accounts with their place, the policies and
what each is attached to, the tags, the trusted services and the centralized root access
features. Every change is one atomic read-modify-write of that record (``EntityStore.update``),
so the tree can never be half-changed — an OU deleted while an account moves into it, an SCP
detached from an account that is leaving — whatever runs concurrently on any process.

Beside it, each member account holds a claim (kind ``org_member``, keyed by the account id):
an account belongs to at most one organization, which the store's key uniqueness guarantees.
The claim is made before the account enters the tree and dropped after it leaves; a claim whose
organization does not list the account (a join or a removal cut short) counts for nothing and
is taken over by the next join.

Handshakes (``org_handshake``) and account-creation requests (``org_create_account``) are
records of their own, keyed by their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from broker.aws import arn, ids
from broker.aws.errors import AwsError, EntityAlreadyExists
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.service import IamService
from broker.organizations import errors
from broker.organizations.document import (
    AWS_MANAGED,
    DEFAULT_ROLE,
    HANDSHAKE_DAYS,
    IAM_PRINCIPAL,
    MAX_OU_DEPTH,
    MAX_PER_TARGET,
    MAX_TAGS,
    RCP_FULL_ACCESS,
    RESUME_AFTER,
    SCP,
    Org,
    ServiceAccessNotEnabled,
    Standing,
    check_content,
    check_resource,
    check_tags,
    now_text,
    random_text,
    standing_of,
    supported,
    when,
)
from broker.organizations.errors import OrgError, constraint, invalid_input
from broker.store.base import GLOBAL, Record, Ref

log = logging.getLogger("broker.organizations")

ORGANIZATION = "organization"
MEMBER = "org_member"
HANDSHAKE = "org_handshake"
CREATE_ACCOUNT = "org_create_account"
# A claim pending this long belongs to a join that will not finish: another may take it over.
CLAIM_STALE = timedelta(seconds=60)

# -- the use cases -----------------------------------------------------------------------------


class OrganizationsService:
    def __init__(self, iam: IamService, clock: Clock) -> None:
        self._iam = iam
        self._store = iam.store
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with (management account, account) once an account has left an organization
        # (IAM Identity Center takes back the roles the organization's instance provisioned).
        self.on_leave: list[Callable[[str, str], Awaitable[None]]] = []

    # reading

    async def org_of(self, account: str) -> Org | None:
        """The organization the account belongs to, if any."""
        try:
            claim = await self._store.get(Ref(MEMBER, GLOBAL, account))
            record = await self._store.get(Ref(ORGANIZATION, GLOBAL, claim.data["org"]))
        except NotFound:
            return None
        org = Org(copy.deepcopy(dict(record.data)))
        return org if account in org.accounts else None

    async def standing(self, account: str) -> Standing | None:
        org = await self.org_of(account)
        return None if org is None else standing_of(org, account)

    async def require(self, account: str) -> Org:
        org = await self.org_of(account)
        if org is None:
            raise errors.not_in_use()
        return org

    async def managed_by(self, account: str) -> Org:
        """The organization the caller's account manages; only its management account may
        change it."""
        org = await self.require(account)
        if org.management != account:
            raise errors.only_management()
        return org

    async def _change(self, org: Org, change: Callable[[Org], Any]) -> tuple[Org, Any]:
        """Change the organization's document atomically; what ``change`` returns, with the
        organization as written."""
        out: list[Any] = []

        def apply(record: Record) -> dict[str, Any]:
            current = Org(copy.deepcopy(dict(record.data)))
            out.append(change(current))
            return current.data

        try:
            record = await self._store.update(Ref(ORGANIZATION, GLOBAL, org.id), apply)
        except NotFound:
            raise errors.not_in_use() from None
        return Org(copy.deepcopy(dict(record.data))), out[-1]

    # the organization

    async def create_organization(self, account: str, feature_set: str) -> Org:
        if feature_set != "ALL":
            raise invalid_input("The broker's organizations have all features (FeatureSet "
                                "ALL): consolidated billing alone has no meaning here.",
                                "INVALID_ENUM")
        root_email = await self._root_email(account)
        now = now_text(self._clock.now())
        org_id = "o-" + random_text(10)
        data = {
            "id": org_id, "management": account, "created": now, "feature_set": "ALL",
            "root": {"id": "r-" + random_text(4), "name": "Root", "types": {}},
            "ous": {}, "policies": {}, "attached": {}, "tags": {}, "services": {},
            "root_features": [],
            "accounts": {account: {"name": await self._account_name(account),
                                   "email": root_email, "parent": None, "method": "CREATED",
                                   "joined": now}},
        }
        data["accounts"][account]["parent"] = data["root"]["id"]  # type: ignore[index]
        await self._claim(account, org_id, "AlreadyInOrganizationException",
                          "The provided account is already a member of an organization.")
        try:
            await self._store.create(Record(ORGANIZATION, GLOBAL, org_id, data))
        except BaseException:
            await self._unclaim(account, org_id)
            raise
        if not await self._confirm(account, org_id):
            await self._store.delete(Ref(ORGANIZATION, GLOBAL, org_id))
            raise _busy()
        return Org(data)

    async def delete_organization(self, account: str) -> None:
        org = await self.managed_by(account)

        def check(current: Record) -> None:
            if set(current.data["accounts"]) - {account}:
                raise OrgError("OrganizationNotEmptyException",
                               "The organization isn't empty. To delete an organization, you "
                               "must first remove all member accounts.")

        try:
            await self._store.delete(Ref(ORGANIZATION, GLOBAL, org.id), check=check)
        except NotFound:
            raise errors.not_in_use() from None
        await self._unclaim(account, org.id)

    async def enable_service(self, account: str, principal: str) -> None:
        org = await self.managed_by(account)
        now = now_text(self._clock.now())
        await self._change(org, lambda o: o.data["services"].setdefault(principal, now))

    async def disable_service(self, account: str, principal: str) -> None:
        org = await self.managed_by(account)

        def drop(o: Org) -> None:
            o.data["services"].pop(principal, None)
            if principal == IAM_PRINCIPAL:
                o.data["root_features"] = []  # IAM's features need IAM's trusted access

        await self._change(org, drop)

    # organizational units

    async def create_ou(self, account: str, parent: str, name: str,
                        tags: list[dict[str, str]]) -> tuple[Org, str]:
        org = await self.managed_by(account)
        check_tags(tags)

        def add(o: Org) -> str:
            if not o.is_parent(parent):
                raise errors.parent_not_found()
            if parent != o.root_id and o.depth(parent) >= MAX_OU_DEPTH:
                raise constraint("You attempted to create an OU tree that is too many levels "
                                 f"deep (at most {MAX_OU_DEPTH}).", "OU_DEPTH_LIMIT_EXCEEDED")
            if any(ou["parent"] == parent and ou["name"] == name for ou in o.ous.values()):
                raise OrgError("DuplicateOrganizationalUnitException",
                               "An OU with the same name already exists.")
            ou_id = f"ou-{o.root_id[2:]}-{random_text(8)}"
            o.ous[ou_id] = {"name": name, "parent": parent,
                            "created": now_text(self._clock.now())}
            o.attach_defaults(ou_id)
            o.set_tags(ou_id, tags)
            return ou_id

        return await self._change(org, add)

    async def rename_ou(self, account: str, ou_id: str, name: str | None) -> Org:
        org = await self.managed_by(account)

        def rename(o: Org) -> None:
            ou = o.ous.get(ou_id)
            if ou is None:
                raise errors.ou_not_found()
            if name is None or name == ou["name"]:
                return
            if any(other["parent"] == ou["parent"] and other["name"] == name
                   for other in o.ous.values()):
                raise OrgError("DuplicateOrganizationalUnitException",
                               "An OU with the same name already exists.")
            ou["name"] = name

        return (await self._change(org, rename))[0]

    async def delete_ou(self, account: str, ou_id: str) -> None:
        org = await self.managed_by(account)

        def drop(o: Org) -> None:
            if ou_id not in o.ous:
                raise errors.ou_not_found()
            if any(c.get("parent") == ou_id for c in (*o.ous.values(), *o.accounts.values())):
                raise OrgError("OrganizationalUnitNotEmptyException",
                               "The specified OU is not empty. Move all accounts to another "
                               "root or to other OUs, remove all child OUs, and try the "
                               "operation again.")
            del o.ous[ou_id]
            o.drop_target(ou_id)

        await self._change(org, drop)

    # accounts

    async def invite(self, account: str, target: dict[str, str], notes: str | None,
                     tags: list[dict[str, str]]) -> dict[str, Any]:
        org = await self.managed_by(account)
        check_tags(tags)
        invited = await self._resolve_target(target)
        if invited in org.accounts:
            raise OrgError("HandshakeConstraintViolationException",
                           "The account is already a member of this organization.",
                           "ALREADY_IN_AN_ORGANIZATION")
        now = self._clock.now()
        for existing in await self._handshakes():
            if existing["org"] == org.id and existing["account"] == invited and \
                    self._state(existing) == "OPEN":
                raise OrgError("DuplicateHandshakeException",
                               "A handshake with the same action and target already exists.")
        handshake = {
            "id": "h-" + random_text(10), "org": org.id, "management": org.management,
            "account": invited, "state": "OPEN", "requested": now_text(now),
            "expires": now_text(now + timedelta(days=HANDSHAKE_DAYS)), "notes": notes,
            "email": org.accounts[org.management].get("email"),
            "name": org.accounts[org.management]["name"], "tags": tags,
        }
        await self._store.create(Record(HANDSHAKE, GLOBAL, handshake["id"], handshake))
        return handshake

    async def _resolve_target(self, target: dict[str, str]) -> str:
        kind, value = target["Type"], target["Id"]
        if kind == "ACCOUNT":
            if not re.fullmatch(r"\d{12}", value):
                raise invalid_input("You provided a value that does not match the required "
                                    "pattern for an account id.", "INVALID_PARTY_TYPE_TARGET")
            try:
                await self._iam.get_account(value)
            except AwsError:
                raise _no_such_party() from None
            return value
        if kind == "EMAIL":
            account = await self._iam.account_of_root_email(value)
            if account is None:
                raise _no_such_party()
            return account
        raise invalid_input("You can invite an account by its id (ACCOUNT) or its root "
                            "user's email address (EMAIL).", "INVALID_PARTY_TYPE_TARGET")

    async def _handshakes(self) -> list[dict[str, Any]]:
        return [dict(r.data) for r in await self._store.list(HANDSHAKE, GLOBAL)]

    def _state(self, handshake: dict[str, Any]) -> str:
        state = str(handshake["state"])
        if state in ("OPEN", "REQUESTED") and when(handshake["expires"]) <= self._clock.now():
            return "EXPIRED"
        return state

    async def handshakes_for(self, account: str) -> list[dict[str, Any]]:
        """The handshakes the account takes part in: received, or sent by its organization."""
        org = await self.org_of(account)
        managed = org.id if org is not None and org.management == account else None
        return sorted((h for h in await self._handshakes()
                       if h["account"] == account or h["org"] == managed),
                      key=lambda h: str(h["id"]))

    async def handshake(self, account: str, handshake_id: str) -> dict[str, Any]:
        try:
            found = dict((await self._store.get(Ref(HANDSHAKE, GLOBAL, handshake_id))).data)
        except NotFound:
            raise errors.handshake_not_found() from None
        if account not in (found["account"], found["management"]):
            raise errors.handshake_not_found()
        return found

    def handshake_wire(self, handshake: dict[str, Any]) -> dict[str, Any]:
        org_id = str(handshake["org"])
        resources: list[dict[str, Any]] = [
            {"Type": "ORGANIZATION", "Value": org_id, "Resources": [
                {"Type": "MASTER_EMAIL", "Value": handshake.get("email") or ""},
                {"Type": "MASTER_NAME", "Value": handshake.get("name") or ""},
                {"Type": "ORGANIZATION_FEATURE_SET", "Value": "ALL"}]},
            {"Type": "ACCOUNT", "Value": handshake["account"]},
        ]
        if handshake.get("notes"):
            resources.append({"Type": "NOTES", "Value": handshake["notes"]})
        return {
            "Id": handshake["id"],
            "Arn": (f"arn:{arn.PARTITION}:organizations::{handshake['management']}:handshake/"
                    f"{org_id}/invite/{handshake['id']}"),
            "Parties": [{"Id": org_id, "Type": "ORGANIZATION"},
                        {"Id": handshake["account"], "Type": "ACCOUNT"}],
            "State": self._state(handshake), "Action": "INVITE",
            "RequestedTimestamp": when(handshake["requested"]),
            "ExpirationTimestamp": when(handshake["expires"]),
            "Resources": resources,
        }

    async def _settle(self, account: str, handshake_id: str, state: str,
                      by_invited: bool) -> dict[str, Any]:
        found = await self.handshake(account, handshake_id)
        if (found["account"] == account) != by_invited:
            raise OrgError("AccessDeniedException",
                           "You don't have permissions to access this resource.")

        def settle(record: Record) -> dict[str, Any]:
            current = dict(record.data)
            now_state = self._state(current)
            if now_state == state:
                raise OrgError("HandshakeAlreadyInStateException",
                               f"The specified handshake is already in the requested state "
                               f"({state}).")
            if now_state != "OPEN":
                raise OrgError("InvalidHandshakeTransitionException",
                               f"You can't change a handshake that is {now_state}.")
            current["state"] = state
            return current

        record = await self._store.update(Ref(HANDSHAKE, GLOBAL, handshake_id), settle)
        return dict(record.data)

    async def accept(self, account: str, handshake_id: str) -> dict[str, Any]:
        found = await self.handshake(account, handshake_id)
        if found["account"] != account:
            raise OrgError("AccessDeniedException",
                           "You don't have permissions to access this resource.")
        if self._state(found) != "OPEN":
            raise OrgError("InvalidHandshakeTransitionException",
                           f"You can't accept a handshake that is {self._state(found)}.")
        if await self.org_of(account) is not None:
            raise OrgError("HandshakeConstraintViolationException",
                           "The account is already a member of an organization.",
                           "ALREADY_IN_AN_ORGANIZATION")
        try:
            org_record = await self._store.get(Ref(ORGANIZATION, GLOBAL, found["org"]))
        except NotFound:
            raise OrgError("HandshakeConstraintViolationException",
                           "The organization that sent this invitation no longer exists.",
                           "TARGET_ACCOUNT_VALIDATION_FAILURE") from None
        settled = await self._settle(account, handshake_id, "ACCEPTED", by_invited=True)
        try:
            await self._join(Org(dict(org_record.data)), account, "INVITED",
                             email=await self._root_email(account),
                             name=await self._account_name(account), tags=[])
        except BaseException:
            await self._reopen(handshake_id)
            raise
        return settled

    async def _reopen(self, handshake_id: str) -> None:
        """An accepted handshake whose join failed is open again (best effort)."""
        def reopen(record: Record) -> dict[str, Any]:
            return {**record.data, "state": "OPEN"} if record.data["state"] == "ACCEPTED" \
                else dict(record.data)

        with contextlib.suppress(Exception):
            await self._store.update(Ref(HANDSHAKE, GLOBAL, handshake_id), reopen)

    async def decline(self, account: str, handshake_id: str) -> dict[str, Any]:
        return await self._settle(account, handshake_id, "DECLINED", by_invited=True)

    async def cancel(self, account: str, handshake_id: str) -> dict[str, Any]:
        return await self._settle(account, handshake_id, "CANCELED", by_invited=False)

    async def _join(self, org: Org, account: str, method: str, *, email: str | None,
                    name: str, tags: list[dict[str, str]]) -> Org:
        await self._claim(account, org.id, "HandshakeConstraintViolationException",
                          "The account is already a member of an organization.",
                          "ALREADY_IN_AN_ORGANIZATION")

        def add(o: Org) -> None:
            if account in o.accounts:
                return
            o.accounts[account] = {"name": name, "email": email, "parent": o.root_id,
                                   "method": method,
                                   "joined": now_text(self._clock.now())}
            o.attach_defaults(account)
            o.set_tags(account, tags)

        try:
            written, _ = await self._change(org, add)
        except BaseException:
            await self._unclaim(account, org.id)
            raise
        if not await self._confirm(account, org.id):
            # Another organization took the claim over meanwhile (ours was stale): the account
            # is theirs, so it leaves our tree again.
            def drop(o: Org) -> None:
                if account in o.accounts and o.accounts[account]["joined"] == \
                        written.accounts[account]["joined"]:
                    del o.accounts[account]
                    o.drop_target(account)

            await self._change(org, drop)
            raise _busy()
        return written

    async def move(self, account: str, member: str, source: str, destination: str) -> None:
        org = await self.managed_by(account)

        def move(o: Org) -> None:
            if member not in o.accounts:
                raise errors.account_not_found(member)
            if not o.is_parent(source):
                raise errors.parent_not_found("SourceParentNotFoundException")
            if not o.is_parent(destination):
                raise errors.parent_not_found("DestinationParentNotFoundException")
            if o.accounts[member]["parent"] != source:
                raise errors.parent_not_found("SourceParentNotFoundException")
            if source == destination:
                raise OrgError("DuplicateAccountException",
                               "That account is already present in the specified "
                               "destination.")
            o.accounts[member]["parent"] = destination

        await self._change(org, move)

    async def remove(self, account: str, member: str) -> None:
        org = await self.managed_by(account)
        if member == org.management:
            raise OrgError("MasterCannotLeaveOrganizationException",
                           "You can't remove a management account from an organization. If "
                           "you want the management account to become a member account in "
                           "another organization, you must first delete the current "
                           "organization.")
        await self._leave(org, member)

    async def leave(self, account: str) -> None:
        org = await self.require(account)
        if account == org.management:
            raise OrgError("MasterCannotLeaveOrganizationException",
                           "You can't remove a management account from an organization. If "
                           "you want the management account to become a member account in "
                           "another organization, you must first delete the current "
                           "organization.")
        await self._leave(org, account)

    async def _leave(self, org: Org, member: str) -> None:
        def drop(o: Org) -> None:
            if member not in o.accounts:
                raise errors.account_not_found(member)
            del o.accounts[member]
            o.drop_target(member)

        await self._change(org, drop)
        await self._unclaim(member, org.id)
        for hook in self.on_leave:
            try:
                await hook(org.management, member)
            except Exception:  # the account has left: what is left behind is unusable anyway
                log.exception("after account %s left organization %s", member, org.id)

    # creating accounts

    async def create_account(self, account: str, email: str, name: str, role: str | None,
                             tags: list[dict[str, str]]) -> dict[str, Any]:
        org = await self.managed_by(account)
        check_tags(tags)
        role_name = role or DEFAULT_ROLE
        if not re.fullmatch(r"[\w+=,.@-]{1,64}", role_name):
            raise invalid_input("The role name is not a valid IAM role name.",
                                "INVALID_ROLE_NAME")
        request: dict[str, Any] = {
            "id": "car-" + random_text(32), "org": org.id, "management": org.management,
            "name": name, "email": email, "role": role_name, "tags": tags,
            "state": "IN_PROGRESS", "requested": now_text(self._clock.now()),
            "account": ids.new_account_id(),
        }
        await self._store.create(Record(CREATE_ACCOUNT, GLOBAL, request["id"], request))
        task = asyncio.ensure_future(self._complete_quietly(request["id"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request

    async def _complete_quietly(self, request_id: str) -> None:
        try:
            await self.complete(request_id)
        except Exception:  # the next DescribeCreateAccountStatus resumes it
            log.exception("account creation %s: will resume on the next status request",
                          request_id)

    async def complete(self, request_id: str) -> dict[str, Any]:
        """Finish an account-creation request: every step is idempotent, so a request cut
        short (a process killed, a store that failed) is completed by whoever asks next."""
        request = dict((await self._store.get(Ref(CREATE_ACCOUNT, GLOBAL, request_id))).data)
        if request["state"] != "IN_PROGRESS":
            return request
        account = str(request["account"])
        failure = None
        try:
            await self._iam.get_account(account)
        except AwsError:
            try:
                await self._iam.create_bare_account(account, root_email=request["email"])
            except EntityAlreadyExists:
                failure = "EMAIL_ALREADY_EXISTS"
            except AwsError:
                failure = "INVALID_EMAIL"
        if failure is None:
            try:
                org_record = await self._store.get(Ref(ORGANIZATION, GLOBAL, request["org"]))
            except NotFound:
                failure = "INTERNAL_FAILURE"
            else:
                await self._ensure_access_role(account, request["management"], request["role"])
                org = Org(dict(org_record.data))
                await self._join(org, account, "CREATED", email=request["email"],
                                 name=request["name"], tags=list(request["tags"]))
        now = now_text(self._clock.now())

        def finish(record: Record) -> dict[str, Any]:
            current = dict(record.data)
            if current["state"] == "IN_PROGRESS":
                current["state"] = "FAILED" if failure else "SUCCEEDED"
                current["completed"] = now
                if failure:
                    current["failure"] = failure
            return current

        return dict((await self._store.update(Ref(CREATE_ACCOUNT, GLOBAL, request_id),
                                              finish)).data)

    async def _ensure_access_role(self, account: str, management: str, role: str) -> None:
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": arn.root(management)},
            "Action": "sts:AssumeRole"}]})
        with contextlib.suppress(EntityAlreadyExists):
            await self._iam.roles.create(account, role, trust)
        await self._iam.policies.attach("role", account, role,
                                        "arn:aws:iam::aws:policy/AdministratorAccess")

    async def create_status(self, account: str, request_id: str) -> dict[str, Any]:
        org = await self.managed_by(account)
        try:
            request = dict((await self._store.get(Ref(CREATE_ACCOUNT, GLOBAL,
                                                      request_id))).data)
        except NotFound:
            request = {}
        if request.get("org") != org.id:
            raise OrgError("CreateAccountStatusNotFoundException",
                           "We can't find an create account request with the "
                           "CreateAccountRequestId that you specified.")
        if request["state"] == "IN_PROGRESS" and \
                when(request["requested"]) < self._clock.now() - RESUME_AFTER:
            request = await self.complete(request_id)  # resumed: its process is gone
        return request

    async def create_statuses(self, account: str, states: Iterable[str]) -> list[dict[str, Any]]:
        org = await self.managed_by(account)
        wanted = set(states)
        return sorted((dict(r.data) for r in await self._store.list(CREATE_ACCOUNT, GLOBAL)
                       if r.data["org"] == org.id and (not wanted or r.data["state"] in wanted)),
                      key=lambda r: str(r["id"]))

    async def wait(self) -> None:
        """Account creations under way, finished (the command line and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @staticmethod
    def create_status_wire(request: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"Id": request["id"], "AccountName": request["name"],
                               "State": request["state"],
                               "RequestedTimestamp": when(request["requested"])}
        if request["state"] == "SUCCEEDED":
            out["AccountId"] = request["account"]
        if request.get("completed"):
            out["CompletedTimestamp"] = when(request["completed"])
        if request.get("failure"):
            out["FailureReason"] = request["failure"]
        return out

    # policies

    async def enable_type(self, account: str, root_id: str, policy_type: str) -> Org:
        org = await self.managed_by(account)
        supported(policy_type)

        def enable(o: Org) -> None:
            if root_id != o.root_id:
                raise errors.root_not_found()
            if o.enabled(policy_type):
                raise OrgError("PolicyTypeAlreadyEnabledException",
                               "The specified policy type is already enabled.")
            o.root["types"][policy_type] = "ENABLED"
            for target in (o.root_id, *o.ous, *o.accounts):
                o.attach_defaults(target)

        return (await self._change(org, enable))[0]

    async def disable_type(self, account: str, root_id: str, policy_type: str) -> Org:
        org = await self.managed_by(account)
        supported(policy_type)

        def disable(o: Org) -> None:
            if root_id != o.root_id:
                raise errors.root_not_found()
            if not o.enabled(policy_type):
                raise OrgError("PolicyTypeNotEnabledException",
                               "This operation can be performed only for enabled policy "
                               "types.")
            del o.root["types"][policy_type]
            for target in list(o.attached):
                o.attached[target] = [p for p in o.attached[target]
                                      if o.policy(p)["type"] != policy_type]
                if not o.attached[target]:
                    del o.attached[target]

        return (await self._change(org, disable))[0]

    async def create_policy(self, account: str, name: str, description: str, content: str,
                            policy_type: str, tags: list[dict[str, str]]) -> tuple[Org, str]:
        org = await self.managed_by(account)
        supported(policy_type)
        check_tags(tags)
        check_content(content, policy_type)

        def add(o: Org) -> str:
            if any(p["name"] == name and p["type"] == policy_type
                   for p in (*o.policies.values(), *AWS_MANAGED.values())):
                raise OrgError("DuplicatePolicyException",
                               "A policy with the same name already exists.")
            policy_id = "p-" + random_text(8)
            o.policies[policy_id] = {"name": name, "description": description,
                                     "type": policy_type, "content": content}
            o.set_tags(policy_id, tags)
            return policy_id

        return await self._change(org, add)

    async def update_policy(self, account: str, policy_id: str, name: str | None,
                            description: str | None, content: str | None) -> Org:
        org = await self.managed_by(account)

        def update(o: Org) -> None:
            policy = o.policy(policy_id)
            if policy_id in AWS_MANAGED:
                raise invalid_input("You can't change an AWS managed policy.",
                                    "IMMUTABLE_POLICY")
            if content is not None:
                check_content(content, policy["type"])
                policy["content"] = content
            if name is not None and name != policy["name"]:
                if any(p["name"] == name and p["type"] == policy["type"]
                       for p in o.policies.values()):
                    raise OrgError("DuplicatePolicyException",
                                   "A policy with the same name already exists.")
                policy["name"] = name
            if description is not None:
                policy["description"] = description

        return (await self._change(org, update))[0]

    async def delete_policy(self, account: str, policy_id: str) -> None:
        org = await self.managed_by(account)

        def drop(o: Org) -> None:
            o.policy(policy_id)
            if policy_id in AWS_MANAGED:
                raise invalid_input("You can't delete an AWS managed policy.",
                                    "IMMUTABLE_POLICY")
            if o.targets_of(policy_id):
                raise OrgError("PolicyInUseException",
                               "The policy is attached to one or more entities. You must "
                               "detach it from all roots, OUs, and accounts before performing "
                               "this operation.")
            del o.policies[policy_id]
            o.data["tags"].pop(policy_id, None)

        await self._change(org, drop)

    async def attach(self, account: str, policy_id: str, target: str) -> None:
        org = await self.managed_by(account)

        def attach(o: Org) -> None:
            policy = o.policy(policy_id)
            if not o.is_target(target):
                raise errors.target_not_found()
            if not o.enabled(policy["type"]):
                raise OrgError("PolicyTypeNotEnabledException",
                               "This operation can be performed only for enabled policy "
                               "types.")
            found = o.attached.setdefault(target, [])
            if policy_id in found:
                raise OrgError("DuplicatePolicyAttachmentException",
                               "The selected policy is already attached to the specified "
                               "target.")
            if len(o.attached_of(target, policy["type"])) >= MAX_PER_TARGET:
                raise constraint("You attempted to attach more policies of this type to an "
                                 f"entity than allowed ({MAX_PER_TARGET}).",
                                 "MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED")
            found.append(policy_id)

        await self._change(org, attach)

    async def detach(self, account: str, policy_id: str, target: str) -> None:
        org = await self.managed_by(account)

        def detach(o: Org) -> None:
            policy = o.policy(policy_id)
            if not o.is_target(target):
                raise errors.target_not_found()
            found = o.attached.get(target, [])
            if policy_id not in found:
                raise OrgError("PolicyNotAttachedException",
                               "The policy isn't attached to the specified target in the "
                               "specified root.")
            if policy_id == RCP_FULL_ACCESS:
                raise invalid_input("You can't detach RCPFullAWSAccess.",
                                    "NON_DETACHABLE_POLICY")
            if policy["type"] == SCP and len(o.attached_of(target, SCP)) == 1:
                raise constraint("You attempted to detach the last service control policy "
                                 "from an entity: every root, OU and account must have at "
                                 "least one attached.",
                                 "MIN_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED")
            found.remove(policy_id)

        await self._change(org, detach)

    # tags

    async def tag(self, account: str, resource: str, tags: list[dict[str, str]]) -> None:
        org = await self.managed_by(account)
        check_tags(tags)

        def tag(o: Org) -> None:
            check_resource(o, resource)
            merged = {t["Key"]: t for t in o.tags(resource)}
            merged.update({t["Key"]: t for t in tags})
            if len(merged) > MAX_TAGS:
                raise constraint(f"You can attach at most {MAX_TAGS} tags to a resource.",
                                 "MAX_TAG_LIMIT_EXCEEDED")
            o.set_tags(resource, sorted(merged.values(), key=lambda t: t["Key"]))

        await self._change(org, tag)

    async def untag(self, account: str, resource: str, keys: list[str]) -> None:
        org = await self.managed_by(account)

        def untag(o: Org) -> None:
            check_resource(o, resource)
            o.set_tags(resource, [t for t in o.tags(resource) if t["Key"] not in keys])

        await self._change(org, untag)

    # centralized root access (IAM's side of it)

    async def root_features(self, account: str, feature: str | None,
                            enable: bool) -> Org:
        org = await self.managed_by(account)
        if IAM_PRINCIPAL not in org.data["services"]:
            raise ServiceAccessNotEnabled()

        if feature is None:
            return org  # ListOrganizationsFeatures: a read, no write

        def change(o: Org) -> None:
            features = [f for f in o.data.get("root_features", []) if f != feature]
            if enable:
                features.append(feature)
            o.data["root_features"] = sorted(features)

        return (await self._change(org, change))[0]

    # helpers

    async def _claim(self, account: str, org_id: str, code: str, message: str,
                     reason: str | None = None) -> None:
        """Claim the account for ``org_id`` (pending until ``_confirm``). A claim that is
        already this organization's is kept (a join resumed); another organization's claim is
        taken over only when it counts for nothing — that organization's tree does not list
        the account, and the claim is not a join under way (pending and younger than
        CLAIM_STALE) — and only if it is still the claim that was read (compare and swap)."""
        ref = Ref(MEMBER, GLOBAL, account)
        now = self._clock.now()
        fresh = {"org": org_id, "state": "pending", "at": now_text(now)}
        try:
            await self._store.create(Record(MEMBER, GLOBAL, account, fresh))
            return
        except AlreadyExists:
            pass
        try:
            current = dict((await self._store.get(ref)).data)
        except NotFound:
            raise _busy() from None  # let go of while we looked: the caller may try again
        if current["org"] == org_id:
            return
        if await self.org_of(account) is not None:
            raise OrgError(code, message, reason)
        if current.get("state") == "pending" and when(current["at"]) > now - CLAIM_STALE:
            raise _busy()

        def take(record: Record) -> dict[str, Any]:
            if dict(record.data) != current:
                raise _NotOurs()
            return fresh

        try:
            await self._store.update(ref, take)
        except (_NotOurs, NotFound):
            raise _busy() from None

    async def _confirm(self, account: str, org_id: str) -> bool:
        """Mark the claim joined, if it is still this organization's."""
        def joined(record: Record) -> dict[str, Any]:
            if record.data.get("org") != org_id:
                raise _NotOurs()
            return {**record.data, "state": "joined"}

        try:
            await self._store.update(Ref(MEMBER, GLOBAL, account), joined)
        except (_NotOurs, NotFound):
            return False
        return True

    async def _unclaim(self, account: str, org_id: str) -> None:
        def mine(record: Record) -> None:
            if record.data.get("org") != org_id:
                raise _NotOurs()

        with contextlib.suppress(NotFound, _NotOurs):
            await self._store.delete(Ref(MEMBER, GLOBAL, account), check=mine)

    async def _root_email(self, account: str) -> str | None:
        return await self._iam.root_email(account)

    async def _account_name(self, account: str) -> str:
        found = await self._iam.get_account(account)
        return found.alias or account


def _busy() -> OrgError:
    return OrgError("ConcurrentModificationException",
                    "The target of the operation is currently being modified by a different "
                    "request. Try again later.")


def _no_such_party() -> OrgError:
    return invalid_input("You can invite only an account this broker holds: no account has "
                         "that id or root email address.", "INVALID_PARTY_TYPE_TARGET")


class _NotOurs(Exception):
    pass
