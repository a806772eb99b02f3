"""Turning the model's outline answer into one title and synopsis per chapter."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_LINE = re.compile(
    r"^\s*(?:[#*\-]+\s*)?(?:chapter\s+)?(\d{1,3})\s*[.):\-–—]\s*(?P<body>.+?)\s*$",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"\s*(?::|\s[-–—]\s)\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CHAPTER_PREFIX = re.compile(r"^\s*chapter\s+\d+\s*[.:\-–—]\s*", re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}")

Outline = list[dict[str, str]]


def _clean(text: str, limit: int) -> str:
    text = text.strip().strip("*_`\"'").strip()
    return text[:limit].rstrip()


def _title_from_sentence(sentence: str) -> str:
    words = re.sub(r"[^\w\s'-]", "", sentence).split()[:6]
    return " ".join(w.capitalize() if i == 0 else w for i, w in enumerate(words)) or "Untitled"


def _from_json(text: str, chapters: int) -> dict[int, dict[str, str]]:
    match = _JSON_OBJECT.search(text)
    if not match:
        return {}
    try:
        data: Any = json.loads(match.group(0))
    except ValueError:
        return {}
    entries = data.get("chapters") if isinstance(data, dict) else None
    found: dict[int, dict[str, str]] = {}
    for number, entry in enumerate(entries if isinstance(entries, list) else [], start=1):
        parsed = _entry(entry)
        if number <= chapters and parsed:
            found[number] = parsed
    return found


def _entry(entry: Any) -> dict[str, str] | None:
    if not isinstance(entry, dict):
        return None
    title = _clean(_CHAPTER_PREFIX.sub("", str(entry.get("title") or "")), 120)
    synopsis = _clean(str(entry.get("synopsis") or ""), 500)
    return {"title": title, "synopsis": synopsis or title} if title else None


class OutlineStream:
    """A stream watch that hands over each chapter's outline entry as soon as it has arrived.

    Chapters need only their own entry, so each can start while the model is still writing the
    rest of the outline. Reads the JSON form the outline prompt asks for (entries are flat
    objects in the `chapters` array, numbered by position as `parse_outline` numbers them);
    whatever it cannot read simply waits for the whole answer.
    """

    def __init__(self, chapters: int, on_entry: Callable[[int, dict[str, str]], None]) -> None:
        self.chapters = chapters
        self.on_entry = on_entry
        self.begin()

    def begin(self) -> None:
        self._text = ""
        self._scan = -1
        self._seen = 0

    def feed(self, delta: str) -> bool:
        self._text += delta
        if self._scan < 0:
            opened = self._text.find("[")
            if opened < 0:
                return False
            self._scan = opened + 1
        for match in _FLAT_OBJECT.finditer(self._text, self._scan):
            self._scan = match.end()
            try:
                entry = _entry(json.loads(match.group(0)))
            except ValueError:
                entry = None
            self._seen += 1
            if entry and self._seen <= self.chapters:
                self.on_entry(self._seen, entry)
        return False


def parse_outline(text: str, chapters: int) -> Outline:
    """One {"title", "synopsis"} per chapter: from JSON, numbered lines, or else plain prose."""
    found = _from_json(text, chapters)
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        number = int(match.group(1))
        if not 1 <= number <= chapters or number in found:
            continue
        parts = _SPLIT.split(match.group("body"), maxsplit=1)
        title = _clean(parts[0], 120)
        synopsis = _clean(parts[1], 500) if len(parts) > 1 else ""
        if title:
            found[number] = {"title": title, "synopsis": synopsis or title}
    sentences = [s for s in _SENTENCE.split(" ".join(text.split())) if len(s.split()) >= 3]
    outline: Outline = []
    for number in range(1, chapters + 1):
        if number in found:
            outline.append(found[number])
        elif sentences:
            sentence = _clean(sentences[(number - 1) % len(sentences)], 500)
            outline.append({"title": _title_from_sentence(sentence), "synopsis": sentence})
        else:
            fallback = {"title": f"Chapter {number}", "synopsis": f"Part {number} of the life."}
            outline.append(fallback)
    return outline
