"""Writing to length: continue when short, trim when long, bounded passes, hooks told each fix."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest

from bookgen.service.hooks import ChapterOutcome, Hooks, JobInfo
from bookgen.service.llm.client import LLMClient
from bookgen.service.llm.sim import create_sim_app
from bookgen.service.pipeline.book import BookWriter
from bookgen.service.pipeline.outline import Outline
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.pipeline.writer import LengthPolicy, Written, write_to_length
from bookgen.service.settings import Settings, SimSettings
from bookgen.service.store import NewSection, Usage
from bookgen.service.store.models import utcnow


@dataclass
class Reply:
    text: str
    input_tokens: int = 10
    output_tokens: int = 20
    cost_usd: float = 0.001


class ScriptedModel:
    """Answers with prepared texts and records the prompts it got."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.prompts: list[list[dict[str, str]]] = []

    async def chat(self, messages: list[dict[str, str]], **_: object) -> Reply:
        self.prompts.append(messages)
        return Reply(self.texts.pop(0))


class RecordingHooks(Hooks):
    def __init__(self) -> None:
        self.fixes: list[str] = []
        self.done: list[ChapterOutcome] = []
        self.runs: list[tuple[int, str]] = []

    def length_fix(self, action: str) -> None:
        self.fixes.append(action)

    def chapter_done(self, outcome: ChapterOutcome) -> None:
        self.done.append(outcome)


def words(n: int) -> str:
    return " ".join(["Word"] * (n - 1)) + " end."


POLICY = LengthPolicy(tolerance=0.05, max_attempts=3)
PROMPT = [{"role": "user", "content": "Write. Target length: 100 words."}]


async def write(model: ScriptedModel, hooks: Hooks, target: int = 100) -> Written:
    return await write_to_length(
        model, PROMPT, target=target, model="m", temperature=None, policy=POLICY, hooks=hooks
    )


async def test_in_band_needs_one_pass() -> None:
    hooks = RecordingHooks()
    written = await write(ScriptedModel(words(103)), hooks)
    assert (written.words, written.attempts, hooks.fixes) == (103, 1, [])


async def test_short_text_is_continued_for_the_remaining_words() -> None:
    hooks = RecordingHooks()
    model = ScriptedModel(words(60), words(40))
    written = await write(model, hooks)
    assert written.words == 100
    assert written.attempts == 2
    assert hooks.fixes == ["continue"]
    last = model.prompts[1][-1]["content"]
    assert "Target length: 40 words." in last
    assert model.prompts[1][-2] == {"role": "assistant", "content": words(60)}
    assert written.usage.output_tokens == 40


async def test_long_text_is_trimmed_at_a_sentence() -> None:
    hooks = RecordingHooks()
    text = " ".join(f"Sentence number {i} is here." for i in range(40))  # 200 words
    written = await write(ScriptedModel(text), hooks)
    assert 95 <= written.words <= 105
    assert written.text.endswith("here.")
    assert hooks.fixes == ["trim"]


async def test_attempts_are_bounded_and_deviation_recorded() -> None:
    hooks = RecordingHooks()
    written = await write(ScriptedModel(words(10), words(10), words(10), words(10)), hooks)
    assert written.attempts == 3
    assert written.words == 30
    assert written.deviation == pytest.approx(-0.7)
    assert hooks.fixes == ["continue", "continue"]


class ListSink:
    def __init__(self) -> None:
        self.outline: Outline | None = None
        self.sections: list[NewSection] = []

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        self.outline = outline

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        self.sections.append(section)


@pytest.fixture
async def sim_client() -> LLMClient:
    sim = SimSettings(tokens_per_second=400.0, time_to_first_token_s=0.0, jitter=0.0)
    transport = httpx.ASGITransport(app=create_sim_app(sim))
    return LLMClient(Settings(), Hooks(), base_url="http://sim/v1", transport=transport)


async def test_book_against_the_simulated_model_runs_chapters_concurrently(
    sim_client: LLMClient,
) -> None:
    hooks = RecordingHooks()
    writer = BookWriter(sim_client, hooks, POLICY, chapter_concurrency=10)
    spec = BookSpec("job1", "Ada Lovelace", chapters=6, total_words=1200, model="bookgen-sim")
    job = JobInfo("job1", 6, 1200, "bookgen-sim", utcnow())
    sink = ListSink()
    started = time.monotonic()
    await writer.write(spec, job, sink)
    elapsed = time.monotonic() - started
    await sim_client.aclose()
    assert sorted(s.index for s in sink.sections) == list(range(8))
    chapters = [s for s in sink.sections if s.kind == "chapter"]
    assert all(190 <= s.words <= 210 for s in chapters)
    assert [o.index for o in sorted(hooks.done, key=lambda o: o.index)] == list(range(8))
    # 8 sections of 100-200 words at 400 tok/s take ~0.7 s each: one after another is > 4 s.
    assert elapsed < 3.5, elapsed


async def test_resume_writes_only_missing_sections(sim_client: LLMClient) -> None:
    writer = BookWriter(sim_client, Hooks(), POLICY, chapter_concurrency=4)
    spec = BookSpec("job2", "Ada Lovelace", chapters=3, total_words=1000, model="bookgen-sim")
    job = JobInfo("job2", 3, 1000, "bookgen-sim", utcnow())
    sink = ListSink()
    outline = [{"title": f"T{i}", "synopsis": "s"} for i in range(3)]
    await asyncio.wait_for(writer.write(spec, job, sink, outline=outline, done={0, 2}), 30)
    await sim_client.aclose()
    assert sink.outline is None
    assert sorted(s.index for s in sink.sections) == [1, 3, 4]
