"""SAML sign-in in a browser, as at AWS's https://signin.aws.amazon.com/saml: httpx against the
real server, posting what the test suite's identity provider signs. Every refusal sits beside
an honest control built by the same fixture."""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import lxml.html
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from tests.console_world import SESSION, browser, console, secured, set_cookies, signed_in
from tests.console_world import assumed_arn as session_arn
from tests.helpers import Broker, start_broker
from tests.saml_idp import IdpKey, encode
from tests.saml_world import SamlWorld, trust_policy

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
CHOICE = "broker-saml-choice"
REQUEST = "broker-saml-request"
SSO = "https://idp.example.test/sso"
APP = "https://app.example.test/dash"


# -- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(broker: Broker) -> SamlWorld:
    return SamlWorld.make(broker)


@dataclass
class Multi:
    """Two roles in the broker's account and one in a second account (with an alias), all
    offered by one response of one identity provider."""

    world: SamlWorld
    other_account: str
    alias: str
    other_provider: str
    other_role: str

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [*((r, self.world.provider_arn) for r in self.world.roles.values()),
                (self.other_role, self.other_provider)]

    def response(self, **changes: object) -> bytes:
        return self.world.response(roles=self.pairs, **changes)


@pytest.fixture(scope="module")
def multi(broker: Broker) -> Multi:
    world = SamlWorld.make(broker, roles=("a", "b"))
    account, creds = broker.new_account()
    iam = broker.client("iam", creds)
    alias = f"team-{uuid.uuid4().hex[:8]}"
    iam.create_account_alias(AccountAlias=alias)
    provider = iam.create_saml_provider(
        Name="corp", SAMLMetadataDocument=world.idp.metadata())["SAMLProviderArn"]
    role = iam.create_role(RoleName="c-role", AssumeRolePolicyDocument=trust_policy(
        provider, broker.settings.acs_url))["Role"]["Arn"]
    return Multi(world, account, alias, provider, role)


@pytest.fixture(scope="module")
def app_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlWorld]:
    """A broker that may also send browsers to an application and to /help."""
    b = start_broker(tmp_path_factory.mktemp("apps"),
                     env={"BROKER_SIGNIN_DESTINATIONS": f"{APP},/help"})
    yield SamlWorld.make(b)
    b.stop()


@pytest.fixture(scope="module")
def https_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlWorld]:
    """A broker whose public URL is https (behind a proxy that ends TLS)."""
    b = start_broker(tmp_path_factory.mktemp("https"),
                     env={"BROKER_SERVER_PUBLIC_URL": "https://broker.example.test"})
    yield SamlWorld.make(b)
    b.stop()


@pytest.fixture(scope="module")
def sp_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlWorld]:
    b = start_broker(tmp_path_factory.mktemp("sp-only"),
                     env={"BROKER_SAML_IDP_INITIATED": "false"})
    yield SamlWorld.make(b)
    b.stop()



def post(client: httpx.Client, xml: bytes, relay_state: str | None = None, *,
         headers: dict[str, str] | None = None) -> httpx.Response:
    data = {"SAMLResponse": encode(xml)}
    if relay_state is not None:
        data["RelayState"] = relay_state
    return client.post("/saml", data=data, headers=headers)




