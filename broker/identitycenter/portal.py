"""The access portal's sign-in: Identity Center's directory users, their passwords and MFA
devices, and their portal sessions (the web pages are broker.web.portal's).

A directory user's credentials are a record of their own (kind ``sso_credential``, in the
instance's owner account, key ``{identity store id}/{user id}``): an Argon2id password hash
(broker.iam.logins'), whether it must be changed (a one-time password from ``broker sso
reset-password``, which expires after ``ONE_TIME_DAYS``), or, instead, an invitation (the
SHA-256 of the secret of a link e-mailed by the same command when ``sso.smtp_url`` is set:
the link's page sets the password, once, within ``ONE_TIME_DAYS``), and TOTP devices whose
seeds are sealed by the keyring. The user is the directory's (broker.identitycenter.directory):
a user the directory no longer has (or has disabled) signs in to nothing, and every session of
theirs stops at once, because every use of a session asks the directory again.

Sign-in follows the broker's own (broker.signin.password) and shares its machinery:

* the user name, then the password; every refusal of that step is one sentence (``REFUSED``),
  an unknown user costs the same Argon2id verification as a known one, and failures are
  counted by the broker's ``Throttle`` per user and per source address (a user is named
  ``sso:{identity store id}`` / user name there: no IAM account id looks like it);
* a one-time password leads to a forced change (the new password twice, Identity Center's
  password rules);
* then MFA: a code of one of the user's TOTP devices (RFC 6238 as broker.iam.mfa computes it,
  each code used once across every process), or an assertion of one of their security keys
  (broker.signin.webauthn's ceremonies, over a challenge the pending step keeps, the signature
  counter growing); a user without a device registers a TOTP device first (Identity Center's
  default: "require them to register an MFA device at sign in"): its seed is shown once and
  one code of it enables it. Security keys are registered from the portal, signed in;
* the half-signed-in state between steps is a record behind a random handle, bound to the
  browser's sign-in cookie, taken once, for five minutes.

A portal session is a record in the ephemeral store under the SHA-256 of a random cookie, for
the session duration (Identity Center's default, eight hours); signing out deletes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote, urlsplit

from broker.aws.errors import AccessDenied, InvalidInput, NoSuchEntity
from broker.clock import Clock
from broker.errors import AlreadyExists, NotFound
from broker.iam.entities import PasswordPolicy, decode, encode
from broker.iam.logins import check_against, hash_password, verify
from broker.iam.mfa import (
    current_step,
    matching_step,
    new_seed,
    otpauth_uri,
    spend_code,
    totp_of,
)
from broker.identitycenter.directory import Directory, DirectoryUser
from broker.identitycenter.instances import Instance, Instances
from broker.identitycenter.sources import EXTERNAL, ExternalSignIn, IdentitySources
from broker.keyring import Keyring
from broker.mail import Mailer
from broker.signin.password import Throttle, Who
from broker.signin.webauthn import RelyingParty, credential_id_of
from broker.store.base import EntityStore, EphemeralStore, Record, Ref, Spent

CREDENTIAL = "sso_credential"
SESSION_SECONDS = 8 * 3600  # Identity Center's default session duration
PENDING_SECONDS = 300
ONE_TIME_DAYS = 7
MAX_DEVICES = 8
SEED_PURPOSE = "sso-mfa-seed"
MAX_NAME = 128  # identitystore's UserName
REFUSED = "Your user name or password is incorrect. Please try again."
MFA_REFUSED = "The MFA code is not valid. Please try again."
EXPIRED = "The sign-in has expired or was already completed: sign in again."
INVITATION_REFUSED = ("This invitation link is not valid: it has expired, was already used, "
                      "or was replaced by a newer one. Ask your administrator for a new "
                      "invitation.")
MAX_TOKEN = 256
# Identity Center's password rules: 8 to 64 characters, of all four kinds.
RULES = PasswordPolicy(minimum_length=8, require_symbols=True, require_numbers=True,
                       require_uppercase=True, require_lowercase=True)
MAX_PASSWORD = 64
_STEP = "portal-step:"
_SESSION = "portal-session:"
_KEY_CHALLENGE = "portal-webauthn-registration:"
# Verified against when there is no user, so that an unknown name costs what a known one does.
_NOBODY = hash_password(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class TotpDevice:
    device_id: str
    sealed_seed: str  # base64 of the keyring's sealing, bound to the device id
    created: datetime


@dataclass(frozen=True)
class PortalKey:
    """A security key (FIDO2 / WebAuthn), registered from the portal."""

    credential_id: str  # base64url
    name: str
    public_key: str  # base64 of the COSE key
    sign_count: int
    created: datetime


@dataclass(frozen=True)
class Credential:
    """A directory user's password and MFA devices."""

    password_hash: str | None = None
    must_change: bool = False
    expires: datetime | None = None  # a one-time password's end
    invitation: str | None = None  # the SHA-256 of an invitation link's secret, until used
    invitation_expires: datetime | None = None
    changed: datetime | None = None
    last_used: datetime | None = None
    devices: tuple[TotpDevice, ...] = ()
    keys: tuple[PortalKey, ...] = ()


