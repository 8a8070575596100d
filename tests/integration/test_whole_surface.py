"""Every 5xx is a defect: the whole HTTP surface under hostile values.

Every Query action the running broker serves (its own operation list, whose shapes
tests/conformance/test_botocore_models.py holds equal to botocore's models) and every web
route its application mounts is sent hostile values, one member or field at a time, beside
honest values for everything else (real entities, real signatures, a real console session), so
that each hostile value reaches as deep as it can:

* bytes that are not UTF-8 (a lone surrogate encoded as UTF-8, an overlong encoding, 0xFF),
  NUL, CR LF, broken percent escapes, non-ASCII text, oversized values;
* in every JSON a member carries (policies, the federation endpoint's Session, JWKS, a web
  identity token's header and claims), each string followed in turn by a lone surrogate
  escape (``\\ud800``, ``\\udc00``) or NUL (``\\u0000``), plus repeated members, NaN, deep
  nesting and broken JSON;
* in every XML (SAML metadata and responses), character references that XML forbids, bytes
  that are not UTF-8 and encodings that lie;
* in headers (User-Agent, Cookie, the gateway's X-Original-URL), bytes that are not UTF-8.

The check fails on any answer of 500 or more, on any refusal not in the interface's own format
(AWS's XML ErrorResponse; an HTML page with an error id, or JSON with an error code), and on
any log record of level ERROR or any
logged stack trace (uvicorn's and the broker's): the broker's last-resort handlers turn an
unforeseen exception into a polite 500, so the log is where a defect shows. Every cookie set
along the way must be host-only, HttpOnly and for Path=/. A route the table below does not
cover, or a form field of a template it does not list, fails the check too: the surface grows
only with its hostile cases.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import httpx
import lxml.html
import pyotp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from broker.aws import shapes
from broker.aws.query import Operation
from tests import identity_source_surface
from tests.console_world import APP, ConsoleWorld, console_env, session_param, set_cookies
from tests.helpers import Broker, Creds, start_broker
from tests.saml_idp import encode
from tests.saml_world import SamlWorld

# -- hostile values -------------------------------------------------------------------------

# As they go on the wire, already percent-encoded: each is spliced in as is.
ESCAPES = {
    "lone surrogate as UTF-8": "%ED%A0%80",
    "low surrogate as UTF-8": "a%ED%B0%80b",
    "overlong UTF-8": "%C0%AF",
    "not UTF-8": "%FF%FE",
    "truncated UTF-8": "abc%E2%98",
    "NUL": "a%00b",
    "CR LF": "a%0D%0ASet-Cookie:%20x=y",
    "broken escape": "%zz%4",
    "non-ASCII": quote("é☃😀\u202e"),
    "oversized": "a" * 70_000,
}
# Strings that JSON's \u escapes can spell and UTF-8 cannot (or that no store keeps).
BAD_STRINGS = ("\ud800", "x\udc00y", "\u0000", "\ud83d")


def wire(text: str) -> str:
    """Percent-encode text whose characters are all encodable (JSON from json.dumps is ASCII)."""
    return quote(text, safe="")


def json_variants(document: Any) -> Iterator[tuple[str, str]]:
    """(what, wire value) for a JSON document with each of its strings — member names too —
    followed in turn by each BAD_STRING; then repeated members, NaN and deep nesting."""
    def positions(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(value, dict):
            for name, member in value.items():
                yield (*path, ("name", name))
                yield from positions(member, (*path, name))
        elif isinstance(value, list):
            for index, member in enumerate(value):
                yield from positions(member, (*path, index))
        elif isinstance(value, str):
            yield path

    def replaced(value: Any, path: tuple[Any, ...], bad: str) -> Any:
        """``value`` with the string at ``path`` followed by ``bad`` (an otherwise honest
        string goes as deep as an honest one would)."""
        if not path:
            return value + bad
        step, rest = path[0], path[1:]
        if isinstance(step, tuple):  # a member's name
            return {(name + bad if name == step[1] else name): member
                    for name, member in value.items()}
        copy = dict(value) if isinstance(value, dict) else list(value)
        copy[step] = replaced(value[step], rest, bad)
        return copy

    for path in positions(document):
        for bad in BAD_STRINGS:
            yield f"{bad!r} after {path}", wire(json.dumps(replaced(document, path, bad)))
    text = json.dumps(document)
    if text.startswith("{"):
        first = text[1:].split(",", 1)[0]
        yield "a repeated member", wire("{" + first + "," + text[1:])
        yield "NaN", wire(text[:-1] + ',"n":NaN}')
    yield "deep nesting", wire("[" * 5_000 + "]" * 5_000)  # far past the parser's recursion
    yield "not JSON", wire(text[: len(text) // 2])


def jwt_variants(claims: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Unsigned-looking compact JWS with hostile JSON in the header and in the claims."""
    def seg(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    body = seg(json.dumps(claims).encode())
    for what, value in json_variants(header):
        yield f"header {what}", wire(seg(_unwire(value)) + "." + body + ".c2ln")
    for what, value in json_variants(claims):
        yield f"claims {what}", wire(seg(json.dumps(header).encode()) + "." +
                                     seg(_unwire(value)) + ".c2ln")
    for what, raw in (("claims not UTF-8", b'{"iss":"\xed\xa0\x80"}'),
                      ("claims NUL", b'{"iss":"a\x00"}')):
        yield what, wire(seg(json.dumps(header).encode()) + "." + seg(raw) + ".c2ln")


def _unwire(value: str) -> bytes:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(value)


def xml_variants(document: bytes, *, base64_encoded: bool) -> Iterator[tuple[str, str]]:
    """An XML document spoiled in the ways XML forbids, each as the member's wire value."""
    text = document.decode()
    spoiled: dict[str, bytes] = {
        "a surrogate character reference": _inside(text, "&#xD800;"),
        "a NUL character reference": _inside(text, "&#0;"),
        "a control character reference": _inside(text, "&#x1B;"),
        "bytes that are not UTF-8": _inside(text, raw=b"\xed\xa0\x80\xff"),
        "an encoding that lies": b'<?xml version="1.0" encoding="UTF-16"?>' + document,
        "UTF-16 without saying so": text.encode("utf-16"),
        "NUL bytes": document.replace(b">", b">\x00", 1),
    }
    for what, data in spoiled.items():
        if base64_encoded:
            yield what, wire(base64.b64encode(data).decode())
        elif what in ("bytes that are not UTF-8", "UTF-16 without saying so", "NUL bytes"):
            yield what, quote(data, safe="")  # as raw bytes on the wire
        else:
            yield what, wire(data.decode("utf-8", "surrogateescape"))


def _inside(text: str, insert: str = "", raw: bytes | None = None) -> bytes:
    """The document with ``insert`` in the text of its first element that has text."""
    match = re.search(r">([^<\s][^<]*)<", text)
    assert match, "no element with text"
    at = match.start(1)
    if raw is not None:
        return text[:at].encode() + raw + text[at:].encode()
    return (text[:at] + insert + text[at:]).encode()


# -- watching the log -----------------------------------------------------------------------

class Watch(logging.Handler):
    """Every record of level ERROR and every record that carries a stack trace."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def take(self) -> list[str]:
        found = [f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return found


def _aws_xml_problem(response: httpx.Response) -> str | None:
    try:
        root = ElementTree.fromstring(response.content)
    except ElementTree.ParseError:
        return "not XML"
    if not root.tag.endswith("}ErrorResponse") or root.find("{*}Error/{*}Code") is None:
        return "not an AWS ErrorResponse"
    return None


def _web_problem(response: httpx.Response) -> str | None:
    kind = response.headers.get("content-type", "")
    if response.request.url.path == "/gateway/auth":
        return None if not response.content else "a forward-auth refusal with a body"
    if kind.startswith("text/html"):
        found = re.search(r"Error id</dt><dd><code>[0-9a-f-]{36}</code>", response.text)
        return None if found else "an HTML refusal without an error id"
    if kind.startswith("application/json"):
        try:
            return None if json.loads(response.text)["Error"]["Code"] else "no code"
        except (ValueError, KeyError, TypeError):
            return "a JSON refusal without Error.Code"
    return f"a refusal as {kind or 'nothing'}"


# -- the broker and its world ----------------------------------------------------------------

@dataclass
class Surface:
    broker: Broker
    saml: SamlWorld
    console: ConsoleWorld
    good: dict[str, str]  # member name → an honest value (already on the wire)
    json_members: dict[str, Any]
    watch: Watch
    http: httpx.Client
    signer: Creds  # an IAM user allowed everything (root may not assume roles)
    chooser: SamlWorld  # a provider whose responses offer two roles (the role chooser)
    json_good: dict[str, Any] = field(default_factory=dict)  # JSON members' honest values
    failures: list[str] = field(default_factory=list)

    @property
    def https(self) -> bool:
        return self.broker.settings.public_url.startswith("https://")

    def cookie(self, name: str) -> str:
        """A cookie's name on the wire."""
        return f"__Host-{name}" if self.https else name

    def check_json(self, what: str, response: httpx.Response) -> None:
        """As ``check``, for the JSON 1.1 protocol: a refusal is AWS's JSON error."""
        problems = []
        if response.status_code >= 500:
            problems.append(f"{response.status_code}: {response.text[:300]}")
        elif response.status_code >= 400:
            problem = _aws_json_problem(response)
            if problem:
                problems.append(f"{response.status_code}, {problem}: {response.text[:200]}")
        problems += [f"logged: {line}" for line in self.watch.take()]
        if problems:
            self.failures.append(f"{what}: " + "; ".join(problems))

    def check(self, what: str, response: httpx.Response, *, query: bool = False) -> None:
        """Record what is wrong with an answer: a 5xx, a log line, a cookie that is not
        the broker's kind, or a refusal not in the interface's own format (AWS XML for the
        Query protocol; an HTML page with an error id, or JSON with a code, on the web)."""
        self.http.cookies.clear()  # every case says which cookies it sends
        problems = []
        status = response.status_code
        if status >= 500:
            problems.append(f"{status}: {response.text[:300]}")
        elif status >= 400 and response.request.method != "HEAD":
            problem = (_aws_xml_problem if query else _web_problem)(response)
            if problem:
                problems.append(f"{status}, {problem}: {response.text[:200]}")
        for line in response.headers.get_list("set-cookie"):
            attributes = [a.strip().lower() for a in line.split(";")[1:]]
            if "path=/" not in attributes or "httponly" not in attributes or any(
                    a.startswith("domain=") for a in attributes):
                problems.append(f"a cookie that is not host-only, HttpOnly, Path=/: {line}")
            if self.https and (not line.startswith("__Host-") or "secure" not in attributes):
                problems.append(f"a cookie without __Host- and Secure on https: {line}")
        problems += [f"logged: {line}" for line in self.watch.take()]
        if problems:
            self.failures.append(f"{what}: " + "; ".join(problems))


@pytest.fixture(scope="module", params=["embedded", "postgres+redis", "https"])
def surface(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surface]:
    """The broker on each kind of store (what SQLite keeps, PostgreSQL may refuse: NUL), and
    behind an https public URL (every cookie __Host- and Secure)."""
    env = console_env(BROKER_SERVER_DEV="true")
    if request.param == "https":
        env["BROKER_SERVER_PUBLIC_URL"] = "https://broker.example.test"
    if request.param == "postgres+redis":
        env.update(BROKER_STORE_DATABASE_URL=request.getfixturevalue("postgres_databases")(),
                   BROKER_STORE_EPHEMERAL_URL=request.getfixturevalue("redis_url"),
                   BROKER_STORE_REDIS_PREFIX=f"broker-surface-{uuid.uuid4().hex[:8]}:")
    broker = start_broker(tmp_path_factory.mktemp("surface"), env=env)
    watch = Watch()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]  # uvicorn.error: in uvicorn
    for logger in loggers:
        logger.addHandler(watch)
    try:
        world = _world(broker, watch)
        with world.http:
            yield world
    finally:
        for logger in loggers:
            logger.removeHandler(watch)
        broker.stop()


