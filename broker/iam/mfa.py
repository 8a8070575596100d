"""Virtual MFA devices: TOTP seeds sealed by the keyring, enabled for one user or the root user.

A device's code is RFC 6238 TOTP as AWS's virtual devices compute it (HMAC-SHA-1, six digits,
30-second steps), computed by pyotp. A code is accepted within one step either side of the
device's time (the broker's clock plus the drift ``ResyncMFADevice`` measured), and **at most
once per device**: the step a code matched is spent in the ephemeral store every broker process
shares (an atomic put-if-absent), so a code seen once, by any process, opens nothing again.
After ``MAX_FAILURES`` wrong (or reused) codes within ``FAILURE_SECONDS`` a device accepts no
code until that window ends, counted in the same store.

Quotas and messages follow AWS: at most ``MAX_PER_OWNER`` (8) devices enabled for one user or
root; a device enabled for someone cannot be enabled again or deleted; a user with a device
cannot be deleted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import quote

import pyotp
import segno

from broker.aws import arn
from broker.aws.errors import (
    AccessDenied,
    DeleteConflict,
    EntityAlreadyExists,
    InvalidAuthenticationCode,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
)
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import MFA_DEVICE, SECURITY_KEY, MfaDevice, SecurityKey, Tag, User
from broker.iam.policies import merge_tags
from broker.iam.records import Entities, check_tags, missing_user
from broker.keyring import Keyring
from broker.store.base import EphemeralStore, Record, Ref, Spent

SEED_PURPOSE = "mfa-seed"
STEP_SECONDS = 30
MAX_PER_OWNER = 8
MAX_SERIAL = 256  # serialNumberType's maximum in IAM's model
SEED_BYTES = 40  # a Base32 seed of 64 characters, as AWS's
ENABLE_WINDOW = 2  # steps either side for EnableMFADevice's two codes
RESYNC_WINDOW = 20  # ten minutes either side for ResyncMFADevice
_SPENT = "mfa-spent:"
_FAILED = "mfa-failed:"
_LOCKED = "mfa-locked:"
MAX_FAILURES = 5
FAILURE_SECONDS = 300
ISSUER = "Broker"
log = logging.getLogger("broker.mfa")

FAILED = "MultiFactorAuthentication failed with invalid MFA one time pass code."


def missing_device(serial: str) -> NoSuchEntity:
    return NoSuchEntity(f"VirtualMFADevice with serial {serial} doesn't exist.")


class MfaDevices:
    def __init__(self, entities: Entities, keyring: Keyring, clock: Clock,
                 ephemeral: EphemeralStore | None = None) -> None:
        self._entities = entities
        self._keyring = keyring
        self._clock = clock
        self._ephemeral = ephemeral  # None: codes cannot be spent, so none is accepted

    # -- devices --------------------------------------------------------------------------------

    async def create_virtual(self, account: str, name: str, path: str,
                             tags: Sequence[Tag] = ()) -> tuple[MfaDevice, str, bytes]:
        """A new, unassigned device: (the device, its Base32 seed, a QR code PNG of its
        otpauth:// URI). The seed is shown this once."""
        check_tags(tags)
        serial = arn.mfa(account, path, name)
        if len(serial) > MAX_SERIAL:
            # Every action that names a device takes a serial number of at most 256 characters:
            # a longer one would make a device nobody could ever enable or delete.
            raise InvalidInput(f"The device's serial number {serial[:64]}... would be longer "
                               f"than {MAX_SERIAL} characters: use a shorter path and name.")
        seed = new_seed()
        png = qr_png(otpauth_uri(seed, f"{name}@{account}"))  # before anything is stored
        sealed = self._keyring.seal(seed.encode("ascii"), purpose=SEED_PURPOSE, aad=serial)
        device = MfaDevice(account, name, path, self._clock.now(),
                           base64.b64encode(sealed).decode("ascii"), tags=tuple(tags))
        try:
            await self._entities.store.create(device.record())
        except AlreadyExists:
            raise EntityAlreadyExists("MFADevice entity at the same path and name already "
                                      "exists.") from None
        return device, seed, png

    async def get(self, account: str, serial: str) -> MfaDevice:
        """The device of this account with this serial number, or NoSuchEntity."""
        parsed = arn.parse(serial)
        if parsed is None or parsed.account != account or parsed.service != "iam" \
                or not parsed.resource.startswith("mfa/"):
            raise missing_device(serial)
        name = parsed.resource.rsplit("/", 1)[-1]
        device = await self._entities.get(MfaDevice, MfaDevice.ref(account, name),
                                          lambda: missing_device(serial))
        if device.serial != serial:
            raise missing_device(serial)
        return device

    async def listing(self, account: str) -> list[MfaDevice]:
        return sorted(await self._entities.all(MfaDevice, MFA_DEVICE, account),
                      key=lambda d: d.serial)

    async def of_owner(self, account: str, user_name: str | None) -> list[MfaDevice]:
        """The devices enabled for a user (None: the root user), oldest first."""
        return sorted((d for d in await self.listing(account) if d.owned_by(user_name)),
                      key=lambda d: (d.enabled, d.serial))

    async def owned(self, account: str, user_name: str | None) -> int:
        """How many devices — virtual ones and security keys — are enabled for the user (None:
        root): what MAX_PER_OWNER bounds."""
        return len(await self.of_owner(account, user_name)) + \
            len(await self.keys_of(account, user_name))

    # -- security keys (FIDO2 / WebAuthn; the ceremonies are broker.signin.webauthn's) ----------

    async def keys_of(self, account: str, user_name: str | None) -> list[SecurityKey]:
        """The security keys registered for a user (None: the root user), oldest first."""
        keys = await self._entities.all(SecurityKey, SECURITY_KEY, account)
        return sorted((k for k in keys if k.owned_by(user_name)),
                      key=lambda k: (k.created, k.credential_id))

    async def add_key(self, key: SecurityKey) -> None:
        """Register a verified security key, within the owner's quota of devices."""
        if len(key.credential_id) > MAX_SERIAL:
            raise InvalidInput(f"The security key's credential id is longer than {MAX_SERIAL} "
                               "characters, the longest serial number IAM takes.")
        if key.user_name is not None:
            await self._entities.get(User, User.ref(key.account_id, key.user_name),
                                     lambda: missing_user(key.user_name or ""))
        if await self.owned(key.account_id, key.user_name) >= MAX_PER_OWNER:
            raise LimitExceeded(f"Cannot exceed quota for MFADevicesPerUser: {MAX_PER_OWNER}")
        try:
            await self._entities.store.create(key.record())
        except AlreadyExists:
            raise EntityAlreadyExists("MFA Device is already in use.") from None

    async def key(self, account: str, user_name: str | None,
                  credential_id: str) -> SecurityKey | None:
        """The user's security key with this credential id, if it is theirs."""
        if not credential_id or len(credential_id) > MAX_SERIAL:
            return None
        try:
            found = SecurityKey.of(await self._entities.store.get(
                SecurityKey.ref(account, credential_id)))
        except NotFound:
            return None
        return found if found.owned_by(user_name) else None

    async def counted(self, key: SecurityKey, sign_count: int) -> None:
        """Store an assertion's signature counter, which must have grown (when the key keeps
        one): checked again inside the update, so two assertions with one counter value
        cannot both pass."""

        def grow(record: Record) -> dict[str, object]:
            stored = int(record.data.get("sign_count", 0))
            if (sign_count or stored) and sign_count <= stored:
                raise AccessDenied(FAILED)
            return {**record.data, "sign_count": sign_count}

        try:
            await self._entities.store.update(SecurityKey.ref(key.account_id,
                                                              key.credential_id), grow)
        except NotFound:
            raise AccessDenied(FAILED) from None

    async def remove_key(self, account: str, user_name: str | None,
                         credential_id: str) -> bool:
        """Remove the user's security key (DeactivateMFADevice); False if there is none."""
        if await self.key(account, user_name, credential_id) is None:
            return False
        try:
            await self._entities.store.delete(SecurityKey.ref(account, credential_id))
        except NotFound:
            return False
        return True

    async def enable(self, account: str, user_name: str | None, serial: str, code1: str,
                     code2: str) -> None:
        """EnableMFADevice: two consecutive codes of the device, for a user who exists."""
        if user_name is not None:
            await self._entities.get(User, User.ref(account, user_name),
                                     lambda: missing_user(user_name))
        device = await self.get(account, serial)
        if device.assigned:
            raise EntityAlreadyExists("MFA Device is already in use.")
        if await self.owned(account, user_name) >= MAX_PER_OWNER:
            raise LimitExceeded(f"Cannot exceed quota for MFADevicesPerUser: {MAX_PER_OWNER}")
        step = self._consecutive(device, code1, code2, ENABLE_WINDOW)
        if step is None:
            raise InvalidAuthenticationCode("Authentication code for device is not valid.")
        now = self._clock.now()

        def assign(d: MfaDevice) -> MfaDevice:
            if d.assigned:
                raise EntityAlreadyExists("MFA Device is already in use.")
            return replace(d, user_name=user_name, root=user_name is None, enabled=now,
                           drift=0)  # only ResyncMFADevice moves a device's time

        # The two codes, seen once, open nothing more: spent before the device is enabled.
        if not await self._spend_pair(device, step, ENABLE_WINDOW):
            raise InvalidAuthenticationCode("Authentication code for device is not valid.")
        await self._entities.change(MfaDevice, device_ref(device), assign,
                                    lambda: missing_device(serial))

    async def resync(self, account: str, user_name: str | None, serial: str, code1: str,
                     code2: str) -> None:
        device = await self.get(account, serial)
        if not device.owned_by(user_name):
            raise missing_device(serial)
        step = self._consecutive(device, code1, code2, RESYNC_WINDOW)
        if step is None:
            raise InvalidAuthenticationCode("Authentication code for device is not valid.")
        drift = step + 1 - self._step()
        if not await self._spend_pair(device, step, RESYNC_WINDOW):
            raise InvalidAuthenticationCode("Authentication code for device is not valid.")
        await self._entities.change(MfaDevice, device_ref(device),
                                    lambda d: replace(d, drift=drift),
                                    lambda: missing_device(serial))

    async def deactivate(self, account: str, user_name: str | None, serial: str) -> None:
        """Deactivate a virtual device (it stays, unassigned), or remove a security key."""
        if arn.parse(serial) is None and await self.remove_key(account, user_name, serial):
            return
        device = await self.get(account, serial)
        if not device.owned_by(user_name):
            raise NoSuchEntity(f"MFA Device with serial number {serial} does not exist.")
        await self._entities.change(
            MfaDevice, device_ref(device),
            lambda d: replace(d, user_name=None, root=False, enabled=None, drift=0),
            lambda: missing_device(serial))

    async def delete(self, account: str, serial: str) -> None:
        device = await self.get(account, serial)
        if device.assigned:
            raise DeleteConflict("MFA Device is still in use.")
        try:
            await self._entities.store.delete(device_ref(device))
        except NotFound:
            raise missing_device(serial) from None

    async def tag(self, account: str, serial: str, add: Sequence[Tag],
                  remove: Sequence[str]) -> MfaDevice:
        device = await self.get(account, serial)
        return await self._entities.change(
            MfaDevice, device_ref(device),
            lambda d: replace(d, tags=merge_tags(d.tags, tuple(add), tuple(remove))),
            lambda: missing_device(serial))

    # -- keyring rotation -----------------------------------------------------------------------

    async def reseal(self, account: str) -> int:
        """Seal every seed of the account's devices with the keyring's sealing key (so that
        older keys can retire); how many were resealed."""
        sealing, count = self._keyring.sealing.id, 0
        for device in await self.listing(account):
            if self._keyring.key_id_of(base64.b64decode(device.sealed_seed)) == sealing:
                continue
            seed = self._keyring.unseal(base64.b64decode(device.sealed_seed),
                                        purpose=SEED_PURPOSE, aad=device.serial)
            sealed = base64.b64encode(self._keyring.seal(
                seed, purpose=SEED_PURPOSE, aad=device.serial)).decode("ascii")

            def resealed(d: MfaDevice, sealed: str = sealed) -> MfaDevice:
                return replace(d, sealed_seed=sealed)

            def gone(serial: str = device.serial) -> NoSuchEntity:
                return missing_device(serial)

            await self._entities.change(MfaDevice, device_ref(device), resealed, gone)
            count += 1
        return count

    async def sealed_with(self, account: str, key_id: str) -> int:
        return sum(1 for d in await self.listing(account)
                   if self._keyring.key_id_of(base64.b64decode(d.sealed_seed)) == key_id)

    # -- codes ----------------------------------------------------------------------------------

    async def check_code(self, account: str, user_name: str | None, serial: str,
                         code: str) -> None:
        """A code of a device enabled for this user (None: root), spent here; AWS's
        AccessDenied for anything else (no device, someone else's, wrong, reused)."""
        try:
            device = await self.get(account, serial)
        except NoSuchEntity:
            raise AccessDenied(
                "MultiFactorAuthentication failed, unable to validate MFA code. Please verify "
                "your MFA serial number is valid and associated with this user.") from None
        if not device.owned_by(user_name):
            raise AccessDenied(
                "MultiFactorAuthentication failed, unable to validate MFA code. Please verify "
                "your MFA serial number is valid and associated with this user.")
        # Guessing is slow: after MAX_FAILURES wrong codes within FAILURE_SECONDS the device
        # accepts no code, right or wrong, until the window ends (a six-digit code has three
        # chances in a million per guess; unthrottled, a stolen access key could try them all).
        digest = hashlib.sha256(device.serial.encode()).hexdigest()
        if self._ephemeral is None:
            raise AccessDenied(FAILED)
        if await self._ephemeral.get(_LOCKED + digest) is not None:
            raise AccessDenied(FAILED)
        step = self._match(device, code, 1)
        spent = None if step is None else await self._spend(device, step, step - 1)
        if spent is Spent.UNKNOWN:
            # The device's right code, from before the ephemeral store lost its data: refused,
            # as it may have been used, but not counted as a guess (the next code works).
            raise AccessDenied(FAILED)
        if spent is not Spent.NOW:
            if await self._ephemeral.incr(_FAILED + digest, FAILURE_SECONDS) >= MAX_FAILURES:
                await self._ephemeral.put_if_absent(_LOCKED + digest, b"1", FAILURE_SECONDS)
            raise AccessDenied(FAILED)

    def _totp(self, device: MfaDevice) -> pyotp.TOTP:
        sealed = base64.b64decode(device.sealed_seed)
        seed = self._keyring.unseal(sealed, purpose=SEED_PURPOSE, aad=device.serial)
        return totp_of(seed.decode("ascii"))

    def _step(self) -> int:
        return current_step(self._clock)

    def _match(self, device: MfaDevice, code: str, window: int) -> int | None:
        """The step, within ``window`` of the device's time, whose code this is."""
        if not _is_code(code):
            return None
        return matching_step(self._totp(device), self._step() + device.drift, code, window)

    def _consecutive(self, device: MfaDevice, code1: str, code2: str,
                     window: int) -> int | None:
        """The step of ``code1`` when ``code2`` is the next step's code."""
        if not (_is_code(code1) and _is_code(code2)):
            return None
        return consecutive_step(self._totp(device), self._step() + device.drift, code1, code2,
                                window)

    async def _spend(self, device: MfaDevice, step: int, first: int) -> Spent:
        """Mark the step's code used, once across every process. ``first``: the first step,
        on the device's clock, at which it was acceptable (its own step less the window)."""
        if self._ephemeral is None:
            return Spent.BEFORE
        return await spend_code(self._ephemeral, device.serial, step,
                                since_step=first - device.drift)

    async def _spend_pair(self, device: MfaDevice, step: int, window: int) -> bool:
        """Two consecutive codes, both spent now; the second was acceptable as soon as the
        first was (a pair is matched by its first code's step)."""
        first = step - window
        return (await self._spend(device, step, first) is Spent.NOW and
                await self._spend(device, step + 1, first) is Spent.NOW)


# -- TOTP, apart from where a device is kept (IAM's devices above; Identity Center's directory
# users' devices in broker.identitycenter.portal) ---------------------------------------------

def new_seed() -> str:
    """A new device's Base32 seed, as long as AWS's."""
    return base64.b32encode(secrets.token_bytes(SEED_BYTES)).decode("ascii")


def totp_of(seed: str) -> pyotp.TOTP:
    return pyotp.TOTP(seed, digits=6, interval=STEP_SECONDS)


def current_step(clock: Clock) -> int:
    return int(clock.now().timestamp()) // STEP_SECONDS


def _is_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def matching_step(totp: pyotp.TOTP, centre: int, code: str, window: int) -> int | None:
    """The step within ``window`` of ``centre`` whose code this is (the earliest)."""
    if not _is_code(code):
        return None
    found = None
    for step in range(centre - window, centre + window + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step if found is None else found
    return found


def consecutive_step(totp: pyotp.TOTP, centre: int, code1: str, code2: str,
                     window: int) -> int | None:
    """The step of ``code1`` when ``code2`` is the next step's code."""
    if not (_is_code(code1) and _is_code(code2)):
        return None
    for step in range(centre - window, centre + window + 1):
        if hmac.compare_digest(totp.generate_otp(step), code1) and \
                hmac.compare_digest(totp.generate_otp(step + 1), code2):
            return step
    return None


async def spend_code(ephemeral: EphemeralStore, device_id: str, step: int, *,
                     since_step: int) -> Spent:
    """Mark a device's step's code used, once across every process: NOW if this call did.

    ``since_step``: the first step, on the broker's clock, at which the code was acceptable
    (its step less the window and the device's drift). A code acceptable from before the
    ephemeral store lost its data is UNKNOWN (nothing tells whether it was used): refused,
    but not a wrong guess; the device's next code works."""
    key = _SPENT + hashlib.sha256(device_id.encode()).hexdigest() + f":{step}"
    ttl = (2 * RESYNC_WINDOW + 2) * STEP_SECONDS
    spent = await ephemeral.spend(key, ttl, float(since_step * STEP_SECONDS))
    if spent is Spent.UNKNOWN:
        log.info("an MFA code from before the ephemeral store lost its data refused")
    return spent


def device_ref(device: MfaDevice) -> Ref:
    return MfaDevice.ref(device.account_id, device.name)


def otpauth_uri(seed: str, label: str) -> str:
    """The Key Uri Format authenticator apps read from the QR code."""
    return (f"otpauth://totp/{quote(ISSUER)}:{quote(label)}?secret={seed}"
            f"&issuer={quote(ISSUER)}&algorithm=SHA1&digits=6&period={STEP_SECONDS}")


def qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=4, border=4)
    return out.getvalue()
