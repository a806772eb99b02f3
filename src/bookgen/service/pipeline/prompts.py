"""Prompt text. Every prompt that asks for prose ends with `Target length: N words.`"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]

OUTLINE_WORDS_PER_CHAPTER = 15


@dataclass(frozen=True, slots=True)
class BookSpec:
    job_id: str
    character: str
    chapters: int
    total_words: int
    model: str
    temperature: float | None = None
    language: str = "English"
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def words_per_chapter(self) -> int:
        return max(1, round(self.total_words / self.chapters))

    @property
    def frame_words(self) -> int:
        """Target of the introduction and of the epilogue."""
        return max(50, min(500, self.words_per_chapter // 2))


def _system(spec: BookSpec) -> dict[str, str]:
    return {
        "role": "system",
        "content": (
            f"You are a careful biographer writing a book-length biography in {spec.language}. "
            "Write flowing narrative prose in paragraphs, without headings or lists."
        ),
    }


def _sources(spec: BookSpec) -> str:
    titles = [str(s.get("title", "")) for s in spec.sources if s.get("title")]
    return "Rely on these sources: " + "; ".join(titles[:20]) + "\n" if titles else ""


def outline(spec: BookSpec) -> Messages:
    return [
        _system(spec),
        {
            "role": "user",
            "content": (
                f"Plan a biography of {spec.character}.\n"
                'Return a JSON outline {"chapters": [{"title": ..., "synopsis": ...}]} with one '
                "entry per chapter, each synopsis one sentence.\n"
                f"{_sources(spec)}"
                f"Chapters: {spec.chapters}.\n"
                # Chapters cannot start before the outline ends: keep it brief.
                f"Target length: {spec.chapters * OUTLINE_WORDS_PER_CHAPTER} words."
            ),
        },
    ]


def section(
    spec: BookSpec, kind: str, title: str, synopsis: str, number: int, target: int
) -> Messages:
    if kind == "chapter":
        task = (
            f"Write chapter {number} of {spec.chapters} of a biography of {spec.character}.\n"
            f"Chapter title: {title}\nSynopsis: {synopsis}\n"
        )
    elif kind == "introduction":
        task = f"Write the introduction to a biography of {spec.character}.\n"
    else:
        task = f"Write the epilogue of a biography of {spec.character}, on their legacy.\n"
    return [
        _system(spec),
        {"role": "user", "content": f"{task}{_sources(spec)}Target length: {target} words."},
    ]


def continuation(messages: Messages, written: str, remaining: int) -> Messages:
    return [
        *messages,
        {"role": "assistant", "content": written},
        {
            "role": "user",
            "content": (
                "Continue the text from where it stops, without repeating anything.\n"
                f"Target length: {remaining} words."
            ),
        },
    ]
