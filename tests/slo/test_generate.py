"""Golden tests: the committed files are exactly what the generator renders now."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from bookgen.cli import main
from bookgen.slo import conventions as names
from bookgen.slo.generate import render_all, stale
from bookgen.slo.spec import Spec, load_spec


def test_committed_files_are_fresh(spec: Spec, root: Path) -> None:
    assert stale(spec, root) == [], "run `bookgen slo generate`"


def test_render_is_deterministic(root: Path) -> None:
    first = render_all(load_spec(root / "slo.yaml"))
    second = render_all(load_spec(root / "slo.yaml"))
    assert first == second


def test_every_file_has_the_header(spec: Spec) -> None:
    files = render_all(spec)
    assert len(files) >= 17
    for rel, text in files.items():
        assert (
            names.HEADER in text.splitlines()[0]
            or f'"_comment": "{names.HEADER}"'.encode("ascii", "backslashreplace").decode() in text
            or '"_comment"' in text.splitlines()[1]
        ), rel


def test_cli_check_and_generate(root: Path, tmp_path: Path) -> None:
    shutil.copy(root / "slo.yaml", tmp_path / "slo.yaml")
    runner = CliRunner()
    result = runner.invoke(main, ["slo", "check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "stale: alerts/bookgen.rules.yml" in result.output
    result = runner.invoke(main, ["slo", "generate", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["slo", "check", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (tmp_path / names.THRESHOLDS_FILE).write_text("{}", encoding="utf-8")
    result = runner.invoke(main, ["slo", "check", "--root", str(tmp_path)])
    assert result.exit_code == 1 and f"stale: {names.THRESHOLDS_FILE}" in result.output


def test_cli_reports_an_invalid_spec(root: Path, tmp_path: Path) -> None:
    text = (root / "slo.yaml").read_text(encoding="utf-8").replace('le: "0.2"', 'le: "0.20"')
    (tmp_path / "slo.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["slo", "check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert 'le "0.20" is not a bucket' in result.output