def error_page(response: httpx.Response, status: int, text: str = "") -> str:
    """The error page's id, after checking it is an HTML page of ``status`` saying ``text``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    secured(response)
    assert text in response.text
    found = re.search(r"Error id</dt><dd><code>([0-9a-f-]{36})</code>", response.text)
    assert found, response.text
    return found.group(1)





# -- 1. metadata ------------------------------------------------------------------------------

def test_metadata_names_the_broker_and_the_key_it_decrypts_with(world: SamlWorld) -> None:
    settings = world.broker.settings
    with browser(world.broker) as client:
        r = client.get("/saml/metadata")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/samlmetadata+xml")
        root = etree.fromstring(r.content, etree.XMLParser(resolve_entities=False))
        assert root.tag == f"{MD}EntityDescriptor"
        assert root.get("entityID") == settings.sp_entity_id
        sp = root.find(f"{MD}SPSSODescriptor")
        assert sp is not None
        acs = [(a.get("Binding"), a.get("Location"))
               for a in sp.iter(f"{MD}AssertionConsumerService")]
        assert (POST_BINDING, settings.acs_url) in acs
        certs = [c.text for k in sp.iter(f"{MD}KeyDescriptor") if k.get("use") == "encryption"
                 for c in k.iter(f"{DS}X509Certificate")]
        assert len(certs) == 1 and certs[0]
        cert = x509.load_der_x509_certificate(base64.b64decode(certs[0]))
        pem = cert.public_bytes(Encoding.PEM)
        # Encrypted to that certificate (and signed): signs in.
        cookie = signed_in(post(client, world.response(encrypt_to=pem)))
        assert session_arn(world.role_arn) in console(world.broker, cookie).text
        # The control: encrypted to another certificate, refused.
        stranger = IdpKey.generate("not-the-broker").pem_cert()
        error_page(post(client, world.response(encrypt_to=stranger)), 400, "decrypted")


# -- 2. one role: straight to the console -----------------------------------------------------

def test_one_role_signs_in_to_the_console(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        assert client.get("/console").status_code == 401  # not yet
        r = post(client, world.response())
        secured(r)
        value = signed_in(r)
        cookie = set_cookies(r)[SESSION]
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "lax"
        assert cookie["path"] == "/"
        assert not cookie["domain"]
        assert 3590 <= int(cookie["max-age"]) <= 3600
        page = client.get("/console")  # the browser sends the cookie it was given
        assert page.status_code == 200
        secured(page)
        assert session_arn(world.role_arn) in page.text
        assert world.account_id in page.text
        expires = re.search(r'<time datetime="([^"]+)"', page.text)
        assert expires
        left = datetime.fromisoformat(expires.group(1)) - datetime.now(UTC)
        assert timedelta(minutes=59) < left <= timedelta(hours=1)
    assert console(world.broker, value).status_code == 200
    assert console(world.broker, value + "x").status_code == 401
    # The browser sign-in is in the audit trail, as the API's AssumeRoleWithSAML is.
    logins = [doc for doc in map(json.loads, Path(world.broker.settings.audit.path)
                                 .read_text().splitlines())
              if doc["eventName"] == "ConsoleLogin" and "errorCode" not in doc]
    assert logins and logins[-1]["userIdentity"]["arn"] == session_arn(world.role_arn)
    assert logins[-1]["responseElements"] == {"ConsoleLogin": "Success"}


@pytest.mark.parametrize("relay_state", ["/console/x", "/console/x?tab=1", "/console"])
def test_an_allowed_relay_state_is_followed(world: SamlWorld, relay_state: str) -> None:
    with browser(world.broker) as client:
        signed_in(post(client, world.response(), relay_state), relay_state)


def test_the_broker_s_own_absolute_console_url_is_followed(world: SamlWorld) -> None:
    where = f"{world.broker.url}/console/x"
    with browser(world.broker) as client:
        signed_in(post(client, world.response(), where), where)


@pytest.mark.parametrize("relay_state", [
    "//evil.example", "/\\evil.example", "https://host.evil.example", "https://user@127.0.0.1",
    "javascript:alert(1)", "/console\r\nSet-Cookie: planted=1", "/console/../x",
    "/console/%2e%2e/x", "/elsewhere",
])
def test_a_disallowed_relay_state_falls_back_to_the_console(world: SamlWorld,
                                                            relay_state: str) -> None:
    with browser(world.broker) as client:
        r = post(client, world.response(), relay_state)
        signed_in(r, "/console")
        assert "planted" not in set_cookies(r)


@pytest.mark.parametrize(("relay_state", "followed"), [
    (APP, True),
    (f"{APP}/reports?id=7", True),
    ("https://app.example.test:443/dash/x", True),
    ("/help/topic", True),
    ("https://app.example.test/dashboard", False),
    ("http://app.example.test/dash", False),
    ("https://app.example.test:8443/dash", False),
    ("https://app.example.test.evil.example/dash", False),
    ("https://app.example.test/dash/../admin", False),
    ("https://user@app.example.test/dash", False),
    ("/helpdesk", False),
])
def test_listed_destinations_match_origin_and_path_prefix(
        app_world: SamlWorld, relay_state: str, followed: bool) -> None:
    with browser(app_world.broker) as client:
        signed_in(post(client, app_world.response(), relay_state),
                  relay_state if followed else "/console")


def host_cookie(response: httpx.Response, name: str) -> Any:
    """A cookie set as every cookie of a broker on https must be: __Host- prefixed, Secure,
    HttpOnly, Path=/, no Domain."""
    cookies = set_cookies(response)
    assert name not in cookies  # never the unprefixed name
    cookie = cookies[f"__Host-{name}"]
    assert cookie["secure"] is True and cookie["httponly"] is True
    assert cookie["path"] == "/" and not cookie["domain"]
    return cookie


def test_on_https_the_cookies_are_secure_and_host_prefixed(https_world: SamlWorld) -> None:
    world = https_world
    name = world.provider_arn.rsplit("/", 1)[1]
    with browser(world.broker) as client:
        request = host_cookie(client.get("/saml/login", params={"provider": name}), REQUEST)
        # The IdP's answer is a cross-site POST: only SameSite=None brings the cookie back.
        assert request["samesite"].lower() == "none"
        r = post(client, world.response())
        assert r.status_code == 303
        cookie = host_cookie(r, SESSION)
        assert cookie["samesite"].lower() == "lax"
        headers = {"Cookie": f"__Host-{SESSION}={cookie.value}"}
        assert session_arn(world.role_arn) in client.get("/console", headers=headers).text
        # The unprefixed name, which a sibling host could plant, is not the session.
        headers = {"Cookie": f"{SESSION}={cookie.value}"}
        assert client.get("/console", headers=headers).status_code == 401


def test_on_https_the_chooser_cookie_is_host_prefixed(https_world: SamlWorld) -> None:
    world = https_world
    roles = [(r, world.provider_arn) for r in world.roles.values()] * 2  # a choice to make
    extra = world.broker.client("iam").create_role(
        RoleName=f"other-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=trust_policy(world.provider_arn, world.acs_url))["Role"]["Arn"]
    roles = [roles[0], (extra, world.provider_arn)]
    with browser(world.broker) as client:
        r = post(client, world.response(roles=roles))
        assert r.status_code == 200, r.text
        choice = host_cookie(r, CHOICE)
        csrf = str(lxml.html.fromstring(r.text).xpath("//input[@name='csrf']/@value")[0])
        planted = {"Cookie": f"{CHOICE}={choice.value}"}  # what a sibling host could set
        refused = client.post("/saml/choose", data={"csrf": csrf, "role": f"{extra},"
                                                    f"{world.provider_arn}"}, headers=planted)
        error_page(refused, 400, "expired")
        # The control: a new chooser, its cookie under its own name.
        r = post(client, world.response(roles=roles))
        choice = host_cookie(r, CHOICE)
        csrf = str(lxml.html.fromstring(r.text).xpath("//input[@name='csrf']/@value")[0])
        signed = client.post("/saml/choose", data={"csrf": csrf, "role": f"{extra},"
                                                   f"{world.provider_arn}"},
                             headers={"Cookie": f"__Host-{CHOICE}={choice.value}"})
        assert signed.status_code == 303, signed.text
        host_cookie(signed, SESSION)


def test_a_planted_request_cookie_does_not_sign_the_victim_in(https_world: SamlWorld) -> None:
    """Login CSRF through cookie tossing: the attacker starts /saml/login in their own browser,
    keeps the identity provider's answer and posts it from the victim's browser, with a
    request cookie planted there. A sibling subdomain (or a man in the middle on any
    plain-http host) can plant a cookie without the __Host- prefix, for any path; the answer
    itself shows the request id. None of these makes the answer the victim's; the control,
    the attacker's own browser with its own cookie, signs in."""
    world = https_world
    name = world.provider_arn.rsplit("/", 1)[1]

    def attacker_starts() -> tuple[str, str]:
        with browser(world.broker) as attacker:
            r = attacker.get("/saml/login", params={"provider": name})
            secret = host_cookie(r, REQUEST).value
            query = parse_qs(urlsplit(r.headers["location"]).query)
            xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
            request_id = etree.fromstring(xml).get("ID")
        assert request_id and secret != request_id
        return request_id, secret

    request_id, secret = attacker_starts()
    answer = world.response(in_response_to=request_id)
    for planted in (f"{REQUEST}={request_id}", f"{REQUEST}={secret}",
                    f"__Host-{REQUEST}={request_id}", f"__Host-{REQUEST}={secret[:-1]}"):
        with browser(world.broker) as victim:
            error_page(post(victim, answer, headers={"Cookie": planted}), 400, "InResponseTo")
    # A wrong cookie spent nothing: the same answer, in the browser that asked, signs in, once.
    with browser(world.broker) as own:
        r = post(own, answer, headers={"Cookie": f"__Host-{REQUEST}={secret}"})
        assert r.status_code == 303, r.text
        host_cookie(r, SESSION)
        error_page(post(own, world.response(in_response_to=request_id),
                        headers={"Cookie": f"__Host-{REQUEST}={secret}"}), 400, "InResponseTo")


