"""Biography jobs: submit, follow, list, cancel and download."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic_core import to_json

from bookgen.service.auth import Principal, PrincipalDep
from bookgen.service.deps import (
    admission_of,
    hooks_of,
    limiter_of,
    runtime_of,
    settings_of,
    store_of,
)
from bookgen.service.hooks import Hooks
from bookgen.service.jobs.execution import job_info
from bookgen.service.models import (
    GenerateRequest,
    JobCreated,
    JobPage,
    JobStatus,
    JobStatusName,
)
from bookgen.service.pipeline import export
from bookgen.service.readcache import ReadCaches
from bookgen.service.settings import Settings
from bookgen.service.store import JobRow, Store
from bookgen.service.store.models import utcnow
from bookgen.service.store.repository import FINISHED, AnyRow

PREFIX = "/api/v1/biographies"
router = APIRouter(prefix=PREFIX, tags=["biographies"])

MAX_ID_LENGTH = 64
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown job (or another principal's)"}
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "an API key is required (Authorization: Bearer <key>) or was refused"}
}
JSON = "application/json"


def _paths(job_id: str) -> tuple[str, str]:
    # Formatted, not url_path_for: this runs on the hottest route.
    return f"{PREFIX}/{job_id}/status", f"{PREFIX}/{job_id}/download"


def status_body(job: JobRow | AnyRow) -> dict[str, Any]:
    """The `JobStatus` of a job row (or of a row of `store.LIST_COLUMNS`), as plain data.

    Not a `JobStatus`: building and validating one (and its two nested models) for every item
    of a list page cost more CPU than the page's query. The store's own rows need no
    validation; `to_json` then writes the bytes FastAPI would write for the model, as long as
    every value has its field's type (floats stay floats: 0.0, not 0). The tests hold each
    body to the model.
    """
    chapters, state = job.chapters, job.status
    tokens_in, tokens_out = job.input_tokens, job.output_tokens
    if state == "completed":
        percentage = 100.0
    else:
        percentage = round(100 * job.sections_completed / (chapters + 2), 1)
    return {
        "job_id": job.id,
        "owner": job.owner,
        "status": state,
        "character": job.character,
        "chapters": chapters,
        "total_words": job.total_words,
        "model": job.model,
        "progress": {
            "chapters_completed": job.chapters_completed,
            "total_chapters": chapters,
            "percentage": percentage,
        },
        "words_written": job.words_written,
        "sections_out_of_band": job.sections_out_of_band or 0,
        "tokens": {"input": tokens_in, "output": tokens_out, "total": tokens_in + tokens_out},
        "cost_usd": round(float(job.cost_usd), 6),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "error": job.error,
        "download_url": _paths(job.id)[1] if state == "completed" else None,
    }


def _json(body: dict[str, Any]) -> bytes:
    # FastAPI's serialiser writes a float field's NaN or infinity as null; so does this.
    return to_json(body, inf_nan_mode="null")


async def _job_or_404(store: Store, job_id: str, principal: Principal) -> JobRow:
    job = await store.get_job(job_id) if len(job_id) <= MAX_ID_LENGTH else None
    # Another principal's job answers as an unknown one: a 403 would confirm that it exists.
    if job is None or (principal.scope is not None and job.owner != principal.scope):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:MAX_ID_LENGTH]} not found")
    return job


def _unpriced(model: str, settings: Settings) -> RequestValidationError:
    allowed = ", ".join(sorted(settings.prices))
    error = {
        "loc": ("body", "model"),
        "msg": f"model {model[:200]!r} has no price entry; allowed: {allowed}",
        "type": "enum",
        "input": model[:200],
    }
    return RequestValidationError([error])


def describe_models(app: FastAPI, models: list[str]) -> None:
    """Make the OpenAPI schema say which models a submission may name: those with a price."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            request = schema.get("components", {}).get("schemas", {}).get("GenerateRequest")
            if request is not None and "model" in request.get("properties", {}):
                field = request["properties"]["model"]
                field.pop("anyOf", None)
                field.update({"anyOf": [{"type": "string", "enum": models}, {"type": "null"}]})
                field.pop("maxLength", None)
                field["description"] = "one of the models with a price entry; default: the "
                field["description"] += "service's model"
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _too_many(hooks: Hooks, reason: str, detail: str, retry_after: int) -> HTTPException:
    hooks.job_rejected(reason)
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, detail, headers={"Retry-After": str(retry_after)}
    )


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **UNAUTHORIZED,
        429: {
            "description": "queue full, rate limited or over the caller's quota; see Retry-After"
        },
        400: {"description": "the body is not valid JSON"},
        413: {"description": "the body is larger than BOOKGEN_MAX_BODY_BYTES"},
        # Links let clients (and stateful API testers) follow a new job to its other routes.
        202: {
            "links": {
                name: {
                    "operationRef": f"#/paths/~1api~1v1~1biographies~1{{job_id}}~1{name}/{verb}",
                    "parameters": {"job_id": "$response.body#/job_id"},
                }
                for name, verb in (("status", "get"), ("download", "get"), ("cancel", "post"))
            }
        },
    },
)
async def generate(body: GenerateRequest, request: Request, principal: PrincipalDep) -> JobCreated:
    settings, hooks = settings_of(request), hooks_of(request)
    model = body.model or settings.model
    if model not in settings.prices:
        raise _unpriced(model, settings)
    # Every refusal below is decided in memory: none waits for the store (see admission.py).
    wait = await limiter_of(request).retry_after(principal.name)
    if wait is not None:
        raise _too_many(hooks, "rate_limited", f"rate limit {settings.rate_limit} exceeded", wait)
    admission, runtime = admission_of(request), runtime_of(request)
    refusal = admission.check(principal)
    if refusal is not None:
        raise _too_many(hooks, refusal.reason, refusal.detail, refusal.retry_after)
    job_id = uuid.uuid4().hex
    chapters = body.chapters or settings.chapters
    total_words = body.total_words or settings.total_words
    job = JobRow(
        id=job_id,
        character=body.character,
        chapters=chapters,
        total_words=total_words,
        model=model,
        temperature=body.temperature,
        language=body.language,
        mode=body.mode,
        sources=[s.model_dump() for s in body.sources or []],
        status="pending",
        owner=principal.name,
        created_at=utcnow(),
        trace_context=hooks.job_submitted(job_id),
    )
    with admission.admitting(principal.name):
        await runtime.submit(job)
    status_url, download_url = _paths(job_id)
    eta = job.created_at + timedelta(seconds=runtime.estimate_seconds(chapters, total_words))
    return JobCreated(
        job_id=job_id,
        status="pending",
        character=job.character,
        chapters=chapters,
        total_words=total_words,
        model=job.model,
        created_at=job.created_at,
        estimated_completion_time=eta,
        status_url=status_url,
        download_url=download_url,
    )


