"""Tokens and cost spent on work that will not be stored with a section.

A failed or cut-off attempt still costs what the provider generated before it broke, and a
section that fails after some calls succeeded loses their usage with it. Such spend is added to
the tally of the job being run (a context variable the runtime sets around each run, inherited
by the section tasks), and the runtime adds the tally to the job's totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class SpendTally:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd

    def take(self) -> tuple[int, int, float]:
        """What was tallied since the last take, and start again from zero."""
        taken = (self.input_tokens, self.output_tokens, self.cost_usd)
        self.input_tokens, self.output_tokens, self.cost_usd = 0, 0, 0.0
        return taken


_current: ContextVar[SpendTally | None] = ContextVar("bookgen_unsaved_spend", default=None)


def unsaved(input_tokens: int, output_tokens: int, cost_usd: float) -> None:
    """Record spend that no stored section carries (no-op outside a tallied run)."""
    tally = _current.get()
    if tally is not None:
        tally.add(input_tokens, output_tokens, cost_usd)


def take() -> tuple[int, int, float]:
    """What the current run tallied so far, taken out of its tally (zeros outside a run)."""
    tally = _current.get()
    return tally.take() if tally is not None else (0, 0, 0.0)


@contextmanager
def tallied() -> Iterator[SpendTally]:
    """Tally unsaved spend of everything run inside (child tasks included)."""
    tally = SpendTally()
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)
