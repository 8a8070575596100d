"""IAM Identity Center's OAuth server over boto3's real ``sso-oidc`` client: RegisterClient,
StartDeviceAuthorization and CreateToken's three grants, every answer checked against
botocore's model; each attack beside the honest flow the same world completes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import httpx
import pytest

from broker.identitycenter import oidc_api
from broker.identitycenter.oauth import OAuth, OidcError, Refused, Tokens
from broker.store.base import EphemeralStore, Spent
from tests.helpers import start_broker
from tests.sso_world import MovableClock, SsoWorld, code_of, make_world, pkce

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
MODEL = botocore.session.get_session().get_service_model("sso-oidc")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoWorld]:
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("sso-oidc"), clock=clock)
    try:
        yield make_world(broker, clock)
    finally:
        broker.stop()


def refused(call: Any, **params: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**params)
    return code_of(caught)


def test_the_error_statuses_are_the_models() -> None:
    shapes = {e.name: e for op in MODEL.operation_names
              for e in MODEL.operation_model(op).error_shapes}
    for name, (status, _) in oidc_api.ERRORS.items():
        assert shapes[name].metadata["error"]["httpStatusCode"] == status, name
    served = {"RegisterClient", "StartDeviceAuthorization", "CreateToken"}
    documented = {e.name for op in served for e in MODEL.operation_model(op).error_shapes}
    assert documented <= set(oidc_api.ERRORS)


def test_register_client(world: SsoWorld) -> None:
    made = world.register()
    assert made["clientSecretExpiresAt"] - made["clientIdIssuedAt"] == 90 * 24 * 3600
    assert "authorizationEndpoint" not in made  # a device-flow client
    code = world.register_for_code(world.one)
    assert code["authorizationEndpoint"] == f"{world.broker.url}/authorize"
    assert code["tokenEndpoint"] == f"{world.broker.url}/token"
    oidc = world.client("sso-oidc")
    base = {"clientName": "x", "clientType": "public"}
    for uri in ("https://evil.example/cb", "http://evil.example/cb", "http://127.0.0.1.evil/x",
                "http://user@127.0.0.1/x", "http://127.0.0.1:99999/x", "javascript:alert(1)"):
        assert refused(oidc.register_client, **base, redirectUris=[uri],
                       grantTypes=["authorization_code"],
                       issuerUrl=world.one.start_url) == "InvalidRedirectUriException", uri
    assert refused(oidc.register_client, clientName="x",
                   clientType="confidential") == "InvalidClientMetadataException"
    assert refused(oidc.register_client, **base,
                   scopes=["s3:everything"]) == "InvalidScopeException"
    assert refused(oidc.register_client, **base,
                   grantTypes=["password"]) == "UnsupportedGrantTypeException"
    assert refused(oidc.register_client, **base, grantTypes=["authorization_code"],
                   redirectUris=["http://127.0.0.1/cb"],
                   issuerUrl="https://elsewhere.example/start") == "InvalidRequestException"


def test_the_device_flow(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    started = oidc.start_device_authorization(**secret, startUrl=world.one.start_url)
    assert started["expiresIn"] == 600 and started["interval"] == 1
    assert started["verificationUri"] == f"{world.broker.url}/start/device"
    assert started["verificationUriComplete"] == (
        f"{world.broker.url}/start/device?user_code={started['userCode']}")
    code = started["userCode"]
    assert len(code) == 9 and code[4] == "-" and code.replace("-", "").isalpha()
    poll = {**secret, "grantType": DEVICE, "deviceCode": started["deviceCode"]}
    with pytest.raises(botocore.exceptions.ClientError) as pending:
        oidc.create_token(**poll)
    assert code_of(pending) == "AuthorizationPendingException"
    assert pending.value.response["error"] == "authorization_pending"
    # Polled again at once: slow down (RFC 8628 §3.5).
    assert refused(oidc.create_token, **poll) == "SlowDownException"
    found = world.broker.server.call(world.oauth.device_request(code.lower().replace("-", ""),
                                                                source_ip="192.0.2.1"))
    assert found is not None and found.identity_store_id == world.one.identity_store_id
    world.approve(code, world.one)
    with world.clock.later(1):
        tokens = oidc.create_token(**poll)
    assert tokens["tokenType"] == "Bearer" and tokens["expiresIn"] == 3600
    assert tokens["accessToken"].startswith("aoa") and tokens["refreshToken"].startswith("aor")
    grant = world.broker.server.call(world.oauth.resolve(tokens["accessToken"]))
    assert grant is not None and grant.user_id == world.one.user_id
    # The device code is spent: once only.
    with world.clock.later(2):
        assert refused(oidc.create_token, **poll) == "InvalidGrantException"
    # And the user code was decided once: no second approval.
    with pytest.raises(Refused):
        world.approve(code, world.one)


def test_a_device_flow_without_scopes_gets_no_refresh_token(world: SsoWorld) -> None:
    client = world.client("sso-oidc").register_client(clientName="legacy",
                                                       clientType="public")
    _, tokens = world.device_tokens(world.one, client)
    assert "refreshToken" not in tokens and tokens["accessToken"]


def test_denied_and_expired_device_codes(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    denied = oidc.start_device_authorization(**secret, startUrl=world.one.start_url)
    world.broker.server.call(world.oauth.deny_device(denied["userCode"]))
    assert refused(oidc.create_token, **secret, grantType=DEVICE,
                   deviceCode=denied["deviceCode"]) == "AccessDeniedException"
    late = oidc.start_device_authorization(**secret, startUrl=world.one.start_url)
    world.approve(late["userCode"], world.one)
    with world.clock.later(601):
        assert refused(oidc.create_token, **secret, grantType=DEVICE,
                       deviceCode=late["deviceCode"]) == "ExpiredTokenException"
    # The control: approved and redeemed in time, the same way.
    world.device_tokens(world.one, client)


def test_a_device_code_approved_for_another_instance_is_refused(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    started = oidc.start_device_authorization(**secret, startUrl=world.one.start_url)
    # A person of instance two, signed in to their own portal, tries to approve it.
    with pytest.raises(Refused):
        world.approve(started["userCode"], world.two)
    assert refused(oidc.create_token, **secret, grantType=DEVICE,
                   deviceCode=started["deviceCode"]) == "AuthorizationPendingException"
    # The control: the person of instance one approves it, and it is redeemed.
    world.approve(started["userCode"], world.one)
    with world.clock.later(1):
        tokens = oidc.create_token(**secret, grantType=DEVICE,
                                   deviceCode=started["deviceCode"])
    grant = world.broker.server.call(world.oauth.resolve(tokens["accessToken"]))
    assert grant is not None and grant.identity_store_id == world.one.identity_store_id


def test_another_clients_device_code_is_refused(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    mine, theirs = world.register(), world.register()
    started = oidc.start_device_authorization(clientId=mine["clientId"],
                                              clientSecret=mine["clientSecret"],
                                              startUrl=world.one.start_url)
    world.approve(started["userCode"], world.one)
    assert refused(oidc.create_token, clientId=theirs["clientId"],
                   clientSecret=theirs["clientSecret"], grantType=DEVICE,
                   deviceCode=started["deviceCode"]) == "InvalidGrantException"
    # A client id with another client's secret: InvalidClientException.
    assert refused(oidc.create_token, clientId=mine["clientId"],
                   clientSecret=theirs["clientSecret"], grantType=DEVICE,
                   deviceCode=started["deviceCode"]) == "InvalidClientException"
    tokens = oidc.create_token(clientId=mine["clientId"], clientSecret=mine["clientSecret"],
                               grantType=DEVICE, deviceCode=started["deviceCode"])
    assert tokens["accessToken"]  # the control: its own client redeems it


def test_a_guessed_user_code_is_throttled(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    started = oidc.start_device_authorization(clientId=client["clientId"],
                                              clientSecret=client["clientSecret"],
                                              startUrl=world.one.start_url)
    lookup = world.oauth.device_request
    guesser, honest = "198.51.100.7", "198.51.100.8"
    for guess in range(10):
        assert world.broker.server.call(lookup(f"BCDF-GH{guess:02d}"[:9],
                                               source_ip=guesser)) is None
    # Past ten misses the address finds nothing, not even the right code ...
    assert world.broker.server.call(lookup(started["userCode"], source_ip=guesser)) is None
    # ... while another address finds it: the control.
    found = world.broker.server.call(lookup(started["userCode"], source_ip=honest))
    assert found is not None and found.client_id == client["clientId"]
    with world.clock.later(601):  # and the guesser may try again later
        assert world.broker.server.call(lookup(started["userCode"], source_ip=guesser)) \
            is None  # the code itself has expired by then
        assert world.broker.server.call(world.oauth.device_request(
            "BCDF-GHJK", source_ip=guesser)) is None


def test_a_start_url_must_be_an_instances(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    for url in (f"{world.broker.url}/start/d-0000000000", "https://d-1.awsapps.com/start",
                f"{world.broker.url}/start/../start/{world.one.identity_store_id}"):
        assert refused(oidc.start_device_authorization, **secret,
                       startUrl=url) == "InvalidRequestException", url
    assert refused(oidc.start_device_authorization, clientId="nobody", clientSecret="x",
                   startUrl=world.one.start_url) == "InvalidClientException"
    oidc.start_device_authorization(**secret, startUrl=world.one.start_url + "/")  # control


def test_the_authorization_code_flow_with_pkce(world: SsoWorld) -> None:
    client, tokens = world.code_tokens(world.one)
    grant = world.broker.server.call(world.oauth.resolve(tokens["accessToken"]))
    assert grant is not None and grant.client_id == client["clientId"]
    assert tokens["refreshToken"]


def test_authorization_code_attacks(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register_for_code(world.one)
    other = world.register_for_code(world.one)
    redirect = "http://127.0.0.1:43111/oauth/callback"
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}

    def attempt(**changes: Any) -> str:
        verifier, challenge = pkce()
        code = world.issue_code(client, world.one, challenge, redirect)
        params = {**secret, "grantType": "authorization_code", "code": code,
                  "redirectUri": redirect, "codeVerifier": verifier, **changes}
        result = refused(oidc.create_token, **params)
        # Whatever was wrong, the code is spent: the honest redemption after it fails too.
        assert refused(oidc.create_token, **{**params, **secret, "redirectUri": redirect,
                                             "codeVerifier": verifier}) \
            == "InvalidGrantException"
        return result

    assert attempt(codeVerifier=pkce()[0]) == "InvalidGrantException"  # a wrong verifier
    assert attempt(redirectUri="http://127.0.0.1:43112/oauth/callback") == \
        "InvalidGrantException"  # the redirect URI switched
    assert attempt(clientId=other["clientId"], clientSecret=other["clientSecret"]) == \
        "InvalidGrantException"  # another client's code
    verifier, challenge = pkce()
    code = world.issue_code(client, world.one, challenge, redirect)
    with world.clock.later(301):  # short-lived
        assert refused(oidc.create_token, **secret, grantType="authorization_code", code=code,
                       redirectUri=redirect, codeVerifier=verifier) == "InvalidGrantException"
    # The portal refuses what does not fit the registration.
    for changes in ({"redirect_uri": "http://127.0.0.1:5/elsewhere"},
                    {"redirect_uri": "https://evil.example/oauth/callback"},
                    {"code_challenge_method": "plain"}, {"client_id": "forged"}):
        params: dict[str, Any] = {
            "client_id": client["clientId"], "redirect_uri": redirect,
            "code_challenge": challenge, "code_challenge_method": "S256", **changes}
        with pytest.raises(Refused) as caught:
            world.broker.server.call(world.oauth.authorization_request(**params))
        assert caught.value.redirect == ("code_challenge_method" in changes), changes
    # A person of another instance cannot approve the request.
    request = world.broker.server.call(world.oauth.authorization_request(
        client_id=client["clientId"], redirect_uri=redirect, code_challenge=challenge,
        code_challenge_method="S256"))
    with pytest.raises(Refused):
        world.broker.server.call(world.oauth.issue_code(
            request, account_id=world.two.account_id,
            identity_store_id=world.two.identity_store_id, user_id=world.two.user_id))
    world.code_tokens(world.one)  # the control


def test_an_error_goes_to_the_redirect_uri_only_once_it_is_the_clients(
        world: SsoWorld) -> None:
    """RFC 6749 §4.1.2.1: what is wrong with a request is sent to its redirect URI only when
    that URI is one the client registered; otherwise the person is told, not the URI."""
    client = world.register_for_code(world.one)
    bad_requests: list[dict[str, Any]] = [
        {"code_challenge": "too-short"}, {"code_challenge_method": "plain"},
        {"response_type": "token"}, {"scopes": ["s3:everything"]}]
    for bad in bad_requests:
        for redirect_uri, registered in (
                ("http://127.0.0.1:43111/elsewhere", False),  # loopback, not registered
                ("http://localhost:43111/oauth/callback", False),  # another loopback host
                ("http://127.0.0.1:43111/oauth/callback", True)):  # the control
            with pytest.raises(Refused) as caught:
                world.broker.server.call(world.oauth.authorization_request(
                    client_id=client["clientId"], redirect_uri=redirect_uri,
                    **{"code_challenge": pkce()[1], "code_challenge_method": "S256", **bad}))
            assert caught.value.redirect == registered, (bad, redirect_uri)
            if not registered:
                assert "redirect URI" in caught.value.description


def test_refresh_rotates_and_reuse_ends_the_chain(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client, first = world.device_tokens(world.one)
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    second = oidc.create_token(**secret, grantType="refresh_token",
                               refreshToken=first["refreshToken"])
    assert second["refreshToken"] != first["refreshToken"]
    third = oidc.create_token(**secret, grantType="refresh_token",
                              refreshToken=second["refreshToken"])
    resolve = world.oauth.resolve
    assert world.broker.server.call(resolve(third["accessToken"])) is not None
    # An old refresh token again: refused, and every token of the chain stops working.
    assert refused(oidc.create_token, **secret, grantType="refresh_token",
                   refreshToken=first["refreshToken"]) == "InvalidGrantException"
    for tokens in (first, second, third):
        assert world.broker.server.call(resolve(tokens["accessToken"])) is None
    assert refused(oidc.create_token, **secret, grantType="refresh_token",
                   refreshToken=third["refreshToken"]) == "InvalidGrantException"
    # The control: another sign-in of the same person is untouched.
    _, other = world.device_tokens(world.one, client)
    assert world.broker.server.call(resolve(other["accessToken"])) is not None
    oidc.create_token(**secret, grantType="refresh_token", refreshToken=other["refreshToken"])


class Paced:
    """The broker's ephemeral store, as one broker process sees it: before each operation it
    yields to the event loop as many times as ``pauses`` says (one once they run out), so
    that two presenters racing on one loop interleave their store operations in the order a
    test chooses, as two processes sharing Redis may."""

    def __init__(self, inner: EphemeralStore, pauses: Sequence[int] = ()) -> None:
        self._inner = inner
        self._pauses = list(pauses)

    async def _pause(self) -> None:
        for _ in range(self._pauses.pop(0) if self._pauses else 1):
            await asyncio.sleep(0)

    async def ping(self) -> None:
        await self._inner.ping()

    async def close(self) -> None:
        return None

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        await self._pause()
        return await self._inner.put_if_absent(key, value, ttl)

    async def take(self, key: str) -> bytes | None:
        await self._pause()
        return await self._inner.take(key)

    async def spend(self, key: str, ttl: float, since: float) -> Spent:
        await self._pause()
        return await self._inner.spend(key, ttl, since)

    async def get(self, key: str) -> bytes | None:
        await self._pause()
        return await self._inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._pause()
        await self._inner.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self._pause()
        await self._inner.delete(key)

    async def incr(self, key: str, ttl: float) -> int:
        await self._pause()
        return await self._inner.incr(key, ttl)


# How each of two presenters is paced: in step; or one of them stalled (a slow process)
# before its first, second, ... store operation of the refresh, while the other runs on.
STALL = 12
SCHEDULES = [((), ())] + [
    (stalled, ()) if first else ((), stalled)
    for at in range(5) for first in (True, False)
    for stalled in [(1,) * at + (STALL,)]]


def test_one_refresh_token_presented_twice_at_once_ends_the_sign_in(world: SsoWorld) -> None:
    """Two CreateToken refreshes with one refresh token at the same moment, as by a thief
    racing the victim, on two processes: one rotates, the other is a reuse, and the whole
    sign-in ends, the winner's new tokens too (RFC 6819 §5.2.2.3) — however the two
    interleave."""
    oidc = world.client("sso-oidc")
    runtime = world.broker.runtime
    resolve = world.oauth.resolve

    def process(pauses: Sequence[int]) -> OAuth:
        return OAuth(Paced(runtime.ephemeral, pauses), runtime.keyring, runtime.clock,
                     runtime.identity_center.instances, runtime.identity_center.directory,
                     public_url=runtime.settings.public_url)

    for schedule in SCHEDULES:
        client, tokens = world.device_tokens(world.one)
        secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}

        async def race(schedule: Any = schedule, client: dict[str, Any] = client,
                       token: str = tokens["refreshToken"]) -> list[Any]:
            return await asyncio.gather(*(process(pauses).create_token(
                client_id=client["clientId"], client_secret=client["clientSecret"],
                grant_type="refresh_token", refresh_token=token) for pauses in schedule),
                return_exceptions=True)

        results = world.broker.server.call(race())
        won = [r for r in results if isinstance(r, Tokens)]
        lost = [r for r in results if isinstance(r, OidcError)]
        assert len(won) == 1 and len(lost) == 1, (schedule, results)
        assert lost[0].code == "InvalidGrantException", schedule
        assert "used already" in str(lost[0]), (schedule, lost[0])
        assert won[0].refresh_token is not None
        for access in (tokens["accessToken"], won[0].access_token):
            assert world.broker.server.call(resolve(access)) is None, schedule
        for refresh in (tokens["refreshToken"], won[0].refresh_token):
            assert refused(oidc.create_token, **secret, grantType="refresh_token",
                           refreshToken=refresh) == "InvalidGrantException", schedule
    # The control: a refresh token presented once, by one process, rotates; the new tokens
    # work, and so does the next refresh.
    client, other = world.device_tokens(world.one)
    fresh = world.broker.server.call(process(()).create_token(
        client_id=client["clientId"], client_secret=client["clientSecret"],
        grant_type="refresh_token", refresh_token=other["refreshToken"]))
    assert world.broker.server.call(resolve(fresh.access_token)) is not None
    oidc.create_token(clientId=client["clientId"], clientSecret=client["clientSecret"],
                      grantType="refresh_token", refreshToken=fresh.refresh_token)


def test_refresh_by_another_client_and_after_the_session(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client, tokens = world.device_tokens(world.one)
    thief = world.register()
    assert refused(oidc.create_token, clientId=thief["clientId"],
                   clientSecret=thief["clientSecret"], grantType="refresh_token",
                   refreshToken=tokens["refreshToken"]) == "InvalidGrantException"
    client, tokens = world.device_tokens(world.one, client)
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    with world.clock.later(3601):  # the access token has expired; the refresh token works
        assert world.broker.server.call(world.oauth.resolve(tokens["accessToken"])) is None
        tokens = oidc.create_token(**secret, grantType="refresh_token",
                                   refreshToken=tokens["refreshToken"])
        assert world.broker.server.call(world.oauth.resolve(tokens["accessToken"]))
    with world.clock.later(8 * 3600 + 1):  # the portal session is over
        assert refused(oidc.create_token, **secret, grantType="refresh_token",
                       refreshToken=tokens["refreshToken"]) == "InvalidGrantException"


def test_create_token_refuses_what_is_not_a_grant(world: SsoWorld) -> None:
    oidc = world.client("sso-oidc")
    client = world.register()
    secret = {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}
    assert refused(oidc.create_token, **secret,
                   grantType="password") == "UnsupportedGrantTypeException"
    assert refused(oidc.create_token, **secret, grantType="authorization_code",
                   code="x" * 43) == "UnauthorizedClientException"
    assert refused(oidc.create_token, **secret, grantType=DEVICE,
                   deviceCode="x" * 64) == "InvalidGrantException"
    assert refused(oidc.create_token, **secret, grantType=DEVICE,
                   deviceCode="é" * 3) == "InvalidGrantException"
    assert refused(oidc.create_token, **secret, grantType="refresh_token",
                   refreshToken="aor" + "x" * 60) == "InvalidGrantException"
    assert refused(world.raw_client("sso-oidc").create_token, clientId=client["clientId"],
                   grantType=DEVICE) == "InvalidRequestException"


def test_wrong_methods_and_bodies_are_aws_errors(world: SsoWorld) -> None:
    for method, path in (("GET", "/token"), ("PUT", "/client/register"),
                         ("DELETE", "/device_authorization"), ("POST", "/assignment/roles")):
        r = httpx.request(method, world.broker.url + path)
        assert r.status_code == 405, (method, path, r.text)
        assert r.headers["x-amzn-errortype"] == "InvalidRequestException"
        assert r.headers["content-type"] == "application/json"
    r = httpx.post(world.broker.url + "/token", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = httpx.post(world.broker.url + "/t%6Fken", content=b"{}")
    assert r.status_code == 404 and r.headers["x-amzn-errortype"] == "InvalidRequestException"


def test_the_start_url_instance_paths_do_not_clash(world: SsoWorld, tmp_path: Path) -> None:
    """The REST paths are the models' and no other route's."""
    from broker.web.rest import PATHS

    routes = {getattr(r, "path", None) for r in world.broker.server.app.web.routes}
    assert not PATHS & routes
    del tmp_path
