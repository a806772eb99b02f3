"""`bookgen generate`: one biography written by the pipeline directly, with a progress bar."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import click
from tqdm import tqdm

from bookgen.service.hooks import Hooks, JobInfo
from bookgen.service.pipeline import export
from bookgen.service.pipeline.book import BookWriter
from bookgen.service.pipeline.length import bounds
from bookgen.service.pipeline.outline import Outline
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.pipeline.writer import LengthPolicy
from bookgen.service.settings import Settings, get_settings
from bookgen.service.store import NewSection, Usage
from bookgen.service.store.models import utcnow


@dataclass(slots=True)
class MemorySink:
    """Keeps the book in memory and moves the progress bar."""

    bar: tqdm
    sections: list[NewSection] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def _count(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += usage.cost_usd

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        self._count(usage)
        self.bar.update(1)

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        self._count(usage)
        self.sections.append(section)
        self.bar.update(1)


async def write_book(settings: Settings, spec: BookSpec, bar: tqdm) -> MemorySink:
    from bookgen.service.app import EmbeddedSim
    from bookgen.service.llm.client import LLMClient
    from bookgen.service.llm.provider import announce_provider

    hooks = Hooks()
    provider = announce_provider(settings, hooks)  # the same fail-closed rules as `serve`
    sim = EmbeddedSim(settings.sim) if provider.base_url is None else None
    base_url = await sim.start() if sim is not None else provider.base_url
    llm = LLMClient(settings, hooks, base_url=base_url)
    sink = MemorySink(bar)
    writer = BookWriter(
        llm=llm,
        hooks=hooks,
        policy=LengthPolicy(settings.length_tolerance, settings.length_max_attempts),
        chapter_concurrency=settings.chapter_concurrency,
    )
    job = JobInfo(spec.job_id, spec.chapters, spec.total_words, spec.model, utcnow())
    try:
        await writer.write(spec, job, sink)
    finally:
        await llm.aclose()
        if sim is not None:
            await sim.stop()
    return sink


@click.command()
@click.argument("character")
@click.option("--chapters", type=click.IntRange(1, 50), default=None, help="default 20")
@click.option("--words", "total_words", type=click.IntRange(1_000, 200_000), default=None)
@click.option("--model", default=None, help="model name (default: BOOKGEN_MODEL)")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
)
def generate(
    character: str, chapters: int | None, total_words: int | None, model: str | None, out_dir: Path
) -> None:
    """Write a biography of CHARACTER to OUT as .txt, .md and .docx."""
    from bookgen.cli.serve import check_provider

    check_provider()
    settings = get_settings()
    spec = BookSpec(
        job_id=uuid.uuid4().hex,
        character=character,
        chapters=chapters or settings.chapters,
        total_words=total_words or settings.total_words,
        model=model or settings.model,
    )
    with tqdm(total=spec.chapters + 3, unit="part", desc="writing") as bar:
        sink = asyncio.run(write_book(settings, spec, bar))
    sections = [export.Section(s.index, s.kind, s.title, s.text) for s in sink.sections]
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in export.FORMATS:
        path = out_dir / export.file_name(character, spec.job_id, fmt)
        path.write_bytes(export.render(fmt, character, sections))
        click.echo(f"wrote {path}")
    low, high = bounds(spec.words_per_chapter, settings.length_tolerance)
    for section in sorted(sink.sections, key=lambda s: s.index):
        flag = "" if section.kind != "chapter" or low <= section.words <= high else "  OUT OF RANGE"
        click.echo(
            f"{section.index:>3} {section.kind:<12} {section.words:>6} words "
            f"(target {section.target_words}, {section.deviation:+.1%}, "
            f"{section.attempts} pass{'es' if section.attempts > 1 else ''}){flag}"
        )
    click.echo(
        f"tokens in {sink.input_tokens}, out {sink.output_tokens}, cost ${sink.cost_usd:.4f}"
    )
