"""A signed-in user's own security credentials, from the console: the password, MFA devices,
access keys, and temporary credentials for the command line.

Every change and every read is the IAM action AWS's console performs for it, run through the
Query protocol's own operations (``QueryProtocol.invoke``) as the console session's principal:
the same input validation, the same authorization (the user's policies with
aws:MultiFactorAuthPresent saying whether the sign-in used MFA, so that AWS's
``IAMUserChangePassword`` and "manage own credentials" policies with ``${aws:username}``, and
its "deny all but MFA self-management without MFA" policy, apply verbatim), the same errors.
What a policy denies, the page says it may not show or do.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import AccessDenied, InvalidInput
from broker.aws.query import QueryProtocol
from broker.iam.mfa import otpauth_uri
from broker.iam.service import IamService
from broker.principal import Principal
from broker.signin.console import NOWHERE, Origin
from broker.sts.service import IssuedCredentials, StsService


@dataclass(frozen=True)
class Key:
    access_key_id: str
    status: str
    created: datetime
    last_used: datetime | None
    service: str | None
    region: str | None


@dataclass(frozen=True)
class Device:
    serial: str
    enabled: datetime | None
    kind: str  # "virtual" or "webauthn"


@dataclass(frozen=True)
class Overview:
    """What the security credentials page shows; None where policy denies the read."""

    user_name: str | None  # None for the root user
    password_last_used: datetime | None = None
    keys: list[Key] | None = None
    devices: list[Device] | None = None
    refused: list[str] = field(default_factory=list)  # what could not be read, and why


class OwnCredentials:
    def __init__(self, protocol: QueryProtocol, iam: IamService, sts: StsService,
                 authz: Authorizer) -> None:
        self._protocol = protocol
        self._iam = iam
        self._sts = sts
        self._authz = authz

    async def _call(self, principal: Principal, action: str, params: Mapping[str, str],
                    origin: Origin) -> Mapping[str, Any]:
        result = await self._protocol.invoke(
            principal, action, params, source_ip=origin.source_ip,
            user_agent=origin.user_agent, secure=origin.secure)
        return result or {}

    @staticmethod
    def _user(principal: Principal) -> dict[str, str]:
        """UserName for an action about the caller: the IAM user's own name; none for root."""
        return {} if principal.is_root else {"UserName": principal.name}

    async def overview(self, principal: Principal, origin: Origin = NOWHERE) -> Overview:
        refused: list[str] = []
        user_name = None if principal.is_root else principal.name
        last_used = None
        if user_name is not None:
            try:
                user = (await self._call(principal, "GetUser", {"UserName": user_name},
                                         origin))["User"]
                last_used = user.get("PasswordLastUsed")
            except AccessDenied as exc:
                refused.append(exc.message)
        keys: list[Key] | None = None
        try:
            listed = await self._call(principal, "ListAccessKeys", self._user(principal),
                                      origin)
            keys = []
            for meta in listed.get("AccessKeyMetadata", []):
                used = await self._last_used(principal, meta["AccessKeyId"], origin, refused)
                keys.append(Key(meta["AccessKeyId"], meta["Status"], meta["CreateDate"],
                                used.get("LastUsedDate"), used.get("ServiceName"),
                                used.get("Region")))
        except AccessDenied as exc:
            refused.append(exc.message)
        devices: list[Device] | None = None
        try:
            found = await self._call(principal, "ListMFADevices", self._user(principal), origin)
            devices = [Device(d["SerialNumber"], d.get("EnableDate"), _kind(d["SerialNumber"]))
                       for d in found.get("MFADevices", [])]
        except AccessDenied as exc:
            refused.append(exc.message)
        return Overview(user_name, last_used, keys, devices, refused)

    async def _last_used(self, principal: Principal, key_id: str, origin: Origin,
                         refused: list[str]) -> Mapping[str, Any]:
        try:
            found = await self._call(principal, "GetAccessKeyLastUsed",
                                     {"AccessKeyId": key_id}, origin)
        except AccessDenied as exc:
            if exc.message not in refused:
                refused.append(exc.message)
            return {}
        used: Mapping[str, Any] = found.get("AccessKeyLastUsed", {})
        return used if "LastUsedDate" in used else {}

    # -- the password ---------------------------------------------------------------------------

    async def change_password(self, principal: Principal, old: str, new: str, confirm: str,
                              origin: Origin = NOWHERE) -> None:
        if new != confirm:
            raise InvalidInput("The new password and its confirmation differ.")
        await self._call(principal, "ChangePassword", {"OldPassword": old, "NewPassword": new},
                         origin)

    # -- access keys ----------------------------------------------------------------------------

    async def create_key(self, principal: Principal,
                         origin: Origin = NOWHERE) -> tuple[str, str]:
        """(access key id, secret): the secret is shown this once."""
        created = (await self._call(principal, "CreateAccessKey", self._user(principal),
                                    origin))["AccessKey"]
        return created["AccessKeyId"], created["SecretAccessKey"]

    async def set_key_status(self, principal: Principal, key_id: str, status: str,
                             origin: Origin = NOWHERE) -> None:
        await self._call(principal, "UpdateAccessKey",
                         {**self._user(principal), "AccessKeyId": key_id, "Status": status},
                         origin)

    async def delete_key(self, principal: Principal, key_id: str,
                         origin: Origin = NOWHERE) -> None:
        await self._call(principal, "DeleteAccessKey",
                         {**self._user(principal), "AccessKeyId": key_id}, origin)

    # -- virtual MFA devices --------------------------------------------------------------------

    async def new_virtual_device(self, principal: Principal, name: str,
                                 origin: Origin = NOWHERE) -> tuple[str, str, str]:
        """(serial, Base32 seed, otpauth URI) of a new virtual device, not yet enabled."""
        made = (await self._call(principal, "CreateVirtualMFADevice",
                                 {"VirtualMFADeviceName": name}, origin))["VirtualMFADevice"]
        seed = base64.b64decode(made["Base32StringSeed"]).decode("ascii")
        label = f"root@{principal.account_id}" if principal.is_root else \
            f"{principal.name}@{principal.account_id}"
        return made["SerialNumber"], seed, otpauth_uri(seed, label)

    async def enable_virtual(self, principal: Principal, serial: str, code1: str, code2: str,
                             origin: Origin = NOWHERE) -> None:
        if principal.is_root:
            # EnableMFADevice names its user; the root user's own device is enabled by the
            # same authorization on the root user's ARN (what an SCP can still deny).
            await self._authz.check(principal, "iam:EnableMFADevice", principal.arn,
                                    source_ip=origin.source_ip, user_agent=origin.user_agent,
                                    secure=origin.secure)
            await self._iam.mfa.enable(principal.account_id, None, serial, code1, code2)
            return
        await self._call(principal, "EnableMFADevice",
                         {"UserName": principal.name, "SerialNumber": serial,
                          "AuthenticationCode1": code1, "AuthenticationCode2": code2}, origin)

    async def remove_device(self, principal: Principal, serial: str,
                            origin: Origin = NOWHERE) -> None:
        """Deactivate the device, then (a virtual one) delete it: AWS's console's Remove."""
        await self._call(principal, "DeactivateMFADevice",
                         {**self._user(principal), "SerialNumber": serial}, origin)
        if _kind(serial) == "virtual":
            await self._call(principal, "DeleteVirtualMFADevice", {"SerialNumber": serial},
                             origin)

    # -- the command line -----------------------------------------------------------------------

    async def command_line(self, principal: Principal,
                           origin: Origin = NOWHERE) -> IssuedCredentials:
        """GetSessionToken's credentials for the signed-in user, MFA-flagged when the sign-in
        used MFA: what the user would get from the CLI with the device's code. GetSessionToken
        needs no permission, but a session that a policy denies it explicitly (a
        revoke-sessions policy's Deny of ``*``) gets none: fresh credentials would escape
        the policy's aws:TokenIssueTime."""
        session = principal.session
        assert session is not None
        if await self._authz.revoked(principal, "sts:GetSessionToken",
                                     source_ip=origin.source_ip, user_agent=origin.user_agent,
                                     secure=origin.secure):
            raise AccessDenied(f"User: {principal.arn} is not authorized to perform: "
                               "sts:GetSessionToken with an explicit deny in an "
                               "identity-based policy")
        person = Principal(type=principal.type, account_id=principal.account_id,
                           arn=principal.arn, user_id=principal.user_id, name=principal.name,
                           access_key_id="")
        return self._sts.session_token(person, mfa=session.mfa)


def _kind(serial: str) -> str:
    parsed = arn.parse(serial)
    return "virtual" if parsed is not None and parsed.resource.startswith("mfa/") \
        else "webauthn"
