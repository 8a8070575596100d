"""Identity sources in a real browser (headless Chromium through Playwright, tests/browser.py):
a directory user of an instance whose source is the suite's SAML IdP signs in to the access
portal SP-initiated (the portal sends the browser to the IdP, whose page posts the signed
response back) and IdP-initiated, opens the role's access keys and the management console;
a directory user of an instance whose source is an OpenID Connect provider (the suite's
issuer with an authorization and a token endpoint, over TLS) signs in through it and opens
the role's access keys; the device approval of the command line goes through the IdP and
comes back to its page. Screenshots are kept as artifacts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import chromium, launch, localhost_broker, screenshot, site
from tests.external_idps import OidcIdp, SamlIdpSite
from tests.helpers import Broker, Creds
from tests.saml_idp import TestIdp
from tests.sso_world import Tenant, make_tenant

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ACCESS_CONTROL = "https://aws.amazon.com/SAML/Attributes/AccessControl:"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = localhost_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def saml_tenant(broker: Broker) -> Iterator[tuple[Tenant, SamlIdpSite]]:
    tenant = make_tenant(broker, "ReadOnly")
    base = f"{site(broker)}/start/{tenant.identity_store_id}/saml"
    idp = TestIdp("https://browser-idp.example.test/metadata")
    with SamlIdpSite(idp, acs_url=f"{base}/acs", audience=f"{base}/metadata",
                     name_id=tenant.user_name.upper()) as web:
        web.attributes = {ACCESS_CONTROL + "Department": ["engineering"]}
        instance = broker.server.call(
            broker.runtime.identity_center.instances.by_store(tenant.identity_store_id))
        sources = broker.runtime.portal.sources
        broker.server.call(sources.set_saml(instance, idp.metadata(sso_url=f"{web.url}/sso")))
        yield tenant, web


@pytest.fixture(scope="module")
def oidc_tenant(broker: Broker) -> Iterator[tuple[Tenant, OidcIdp]]:
    tenant = make_tenant(broker, "Builders")
    with OidcIdp() as provider:
        provider.redirect_uris.add(
            f"{site(broker)}/start/{tenant.identity_store_id}/oidc/callback")
        provider.person = {"preferred_username": tenant.user_name}
        instance = broker.server.call(
            broker.runtime.identity_center.instances.by_store(tenant.identity_store_id))
        broker.server.call(broker.runtime.portal.sources.set_oidc(
            instance, issuer=provider.url, client_id=provider.client_id,
            client_secret=provider.client_secret, thumbprints=(provider.thumbprint,)))
        yield tenant, provider


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    executable = chromium()
    request.getfixturevalue("saml_tenant")  # the broker and its world first
    request.getfixturevalue("oidc_tenant")
    yield from launch(executable)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(ignore_https_errors=True)  # the OIDC provider's own certificate
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def heading(page: Page) -> str:
    return page.locator("h1").inner_text()


def access_keys(page: Page, broker: Broker, tenant: Tenant) -> str:
    """The role's access keys, opened from the portal page; the caller's ARN."""
    account = page.locator(f"section[data-account='{tenant.account_id}']")
    account.locator(f"li[data-role='{tenant.role_name}'] button",
                    has_text="Access keys").click()
    assert heading(page).startswith(f"Access keys for {tenant.role_name}")
    values = dict(re.findall(r'export (\w+)="([^"]+)"', page.locator("#exports").inner_text()))
    caller = broker.client("sts", Creds(values["AWS_ACCESS_KEY_ID"],
                                        values["AWS_SECRET_ACCESS_KEY"],
                                        values["AWS_SESSION_TOKEN"])).get_caller_identity()
    arn: str = caller["Arn"]
    return arn


def test_sp_initiated_saml_sign_in_then_the_role_and_the_console(
        context: BrowserContext, broker: Broker,
        saml_tenant: tuple[Tenant, SamlIdpSite]) -> None:
    tenant, web = saml_tenant
    start = f"{site(broker)}/start/{tenant.identity_store_id}"
    page = context.new_page()
    page.goto(start)  # not signed in: to the IdP, with an AuthnRequest
    page.wait_for_url(f"{web.url}/sso?*")
    assert heading(page) == "Test IdP"
    screenshot(page, "identity-source-saml-idp")
    page.click("form button")  # the IdP posts its response to the portal's ACS
    page.wait_for_url(start)
    assert heading(page) == "AWS access portal"
    screenshot(page, "identity-source-saml-portal")
    arn = access_keys(page, broker, tenant)
    assert re.fullmatch(rf"arn:aws:sts::{tenant.account_id}:assumed-role/"
                        rf"AWSReservedSSO_ReadOnly_[0-9a-f]{{16}}/{tenant.user_name}", arn), arn
    page.goto(start)
    page.locator(f"section[data-account='{tenant.account_id}'] li[data-role='ReadOnly'] "
                 "button", has_text="Management console").click()
    page.wait_for_url(f"{site(broker)}/console")
    assert heading(page) == "Console"


def test_idp_initiated_saml_sign_in(context: BrowserContext, broker: Broker,
                                    saml_tenant: tuple[Tenant, SamlIdpSite]) -> None:
    tenant, web = saml_tenant
    page = context.new_page()
    page.goto(f"{web.url}/start")  # the person begins at the IdP's own portal
    page.click("form button")
    page.wait_for_url(f"{site(broker)}/start/{tenant.identity_store_id}")
    assert heading(page) == "AWS access portal"
    assert ":assumed-role/AWSReservedSSO_ReadOnly_" in access_keys(page, broker, tenant)


def test_the_device_approval_goes_through_the_idp_and_back(
        context: BrowserContext, broker: Broker,
        saml_tenant: tuple[Tenant, SamlIdpSite]) -> None:
    tenant, _ = saml_tenant
    oidc = broker.client("sso-oidc")
    client = oidc.register_client(clientName="browser-cli", clientType="public")
    started = oidc.start_device_authorization(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        startUrl=f"{site(broker)}/start/{tenant.identity_store_id}")
    page = context.new_page()
    page.goto(started["verificationUriComplete"])  # a fresh browser: sign in at the IdP
    assert heading(page) == "Test IdP"
    page.click("form button")
    page.wait_for_selector("h1:text-is('Allow browser-cli to access your data?')")
    page.click("button[value='allow']")
    assert heading(page) == "Request approved"
    tokens = oidc.create_token(
        clientId=client["clientId"], clientSecret=client["clientSecret"],
        grantType="urn:ietf:params:oauth:grant-type:device_code",
        deviceCode=started["deviceCode"])
    roles = broker.client("sso").list_account_roles(
        accessToken=tokens["accessToken"], accountId=tenant.account_id)["roleList"]
    assert [r["roleName"] for r in roles] == ["ReadOnly"]


def test_oidc_sign_in_then_the_role(context: BrowserContext, broker: Broker,
                                    oidc_tenant: tuple[Tenant, OidcIdp]) -> None:
    tenant, provider = oidc_tenant
    start = f"{site(broker)}/start/{tenant.identity_store_id}"
    page = context.new_page()
    page.goto(start)  # to the provider and, signed in there, straight back
    page.wait_for_url(start)
    assert heading(page) == "AWS access portal"
    asked = provider.authorizations[-1]
    assert asked["code_challenge_method"] == "S256" and asked["nonce"]
    screenshot(page, "identity-source-oidc-portal")
    arn = access_keys(page, broker, tenant)
    assert re.fullmatch(rf"arn:aws:sts::{tenant.account_id}:assumed-role/"
                        rf"AWSReservedSSO_Builders_[0-9a-f]{{16}}/{tenant.user_name}", arn), arn
