"""The identity-source routes of the access portal for the whole-surface check
(tests/integration/test_whole_surface.py): an instance whose source is a SAML IdP and one
whose source is an OpenID Connect provider (tests/external_idps.py), in the surface's broker;
``cases`` puts each hostile value in one place of one route's request with honest values
everywhere else (a fresh, real response or sign-in each time), ``control`` signs in honestly
through both doors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from broker.identitycenter.sources import urls
from tests.external_idps import OidcIdp
from tests.saml_idp import TestIdp, encode

SSO_URL = "https://surface-idp.example.test/sso"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _wire(text: str) -> str:
    return quote(text, safe="")


@dataclass
class Sources:
    http: httpx.Client
    https: bool
    saml_store: str
    oidc_store: str
    user_name: str
    entity_id: str
    acs_url: str
    idp: TestIdp
    provider: OidcIdp

    def cookie(self, name: str) -> str:
        return f"__Host-{name}" if self.https else name

    def response(self) -> str:
        """A fresh, honest, IdP-initiated response for the SAML instance."""
        return encode(self.idp.response(acs_url=self.acs_url, audience=self.entity_id,
                                        roles=None, session_name=None,
                                        name_id=self.user_name, name_id_format=None))

    def begin(self) -> tuple[str, dict[str, str]]:
        """A sign-in started at the OIDC instance and answered by the provider: (the browser's
        cookie, the callback's honest query)."""
        started = self.http.get(f"/start/{self.oidc_store}/oidc/login")
        assert started.status_code == 302, started.text
        cookie = started.cookies[self.cookie("broker-portal-oidc")]
        with httpx.Client(verify=False) as client:  # noqa: S501 - the provider's own certificate
            answer = client.get(started.headers["location"], follow_redirects=False)
        query = dict(p.split("=", 1) for p in urlsplit(answer.headers["location"]).query.split("&"))
        self.http.cookies.clear()
        return cookie, {"code": query["code"], "state": query["state"], "error": "",
                        "error_description": ""}


@contextmanager
def sources(broker: Any, http: httpx.Client) -> Iterator[Sources]:
    """The two instances, their users and sources, for as long as the block lasts."""
    runtime = broker.runtime
    ic, portal = runtime.identity_center, runtime.portal
    idp = TestIdp("https://surface-idp.example.test/metadata")
    sources = portal.sources
    assert sources is not None
    accounts = [broker.new_account()[0] for _ in range(2)]
    with OidcIdp() as provider:
        async def make() -> tuple[Any, Any]:
            stores = []
            for account, source in zip(accounts, ("saml", "oidc"), strict=True):
                instance = await ic.instances.create(account, name=f"surface-{source}",
                                                     client_token=None, tags=(),
                                                     organization=False)
                await ic.directory.create_user(instance, {
                    "UserName": "surface-external", "DisplayName": "Surface",
                    "Name": {"GivenName": "S", "FamilyName": "P"}}, "surface")
                if source == "saml":
                    await sources.set_saml(instance, idp.metadata(sso_url=SSO_URL))
                else:
                    provider.redirect_uris.add(urls(broker.settings.public_url,
                                                    instance).redirect_uri)
                    await sources.set_oidc(
                        instance, issuer=provider.url, client_id=provider.client_id,
                        client_secret=provider.client_secret,
                        thumbprints=(provider.thumbprint,))
                stores.append(instance)
            return stores[0], stores[1]

        saml_instance, oidc_instance = broker.server.call(make())
        provider.person = {"preferred_username": "surface-external"}
        sp = urls(broker.settings.public_url, saml_instance)
        yield Sources(http, broker.settings.public_url.startswith("https://"),
                      saml_instance.identity_store_id, oidc_instance.identity_store_id,
                      "surface-external", sp.entity_id, sp.acs_url, idp, provider)


Case = tuple[str, Callable[[str], httpx.Response]]


def cases(s: Sources) -> Iterator[Case]:
    http = s.http
    saml, oidc = f"/start/{s.saml_store}", f"/start/{s.oidc_store}"
    for route in ("saml/metadata", "saml/login", "oidc/login"):
        yield f"GET /start/{{id}}/{route} path", lambda v, r=route: http.get(f"/start/{v}/{r}")
    yield "GET /start/{id}/saml/login next=", lambda v: http.get(f"{saml}/saml/login?next={v}")
    yield "GET /start/{id}/oidc/login next=", lambda v: http.get(f"{oidc}/oidc/login?next={v}")
    yield "POST /start/{id}/saml/acs path", lambda v: http.post(
        f"/start/{v}/saml/acs", content=f"SAMLResponse={_wire(s.response())}", headers=FORM)
    yield "POST /start/{id}/saml/acs SAMLResponse=", lambda v: http.post(
        f"{saml}/saml/acs", content=f"SAMLResponse={v}&RelayState=", headers=FORM)
    yield "POST /start/{id}/saml/acs RelayState=", lambda v: http.post(
        f"{saml}/saml/acs", content=f"SAMLResponse={_wire(s.response())}&RelayState={v}",
        headers=FORM)
    yield "POST /start/{id}/saml/acs cookies", lambda v: http.post(
        f"{saml}/saml/acs", content=f"SAMLResponse={_wire(s.response())}",
        headers={**FORM, "Cookie": f"{s.cookie('broker-portal-saml')}={v}"})

    def callback(v: str, name: str) -> httpx.Response:
        cookie, honest = s.begin()
        query = "&".join(f"{k}={v if k == name else _wire(value)}"
                         for k, value in honest.items())
        return http.get(f"{oidc}/oidc/callback?{query}",
                        headers={"Cookie": f"{s.cookie('broker-portal-oidc')}={cookie}"})

    for name in ("code", "state", "error", "error_description"):
        yield f"GET /start/{{id}}/oidc/callback {name}=", \
            lambda v, n=name: callback(v, n)
    yield "GET /start/{id}/oidc/callback path", lambda v: http.get(
        f"/start/{v}/oidc/callback?code=x&state=y")

    def cookie_case(v: str) -> httpx.Response:
        _, honest = s.begin()
        return http.get(f"{oidc}/oidc/callback?code={honest['code']}&state={honest['state']}",
                        headers={"Cookie": f"{s.cookie('broker-portal-oidc')}={v}"})

    yield "GET /start/{id}/oidc/callback cookies", cookie_case


def control(s: Sources) -> None:
    """The honest requests of ``cases``: each door signs in (a portal session cookie)."""
    session = s.cookie("broker-portal-session")
    r = s.http.post(f"/start/{s.saml_store}/saml/acs",
                    content=f"SAMLResponse={_wire(s.response())}", headers=FORM)
    assert r.status_code == 303 and session in r.cookies, r.text
    s.http.cookies.clear()
    cookie, honest = s.begin()
    r = s.http.get(f"/start/{s.oidc_store}/oidc/callback?code={honest['code']}"
                   f"&state={honest['state']}",
                   headers={"Cookie": f"{s.cookie('broker-portal-oidc')}={cookie}"})
    assert r.status_code == 303 and session in r.cookies, r.text
    s.http.cookies.clear()
    assert s.http.get(f"/start/{s.saml_store}/saml/metadata").status_code == 200
    assert s.http.get(f"/start/{s.saml_store}/saml/login").status_code == 302
