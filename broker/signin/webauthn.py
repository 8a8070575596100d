"""FIDO2 / WebAuthn security keys and passkeys as a second factor, by py_webauthn (Duo Labs'
WebAuthn Relying Party library): the broker never parses an attestation or an assertion itself.

The relying party is the broker's public URL: its host is the RP id, its origin the only
origin accepted. Every ceremony's challenge is 32 random bytes, kept server-side and used
once:

* registration (from the console's security credentials page): the challenge is kept under
  the console session for five minutes and taken before the response is verified, so that a
  response is checked against it at most once;
* authentication (the sign-in's MFA step): the challenge lives in the pending sign-in record,
  which the sign-in takes once; a replayed assertion finds no record.

py_webauthn checks the origin, the RP id hash, the challenge, user presence and the
signature; the signature counter must grow where the key keeps one, checked again as it is
stored (``MfaDevices.counted``), so a cloned key's assertion is refused. Registering a key is
authorized as ``iam:EnableMFADevice`` on the user's own ARN (AWS's permission for FIDO keys).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers import exceptions as webauthn_errors
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from broker import jsontext
from broker.authz import Authorizer
from broker.aws.errors import AccessDenied, InvalidInput
from broker.clock import Clock
from broker.iam.entities import SecurityKey
from broker.iam.mfa import MfaDevices
from broker.principal import Principal
from broker.signin.console import NOWHERE, Origin
from broker.store.base import EphemeralStore

CHALLENGE_SECONDS = 300
MAX_RESPONSE = 16_384  # characters of a credential's JSON: attestations are a few KiB at most
_REGISTRATION = "webauthn-registration:"
# What py_webauthn raises for a response it refuses, and what its parsing lets through for
# one that is not even shaped like a response.
_REFUSED = (webauthn_errors.WebAuthnException, ValueError, KeyError, TypeError)
REFUSED = "The security key's response is not valid for this sign-in."


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RelyingParty:
    """The ceremonies themselves, apart from where keys are kept (IAM's users and root below;
    Identity Center's directory users in broker.identitycenter.portal): the broker's public
    URL is the relying party, each challenge 32 random bytes the caller keeps and uses once."""

    def __init__(self, public_url: str) -> None:
        parts = urlsplit(public_url)
        self.rp_id = (parts.hostname or "").lower()
        self.origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    def registration_options(self, user_id: bytes, user_name: str, display_name: str,
                             existing: list[str]) -> tuple[str, bytes]:
        """(options for navigator.credentials.create as JSON, the challenge)."""
        challenge = secrets.token_bytes(32)
        options = webauthn.generate_registration_options(
            rp_id=self.rp_id, rp_name="broker", user_id=user_id, user_name=user_name,
            user_display_name=display_name, challenge=challenge,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64url(c))
                                 for c in existing],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.DISCOURAGED))
        return webauthn.options_to_json(options), challenge

    def verify_registration(self, response: str, challenge: bytes) -> Any:
        """py_webauthn's VerifiedRegistration of the response; AccessDenied otherwise."""
        try:
            return webauthn.verify_registration_response(
                credential=_credential(response), expected_challenge=challenge,
                expected_rp_id=self.rp_id, expected_origin=self.origin,
                require_user_presence=True)
        except _REFUSED:
            raise AccessDenied("The security key's registration response is not valid "
                               "for this page.") from None

    def authentication_options(self, credential_ids: list[str]) -> tuple[str, str]:
        """(options for navigator.credentials.get as JSON, the challenge, base64url)."""
        challenge = secrets.token_bytes(32)
        options = webauthn.generate_authentication_options(
            rp_id=self.rp_id, challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=_unb64url(c))
                               for c in credential_ids],
            user_verification=UserVerificationRequirement.DISCOURAGED)
        return webauthn.options_to_json(options), _b64url(challenge)

    def verify_authentication(self, credential: dict[str, Any], challenge: str,
                              public_key: str, sign_count: int) -> int:
        """The new signature counter of an assertion by this key over the challenge;
        AccessDenied(REFUSED) otherwise."""
        if not challenge:
            raise AccessDenied(REFUSED)
        try:
            verified = webauthn.verify_authentication_response(
                credential=credential, expected_challenge=_unb64url(challenge),
                expected_rp_id=self.rp_id, expected_origin=self.origin,
                credential_public_key=base64.b64decode(public_key),
                credential_current_sign_count=sign_count, require_user_verification=False)
        except _REFUSED:
            raise AccessDenied(REFUSED) from None
        return int(verified.new_sign_count)


