"""SAML 2.0 Web Browser SSO responses (saml-core-2.0-os, saml-profiles-2.0-os §4.1) checked by a
service provider that trusts nothing it has not verified.

``validate`` takes the XML of a ``samlp:Response`` and returns a ``VerifiedAssertion`` or
raises ``SamlRefused``. In order:

1. the document is parsed by ``xmlsafe`` (size and depth limits before and after parsing, no
   DTD, no entities, no processing instructions, no network);
2. the root is a SAML 2.0 Response holding exactly one assertion, plain or encrypted, and no
   other assertion anywhere in the document;
3. signatures (``xmldsig``): a signature on the Response must verify; the assertion must be
   covered by one — the Response's or its own — made with a certificate of the identity
   provider's metadata. Whatever is read afterwards is read from the re-parsed bytes that the
   signature covered;
4. an encrypted assertion is decrypted (``xmlenc``) with the service provider's keys, and still
   needs a signature (its own, or the Response's over the ciphertext);
5. the Response: Version 2.0, ``Destination`` equal to the ACS URL when present, status
   Success, issuer (if given) equal to the assertion's;
6. the assertion: the identity provider's entity id as Issuer; a Subject with a NameID and
   exactly one bearer SubjectConfirmation whose Recipient is the ACS URL exactly and which has a
   NotOnOrAfter still in the future; Conditions whose every AudienceRestriction names an
   audience this service provider accepts; NotBefore / NotOnOrAfter within the clock skew.

Replay (an assertion ID seen before) is the caller's check: it needs a shared store.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from broker.errors import BrokerError
from broker.frozen import frozen
from broker.idp import xmldsig, xmlenc, xmlsafe
from broker.idp.xmldsig import PublicKey, SignatureError

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

_RESPONSE = f"{{{SAMLP}}}Response"
_ASSERTION = f"{{{SAML}}}Assertion"
_ENCRYPTED = f"{{{SAML}}}EncryptedAssertion"
_ISSUER = f"{{{SAML}}}Issuer"
_SUBJECT = f"{{{SAML}}}Subject"
_NAMEID = f"{{{SAML}}}NameID"
_SUBJECTCONFIRMATION = f"{{{SAML}}}SubjectConfirmation"
_SUBJECTCONFIRMATIONDATA = f"{{{SAML}}}SubjectConfirmationData"
_CONDITIONS = f"{{{SAML}}}Conditions"
_AUDIENCERESTRICTION = f"{{{SAML}}}AudienceRestriction"
_AUDIENCE = f"{{{SAML}}}Audience"
_AUTHNSTATEMENT = f"{{{SAML}}}AuthnStatement"
_ATTRIBUTEVALUE = f"{{{SAML}}}AttributeValue"
_STATUS = f"{{{SAMLP}}}Status"
_STATUS_CODE = f"{{{SAMLP}}}StatusCode"
_ATTRIBUTE_STATEMENT = f"{{{SAML}}}AttributeStatement"
_ATTRIBUTE = f"{{{SAML}}}Attribute"

# Base64 of at most 100,000 characters (AssumeRoleWithSAML's limit) is at most 75,000 bytes;
# the sign-in endpoint accepts the same. An honest response nests about eight levels deep.
LIMITS = xmlsafe.Limits(max_bytes=75_000, max_depth=24, max_elements=2_000)
# A signed element's canonical form, parsed again to read what the signature covers, is part
# of a document LIMITS accepted: never deeper, never more elements, but longer (exclusive
# canonicalization copies the namespace declarations each element uses into it, and writes
# empty elements out in full). Its bytes are bounded by the elements and attributes times the
# longest namespace URI LIMITS accepts (512 characters; before that limit, 72 KB of one long
# URI used by 1,990 elements came out as 119 MB, and now at most about 4 MB can, which this
# refuses). The 8x is what honest responses need, as observed: one of 370 roles grows from
# 62 KB to 82 KB. The input's limit, not this, is AWS's.
CANONICAL_LIMITS = xmlsafe.Limits(max_bytes=8 * LIMITS.max_bytes, max_depth=LIMITS.max_depth,
                                  max_elements=LIMITS.max_elements)
MAX_ENCODED = 100_000


class Refusal(Enum):
    """Why a response was refused, as the interfaces report it."""

    INVALID = "invalid"  # InvalidIdentityToken
    EXPIRED = "expired"  # ExpiredTokenException
    REJECTED = "rejected"  # IDPRejectedClaim: the identity provider said no


class SamlRefused(BrokerError):
    def __init__(self, message: str, refusal: Refusal = Refusal.INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.refusal = refusal


@dataclass(frozen=True)
class ServiceProvider:
    """What this service provider checks a response against."""

    acs_url: str
    audiences: frozenset[str]
    clock_skew: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class IdentityProvider:
    """What the administrator told us about the identity provider (its metadata)."""

    entity_id: str
    signing_keys: tuple[PublicKey, ...]
    decryption_keys: tuple[rsa.RSAPrivateKey, ...] = ()
    encryption_required: bool = False


@frozen
class VerifiedAssertion:
    """An assertion whose signature, issuer, audience, recipient and times have been checked."""

    assertion_id: str
    issuer: str
    subject: str
    subject_format: str | None
    recipient: str
    audiences: tuple[str, ...]
    not_on_or_after: datetime  # the earliest of the assertion's expiry times
    issue_instant: datetime
    response_id: str
    in_response_to: str | None
    session_not_on_or_after: datetime | None
    encrypted: bool
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def values(self, name: str) -> tuple[str, ...]:
        """Every value of the attributes called ``name`` (exact, case-sensitive), in order."""
        # Asked for five names per assertion: the attributes are grouped by name once, and
        # the groups kept in the instance's dict (as functools.cached_property would).
        by_name: dict[str, tuple[str, ...]] | None = self.__dict__.get("_by_name")
        if by_name is None:
            by_name = {}
            for n, vs in self.attributes:
                by_name[n] = by_name.get(n, ()) + vs
            self.__dict__["_by_name"] = by_name
        return by_name.get(name, ())

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)


def decode(encoded: str) -> bytes:
    """The XML of a base64 SAMLResponse / SAMLAssertion (line breaks allowed, nothing else)."""
    if len(encoded) > MAX_ENCODED:
        raise SamlRefused(f"The SAML response is longer than {MAX_ENCODED} characters.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass  # perhaps wrapped in lines, as the HTTP-POST binding allows
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SamlRefused("The SAML response is not valid base64.") from None


def validate(xml: bytes, idp: IdentityProvider, sp: ServiceProvider,
             now: datetime) -> VerifiedAssertion:
    try:
        root = xmlsafe.parse(xml, LIMITS)
    except xmlsafe.UnsafeXml as exc:
        raise SamlRefused(f"Invalid SAML response: {exc}.") from None
    if root.tag != _RESPONSE:
        raise SamlRefused("Invalid SAML response: the document is not a SAML 2.0 Response.")
    # An identity provider's refusal often comes unsigned and without an assertion. Its status
    # can only lead to a refusal, so it is reported as what it is before anything else.
    _check_status(root)
    found = list(root.iter(_ASSERTION, _ENCRYPTED))
    if len(found) != 1 or found[0].getparent() is not root:
        raise SamlRefused("Invalid SAML response: a response must hold exactly one assertion.")

    # The Response's signature is checked first (checking the assertion's removes it from the
    # tree the Response's digest covers). The assertion is then taken from the original tree,
    # where it is the one and only assertion: the namespaces it inherits are all still there.
    response = root
    response_signature = _signature(root)
    response_signed = response_signature is not None
    if response_signature is not None:
        response = _reparse(_verified(root, response_signature, idp))
    assertion = found[0]
    encrypted = assertion.tag == _ENCRYPTED
    if encrypted:
        # Under a Response signature, the ciphertext is taken from the signed bytes.
        covered = _one_child(response, (_ENCRYPTED,)) if response_signed else assertion
        assertion = _decrypted(covered, idp)
    elif idp.encryption_required:
        raise SamlRefused("Invalid SAML response: this provider requires encrypted assertions.")
    signature = _signature(assertion)
    if signature is not None:
        assertion = _reparse(_verified(assertion, signature, idp))
    elif not response_signed:
        raise SamlRefused("Response signature invalid")
    elif not encrypted:
        assertion = _one_child(response, (_ASSERTION,))
    if assertion.tag != _ASSERTION:
        raise SamlRefused("Invalid SAML response: the assertion is not a SAML 2.0 Assertion.")
    return _read(response, assertion, idp, sp, now, encrypted, response_signed)


def _signature(element: etree._Element) -> etree._Element | None:
    try:
        return xmldsig.signature_of(element)
    except SignatureError:  # more than one
        raise SamlRefused("Response signature invalid") from None


def _verified(element: etree._Element, signature: etree._Element,
              idp: IdentityProvider) -> bytes:
    try:
        return xmldsig.verify(element, idp.signing_keys, signature)
    except SignatureError:
        raise SamlRefused("Response signature invalid") from None


def _reparse(signed: bytes) -> etree._Element:
    try:
        return xmlsafe.parse(signed, CANONICAL_LIMITS, checked=True)
    except xmlsafe.UnsafeXml as exc:  # pragma: no cover - canonical XML of a parsed tree
        raise SamlRefused(f"Invalid SAML response: {exc}.") from None


def _decrypted(encrypted: etree._Element, idp: IdentityProvider) -> etree._Element:
    message = "Invalid SAML response: the encrypted assertion could not be decrypted."
    if not idp.decryption_keys:
        raise SamlRefused(message)
    try:
        plaintext = xmlenc.decrypt(encrypted, idp.decryption_keys)
    except xmlenc.DecryptionError:
        raise SamlRefused(message) from None
    # The plaintext is an Assertion element that may rely on namespace prefixes declared
    # around the EncryptedAssertion: parse it inside an element declaring them, as if in place.
    declarations = b"".join(
        b' xmlns%s="%s"' % ((b":" + p.encode()) if p else b"", escape_attr(uri).encode())
        for p, uri in encrypted.nsmap.items())
    wrapped = b"<w" + declarations + b">" + plaintext + b"</w>"
    try:
        holder = xmlsafe.parse(wrapped, LIMITS)
    except xmlsafe.UnsafeXml:
        raise SamlRefused(message) from None
    if len(holder) != 1 or (holder.text and holder.text.strip()) or (holder[0].tail and \
            holder[0].tail.strip()):
        raise SamlRefused(message)
    return holder[0]


def escape_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _read(response: etree._Element, assertion: etree._Element, idp: IdentityProvider,
          sp: ServiceProvider, now: datetime, encrypted: bool,
          response_signed: bool) -> VerifiedAssertion:
    if response.get("Version") != "2.0" or assertion.get("Version") != "2.0":
        raise SamlRefused("Invalid SAML response: only SAML 2.0 is accepted.")
    destination = response.get("Destination")
    if destination is not None and destination != sp.acs_url:
        raise SamlRefused("Invalid SAML response: the Destination is not this service "
                          "provider's assertion consumer service URL.")
    if response_signed:  # else the response is the tree whose status validate() checked
        _check_status(response)
    # One pass over the assertion's children, grouped by name; every rule below reads the
    # groups ("exactly one Subject", "one Conditions", ...). Comments have no name: ignored.
    parts = xmlsafe.children_by_tag(assertion)
    issuer = _issuer(_exactly_one(parts.get(_ISSUER), "an Issuer"))
    response_issuer = next(response.iterchildren(_ISSUER), None)
    if response_issuer is not None and _text(response_issuer) != issuer:
        raise SamlRefused("Invalid SAML response: the Response and the Assertion have "
                          "different issuers.")
    if issuer != idp.entity_id:
        raise SamlRefused("Issuer not present in specified provider")

    subject_parts = xmlsafe.children_by_tag(_exactly_one(parts.get(_SUBJECT), "a Subject"))
    name_id = _exactly_one(subject_parts.get(_NAMEID), "a NameID")
    subject = _text(name_id)
    if not subject:
        raise SamlRefused("Invalid SAML response: the NameID is empty.")
    confirmations = subject_parts.get(_SUBJECTCONFIRMATION, ())
    if len(confirmations) != 1:
        raise SamlRefused("Invalid SAML response: the Subject must have exactly one "
                          "SubjectConfirmation.")
    confirmation = confirmations[0]
    if confirmation.get("Method") != BEARER:
        raise SamlRefused("Invalid SAML response: the SubjectConfirmation must be bearer.")
    data = _one_child(confirmation, (_SUBJECTCONFIRMATIONDATA,),
                      "a SubjectConfirmationData")
    recipient = data.get("Recipient")
    if recipient != sp.acs_url:
        raise SamlRefused("Invalid SAML response: the Recipient is not this service "
                          "provider's assertion consumer service URL.")
    skew = sp.clock_skew
    confirm_until = _time(data, "NotOnOrAfter", required=True)
    assert confirm_until is not None
    _check_window(now, skew, _time(data, "NotBefore"), confirm_until)
    # Which request this answers is believed only where a signature covers it: the Response's
    # InResponseTo if the Response is signed, else the SubjectConfirmationData's (saml-profiles
    # §4.1.4.2). The two must agree when both are given.
    response_reply = response.get("InResponseTo")
    confirm_reply = data.get("InResponseTo")
    if response_signed:
        in_response_to = response_reply
        agree = confirm_reply is None or confirm_reply == response_reply
    else:
        in_response_to = confirm_reply
        agree = response_reply is None or response_reply == confirm_reply
    if not agree:
        raise SamlRefused("Invalid SAML response: the Response and its SubjectConfirmationData "
                          "answer different requests (InResponseTo).")

    conditions = parts.get(_CONDITIONS, ())
    if len(conditions) != 1:
        raise SamlRefused("Invalid SAML response: the assertion must have one Conditions.")
    condition = conditions[0]
    until = _time(condition, "NotOnOrAfter")
    _check_window(now, skew, _time(condition, "NotBefore"), until)
    restrictions = list(condition.iterchildren(_AUDIENCERESTRICTION))
    audiences: list[str] = []
    for restriction in restrictions:
        named = [_text(a) for a in list(restriction.iterchildren(_AUDIENCE))]
        if not any(a in sp.audiences for a in named):
            raise SamlRefused("Response does not contain the required audience")
        audiences += named
    if not restrictions:
        raise SamlRefused("Response does not contain the required audience")

    session_until = None
    for statement in parts.get(_AUTHNSTATEMENT, ()):
        found = _time(statement, "SessionNotOnOrAfter")
        if found is not None:
            session_until = found if session_until is None else min(session_until, found)
    attributes: list[tuple[str, tuple[str, ...]]] = []
    attributes_of = (attribute for statement in parts.get(_ATTRIBUTE_STATEMENT, ())
                     for attribute in statement.iterchildren(_ATTRIBUTE))
    for attribute in attributes_of:
        name = attribute.get("Name")
        if not name:
            raise SamlRefused("Invalid SAML response: an Attribute has no Name.")
        values = tuple([_text(v) for v in attribute.iterchildren(_ATTRIBUTEVALUE)])
        attributes.append((name, values))
    assertion_id = assertion.get("ID")
    if not assertion_id:
        raise SamlRefused("Invalid SAML response: the assertion has no ID.")
    issued = _time(assertion, "IssueInstant", required=True)
    assert issued is not None
    # An assertion from the future is not valid yet (as NotBefore): so no assertion is accepted
    # before IssueInstant less the skew, the moment from which a store that lost its data
    # cannot tell whether it was used (EphemeralStore.spend's ``since``).
    if now + sp.clock_skew < issued:
        raise SamlRefused("Invalid SAML response: the assertion is not valid yet "
                          "(its IssueInstant is in the future).")
    return VerifiedAssertion(
        assertion_id=assertion_id,
        issuer=issuer,
        subject=subject,
        subject_format=name_id.get("Format"),
        recipient=recipient,
        audiences=tuple(audiences),
        not_on_or_after=min(confirm_until, until) if until else confirm_until,
        issue_instant=issued,
        response_id=response.get("ID") or "",
        in_response_to=in_response_to,
        session_not_on_or_after=session_until,
        encrypted=encrypted,
        attributes=tuple(attributes),
    )


def _check_status(response: etree._Element) -> None:
    holders = list(response.iterchildren(_STATUS))
    status = next(holders[0].iterchildren(_STATUS_CODE), None) if len(holders) == 1 else None
    if status is None or status.get("Value") != SUCCESS:
        code = status.get("Value") if status is not None else "none"
        raise SamlRefused(f"The identity provider reported that authentication failed "
                          f"(status {code}).", Refusal.REJECTED)


def _issuer(issuer: etree._Element) -> str:
    fmt = issuer.get("Format")
    if fmt not in (None, "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"):
        raise SamlRefused("Invalid SAML response: the Issuer must be an entity id.")
    return _text(issuer)


def _one_child(parent: etree._Element, tags: Sequence[str],
               what: str = "one assertion") -> etree._Element:
    return _exactly_one(list(parent.iterchildren(*tags)), what)


def _exactly_one(found: list[etree._Element] | None, what: str) -> etree._Element:
    if found is None or len(found) != 1:
        raise SamlRefused(f"Invalid SAML response: expected exactly {what}.")
    return found[0]


def _text(element: etree._Element) -> str:
    if not len(element):  # no child: no comment either, so .text is the whole text
        return (element.text or "").strip()
    return xmlsafe.text_of(element).strip()


def _time(element: etree._Element, name: str, *, required: bool = False) -> datetime | None:
    value = element.get(name)
    if value is None:
        if required:
            local = etree.QName(element).localname
            raise SamlRefused(f"Invalid SAML response: {local} has no {name}.")
        return None
    return parse_instant(value, name)


def parse_instant(value: str, name: str = "time") -> datetime:
    """xs:dateTime as SAML requires it: UTC, with a Z (fractions of a second allowed)."""
    text = value.strip()
    if not text.endswith("Z") or "T" not in text:
        raise SamlRefused(f"Invalid SAML response: {name} is not a UTC time.")
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise SamlRefused(f"Invalid SAML response: {name} is not a time.") from None
    return moment


def _check_window(now: datetime, skew: timedelta, not_before: datetime | None,
                  not_on_or_after: datetime | None) -> None:
    if not_before is not None and now + skew < not_before:
        raise SamlRefused("Invalid SAML response: the assertion is not valid yet.")
    if not_on_or_after is not None and now - skew >= not_on_or_after:
        raise SamlRefused("The SAML assertion has expired; sign in to the identity provider "
                          "again.", Refusal.EXPIRED)
