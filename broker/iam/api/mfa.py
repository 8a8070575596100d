"""IAM actions on virtual MFA devices (broker.iam.mfa): create, enable, resync, deactivate,
delete, list, get and tag them, authorized as AWS authorizes them: the device's ARN
(``arn:aws:iam::ACCOUNT:mfa/PATH/NAME``) for creating, deleting and tagging a device, the
user's for enabling, resyncing, deactivating and listing a user's devices, so that AWS's
"manage your own MFA device" policy with ``${aws:username}`` works verbatim."""

from __future__ import annotations

import base64
from typing import Any

from broker.aws import arn
from broker.aws.errors import NoSuchEntity, ValidationError
from broker.aws.query import Call, Operation, Result
from broker.iam.api.common import (
    IamContext,
    Registry,
    listing_arn,
    paged,
    request_tags,
    resource_tags,
    tags_of,
)
from broker.iam.entities import USER, MfaDevice, SecurityKey
from broker.iam.records import paginate
from broker.principal import PrincipalType


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def owner(call: Call, action: str, user_name: str | None) -> str | None:
        """The user an action is about — the named one, else the caller (None: the root
        user) — once the caller may perform it on that user."""
        caller = call.principal
        if user_name is not None:
            return await ctx.allow_on(call, USER, action, user_name)
        if caller.type is PrincipalType.USER or caller.is_root:
            await ctx.allow(call, action, caller.arn)
            return None if caller.is_root else caller.name
        raise ValidationError("Must specify userName when calling with non-User credentials")

    async def device_of(call: Call, action: str, serial: str) -> MfaDevice:
        """The caller's account's device, once the caller may perform the action on it (on
        a device that does not exist: authorized first, then NoSuchEntity, as AWS)."""
        try:
            device = await iam.mfa.get(call.principal.account_id, serial)
        except NoSuchEntity:
            await ctx.allow(call, action, serial)
            raise
        await ctx.allow(call, action, device.serial, resource_tags(device.tags))
        return device

    def listed(device: MfaDevice | SecurityKey) -> dict[str, Any]:
        root = device.user_name is None if isinstance(device, SecurityKey) else device.root
        return {"UserName": "root" if root else device.user_name,
                "SerialNumber": device.serial, "EnableDate": device.enabled}

    @ops.action("CreateVirtualMFADevice")
    async def create(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        path, tags = p.get("Path", "/"), tags_of(p)
        name = p["VirtualMFADeviceName"]
        await ctx.allow(call, "CreateVirtualMFADevice", arn.mfa(account, path, name),
                        request_tags(tags))
        device, seed, png = await iam.mfa.create_virtual(account, name, path, tags)
        out: dict[str, Any] = {
            "SerialNumber": device.serial,
            # Blobs on the wire are base64: botocore gives back the seed's own characters.
            "Base32StringSeed": base64.b64encode(seed.encode("ascii")).decode("ascii"),
            "QRCodePNG": base64.b64encode(png).decode("ascii"),
        }
        if device.tags:
            out["Tags"] = [t.wire() for t in device.tags]
        return {"VirtualMFADevice": out}

    @ops.action("EnableMFADevice")
    async def enable(call: Call) -> Result:
        p = call.params
        name = await owner(call, "EnableMFADevice", p["UserName"])
        await iam.mfa.enable(call.principal.account_id, name, p["SerialNumber"],
                             p["AuthenticationCode1"], p["AuthenticationCode2"])
        return None

    @ops.action("ResyncMFADevice")
    async def resync(call: Call) -> Result:
        p = call.params
        name = await owner(call, "ResyncMFADevice", p["UserName"])
        await iam.mfa.resync(call.principal.account_id, name, p["SerialNumber"],
                             p["AuthenticationCode1"], p["AuthenticationCode2"])
        return None

    @ops.action("DeactivateMFADevice")
    async def deactivate(call: Call) -> Result:
        p = call.params
        name = await owner(call, "DeactivateMFADevice", p.get("UserName"))
        await iam.mfa.deactivate(call.principal.account_id, name, p["SerialNumber"])
        return None

    @ops.action("DeleteVirtualMFADevice")
    async def delete(call: Call) -> Result:
        device = await device_of(call, "DeleteVirtualMFADevice", call.params["SerialNumber"])
        await iam.mfa.delete(call.principal.account_id, device.serial)
        return None

    @ops.action("ListMFADevices")
    async def list_devices(call: Call) -> Result:
        p = call.params
        name = await owner(call, "ListMFADevices", p.get("UserName"))
        account = call.principal.account_id
        devices: list[MfaDevice | SecurityKey] = [*await iam.mfa.of_owner(account, name),
                                                  *await iam.mfa.keys_of(account, name)]
        page = paginate(devices, lambda d: d.serial, p.get("Marker"), p.get("MaxItems"))
        return paged(page, "MFADevices", listed)

    @ops.action("ListVirtualMFADevices")
    async def list_virtual(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        await ctx.allow(call, "ListVirtualMFADevices", listing_arn(account, "mfa"))
        status = p.get("AssignmentStatus", "Any")
        devices = [d for d in await iam.mfa.listing(account)
                   if status == "Any" or d.assigned == (status == "Assigned")]
        users = {}
        for d in devices:
            if d.user_name is not None and d.user_name not in users:
                users[d.user_name] = (await iam.get_user(account, d.user_name)).wire(
                    listing=True)
        page = paginate(devices, lambda d: d.serial, p.get("Marker"), p.get("MaxItems"))

        def render(d: MfaDevice) -> dict[str, Any]:
            out: dict[str, Any] = {"SerialNumber": d.serial}
            if d.root:
                root = arn.root(account)
                out["User"] = {"UserId": account, "Arn": root, "Path": "/", "UserName": "",
                               "CreateDate": d.enabled}
            elif d.user_name is not None:
                out["User"] = users[d.user_name]
            if d.enabled is not None:
                out["EnableDate"] = d.enabled
            if d.tags:
                out["Tags"] = [t.wire() for t in d.tags]
            return out

        return paged(page, "VirtualMFADevices", render)

    @ops.action("GetMFADevice")
    async def get(call: Call) -> Result:
        p = call.params
        name = await owner(call, "GetMFADevice", p.get("UserName"))
        device = await iam.mfa.get(call.principal.account_id, p["SerialNumber"])
        if not device.owned_by(name):
            raise NoSuchEntity(f"MFA Device with serial number {p['SerialNumber']} does not "
                               "exist.")
        return {"UserName": listed(device)["UserName"], "SerialNumber": device.serial,
                "EnableDate": device.enabled}

    @ops.action("TagMFADevice")
    async def tag(call: Call) -> Result:
        tags = tags_of(call.params)
        device = await device_of(call, "TagMFADevice", call.params["SerialNumber"])
        await ctx.allow(call, "TagMFADevice", device.serial, request_tags(tags))
        await iam.mfa.tag(call.principal.account_id, device.serial, tags, ())
        return None

    @ops.action("UntagMFADevice")
    async def untag(call: Call) -> Result:
        keys = tuple(call.params["TagKeys"])
        device = await device_of(call, "UntagMFADevice", call.params["SerialNumber"])
        await iam.mfa.tag(call.principal.account_id, device.serial, (), keys)
        return None

    @ops.action("ListMFADeviceTags")
    async def list_tags(call: Call) -> Result:
        p = call.params
        device = await device_of(call, "ListMFADeviceTags", p["SerialNumber"])
        page = paginate(list(device.tags), lambda t: t.key, p.get("Marker"), p.get("MaxItems"))
        return paged(page, "Tags", lambda t: t.wire())

    return ops.operations

