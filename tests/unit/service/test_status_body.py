"""The status and list bodies are written from rows without building models: the bytes must be
those of the `JobStatus` and `JobPage` models that the OpenAPI schema declares."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bookgen.service.models import JobPage, JobStatus
from bookgen.service.routes.biographies import _json, status_body
from bookgen.service.store import JobRow, Store
from bookgen.service.store.models import utcnow

STATES: dict[str, dict[str, Any]] = {
    "p": {"status": "pending"},
    "r": {"status": "in_progress", "sections_completed": 1, "chapters_completed": 1},
    # A whole-number spend (the column may hand back 0 or 3): still a float in the body.
    "c": {"status": "completed", "sections_completed": 4, "chapters_completed": 2, "cost_usd": 3},
    "f": {"status": "failed", "error": 'model "x" refused\n', "cost_usd": 0.1234567891},
    "x": {"status": "cancelled", "sections_out_of_band": 2},
}


def model_bytes(body: object, model: type[JobStatus] | type[JobPage]) -> bytes:
    """What FastAPI writes for `body` declared as `model`: validated, then dumped."""
    return model.model_validate(body).model_dump_json().encode()


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    await store.create_tables()
    started = utcnow()
    for job_id in STATES:
        await store.add_job(
            JobRow(
                id=job_id,
                character="Ada «Lovelace»",
                chapters=2,
                total_words=2000,
                model="m",
                sources=[],
                created_at=started - timedelta(seconds=len(job_id)),
            )
        )

    def set_states(s: Session) -> None:
        for job_id, values in STATES.items():
            extra = {"started_at": started} if values["status"] != "pending" else {}
            if values["status"] in ("completed", "failed", "cancelled"):
                extra["completed_at"] = started + timedelta(seconds=1.5)
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values, **extra))

    await store.write(set_states)
    return store


async def test_a_status_body_is_the_bytes_of_its_model(store: Store) -> None:
    try:
        for job_id in STATES:
            job = await store.get_job(job_id)
            assert job is not None
            body = _json(status_body(job))
            assert body == model_bytes(status_body(job), JobStatus), job_id
        completed = await store.get_job("c")
        assert completed is not None
        assert b'"cost_usd":3.0' in _json(status_body(completed))
        assert b'"percentage":100.0' in _json(status_body(completed))
    finally:
        await store.close()


async def test_a_list_page_is_the_bytes_of_its_model(store: Store) -> None:
    try:
        rows, total = await store.list_jobs(status=None, offset=0, limit=10)
        assert total == len(STATES)
        page = {
            "items": [status_body(row) for row in rows],
            "total": total,
            "page": 1,
            "page_size": 10,
            "pages": 1,
        }
        assert _json(page) == model_bytes(page, JobPage)
        # A list row (some columns) and the whole row give the same body.
        for row in rows:
            job = await store.get_job(row.id)
            assert job is not None
            assert status_body(row) == status_body(job)
    finally:
        await store.close()


def test_a_row_holding_an_int_where_the_model_has_a_float_is_written_as_the_model_does() -> None:
    job = JobRow(
        id="j",
        character="Ada",
        chapters=2,
        total_words=2000,
        model="m",
        status="completed",
        sections_completed=4,
        chapters_completed=2,
        words_written=2000,
        sections_out_of_band=0,
        input_tokens=10,
        output_tokens=20,
        cost_usd=3,
        created_at=utcnow(),
        started_at=None,
        completed_at=None,
        error=None,
    )
    assert _json(status_body(job)) == model_bytes(status_body(job), JobStatus)


def test_a_float_that_is_not_a_number_is_written_as_the_model_writes_it() -> None:
    body = {"x": float("nan"), "y": float("inf")}
    assert _json(body) == b'{"x":null,"y":null}'
