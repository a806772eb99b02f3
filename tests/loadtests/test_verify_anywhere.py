"""`bookgen verify` run as a newcomer would: from a folder outside the checkout, short and small.

The whole stack comes up (Prometheus and Alertmanager from Debian), ten users load it for about a
minute and a half while two small books are written, and the six target rows must all pass; the
files it says it wrote must be where it says, as absolute paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from bookgen.acceptance.project import ROOT_ENV
from bookgen.stack.process import bookgen_argv

# The short acceptance run CI makes; the full one is `bookgen verify` with its defaults.
# Each user's own book (3 chapters of 2,000 words, ~70 s at the model's speed) outlasts the time
# Locust takes to start all ten users and their first submissions, so the ten users' runs of
# books overlap well inside the 90 s.
SHORT = [
    "--users", "10", "--duration", "90s", "--books", "2", "--chapters", "4", "--words", "4000",
    "--book-wait", "2m", "--user-book", "3x6000",
]  # fmt: skip


def _missing_binaries() -> list[str]:
    return [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_verify_from_outside_the_checkout(tmp_path: Path) -> None:
    if missing := _missing_binaries():
        pytest.skip(f"needs Debian's {', '.join(missing)} (scripts/setup.sh installs them)")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != ROOT_ENV}
    proc = subprocess.Popen(
        bookgen_argv("verify", *SHORT, "--report-dir", "out"),
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # verify stops every process it started on SIGTERM
        out, _ = proc.communicate(timeout=60)
    report = elsewhere / "out"
    table = report / "acceptance.txt"
    assert table.is_file(), out[-3000:]
    # Each file it names is an absolute path that exists, inside the folder asked for.
    named = re.findall(r"^(?:table|figures|Locust|stack logs|report): +(\S+)$", out, re.MULTILINE)
    assert len(named) == 5, out[-3000:]
    for path in map(Path, named):
        assert path.is_absolute() and path.exists() and report in path.parents, path
    assert (report / "locust" / "gate.json").is_file()
    result = json.loads((report / "acceptance.json").read_text())
    rows = {row["target"]: row["ok"] for row in result["rows"]}
    assert len(rows) == 6 and all(rows.values()), table.read_text()
    assert len(re.findall(r" PASS ", table.read_text())) == 6
    # The page a person reads: the same six rows, and every chart drawn from Prometheus.
    page = (report / "acceptance.html").read_text()
    assert len(re.findall(r"<tr><td>", page)) == 6 and page.count(">PASS<") == 6
    charts = re.findall(r'<svg[^>]*data-panel="([^"]+)"[^>]*>(.*?)</svg>', page, re.S)
    drawn = {name for name, svg in charts if re.search(r'<path d="M[^"]+" class="series"', svg)}
    assert drawn == {"latency", "rates", "books", "rss"}, drawn
    assert proc.returncode == 0 and "VERIFY PASS" in out
