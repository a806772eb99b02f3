"""Running one claimed job: the pipeline writing into the store under this worker's lease."""

from __future__ import annotations

from dataclasses import dataclass

from bookgen.service.hooks import JobInfo
from bookgen.service.pipeline.outline import Outline
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.store import JobRow, NewSection, Store, Usage


def job_info(job: JobRow) -> JobInfo:
    return JobInfo(
        job_id=job.id,
        chapters=job.chapters,
        total_words=job.total_words,
        model=job.model,
        created_at=job.created_at,
        trace_context=dict(job.trace_context or {}),
    )


def book_spec(job: JobRow) -> BookSpec:
    return BookSpec(
        job_id=job.id,
        character=job.character,
        chapters=job.chapters,
        total_words=job.total_words,
        model=job.model,
        temperature=job.temperature,
        language=job.language,
        sources=list(job.sources or []),
    )


@dataclass(frozen=True, slots=True)
class StoreSink:
    """Stores each piece under the lease; raises `LeaseLost` when the job is no longer ours."""

    store: Store
    job_id: str
    owner: str

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        await self.store.save_outline(self.job_id, self.owner, outline, usage)

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        await self.store.save_section(self.owner, section, usage)
