"""Outline parsing: JSON, numbered lines, and plain prose all give one entry per chapter."""

from __future__ import annotations

import json

import pytest

from bookgen.service.llm.prose import outline_json
from bookgen.service.pipeline.outline import parse_outline


def test_json_outline_from_the_simulated_model() -> None:
    outline = parse_outline(outline_json(seed=7, chapters=4), 4)
    assert len(outline) == 4
    assert all(entry["title"] and entry["synopsis"] for entry in outline)
    assert not any(entry["title"].lower().startswith("chapter") for entry in outline)


def test_json_inside_prose_and_code_fences() -> None:
    body = json.dumps({"chapters": [{"title": "Childhood", "synopsis": "Early years."}]})
    outline = parse_outline(f"Here is the plan:\n```json\n{body}\n```", 1)
    assert outline == [{"title": "Childhood", "synopsis": "Early years."}]


def test_numbered_lines() -> None:
    text = "1. Early years: born in London.\n2) The engine - meets Babbage.\n3. Legacy"
    outline = parse_outline(text, 3)
    assert [e["title"] for e in outline] == ["Early years", "The engine", "Legacy"]
    assert outline[1]["synopsis"] == "meets Babbage."


@pytest.mark.parametrize("chapters", [1, 5, 50])
def test_prose_answer_still_gives_every_chapter(chapters: int) -> None:
    text = "She was born in London. She studied mathematics with care. She wrote the notes."
    outline = parse_outline(text, chapters)
    assert len(outline) == chapters
    assert all(entry["title"] and entry["synopsis"] for entry in outline)


def test_empty_answer_gives_placeholders() -> None:
    assert parse_outline("", 2)[1] == {"title": "Chapter 2", "synopsis": "Part 2 of the life."}


def test_out_of_range_and_duplicate_numbers_are_ignored() -> None:
    outline = parse_outline("1. A: a.\n1. B: b.\n9. Z: z.\n2. C: c.", 2)
    assert [e["title"] for e in outline] == ["A", "C"]
