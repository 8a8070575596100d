"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from broker.errors import StoreError

_TIMEOUT = 2.0


async def healthz(request: Request) -> JSONResponse:
    """200 while the process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 only when every store answers within a couple of seconds."""
    runtime = request.app.state.runtime
    checks = {"entity_store": runtime.store.ping(), "ephemeral_store": runtime.ephemeral.ping()}
    failed = {}
    for name, probe in checks.items():
        try:
            await asyncio.wait_for(probe, _TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            failed[name] = type(exc).__name__
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
    return JSONResponse({"status": "ok"})
