"""Import direction: the service never sees its instrumentation; generators see the catalogue."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bookgen"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def offending(folder: Path, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for path in python_files(folder):
        for module in sorted(imported_modules(path)):
            if module.startswith(forbidden) and not module.startswith(allowed):
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    return problems


def test_helper_sees_real_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import a.b\nfrom c.d import e\nfrom . import f\n")
    assert imported_modules(sample) == {"a.b", "c.d", "c.d.e"}


def test_service_imports_no_instrumentation_slo_or_stack() -> None:
    forbidden = ("bookgen.instrumentation", "bookgen.slo", "bookgen.stack", "bookgen.asgi")
    assert python_files(SRC / "service"), "service package is empty"
    assert offending(SRC / "service", forbidden) == []


def test_slo_reads_only_the_metric_catalogue() -> None:
    forbidden = ("bookgen.instrumentation", "bookgen.service", "bookgen.stack")
    allowed = ("bookgen.instrumentation.catalogue",)
    assert offending(SRC / "slo", forbidden, allowed) == []


@pytest.mark.parametrize("folder", ["loadtests"])
def test_loadtests_import_nothing_from_bookgen(folder: str) -> None:
    assert offending(ROOT / folder, ("bookgen",)) == []
