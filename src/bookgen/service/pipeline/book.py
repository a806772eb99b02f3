"""A whole book: outline with one call, every section written concurrently, each stored."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from bookgen.service.hooks import ChapterOutcome, Hooks, JobInfo
from bookgen.service.pipeline import prompts
from bookgen.service.pipeline.outline import Outline, OutlineStream, parse_outline
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.pipeline.writer import (
    ChatModel,
    Gate,
    LengthPolicy,
    UsageMeter,
    token_budget,
    write_to_length,
)
from bookgen.service.store.repository import NewSection, Usage

OUTLINE_INDEX = -1


class BookSink(Protocol):
    """Where finished pieces go the moment they exist."""

    async def save_outline(self, outline: Outline, usage: Usage) -> None: ...

    async def save_section(self, section: NewSection, usage: Usage) -> None: ...


@dataclass(frozen=True, slots=True)
class PlannedSection:
    index: int
    kind: str
    title: str
    synopsis: str
    target: int


def frame(spec: BookSpec) -> list[PlannedSection]:
    """Introduction (0) and epilogue (n+1): they need no outline."""
    return [
        PlannedSection(0, "introduction", "Introduction", "", spec.frame_words),
        PlannedSection(spec.chapters + 1, "epilogue", "Epilogue", "", spec.frame_words),
    ]


def chapter(spec: BookSpec, number: int, entry: dict[str, str]) -> PlannedSection:
    return PlannedSection(
        number, "chapter", entry["title"], entry["synopsis"], spec.words_per_chapter
    )


class _AfterOutline:
    """A sink whose sections wait until the outline is stored: a resumed job then always finds
    the outline its stored chapters were written from."""

    def __init__(self, sink: BookSink, stored: asyncio.Event) -> None:
        self._sink = sink
        self._stored = stored

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        await self._sink.save_outline(outline, usage)

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        await self._stored.wait()
        await self._sink.save_section(section, usage)


async def _open_gate() -> None:
    return None


@dataclass(slots=True)
class BookWriter:
    llm: ChatModel
    hooks: Hooks
    policy: LengthPolicy
    chapter_concurrency: int
    gate: Gate = _open_gate

    async def outline(
        self,
        spec: BookSpec,
        job: JobInfo,
        on_entry: Callable[[int, dict[str, str]], None] | None = None,
    ) -> tuple[Outline, Usage]:
        """The outline; `on_entry(number, entry)` hears of each entry as soon as it streams in."""
        meter = UsageMeter()
        watch = OutlineStream(spec.chapters, on_entry) if on_entry else None
        with self.hooks.chapter_run(job, OUTLINE_INDEX, "outline"):
            await self.gate()
            reply = await self.llm.chat(
                prompts.outline(spec),
                model=spec.model,
                max_tokens=token_budget(spec.chapters * 60),
                temperature=spec.temperature,
                watch=watch,
            )
            meter.add(reply)
        return parse_outline(reply.text, spec.chapters), meter.usage()

    async def section(
        self, spec: BookSpec, job: JobInfo, planned: PlannedSection, sink: BookSink
    ) -> None:
        with self.hooks.chapter_run(job, planned.index, planned.kind):
            messages = prompts.section(
                spec, planned.kind, planned.title, planned.synopsis, planned.index, planned.target
            )
            written = await write_to_length(
                self.llm,
                messages,
                target=planned.target,
                model=spec.model,
                temperature=spec.temperature,
                policy=self.policy,
                hooks=self.hooks,
                gate=self.gate,
            )
            await sink.save_section(
                NewSection(
                    job_id=spec.job_id,
                    index=planned.index,
                    kind=planned.kind,
                    title=planned.title,
                    text=written.text,
                    words=written.words,
                    target_words=written.target_words,
                    deviation=written.deviation,
                    attempts=written.attempts,
                    in_band=written.in_band,
                ),
                written.usage,
            )
        outcome = ChapterOutcome(
            job_id=spec.job_id,
            index=planned.index,
            kind=planned.kind,
            words=written.words,
            target_words=written.target_words,
            deviation=written.deviation,
            attempts=written.attempts,
        )
        self.hooks.chapter_done(outcome)
        if not written.in_band:
            self.hooks.length_out_of_band(outcome)

    async def write(
        self,
        spec: BookSpec,
        job: JobInfo,
        sink: BookSink,
        *,
        outline: Outline | None = None,
        done: Collection[int] = (),
    ) -> None:
        """Write every section not in `done`; resumes from a stored outline when given one.

        The introduction and epilogue start at once, beside the outline call, and take no chapter
        slot. Each chapter starts as soon as its outline entry has streamed in (chapters are the
        long pole: waiting for the whole outline would add its full duration to the book), up to
        `chapter_concurrency` at a time; chapters are stored only once the outline is.
        """
        slots = asyncio.Semaphore(self.chapter_concurrency)
        outline_stored = asyncio.Event()
        chapter_sink = _AfterOutline(sink, outline_stored)
        # Sections started from inside the outline's LLM call must not become its children.
        job_context = contextvars.copy_context()
        started: dict[int, dict[str, str]] = {}

        async def bounded(planned: PlannedSection) -> None:
            async with slots:
                await self.section(spec, job, planned, chapter_sink)

        try:
            async with asyncio.TaskGroup() as group:
                for planned in frame(spec):
                    if planned.index not in done:
                        group.create_task(
                            self.section(spec, job, planned, sink), context=job_context.copy()
                        )

                def start(number: int, entry: dict[str, str]) -> None:
                    if number in started:
                        return
                    started[number] = entry
                    if number not in done:
                        group.create_task(
                            bounded(chapter(spec, number, entry)), context=job_context.copy()
                        )

                if outline is None:
                    outline, usage = await self.outline(spec, job, start)
                    # What was started was written from the streamed entry: store that one.
                    for number, entry in started.items():
                        outline[number - 1] = entry
                    await sink.save_outline(outline, usage)
                outline_stored.set()
                for number, entry in enumerate(outline, start=1):
                    start(number, entry)
        except BaseExceptionGroup as failures:
            raise _first(failures) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
