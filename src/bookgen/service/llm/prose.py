"""Deterministic, readable English prose for the simulated model.

`prose(seed, words)` returns exactly `words` words: sentences built from templates (subject, verb,
object, then modifiers chosen to hit the sentence's planned length), each ending in a period,
grouped into paragraphs separated by blank lines. The same seed gives the same text.
"""

from __future__ import annotations

import hashlib
import json
import random

SUBJECTS: tuple[tuple[str, ...], ...] = (
    ("She",),
    ("He",),
    ("The", "young", "scholar"),
    ("Her", "mother"),
    ("His", "father"),
    ("The", "family"),
    ("Their", "friends"),
    ("The", "old", "teacher"),
    ("A", "visiting", "professor"),
    ("The", "household"),
    ("Her", "closest", "companion"),
    ("The", "villagers"),
    ("A", "letter", "from", "London"),
    ("The", "new", "work"),
    ("Every", "critic"),
    ("The", "committee"),
)

VERBS: tuple[str, ...] = (
    "wrote",
    "studied",
    "remembered",
    "questioned",
    "described",
    "admired",
    "defended",
    "answered",
    "revised",
    "explained",
    "discovered",
    "praised",
    "copied",
    "examined",
    "mentioned",
    "considered",
)

OBJECTS: tuple[tuple[str, ...], ...] = (
    ("the", "early", "notebooks"),
    ("a", "long", "essay"),
    ("the", "family", "letters"),
    ("every", "new", "idea"),
    ("the", "difficult", "problem"),
    ("a", "careful", "plan"),
    ("the", "first", "results"),
    ("the", "public", "lectures"),
    ("an", "unfinished", "manuscript"),
    ("the", "quiet", "garden"),
    ("the", "journey", "north"),
    ("a", "small", "experiment"),
    ("the", "accounts"),
    ("their", "shared", "hopes"),
    ("the", "winter", "evenings"),
    ("the", "letters"),
)

MODIFIERS: tuple[tuple[str, ...], ...] = (
    ("again",),
    ("slowly",),
    ("carefully",),
    ("at", "last"),
    ("with", "patience"),
    ("in", "the", "spring"),
    ("with", "great", "care"),
    ("for", "many", "years"),
    ("before", "the", "war"),
    ("despite", "the", "cold"),
    ("after", "a", "long", "silence"),
    ("in", "the", "small", "study"),
    ("during", "the", "long", "winter"),
    ("with", "quiet", "determination"),
    ("while", "the", "house", "slept"),
    ("as", "the", "years", "passed"),
    ("in", "front", "of", "the", "whole", "family"),
    ("without", "asking", "anyone", "for", "help"),
)

SHORT: dict[int, tuple[str, ...]] = {
    1: ("Indeed",),
    2: ("She", "wrote"),
    3: ("She", "wrote", "again"),
    4: ("She", "wrote", "at", "last"),
}

TITLE_NOUNS: tuple[str, ...] = (
    "Beginnings",
    "Letters",
    "Lessons",
    "Journeys",
    "Friendships",
    "Work",
    "Doubts",
    "Discoveries",
    "Rivals",
    "Winters",
    "Returns",
    "Legacy",
)
TITLE_ADJS: tuple[str, ...] = (
    "Early",
    "Quiet",
    "Restless",
    "Distant",
    "Unfinished",
    "Hidden",
    "Bright",
    "Final",
    "Northern",
    "Patient",
)

MIN_SENTENCE = 5
MAX_SENTENCE = 18


def seed_for(text: str) -> int:
    """A stable 64-bit seed from text (Python's `hash()` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _sentence(rng: random.Random, length: int) -> list[str]:
    """One sentence of exactly `length` words (length >= 1), without the final period."""
    if length in SHORT:
        return list(SHORT[length])
    subject = rng.choice([s for s in SUBJECTS if len(s) <= length - 3] or [("She",)])
    obj = rng.choice([o for o in OBJECTS if len(o) <= length - len(subject) - 1] or [("it",)])
    words = [*subject, rng.choice(VERBS), *obj]
    remaining = length - len(words)
    used: set[tuple[str, ...]] = set()
    while remaining > 0:
        fits = [m for m in MODIFIERS if len(m) <= remaining and m not in used]
        if not fits:
            fits = [m for m in MODIFIERS if len(m) <= remaining]
        # Prefer longer modifiers so sentences read as clauses rather than lists of adverbs.
        longest = max(len(m) for m in fits)
        pool = [m for m in fits if len(m) >= min(longest, 3)] or fits
        mod = rng.choice(pool)
        used.add(mod)
        words.extend(mod)
        remaining -= len(mod)
    return words


def _plan(rng: random.Random, total: int) -> list[int]:
    """Sentence lengths summing to `total`."""
    if total <= 0:
        return []
    lengths: list[int] = []
    left = total
    while left > 0:
        if left <= MAX_SENTENCE:
            lengths.append(left)
            break
        n = rng.randint(MIN_SENTENCE + 3, MAX_SENTENCE)
        if left - n < MIN_SENTENCE:  # never leave a stub sentence at the end
            n = left - MIN_SENTENCE
        lengths.append(n)
        left -= n
    return lengths


def prose(seed: int, words: int) -> str:
    """Exactly `words` words of prose in paragraphs of 4-7 sentences."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    current: list[str] = []
    per_paragraph = rng.randint(4, 7)
    for length in _plan(rng, words):
        sentence = _sentence(rng, length)
        current.append(" ".join(sentence) + ".")
        if len(current) >= per_paragraph:
            paragraphs.append(" ".join(current))
            current = []
            per_paragraph = rng.randint(4, 7)
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _titles(rng: random.Random, count: int) -> list[str]:
    """`count` chapter titles, distinct while the vocabulary lasts."""
    pairs = [f"{a} {n}" for a in TITLE_ADJS for n in TITLE_NOUNS]
    rng.shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(count)]


def _synopsis_words(rng: random.Random, chapters: int, words: int | None, overhead: int) -> int:
    if words:
        return max(4, round(words / chapters) - overhead)
    return rng.randint(10, 16)


def outline_json(seed: int, chapters: int, words: int | None = None) -> str:
    """A JSON outline `{"chapters": [{"title", "synopsis"}, ...]}` with `chapters` entries, each
    synopsis one sentence; about `words` words in all when given."""
    rng = random.Random(seed)
    items = []
    for title in _titles(rng, chapters):
        length = _synopsis_words(rng, chapters, words, 6)
        items.append({"title": title, "synopsis": " ".join(_sentence(rng, length)) + "."})
    return json.dumps({"chapters": items}, indent=1)


def outline_lines(seed: int, chapters: int, words: int | None = None) -> str:
    """`chapters` lines `N. Title: one-sentence synopsis`; about `words` words in all when given."""
    rng = random.Random(seed)
    lines = []
    for i, title in enumerate(_titles(rng, chapters)):
        length = _synopsis_words(rng, chapters, words, 3)
        lines.append(f"{i + 1}. {title}: {' '.join(_sentence(rng, length))}.")
    return "\n".join(lines)