# -- 3. several roles: the chooser ------------------------------------------------------------

def chooser(client: httpx.Client, multi: Multi, relay_state: str | None = None) -> str:
    """Post a response offering three roles; the chooser's CSRF token."""
    r = post(client, multi.response(), relay_state)
    assert r.status_code == 200, r.text
    assert SESSION not in set_cookies(r)
    doc = lxml.html.fromstring(r.text)
    return str(doc.xpath("//form[@action='/saml/choose']//input[@name='csrf']/@value")[0])


def choose(client: httpx.Client, csrf: str, role: str, provider: str,
           cookie: str | None = None) -> httpx.Response:
    headers = {} if cookie is None else {"Cookie": cookie}
    return client.post("/saml/choose", data={"csrf": csrf, "role": f"{role},{provider}"},
                       headers=headers)


def test_several_roles_show_the_chooser_by_account(multi: Multi) -> None:
    world = multi.world
    with browser(world.broker) as client:
        r = post(client, multi.response())
        assert r.status_code == 200
        secured(r)
        cookie = set_cookies(r)[CHOICE]
        assert cookie.value and cookie["path"] == "/" and cookie["httponly"] is True
        assert cookie["samesite"].lower() == "lax" and not cookie["domain"]
        doc = lxml.html.fromstring(r.text)
        (form,) = doc.xpath("//form[@action='/saml/choose']")
        assert form.get("method") == "post"
        assert form.xpath(".//input[@name='csrf']/@value")[0]
        groups = {}
        for fieldset in form.xpath(".//fieldset"):
            legend = fieldset.xpath("string(legend)")
            groups[legend] = sorted(fieldset.xpath(".//input[@type='radio']/@value"))
        mine = sorted(f"{r},{world.provider_arn}" for r in world.roles.values())
        assert groups == {
            f"Account: {world.account_id}": mine,
            f"Account: {multi.alias} ({multi.other_account})":
                [f"{multi.other_role},{multi.other_provider}"],
        }


