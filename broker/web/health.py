"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from broker.errors import StoreError
from broker.store.base import within

_TIMEOUT = 2.0


async def healthz(request: Request) -> JSONResponse:
    """200 while the process is up and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 only when every store answers within a couple of seconds; else 503 naming each store
    that did not (both asked at once, and the answer never waits past the bound: see
    store.base.within)."""
    state = request.app.state
    runtime = state.runtime
    abandoned: set[asyncio.Task[Any]] | None = getattr(state, "readiness_abandoned", None)
    if abandoned is None:  # probes given up on, held until they wind up (per application)
        abandoned = state.readiness_abandoned = set()
    checks = {"entity_store": runtime.store.ping(), "ephemeral_store": runtime.ephemeral.ping()}
    outcomes = await asyncio.gather(
        *(within(_TIMEOUT, probe, name, abandoned) for name, probe in checks.items()),
        return_exceptions=True)
    failed = {}
    for name, outcome in zip(checks, outcomes, strict=True):
        if isinstance(outcome, StoreError | TimeoutError):
            failed[name] = type(outcome).__name__
        elif isinstance(outcome, BaseException):
            raise outcome
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
    return JSONResponse({"status": "ok"})