POLICY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "Surface", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*",
    "Condition": {"StringEquals": {"aws:PrincipalTag/team": ["blue"]}}}]}


def _world(broker: Broker, watch: Watch) -> Surface:
    iam = broker.client("iam")
    account = broker.account_id
    saml = SamlWorld.make(broker)
    console = ConsoleWorld.make(broker)
    user = "surface-user"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    iam.create_group(GroupName="surface-group")
    device = iam.create_virtual_mfa_device(
        VirtualMFADeviceName="surface-mfa")["VirtualMFADevice"]["SerialNumber"]
    # A root user with a password and no MFA device, for /signin/enrol.
    broker.server.call(broker.runtime.iam.create_account(
        root_email="surface-root@example.com", root_password="Surface-password-1"))
    # A user whose login profile requires a reset, for /signin/change.
    iam.create_user(UserName="surface-reset")
    iam.create_login_profile(UserName="surface-reset", Password="Surface-password-1",
                             PasswordResetRequired=True)
    # A user who signs in with a password alone, for the security credentials page.
    iam.create_user(UserName="surface-own")
    iam.create_login_profile(UserName="surface-own", Password="Surface-password-1")
    iam.put_user_policy(UserName="surface-own", PolicyName="own", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["iam:*AccessKey*", "iam:*MFADevice*", "iam:GetUser",
                                          "iam:ChangePassword"], "Resource": "*"}]}))
    iam.create_access_key(UserName="surface-own")
    # A user who signs in with a password and a device, for /signin and /signin/mfa.
    iam.create_user(UserName="surface-signin")
    iam.create_login_profile(UserName="surface-signin", Password="Surface-password-1")
    signin_device = iam.create_virtual_mfa_device(
        VirtualMFADeviceName="surface-signin")["VirtualMFADevice"]
    totp = pyotp.TOTP(signin_device["Base32StringSeed"].decode("ascii"))
    iam.enable_mfa_device(UserName="surface-signin", SerialNumber=signin_device["SerialNumber"],
                          AuthenticationCode1=totp.now(),
                          AuthenticationCode2=totp.at(time.time(), counter_offset=1))
    _, signer = broker.new_user(name="surface-admin")
    oidc = iam.create_open_id_connect_provider(
        Url="https://oidc.surface.example.test", ClientIDList=["client-1"],
        ThumbprintList=["a" * 40])["OpenIDConnectProviderArn"]
    # Every kind of principal, so that a hostile string after each reaches what resolves it.
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [
            f"arn:aws:iam::{account}:root", f"arn:aws:iam::{account}:user/surface-admin",
            console.role_arn]},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/surface-*"}}}, {
        "Effect": "Allow", "Principal": {"Federated": [oidc, saml.provider_arn]},
        "Action": ["sts:AssumeRoleWithWebIdentity", "sts:AssumeRoleWithSAML"]}, {
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="surface-role", AssumeRolePolicyDocument=json.dumps(trust))
    policy = iam.create_policy(PolicyName="surface-policy", PolicyDocument=json.dumps(POLICY))
    resource_policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": account}, "Action": "s3:GetObject",
        "Resource": "*"}]}
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
                      "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                      "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
    claims = {"iss": "https://oidc.surface.example.test", "sub": "surface", "aud": "client-1",
              "exp": 4_000_000_000, "iat": 1_700_000_000, "email": "a@example.test"}
    json_members: dict[str, Any] = {
        "PolicyDocument": POLICY, "AssumeRolePolicyDocument": trust, "Policy": POLICY,
        "PolicyInputList": POLICY, "PermissionsBoundaryPolicyInputList": POLICY,
        "ServiceControlPolicyInputList": POLICY, "ResourcePolicy": resource_policy,
        "Jwks": jwks, "WebIdentityToken": claims,
    }
    good = {
        "UserName": user, "RoleName": "surface-role", "GroupName": "surface-group",
        "PolicyName": "surface-inline", "PolicyArn": policy["Policy"]["Arn"],
        "RoleArn": role["Role"]["Arn"], "PrincipalArn": saml.provider_arn,
        "SAMLProviderArn": saml.provider_arn, "OpenIDConnectProviderArn": oidc,
        "ProviderArn": oidc, "AccessKeyId": key, "PolicySourceArn":
        f"arn:aws:iam::{account}:user/{user}", "CallerArn": f"arn:aws:iam::{account}:user/{user}",
        "ActionNames": "s3:GetObject", "ResourceArns": "*", "ResourceOwner": account,
        "Url": "https://oidc.surface.example.test", "ThumbprintList": "a" * 40,
        "ClientIDList": "client-1", "ClientID": "client-1", "Name": "surface-name",
        "VersionId": "v1", "Status": "Active", "Key": "team", "Value": "blue", "TagKeys": "team",
        "TransitiveTagKeys": "team", "AccountAlias": "surface-alias",
        "RoleSessionName": "surface", "SerialNumber": device,
        "TokenCode": "123456", "Path": "/", "PathPrefix": "/", "NewPath": "/new/",
        "Description": "surface", "ExternalId": "surface-1", "SourceIdentity": "surface",
        "EncodedMessage": "c3VyZmFjZQ", "Password": "Surface-password-1",
        "NewPassword": "Surface-password-2", "OldPassword": "Surface-password-1",
        "SAMLMetadataDocument": wire(saml.idp.metadata()),
        "SAMLAssertion": wire(encode(saml.response())), "ContextKeyName": "aws:username",
        "ContextKeyValues": "surface", "Marker": "surface", "DurationSeconds": "900",
        "MaxItems": "10", "MaxSessionDuration": "3600",
        "VirtualMFADeviceName": "surface-device", "AuthenticationCode1": "123456",
        "AuthenticationCode2": "654321",
        **{name: wire(json.dumps(value)) for name, value in json_members.items()
           if name != "WebIdentityToken"},
        "WebIdentityToken": wire(".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in ({"alg": "RS256", "kid": "k1"}, claims)) + ".c2ln"),
    }
    http = httpx.Client(base_url=broker.url, timeout=60)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                          "Resource": "*"}]}
    iam.put_user_policy(UserName="surface-admin", PolicyName="everything",
                        PolicyDocument=json.dumps(everything))
    chooser = SamlWorld.make(broker, roles=("a", "b"))
    return Surface(broker, saml, console, good, json_members, watch, http, signer, chooser,
                   _organization(broker))


def _organization(broker: Broker) -> dict[str, Any]:
    """The broker's first account as an organization's management account, with an OU, an
    SCP and a member, and an Identity Center instance: honest values for every member the
    JSON actions name."""
    orgs = broker.client("organizations")
    orgs.create_organization(FeatureSet="ALL")
    root = orgs.list_roots()["Roots"][0]["Id"]
    orgs.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
    ou = orgs.create_organizational_unit(ParentId=root, Name="Surface")["OrganizationalUnit"]
    policy = orgs.create_policy(
        Name="surface", Description="surface", Type="SERVICE_CONTROL_POLICY",
        Content=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]}))["Policy"]
    member, member_root = broker.new_account()
    handshake = orgs.invite_account_to_organization(
        Target={"Id": member, "Type": "ACCOUNT"})["Handshake"]
    broker.client("organizations", member_root).accept_handshake(HandshakeId=handshake["Id"])
    instance = broker.client("sso-admin").create_instance(Name="surface")["InstanceArn"]
    return {
        "InstanceArn": instance,
        **_identity_store(broker, instance),
        **_permission_set(broker, instance, member),
        "ParentId": root, "RootId": root, "OrganizationalUnitId": ou["Id"],
        "PolicyId": policy["PolicySummary"]["Id"], "TargetId": member, "AccountId": member,
        "ChildId": member, "ResourceId": member, "SourceParentId": root,
        "DestinationParentId": ou["Id"], "HandshakeId": handshake["Id"],
        "Content": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "iam:DeleteUser", "Resource": "*"}]}),
        "Email": "surface-member@example.com", "ServicePrincipal": "iam.amazonaws.com",
        "Type": "SERVICE_CONTROL_POLICY", "Filter": "SERVICE_CONTROL_POLICY",
        "PolicyType": "SERVICE_CONTROL_POLICY", "ChildType": "ACCOUNT",
        "Target": {"Id": member, "Type": "ACCOUNT"},
    }


def _identity_store(broker: Broker, instance: str) -> dict[str, Any]:
    """The instance's identity store with a user in a group: honest values for the
    identitystore actions. Made again where the hostile cases deleted them (a DeleteUser
    whose Revision is null is an honest one)."""
    store = broker.client("sso-admin").describe_instance(InstanceArn=instance)["IdentityStoreId"]
    ids = broker.client("identitystore")
    missing = ids.exceptions.ResourceNotFoundException

    def find(call: Callable[..., Any], key: str, **params: Any) -> str | None:
        try:
            return str(call(IdentityStoreId=store, **params)[key])
        except missing:
            return None

    user = find(ids.get_user_id, "UserId", AlternateIdentifier={"UniqueAttribute": {
        "AttributePath": "userName", "AttributeValue": "surface-person"}}) or \
        ids.create_user(IdentityStoreId=store, UserName="surface-person",
                        DisplayName="Surface", Name={"GivenName": "S", "FamilyName": "P"},
                        Emails=[{"Value": "surface-person@example.com"}])["UserId"]
    group = find(ids.get_group_id, "GroupId", AlternateIdentifier={"UniqueAttribute": {
        "AttributePath": "displayName", "AttributeValue": "Surface"}}) or \
        ids.create_group(IdentityStoreId=store, DisplayName="Surface")["GroupId"]
    membership = find(ids.get_group_membership_id, "MembershipId", GroupId=group,
                      MemberId={"UserId": user}) or \
        ids.create_group_membership(IdentityStoreId=store, GroupId=group,
                                    MemberId={"UserId": user})["MembershipId"]
    return {
        "IdentityStoreId": store, "UserId": user, "GroupId": group, "GroupIds": [group],
        "MembershipId": membership, "MemberId": {"UserId": user},
        "Operations": [{"AttributePath": "displayName", "AttributeValue": "Surface"}],
        "AlternateIdentifier": {"UniqueAttribute": {"AttributePath": "userName",
                                                    "AttributeValue": "surface-person"}},
    }


def _permission_set(broker: Broker, instance: str, member: str) -> dict[str, Any]:
    """A permission set of the instance, assigned to the surface's person in the member
    account: honest values for the sso-admin actions. Found again, or made again, where the
    hostile cases deleted it (an honest DeletePermissionSet)."""
    sso = broker.client("sso-admin")
    found = None
    for arn in sso.list_permission_sets(InstanceArn=instance)["PermissionSets"]:
        described = sso.describe_permission_set(InstanceArn=instance, PermissionSetArn=arn)
        if described["PermissionSet"]["Name"] == "Surface":
            found = arn
    ps = found or sso.create_permission_set(InstanceArn=instance, Name="Surface")[
        "PermissionSet"]["PermissionSetArn"]
    person = _identity_store(broker, instance)["UserId"]
    status = sso.create_account_assignment(
        InstanceArn=instance, TargetId=member, TargetType="AWS_ACCOUNT", PermissionSetArn=ps,
        PrincipalType="USER", PrincipalId=person)["AccountAssignmentCreationStatus"]
    return {
        "PermissionSetArn": ps, "ResourceArn": ps, "PrincipalType": "USER",
        "PrincipalId": person, "TargetType": "AWS_ACCOUNT",
        "ManagedPolicyArn": "arn:aws:iam::aws:policy/IAMReadOnlyAccess",
        "InlinePolicy": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}),
        "PermissionsBoundary": {"ManagedPolicyArn": "arn:aws:iam::aws:policy/PowerUserAccess"},
        "CustomerManagedPolicyReference": {"Name": "surface-policy", "Path": "/"},
        "AccountAssignmentCreationRequestId": status["RequestId"],
        "SessionDuration": "PT2H",
        "InstanceAccessControlAttributeConfiguration": {"AccessControlAttributes": [
            {"Key": "Department", "Value": {"Source": ["${path:enterprise.department}"]}}]},
    }


