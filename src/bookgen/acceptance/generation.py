"""How fast books can be written at best: the bounds the model and the pipeline's order set.

Used by `scripts/benchmark_generation.py` and `bookgen verify` to print a measured book time
beside the least time the work could take. The book's shape (outline and section lengths) comes
from the simulated model's answer to the pipeline's real outline prompt.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

from bookgen.service.llm.sim import ChatRequest, completion_tokens, compose
from bookgen.service.pipeline import prompts
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.settings import Settings


def nominal_tokens(words: int) -> int:
    return math.ceil(words * 4 / 3)


def book_shape(chapters: int, total_words: int) -> tuple[int, list[int]]:
    """(outline tokens, section tokens in plan order) the simulated model emits for this book:
    the outline from the sim's answer to the pipeline's real outline prompt."""
    spec = BookSpec("bench", "Ada Lovelace", chapters, total_words, "bookgen-sim")
    text, _ = compose(ChatRequest.model_validate({"messages": prompts.outline(spec)}))
    outline = completion_tokens(len(text.split()))
    frame = nominal_tokens(spec.frame_words)
    sections = [frame] + [nominal_tokens(spec.words_per_chapter)] * chapters + [frame]
    return outline, sections


def schedule_bound(
    outline_tokens: int,
    sections: list[int],
    *,
    jobs: int,
    job_slots: int,
    chapter_slots: int,
    llm_slots: int,
    rate: float,
    ttft: float,
) -> float:
    """Makespan of `jobs` books submitted together, with the work ordered as the pipeline orders
    it, at exactly the stream rate and zero overhead: `job_slots` jobs run at once; each starts
    its outline, introduction and epilogue together; chapter k is released when its entry of the
    streamed outline has arrived (k/n of the way through) and runs on one of `chapter_slots`;
    every call waits for one of `llm_slots` streams, first come first served."""
    chapters = len(sections) - 2  # sections = [introduction, chapter 1..n, epilogue]
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, job, index)
    order = itertools.count()
    waiting: deque[tuple[int, int]] = deque()  # (job, section index or -1 for the outline)
    released: list[deque[int]] = [deque() for _ in range(jobs)]
    busy = [0] * jobs
    left = [len(sections) + 1] * jobs
    free = llm_slots
    started = 0
    now = 0.0

    def start_next_job() -> None:
        nonlocal started
        waiting.extend([(started, -1), (started, 0), (started, len(sections) - 1)])
        started += 1

    def take_chapter_slots(job: int) -> None:
        while released[job] and busy[job] < chapter_slots:
            busy[job] += 1
            waiting.append((job, released[job].popleft()))

    for _ in range(min(jobs, job_slots)):
        start_next_job()
    while True:
        while free and waiting:
            job, index = waiting.popleft()
            free -= 1
            tokens = outline_tokens if index < 0 else sections[index]
            heapq.heappush(events, (now + ttft + tokens / rate, next(order), "end", job, index))
            if index < 0:
                for k in range(1, chapters + 1):
                    at = now + ttft + outline_tokens * k / chapters / rate
                    heapq.heappush(events, (at, next(order), "entry", job, k))
        if not events:
            return now
        now, _, kind, job, index = heapq.heappop(events)
        if kind == "entry":
            released[job].append(index)
            take_chapter_slots(job)
            continue
        free += 1
        if 1 <= index <= chapters:
            busy[job] -= 1
            take_chapter_slots(job)
        left[job] -= 1
        if left[job] == 0 and started < jobs:
            start_next_job()


def critical_path(s: Settings, chapters: int, words: int, rate: float) -> float:
    """One book with every section started as soon as its outline entry is in, no slot limit."""
    outline_t, sections = book_shape(chapters, words)
    many = len(sections) + 1
    return schedule_bound(
        outline_t,
        sections,
        jobs=1,
        job_slots=1,
        chapter_slots=many,
        llm_slots=many,
        rate=rate,
        ttft=s.sim.time_to_first_token_s + s.sim.latency_s,
    )
