"""`/api/v1/status`: configuration plus live queue and worker figures (from the cached snapshot)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from bookgen.service.deps import runtime_of, settings_of
from bookgen.service.routes.health import VERSION

router = APIRouter(prefix="/api/v1", tags=["status"])


@router.get("/status", response_model=dict[str, Any])
async def service_status(request: Request) -> Response:
    settings, snapshot = settings_of(request), runtime_of(request).snapshot()
    provider = getattr(request.app.state, "provider", None)  # resolved at startup
    oldest = snapshot.oldest_running_created_at
    # Serialised here, as FastAPI would (same bytes), without validating the dict first.
    body = {
        "status": "operational",
        "api_version": "v1",
        "version": VERSION,
        "timestamp": datetime.now(UTC).isoformat(),
        "configuration": {
            "chapters": settings.chapters,
            "total_words": settings.total_words,
            "model": settings.model,
            "length_tolerance": settings.length_tolerance,
            "chapter_concurrency": settings.chapter_concurrency,
        },
        "provider": None
        if provider is None
        else {"name": provider.name, "simulated": provider.simulated},
        "queue": {"pending": snapshot.queued, "capacity": snapshot.queue_capacity},
        "workers": {
            "worker_index": settings.worker_index,
            "running_jobs": snapshot.running,
            "job_slots": snapshot.job_slots,
            "paused": snapshot.paused,
            "oldest_running_created_at": oldest.isoformat() if oldest else None,
        },
    }
    return Response(to_json(body), media_type="application/json")
