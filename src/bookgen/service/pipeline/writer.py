"""Writing one section to its word target: generate, then continue or trim within bounds."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bookgen.service.hooks import Hooks
from bookgen.service.llm import spend
from bookgen.service.llm.client import StreamWatch
from bookgen.service.pipeline import prompts
from bookgen.service.pipeline.length import (
    WordLimit,
    bounds,
    count_words,
    deviation,
    join_continuation,
    trim_to_sentence,
)
from bookgen.service.store.repository import Usage

Gate = Callable[[], Awaitable[None]]


class ChatReply(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost_usd(self) -> float: ...


class ChatModel(Protocol):
    """The part of `LLMClient` the pipeline uses."""

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool | None = None,
        watch: StreamWatch | None = None,
    ) -> ChatReply: ...


@dataclass(frozen=True, slots=True)
class LengthPolicy:
    tolerance: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Written:
    text: str
    words: int
    target_words: int
    deviation: float
    attempts: int
    usage: Usage
    # False when the text is still short of the band after every attempt (over-long text is
    # always trimmed into it): stored all the same, and reported.
    in_band: bool = True


def token_budget(words: int) -> int:
    """max_tokens for `words` words: 4/3 tokens a word plus headroom for the model's drift."""
    return math.ceil(words * 4 / 3 * 1.3) + 64


async def _open_gate() -> None:
    return None


class UsageMeter:
    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0

    def add(self, reply: ChatReply) -> None:
        self.input_tokens += int(reply.input_tokens or 0)
        self.output_tokens += int(reply.output_tokens or 0)
        self.cost_usd += float(reply.cost_usd or 0.0)

    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens, self.cost_usd)


async def write_to_length(
    llm: ChatModel,
    messages: prompts.Messages,
    *,
    target: int,
    model: str,
    temperature: float | None,
    policy: LengthPolicy,
    hooks: Hooks,
    gate: Gate = _open_gate,
) -> Written:
    meter = UsageMeter()
    try:
        return await _write_to_length(
            llm, messages, target, model, temperature, policy, hooks, gate, meter
        )
    except BaseException:
        # The section will not be stored: what its calls cost goes to the job another way.
        spend.unsaved(meter.input_tokens, meter.output_tokens, meter.cost_usd)
        raise


async def _write_to_length(
    llm: ChatModel,
    messages: prompts.Messages,
    target: int,
    model: str,
    temperature: float | None,
    policy: LengthPolicy,
    hooks: Hooks,
    gate: Gate,
    meter: UsageMeter,
) -> Written:
    low, high = bounds(target, policy.tolerance)
    await gate()
    reply = await llm.chat(
        messages,
        model=model,
        max_tokens=token_budget(target),
        temperature=temperature,
        watch=WordLimit(high),
    )
    meter.add(reply)
    text = reply.text.strip()
    attempts = 1
    while attempts < policy.max_attempts:
        words = count_words(text)
        if low <= words <= high:
            break
        attempts += 1
        if words > high:
            hooks.length_fix("trim")
            text = trim_to_sentence(text, high, low)
            continue
        hooks.length_fix("continue")
        remaining = target - words
        await gate()
        more = await llm.chat(
            prompts.continuation(messages, text, remaining),
            model=model,
            max_tokens=token_budget(remaining),
            temperature=temperature,
            watch=WordLimit(high - words),
        )
        meter.add(more)
        text = join_continuation(text, more.text)
    if count_words(text) > high:
        # Trimming needs no model call, so an over-long text is always brought into bounds.
        attempts += 1
        hooks.length_fix("trim")
        text = trim_to_sentence(text, high, low)
    words = count_words(text)
    return Written(
        text, words, target, deviation(words, target), attempts, meter.usage(), low <= words
    )
