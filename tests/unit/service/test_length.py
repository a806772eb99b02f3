"""Length bands, deviation and trimming at a sentence boundary."""

from __future__ import annotations

import pytest

from bookgen.service.pipeline.length import (
    bounds,
    count_words,
    deviation,
    join_continuation,
    trim_to_sentence,
)


@pytest.mark.parametrize("target", [1, 20, 999, 1000, 2550, 51_000])
@pytest.mark.parametrize("tolerance", [0.01, 0.05, 0.2])
def test_bounds_contain_the_target(target: int, tolerance: float) -> None:
    low, high = bounds(target, tolerance)
    assert low <= target <= high  # BookGen v1's band came out as [3000, 2677]


def test_bounds_of_the_v1_chapter() -> None:
    assert bounds(2550, 0.05) == (2423, 2677)


def test_deviation_is_signed_and_relative() -> None:
    assert deviation(1050, 1000) == pytest.approx(0.05)
    assert deviation(900, 1000) == pytest.approx(-0.1)


def test_trim_stops_at_the_last_sentence_that_fits() -> None:
    text = "One two three. Four five six. Seven eight nine ten. Eleven."
    assert trim_to_sentence(text, high=8) == "One two three. Four five six."
    assert count_words(trim_to_sentence(text, high=10)) == 10


def test_trim_leaves_short_text_alone() -> None:
    assert trim_to_sentence("  Short text here.  ", high=10) == "Short text here."


def test_trim_keeps_paragraphs_and_closing_quotes() -> None:
    text = 'He said "yes." Then left.\n\nA new paragraph starts here. And goes on and on.'
    trimmed = trim_to_sentence(text, high=10)
    assert trimmed == 'He said "yes." Then left.\n\nA new paragraph starts here.'


def test_trim_falls_back_to_words_when_sentences_are_too_long() -> None:
    text = " ".join(["word"] * 50) + "."
    trimmed = trim_to_sentence(text, high=10, low=9)
    assert count_words(trimmed) == 10
    assert trimmed.endswith(".")


def test_continuation_is_a_new_paragraph() -> None:
    assert join_continuation("First part.", " Second part. ") == "First part.\n\nSecond part."
    assert join_continuation("First part.", "   ") == "First part."
