"""create_app(settings): the API, its job runtime and, with no provider, the built-in model."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookgen.service.admission import Admission
from bookgen.service.auth import Authenticator, auth_required, is_loopback
from bookgen.service.deps import SubmissionLimiter
from bookgen.service.hooks import Hooks
from bookgen.service.jobs import Executor, JobRuntime
from bookgen.service.llm.client import LLMClient
from bookgen.service.llm.provider import announce_provider
from bookgen.service.llm.sim import create_sim_app
from bookgen.service.pipeline.export import RenderedBooks
from bookgen.service.queue import Publisher, make_celery
from bookgen.service.queue.executor import QueuedExecutor
from bookgen.service.readcache import ReadCaches
from bookgen.service.routes import biographies, debug, health, sources, status
from bookgen.service.routes.health import VERSION
from bookgen.service.settings import Settings, SimSettings, get_settings
from bookgen.service.store import JobRow, Store

GENERATE_PATH = "/api/v1/biographies/generate"
GIL_SWITCH_INTERVAL_S = 0.001
logger = logging.getLogger("bookgen.api")


class _SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handling to the main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedSim:
    """The simulated model served over real HTTP on a free 127.0.0.1 port, in this event loop."""

    def __init__(self, settings: SimSettings) -> None:
        config = uvicorn.Config(
            create_sim_app(settings),
            log_level="warning",
            log_config=None,  # keep the logging the process configured (JSON when instrumented)
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = _SignalFreeServer(config)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> str:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        for _ in range(500):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the simulated model did not start")
        return self.base_url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.socket.close()


class Guards:
    """The request-body cap and `nosniff`, in one pure ASGI layer: every layer costs every request.

    - 413 for a request body over the cap, by Content-Length or by the bytes actually sent;
    - `X-Content-Type-Options: nosniff` on every response, the 413 included: a downloaded book
      (or any body echoing client text) is never rendered as something other than its type.
    """

    NOSNIFF = (b"x-content-type-options", b"nosniff")

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.NOSNIFF]
            await send(message)

        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send_with_header)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(send_with_header)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large(send_with_header)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send_with_header)

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body exceeds {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _never_receive, send)


async def _never_receive() -> Message:
    return {"type": "http.disconnect"}


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if request.url.path == GENERATE_PATH:
        request.app.state.hooks.job_rejected("invalid")
    if any(error.get("type") == "json_invalid" for error in exc.errors()):
        # Like a body that is not UTF-8 (FastAPI's 400): not JSON at all is a bad request; 422
        # is for JSON that breaks the schema.
        return JSONResponse({"detail": "the request body is not valid JSON"}, status_code=400)
    detail: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        field = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc)
        detail.append(
            {"field": field, "loc": loc, "msg": error.get("msg"), "type": error.get("type")}
        )
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("store error on %s: %s", request.url.path, type(exc).__name__)
    return JSONResponse(
        {"detail": "the job store is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


STORE_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "the job store is unavailable; see Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}
INJECTED: dict[int | str, dict[str, Any]] = {
    500: {"description": "a fault injected through the debug routes (drills only)"}
}


def _answers(module: ModuleType, faults: list[Any]) -> dict[int | str, dict[str, Any]]:
    """What every route of a router may answer besides its own declarations."""
    answers = dict(STORE_UNAVAILABLE) if module is biographies else {}
    if faults:
        answers.update(INJECTED)
    return answers


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process: leave what startup built (modules, schemas, routes) out of the GC.

    A full collection walks every tracked object; with the startup heap frozen it walks only what
    was allocated since, so its pauses (tens of ms, which land on the API's p95) mostly go.
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def _prerender(app: FastAPI, store: Store) -> Callable[[JobRow], Awaitable[None]]:
    """Render a written book's DOCX before it is reported completed, so its first download is a
    cache read: building one costs tens of milliseconds of CPU (hundreds of ms of round trip to
    the renderer on a busy host), which a reader downloading at once would otherwise wait for."""

    async def render(job: JobRow) -> None:
        await biographies.book_file(store, app.state.rendered_books, job, "docx")

    return render


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    hooks: Hooks = app.state.hooks
    provider = announce_provider(settings, hooks)  # fails closed, before anything starts
    app.state.provider = provider
    store = Store.from_url(settings.database_url)
    await store.prepare_schema(migrate=settings.db_auto_migrate)
    sim: EmbeddedSim | None = None
    llm: LLMClient | None = None
    runtime: Executor
    if settings.broker_url:
        # The API tier only admits, enqueues and reads: the workers call the model.
        runtime = QueuedExecutor(store, settings, Publisher(make_celery(settings)))
    else:
        base_url = provider.base_url
        if base_url is None:
            sim = EmbeddedSim(settings.sim)
            base_url = await sim.start()
        llm = LLMClient(settings, hooks, base_url=base_url)
        runtime = JobRuntime(
            store,
            llm,
            settings,
            hooks,
            breaker=llm.breaker,
            before_completed=_prerender(app, store),
        )
    app.state.store, app.state.llm, app.state.sim, app.state.runtime = store, llm, sim, runtime
    app.state.read_caches = ReadCaches()  # keyed on this store's versions: one per store
    await runtime.start()
    admission = Admission(
        store, settings.max_queue, lambda: runtime.snapshot().queued, settings.admission_refresh_s
    )
    app.state.admission = admission
    await admission.start()
    await app.state.authenticator.start(store)
    _freeze_startup_heap()
    # The store's threads (SQLite writer and readers) and the DOCX renderer's waiter need the
    # GIL back after each call into C; with the loop busy, the default 5 ms switch interval made
    # each such handover wait up to 5 ms (write p95 and throughput measured better at 1 ms).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        await app.state.authenticator.stop()
        await admission.stop()
        await runtime.stop()
        if llm is not None:
            await llm.aclose()
        if sim is not None:
            await sim.stop()
        await store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="BookGen",
        version=VERSION,
        description="Biographies from an LLM, as durable jobs.",
        lifespan=lifespan,
        # Telemetry attaches at one edge (bookgen.instrumentation). FastAPI's own OpenTelemetry
        # would look up three global providers on every request (~6 µs, 10 % of a status read)
        # and, once a global provider exists, add a second SERVER span beside ours.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.hooks = Hooks()
    app.state.submission_limiter = SubmissionLimiter(
        settings.rate_limit, settings.rate_limit_storage
    )
    app.state.rendered_books = RenderedBooks()
    app.state.authenticator = Authenticator(settings)
    if not auth_required(settings) and not is_loopback(settings.listen_host):
        logger.warning(
            "API keys are turned off (BOOKGEN_AUTH=off) on %s: anyone who reaches the API "
            "can submit books and read every job",
            settings.listen_host,
        )
    biographies.describe_models(app, sorted(settings.prices))
    app.add_middleware(Guards, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    faults: list[Any] = []
    if settings.debug_routes:
        app.include_router(debug.router)
        faults = [Depends(debug.injected_faults)]  # injected latency/errors for drills
    for module in (health, status, biographies, sources):
        app.include_router(module.router, dependencies=faults, responses=_answers(module, faults))
    return app
