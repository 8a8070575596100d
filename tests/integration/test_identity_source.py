"""Identity Center's external identity sources over HTTP against a real server: an instance
whose source is the suite's SAML IdP (tests/saml_idp.py, signing with xmlsec) and one whose
source is an OpenID Connect provider (tests/external_idps.py on the suite's issuer), each
signing a directory user in to the access portal, SP- and IdP-initiated for SAML, and
opening a role; ``broker sso identity-source``. Each attack beside the honest request that
the same fixture builds and that succeeds: an assertion for another instance's audience or
recipient, a person the directory lacks or has disabled, a replayed assertion, one signed
by another key, an answer to another browser's request, an OIDC answer with a wrong state, a
wrong nonce, another sign-in's code (its PKCE verifier is not this one's), a forged ID token,
the directory's password sign-in while the source is external; switching ends sessions."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import lxml.html
import pytest
from click.testing import CliRunner

from broker.app import create_app
from broker.cli import main
from broker.identitycenter.instances import Instance
from broker.identitycenter.sources import IdentitySources
from broker.web.pages import form_token
from tests.external_idps import OidcIdp, saml_request, saml_request_id
from tests.helpers import Broker, Creds, ServerThread, start_broker
from tests.oidc_issuer import IssuerKey
from tests.saml_idp import IdpKey, TestIdp, encode
from tests.sso_world import Tenant, make_tenant, new_user, set_status

ERROR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ACCESS_CONTROL = "https://aws.amazon.com/SAML/Attributes/AccessControl:"
SSO_URL = "https://idp.example.test/sso"


@dataclass
class World:
    broker: Broker
    saml: Tenant  # its source: the SAML IdP
    oidc: Tenant  # its source: the OIDC provider
    directory: Tenant  # its own directory
    idp: TestIdp
    provider: OidcIdp
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def sources(self) -> IdentitySources:
        sources = self.broker.runtime.portal.sources
        assert sources is not None
        return sources

    def instance(self, tenant: Tenant) -> Instance:
        found = self.broker.server.call(
            self.broker.runtime.identity_center.instances.by_store(tenant.identity_store_id))
        assert found is not None
        return found

    def browser(self) -> httpx.Client:
        client = httpx.Client(base_url=self.broker.url, follow_redirects=False, timeout=10)
        self.clients.append(client)
        return client

    def sp(self, tenant: Tenant) -> tuple[str, str]:
        """(entity id, ACS URL) of the tenant's portal as a service provider."""
        base = f"{self.broker.url}/start/{tenant.identity_store_id}/saml"
        return f"{base}/metadata", f"{base}/acs"

    def response(self, tenant: Tenant | None = None, **changes: object) -> str:
        """An honest response for the SAML tenant's portal (IdP-initiated), with ``changes``."""
        entity, acs = self.sp(tenant or self.saml)
        values: dict[str, object] = {
            "acs_url": acs, "audience": entity, "roles": None, "session_name": None,
            "name_id": (tenant or self.saml).user_name, "name_id_format": None,
            "attributes": {ACCESS_CONTROL + "Department": ["engineering"]}}
        values.update(changes)
        return encode(self.idp.response(**values))  # type: ignore[arg-type]

    def post(self, browser: httpx.Client, encoded: str, tenant: Tenant | None = None,
             relay: str = "") -> httpx.Response:
        _, acs = self.sp(tenant or self.saml)
        return browser.post(urlsplit(acs).path, data={"SAMLResponse": encoded,
                                                     "RelayState": relay})


def signed_in(world: World, browser: httpx.Client, tenant: Tenant) -> bool:
    """Whether the browser's portal session shows the tenant's role."""
    home = browser.get(f"/start/{tenant.identity_store_id}")
    return home.status_code == 200 and f"data-role=\"{tenant.role_name}\"" in home.text


def refused(response: httpx.Response, status: int = 403, text: str = "") -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert ERROR_ID.search(response.text), response.text[:500]
    assert "broker-portal-session" not in response.headers.get("set-cookie", "")
    assert text in response.text, response.text[:800]
    return response.text


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcIdp]:
    with OidcIdp() as idp:
        yield idp


