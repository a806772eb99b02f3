"""Streaming saves time without changing the book: replies stop where trimming would cut them,
and chapters start as their outline entries arrive but are stored only after the outline."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from bookgen.service.app import EmbeddedSim
from bookgen.service.hooks import Hooks, JobInfo
from bookgen.service.llm.client import ChatResult, LLMClient, estimate_tokens
from bookgen.service.llm.sim import ChatRequest, compose
from bookgen.service.pipeline import prompts
from bookgen.service.pipeline.book import OUTLINE_INDEX, BookWriter
from bookgen.service.pipeline.length import WordLimit, bounds, trim_to_sentence
from bookgen.service.pipeline.outline import Outline, OutlineStream, parse_outline
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.pipeline.writer import LengthPolicy, write_to_length
from bookgen.service.settings import Settings, SimSettings
from bookgen.service.store import NewSection, Usage
from bookgen.service.store.models import utcnow

POLICY = LengthPolicy(tolerance=0.05, max_attempts=3)


def pieces(text: str, rng: random.Random) -> Iterator[str]:
    at = 0
    while at < len(text):
        step = rng.randint(1, 12)
        yield text[at : at + step]
        at += step


@pytest.mark.parametrize("seed", range(5))
def test_word_limit_counts_words_split_across_pieces(seed: int) -> None:
    text = "  Ada   Byron\nwrote\tnotes on the  Analytical Engine. " * 10
    watch = WordLimit(10**6)
    for piece in pieces(text, random.Random(seed)):
        watch.feed(piece)
    assert watch.words == len(text.split())
    watch.begin()
    assert watch.words == 0


def test_word_limit_stops_once_the_kept_words_are_complete() -> None:
    watch = WordLimit(3)
    assert [watch.feed(p) for p in ["One tw", "o thr", "ee", " f", "our"]] == [
        False,
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("seed", range(5))
def test_outline_stream_hands_over_the_entries_parse_outline_reads(seed: int) -> None:
    spec = BookSpec("j", "Ada Lovelace", 7, 7000, "bookgen-sim")
    text, _ = compose(ChatRequest.model_validate({"messages": prompts.outline(spec)}))
    got: list[tuple[int, dict[str, str]]] = []
    watch = OutlineStream(7, lambda n, e: got.append((n, e)))
    for piece in pieces(text, random.Random(seed)):
        watch.feed(piece)
    assert got == list(enumerate(parse_outline(text, 7), start=1))


def test_outline_stream_skips_what_it_cannot_read_and_stops_at_the_chapter_count() -> None:
    got: list[int] = []
    watch = OutlineStream(2, lambda n, e: got.append(n))
    watch.feed('```json\n{"chapters": [{"title": ""}, {"title": "B", "synopsis": "b"}, ')
    watch.feed('{"title": "C"}]}')
    assert got == [2]


class Timeline(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []

    @contextmanager
    def chapter_run(self, job: JobInfo, index: int, kind: str) -> Iterator[None]:
        self.events.append((time.monotonic(), "start", index))
        yield
        self.events.append((time.monotonic(), "end", index))


class Stopwatch:
    """The client, noting when each chapter-1 reply arrived."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.chapter_one_replies: list[float] = []

    async def chat(self, messages: list[dict[str, str]], **options: Any) -> ChatResult:
        reply = await self.client.chat(messages, **options)
        if "Write chapter 1 of" in messages[1]["content"]:
            self.chapter_one_replies.append(time.monotonic())
        return reply


class OrderSink:
    def __init__(self) -> None:
        self.order: list[int] = []
        self.outline: Outline | None = None
        self.outline_stored_at = 0.0
        self.sections: list[NewSection] = []

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        self.order.append(OUTLINE_INDEX)
        self.outline = outline
        self.outline_stored_at = time.monotonic()

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        self.order.append(section.index)
        self.sections.append(section)


@asynccontextmanager
async def simulated(tokens_per_second: float) -> AsyncIterator[str]:
    """The simulated model over real HTTP, missing asked lengths by up to ±30 %."""
    sim = EmbeddedSim(
        SimSettings(
            tokens_per_second=tokens_per_second,
            time_to_first_token_s=0.05,
            jitter=0,
            length_error=0.3,
        )
    )
    try:
        yield await sim.start()
    finally:
        await sim.stop()


async def test_long_replies_end_where_trimming_would_cut() -> None:
    """Every over-long reply is the trimmed full reply, and costs fewer tokens than it.

    The model sends 75 words a tick at 1,000 tokens/s, so a reply stops at most 75 words past
    the band: the saving is asserted where the full reply is longer than that."""
    async with simulated(1000) as sim_url:
        client = LLMClient(Settings(llm_stream=True), Hooks(), base_url=sim_url)
        over, saved = await _write_sections(client)
        await client.aclose()
    assert over, "no reply was over-long: pick other prompts"
    assert saved, "no reply was long enough to show the saving: pick other prompts"


async def _write_sections(client: LLMClient) -> tuple[int, int]:
    over = saved = 0
    # Seeded lengths: section 0 is 760 words, 2 is 566 (continued), 5 is 667.
    for n in (0, 2, 5):
        messages = [{"role": "user", "content": f"Section {n}.\nTarget length: 600 words."}]
        full, _ = compose(ChatRequest.model_validate({"messages": messages}), 0.3)
        written = await write_to_length(
            client,
            messages,
            target=600,
            model="bookgen-sim",
            temperature=None,
            policy=POLICY,
            hooks=Hooks(),
        )
        low, high = bounds(600, 0.05)
        if len(full.split()) > high:
            over += 1
            assert written.text == trim_to_sentence(full, high, low)
        if len(full.split()) > high + 80:
            saved += 1
            assert written.usage.output_tokens < estimate_tokens(full)
    return over, saved


async def test_chapters_start_with_their_entry_and_are_stored_after_the_outline() -> None:
    timeline = Timeline()
    sink = OrderSink()
    # At 200 tokens/s, 10-word chapters are written long before a 6-chapter outline (90 words)
    # has arrived.
    spec = BookSpec("job", "Ada Lovelace", 6, 60, "bookgen-sim")
    async with simulated(200) as sim_url:
        client = LLMClient(Settings(llm_stream=True), Hooks(), base_url=sim_url)
        model = Stopwatch(client)
        writer = BookWriter(model, timeline, POLICY, chapter_concurrency=8)
        await writer.write(spec, JobInfo("job", 6, 60, "bookgen-sim", utcnow()), sink)
        await client.aclose()
    at = {(kind, index): t for t, kind, index in timeline.events}
    assert at["start", 1] < at["end", OUTLINE_INDEX]
    assert model.chapter_one_replies[-1] < sink.outline_stored_at
    assert sink.order.index(OUTLINE_INDEX) < min(sink.order.index(i) for i in range(1, 7))
    assert sorted(s.index for s in sink.sections) == list(range(8))
    assert sink.outline is not None
    for section in sink.sections:
        if section.kind == "chapter":
            assert section.title == sink.outline[section.index - 1]["title"]