@pytest.mark.parametrize("pick", ["a", "other"])
def test_choosing_a_role_signs_in_as_that_role(multi: Multi, pick: str) -> None:
    world = multi.world
    role, provider = ((world.roles["a"], world.provider_arn) if pick == "a"
                      else (multi.other_role, multi.other_provider))
    with browser(world.broker) as client:
        csrf = chooser(client, multi, "/console/after")
        r = choose(client, csrf, role, provider)
        value = signed_in(r, "/console/after")
        assert set_cookies(r)[CHOICE].value == ""  # the choice cookie is dropped
        page = console(world.broker, value)
        assert session_arn(role) in page.text
        if pick == "other":
            assert f"{multi.alias} ({multi.other_account})" in page.text


def test_a_wrong_csrf_token_is_refused(multi: Multi) -> None:
    with browser(multi.world.broker) as client:
        csrf = chooser(client, multi)
        error_page(choose(client, csrf[::-1], multi.other_role, multi.other_provider), 400,
                   "CSRF")
        csrf = chooser(client, multi)
        signed_in(choose(client, csrf, multi.other_role, multi.other_provider))


def test_a_non_ascii_csrf_token_is_refused_not_a_failure(multi: Multi) -> None:
    with browser(multi.world.broker) as client:
        chooser(client, multi)
        error_page(choose(client, "é", multi.other_role, multi.other_provider), 400)


