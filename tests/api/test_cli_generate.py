"""`bookgen generate` writes txt, md and docx with every chapter within the tolerance."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from docx import Document

from bookgen.cli import main
from bookgen.service.settings import get_settings


def test_generate_writes_three_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOOKGEN_LLM_BASE_URL", "BOOKGEN_CHAPTERS", "BOOKGEN_TOTAL_WORDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOOKGEN_SIM__TOKENS_PER_SECOND", "4000")
    monkeypatch.setenv("BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S", "0")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            main,
            [
                "generate",
                "Ada Lovelace",
                "--chapters",
                "3",
                "--words",
                "3000",
                "--out",
                str(tmp_path),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".docx", ".md", ".txt"]
    counts = [int(n) for n in re.findall(r"chapter\s+(\d+) words", result.output)]
    assert len(counts) == 3 and all(950 <= n <= 1050 for n in counts)
    md = next(tmp_path.glob("*.md")).read_text()
    assert md.count("\n## Chapter ") == 3
    docx = Document(io.BytesIO(next(tmp_path.glob("*.docx")).read_bytes()))
    assert sum(p.text.startswith("Chapter ") for p in docx.paragraphs) == 3