def credential_id_of(response: str) -> tuple[dict[str, Any], str]:
    """(the browser's credential as JSON, its id); AccessDenied(REFUSED) if it is not one."""
    try:
        credential = _credential(response)
    except _REFUSED:
        raise AccessDenied(REFUSED) from None
    return credential, str(credential.get("id", ""))


class SecurityKeys:
    def __init__(self, mfa: MfaDevices, authz: Authorizer, ephemeral: EphemeralStore,
                 clock: Clock, *, public_url: str) -> None:
        self._mfa = mfa
        self._authz = authz
        self._ephemeral = ephemeral
        self._clock = clock
        self.rp = RelyingParty(public_url)
        self.rp_id, self.origin = self.rp.rp_id, self.rp.origin

    # -- registration ---------------------------------------------------------------------------

    async def registration_options(self, principal: Principal, cookie: str) -> str:
        """The options for navigator.credentials.create, as JSON; the challenge is kept for
        this console session."""
        user_name = None if principal.is_root else principal.name
        existing = await self._mfa.keys_of(principal.account_id, user_name)
        options, challenge = self.rp.registration_options(
            hashlib.sha256(principal.arn.encode()).digest(), principal.arn, principal.name,
            [k.credential_id for k in existing])
        await self._ephemeral.set(_registration_key(cookie), _b64url(challenge).encode(),
                                  CHALLENGE_SECONDS)
        return options

    async def register(self, principal: Principal, cookie: str, name: str, response: str,
                       origin: Origin = NOWHERE) -> SecurityKey:
        """Verify the browser's registration response against this session's challenge and
        register the key for the signed-in user."""
        if not name or len(name) > 64 or not all(c.isalnum() or c in "+=,.@_ -" for c in name):
            raise InvalidInput("Name the security key: 1 to 64 letters, digits, spaces or "
                               "+=,.@_- characters.")
        await self._authz.check(principal, "iam:EnableMFADevice", principal.arn,
                                source_ip=origin.source_ip, user_agent=origin.user_agent,
                                secure=origin.secure)
        challenge = await self._ephemeral.take(_registration_key(cookie))  # used once
        if challenge is None:
            raise AccessDenied("The security key registration has expired: begin it again.")
        verified = self.rp.verify_registration(response, _unb64url(challenge.decode("ascii")))
        key = SecurityKey(
            account_id=principal.account_id, credential_id=_b64url(verified.credential_id),
            name=name, public_key=base64.b64encode(verified.credential_public_key).decode(),
            sign_count=verified.sign_count, created=self._clock.now(),
            user_name=None if principal.is_root else principal.name,
            aaguid=verified.aaguid)
        await self._mfa.add_key(key)
        return key

    # -- authentication (the sign-in's second step) ---------------------------------------------

    async def authentication_options(self, account: str,
                                     user_name: str | None) -> tuple[str, str] | None:
        """(options for navigator.credentials.get as JSON, the challenge) for a user with
        security keys; None for one without."""
        keys = await self._mfa.keys_of(account, user_name)
        if not keys:
            return None
        return self.rp.authentication_options([k.credential_id for k in keys])

    async def verify(self, account: str, user_name: str | None, response: str,
                     challenge: str) -> SecurityKey:
        """An assertion of one of the user's keys over this challenge; AccessDenied for
        anything else (another origin or RP, another challenge, no user presence, a bad
        signature, a counter that did not grow, a key that is not the user's)."""
        credential, credential_id = credential_id_of(response)
        key = await self._mfa.key(account, user_name, credential_id)
        if key is None or not challenge:
            raise AccessDenied(REFUSED)
        count = self.rp.verify_authentication(credential, challenge, key.public_key,
                                              key.sign_count)
        await self._mfa.counted(key, count)
        return key


def _credential(response: str) -> dict[str, Any]:
    """The browser's PublicKeyCredential as JSON, read by the broker's strict JSON reader."""
    if not response or len(response) > MAX_RESPONSE:
        raise ValueError("no credential")
    parsed = jsontext.loads(response)
    if not isinstance(parsed, dict):
        raise ValueError("not an object")
    return parsed


def _registration_key(cookie: str) -> str:
    return _REGISTRATION + hashlib.sha256(cookie.encode()).hexdigest()

