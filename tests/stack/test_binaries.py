from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bookgen.stack import binaries
from bookgen.stack.supervisor import Stack


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(binaries.MissingBinaryError) as caught:
        binaries.find("prometheus")
    assert "apt-get install prometheus prometheus-alertmanager" in str(caught.value)


def test_override_must_be_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKGEN_ALERTMANAGER_BIN", "/nonexistent/alertmanager")
    with pytest.raises(binaries.MissingBinaryError, match="not executable"):
        binaries.find("alertmanager")


def test_debian_names_are_found_when_installed() -> None:
    try:
        path = binaries.find("alertmanager")
    except binaries.MissingBinaryError:
        pytest.skip("Alertmanager is not installed")
    assert path.endswith(("prometheus-alertmanager", "alertmanager"))


def test_stack_start_without_prometheus_says_how_to_install_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    stack = Stack(tmp_path / "run")
    with pytest.raises(binaries.MissingBinaryError, match="apt-get install prometheus"):
        stack.start()
    assert stack.components == []
    assert not (tmp_path / "run").exists()