# -- the Query actions ------------------------------------------------------------------------

def leaves(shape: shapes.Structure, prefix: str = "") -> Iterator[tuple[str, str, shapes.Shape]]:
    """(wire name, member name, shape) of every scalar a structure flattens to; one member of
    each list."""
    for m in shape.members:
        if isinstance(m.shape, shapes.ListOf):
            if isinstance(m.shape.member, shapes.Structure):
                yield from leaves(m.shape.member, f"{prefix}{m.name}.member.1.")
            else:
                yield f"{prefix}{m.name}.member.1", m.name, m.shape.member
        elif isinstance(m.shape, shapes.Structure):
            yield from leaves(m.shape, f"{prefix}{m.name}.")
        else:
            yield f"{prefix}{m.name}", m.name, m.shape


def honest(surface: Surface, name: str, shape: shapes.Shape) -> str:
    if name in surface.good:
        return surface.good[name]
    if isinstance(shape, shapes.Boolean):
        return "true"
    if isinstance(shape, shapes.Integer):
        return str(max(shape.min or 1, 1))
    if isinstance(shape, shapes.String) and shape.enum:
        return shape.enum[0]
    return "surface"


def hostile(surface: Surface, name: str, shape: shapes.Shape) -> Iterator[tuple[str, str]]:
    yield from ESCAPES.items()
    if isinstance(shape, shapes.Integer | shapes.Boolean):
        yield from (("huge", "9" * 400), ("negative", "-1"), ("fraction", "1.5"))
    if name == "WebIdentityToken":
        yield from jwt_variants(surface.json_members[name])
    elif name in surface.json_members:
        yield from json_variants(surface.json_members[name])
    elif name == "SAMLMetadataDocument":
        yield from xml_variants(surface.saml.idp.metadata().encode(), base64_encoded=False)
    elif name == "SAMLAssertion":
        yield from xml_variants(surface.saml.response(), base64_encoded=True)


def _order(op: Operation) -> tuple[bool, str]:
    # What deletes or detaches goes last, so the entities the others name still exist.
    destructive = op.name.startswith(("Delete", "Remove", "Detach", "Untag", "Deactivate"))
    return destructive, op.name