def _caches(request: Request) -> ReadCaches:
    caches: ReadCaches = request.app.state.read_caches
    return caches


@router.get("", summary="List jobs, newest first", response_model=JobPage, responses=UNAUTHORIZED)
async def list_jobs(
    request: Request,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    job_status: Annotated[JobStatusName | None, Query(alias="status")] = None,
) -> Response:
    offset = (page - 1) * page_size
    store = store_of(request)

    async def read() -> tuple[bytes, bool]:
        rows, total = await store.list_jobs(
            status=job_status, offset=offset, limit=page_size, owner=principal.scope
        )
        # `JobPage`, as plain data (see status_body).
        result = {
            "items": [status_body(row) for row in rows],
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": math.ceil(total / page_size),
        }
        return _json(result), False

    key = (principal.scope, job_status, page, page_size)
    body = await _caches(request).pages.fetch(key, store.version, read, lambda: store.version)
    return Response(body, media_type=JSON)


@router.get(
    "/{job_id}/status",
    name="job_status",
    response_model=JobStatus,
    responses={**NOT_FOUND, **UNAUTHORIZED},
)
async def job_status(job_id: str, request: Request, principal: PrincipalDep) -> Response:
    store = store_of(request)

    async def read() -> tuple[bytes, bool]:
        job = await _job_or_404(store, job_id, principal)
        return _json(status_body(job)), job.status in FINISHED

    # Keyed by who may see it too: an entry read for its owner is never served to another.
    body = await _caches(request).jobs.fetch(
        (job_id, principal.scope),
        store.job_version(job_id),
        read,
        lambda: store.job_version(job_id),
    )
    return Response(body, media_type=JSON)


@router.post(
    "/{job_id}/cancel",
    response_model=JobStatus,
    responses={**NOT_FOUND, **UNAUTHORIZED, 409: {"description": "the job already finished"}},
)
async def cancel(job_id: str, request: Request, principal: PrincipalDep) -> Response:
    store = store_of(request)
    before = await _job_or_404(store, job_id, principal)
    if before.status not in ("pending", "in_progress"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job is already {before.status}")
    job = await store.cancel(job_id)
    assert job is not None
    if (
        job.status == "cancelled"
        and not runtime_of(request).cancel_local(job_id)
        and before.status == "pending"
    ):
        # Nobody runs a pending job, so nobody else reports its end.
        duration = (utcnow() - job.created_at).total_seconds()
        hooks_of(request).job_finished(job_info(job), "cancelled", duration)
    return Response(_json(status_body(job)), media_type=JSON)


@router.get(
    "/{job_id}/download",
    name="download",
    responses={
        **NOT_FOUND,
        **UNAUTHORIZED,
        200: {
            "description": "the book as a file, in the format asked",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "text/markdown": {"schema": {"type": "string"}},
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        },
        400: {"description": "the job has not completed (pending, in progress, failed, cancelled)"},
    },
)
async def download(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    fmt: Annotated[Literal["txt", "md", "docx"], Query(alias="format")] = "txt",
) -> Response:
    store = store_of(request)
    job = await _job_or_404(store, job_id, principal)
    if job.status != "completed":
        reason = f"job is {job.status}; the book can be downloaded once it is completed"
        if job.status == "failed" and job.error:
            reason = f"job failed ({job.error}); there is no book to download"
        raise HTTPException(status.HTTP_400_BAD_REQUEST, reason)
    content = await book_file(store, request.app.state.rendered_books, job, fmt)
    name = export.file_name(job.character, job.id, fmt)
    return Response(
        content,
        media_type=export.FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def book_file(store: Store, books: export.RenderedBooks, job: JobRow, fmt: str) -> bytes:
    """A completed book's file in `fmt`: cached, or the render of it under way, or rendered from
    its stored sections (and kept)."""

    async def render() -> bytes:
        rows = await store.sections(job.id)
        sections = [export.Section(r.index, r.kind, r.title, r.text) for r in rows]
        return await export.render_async(fmt, job.character, sections)

    return await books.get_or_render(job.id, fmt, render)
