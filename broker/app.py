"""create_app(settings): the one place that wires stores, services and routes together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from broker import settings as settings_module
from broker.clock import Clock
from broker.runtime import open_runtime
from broker.settings import Settings
from broker.web.health import healthz, readyz
from broker.web.query import query_endpoint

log = logging.getLogger("broker")


def create_app(settings: Settings, *, clock: Clock | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, clock=clock)
        app.state.runtime = runtime
        flusher = asyncio.create_task(runtime.last_used.run())
        log.info("broker ready at %s", settings.public_url)
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await runtime.last_used.flush()
            await runtime.close()

    routes = [
        Route("/", query_endpoint, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


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
    }


def app_from_environment() -> Starlette:
    """The factory uvicorn's worker processes call: settings from BROKER_CONFIG and BROKER_*."""
    return create_app(settings_module.load(os.environ.get("BROKER_CONFIG") or None))
