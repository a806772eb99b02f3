from __future__ import annotations

import pytest

from bookgen.stack import binaries


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(binaries.shutil, "which", lambda *a, **k: None)
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
