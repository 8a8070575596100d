"""create_app(settings): the one place that wires stores, services and routes together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from broker import metrics
from broker import settings as settings_module
from broker.clock import Clock
from broker.identitycenter import oidc_model, portal_model
from broker.logformat import REQUEST_STARTED
from broker.runtime import open_runtime
from broker.settings import Settings
from broker.signin.demo import DemoIdentityProvider
from broker.web import (
    credentials,
    dev,
    federation,
    password,
    portal,
    portal_sources,
    saml,
    signin,
)
from broker.web.health import healthz, readyz
from broker.web.logs import redact_access_log
from broker.web.pages import DEV_MODE, http_error
from broker.web.query import QueryApp
from broker.web.rest import PATHS as REST_PATHS
from broker.web.rest import RestApp
from broker.web.scim import PREFIX as SCIM_PREFIX
from broker.web.scim import ScimApp

log = logging.getLogger("broker")


class BrokerApp:
    """The ASGI application.

    AWS Query requests (``GET`` or ``POST`` on ``/``), the hot path of every SDK call, go
    straight to the Query endpoint; everything else (health checks, the lifespan) goes through
    Starlette's routing and middleware.
    """

    def __init__(self, web: Starlette, *, dev: bool = False,
                 metrics_networks: tuple[str, ...] | None = None) -> None:
        self.web = web
        self.query = QueryApp(web.state)
        self.rest = RestApp(web.state)  # sso and sso-oidc (rest-json), every method
        self.scim = ScimApp(web.state)  # /scim/v2/…, every method
        self.dev = dev
        # Who may read GET /metrics on this (the public) port: None, nobody (a 404 page).
        self.metrics_networks = metrics_networks
        # Metrics' action of a browser request: its route's path template.
        self._route_paths: dict[Any, str] = {}
        for route in web.routes:
            if isinstance(route, Route):
                self._route_paths[route.endpoint] = route.path
            elif isinstance(route, Mount):
                self._route_paths[route.app] = route.path + "/"

    @property
    def state(self) -> State:
        return self.web.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.web(scope, receive, send)  # the lifespan
            return
        REQUEST_STARTED.set(time.time())  # an access log line's duration
        path = scope["path"]
        if path == "/" and scope["method"] in _QUERY:
            await self.query(scope, receive, send)  # counts its own requests
            return
        if path in REST_PATHS:
            await _observed("rest-json", _rest_action, self.rest, scope, receive, send)
            return
        if path.startswith(SCIM_PREFIX):
            await _observed("scim", _scim_action, self.scim, scope, receive, send)
            return
        if path == "/metrics" and self.metrics_networks is not None \
                and scope["method"] in ("GET", "HEAD"):
            client = scope.get("client")
            if metrics.allowed(client[0] if client else None, self.metrics_networks):
                await _metrics(send)
                return
        if self.dev:
            DEV_MODE.set(True)
        await _observed("web", self._web_action, self.web, scope, receive, send)

    def _web_action(self, scope: Scope) -> str:
        """The path of the route Starlette's router chose (it writes its endpoint into the
        scope), or "other" (no route)."""
        return self._route_paths.get(scope.get("endpoint"), metrics.OTHER)


async def _observed(protocol: str, action_of: Callable[[Scope], str],
                    app: Callable[[Scope, Receive, Send], Any], scope: Scope,
                    receive: Receive, send: Send) -> None:
    """``app``'s answer, counted by ``protocol``, action, status and AWS error code."""
    started = time.perf_counter()
    answer: list[Any] = [0, ""]

    async def observe(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer[0] = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"x-amzn-errortype":
                    answer[1] = value.decode("latin-1")
        await send(message)

    try:
        await app(scope, receive, observe)
    except Exception:
        # Raised before answering: the server answers 500 for it (after answering: counted as
        # answered). Counted either way, so that failures show in the figures.
        answer[0] = answer[0] or 500
        raise
    finally:
        status = answer[0]
        if status:
            action = action_of(scope)
            metrics.request(protocol, action, status, answer[1] if status >= 400 else "",
                            time.perf_counter() - started)
            if status == 200 and action in _ISSUING_REST:
                metrics.credentials_issued(action)


async def _metrics(send: Send) -> None:
    body = metrics.exposition()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", metrics.CONTENT_TYPE.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


# Metrics' action labels, each from the broker's own tables: the rest-json operations by
# method and path, SCIM's resource types, the Starlette endpoints' names.
_REST_ACTIONS: dict[tuple[str, str], str] = {
    (method, path): name for model in (portal_model, oidc_model)
                 for name, (method, path, _) in model.HTTP.items()}
_ISSUING_REST = frozenset({"GetRoleCredentials"})
_SCIM_RESOURCES = frozenset({"Users", "Groups", "ServiceProviderConfig", "ResourceTypes",
                             "Schemas", "Bulk", "Me"})
_SCIM_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def _rest_action(scope: Scope) -> str:
    return _REST_ACTIONS.get((scope["method"], scope["path"]), metrics.OTHER)


def _scim_action(scope: Scope) -> str:
    parts = scope["path"][len(SCIM_PREFIX):].split("/")
    resource = parts[1] if len(parts) > 1 else ""
    if resource not in _SCIM_RESOURCES or scope["method"] not in _SCIM_METHODS:
        return metrics.OTHER
    return f"{scope['method']} {resource}"


_QUERY = frozenset({"GET", "POST"})


def create_app(settings: Settings, *, clock: Clock | None = None) -> BrokerApp:
    metrics.count(settings.metrics.enabled)
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, clock=clock)
        app.state.runtime = runtime
        if settings.server.dev:
            runtime.demo = DemoIdentityProvider(runtime.iam, runtime.sts, runtime.authz,
                                                runtime.ephemeral)
            await runtime.demo.ensure()
            runtime.signin_links.append(("Demo sign-in (development mode)", "/dev/signin"))
        redact_access_log()
        metrics.worker_started()
        flusher = asyncio.create_task(runtime.last_used.run())
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which would otherwise walk it again and again.
        gc.collect()
        gc.freeze()
        log.info("broker ready at %s", settings.public_url)
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:
                await runtime.last_used.flush()
            finally:
                await runtime.close()  # the audit sink's pending lines are sent here

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/saml", saml.acs, methods=["POST"]),
        Route("/saml/metadata", saml.metadata, methods=["GET"]),
        Route("/saml/choose", saml.choose, methods=["POST"]),
        Route("/saml/login", saml.login, methods=["GET"]),
        Route("/console", signin.console, methods=["GET"]),
        Route("/console/signout", signin.sign_out, methods=["POST"]),
        Route("/console/switch-role", signin.switch_role, methods=["POST"]),
        Route(credentials.PAGE, credentials.show, methods=["GET"]),
        Route(f"{credentials.PAGE}/password", credentials.password, methods=["POST"]),
        Route(f"{credentials.PAGE}/keys", credentials.keys, methods=["POST"]),
        Route(f"{credentials.PAGE}/mfa", credentials.new_device, methods=["POST"]),
        Route(f"{credentials.PAGE}/mfa/enable", credentials.enable_device, methods=["POST"]),
        Route(f"{credentials.PAGE}/mfa/remove", credentials.remove_device, methods=["POST"]),
        Route(f"{credentials.PAGE}/cli", credentials.command_line, methods=["POST"]),
        Route(f"{credentials.PAGE}/webauthn/options", credentials.webauthn_options,
              methods=["POST"]),
        Route(f"{credentials.PAGE}/webauthn", credentials.webauthn_register, methods=["POST"]),
        Route("/federation", federation.federation, methods=["GET"]),
        Route("/gateway/auth", signin.gateway_auth, methods=["GET", "HEAD"]),
        Route("/signin", password.signin_page, methods=["GET"]),
        Route("/signin", password.signin, methods=["POST"]),
        Route("/signin/mfa", password.signin_mfa, methods=["POST"]),
        Route("/signin/change", password.signin_change, methods=["POST"]),
        Route("/signin/enrol", password.signin_enrol, methods=["POST"]),
        # The access portal (Identity Center): /start/device before /start/{id}.
        Route("/start", portal.start, methods=["GET"]),
        Route("/start/device", portal.device, methods=["GET"]),
        Route("/start/device", portal.device_decide, methods=["POST"]),
        Route("/authorize", portal.authorize, methods=["GET"]),
        Route("/authorize", portal.authorize_decide, methods=["POST"]),
        Route("/start/{identity_store_id}", portal.home, methods=["GET"]),
        Route("/start/{identity_store_id}", portal.signin, methods=["POST"]),
        Route("/start/{identity_store_id}/change", portal.signin_change, methods=["POST"]),
        Route("/start/{identity_store_id}/invitation", portal.invitation, methods=["GET"]),
        Route("/start/{identity_store_id}/invitation", portal.invitation_accept,
              methods=["POST"]),
        Route("/start/{identity_store_id}/enrol", portal.signin_enrol, methods=["POST"]),
        Route("/start/{identity_store_id}/mfa", portal.signin_mfa, methods=["POST"]),
        Route("/start/{identity_store_id}/console", portal.console, methods=["POST"]),
        Route("/start/{identity_store_id}/credentials", portal.credentials, methods=["POST"]),
        Route("/start/{identity_store_id}/signout", portal.sign_out, methods=["POST"]),
        # Sign-in through the instance's external identity source (SAML 2.0, OIDC).
        Route("/start/{identity_store_id}/saml/metadata", portal_sources.saml_metadata,
              methods=["GET"]),
        Route("/start/{identity_store_id}/saml/login", portal_sources.saml_login,
              methods=["GET"]),
        Route("/start/{identity_store_id}/saml/acs", portal_sources.saml_acs,
              methods=["POST"]),
        Route("/start/{identity_store_id}/oidc/login", portal_sources.oidc_login,
              methods=["GET"]),
        Route("/start/{identity_store_id}/oidc/callback", portal_sources.oidc_callback,
              methods=["GET"]),
        Route("/start/{identity_store_id}/webauthn/options", portal.webauthn_options,
              methods=["POST"]),
        Route("/start/{identity_store_id}/webauthn", portal.webauthn_register,
              methods=["POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"),
              name="static"),
    ]
    if settings.server.dev:
        routes += [
            Route("/dev/signin", dev.signin_page, methods=["GET"]),
            Route("/dev/signin", dev.signin, methods=["POST"]),
            Route("/dev/choose", dev.choose, methods=["POST"]),
        ]
    web = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    public_metrics = settings.metrics.enabled and settings.metrics.public
    return BrokerApp(web, dev=settings.server.dev,
                     metrics_networks=settings.metrics.public_networks if public_metrics
                     else None)


WORKER_HEALTHCHECK_SECONDS = 30


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for this broker: proxies it trusts, logging, no version banner."""
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.server.trusted_proxies),
        "access_log": settings.log.access,
        "log_level": settings.log.level,
        "server_header": False,
        "http": "broker.web.transport:BrokerHttpProtocol",
        # SIGTERM: requests in flight get this long to finish (docs/operations.md).
        "timeout_graceful_shutdown": settings.server.shutdown_timeout_seconds,
        # --workers: uvicorn's supervisor kills a worker that does not answer its ping within
        # this (5 s by default, which a worker busy on a loaded machine, or opening its stores
        # at start, overruns); a worker that hangs is still replaced, 30 s later.
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
    }


def app_from_environment() -> BrokerApp:
    """The factory uvicorn's worker processes call: settings from BROKER_CONFIG and BROKER_*."""
    return create_app(settings_module.load(os.environ.get("BROKER_CONFIG") or None))
