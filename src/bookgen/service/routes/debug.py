"""Fault injection for drills and end-to-end tests; `create_app` includes it only with debug_routes.

Each switch acts on the worker process that takes the request. A request may name a `worker`; any
other worker answers 421 without acting, so a client reaches worker i by retrying on new connections
(SO_REUSEPORT spreads them). `injected_faults` is the dependency that adds latency and failures to
the API routes; `create_app` attaches it to the resource routers when debug routes are on.

Every debug route needs the `X-Debug-Token` header to equal `BOOKGEN_DEBUG_TOKEN`: a stack started
with `--faults` may listen where others reach it, and these routes can fill a worker's memory or
stop it taking jobs. Without a configured token they answer nobody. They are not part of the
published API, so they stay out of the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import hmac
import mmap
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from bookgen.service.settings import Settings, get_settings

MIB = 1024 * 1024
_CHUNK_MIB = 8
TOKEN_HEADER = "X-Debug-Token"


async def require_token(request: Request) -> None:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    expected = settings.debug_token.get_secret_value() if settings.debug_token else ""
    given = request.headers.get(TOKEN_HEADER, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"debug routes need the {TOKEN_HEADER} header set to the server's BOOKGEN_DEBUG_TOKEN",
        )


router = APIRouter(
    prefix="/debug",
    tags=["debug"],
    dependencies=[Depends(require_token)],
    include_in_schema=False,
)


@dataclass
class FaultState:
    """This process's active faults."""

    latency_s: float = 0.0
    error_ratio: float = 0.0
    balloon: list[mmap.mmap] = field(default_factory=list)

    @property
    def balloon_mib(self) -> int:
        return sum(len(chunk) for chunk in self.balloon) // MIB


def fault_state(app: FastAPI) -> FaultState:
    state: FaultState | None = getattr(app.state, "faults", None)
    if state is None:
        state = FaultState()
        app.state.faults = state
    return state


async def injected_faults(request: Request) -> None:
    """Dependency for API routes: sleep the injected latency, then fail at the injected ratio."""
    state = fault_state(request.app)
    if state.latency_s > 0:
        await asyncio.sleep(state.latency_s)
    if state.error_ratio > 0 and random.random() < state.error_ratio:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "injected fault")


def _worker_index(request: Request) -> int:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings.worker_index


class Target(BaseModel):
    worker: int | None = Field(default=None, ge=0, description="act only on this worker")


class FaultsChange(Target):
    latency_s: float | None = Field(default=None, ge=0, le=60)
    error_ratio: float | None = Field(default=None, ge=0, le=1)


class Balloon(Target):
    mib: int = Field(gt=0, le=16_384)


def _this_worker(request: Request, body: Target | None = None) -> FaultState:
    index = _worker_index(request)
    if body is not None and body.worker is not None and body.worker != index:
        raise HTTPException(status.HTTP_421_MISDIRECTED_REQUEST, {"worker": index})
    return fault_state(request.app)


def _report(request: Request, state: FaultState) -> dict[str, Any]:
    runtime = getattr(request.app.state, "runtime", None)
    paused = bool(runtime.snapshot().paused) if runtime is not None else None
    return {
        "worker": _worker_index(request),
        "pid": os.getpid(),
        "latency_s": state.latency_s,
        "error_ratio": state.error_ratio,
        "balloon_mib": state.balloon_mib,
        "paused": paused,
    }


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    return _report(request, fault_state(request.app))


@router.put("/faults")
async def set_faults(request: Request, body: FaultsChange) -> dict[str, Any]:
    state = _this_worker(request, body)
    if body.latency_s is not None:
        state.latency_s = body.latency_s
    if body.error_ratio is not None:
        state.error_ratio = body.error_ratio
    return _report(request, state)


@router.post("/balloon")
async def inflate(request: Request, body: Balloon) -> dict[str, Any]:
    """Map and touch `mib` MiB more (resident, not just reserved), held until released.

    Filled in a thread, 8 MiB at a time, so the event loop and the metrics endpoint keep
    answering: a scrape blocked for a second would look like "target down".
    """
    state = _this_worker(request, body)
    remaining = body.mib
    while remaining > 0:
        size = min(remaining, _CHUNK_MIB)
        state.balloon.append(await asyncio.to_thread(_resident, size * MIB))
        remaining -= size
    return _report(request, state)


def _resident(size: int) -> mmap.mmap:
    chunk = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    chunk[:: mmap.PAGESIZE] = b"\x01" * len(range(0, size, mmap.PAGESIZE))  # touch every page
    return chunk


@router.delete("/balloon")
async def deflate(request: Request, worker: int | None = None) -> dict[str, Any]:
    state = _this_worker(request, Target(worker=worker))
    for chunk in state.balloon:
        chunk.close()
    state.balloon.clear()
    return _report(request, state)


@router.post("/pause")
async def pause(request: Request, body: Target | None = None) -> dict[str, Any]:
    """Stop this worker claiming jobs and suspend its running ones (`JobRuntime.pause`)."""
    state = _this_worker(request, body)
    _control(request.app.state.runtime.pause)
    return _report(request, state)


@router.post("/resume")
async def resume(request: Request, body: Target | None = None) -> dict[str, Any]:
    state = _this_worker(request, body)
    _control(request.app.state.runtime.resume)
    return _report(request, state)


def _control(action: Callable[[], None]) -> None:
    try:
        action()
    except NotImplementedError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "jobs run on a worker tier: pause the workers with SIGSTOP, resume them with SIGCONT",
        ) from None


@router.api_route("/fail", methods=["GET", "POST"])
async def fail() -> None:
    """Always 500: a route that fails, for error-rate drills."""
    raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "injected failure")


@router.get("/slow")
async def slow(seconds: float = Query(default=0.5, ge=0, le=10)) -> dict[str, float]:
    """Answers after `seconds`: a slow request, for latency drills (no other effect)."""
    await asyncio.sleep(seconds)
    return {"slept_s": seconds}
