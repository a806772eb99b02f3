"""A section left short of the length band is reported (job status, metric, hook), and spend on
work that is not stored (failed or cut-off calls) still reaches the job's totals."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from bookgen.instrumentation.hooks import TelemetryHooks
from bookgen.instrumentation.metrics import Metrics
from bookgen.service.hooks import ChapterOutcome, Hooks
from bookgen.service.jobs import JobRuntime
from bookgen.service.llm import spend
from bookgen.service.llm.errors import LLMError
from bookgen.service.pipeline.book import BookWriter, PlannedSection
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.pipeline.writer import LengthPolicy, write_to_length
from bookgen.service.routes.biographies import status_body
from bookgen.service.store import JobRow, NewSection, Store, Usage
from bookgen.service.store.models import utcnow
from service_helpers import fast_settings

POLICY = LengthPolicy(tolerance=0.05, max_attempts=2)


class Reply:
    def __init__(self, text: str) -> None:
        self.text = text
        self.input_tokens, self.output_tokens, self.cost_usd = 10, 20, 0.002


class ShortModel:
    """Always answers 10 words; after `ok` calls, fails as the client does (spend tallied)."""

    def __init__(self, ok: int = 100) -> None:
        self.ok = ok

    async def chat(self, messages: list[dict[str, str]], **_: object) -> Reply:
        if self.ok <= 0:
            spend.unsaved(7, 5, 0.001)  # what the client charges a failed streamed attempt
            raise LLMError("LLM provider returned an error", 400, False)
        self.ok -= 1
        return Reply(" ".join(["Word"] * 9) + " end.")


class Outcomes(Hooks):
    def __init__(self) -> None:
        self.out_of_band: list[ChapterOutcome] = []

    def length_out_of_band(self, outcome: ChapterOutcome) -> None:
        self.out_of_band.append(outcome)


class Sink:
    def __init__(self) -> None:
        self.sections: list[NewSection] = []

    async def save_outline(self, outline: object, usage: Usage) -> None:
        raise AssertionError

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        self.sections.append(section)


def spec() -> BookSpec:
    return BookSpec(
        job_id="j1",
        character="Ada Lovelace",
        chapters=1,
        total_words=1000,
        model="bookgen-sim",
        temperature=None,
        language="English",
        sources=[],
    )


async def test_a_section_short_after_all_attempts_is_stored_and_reported() -> None:
    hooks = Outcomes()
    writer = BookWriter(llm=ShortModel(), hooks=hooks, policy=POLICY, chapter_concurrency=1)
    sink = Sink()
    planned = PlannedSection(1, "chapter", "Early years", "Childhood.", 100)
    from bookgen.service.hooks import JobInfo

    job = JobInfo("j1", 1, 1000, "bookgen-sim", utcnow())
    await writer.section(spec(), job, planned, sink)
    (section,) = sink.sections
    assert section.words == 20 and not section.in_band
    assert [o.index for o in hooks.out_of_band] == [1]
    assert hooks.out_of_band[0].deviation == -0.8


async def test_the_out_of_band_count_reaches_the_job_status_and_the_metric(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    await store.create_tables()
    try:
        await store.add_job(
            JobRow(id="j1", character="Ada", chapters=1, total_words=1000, model="m", sources=[])
        )
        assert await store.claim("w1", 30.0) is not None

        def section(index: int, words: int, in_band: bool) -> NewSection:
            deviation = (words - 9) / 9
            return NewSection("j1", index, "chapter", "t", "x", words, 9, deviation, 3, in_band)

        short, fine = section(1, 5, False), section(0, 9, True)
        await store.save_section("w1", short, Usage())
        await store.save_section("w1", fine, Usage())
        job = await store.get_job("j1")
        assert job is not None and job.sections_out_of_band == 1
        assert status_body(job)["sections_out_of_band"] == 1
        rows, _ = await store.list_jobs(status=None, offset=0, limit=10)
        assert status_body(rows[0])["sections_out_of_band"] == 1
    finally:
        await store.close()
    registry = CollectorRegistry()
    telemetry = TelemetryHooks(Metrics(registry), trace.NoOpTracer(), models=[])
    telemetry.length_out_of_band(ChapterOutcome("j1", 1, "chapter", 5, 9, -0.4, 3))
    assert registry.get_sample_value("bookgen_sections_out_of_band_total", {"kind": "chapter"}) == 1


async def test_usage_of_a_section_that_then_fails_goes_to_the_tally() -> None:
    with spend.tallied() as tally:
        try:
            await write_to_length(
                ShortModel(ok=1),
                [{"role": "user", "content": "Write. Target length: 100 words."}],
                target=100,
                model="m",
                temperature=None,
                policy=POLICY,
                hooks=Hooks(),
            )
        except LLMError:
            pass
        else:
            raise AssertionError("the continuation should have failed")
    # The first (successful) reply, which no stored section will carry, and the failed attempt.
    assert (tally.input_tokens, tally.output_tokens) == (10 + 7, 20 + 5)
    assert tally.cost_usd == 0.002 + 0.001


async def test_failed_work_is_added_to_the_jobs_totals(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, length_max_attempts=1)
    store = Store.from_url(settings.database_url)
    await store.create_tables()
    runtime = JobRuntime(store, ShortModel(ok=0), settings, Hooks())
    try:
        await store.add_job(
            JobRow(id="j1", character="Ada", chapters=1, total_words=1000, model="m", sources=[])
        )
        await runtime.start()
        job = None
        for _ in range(200):
            job = await store.get_job("j1")
            if job is not None and job.status == "failed":
                break
            await asyncio.sleep(0.05)
        assert job is not None and job.status == "failed"
        calls = 3  # outline, introduction and epilogue start together; each failed once
        assert job.input_tokens <= 7 * calls and job.input_tokens >= 7
        assert job.output_tokens == job.input_tokens // 7 * 5
        assert job.cost_usd > 0
    finally:
        await runtime.stop()
        await store.close()