@dataclass(frozen=True)
class Step:
    """What comes after a sign-in step: ``change`` (the new password), ``enrol`` (register a
    TOTP device: ``seed`` and ``uri`` shown once), ``mfa`` (a code), or ``signed-in``
    (``handle`` is then the session cookie, for ``seconds``)."""

    stage: str
    handle: str
    user_name: str
    seed: str | None = None
    uri: str | None = None
    seconds: int = 0
    totp: bool = False  # the MFA step takes a code (the user has a TOTP device)
    webauthn: str | None = None  # the MFA step's security key options (JSON), if any


@dataclass(frozen=True)
class PortalSession:
    instance: Instance
    user: DirectoryUser
    expires_at: int  # epoch seconds
    mfa: bool
    # AccessControl key → value the external identity provider asserted (None: the directory)
    asserted: Mapping[str, str] | None = None
    source: str = ""  # the stamp of the identity source it was made under

    @property
    def external(self) -> bool:
        """Whether an external identity provider signed the person in (its MFA is theirs)."""
        return self.asserted is not None

    @property
    def expiration(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)


def _own_mfa(session: PortalSession) -> None:
    """The portal's MFA devices are the directory's: a person an external identity provider
    signed in has theirs there (as on AWS), and registers none here."""
    if session.external:
        raise AccessDenied("Your identity provider signs you in and keeps your MFA devices: "
                           "register security keys there.")


def credential_ref(instance: Instance, user_id: str) -> Ref:
    return Ref(CREDENTIAL, instance.account_id, f"{instance.identity_store_id}/{user_id}")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _who(instance: Instance, user_name: str) -> Who:
    return Who(f"sso:{instance.identity_store_id}", user_name)


def check_password(password: str) -> None:
    """Identity Center's rules for a password (PasswordPolicyViolation's messages)."""
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"The password is longer than {MAX_PASSWORD} characters.")
    check_against(RULES, password)