def signed(surface: Surface, op: Operation, body: str, *,
           headers: dict[str, Any] | None = None) -> httpx.Response:
    data = f"Action={op.name}&Version={op.service.version}&{body}".encode()
    request = AWSRequest(method="POST", url=f"{surface.broker.url}/", data=data, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    signer = surface.signer
    SigV4Auth(Credentials(signer.access_key_id, signer.secret_access_key), op.service.name,
              "us-east-1").add_auth(request)
    sent: dict[str, Any] = dict(request.headers.items())
    sent.update(headers or {})
    return surface.http.post("/", content=data, headers=sent)


@pytest.mark.timeout(900)  # thousands of requests on a shared machine
def test_every_query_action_with_hostile_values(surface: Surface) -> None:
    surface.failures.clear()
    operations = sorted(surface.broker.runtime.protocol.operations, key=_order)
    assert len(operations) > 100  # STS and IAM, the control that the surface was found
    sent = 0
    for op in operations:
        all_leaves = list(leaves(op.input))
        required = {m.name for m in op.input.members if m.required}
        base = {wire_name: honest(surface, name, shape) for wire_name, name, shape in all_leaves
                if wire_name.split(".", 1)[0] in required}
        for wire_name, name, shape in all_leaves:
            # A leaf of a list of structures (Tags.member.1.Key) goes with honest siblings
            # (its Value), or the shape parser refuses the element before anything reads it.
            element = wire_name.rsplit(".", 1)[0] + "." if ".member." in wire_name else None
            siblings = {w: honest(surface, n, sh) for w, n, sh in all_leaves
                        if element and w.startswith(element)}
            for what, value in hostile(surface, name, shape):
                params = {**base, **siblings, wire_name: value}
                body = "&".join(f"{quote(k, safe='.')}={v}" for k, v in params.items())
                surface.check(f"{op.name} {wire_name} = {what}", signed(surface, op, body),
                              query=True)
                sent += 1
    assert sent > 3000
    assert not surface.failures, "\n".join(surface.failures[:40])


def test_the_control_honest_values_reach_the_handlers(surface: Surface) -> None:
    """The control of the test above: with honest values the same requests succeed, so what
    it sends hostile values to is the handlers, not a signature check or a parser's door."""
    ops = {op.name: op for op in surface.broker.runtime.protocol.operations}
    for name in ("GetRole", "GetUser", "GetPolicy", "ListRoleTags", "GetSAMLProvider",
                 "SimulatePrincipalPolicy", "AssumeRole", "GetOpenIDConnectProvider"):
        op = ops[name]
        required = {m.name for m in op.input.members if m.required}
        body = "&".join(f"{w}={honest(surface, n, s)}" for w, n, s in leaves(op.input)
                        if w.split(".", 1)[0] in required)
        r = signed(surface, op, body)
        assert r.status_code == 200, (name, r.text)
    # A list of structures with honest siblings reaches the handler too.
    op = ops["AssumeRole"]
    r = signed(surface, op, "&".join(f"{w}={honest(surface, n, sh)}"
                                     for w, n, sh in leaves(op.input)
                                     if w.split(".", 1)[0] in ("RoleArn", "RoleSessionName",
                                                               "Tags")))
    assert r.status_code == 200, r.text
    op = ops["AssumeRoleWithSAML"]
    body = "&".join(f"{w}={honest(surface, n, s)}" for w, n, s in leaves(op.input)
                    if n in ("RoleArn", "PrincipalArn", "SAMLAssertion"))
    body = body.replace(wire(surface.good["RoleArn"]), wire(surface.saml.role_arn)).replace(
        surface.good["RoleArn"], surface.saml.role_arn)
    r = signed(surface, op, body)
    assert r.status_code == 200, r.text


# -- the JSON 1.1 actions (Organizations) -----------------------------------------------------


def _aws_json_problem(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/x-amz-json-1.1"):
        return "not application/x-amz-json-1.1"
    try:
        body = json.loads(response.text)
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or not body.get("__type") or "Message" not in body:
        return "no __type and Message"
    if response.headers.get("x-amzn-errortype") != body["__type"]:
        return "x-amzn-ErrorType differs from __type"
    return None


def signed_json(surface: Surface, target: str, service: str, body: bytes, *,
                headers: dict[str, str] | None = None) -> httpx.Response:
    request = AWSRequest(method="POST", url=f"{surface.broker.url}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    signer = surface.signer
    SigV4Auth(Credentials(signer.access_key_id, signer.secret_access_key), service,
              "us-east-1").add_auth(request)
    sent: dict[str, Any] = dict(request.headers.items())
    sent.update(headers or {})
    return surface.http.post("/", content=body, headers=sent)


def json_honest(shape: shapes.Shape, name: str, good: dict[str, Any]) -> Any:
    if name in good:
        return good[name]
    if isinstance(shape, shapes.Structure):
        return {m.name: json_honest(m.shape, m.name, good) for m in shape.members
                if m.required}
    if isinstance(shape, shapes.ListOf):
        return [json_honest(shape.member, name, good)]
    if isinstance(shape, shapes.Boolean):
        return True
    if isinstance(shape, shapes.Integer):
        return max(shape.min or 1, 1)
    if isinstance(shape, shapes.String) and shape.enum:
        return shape.enum[0]
    return "surface"


# Values of the wrong JSON type, and strings no store keeps, for any member.
JSON_HOSTILE: tuple[tuple[str, Any], ...] = (
    *((f"string {s!r}", s) for s in BAD_STRINGS), ("oversized", "a" * 70_000),
    ("a number", 1e308), ("a huge integer", 10 ** 400), ("negative", -1), ("a fraction", 1.5),
    ("a boolean", True), ("a list", ["x"]), ("an object", {"x": "y"}), ("null", None),
    ("a list of nulls", [None]), ("non-ASCII", "é☃😀\u202e"), ("CR LF", "a\r\nb"))


def json_paths(shape: shapes.Structure, path: tuple[str, ...] = ()
               ) -> Iterator[tuple[tuple[str, ...], shapes.Shape]]:
    """Every member of the input (one element of each list, "0"), with its shape."""
    for m in shape.members:
        here = (*path, m.name)
        yield here, m.shape
        inner = m.shape.member if isinstance(m.shape, shapes.ListOf) else m.shape
        if isinstance(inner, shapes.Structure):
            yield from json_paths(inner, (*here, "0") if inner is not m.shape else here)


def _with(document: dict[str, Any], path: tuple[str, ...], value: Any,
          shape: shapes.Structure, good: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(document))
    node: Any = out
    current: shapes.Shape = shape
    for step in path[:-1]:
        if step == "0":
            if not node:
                node.append({})
            node = node[0]
            continue
        member = current.member(step) if isinstance(current, shapes.Structure) else None
        assert member is not None
        current = member.shape.member if isinstance(member.shape, shapes.ListOf) \
            else member.shape
        if step not in node:
            node[step] = [] if isinstance(member.shape, shapes.ListOf) else {}
            if isinstance(member.shape, shapes.ListOf) and isinstance(current,
                                                                      shapes.Structure):
                node[step].append(json_honest(current, step, good))
        node = node[step]
    node[path[-1]] = value
    return out


@pytest.mark.timeout(900)
def test_every_json_action_with_hostile_values(surface: Surface) -> None:
    surface.failures.clear()
    protocol = surface.broker.runtime.json_protocol
    operations = sorted(protocol.operations, key=lambda op: _order(op))  # type: ignore[arg-type]
    assert len(operations) >= 40  # Organizations, the control that the surface was found
    good = surface.json_good
    sent = 0
    for op in operations:
        target = f"{op.service.target}.{op.name}"
        base = json_honest(op.input, "", good)
        for path, _ in json_paths(op.input):
            for what, value in JSON_HOSTILE:
                try:
                    body = json.dumps(_with(base, path, value, op.input, good)).encode()
                except ValueError:
                    continue
                surface.check_json(f"{op.name} {'.'.join(path)} = {what}",
                                   signed_json(surface, target, op.service.name, body))
                sent += 1
        # The document as a whole: not JSON, not UTF-8, repeated members, NaN, deep nesting.
        for what, body in (("not JSON", b"{not json"), ("not UTF-8", b'{"a": "\xff"}'),
                           ("repeated member", b'{"Name": "a", "Name": "b"}'),
                           ("NaN", b'{"MaxResults": NaN}'), ("an array", b"[]"),
                           ("deep", b"[" * 100_000 + b"]" * 100_000),
                           ("lone surrogate escape", b'{"Name": "\\ud800"}')):
            surface.check_json(f"{op.name} body {what}",
                               signed_json(surface, target, op.service.name, body))
            sent += 1
    for what, target in (("unknown action", "AWSOrganizationsV20161128.Nothing"),
                         ("unknown service", "Nobody.Nothing"), ("empty", "")):
        surface.check_json(f"target {what}",
                           signed_json(surface, target, "organizations", b"{}"))
    # A target that is not UTF-8 (unsigned: a signer cannot carry it).
    surface.check_json("target not UTF-8", surface.http.post("/", content=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": b"AWSOrganizationsV20161128.\xff"}))
    assert sent > 2000
    assert not surface.failures, "\n".join(surface.failures[:40])


def test_the_json_control_honest_values_reach_the_handlers(surface: Surface) -> None:
    """The control: the same requests with honest values succeed."""
    good = surface.json_good
    good.update(_identity_store(surface.broker, good["InstanceArn"]))
    good.update(_permission_set(surface.broker, good["InstanceArn"], good["AccountId"]))
    # By target: services share action names (ListTagsForResource).
    ops = {f"{op.service.target}.{op.name}": op
           for op in surface.broker.runtime.json_protocol.operations}
    for service, names in (
            ("AWSOrganizationsV20161128", (
                "DescribeOrganization", "ListRoots", "DescribeOrganizationalUnit",
                "DescribePolicy", "ListPoliciesForTarget", "ListChildren", "DescribeAccount",
                "ListTagsForResource")),
            ("SWBExternalService", (
                "DescribeInstance", "ListInstances", "DescribePermissionSet",
                "ListPermissionSets", "UpdatePermissionSet", "ListAccountAssignments",
                "ListAccountAssignmentsForPrincipal", "ListManagedPoliciesInPermissionSet",
                "GetInlinePolicyForPermissionSet", "ListPermissionSetsProvisionedToAccount",
                "ListAccountsForProvisionedPermissionSet", "ListTagsForResource",
                "DescribeAccountAssignmentCreationStatus",
                "ListAccountAssignmentCreationStatus")),
            ("AWSIdentityStore", (
                "DescribeUser", "ListUsers", "GetUserId", "UpdateUser", "DescribeGroup",
                "ListGroups", "UpdateGroup", "DescribeGroupMembership", "ListGroupMemberships",
                "ListGroupMembershipsForMember", "IsMemberInGroups",
                "GetGroupMembershipId"))):
        for name in names:
            op = ops[f"{service}.{name}"]
            body = json.dumps(json_honest(op.input, "", good)).encode()
            r = signed_json(surface, f"{service}.{name}", op.service.name, body)
            assert r.status_code == 200, (name, r.text)
    # Attributes for access control: one configuration per instance, so from none (the
    # hostile cases may have left one) through each of the four actions in turn.
    done: set[str] = set()
    for name in ("Delete", "Create", "Describe", "Update", "Delete"):
        action = f"{name}InstanceAccessControlAttributeConfiguration"
        op = ops[f"SWBExternalService.{action}"]
        body = json.dumps(json_honest(op.input, "", good)).encode()
        r = signed_json(surface, f"SWBExternalService.{action}", op.service.name, body)
        first = name == "Delete" and action not in done
        done.add(action)
        assert r.status_code == 200 or (first and "ResourceNotFound" in r.text), (action, r.text)


# -- the rest-json actions (sso, sso-oidc) ----------------------------------------------------

# Every rest-json route (method, path): its actions take every method (a wrong one is an AWS
# error), so the table names the actions' own.
REST_ROUTES = {
    ("GET", "/assignment/accounts"), ("GET", "/assignment/roles"),
    ("GET", "/federation/credentials"), ("POST", "/logout"), ("POST", "/client/register"),
    ("POST", "/device_authorization"), ("POST", "/token")}
REST_HEADERS = (b"\xed\xa0\x80", b"\xff\xfe", b"a\xc0\xafb", "é".encode("latin-1"), b"x" * 9000)


def _aws_rest_problem(response: httpx.Response) -> str | None:
    if response.headers.get("content-type") != "application/json":
        return "not application/json"
    try:
        body = json.loads(response.text)
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or not (body.get("message") or body.get("error")):
        return "no message or error"
    if not response.headers.get("x-amzn-errortype", "").endswith("Exception"):
        return "no x-amzn-ErrorType"
    return None


def check_rest(surface: Surface, what: str, response: httpx.Response) -> None:
    problems = []
    if response.status_code >= 500:
        problems.append(f"{response.status_code}: {response.text[:300]}")
    elif response.status_code >= 400:
        problem = _aws_rest_problem(response)
        if problem:
            problems.append(f"{response.status_code}, {problem}: {response.text[:200]}")
    problems += [f"logged: {line}" for line in surface.watch.take()]
    if problems:
        surface.failures.append(f"{what}: " + "; ".join(problems))


def _rest_good(surface: Surface) -> dict[str, Any]:
    """Honest sso-oidc and sso values: a registered client, an instance's start URL, a
    device code, and an access and a refresh token of a directory user."""
    broker = surface.broker
    runtime = broker.runtime
    account, _ = broker.new_account()
    oauth = runtime.oauth

    async def make() -> dict[str, Any]:
        ic = runtime.identity_center
        instance = await ic.instances.create(account, name="surface-rest", client_token=None,
                                             tags=(), organization=False)
        user = await ic.directory.create_user(instance, {
            "UserName": "surface-rest", "DisplayName": "Surface",
            "Name": {"GivenName": "S", "FamilyName": "R"}}, "surface")
        made = await oauth.register(name="surface", client_type="public",
                                    scopes=["sso:account:access"], redirect_uris=[],
                                    grant_types=None, issuer_url=None)
        start_url = oauth.start_url(instance.identity_store_id)
        started = await oauth.start_device(made.client.client_id, made.secret, start_url)
        await oauth.approve_device(started.user_code, account_id=account,
                                   identity_store_id=instance.identity_store_id,
                                   user_id=user.user_id)
        tokens = await oauth.create_token(
            client_id=made.client.client_id, client_secret=made.secret,
            grant_type="urn:ietf:params:oauth:grant-type:device_code",
            device_code=started.device_code)
        waiting = await oauth.start_device(made.client.client_id, made.secret, start_url)
        return {"clientId": made.client.client_id, "clientSecret": made.secret,
                "startUrl": start_url, "deviceCode": waiting.device_code,
                "accessToken": tokens.access_token, "refreshToken": tokens.refresh_token,
                "accountId": account, "roleName": "surface", "clientName": "surface",
                "clientType": "public", "grantType": "refresh_token",
                "redirectUri": "http://127.0.0.1/oauth/callback"}
    return broker.server.call(make())


def _rest_send(surface: Surface, op: Any, doc: dict[str, Any], *, body: bytes | None = None,
               query: dict[str, str] | None = None,
               headers: dict[str, bytes] | None = None) -> httpx.Response:
    """The request of ``op`` carrying ``doc`` where the model puts each member (query values
    already on the wire)."""
    wire_query = dict(query or {})
    sent_headers: dict[str, Any] = {"Content-Type": "application/json"}
    content: dict[str, Any] = {}
    for name, value in doc.items():
        where = op.locations.get(name)
        if where is None:
            content[name] = value
        elif where[0] == "querystring":
            wire_query.setdefault(where[1], wire(str(value)))
        else:
            sent_headers[where[1]] = str(value)
    sent_headers.update(headers or {})
    url = op.path + ("?" + "&".join(f"{k}={v}" for k, v in wire_query.items())
                     if wire_query else "")
    payload = body if body is not None else (json.dumps(content).encode() if content else b"")
    return surface.http.request(op.method, url, content=payload, headers=sent_headers)


@pytest.mark.timeout(900)
def test_every_rest_action_with_hostile_values(surface: Surface) -> None:
    """Each member of each sso and sso-oidc action, where the model puts it (the JSON body,
    the query string, a header), with each hostile value, the rest honest (a live client and
    tokens, so that each value reaches as deep as it can)."""
    surface.failures.clear()
    good = _rest_good(surface)
    operations = surface.broker.runtime.rest_protocol.operations
    assert {(op.method, op.path) for op in operations} == REST_ROUTES
    sent = 0
    for op in operations:
        base = json_honest(op.input, "", good)
        for member in op.input.members:
            where = op.locations.get(member.name)
            if where is None:
                for what, value in JSON_HOSTILE:
                    try:
                        doc = _with(base, (member.name,), value, op.input, good)
                        json.dumps(doc)
                    except ValueError:
                        continue
                    check_rest(surface, f"{op.name} {member.name} = {what}",
                               _rest_send(surface, op, doc))
                    sent += 1
            elif where[0] == "querystring":
                others = {k: v for k, v in base.items() if k != member.name}
                for what, value in ESCAPES.items():
                    value = "a" * 16_000 if what == "oversized" else value
                    check_rest(surface, f"{op.name} ?{where[1]}= {what}", _rest_send(
                        surface, op, others, query={where[1]: value}))
                    sent += 1
            else:
                others = {k: v for k, v in base.items() if k != member.name}
                for value in REST_HEADERS:
                    check_rest(surface, f"{op.name} {where[1]}: {value[:20]!r}", _rest_send(
                        surface, op, others, headers={where[1]: value}))
                    sent += 1
        for what, body in (("not JSON", b"{not json"), ("not UTF-8", b'{"a": "\xff"}'),
                           ("repeated member", b'{"clientId": "a", "clientId": "b"}'),
                           ("NaN", b'{"clientId": NaN}'), ("an array", b"[]"),
                           ("deep", b"[" * 100_000 + b"]" * 100_000),
                           ("lone surrogate escape", b'{"clientName": "\\ud800"}')):
            check_rest(surface, f"{op.name} body {what}", _rest_send(surface, op, base,
                                                                      body=body))
            sent += 1
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
            r = surface.http.request(method, op.path)
            if method != "HEAD":
                check_rest(surface, f"{method} {op.path}", r)
            else:
                assert r.status_code < 500, r.status_code
            sent += 1
        for header in ("User-Agent", "X-Forwarded-For", "Content-Type"):
            check_rest(surface, f"{op.name} {header}", _rest_send(
                surface, op, base, headers={header: b"\xed\xa0\x80"}))
    assert sent > 300
    assert not surface.failures, "\n".join(surface.failures[:40])


def test_the_rest_control_honest_values_reach_the_handlers(surface: Surface) -> None:
    good = _rest_good(surface)
    ops = {op.name: op for op in surface.broker.runtime.rest_protocol.operations}
    for name in ("ListAccounts", "ListAccountRoles", "RegisterClient"):
        doc = json_honest(ops[name].input, "", good)
        r = _rest_send(surface, ops[name], doc)
        assert r.status_code == 200, (name, r.text)
    r = _rest_send(surface, ops["CreateToken"], {**json_honest(ops["CreateToken"].input, "",
                                                               good),
                                                  "refreshToken": good["refreshToken"]})
    assert r.status_code == 200, r.text  # the refresh token, redeemed once
    assert not surface.watch.take()


# Strings XML can carry (it cannot carry NUL, lone surrogates or most control characters) that
# a careless reader of a signed assertion could still trip over.
XML_TEXT = ("é☃😀\u202e", "a\r\nSet-Cookie: x=y", "x" * 5_000, "a\tb", "<&>\"'", " ", "\ufeff",
            "../../etc/passwd", "%ED%A0%80", "\\ud800", "arn:aws:iam::123456789012:role/x,y")


@pytest.mark.timeout(600)
def test_signed_saml_with_hostile_values(surface: Surface) -> None:
    """Honestly signed assertions with hostile text where an identity provider writes it (the
    session name, the subject, session tags, the source identity, any attribute), through
    AssumeRoleWithSAML and the browser's /saml: past the signature, into what reads them."""
    surface.failures.clear()
    saml = surface.saml
    ops = {op.name: op for op in surface.broker.runtime.protocol.operations}
    for text in XML_TEXT:
        for what, changes in (
                ("session name", {"session_name": text}), ("NameID", {"name_id": text}),
                ("tag value", {"principal_tags": {"team": text}}),
                ("tag key", {"principal_tags": {text[:128]: "blue"}}),
                ("source identity", {"source_identity": text}),
                ("attribute", {"attributes": {text[:256]: [text]}}),
                ("session duration", {"session_duration": text})):
            response = saml.response(**changes)
            body = (f"RoleArn={wire(saml.role_arn)}&PrincipalArn={wire(saml.provider_arn)}"
                    f"&SAMLAssertion={wire(encode(response))}")
            surface.check(f"AssumeRoleWithSAML {what} {text[:20]!r}",
                          signed(surface, ops["AssumeRoleWithSAML"], body), query=True)
            surface.check(f"/saml {what} {text[:20]!r}", surface.http.post(
                "/saml", content=f"SAMLResponse={wire(encode(saml.response(**changes)))}",
                headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert not surface.failures, "\n".join(surface.failures[:40])


def test_hostile_headers_on_query_actions(surface: Surface) -> None:
    surface.failures.clear()
    ops = {op.name: op for op in surface.broker.runtime.protocol.operations}
    bad = [b"\xed\xa0\x80", b"\xff\xfe", b"a\xc0\xafb", "é".encode("latin-1")]
    for value in bad:
        for header in ("User-Agent", "X-Amz-Security-Token", "X-Forwarded-For", "Host",
                       "Authorization", "X-Amz-Date", "X-Amz-Content-Sha256"):
            for name in ("GetCallerIdentity", "ListUsers"):
                r = signed(surface, ops[name], "", headers={header: value})
                surface.check(f"{name} with {header}: {value!r}", r, query=True)
    assert not surface.failures, "\n".join(surface.failures[:40])


# -- the web routes -------------------------------------------------------------------------

# Every route, with the query parameters and form fields it reads (the forms' fields are
# checked against the templates below) and the cookies it looks at.
ROUTES: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("GET", "/healthz"): {},
    ("GET", "/readyz"): {},
    ("GET", "/saml/metadata"): {},
    ("POST", "/saml"): {"form": ("SAMLResponse", "RelayState")},
    ("POST", "/saml/choose"): {"form": ("csrf", "role"), "cookies": ("broker-saml-choice",)},
    ("GET", "/saml/login"): {"query": ("provider", "account", "RelayState"),
                            "cookies": ("broker-saml-request",)},
    ("GET", "/console"): {"query": ("switched",), "cookies": ("broker-session",)},
    ("POST", "/console/signout"): {"form": ("csrf",), "cookies": ("broker-session",)},
    ("POST", "/console/switch-role"): {"form": ("csrf", "role_arn", "session_name"),
                                      "cookies": ("broker-session",)},
    ("GET", "/console/security-credentials"): {"query": ("done",),
                                              "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/password"): {
        "form": ("csrf", "username", "current_password", "new_password", "confirm_password"),
        "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/keys"): {"form": ("csrf", "action", "key_id"),
                                                    "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/mfa"): {"form": ("csrf", "name"),
                                                   "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/mfa/enable"): {
        "form": ("csrf", "serial", "code1", "code2"), "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/mfa/remove"): {"form": ("csrf", "serial"),
                                                          "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/cli"): {"form": ("csrf",),
                                                   "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/webauthn/options"): {
        "form": ("csrf",), "cookies": ("broker-session",)},
    ("POST", "/console/security-credentials/webauthn"): {
        "form": ("csrf", "name", "credential"), "cookies": ("broker-session",)},
    ("GET", "/federation"): {"query": ("Action", "Session", "SessionDuration", "SigninToken",
                                       "Destination", "Issuer"),
                             "cookies": ("broker-session",)},
    ("GET", "/gateway/auth"): {"headers": ("X-Original-URL",), "cookies": ("broker-session",)},
    ("GET", "/dev/signin"): {"cookies": ("broker-demo-login",)},
    ("POST", "/dev/signin"): {"form": ("csrf", "person", "password"),
                             "cookies": ("broker-demo-login",)},
    ("POST", "/dev/choose"): {"form": ("csrf", "role"), "cookies": ("broker-demo-choice",)},
    ("GET", "/static"): {"path": ("style.css",)},
    ("GET", "/signin"): {"cookies": ("broker-signin",)},
    ("POST", "/signin"): {"form": ("csrf", "kind", "account", "username", "password", "email"),
                         "cookies": ("broker-signin",)},
    ("POST", "/signin/mfa"): {"form": ("csrf", "code", "assertion"),
                             "cookies": ("broker-signin", "broker-signin-mfa")},
    ("POST", "/signin/enrol"): {"form": ("csrf", "code1", "code2"),
                               "cookies": ("broker-signin", "broker-signin-enrol")},
    ("POST", "/signin/change"): {"form": ("csrf", "password", "new_password",
                                          "confirm_password"),
                                "cookies": ("broker-signin", "broker-signin-change")},
    # The access portal (Identity Center's directory users).
    ("GET", "/start"): {"query": ("directory",)},
    ("GET", "/start/device"): {"query": ("user_code",), "cookies": ("broker-portal-session",)},
    ("POST", "/start/device"): {"form": ("csrf", "user_code", "action"),
                               "cookies": ("broker-portal-session",)},
    ("GET", "/authorize"): {"query": ("response_type", "client_id", "redirect_uri", "state",
                                      "code_challenge", "code_challenge_method", "scopes"),
                            "cookies": ("broker-portal-session",)},
    ("POST", "/authorize"): {"form": ("csrf", "action", "response_type", "client_id",
                                      "redirect_uri", "state", "code_challenge",
                                      "code_challenge_method", "scopes"),
                             "cookies": ("broker-portal-session",)},
    ("GET", "/start/{identity_store_id}"): {"query": ("done",),
                                            "cookies": ("broker-portal",
                                                        "broker-portal-session")},
    ("POST", "/start/{identity_store_id}"): {"form": ("csrf", "username", "password"),
                                             "cookies": ("broker-portal",)},
    ("POST", "/start/{identity_store_id}/change"): {
        "form": ("csrf", "username", "new_password", "confirm_password"),
        "cookies": ("broker-portal", "broker-portal-step")},
    ("GET", "/start/{identity_store_id}/invitation"): {"query": ("token",),
                                                       "cookies": ("broker-portal",)},
    ("POST", "/start/{identity_store_id}/invitation"): {
        "form": ("csrf", "token", "username", "new_password", "confirm_password"),
        "cookies": ("broker-portal",)},
    ("POST", "/start/{identity_store_id}/enrol"): {
        "form": ("csrf", "code"), "cookies": ("broker-portal", "broker-portal-step")},
    ("POST", "/start/{identity_store_id}/mfa"): {
        "form": ("csrf", "code", "assertion"),
        "cookies": ("broker-portal", "broker-portal-step")},
    ("POST", "/start/{identity_store_id}/console"): {
        "form": ("csrf", "account_id", "role_name"), "cookies": ("broker-portal-session",)},
    ("POST", "/start/{identity_store_id}/credentials"): {
        "form": ("csrf", "account_id", "role_name"), "cookies": ("broker-portal-session",)},
    ("POST", "/start/{identity_store_id}/signout"): {
        "form": ("csrf",), "cookies": ("broker-portal-session",)},
    ("POST", "/start/{identity_store_id}/webauthn/options"): {
        "form": ("csrf",), "cookies": ("broker-portal-session",)},
    ("POST", "/start/{identity_store_id}/webauthn"): {
        "form": ("csrf", "name", "credential"), "cookies": ("broker-portal-session",)},
    ("GET", "/start/{identity_store_id}/saml/metadata"): {},
    ("GET", "/start/{identity_store_id}/saml/login"): {"query": ("next",)},
    ("POST", "/start/{identity_store_id}/saml/acs"): {
        "form": ("SAMLResponse", "RelayState"), "cookies": ("broker-portal-saml",)},
    ("GET", "/start/{identity_store_id}/oidc/login"): {"query": ("next",)},
    ("GET", "/start/{identity_store_id}/oidc/callback"): {
        "query": ("code", "state", "error", "error_description"),
        "cookies": ("broker-portal-oidc",)},
}
TEMPLATES = Path(__file__).resolve().parents[2] / "broker" / "web" / "templates"


def test_the_table_covers_every_route_and_every_form_field(surface: Surface) -> None:
    mounted = set()
    for route in surface.broker.server.app.web.routes:
        if isinstance(route, Mount):
            mounted.add(("GET", route.path))
        else:
            assert isinstance(route, Route)
            # Starlette answers HEAD wherever it answers GET (web_cases sends both).
            mounted |= {(method, route.path) for method in route.methods or ()
                        if method != "HEAD"}
    assert mounted == set(ROUTES), "routes without hostile cases (or gone): " \
        f"{sorted(mounted ^ set(ROUTES))}"
    # The rest-json actions, routed before Starlette's routes (any method): their own table.
    rest = {(op.method, op.path) for op in surface.broker.runtime.rest_protocol.operations}
    assert rest == REST_ROUTES, f"rest-json routes without hostile cases: {rest ^ REST_ROUTES}"
    assert not {path for _, path in rest} & {path for _, path in mounted}
    forms = 0
    for template in TEMPLATES.glob("*.html"):
        for form in lxml.html.fromstring(template.read_text()).iter("form"):
            action, method = form.get("action"), (form.get("method") or "get").upper()
            if "{{" in (action or ""):
                continue
            listed = ROUTES[(method, action)]
            fields = {e.get("name") for e in form.iter("input", "select", "textarea", "button")
                      if e.get("name")}
            assert fields <= set(listed.get("form", ()) + listed.get("query", ())), \
                (template.name, action, fields)
            forms += 1
    assert forms >= 5


def _form_fields(response: httpx.Response, action: str) -> dict[str, str]:
    doc = lxml.html.fromstring(response.text)
    form = doc.xpath(f"//form[@action='{action}']")[0]
    return {e.get("name"): e.get("value") or "" for e in form.iter("input") if e.get("name")}


def _cookie_header(**cookies: str) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


ONCE = "(its own hostile value)"  # a case that carries its hostile value itself


def web_cases(surface: Surface) -> Iterator[tuple[str, Callable[[str], httpx.Response]]]:
    """(what, send): ``send`` takes a hostile wire value and puts it in one place of one
    route's request, everything else honest; a case whose name ends with ONCE carries its own
    and is sent once."""
    broker, http, saml, world = surface.broker, surface.http, surface.saml, surface.console
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    session_cookie, request_cookie, choice_cookie, login_cookie_name, demo_choice = (
        surface.cookie(name) for name in ("broker-session", "broker-saml-request",
                                          "broker-saml-choice", "broker-demo-login",
                                          "broker-demo-choice"))

    def session() -> str:
        """A fresh console session cookie (through the federation endpoint)."""
        token = http.get("/federation", params={
            "Action": "getSigninToken", "Session": session_param(world.assume())}).json()
        r = http.get("/federation", params={"Action": "login", "Destination": "/console",
                                            "SigninToken": token["SigninToken"]})
        return set_cookies(r)[session_cookie].value

    cookie = session()
    console_page = http.get("/console", headers={"Cookie": f"{session_cookie}={cookie}"})
    csrf = _form_fields(console_page, "/console/signout")["csrf"]
    honest_form = {"csrf": csrf, "role_arn": world.chained_arn, "session_name": "surface"}

    def body(fields: dict[str, str], name: str, value: str) -> str:
        return "&".join(f"{k}={value if k == name else wire(v)}" for k, v in fields.items())

    for path in ("/healthz", "/readyz", "/saml/metadata", "/console", "/saml/login",
                 "/dev/signin", "/gateway/auth", "/signin", "/nowhere"):
        yield f"GET {path}?x=", lambda v, p=path: http.get(f"{p}?x={v}&{v}={v}")
        yield f"HEAD {path}?x=", lambda v, p=path: http.head(f"{p}?x={v}&{v}={v}")
        yield f"GET {path} path", lambda v, p=path: http.get(f"{p}/{v}")
        yield f"GET {path} cookie", lambda v, p=path: http.get(p, headers={
            "Cookie": f"{session_cookie}={v}; {request_cookie}={v}; {login_cookie_name}={v}"})
    yield "GET /static/", lambda v: http.get(f"/static/{v}")
    yield "GET /static/ cookie", lambda v: http.get("/static/style.css", headers={"Cookie": v})

    # The federation endpoint.
    creds = world.assume()
    for name in ("sessionId", "sessionKey", "sessionToken"):
        def spoiled(v: str, name: str = name, creds: Creds = creds) -> httpx.Response:
            doc = json.loads(session_param(creds))
            # As JSON text: what is not UTF-8 becomes lone surrogates, escaped by json.dumps.
            text = _unwire(v).decode("utf-8", "surrogateescape")
            doc[name] = text
            return http.get("/federation?Action=getSigninToken&Session=" +
                            wire(json.dumps(doc)))
        yield f"getSigninToken Session.{name}", spoiled
    for what, value in json_variants(json.loads(session_param(creds))):
        yield f"getSigninToken Session {what} {ONCE}", lambda v, value=value: http.get(
            f"/federation?Action=getSigninToken&Session={value}")
    yield "getSigninToken Session=", lambda v: http.get(
        f"/federation?Action=getSigninToken&Session={v}")
    yield "getSigninToken SessionDuration=", lambda v: http.get(
        f"/federation?Action=getSigninToken&SessionDuration={v}&Session="
        f"{wire(session_param(creds))}")
    for name in ("Action", "SigninToken", "Destination", "Issuer"):
        params = {"Action": "login", "Destination": "/console", "SigninToken": "x" * 40,
                  "Issuer": APP}
        yield f"login {name}=", lambda v, name=name, params=params: http.get(
            "/federation?" + body(params, name, v))
    yield "logout Destination=", lambda v: http.get(f"/federation?Action=logout&Destination={v}",
                                                    headers={"Cookie": f"{session_cookie}={v}"})

    # SAML.
    provider = saml.provider_arn.rsplit("/", 1)[1]
    for name in ("provider", "account", "RelayState"):
        params = {"provider": provider, "account": broker.account_id, "RelayState": "/console"}
        yield f"saml/login {name}=", lambda v, name=name, params=params: http.get(
            "/saml/login?" + body(params, name, v))
    yield "saml RelayState=", lambda v: http.post("/saml", headers=form_type, content=(
        f"SAMLResponse={wire(encode(saml.response()))}&RelayState={v}"))
    yield "saml SAMLResponse=", lambda v: http.post("/saml", headers=form_type,
                                                    content=f"SAMLResponse={v}")
    for what, value in xml_variants(saml.response(), base64_encoded=True):
        yield f"saml SAMLResponse {what} {ONCE}", lambda v, value=value: http.post(
            "/saml", headers=form_type, content=f"SAMLResponse={value}")
    yield "saml with an answer's cookie", lambda v: http.post(
        "/saml", headers={**form_type, "Cookie": f"{request_cookie}={v}"},
        content=f"SAMLResponse={wire(encode(saml.response(in_response_to='_' + 'a' * 40)))}")
    def saml_chooser() -> tuple[str, dict[str, str]]:
        """A fresh role chooser (it is taken once): its cookie and its honest form."""
        r = http.post("/saml", headers=form_type,
                      content=f"SAMLResponse={wire(encode(surface.chooser.response()))}")
        assert r.status_code == 200, r.text
        role = next(iter(surface.chooser.roles.values()))
        return set_cookies(r)[choice_cookie].value, {
            "csrf": _form_fields(r, "/saml/choose")["csrf"],
            "role": f"{role},{surface.chooser.provider_arn}"}

    for name in ("csrf", "role"):
        def choose(v: str, name: str = name) -> httpx.Response:
            handle, fields = saml_chooser()
            return http.post("/saml/choose", content=body(fields, name, v), headers={
                **form_type, "Cookie": f"{choice_cookie}={handle}"})
        yield f"saml/choose {name}=", choose
    yield "saml/choose cookie", lambda v: http.post(
        "/saml/choose", headers={**form_type, "Cookie": f"{choice_cookie}={v}"},
        content=body(saml_chooser()[1], "", ""))

    # The console.
    for name in honest_form:
        yield f"switch-role {name}=", lambda v, name=name: http.post(
            "/console/switch-role", headers={**form_type, "Cookie": f"{session_cookie}={cookie}"},
            content=body(honest_form, name, v))
    yield "signout csrf=", lambda v: http.post(
        "/console/signout", headers={**form_type, "Cookie": f"{session_cookie}={cookie}"},
        content=f"csrf={v}")
    yield "console switched=", lambda v: http.get(
        f"/console?switched={v}", headers={"Cookie": f"{session_cookie}={cookie}"})

    def header_value(v: str) -> bytes:
        """The raw bytes a header can carry (HTTP allows any but CR, LF and NUL)."""
        return f"{APP}/".encode() + _unwire(v)[:2000].translate(None, b"\r\n\x00")

    for header in ("X-Original-URL", "X-Forwarded-Host", "X-Forwarded-Uri", "User-Agent"):
        yield f"gateway {header}", lambda v, header=header: http.get(
            "/gateway/auth", headers={"Cookie": f"{session_cookie}={cookie}",
                                      header: header_value(v)})
        yield f"gateway HEAD {header}", lambda v, header=header: http.head(
            "/gateway/auth", headers={"Cookie": f"{session_cookie}={cookie}",
                                      header: header_value(v)})
        yield f"console {header}", lambda v, header=header: http.get(
            "/console", headers={"Cookie": f"{session_cookie}={cookie}",
                                 header: header_value(v)})

    # The security credentials page of a user signed in with the broker's own sign-in (before
    # the hostile sign-ins below count against this address).
    http.cookies.clear()
    signin_page = http.get("/signin")
    own = http.post("/signin", headers={**form_type, "Cookie": "{}={}".format(
        surface.cookie("broker-signin"), set_cookies(signin_page)[
            surface.cookie("broker-signin")].value)}, content=body({
        "csrf": _form_fields(signin_page, "/signin")["csrf"], "kind": "iam",
        "account": broker.account_id, "username": "surface-own",
        "password": "Surface-password-1"}, "", ""))
    assert own.status_code == 303, own.text
    own_cookie = {"Cookie": f"{session_cookie}={set_cookies(own)[session_cookie].value}"}
    shown = http.get("/console/security-credentials", headers=own_cookie)
    assert shown.status_code == 200, shown.text
    own_csrf = _form_fields(shown, "/console/security-credentials/cli")["csrf"]
    own_key = lxml.html.fromstring(shown.text).xpath(
        "//form[@action='/console/security-credentials/keys']//input[@name='key_id']/@value")[0]
    serial = f"arn:aws:iam::{broker.account_id}:mfa/surface-own-none"
    own_forms = {
        "password": {"csrf": own_csrf, "username": "surface-own",
                     "current_password": "Wrong-password-1", "new_password": "Surface-pw-2x",
                     "confirm_password": "Surface-pw-2x"},
        "keys": {"csrf": own_csrf, "action": "deactivate", "key_id": own_key},
        "mfa": {"csrf": own_csrf, "name": "surface-own-device"},
        "mfa/enable": {"csrf": own_csrf, "serial": serial, "code1": "123456",
                       "code2": "654321"},
        "mfa/remove": {"csrf": own_csrf, "serial": serial},
        "cli": {"csrf": own_csrf},
        "webauthn/options": {"csrf": own_csrf},
        "webauthn": {"csrf": own_csrf, "name": "key",
                     "credential": json.dumps({"id": "AAAA", "type": "public-key"})},
    }
    for route, fields in own_forms.items():
        for name in fields:
            yield f"security-credentials/{route} {name}=", \
                lambda v, route=route, fields=fields, name=name: http.post(
                    f"/console/security-credentials/{route}", headers={**form_type, **own_cookie},
                    content=body(fields, name, v))
        yield f"security-credentials/{route} cookie", lambda v, route=route: http.post(
            f"/console/security-credentials/{route}", headers={
                **form_type, "Cookie": f"{session_cookie}={v}"}, content=f"csrf={own_csrf}")
    yield "security-credentials done=", lambda v: http.get(
        f"/console/security-credentials?done={v}", headers=own_cookie)
    yield "security-credentials cookie", lambda v: http.get(
        "/console/security-credentials", headers={"Cookie": f"{session_cookie}={v}"})

    # Development mode's sign-in.
    http.cookies.clear()
    page = http.get("/dev/signin")
    login_cookie = set_cookies(page)[login_cookie_name].value
    # An honest demo person and password, read from the page (development mode shows them).
    cells = lxml.html.fromstring(page.text).xpath("//tbody/tr[1]/td/code/text()")
    honest_demo = {**_form_fields(page, "/dev/signin"), "person": cells[0],
                   "password": cells[1]}
    for name in ("csrf", "person", "password"):
        yield f"dev/signin {name}=", lambda v, name=name: http.post(
            "/dev/signin", headers={**form_type, "Cookie": f"{login_cookie_name}={login_cookie}"},
            content=body(honest_demo, name, v))
    def demo_chooser() -> tuple[str, dict[str, str]]:
        """A fresh demo role chooser: its cookie and its honest form."""
        http.cookies.clear()
        r = http.post("/dev/signin", content=body(honest_demo, "", ""), headers={
            **form_type, "Cookie": f"{login_cookie_name}={login_cookie}"})
        assert r.status_code == 200, r.text
        fields = _form_fields(r, "/dev/choose")
        role = lxml.html.fromstring(r.text).xpath(
            "//form[@action='/dev/choose']//*[@name='role']/@value")[0]
        return set_cookies(r)[demo_choice].value, {"csrf": fields["csrf"], "role": role}

    for name in ("csrf", "role"):
        def demo_choose(v: str, name: str = name) -> httpx.Response:
            handle, fields = demo_chooser()
            return http.post("/dev/choose", content=body(fields, name, v), headers={
                **form_type, "Cookie": f"{demo_choice}={handle}"})
        yield f"dev/choose {name}=", demo_choose
    # The broker's own sign-in: a user with a password and an MFA device.
    signin_cookie = surface.cookie("broker-signin")
    mfa_cookie = surface.cookie("broker-signin-mfa")
    http.cookies.clear()
    page = http.get("/signin")
    browser_secret = set_cookies(page)[signin_cookie].value
    honest_signin = {"csrf": _form_fields(page, "/signin")["csrf"], "kind": "iam",
                     "account": broker.account_id, "username": "surface-signin",
                     "password": "Surface-password-1", "email": "root@example.com"}
    # The pending MFA step first: the hostile passwords below lock the user out.
    http.cookies.clear()
    pending = http.post("/signin", content=body(honest_signin, "", ""), headers={
        **form_type, "Cookie": f"{signin_cookie}={browser_secret}"})
    assert pending.status_code == 200, pending.text  # the MFA step
    handle = set_cookies(pending)[mfa_cookie].value
    honest_mfa = {"csrf": _form_fields(pending, "/signin/mfa")["csrf"], "code": "123456"}
    # A forced password change, pending for a user whose profile requires a reset.
    http.cookies.clear()
    changing = http.post("/signin", content=body(
        {**honest_signin, "username": "surface-reset"}, "", ""),
        headers={**form_type, "Cookie": f"{signin_cookie}={browser_secret}"})
    assert changing.status_code == 200, changing.text
    change_cookie = surface.cookie("broker-signin-change")
    change_handle = set_cookies(changing)[change_cookie].value
    honest_change = {"csrf": _form_fields(changing, "/signin/change")["csrf"],
                     "password": "Surface-password-1", "new_password": "Surface-password-2",
                     "confirm_password": "Surface-password-2x"}  # never completes
    # A root user without an MFA device, registering one (root_mfa_required).
    http.cookies.clear()
    enrolling = http.post("/signin", content=body(
        {**honest_signin, "kind": "root", "email": "surface-root@example.com"}, "", ""),
        headers={**form_type, "Cookie": f"{signin_cookie}={browser_secret}"})
    assert enrolling.status_code == 200, enrolling.text
    enrol_cookie = surface.cookie("broker-signin-enrol")
    enrol_handle = set_cookies(enrolling)[enrol_cookie].value
    honest_enrol = {"csrf": _form_fields(enrolling, "/signin/enrol")["csrf"],
                    "code1": "123456", "code2": "654321"}
    for name in honest_enrol:
        yield f"signin/enrol {name}=", lambda v, name=name: http.post(
            "/signin/enrol", content=body(honest_enrol, name, v), headers={
                **form_type,
                "Cookie": f"{signin_cookie}={browser_secret}; {enrol_cookie}={enrol_handle}"})
    for name in honest_change:
        yield f"signin/change {name}=", lambda v, name=name: http.post(
            "/signin/change", content=body(honest_change, name, v), headers={
                **form_type,
                "Cookie": f"{signin_cookie}={browser_secret}; {change_cookie}={change_handle}"})
    for name in honest_signin:
        yield f"signin {name}=", lambda v, name=name: http.post(
            "/signin", content=body(honest_signin, name, v),
            headers={**form_type, "Cookie": f"{signin_cookie}={browser_secret}"})
    for name in honest_mfa:
        yield f"signin/mfa {name}=", lambda v, name=name: http.post(
            "/signin/mfa", content=body(honest_mfa, name, v), headers={
                **form_type, "Cookie": f"{signin_cookie}={browser_secret}; {mfa_cookie}={handle}"})
    yield "signin/mfa cookie", lambda v: http.post(
        "/signin/mfa", content=body(honest_mfa, "", ""), headers={
            **form_type, "Cookie": f"{signin_cookie}={v}; {mfa_cookie}={v}"})
    yield from _portal_cases(surface)
    # The identity-source routes, with a SAML and an OIDC provider for as long as they run.
    with identity_source_surface.sources(broker, http) as external:
        yield from identity_source_surface.cases(external)
    yield "a form that is not a form", lambda v: http.post(
        "/saml", headers={"Content-Type": f"application/x-www-form-urlencoded; charset={v}"},
        content=v)


def _portal_cases(surface: Surface) -> Iterator[tuple[str, Callable[[str], httpx.Response]]]:
    """The access portal's routes: a directory user signed in, and pending steps of each kind
    (made through the use cases, with no source address: the hostile sign-ins before these
    lock out the test's address), a device authorization and a code client."""
    import secrets as _secrets

    from broker.web.pages import form_token
    from broker.web.portal import session_csrf

    broker, http = surface.broker, surface.http
    runtime, portal = broker.runtime, broker.runtime.portal
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    secret = _secrets.token_urlsafe(32)
    password = "Surface-portal-1!"
    account, _ = broker.new_account()

    async def make() -> dict[str, Any]:
        ic = runtime.identity_center
        instance = await ic.instances.create(account, name="surface-portal", client_token=None,
                                             tags=(), organization=False)
        store = instance.identity_store_id
        names = {}
        for who in ("signed", "changing", "enrolling"):
            names[who] = (await ic.directory.create_user(instance, {
                "UserName": f"surface-{who}", "DisplayName": "Surface",
                "Name": {"GivenName": "S", "FamilyName": "P"}}, "surface")).user_name
        steps = {}
        for who in names:
            otp = await portal.reset_password(store, names[who])
            steps[who] = await portal.password(instance, names[who], otp, source=None,
                                               browser=secret)
        enrol = await portal.change(steps["signed"].handle, secret, password, password)
        assert enrol.seed is not None
        signed = await portal.enrol(enrol.handle, secret, pyotp.TOTP(enrol.seed).now(), None)
        mfa = await portal.password(instance, names["signed"], password, source=None,
                                    browser=secret)
        enrolling = await portal.change(steps["enrolling"].handle, secret, password, password)
        # An invitation, e-mailed through a mailer that keeps the message.
        await ic.directory.create_user(instance, {
            "UserName": "surface-invited", "DisplayName": "Surface",
            "Name": {"GivenName": "S", "FamilyName": "P"},
            "Emails": [{"Value": "surface-invited@example.com", "Primary": True}]}, "surface")
        kept: list[Any] = []

        class KeptMail:
            sender = "surface@example.com"

            async def send(self, message: Any) -> None:
                kept.append(message)

        portal.mailer = KeptMail()  # type: ignore[assignment]
        try:
            await portal.invite(store, "surface-invited")
        finally:
            portal.mailer = None
        link = re.search(r"invitation\?token=(\S+)", kept[0].get_content())
        assert link is not None
        return {"store": store, "session": signed.handle, "change": steps["changing"].handle,
                "enrol": enrolling.handle, "mfa": mfa.handle, "invitation": link.group(1)}

    made = broker.server.call(make())
    store, session = made["store"], made["session"]
    start = f"/start/{store}"
    oidc = broker.client("sso-oidc")
    device_client = oidc.register_client(clientName="surface-device", clientType="public")
    user_code = oidc.start_device_authorization(
        clientId=device_client["clientId"], clientSecret=device_client["clientSecret"],
        startUrl=f"{broker.settings.public_url}{start}")["userCode"]
    code_client = oidc.register_client(
        clientName="surface-code", clientType="public",
        grantTypes=["authorization_code", "refresh_token"],
        redirectUris=["http://127.0.0.1/cb"], issuerUrl=f"{broker.settings.public_url}{start}")
    browser_cookie, step_cookie, session_cookie = (
        surface.cookie(n) for n in ("broker-portal", "broker-portal-step",
                                    "broker-portal-session"))
    signed_in = {**form_type, "Cookie": f"{session_cookie}={session}"}

    def splice(fields: dict[str, str], name: str, value: str) -> str:
        return "&".join(f"{k}={value if k == name else wire(v)}" for k, v in fields.items())

    yield "GET /start?directory=", lambda v: http.get(f"/start?directory={v}")
    yield "GET /start/ path", lambda v: http.get(f"/start/{v}")
    yield "GET /start/{id} cookies", lambda v: http.get(start, headers={
        "Cookie": f"{browser_cookie}={v}; {session_cookie}={v}"})
    honest_signin = {"csrf": form_token(secret, b"portal-signin"), "username": "surface-signed",
                     "password": password}
    for name in honest_signin:
        yield f"POST /start/{{id}} {name}=", lambda v, name=name: http.post(
            start, content=splice(honest_signin, name, v),
            headers={**form_type, "Cookie": f"{browser_cookie}={secret}"})
    yield "POST /start/ path", lambda v: http.post(f"/start/{v}", content=splice(
        honest_signin, "", ""), headers={**form_type, "Cookie": f"{browser_cookie}={secret}"})
    for route, handle, honest in (
            ("change", made["change"], {"csrf": form_token(made["change"], b"portal-change"),
                                        "username": "surface-changing",
                                        "new_password": password,
                                        "confirm_password": password + "x"}),  # never done
            ("enrol", made["enrol"], {"csrf": form_token(made["enrol"], b"portal-enrol"),
                                      "code": "000000"}),
            ("mfa", made["mfa"], {"csrf": form_token(made["mfa"], b"portal-mfa"),
                                  "code": "000000", "assertion": ""})):
        cookies = f"{browser_cookie}={secret}; {step_cookie}={handle}"
        for name in honest:
            yield f"POST /start/{{id}}/{route} {name}=", \
                lambda v, r=route, h=honest, n=name, c=cookies: http.post(
                    f"{start}/{r}", content=splice(h, n, v),
                    headers={**form_type, "Cookie": c})
        yield f"POST /start/{{id}}/{route} cookies", lambda v, r=route, h=honest: http.post(
            f"{start}/{r}", content=splice(h, "", ""),
            headers={**form_type, "Cookie": f"{browser_cookie}={v}; {step_cookie}={v}"})
    # An invitation's link and its form, of a live invitation (make() above: e-mailed through
    # a mailer that keeps the message); the honest form's passwords differ, so that it is
    # never used up.
    yield "GET /start/{id}/invitation?token=", lambda v: http.get(
        f"{start}/invitation?token={v}", headers={"Cookie": f"{browser_cookie}={secret}"})
    yield "GET /start/{id}/invitation cookies", lambda v: http.get(
        f"{start}/invitation?token={wire(made['invitation'])}",
        headers={"Cookie": f"{browser_cookie}={v}"})
    honest_invitation = {"csrf": form_token(secret, b"portal-invitation"),
                         "token": made["invitation"], "username": "surface-invited",
                         "new_password": password,
                         "confirm_password": password + "x"}  # never accepted
    for name in honest_invitation:
        yield f"POST /start/{{id}}/invitation {name}=", lambda v, n=name: http.post(
            f"{start}/invitation", content=splice(honest_invitation, n, v),
            headers={**form_type, "Cookie": f"{browser_cookie}={secret}"})
    yield "POST /start/{id}/invitation cookies", lambda v: http.post(
        f"{start}/invitation", content=splice(honest_invitation, "", ""),
        headers={**form_type, "Cookie": f"{browser_cookie}={v}"})
    csrf = session_csrf(session)
    honest_role = {"csrf": csrf, "account_id": account, "role_name": "Surface"}
    for route in ("console", "credentials"):
        for name in honest_role:
            yield f"POST /start/{{id}}/{route} {name}=", lambda v, r=route, n=name: http.post(
                f"{start}/{r}", content=splice(honest_role, n, v), headers=signed_in)
    yield "POST /start/{id}/webauthn/options csrf=", lambda v: http.post(
        f"{start}/webauthn/options", content=splice({"csrf": csrf}, "csrf", v),
        headers=signed_in)
    honest_key = {"csrf": csrf, "name": "surface key", "credential": "{}"}
    for name in honest_key:
        def register(v: str, n: str = name) -> httpx.Response:
            http.post(f"{start}/webauthn/options", content=splice({"csrf": csrf}, "", ""),
                      headers=signed_in)  # a challenge to answer
            return http.post(f"{start}/webauthn", content=splice(honest_key, n, v),
                             headers=signed_in)
        yield f"POST /start/{{id}}/webauthn {name}=", register
    yield "GET /start/{id}?done=", lambda v: http.get(f"{start}?done={v}", headers=signed_in)
    yield "POST /start/{id}/signout csrf=", lambda v: http.post(
        f"{start}/signout", content=splice({"csrf": csrf}, "csrf", v), headers=signed_in)
    yield "POST /start/{id}/signout cookie", lambda v: http.post(
        f"{start}/signout", content=splice({"csrf": csrf}, "", ""), headers={
            **form_type, "Cookie": f"{session_cookie}={v}"})
    yield "GET /start/device?user_code=", lambda v: http.get(
        f"/start/device?user_code={v}", headers=signed_in)
    honest_device = {"csrf": csrf, "user_code": user_code, "action": "deny"}
    for name in honest_device:
        yield f"POST /start/device {name}=", lambda v, n=name: http.post(
            "/start/device", content=splice(honest_device, n, v), headers=signed_in)
    honest_authorize = {"response_type": "code", "client_id": code_client["clientId"],
                        "redirect_uri": "http://127.0.0.1:43111/cb", "state": "surface",
                        "code_challenge": "a" * 43, "code_challenge_method": "S256",
                        "scopes": "sso:account:access"}
    for name in honest_authorize:
        yield f"GET /authorize {name}=", lambda v, n=name: http.get(
            "/authorize?" + splice(honest_authorize, n, v), headers=signed_in)
    honest_decision = {"csrf": csrf, "action": "deny", **honest_authorize}
    for name in honest_decision:
        yield f"POST /authorize {name}=", lambda v, n=name: http.post(
            "/authorize", content=splice(honest_decision, n, v), headers=signed_in)


@pytest.mark.timeout(900)  # thousands of requests on a shared machine
def test_every_web_route_with_hostile_values(surface: Surface) -> None:
    surface.failures.clear()
    sent = 0
    # Values that go into URLs and headers as well as forms: a URL is at most 65,536
    # characters for httpx, so "oversized" is what a URL can carry.
    values = {**ESCAPES, "oversized": "a" * 16_000}
    for what, send in web_cases(surface):
        for kind, value in values.items() if not what.endswith(ONCE) else [("", "")]:
            surface.check(f"{what} {kind}", send(value))
            sent += 1
    assert sent > 500
    assert not surface.failures, "\n".join(surface.failures[:40])


def test_the_web_control_honest_values_sign_in(surface: Surface) -> None:
    """The control of the test above: the same world, honest, signs in through each door."""
    http, saml = surface.http, surface.saml
    r = http.post("/saml", headers={"Content-Type": "application/x-www-form-urlencoded"},
                  content=f"SAMLResponse={wire(encode(saml.response()))}&RelayState=%2Fconsole")
    assert r.status_code == 303, r.text
    token = http.get("/federation", params={"Action": "getSigninToken", "Session":
                                            session_param(surface.console.assume())})
    assert token.status_code == 200, token.text
    assert not surface.watch.take()


def test_the_identity_source_control_honest_values_sign_in(surface: Surface) -> None:
    """The control of the identity-source cases: the same instances and providers, honest,
    sign in through the SAML ACS and the OIDC callback."""
    with identity_source_surface.sources(surface.broker, surface.http) as external:
        identity_source_surface.control(external)
    assert not surface.watch.take()


def test_a_planted_defect_is_found(surface: Surface) -> None:
    """The check itself can fail: a handler that raises on a lone surrogate (as three did
    before) is reported, with the log line it wrote."""
    before = len(surface.failures)
    logging.getLogger("broker.query").exception("request x: unexpected failure",
                                                exc_info=UnicodeEncodeError(
                                                    "utf-8", "\ud800", 0, 1, "surrogates"))
    request = httpx.Request("GET", f"{surface.broker.url}/nowhere")
    surface.check("planted", httpx.Response(500, text="InternalFailure", request=request))
    assert len(surface.failures) == before + 1
    assert "500" in surface.failures[-1] and "logged" in surface.failures[-1]
    # A refusal in no interface's format (Starlette's own plain "Not Found"), and a cookie
    # for one path only, are found too.
    surface.check("planted", httpx.Response(404, text="Not Found", request=request, headers={
        "Content-Type": "text/plain", "Set-Cookie": "a=b; Path=/saml; HttpOnly"}))
    assert len(surface.failures) == before + 2
    assert "text/plain" in surface.failures[-1] and "Path=/saml" in surface.failures[-1]
    if surface.https:  # and, on https, a cookie without the prefix and Secure
        surface.check("planted", httpx.Response(303, request=request, headers={
            "Set-Cookie": "broker-session=x; Path=/; HttpOnly; SameSite=lax"}))
        assert len(surface.failures) == before + 3 and "__Host-" in surface.failures[-1]
    # The JSON protocol's check finds a 5xx, and a refusal in another interface's format.
    count = len(surface.failures)
    surface.check_json("planted", httpx.Response(500, text="{}", request=request))
    surface.check_json("planted", httpx.Response(400, text="<ErrorResponse/>", request=request,
                                                 headers={"Content-Type": "text/xml"}))
    assert len(surface.failures) == count + 2
    del surface.failures[before:]


# Pieces of a form body or query string: names the routes read, separators, escapes of bytes
# that are not UTF-8, and the JSON escapes of lone surrogates.
PIECES = st.sampled_from([
    *sorted({f for spec in ROUTES.values() for f in spec.get("form", ()) + spec.get("query", ())}),
    "=", "&", "+", "%", "%25", "%ED%A0%80", "%C0%AF", "%FF", "%E2%98", "%00", "%0D%0A",
    "%22%5Cud800%22", "%7B%22sessionId%22%3A%22%5Cudc00%22%7D", "getSigninToken", "login",
    "logout", "/console", "x" * 300, "\u00e9", "\u2603"])


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_forms_and_query_strings(surface: Surface, data: st.DataObject) -> None:
    """Beside the cases above, hypothesis's: arbitrary bodies and query strings (put
    together from what the routes read and what they must refuse) for every route that
    reads either."""
    surface.failures.clear()
    text = data.draw(st.lists(PIECES, max_size=40).map("".join))
    for (method, path), spec in ROUTES.items():
        if "form" in spec:
            surface.check(f"{method} {path} body {text!r}", surface.http.post(
                path, content=text.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"}))
        if "query" in spec or path == "/federation":
            surface.check(f"{method} {path}?{text!r}", surface.http.request(
                method, f"{path}?{text}"))
    assert not surface.failures, "\n".join(surface.failures[:20])


# -- the SCIM server (/scim/v2/{identity store id}/) ------------------------------------------

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _scim_problem(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/scim+json"):
        return f"a refusal as {response.headers.get('content-type') or 'nothing'}"
    try:
        body = json.loads(response.text)
    except ValueError:
        return "a refusal that is not JSON"
    if body.get("schemas") != [SCIM_ERROR] or body.get("status") != str(response.status_code):
        return "not SCIM's error document"
    return None


def _scim_world(surface: Surface) -> tuple[str, dict[str, str], str, str]:
    """(base path, headers with a bearer token of the surface's instance, a user id, a group
    id): the honest SCIM world the hostile cases spoil."""
    from broker.scim.tokens import ScimTokens

    runtime, store = surface.broker.runtime, surface.json_good["IdentityStoreId"]

    async def token() -> str:
        instance = await runtime.identity_center.instances.by_store(store)
        assert instance is not None
        tokens = ScimTokens(runtime.identity_center.store, runtime.clock)
        for old in await tokens.list(instance):  # at most two: this test makes its own
            await tokens.revoke(instance, old.token_id)
        return (await tokens.create(instance, days=1)).token

    headers = {"Authorization": f"Bearer {surface.broker.server.call(token())}",
               "Content-Type": "application/scim+json"}
    base = f"/scim/v2/{store}"
    user = surface.http.post(f"{base}/Users", headers=headers, json=_SCIM_USER)
    assert user.status_code in (201, 409), user.text
    found = surface.http.get(f"{base}/Users", headers=headers,
                             params={"filter": 'userName eq "surface-scim"'})
    group = surface.http.post(f"{base}/Groups", headers=headers,
                              json={"displayName": "surface-scim"})
    assert group.status_code in (201, 409), group.text
    groups = surface.http.get(f"{base}/Groups", headers=headers,
                              params={"filter": 'displayName eq "surface-scim"'})
    return (base, headers, found.json()["Resources"][0]["id"],
            groups.json()["Resources"][0]["id"])


_SCIM_USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
              "userName": "surface-scim", "displayName": "Surface Scim",
              "name": {"givenName": "Surface", "familyName": "Scim"},
              "emails": [{"value": "surface-scim@example.com", "primary": True}]}
_SCIM_PATCH = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "path": 'emails[type eq "work"].value',
                               "value": "s@example.com"},
                              {"op": "add", "path": "members", "value": [{"value": "x"}]}]}


def _scim_cases(surface: Surface) -> Iterator[tuple[str, Callable[[str], httpx.Response]]]:
    base, headers, user, group = _scim_world(surface)
    http = surface.http
    for route in ("/Users/{v}", "/Groups/{v}", "/{v}", "/Schemas/{v}", "/ResourceTypes/{v}"):
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            yield f"{method} {base}{route}", lambda v, m=method, r=route: http.request(
                m, base + r.replace("{v}", v), headers=headers, content=b"{}")
    yield "GET /scim/v2/{v}/Users", lambda v: http.get(f"/scim/v2/{v}/Users", headers=headers)
    for name in ("filter", "startIndex", "count", "attributes", "excludedAttributes"):
        for where in ("/Users", "/Groups", f"/Users/{user}", f"/Groups/{group}"):
            yield f"GET {where}?{name}=", lambda v, n=name, w=where: http.get(
                f"{base}{w}?{n}={v}", headers=headers)
    for template in ('userName eq "{v}"', 'emails[value co "{v}"]', '{v} pr',
                     'not (displayName sw "{v}") or members.value eq "{v}"'):
        yield f"GET /Users?filter={template}", lambda v, t=template: http.get(
            f"{base}/Users?filter=" + wire(t.replace("{v}", "~")).replace("~", v),
            headers=headers)
    for header in ("Authorization", "If-Match", "If-None-Match", "Content-Type"):
        yield f"GET /Users/{{id}} {header}:", lambda v, h=header: http.get(
            f"{base}/Users/{user}", headers={**headers, h: _unwire(v).decode("latin-1")})
    bodies = (("POST", "/Users", _SCIM_USER), ("PUT", f"/Users/{user}", _SCIM_USER),
              ("PATCH", f"/Users/{user}", _SCIM_PATCH), ("POST", "/Groups",
                                                         {"displayName": "g", "members": []}),
              ("PATCH", f"/Groups/{group}", _SCIM_PATCH))
    for method, where, document in bodies:
        for what, value in json_variants(document):
            yield f"{method} {where} {what} {ONCE}", lambda _, m=method, w=where, b=value: \
                http.request(m, base + w, headers=headers, content=_unwire(b))


@pytest.mark.timeout(600)
def test_every_scim_request_with_hostile_values(surface: Surface) -> None:
    """Hostile paths, filters, query parameters, headers and bodies on every SCIM route: a
    SCIM error document (its status as a string) or an answer, never a 5xx or a log line."""
    failures: list[str] = []
    sent = 0
    values = {**ESCAPES, "oversized": "a" * 16_000, "quote": "%22%20or%20userName%20pr%20%22"}
    for what, send in _scim_cases(surface):
        for kind, value in values.items() if not what.endswith(ONCE) else [("", "")]:
            try:
                response = send(value)
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # a value httpx itself will not send
            sent += 1
            problems = []
            if response.status_code >= 500:
                problems.append(f"{response.status_code}: {response.text[:300]}")
            elif response.status_code >= 400:
                problem = _scim_problem(response)
                if problem:
                    problems.append(f"{response.status_code}, {problem}: "
                                    f"{response.text[:200]}")
            problems += [f"logged: {line}" for line in surface.watch.take()]
            if problems:
                failures.append(f"{what} {kind}: " + "; ".join(problems))
    assert sent > 500
    assert not failures, "\n".join(failures[:40])


def test_the_scim_control_honest_requests_succeed(surface: Surface) -> None:
    """The control of the test above: the same world's honest requests are answered."""
    base, headers, user, group = _scim_world(surface)
    http = surface.http
    assert http.get(f"{base}/Users/{user}", headers=headers).status_code == 200
    assert http.get(f"{base}/Users", headers=headers,
                    params={"filter": 'userName eq "surface-scim"'}).json()["totalResults"] == 1
    patched = http.patch(f"{base}/Groups/{group}", headers=headers, json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["members"][0]["value"] == user
    assert http.put(f"{base}/Users/{user}", headers=headers,
                    json=_SCIM_USER).status_code == 200
    assert not surface.watch.take()
