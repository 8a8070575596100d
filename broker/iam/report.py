"""The credential report (GenerateCredentialReport / GetCredentialReport): one CSV line for the
root user and for every IAM user of an account, with AWS's columns, so that the checks people
already run against AWS's report (password age, keys never rotated or unused, MFA missing) run
against the broker's.

A report is made when asked and kept in the entity store for ``REPORT_SECONDS`` (4 hours, as
AWS): asking again within that time gives the same report; GetCredentialReport after it is
``ReportExpired``, before any is ``ReportNotPresent``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.aws import arn
from broker.aws.errors import ReportExpired, ReportNotPresent
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import (
    ACCESS_KEY,
    SECURITY_KEY,
    USER,
    AccessKey,
    MfaDevice,
    RootUser,
    SecurityKey,
    User,
    decode,
)
from broker.iam.logins import Logins
from broker.iam.mfa import MfaDevices
from broker.iam.records import Entities
from broker.store.base import EntityStore, Record, Ref

REPORT = "credential_report"
REPORT_SECONDS = 4 * 3600
COLUMNS = (
    "user", "arn", "user_creation_time", "password_enabled", "password_last_used",
    "password_last_changed", "password_next_rotation", "mfa_active",
    "access_key_1_active", "access_key_1_last_rotated", "access_key_1_last_used_date",
    "access_key_1_last_used_region", "access_key_1_last_used_service",
    "access_key_2_active", "access_key_2_last_rotated", "access_key_2_last_used_date",
    "access_key_2_last_used_region", "access_key_2_last_used_service",
    "cert_1_active", "cert_1_last_rotated", "cert_2_active", "cert_2_last_rotated",
)
ROOT_NAME = "<root_account>"
NA = "N/A"


@dataclass(frozen=True)
class Report:
    content: bytes
    generated: datetime


def _time(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else NA


def _keys(keys: Sequence[AccessKey]) -> list[str]:
    """The two access-key column groups, oldest key first (AWS's order)."""
    cells: list[str] = []
    ordered = sorted(keys, key=lambda k: (k.created, k.access_key_id))[:2]
    for index in range(2):
        if index >= len(ordered):
            cells += ["false", NA, NA, NA, NA]
            continue
        key = ordered[index]
        used = key.last_used
        cells += ["true" if key.status == "Active" else "false", _time(key.created),
                  _time(used.at) if used else NA, used.region if used else NA,
                  used.service if used else NA]
    return cells


class CredentialReports:
    def __init__(self, entities: Entities, logins: Logins, mfa: MfaDevices,
                 clock: Clock) -> None:
        self._store: EntityStore = entities.store
        self._entities = entities
        self._logins = logins
        self._mfa = mfa
        self._clock = clock

    async def generate(self, account: str) -> str:
        """GenerateCredentialReport: COMPLETE (the broker makes the report at once; one made
        within the last four hours is kept)."""
        now = self._clock.now()
        try:
            current = self._of(await self._store.get(_ref(account)))
        except NotFound:
            current = None
        if current is not None and now - current.generated < timedelta(seconds=REPORT_SECONDS):
            return "COMPLETE"
        content = await self._render(account, now)
        record = Record(kind=REPORT, account=account, key="report",
                        data={"content": content.decode("utf-8"),
                              "generated": now.isoformat()})
        if current is None:
            try:
                await self._store.create(record)
                return "COMPLETE"
            except AlreadyExists:  # made at the same moment by another process: replace it
                pass
        await self._store.update(_ref(account), lambda _: record.data)
        return "COMPLETE"

    async def get(self, account: str) -> Report:
        try:
            report = self._of(await self._store.get(_ref(account)))
        except NotFound:
            raise ReportNotPresent("Credential report is not present. Use "
                                   "GenerateCredentialReport to generate a report.") from None
        if self._clock.now() - report.generated >= timedelta(seconds=REPORT_SECONDS):
            raise ReportExpired("Credential report is expired. Use GenerateCredentialReport "
                                "to generate a new report.")
        return report

    @staticmethod
    def _of(record: Record) -> Report:
        return Report(str(record.data["content"]).encode("utf-8"),
                      datetime.fromisoformat(str(record.data["generated"])))

    async def _render(self, account: str, now: datetime) -> bytes:
        policy = await self._logins.policy(account)
        keys = [AccessKey.of(r) for r in await self._store.list(ACCESS_KEY, account)]
        devices: list[MfaDevice | SecurityKey] = [
            *await self._mfa.listing(account),
            *await self._entities.all(SecurityKey, SECURITY_KEY, account)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        root = decode(RootUser, {**(await self._store.get(RootUser.ref(account))).data,
                                 "account_id": account})
        writer.writerow([ROOT_NAME, arn.root(account), _time(root.created), "not_supported",
                         _time(root.password_last_used) if root.password_last_used
                         else "no_information", NA, NA, _mfa_active(devices, None),
                         *_keys([k for k in keys if k.user_name is None]),
                         "false", NA, "false", NA])
        users = sorted(await self._entities.all(User, USER, account), key=lambda u: u.name)
        for user in users:
            login = user.login
            rotation = NA
            if login is not None and policy is not None and policy.max_age:
                rotation = _time(login.password_changed + timedelta(days=policy.max_age))
            mine = [k for k in keys if k.user_name is not None and
                    k.user_name.lower() == user.name.lower()]
            writer.writerow([
                user.name, user.arn, _time(user.created),
                "true" if login is not None else "false",
                (_time(login.last_used) if login.last_used else "no_information")
                if login is not None else NA,
                _time(login.password_changed) if login is not None else NA, rotation,
                _mfa_active(devices, user.name), *_keys(mine), "false", NA, "false", NA])
        return out.getvalue().encode("utf-8")


def _mfa_active(devices: Sequence[MfaDevice | SecurityKey], user_name: str | None) -> str:
    return "true" if any(d.owned_by(user_name) for d in devices) else "false"


def _ref(account: str) -> Ref:
    return Ref(REPORT, account, "report")