def one_time_password() -> str:
    """A random password of 20 characters that meets the rules."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(16))
    return (body + secrets.choice(string.ascii_uppercase) + secrets.choice(string.digits)
            + secrets.choice("!@#$%^&*") + secrets.choice(string.ascii_lowercase))


class Portal:
    def __init__(self, store: EntityStore, ephemeral: EphemeralStore, keyring: Keyring,
                 clock: Clock, directory: Directory, instances: Instances, throttle: Throttle,
                 account_ids: Callable[[], Awaitable[list[str]]], *,
                 relying_party: RelyingParty, session_seconds: int = SESSION_SECONDS,
                 mailer: Mailer | None = None, public_url: str = "",
                 sources: IdentitySources | None = None) -> None:
        self._store = store
        self._ephemeral = ephemeral
        self._keyring = keyring
        self._clock = clock
        self._directory = directory
        self.instances = instances
        self.throttle = throttle
        self._account_ids = account_ids
        self._rp = relying_party
        self.session_seconds = session_seconds
        self.mailer = mailer  # invitations are e-mailed when set (sso.smtp_url)
        self._public_url = public_url.rstrip("/")
        self.sources = sources  # the instances' identity sources (sources.py)

    async def _stamp(self, instance: Instance, *, external: bool) -> str:
        """The stamp of the instance's identity source, which a new session keeps; AccessDenied
        when the source is not the kind this sign-in is (the directory's password sign-in,
        one-time passwords and invitations are refused while the source is external)."""
        if self.sources is None:
            return ""
        source = await self.sources.get(instance)
        if source.external != external:
            raise AccessDenied(EXTERNAL if source.external else
                               "This access portal signs people in with the directory's "
                               "passwords now: sign in again.")
        return source.stamp

    async def _user(self, instance: Instance, user_id: str) -> DirectoryUser | None:
        """The directory's user, if it has them and they are not disabled."""
        return await self._directory.active_user(instance.account_id,
                                                 instance.identity_store_id, user_id)

    # -- instances ------------------------------------------------------------------------------

    async def instance(self, identity_store_id: str) -> Instance:
        """The instance whose identity store this is; NoSuchEntity for any other id."""
        found = None
        if identity_store_id.startswith("d-") and len(identity_store_id) <= 64 and \
                identity_store_id[2:].isascii() and identity_store_id[2:].isalnum():
            found = await self.instances.by_store(identity_store_id)
        if found is None:
            raise NoSuchEntity(f"There is no access portal for the directory "
                               f"{identity_store_id[:64]!r}: check the address you were given.")
        return found

    async def only_instance(self) -> Instance | None:
        """The broker's instance, when it has exactly one (``/start`` goes straight to it)."""
        found = []
        for account_id in await self._account_ids():
            instance = await self.instances.of_account(account_id)
            if instance is not None:
                found.append(instance)
                if len(found) > 1:
                    return None
        return found[0] if found else None

    # -- credentials ----------------------------------------------------------------------------

    async def credential(self, instance: Instance, user_id: str) -> Credential:
        try:
            return decode(Credential, (await self._store.get(
                credential_ref(instance, user_id))).data)
        except NotFound:
            return Credential()

    async def _change_credential(self, instance: Instance, user_id: str,
                                 change: Callable[[Credential], Credential]) -> Credential:
        ref = credential_ref(instance, user_id)
        for _ in range(2):
            try:
                record = await self._store.update(
                    ref, lambda r: encode(change(decode(Credential, r.data))))
                return decode(Credential, record.data)
            except NotFound:
                first: Credential = change(Credential())
                try:
                    await self._store.create(Record(kind=ref.kind, account=ref.account,
                                                    key=ref.key, data=encode(first)))
                    return first
                except AlreadyExists:  # made meanwhile: change that one
                    continue
        raise AccessDenied(EXPIRED)  # made and deleted meanwhile, twice

    async def reset_password(self, identity_store_id: str, user_name: str, *,
                             remove_mfa: bool = False) -> str:
        """A one-time password for the user (``broker sso reset-password``): it replaces any
        password they had, must be changed at the next sign-in, and expires after
        ONE_TIME_DAYS. The user's MFA devices stay, unless ``remove_mfa`` (a lost device:
        the next sign-in registers a new one)."""
        instance = await self.instance(identity_store_id)
        await self._stamp(instance, external=False)
        user = await self._directory.user_by_name(instance.account_id, identity_store_id,
                                                  user_name)
        if user is None:
            raise NoSuchEntity(f"The directory {identity_store_id} has no user named "
                               f"{user_name[:MAX_NAME]!r}.")
        password = one_time_password()
        hashed = hash_password(password)
        now = self._clock.now()
        await self._change_credential(instance, user.user_id, lambda c: replace(
            c, password_hash=hashed, must_change=True, changed=now,
            expires=now + timedelta(days=ONE_TIME_DAYS), invitation=None,
            invitation_expires=None,
            devices=() if remove_mfa else c.devices, keys=() if remove_mfa else c.keys))
        await self.throttle.unlock(f"sso:{identity_store_id}", user.user_name.lower())
        return password

    # -- invitations ----------------------------------------------------------------------------

    async def invite(self, identity_store_id: str, user_name: str, *,
                     remove_mfa: bool = False) -> str:
        """E-mail the user (their primary address in the directory) a link that sets their
        password, once, within ONE_TIME_DAYS; the address it went to. Once the server took
        the message, the user's password is gone (as with a one-time password) and a newer
        invitation or one-time password replaces this one. When it is not sent (MailError),
        nothing changed: the invitation recorded before sending is withdrawn."""
        if self.mailer is None:
            raise InvalidInput("Invitations need an SMTP server: set sso.smtp_url.")
        instance = await self.instance(identity_store_id)
        await self._stamp(instance, external=False)
        user = await self._directory.user_by_name(instance.account_id, identity_store_id,
                                                  user_name)
        if user is None:
            raise NoSuchEntity(f"The directory {identity_store_id} has no user named "
                               f"{user_name[:MAX_NAME]!r}.")
        address = user.primary_email
        if not address:
            raise InvalidInput(f"The user {user.user_name!r} has no e-mail address in the "
                               f"directory: add one (identitystore UpdateUser, Emails) to "
                               f"invite them.")
        secret = secrets.token_urlsafe(32)
        digest = _digest(secret)
        link = (f"{self._public_url}/start/{quote(identity_store_id, safe='')}/invitation"
                f"?token={quote(user.user_id, safe='')}.{secret}")
        message = self._invitation_message(instance, user, address, link)
        now = self._clock.now()
        await self._change_credential(instance, user.user_id, lambda c: replace(
            c, invitation=digest, invitation_expires=now + timedelta(days=ONE_TIME_DAYS)))
        try:
            await self.mailer.send(message)
        except BaseException:
            await self._change_credential(instance, user.user_id, lambda c: replace(
                c, invitation=None, invitation_expires=None) if c.invitation == digest else c)
            raise

        def sent(c: Credential) -> Credential:
            if c.invitation != digest:  # replaced meanwhile: that one's state stands
                return c
            return replace(c, password_hash=None, must_change=False, expires=None, changed=now,
                           devices=() if remove_mfa else c.devices,
                           keys=() if remove_mfa else c.keys)

        await self._change_credential(instance, user.user_id, sent)
        await self.throttle.unlock(f"sso:{identity_store_id}", user.user_name.lower())
        return address

    def _invitation_message(self, instance: Instance, user: DirectoryUser, address: str,
                            link: str) -> EmailMessage:
        assert self.mailer is not None
        message = EmailMessage()
        try:
            message["From"] = self.mailer.sender
            message["To"] = address
        except ValueError:  # a line break in the address
            raise InvalidInput(f"The user {user.user_name!r} has an e-mail address that "
                               f"cannot be used.") from None
        message["Subject"] = "Invitation to join AWS IAM Identity Center"
        message["Date"] = format_datetime(self._clock.now())
        message["Message-ID"] = make_msgid(domain=urlsplit(self._public_url).hostname
                                           or "localhost")
        portal = f" of {instance.name}" if instance.name else ""
        message.set_content(
            f"Hello {user.display_name or user.user_name},\n\n"
            f"You have been invited to the AWS access portal{portal}.\n\n"
            f"Your user name: {user.user_name}\n\n"
            f"Accept the invitation and choose your password here (the link works once, "
            f"within {ONE_TIME_DAYS} days):\n\n{link}\n\n"
            f"Afterwards, sign in at {self._public_url}/start/{instance.identity_store_id}\n\n"
            f"If you did not expect this invitation, ignore this message.\n")
        return message

    async def invitation(self, instance: Instance, token: str) -> DirectoryUser:
        """The user whose live invitation this link's token is (the page asks them for a
        password); AccessDenied(INVITATION_REFUSED) for any other token."""
        user, _ = await self._invited(instance, token)
        return user

    async def accept_invitation(self, instance: Instance, token: str, new: str,
                                confirm: str, browser: str) -> Step:
        """The password chosen on the invitation's page (the rules of a forced change); the
        invitation is used up, and the sign-in goes on as after a first password: MFA, a
        device registered if the user has none."""
        user, digest = await self._invited(instance, token)
        if new != confirm:
            raise InvalidInput("The new password and its confirmation differ.")
        check_password(new)
        hashed = hash_password(new)
        now = self._clock.now()

        def accept(c: Credential) -> Credential:
            # Checked again inside the update: two pages of one link cannot both set it.
            if not _live_invitation(c, digest, now):
                raise AccessDenied(INVITATION_REFUSED)
            return replace(c, password_hash=hashed, must_change=False, expires=None,
                           invitation=None, invitation_expires=None, changed=now)

        credential = await self._change_credential(instance, user.user_id, accept)
        return await self._after_password(instance, user, credential, browser)

    async def _invited(self, instance: Instance, token: str) -> tuple[DirectoryUser, str]:
        await self._stamp(instance, external=False)
        user_id, _, secret = token.strip().partition(".")
        if not secret or len(token) > MAX_TOKEN or not user_id.isascii() or \
                not all(c.isalnum() or c == "-" for c in user_id):
            raise AccessDenied(INVITATION_REFUSED)
        user = await self._user(instance, user_id)
        digest = _digest(secret)
        if user is None or not _live_invitation(
                await self.credential(instance, user_id), digest, self._clock.now()):
            raise AccessDenied(INVITATION_REFUSED)
        return user, digest

    # -- the first step: the password -----------------------------------------------------------

    async def password(self, instance: Instance, user_name: str, password: str, *,
                       source: str | None, browser: str) -> Step:
        """Check the password; AccessDenied(REFUSED) for every failure alike."""
        await self._stamp(instance, external=False)
        name = user_name.strip()
        user = None
        if 0 < len(name) <= MAX_NAME:
            user = await self._directory.user_by_name(instance.account_id,
                                                      instance.identity_store_id, name)
            if user is not None and not user.active:
                user = None  # refused as an unknown user is, after the same verification
        who = _who(instance, (user.user_name if user else name).lower())
        credential = await self.credential(instance, user.user_id) if user else Credential()
        locked = await self.throttle.locked(who, source)
        matches = verify(credential.password_hash or _NOBODY, password)  # always run
        expired = credential.expires is not None and self._clock.now() >= credential.expires
        if locked or user is None or credential.password_hash is None or not matches \
                or expired:
            await self.throttle.failed(who, source)
            raise AccessDenied(REFUSED)
        if credential.must_change:
            return await self._pending("change", instance, user, browser)
        return await self._after_password(instance, user, credential, browser)

    async def _after_password(self, instance: Instance, user: DirectoryUser, credential: Credential,
                              browser: str) -> Step:
        if credential.devices or credential.keys:
            options, challenge = self._rp.authentication_options(
                [k.credential_id for k in credential.keys]) if credential.keys else (None, "")
            # A security key's assertion must sign this challenge: used at most once, as the
            # pending record is taken once.
            step = await self._pending("mfa", instance, user, browser, challenge=challenge)
            return replace(step, totp=bool(credential.devices), webauthn=options)
        seed, device_id = new_seed(), secrets.token_hex(8)
        sealed = base64.b64encode(self._keyring.seal(
            seed.encode("ascii"), purpose=SEED_PURPOSE, aad=f"{user.user_id}/{device_id}")
        ).decode("ascii")
        step = await self._pending("enrol", instance, user, browser,
                                   device=(device_id, sealed))
        label = f"{user.user_name}@{instance.identity_store_id}"
        return replace(step, seed=seed, uri=otpauth_uri(seed, label))

    # -- a forced change ------------------------------------------------------------------------

    async def change(self, handle: str | None, browser: str | None, new: str,
                     confirm: str) -> Step:
        """The new password of a sign-in with a one-time password: twice, by the rules, not
        the one-time password again; then MFA."""
        instance, user, pending = await self._take_pending("change", handle, browser)
        assert browser is not None
        if new != confirm:
            raise InvalidInput("The new password and its confirmation differ.")
        check_password(new)
        credential = await self.credential(instance, user.user_id)
        if credential.password_hash is not None and verify(credential.password_hash, new):
            raise InvalidInput("Choose a new password: not the one you signed in with.")
        if await self._ephemeral.take(pending) is None:
            raise AccessDenied(EXPIRED)
        hashed = hash_password(new)
        now = self._clock.now()
        credential = await self._change_credential(instance, user.user_id, lambda c: replace(
            c, password_hash=hashed, must_change=False, expires=None, changed=now))
        return await self._after_password(instance, user, credential, browser)

    # -- MFA ------------------------------------------------------------------------------------

    async def enrol(self, handle: str | None, browser: str | None, code: str,
                    source: str | None) -> Step:
        """A code of the device the enrolment showed: it is the user's, and they are signed
        in with MFA."""
        instance, user, key = await self._take_pending("enrol", handle, browser)
        raw = await self._ephemeral.get(key)
        device_id, sealed = json.loads(raw).get("device") if raw else ("", "")
        if not sealed:
            raise AccessDenied(EXPIRED)
        seed = self._keyring.unseal(base64.b64decode(sealed), purpose=SEED_PURPOSE,
                                    aad=f"{user.user_id}/{device_id}").decode("ascii")
        step = matching_step(totp_of(seed), current_step(self._clock), code.strip(), 1)
        spent = None if step is None else await spend_code(self._ephemeral, _device_key(
            instance, user.user_id, device_id), step, since_step=step - 1)
        if spent is not Spent.NOW:
            if spent is not Spent.UNKNOWN:  # a right code the broker cannot vouch for: no guess
                await self.throttle.failed(_who(instance, user.user_name.lower()), source)
            raise AccessDenied("That is not the code the new device shows now: enter the code "
                               "your authenticator app shows for this account.")
        if await self._ephemeral.take(key) is None:
            raise AccessDenied(EXPIRED)
        device = TotpDevice(device_id, sealed, self._clock.now())

        def add(c: Credential) -> Credential:
            if len(c.devices) >= MAX_DEVICES:
                raise InvalidInput(f"A user may have at most {MAX_DEVICES} MFA devices.")
            return replace(c, devices=(*c.devices, device))

        await self._change_credential(instance, user.user_id, add)
        return await self._signed_in(instance, user, mfa=True)

    async def code(self, handle: str | None, browser: str | None, code: str,
                   source: str | None, assertion: str = "") -> Step:
        """A code of one of the user's devices, or a security key's assertion over the
        step's challenge, for this browser's pending sign-in."""
        instance, user, key = await self._take_pending("mfa", handle, browser)
        who = _who(instance, user.user_name.lower())
        if await self.throttle.locked(who, source):
            await self._ephemeral.delete(key)
            raise AccessDenied(MFA_REFUSED)
        if assertion:
            raw = await self._ephemeral.get(key)
            challenge = str(json.loads(raw).get("challenge", "")) if raw else ""
            try:
                await self._assert_key(instance, user, assertion, challenge)
            except AccessDenied:
                await self.throttle.failed(who, source)
                raise AccessDenied(MFA_REFUSED) from None
            if await self._ephemeral.take(key) is None:  # taken once
                raise AccessDenied(EXPIRED)
            return await self._signed_in(instance, user, mfa=True)
        centre = current_step(self._clock)
        unknown = False
        for device in (await self.credential(instance, user.user_id)).devices:
            seed = self._keyring.unseal(base64.b64decode(device.sealed_seed),
                                        purpose=SEED_PURPOSE,
                                        aad=f"{user.user_id}/{device.device_id}")
            step = matching_step(totp_of(seed.decode("ascii")), centre, code.strip(), 1)
            if step is None:
                continue
            spent = await spend_code(
                self._ephemeral, _device_key(instance, user.user_id, device.device_id),
                step, since_step=step - 1)
            if spent is Spent.NOW:
                if await self._ephemeral.take(key) is None:  # taken once
                    raise AccessDenied(EXPIRED)
                return await self._signed_in(instance, user, mfa=True)
            unknown = unknown or spent is Spent.UNKNOWN
        if not unknown:  # a right code from before the store lost its data is no guess
            await self.throttle.failed(who, source)
        raise AccessDenied(MFA_REFUSED)

    async def _assert_key(self, instance: Instance, user: DirectoryUser, assertion: str,
                          challenge: str) -> None:
        credential, credential_id = credential_id_of(assertion)
        found = [k for k in (await self.credential(instance, user.user_id)).keys
                 if k.credential_id == credential_id]
        if not found:
            raise AccessDenied(MFA_REFUSED)
        count = self._rp.verify_authentication(credential, challenge, found[0].public_key,
                                               found[0].sign_count)

        def counted(c: Credential) -> Credential:
            # Checked again inside the update: two assertions with one counter value (a
            # cloned key) cannot both pass.
            keys = []
            for k in c.keys:
                if k.credential_id == credential_id:
                    if (count or k.sign_count) and count <= k.sign_count:
                        raise AccessDenied(MFA_REFUSED)
                    k = replace(k, sign_count=count)
                keys.append(k)
            return replace(c, keys=tuple(keys))

        await self._change_credential(instance, user.user_id, counted)

    # -- security keys, registered from the portal ----------------------------------------------

    async def key_options(self, session: PortalSession, cookie: str) -> str:
        """Registration options for a new security key (JSON); the challenge is kept for
        this portal session, five minutes, used once."""
        _own_mfa(session)
        credential = await self.credential(session.instance, session.user.user_id)
        handle = hashlib.sha256(
            f"{session.instance.identity_store_id}/{session.user.user_id}".encode()).digest()
        options, challenge = self._rp.registration_options(
            handle, session.user.user_name, session.user.display_name or session.user.user_name,
            [k.credential_id for k in credential.keys])
        await self._ephemeral.set(_KEY_CHALLENGE + _digest(cookie),
                                  base64.b64encode(challenge), PENDING_SECONDS)
        return options

    async def add_key(self, session: PortalSession, cookie: str, name: str,
                      response: str) -> PortalKey:
        """Verify the browser's registration response against this session's challenge and
        register the key for the signed-in user."""
        _own_mfa(session)
        if not name or len(name) > 64 or not all(c.isalnum() or c in "+=,.@_ -" for c in name):
            raise InvalidInput("Name the security key: 1 to 64 letters, digits, spaces or "
                               "+=,.@_- characters.")
        challenge = await self._ephemeral.take(_KEY_CHALLENGE + _digest(cookie))  # used once
        if challenge is None:
            raise AccessDenied("The security key registration has expired: begin it again.")
        verified = self._rp.verify_registration(response, base64.b64decode(challenge))
        key = PortalKey(
            base64.urlsafe_b64encode(verified.credential_id).rstrip(b"=").decode("ascii"),
            name, base64.b64encode(verified.credential_public_key).decode("ascii"),
            int(verified.sign_count), self._clock.now())

        def add(c: Credential) -> Credential:
            if len(c.devices) + len(c.keys) >= MAX_DEVICES:
                raise InvalidInput(f"A user may have at most {MAX_DEVICES} MFA devices.")
            if any(k.credential_id == key.credential_id for k in c.keys):
                raise InvalidInput("That security key is registered already.")
            return replace(c, keys=(*c.keys, key))

        await self._change_credential(session.instance, session.user.user_id, add)
        return key

    # -- sessions -------------------------------------------------------------------------------

    async def _signed_in(self, instance: Instance, user: DirectoryUser, *, mfa: bool,
                         external: ExternalSignIn | None = None) -> Step:
        stamp = await self._stamp(instance, external=external is not None)
        if external is not None and not hmac.compare_digest(stamp, external.stamp):
            raise AccessDenied("The access portal's identity source changed during the "
                               "sign-in: sign in again.")
        now = self._clock.now()
        if external is None:
            await self._change_credential(instance, user.user_id,
                                          lambda c: replace(c, last_used=now))
        cookie = secrets.token_urlsafe(32)
        seconds = self.session_seconds
        if external is not None and external.ends_at is not None:  # the IdP's session ends it
            seconds = max(1, min(seconds, int((external.ends_at - now).total_seconds())))
        record = {"account": instance.account_id, "store": instance.identity_store_id,
                  "user": user.user_id, "mfa": mfa,
                  "expires": int(now.timestamp()) + seconds, "source": stamp,
                  "asserted": dict(external.asserted) if external is not None else None}
        await self._ephemeral.set(_SESSION + _digest(cookie), json.dumps(record).encode(),
                                  seconds)
        return Step("signed-in", cookie, user.user_name, seconds=seconds)

    async def external_sign_in(self, instance: Instance, signed: ExternalSignIn) -> Step:
        """A portal session for a person the instance's external identity provider signed in
        (sources.py verified them; MFA is the provider's business)."""
        user = await self._user(instance, signed.user.user_id)
        if user is None:
            raise AccessDenied("Your user is no longer in this access portal's directory.")
        return await self._signed_in(instance, user, mfa=False, external=signed)

    async def session(self, cookie: str | None) -> PortalSession | None:
        """This cookie's live session, if its instance and its user still exist."""
        if not cookie or len(cookie) > 128:
            return None
        raw = await self._ephemeral.get(_SESSION + _digest(cookie))
        if raw is None:
            return None
        record = json.loads(raw)
        if int(record["expires"]) <= self._clock.now().timestamp():
            return None
        instance = await self.instances.by_store(str(record["store"]))
        if instance is None or instance.account_id != record["account"]:
            return None
        if self.sources is not None and not hmac.compare_digest(
                str(record.get("source") or ""), (await self.sources.get(instance)).stamp):
            return None  # made under another identity source: switching ended it
        user = await self._user(instance, str(record["user"]))
        if user is None:
            await self._ephemeral.delete(_SESSION + _digest(cookie))
            return None
        asserted = record.get("asserted")
        return PortalSession(instance, user, int(record["expires"]), bool(record["mfa"]),
                             {str(k): str(v) for k, v in asserted.items()}
                             if isinstance(asserted, dict) else None,
                             str(record.get("source") or ""))

    async def sign_out(self, cookie: str | None) -> None:
        if cookie and len(cookie) <= 128:
            await self._ephemeral.delete(_SESSION + _digest(cookie))

    # -- the steps between ----------------------------------------------------------------------

    async def _pending(self, stage: str, instance: Instance, user: DirectoryUser, browser: str,
                       *, device: tuple[str, str] = ("", ""), challenge: str = "") -> Step:
        handle = secrets.token_urlsafe(32)
        record = {"stage": stage, "account": instance.account_id,
                  "store": instance.identity_store_id, "user": user.user_id,
                  "browser": _digest(browser), "device": list(device),
                  "challenge": challenge}
        await self._ephemeral.set(_STEP + _digest(handle), json.dumps(record).encode(),
                                  PENDING_SECONDS)
        return Step(stage, handle, user.user_name)

    async def _take_pending(self, stage: str, handle: str | None,
                            browser: str | None) -> tuple[Instance, DirectoryUser, str]:
        """(instance, user, the record's key) of this browser's pending step of this stage;
        EXPIRED for a missing handle, one that is gone or of another stage, one another
        browser began, or a user the directory no longer has."""
        if not handle or not browser or len(handle) > 128:
            raise AccessDenied(EXPIRED)
        key = _STEP + _digest(handle)
        raw = await self._ephemeral.get(key)
        pending = json.loads(raw) if raw is not None else None
        if pending is None or pending.get("stage") != stage or not hmac.compare_digest(
                str(pending.get("browser")), _digest(browser)):
            raise AccessDenied(EXPIRED)
        instance = await self.instances.by_store(str(pending["store"]))
        user = None if instance is None else await self._user(instance, str(pending["user"]))
        if instance is None or user is None:
            await self._ephemeral.delete(key)
            raise AccessDenied(EXPIRED)
        return instance, user, key


def _live_invitation(credential: Credential, digest: str, now: datetime) -> bool:
    return credential.invitation is not None and hmac.compare_digest(
        credential.invitation, digest) and credential.invitation_expires is not None \
        and now < credential.invitation_expires


def _device_key(instance: Instance, user_id: str, device_id: str) -> str:
    return f"sso:{instance.identity_store_id}/{user_id}/{device_id}"