@pytest.fixture(scope="module")
def world(broker: Broker, provider: OidcIdp) -> Iterator[World]:
    saml_tenant, oidc_tenant, directory = (make_tenant(broker, name)
                                          for name in ("ReadOnly", "Builders", "Other"))
    idp = TestIdp("https://idp.example.test/metadata")
    w = World(broker, saml_tenant, oidc_tenant, directory, idp, provider)
    w.broker.server.call(w.sources.set_saml(w.instance(saml_tenant),
                                            idp.metadata(sso_url=SSO_URL)))
    provider.redirect_uris.add(
        f"{broker.url}/start/{oidc_tenant.identity_store_id}/oidc/callback")
    provider.person = {"preferred_username": oidc_tenant.user_name,
                       ACCESS_CONTROL + "Team": "platform"}
    w.broker.server.call(w.sources.set_oidc(
        w.instance(oidc_tenant), issuer=provider.url, client_id=provider.client_id,
        client_secret=provider.client_secret, thumbprints=(provider.thumbprint,)))
    yield w
    for client in w.clients:
        client.close()


# -- SAML -------------------------------------------------------------------------------------


def test_sp_metadata_names_the_instances_own_entity_id_and_acs(world: World) -> None:
    entity, acs = world.sp(world.saml)
    r = world.browser().get(urlsplit(entity).path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/samlmetadata+xml")
    assert f'entityID="{entity}"' in r.text and f'Location="{acs}"' in r.text
    assert "X509Certificate" in r.text  # the broker's key, for encrypted assertions


def test_sp_initiated_sign_in_then_a_role_with_the_asserted_attributes(world: World) -> None:
    browser = world.browser()
    start = f"/start/{world.saml.identity_store_id}"
    first = browser.get(start)
    assert first.status_code == 303 and first.headers["location"] == f"{start}/saml/login"
    to_idp = browser.get(first.headers["location"])
    assert to_idp.status_code == 302 and to_idp.headers["location"].startswith(SSO_URL + "?")
    request = saml_request(to_idp.headers["location"])
    entity, acs = world.sp(world.saml)
    assert request.get("AssertionConsumerServiceURL") == acs
    assert request.findtext("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer") == entity
    answer = world.post(browser, world.response(in_response_to=request.get("ID")))
    assert answer.status_code == 303 and answer.headers["location"] == start
    assert signed_in(world, browser, world.saml)
    home = browser.get(start)
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert csrf is not None
    keys = browser.post(f"{start}/credentials", data={
        "csrf": csrf.group(1), "account_id": world.saml.account_id,
        "role_name": world.saml.role_name})
    assert keys.status_code == 200, keys.text
    exports = lxml.html.fromstring(keys.text).xpath("//pre[@id='exports']/text()")[0]
    values = dict(re.findall(r'export (\w+)="([^"]+)"', exports))
    caller = world.broker.client("sts", Creds(
        values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"],
        values["AWS_SESSION_TOKEN"])).get_caller_identity()
    assert caller["Arn"].endswith(f"/{world.saml.user_name}")
    assert ":assumed-role/AWSReservedSSO_ReadOnly_" in caller["Arn"]
    session = world.broker.server.call(world.broker.runtime.portal.session(
        browser.cookies["broker-portal-session"]))
    assert session is not None and session.asserted == {"Department": "engineering"}


def test_the_idp_initiated_response_signs_in_and_relay_state_goes_back(world: World) -> None:
    browser = world.browser()
    answer = world.post(browser, world.response(), relay="/start/device?user_code=ABCD-EFGH")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/start/device?user_code=ABCD-EFGH"
    assert signed_in(world, browser, world.saml)
    # A RelayState anywhere else is not followed: the portal's home instead.
    other = world.post(world.browser(), world.response(), relay="https://evil.example/")
    assert other.headers["location"] == f"/start/{world.saml.identity_store_id}"


def test_an_assertion_for_another_instances_audience_or_recipient_is_refused(
        world: World) -> None:
    other_entity, other_acs = world.sp(world.directory)
    refused(world.post(world.browser(), world.response(audience=other_entity)),
            text="audience")
    refused(world.post(world.browser(), world.response(recipient=other_acs,
                                                       destination=None)),
            text="Recipient")
    # And the other instance's ACS refuses what was made for this one.
    refused(world.post(world.browser(), world.response(), tenant=world.directory))
    browser = world.browser()  # the control: the same fixture, honest
    assert world.post(browser, world.response()).status_code == 303
    assert signed_in(world, browser, world.saml)


def test_a_person_the_directory_lacks_or_has_disabled_is_refused(world: World) -> None:
    refused(world.post(world.browser(), world.response(name_id="nobody@example.test")),
            text="no enabled user")
    name = f"pat-{secrets.token_hex(3)}"
    user_id = new_user(world.broker, world.saml.account_id, world.saml.identity_store_id, name)
    set_status(world.broker, world.saml.account_id, world.saml.identity_store_id, user_id,
               "DISABLED")
    refused(world.post(world.browser(), world.response(name_id=name)), text="no enabled user")
    # The control: the same user, enabled, signs in — their name in another case.
    set_status(world.broker, world.saml.account_id, world.saml.identity_store_id, user_id,
               "ENABLED")
    assert world.post(world.browser(), world.response(name_id=name.upper())).status_code == 303


def test_an_assertion_is_used_once(world: World) -> None:
    encoded = world.response()
    assert world.post(world.browser(), encoded).status_code == 303
    refused(world.post(world.browser(), encoded), text="already been used")


def test_an_assertion_signed_by_another_key_is_refused(world: World) -> None:
    forger = IdpKey.generate("idp.example.test")
    refused(world.post(world.browser(), world.response(signing_key=forger)), text="signature")
    assert world.post(world.browser(), world.response()).status_code == 303


def test_an_answer_to_another_browsers_request_is_refused(world: World) -> None:
    asking, other = world.browser(), world.browser()
    location = asking.get(f"/start/{world.saml.identity_store_id}/saml/login").headers[
        "location"]
    encoded = world.response(in_response_to=saml_request_id(location))
    refused(world.post(other, encoded), text="did not start here")
    assert world.post(asking, encoded).status_code == 303  # the browser that asked
    assert signed_in(world, asking, world.saml)


def test_password_sign_in_and_one_time_passwords_are_refused_while_external(
        world: World) -> None:
    secret = secrets.token_urlsafe(16)

    def password(tenant: Tenant) -> httpx.Response:
        browser = world.browser()
        browser.cookies.set("broker-portal", secret)
        return browser.post(
            f"/start/{tenant.identity_store_id}",
            data={"csrf": form_token(secret, b"portal-signin"), "username": tenant.user_name,
                  "password": otp[tenant.identity_store_id]})

    portal = world.broker.runtime.portal
    otp = {world.directory.identity_store_id: world.broker.server.call(portal.reset_password(
        world.directory.identity_store_id, world.directory.user_name)),
        world.saml.identity_store_id: "Whatever-password-1!"}
    control = password(world.directory)  # the directory's instance: the forced change next
    assert control.status_code == 200 and "Choose a new password" in control.text
    refused(password(world.saml), text="identity provider")
    result = CliRunner().invoke(main, [
        "sso", "reset-password", "--data-dir", str(world.broker.settings.data_dir),
        "--identity-store-id", world.saml.identity_store_id,
        "--user-name", world.saml.user_name])
    assert result.exit_code == 2 and "identity provider" in result.output


def test_switching_the_source_ends_the_instances_sessions(world: World, broker: Broker) -> None:
    tenant = make_tenant(broker, "Switch")
    instance = world.instance(tenant)
    call = broker.server.call
    call(world.sources.set_saml(instance, world.idp.metadata(sso_url=SSO_URL)))
    browser = world.browser()
    assert world.post(browser, world.response(tenant), tenant).status_code == 303
    assert signed_in(world, browser, tenant)
    call(world.sources.set_directory(instance))
    assert not signed_in(world, browser, tenant)
    page = browser.get(f"/start/{tenant.identity_store_id}")
    assert page.status_code == 200 and 'name="password"' in page.text  # the directory again
    refused(world.post(world.browser(), world.response(tenant), tenant), text="does not sign in")
    call(world.sources.set_saml(instance, world.idp.metadata(sso_url=SSO_URL)))
    assert not signed_in(world, browser, tenant)  # switching back revives nothing


def test_the_command_shows_and_sets_the_source(world: World, broker: Broker,
                                               tmp_path: Path) -> None:
    tenant = make_tenant(broker, "Command")
    base = ["--data-dir", str(broker.settings.data_dir)]
    # The command reads the broker's settings, here from the environment the server has.
    runner = CliRunner(env={"BROKER_SERVER_PUBLIC_URL": broker.settings.public_url})

    def run(*args: str) -> dict[str, object]:
        result = runner.invoke(main, ["sso", "identity-source", *args, *base, "--json"])
        assert result.exit_code == 0, result.output
        shown: dict[str, object] = json.loads(result.output)
        return shown

    shown = run("show", "--instance", tenant.instance_arn)
    assert shown["kind"] == "directory"
    assert shown["service_provider"] == {
        "entity_id": world.sp(tenant)[0], "metadata_url": world.sp(tenant)[0],
        "acs_url": world.sp(tenant)[1],
        "login_url": f"{broker.url}/start/{tenant.identity_store_id}/saml/login",
        "oidc_redirect_uri": f"{broker.url}/start/{tenant.identity_store_id}/oidc/callback"}
    metadata = tmp_path / "idp.xml"
    metadata.write_text(world.idp.metadata(sso_url=SSO_URL))
    shown = run("set-saml", "--identity-store-id", tenant.identity_store_id,
                "--metadata", str(metadata))
    assert shown["kind"] == "saml"
    assert shown["saml"] == {"entity_id": world.idp.entity_id, "sso_url": SSO_URL,
                             "signing_certificates": 1}
    secret = tmp_path / "secret"
    secret.write_text(world.provider.client_secret + "\n")
    shown = run("set-oidc", "--identity-store-id", tenant.identity_store_id,
                "--issuer", world.provider.url, "--client-id", world.provider.client_id,
                "--client-secret-file", str(secret), "--thumbprint", world.provider.thumbprint)
    assert shown["kind"] == "oidc"
    oidc = shown["oidc"]
    assert isinstance(oidc, dict) and oidc["client_secret"] is True
    assert oidc["token_endpoint"] == f"{world.provider.url}/token"
    assert world.provider.client_secret not in json.dumps(shown)
    assert run("set-directory", "--identity-store-id", tenant.identity_store_id)[
        "kind"] == "directory"
    # Refusals: metadata that is not metadata, an issuer that does not answer discovery.
    metadata.write_text("<nope/>")
    bad = runner.invoke(main, ["sso", "identity-source", "set-saml", *base,
                               "--identity-store-id", tenant.identity_store_id,
                               "--metadata", str(metadata)])
    assert bad.exit_code == 2 and "Could not parse metadata" in bad.output
    bad = runner.invoke(main, ["sso", "identity-source", "set-oidc", *base,
                               "--identity-store-id", tenant.identity_store_id,
                               "--issuer", world.provider.url + "/elsewhere",
                               "--client-id", "x", "--thumbprint", world.provider.thumbprint])
    assert bad.exit_code == 2 and "discovery document" in bad.output
    bad = runner.invoke(main, ["sso", "identity-source", "show", *base])
    assert bad.exit_code == 2 and "--instance" in bad.output


# -- OpenID Connect ---------------------------------------------------------------------------


def begin(world: World) -> tuple[httpx.Client, str]:
    """A browser sent to the provider: (the browser, the authorization URL)."""
    browser = world.browser()
    start = f"/start/{world.oidc.identity_store_id}"
    first = browser.get(start)
    assert first.status_code == 303 and first.headers["location"] == f"{start}/oidc/login"
    to_idp = browser.get(first.headers["location"])
    assert to_idp.status_code == 302
    return browser, to_idp.headers["location"]


def at_provider(world: World, location: str) -> str:
    """The provider's answer (it signs its person in): the redirect back to the portal."""
    assert location.startswith(world.provider.url + "/authorize?")
    with httpx.Client(verify=False) as client:  # noqa: S501 - the provider's own certificate
        answer = client.get(location, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back: str = answer.headers["location"]
    assert back.startswith(f"{world.broker.url}/start/{world.oidc.identity_store_id}/oidc/")
    return back


def finish(browser: httpx.Client, back: str) -> httpx.Response:
    parts = urlsplit(back)
    return browser.get(f"{parts.path}?{parts.query}")


def test_oidc_sign_in_with_pkce_state_and_nonce_then_a_role(world: World) -> None:
    browser, location = begin(world)
    params = world.provider  # what the provider was asked
    done = finish(browser, at_provider(world, location))
    asked = params.authorizations[-1]
    assert asked["response_type"] == "code" and asked["code_challenge_method"] == "S256"
    assert asked["scope"] == "openid profile email" and asked["nonce"] and asked["state"]
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/start/{world.oidc.identity_store_id}"
    assert signed_in(world, browser, world.oidc)
    session = world.broker.server.call(world.broker.runtime.portal.session(
        browser.cookies["broker-portal-session"]))
    assert session is not None and session.asserted == {"Team": "platform"}


def test_an_oidc_answer_with_another_state_is_refused(world: World) -> None:
    browser, location = begin(world)
    back = at_provider(world, location)
    forged = re.sub(r"state=[^&]+", "state=" + secrets.token_urlsafe(32), back)
    refused(finish(browser, forged), text="did not start here")
    browser, location = begin(world)  # the control
    assert finish(browser, at_provider(world, location)).status_code == 303


def test_an_id_token_with_another_nonce_is_refused(world: World) -> None:
    world.provider.id_token_overrides = {"nonce": secrets.token_urlsafe(32)}
    try:
        browser, location = begin(world)
        refused(finish(browser, at_provider(world, location)), text="nonce")
    finally:
        world.provider.id_token_overrides = {}
    browser, location = begin(world)
    assert finish(browser, at_provider(world, location)).status_code == 303


def test_another_sign_ins_code_fails_pkce_at_the_provider(world: World) -> None:
    victim, victim_location = begin(world)
    _, attacker_location = begin(world)  # another browser
    stolen = at_provider(world, attacker_location)  # a code for the attacker's challenge
    own = at_provider(world, victim_location)
    injected = re.sub(r"code=[^&]+", re.search(r"code=[^&]+", stolen).group(0),  # type: ignore[union-attr]
                      own)
    refused(finish(victim, injected), text="refused the sign-in code")
    browser, location = begin(world)  # the control
    assert finish(browser, at_provider(world, location)).status_code == 303


def test_a_forged_id_token_is_refused(world: World) -> None:
    world.provider.signing_key = IssuerKey.generate(kid=world.provider.keys[0].kid)
    try:
        browser, location = begin(world)
        refused(finish(browser, at_provider(world, location)), text="signature")
    finally:
        world.provider.signing_key = None
    browser, location = begin(world)
    assert finish(browser, at_provider(world, location)).status_code == 303


def test_an_oidc_person_the_directory_lacks_is_refused(world: World) -> None:
    world.provider.person = {**world.provider.person, "preferred_username": "nobody"}
    try:
        browser, location = begin(world)
        refused(finish(browser, at_provider(world, location)), text="no enabled user")
    finally:
        world.provider.person = {**world.provider.person,
                                 "preferred_username": world.oidc.user_name}
    browser, location = begin(world)
    assert finish(browser, at_provider(world, location)).status_code == 303


def test_the_providers_refusal_is_shown_with_an_error_id(world: World) -> None:
    browser, location = begin(world)
    state = re.search(r"state=([^&]+)", location)
    assert state is not None
    refused(finish(browser, f"/start/{world.oidc.identity_store_id}/oidc/callback?" + urlencode(
        {"error": "access_denied", "error_description": "Not today", "state": state.group(1)}
    )), text="access_denied")


def test_an_assertion_is_used_once_across_processes(
        tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> None:
    """Two brokers on one database and one Redis (as behind a load balancer): an assertion
    one of them took is refused by the other; a fresh one signs in there."""
    env = {"BROKER_STORE_EPHEMERAL_URL": redis_url,
           "BROKER_STORE_REDIS_PREFIX": f"broker-ids-{secrets.token_hex(4)}:"}
    one = start_broker(tmp_path_factory.mktemp("one"), env=env)
    two = ServerThread(create_app(one.settings), one.settings).start()
    try:
        tenant = make_tenant(one, "ReadOnly")
        idp = TestIdp("https://idp.example.test/metadata")
        instance = one.server.call(
            one.runtime.identity_center.instances.by_store(tenant.identity_store_id))
        sources = one.runtime.portal.sources
        one.server.call(sources.set_saml(instance, idp.metadata(sso_url=SSO_URL)))
        base = f"{one.url}/start/{tenant.identity_store_id}/saml"

        def response() -> str:
            return encode(idp.response(acs_url=f"{base}/acs", audience=f"{base}/metadata",
                                       roles=None, session_name=None,
                                       name_id=tenant.user_name))

        def post(url: str, encoded: str) -> httpx.Response:
            with httpx.Client(base_url=url) as client:
                return client.post(f"/start/{tenant.identity_store_id}/saml/acs",
                                   data={"SAMLResponse": encoded})

        encoded = response()
        assert post(one.url, encoded).status_code == 303
        refused(post(f"http://127.0.0.1:{two.port}", encoded), text="already been used")
        assert post(f"http://127.0.0.1:{two.port}", response()).status_code == 303  # control
    finally:
        two.stop()
        one.stop()


def test_a_role_whose_policy_reads_the_asserted_department(world: World,
                                                           broker: Broker) -> None:
    """The issue's "done when": a person signs in through the external SAML IdP and opens a
    role whose policy uses their department tag (ABAC enabled on the instance, the IdP's
    AccessControl:Department attribute); a person of another department, the same way, is
    refused (the control that the condition decides)."""
    import botocore.exceptions

    tenant = make_tenant(broker, "Departments")
    admin = broker.client("sso-admin", tenant.root)
    admin.put_inline_policy_to_permission_set(
        InstanceArn=tenant.instance_arn, PermissionSetArn=tenant.permission_set_arn,
        InlinePolicy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/Department": "engineering"}}}]}))
    admin.provision_permission_set(InstanceArn=tenant.instance_arn,
                                   PermissionSetArn=tenant.permission_set_arn,
                                   TargetType="ALL_PROVISIONED_ACCOUNTS")
    admin.create_instance_access_control_attribute_configuration(
        InstanceArn=tenant.instance_arn,
        InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": []})
    broker.server.call(world.sources.set_saml(world.instance(tenant),
                                              world.idp.metadata(sso_url=SSO_URL)))

    def lists_roles(department: str) -> bool:
        browser = world.browser()
        signed = world.post(browser, world.response(
            tenant, attributes={ACCESS_CONTROL + "Department": [department]}), tenant)
        assert signed.status_code == 303, signed.text
        start = f"/start/{tenant.identity_store_id}"
        csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get(start).text)
        assert csrf is not None
        keys = browser.post(f"{start}/credentials", data={
            "csrf": csrf.group(1), "account_id": tenant.account_id,
            "role_name": tenant.role_name})
        assert keys.status_code == 200, keys.text
        exports = lxml.html.fromstring(keys.text).xpath("//pre[@id='exports']/text()")[0]
        values = dict(re.findall(r'export (\w+)="([^"]+)"', exports))
        iam = broker.client("iam", Creds(values["AWS_ACCESS_KEY_ID"],
                                         values["AWS_SECRET_ACCESS_KEY"],
                                         values["AWS_SESSION_TOKEN"]))
        try:
            iam.list_roles()
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
            return False
        return True

    assert lists_roles("engineering")
    assert not lists_roles("sales")


def test_a_cli_sign_in_through_the_idp_carries_its_attributes_and_ends_with_the_source(
        world: World, broker: Broker) -> None:
    """The CLI's sign-in (a device authorization approved in a portal session that the SAML
    IdP opened) gives GetRoleCredentials the asserted department, as the portal's own keys
    have it; switching the identity source ends that sign-in too, not only the portal's
    session. The control: the same sign-in before the switch reads the tag and works."""
    import boto3
    import botocore
    import botocore.config
    import botocore.exceptions

    tenant = make_tenant(broker, "CliDepartments")
    admin = broker.client("sso-admin", tenant.root)
    admin.create_instance_access_control_attribute_configuration(
        InstanceArn=tenant.instance_arn,
        InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": []})
    instance = world.instance(tenant)
    broker.server.call(world.sources.set_saml(instance, world.idp.metadata(sso_url=SSO_URL)))

    def unsigned(service: str) -> object:
        return boto3.client(service, endpoint_url=broker.url, region_name="us-east-1",
                            config=botocore.config.Config(signature_version=botocore.UNSIGNED))

    oidc, sso = unsigned("sso-oidc"), unsigned("sso")
    client = oidc.register_client(clientName="cli", clientType="public")  # type: ignore[attr-defined]
    started = oidc.start_device_authorization(  # type: ignore[attr-defined]
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        startUrl=tenant.start_url)
    browser = world.browser()
    signed = world.post(browser, world.response(
        tenant, attributes={ACCESS_CONTROL + "Department": ["research"]}), tenant)
    assert signed.status_code == 303, signed.text
    page = browser.get("/start/device", params={"user_code": started["userCode"]})
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf is not None, page.text[:500]
    allowed = browser.post("/start/device", data={
        "csrf": csrf.group(1), "user_code": started["userCode"], "action": "allow"})
    assert allowed.status_code in (200, 303), allowed.text[:500]
    tokens = oidc.create_token(  # type: ignore[attr-defined]
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        grantType="urn:ietf:params:oauth:grant-type:device_code",
        deviceCode=started["deviceCode"])
    creds = sso.get_role_credentials(  # type: ignore[attr-defined]
        accessToken=tokens["accessToken"], accountId=tenant.account_id,
        roleName=tenant.role_name)["roleCredentials"]
    iam = broker.client("iam", Creds(creds["accessKeyId"], creds["secretAccessKey"],
                                     creds["sessionToken"]))
    admin.put_inline_policy_to_permission_set(
        InstanceArn=tenant.instance_arn, PermissionSetArn=tenant.permission_set_arn,
        InlinePolicy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/Department": "research"}}}]}))
    admin.provision_permission_set(InstanceArn=tenant.instance_arn,
                                   PermissionSetArn=tenant.permission_set_arn,
                                   TargetType="ALL_PROVISIONED_ACCOUNTS")
    iam.list_roles()  # the tag came with the CLI's sign-in: the condition allows
    refreshed = sso.get_role_credentials(  # type: ignore[attr-defined]
        accessToken=tokens["accessToken"], accountId=tenant.account_id,
        roleName=tenant.role_name)["roleCredentials"]
    assert refreshed["accessKeyId"]

    broker.server.call(world.sources.set_directory(instance))
    with pytest.raises(botocore.exceptions.ClientError) as ended:
        sso.list_accounts(accessToken=tokens["accessToken"])  # type: ignore[attr-defined]
    assert ended.value.response["Error"]["Code"] == "UnauthorizedException"


def test_a_person_the_idp_signed_in_registers_no_portal_mfa(world: World) -> None:
    """MFA is the IdP's: the portal shows no MFA devices to a person it signed in and refuses
    security key options for them; the control, a person of the directory tenant signed in
    with a password, is offered the registration form."""
    browser = world.browser()
    assert world.post(browser, world.response()).status_code == 303
    start = f"/start/{world.saml.identity_store_id}"
    home = browser.get(start)
    assert home.status_code == 200 and "webauthn-form" not in home.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert csrf is not None
    options = browser.post(f"{start}/webauthn/options", data={"csrf": csrf.group(1)})
    refused(options, text="identity provider")

    # The control: a person of the directory tenant, signed in with a password and TOTP.
    from broker.identitycenter.directory import Directory
    from tests.integration import test_portal

    runtime = world.broker.runtime
    own = test_portal.World(world.broker, world.instance(world.directory),
                            Directory(runtime.store, runtime.clock), {})
    name, _ = own.user()
    with test_portal.browser(own) as http:
        test_portal.first_sign_in(http, own, name)
        home = test_portal.signed_in_home(http, own)
        assert "webauthn-form" in home.text
        _, fields = test_portal.form_of(home, "/webauthn")
        offered = http.post(f"{own.start}/webauthn/options", data={"csrf": fields["csrf"]})
        assert offered.status_code == 200 and "challenge" in offered.json(), offered.text


def test_the_idps_session_end_ends_the_portal_session(world: World) -> None:
    """SessionNotOnOrAfter binds the portal as it binds AssumeRoleWithSAML (docs/saml.md): a
    response whose session has ended is refused, one that grants five minutes opens a portal
    session of five minutes, not sso.session_hours; the control, without one, the full
    session."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    refused(world.post(world.browser(), world.response(
        session_not_on_or_after=now - timedelta(minutes=1))), text="SessionNotOnOrAfter")
    portal = world.broker.runtime.portal
    for ends, longest in ((now + timedelta(minutes=5), 300),
                          (None, portal.session_seconds)):
        browser = world.browser()
        answer = world.post(browser, world.response(session_not_on_or_after=ends))
        assert answer.status_code == 303, answer.text
        session = world.broker.server.call(portal.session(
            browser.cookies["broker-portal-session"]))
        assert session is not None
        left = session.expires_at - now.timestamp()
        assert longest - 30 <= left <= longest + 5, (ends, left)


def test_only_access_control_claims_of_an_id_token_become_tags(world: World,
                                                               broker: Broker) -> None:
    """An OIDC provider's claims of other names (``email``, ``locale``: often the person's to
    edit at the provider) are not asserted attributes, even when named like an ABAC key; the
    control: the AccessControl claim of the same token is."""
    admin = broker.client("sso-admin", world.oidc.root)
    admin.create_instance_access_control_attribute_configuration(
        InstanceArn=world.oidc.instance_arn,
        InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": [
            {"Key": "locale", "Value": {"Source": ["${path:locale}"]}}]})
    before = dict(world.provider.person)
    world.provider.person = {**before, "locale": "chosen-by-me"}
    try:
        browser, location = begin(world)
        done = finish(browser, at_provider(world, location))
        assert done.status_code == 303, done.text
        session = broker.server.call(broker.runtime.portal.session(
            browser.cookies["broker-portal-session"]))
        assert session is not None and session.asserted == {"Team": "platform"}
    finally:
        world.provider.person = before
        admin.delete_instance_access_control_attribute_configuration(
            InstanceArn=world.oidc.instance_arn)


def test_matching_people_by_email_needs_a_verified_email(world: World, broker: Broker) -> None:
    """With ``user_claim`` ``email`` the provider must say it verified the address: an
    unverified one finds nobody (anyone may type anyone's address at some providers); the
    control, the same person with ``email_verified`` true, signs in."""
    provider, tenant = world.provider, world.oidc
    instance = world.instance(tenant)
    broker.server.call(world.sources.set_oidc(
        instance, issuer=provider.url, client_id=provider.client_id,
        client_secret=provider.client_secret, thumbprints=(provider.thumbprint,),
        user_claim="email"))
    before = dict(provider.person)
    try:
        for verified, works in ((False, False), (True, True)):
            provider.person = {"email": tenant.user_name, "email_verified": verified}
            browser, location = begin(world)
            done = finish(browser, at_provider(world, location))
            if works:
                assert done.status_code == 303, done.text
                assert signed_in(world, browser, tenant)
            else:
                refused(done, text="email_verified")
    finally:
        provider.person = before
        broker.server.call(world.sources.set_oidc(
            instance, issuer=provider.url, client_id=provider.client_id,
            client_secret=provider.client_secret, thumbprints=(provider.thumbprint,)))
