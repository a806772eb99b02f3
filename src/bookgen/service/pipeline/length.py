"""Word counting, tolerance bands and trimming at a sentence boundary."""

from __future__ import annotations

import math
import re

_SENTENCE_END = re.compile(r"[.!?][\"')\]»”’]*(?=\s|$)")


def count_words(text: str) -> int:
    return len(text.split())


def bounds(target: int, tolerance: float) -> tuple[int, int]:
    """Inclusive [low, high] word counts accepted for `target`; never empty."""
    low = max(1, math.ceil(target * (1 - tolerance)))
    high = max(low, math.floor(target * (1 + tolerance)))
    return min(low, target), max(high, target)


def deviation(words: int, target: int) -> float:
    """Signed relative deviation: (words - target) / target."""
    return (words - target) / target if target else 0.0


def trim_to_sentence(text: str, high: int, low: int = 1) -> str:
    """The longest prefix of `text` ending at a sentence end with at most `high` words.

    If no sentence end leaves at least `low` words (very long sentences), cut at a word
    boundary at `high` words and close the sentence, so the length target still holds.
    """
    text = text.strip()
    if count_words(text) <= high:
        return text
    best_end = 0
    words_before = 0
    position = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        words_here = words_before + count_words(text[position:end])
        if words_here > high:
            break
        best_end, words_before, position = end, words_here, end
    if best_end and words_before >= low:
        return text[:best_end].rstrip()
    cut = " ".join(text.split()[:high]).rstrip(",;:-–— ")
    return cut if cut.endswith((".", "!", "?")) else cut + "."


def join_continuation(text: str, more: str) -> str:
    """Append a continuation as a new paragraph (the model restarts at a sentence)."""
    more = more.strip()
    if not more:
        return text
    return f"{text.rstrip()}\n\n{more}"


class WordLimit:
    """A stream watch that ends a reply once it holds more than `limit` words.

    Everything past `limit` words would be trimmed away, and the first `limit` words are complete
    once word `limit + 1` has begun, so stopping there keeps exactly the text trimming would keep
    while the model stops spending time and tokens on the rest.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.words = 0
        self._in_word = False

    def begin(self) -> None:
        self.words = 0
        self._in_word = False

    def feed(self, delta: str) -> bool:
        if delta:
            found = len(delta.split())
            if found and self._in_word and not delta[0].isspace():
                found -= 1  # the word the last piece ended in goes on
            self.words += found
            self._in_word = not delta[-1].isspace()
        return self.words > self.limit