def test_a_choice_without_its_cookie_is_refused(multi: Multi) -> None:
    with browser(multi.world.broker) as client:
        csrf = chooser(client, multi)
        with browser(multi.world.broker) as elsewhere:  # the form, not the cookie
            error_page(choose(elsewhere, csrf, multi.other_role, multi.other_provider), 400)
        signed_in(choose(client, csrf, multi.other_role, multi.other_provider))


def test_the_cookie_of_another_chooser_is_refused(multi: Multi) -> None:
    with browser(multi.world.broker) as mine, browser(multi.world.broker) as theirs:
        my_csrf = chooser(mine, multi)
        their_csrf = chooser(theirs, multi)
        their_cookie = f"{CHOICE}={theirs.cookies[CHOICE]}"
        error_page(choose(mine, my_csrf, multi.other_role, multi.other_provider,
                          cookie=their_cookie), 400, "CSRF")
        signed_in(choose(mine, my_csrf, multi.other_role, multi.other_provider))
        # A refused attempt spends the choice it names (no guessing its token): theirs is
        # gone, and they sign in again.
        error_page(choose(theirs, their_csrf, multi.other_role, multi.other_provider), 400,
                   "expired or was already made")


def test_a_role_the_response_does_not_offer_is_refused(multi: Multi) -> None:
    world = multi.world
    unoffered = world.broker.client("iam").create_role(
        RoleName=f"unoffered-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=trust_policy(world.provider_arn, world.acs_url))["Role"]["Arn"]
    with browser(world.broker) as client:
        csrf = chooser(client, multi)
        error_page(choose(client, csrf, unoffered, world.provider_arn), 400, "not one")
        csrf = chooser(client, multi)  # a role of the other account with this provider
        error_page(choose(client, csrf, multi.other_role, world.provider_arn), 400, "not one")
        csrf = chooser(client, multi)
        signed_in(choose(client, csrf, world.roles["b"], world.provider_arn))


def test_a_choice_submitted_ten_times_at_once_signs_in_once(multi: Multi) -> None:
    with browser(multi.world.broker) as client:
        csrf = chooser(client, multi)
        cookie = f"{CHOICE}={client.cookies[CHOICE]}"
    start = threading.Barrier(10)
    statuses: list[int] = []

    def send() -> None:
        with browser(multi.world.broker) as same:
            start.wait()
            statuses.append(choose(same, csrf, multi.other_role, multi.other_provider,
                                   cookie=cookie).status_code)

    run_together(send)
    assert sorted(statuses) == [303] + [400] * 9


def test_a_choice_is_taken_once(multi: Multi) -> None:
    with browser(multi.world.broker) as client:
        csrf = chooser(client, multi)
        cookie = f"{CHOICE}={client.cookies[CHOICE]}"
        signed_in(choose(client, csrf, multi.other_role, multi.other_provider))
        error_page(choose(client, csrf, multi.other_role, multi.other_provider, cookie=cookie),
                   400, "already")


# -- 4. the chooser as JSON -------------------------------------------------------------------

def test_json_lists_the_roles_and_consumes_nothing(multi: Multi) -> None:
    world = multi.world
    xml = multi.response(name_id="jo@example.test")
    with browser(world.broker) as client:
        r = post(client, xml, headers={"Accept": "application/json"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"subject", "issuer", "expiration", "accounts", "roles"}
        assert (body["subject"], body["issuer"]) == ("jo@example.test", world.idp.entity_id)
        expiration = datetime.fromisoformat(body["expiration"].replace("Z", "+00:00"))
        assert timedelta(0) < expiration - datetime.now(UTC) <= timedelta(minutes=5)
        mine = [{"roleArn": arn, "principalArn": world.provider_arn,
                 "roleName": arn.rsplit("/", 1)[1], "accountId": world.account_id,
                 "accountAlias": None} for arn in world.roles.values()]
        other = {"roleArn": multi.other_role, "principalArn": multi.other_provider,
                 "roleName": "c-role", "accountId": multi.other_account,
                 "accountAlias": multi.alias}
        assert body["roles"] == [*mine, other]
        assert body["accounts"] == [
            {"accountId": world.account_id, "accountAlias": None, "roles": mine},
            {"accountId": multi.other_account, "accountAlias": multi.alias, "roles": [other]}]
        assert CHOICE not in set_cookies(r) and SESSION not in set_cookies(r)
        # Nothing was consumed: the same response then shows the chooser.
        assert post(client, xml).status_code == 200


def test_json_errors_are_json(world: SamlWorld) -> None:
    forged = world.response(signing_key=IdpKey.generate("forger"))
    with browser(world.broker) as client:
        r = post(client, forged, headers={"Accept": "application/json"})
        assert r.status_code == 400
        assert r.json()["Error"] == {"Code": "InvalidIdentityToken",
                                     "Message": "Response signature invalid"}
        assert re.fullmatch(r"[0-9a-f-]{36}", r.json()["RequestId"])
        r = client.post("/saml", content=b"{}", headers={
            "Accept": "application/json", "Content-Type": "application/json"})
        assert (r.status_code, r.json()["Error"]["Code"]) == (400, "InvalidRequest")
        # The same refusal for a browser is a page.
        error_page(post(client, forged), 400, "Response signature invalid")
        assert post(client, world.response(),
                    headers={"Accept": "application/json"}).status_code == 200


# -- 5. replay --------------------------------------------------------------------------------

def test_the_same_response_signs_in_once(world: SamlWorld) -> None:
    encoded = encode(world.response())
    with browser(world.broker) as client:
        signed_in(client.post("/saml", data={"SAMLResponse": encoded}))
        r = client.post("/saml", data={"SAMLResponse": encoded})
        error_page(r, 400, "already been used")
        assert SESSION not in set_cookies(r)


def test_ten_concurrent_posts_of_one_response_sign_in_once(world: SamlWorld) -> None:
    encoded = encode(world.response())
    start = threading.Barrier(10)
    statuses: list[int] = []

    def send() -> None:
        with browser(world.broker) as client:
            start.wait()
            statuses.append(client.post("/saml", data={"SAMLResponse": encoded}).status_code)

    run_together(send)
    assert sorted(statuses) == [303] + [400] * 9


def run_together(send: Callable[[], None], n: int = 10) -> None:
    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- 6. SP-initiated sign-in ------------------------------------------------------------------

def begin(client: httpx.Client, world: SamlWorld, relay_state: str = "/console/sp") -> str:
    """GET /saml/login; the AuthnRequest's ID, after checking the redirect that carries it."""
    name = world.provider_arn.rsplit("/", 1)[1]
    r = client.get("/saml/login", params={"provider": name, "RelayState": relay_state})
    assert r.status_code == 302, r.text
    secured(r)
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == SSO
    query = parse_qs(location.query)
    assert query["RelayState"] == [relay_state]
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
    request = etree.fromstring(xml, etree.XMLParser(resolve_entities=False))
    assert request.tag == f"{SAMLP}AuthnRequest"
    assert request.get("AssertionConsumerServiceURL") == world.acs_url
    assert request.get("Destination") == SSO
    assert request.findtext(f"{SAML}Issuer") == world.broker.settings.sp_entity_id
    request_id = request.get("ID")
    assert request_id and request_id[0] == "_"
    cookie = set_cookies(r)[REQUEST]
    # A secret of this browser's, not the request id (which the answer itself carries).
    assert len(cookie.value) >= 32 and request_id not in cookie.value
    assert cookie["path"] == "/" and not cookie["domain"]
    assert cookie["httponly"] is True and int(cookie["max-age"]) == 600
    assert not cookie["samesite"]  # plain http: no SameSite=None without Secure
    return request_id


def test_sp_initiated_sign_in_answers_its_request_once(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        request_id = begin(client, world)
        assert begin(client, world) != request_id  # every request its own ID
        request_id = begin(client, world)
        secret = client.cookies[REQUEST]
        r = post(client, world.response(in_response_to=request_id), "/console/sp")
        signed_in(r, "/console/sp")
        assert set_cookies(r)[REQUEST].value == ""
        replayed = {"Cookie": f"{REQUEST}={secret}"}
        error_page(post(client, world.response(in_response_to=request_id), headers=replayed),
                   400, "InResponseTo")


def test_a_response_to_another_request_is_refused(world: SamlWorld) -> None:
    with browser(world.broker) as client, browser(world.broker) as other:
        request_id = begin(client, world)
        other_id = begin(other, world)
        error_page(post(client, world.response(in_response_to=other_id)), 400, "InResponseTo")
        error_page(post(client, world.response(in_response_to="_" + "0" * 40)), 400)
        # The right ID, from a browser without the cookie.
        with browser(world.broker) as bare:
            error_page(post(bare, world.response(in_response_to=request_id)), 400,
                       "InResponseTo")
        signed_in(post(client, world.response(in_response_to=request_id)))


def test_a_non_ascii_in_response_to_is_refused_not_a_failure(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        begin(client, world)
        error_page(post(client, world.response(in_response_to="_é")), 400)


def test_the_answer_must_come_from_the_provider_asked(broker: Broker, world: SamlWorld) -> None:
    stranger = SamlWorld.make(broker)  # another identity provider the broker trusts
    with browser(broker) as client:
        request_id = begin(client, world)
        error_page(post(client, stranger.response(in_response_to=request_id)), 400)
        request_id = begin(client, stranger)
        signed_in(post(client, stranger.response(in_response_to=request_id)))


def test_unknown_or_missing_provider_is_an_error_page(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        error_page(client.get("/saml/login", params={"provider": "nobody"}), 400, "nobody")
        error_page(client.get("/saml/login"), 400, "provider=NAME")
        error_page(client.get("/saml/login", params={"provider": "a/b"}), 400)
        name = world.provider_arn.rsplit("/", 1)[1]
        assert client.get("/saml/login", params={"provider": name}).status_code == 302


def test_a_provider_name_in_several_accounts_needs_the_account(multi: Multi) -> None:
    broker = multi.world.broker
    broker.client("iam").create_saml_provider(  # "corp" is also the other account's
        Name="corp", SAMLMetadataDocument=multi.world.idp.metadata())
    with browser(broker) as client:
        error_page(client.get("/saml/login", params={"provider": "corp"}), 400, "account=")
        r = client.get("/saml/login", params={"provider": "corp",
                                              "account": multi.other_account})
        assert r.status_code == 302


def test_without_idp_initiated_only_answers_sign_in(sp_only: SamlWorld) -> None:
    with browser(sp_only.broker) as client:
        error_page(post(client, sp_only.response()), 400, "switched off")
        request_id = begin(client, sp_only)
        signed_in(post(client, sp_only.response(in_response_to=request_id)))


def test_an_unsigned_in_response_to_does_not_make_an_unsolicited_assertion_an_answer(
        sp_only: SamlWorld) -> None:
    """Only the assertion is signed: the Response's InResponseTo is anyone's to write. An
    unsolicited assertion wrapped in a Response answering the attacker's own request must not
    pass where IdP-initiated sign-in is off."""
    with browser(sp_only.broker) as client:
        request_id = begin(client, sp_only)
        root = etree.fromstring(sp_only.response())  # no InResponseTo anywhere
        root.set("InResponseTo", request_id)
        error_page(post(client, etree.tostring(root)), 400)
        signed_in(post(client, sp_only.response(in_response_to=request_id)))


# -- 7. sign-out and fixation -----------------------------------------------------------------

def console_csrf(page: httpx.Response) -> str:
    doc = lxml.html.fromstring(page.text)
    return str(doc.xpath("//form[@action='/console/signout']//input[@name='csrf']/@value")[0])


def test_sign_out_ends_the_session(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        value = signed_in(post(client, world.response()))
        csrf = console_csrf(client.get("/console"))
        error_page(client.post("/console/signout", data={"csrf": csrf[::-1]}), 403, "CSRF")
        error_page(client.post("/console/signout", data={"other": "1"}), 403)
        assert client.get("/console").status_code == 200  # still signed in
        r = client.post("/console/signout", data={"csrf": csrf})
        assert r.status_code == 200 and "Signed out" in r.text
        secured(r)
        assert set_cookies(r)[SESSION].value == ""
    page = console(world.broker, value)  # the old cookie, replayed
    assert page.status_code == 401 and "not signed in" in page.text
    secured(page)


def test_a_non_ascii_sign_out_token_is_refused_not_a_failure(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        signed_in(post(client, world.response()))
        error_page(client.post("/console/signout", data={"csrf": "é"}), 403)
        assert client.get("/console").status_code == 200


def test_sign_in_replaces_a_cookie_the_client_chose(world: SamlWorld) -> None:
    planted = "attacker-chosen-session-value"
    with browser(world.broker) as client:
        fixed = {"Cookie": f"{SESSION}={planted}"}
        first = signed_in(post(client, world.response(), headers=fixed))
        second = signed_in(post(client, world.response(), headers=fixed))
    assert planted not in (first, second) and first != second
    assert console(world.broker, planted).status_code == 401
    assert console(world.broker, first).status_code == 200
    assert console(world.broker, second).status_code == 200


# -- 8. bad forms -----------------------------------------------------------------------------

MAX_FORM = 160_000


def padded(encoded: str, total: int) -> bytes:
    """A form of exactly ``total`` bytes: the response and a field that fills it up."""
    head = f"SAMLResponse={encoded.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}"
    head += "&padding="
    return (head + "x" * (total - len(head))).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("case", ["json", "multipart", "too-large", "too-large-chunked",
                                  "field-twice", "too-many-fields", "not-utf8"])
def test_a_bad_form_is_a_400_page(world: SamlWorld, case: str) -> None:
    encoded = encode(world.response())
    with browser(world.broker) as client:
        if case == "json":
            r = client.post("/saml", json={"SAMLResponse": encoded})
        elif case == "multipart":
            r = client.post("/saml", data={"SAMLResponse": encoded},
                            files={"f": ("f.txt", b"x")})
        elif case == "too-large":
            r = client.post("/saml", content=padded(encoded, MAX_FORM + 1), headers=FORM)
        elif case == "too-large-chunked":
            body = padded(encoded, MAX_FORM + 1)
            chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
            r = client.post("/saml", content=chunks, headers=FORM)
        elif case == "field-twice":
            r = client.post("/saml", content=f"SAMLResponse={encoded}&RelayState=/console"
                            f"&SAMLResponse={encoded}".replace("+", "%2B"), headers=FORM)
        elif case == "too-many-fields":
            r = client.post("/saml", content="&".join(f"f{i}=1" for i in range(30)),
                            headers=FORM)
        else:
            r = client.post("/saml", content=b"SAMLResponse=\xff\xfe", headers=FORM)
        error_page(r, 400, "InvalidRequest")
        assert SESSION not in set_cookies(r)
        # The control: the same response in a good form of the largest size signs in.
        signed_in(client.post("/saml", content=padded(encoded, MAX_FORM), headers=FORM))


def test_a_form_without_a_response_is_refused(world: SamlWorld) -> None:
    with browser(world.broker) as client:
        error_page(client.post("/saml", data={"RelayState": "/console"}), 400, "SAMLResponse")
        error_page(client.post("/saml", data={"SAMLResponse": "not base64!"}), 400)
        signed_in(post(client, world.response()))
