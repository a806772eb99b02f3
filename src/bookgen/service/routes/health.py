"""Liveness (`/health`, checks nothing) and readiness (`/ready`, checks store and LLM or broker)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic_core import to_json

router = APIRouter(tags=["health"])

VERSION = version("bookgen")
CHECK_TIMEOUT_S = 2.0
# A verdict is fresh for READY_CACHE_S; after that it is still served, while one check runs in
# the background, until READY_STALE_S: a readiness probe (every 5-10 s in Kubernetes) must not
# wait behind a model that is busy streaming books, yet a verdict older than a probe period is
# never given.
READY_CACHE_S = 1.0
READY_STALE_S = 5.0


@router.get("/health", response_model=dict[str, str])
async def health() -> Response:
    body = {"status": "healthy", "timestamp": datetime.now(UTC).isoformat(), "version": VERSION}
    return Response(to_json(body), media_type="application/json")  # the bytes FastAPI would send


async def _check(probe: Any) -> str:
    try:
        ok = await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return "timeout"
    except Exception:
        # The verdict only: /ready is public and an exception's name or text is not ours to show.
        return "error"
    return "ok" if ok else "unavailable"


async def _checks(state: Any) -> dict[str, str]:
    # On a worker tier the API needs the broker, not the model (the workers call it).
    name, probe = (
        ("llm", state.llm.ping) if state.llm is not None else ("broker", state.runtime.ping)
    )
    store, other = await asyncio.gather(_check(state.store.ping), _check(probe))
    checks = {"store": store, name: other}
    state.ready_cache = (time.monotonic(), checks)
    return checks


@router.get("/ready", responses={503: {"description": "a dependency is not usable"}})
async def ready(request: Request) -> JSONResponse:
    """200 when the store and the model (or the broker) answer; else 503 naming what failed."""
    state = request.app.state
    cached: tuple[float, dict[str, str]] | None = getattr(state, "ready_cache", None)
    age = time.monotonic() - cached[0] if cached is not None else float("inf")
    if cached is not None and age < READY_CACHE_S:
        checks = cached[1]
    else:
        # One check at a time: callers arriving while it runs share its answer (under load,
        # each starting its own queued them behind each other on the probes' connections).
        flight: asyncio.Future[dict[str, str]] | None = getattr(state, "ready_flight", None)
        if flight is None or flight.done():
            flight = state.ready_flight = asyncio.ensure_future(_checks(state))
        if cached is not None and age < READY_STALE_S:
            checks = cached[1]
        else:
            checks = await asyncio.shield(flight)
    failed = sorted(name for name, result in checks.items() if result != "ok")
    body = {"status": "not_ready" if failed else "ready", "checks": checks, "failed": failed}
    return JSONResponse(body, status_code=503 if failed else 200)
