"""Shared fixtures for the SLO generator tests, and the alert-coverage line in the summary."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bookgen.slo.spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
_LINES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def spec() -> Spec:
    return load_spec(ROOT / "slo.yaml")


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install prometheus prometheus-alertmanager)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return _require("amtool")


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a line now and again in the terminal summary, with or without `-s`."""

    def add(line: str) -> None:
        print(line)
        request.config.stash.setdefault(_LINES, []).append(line)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(_LINES, []):
        terminalreporter.write_line(line)
