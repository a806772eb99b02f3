"""`bookgen up` from the command line: URLs printed, `bookgen status` reads it, Ctrl-C ends all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bookgen.stack import binaries

pytestmark = pytest.mark.e2e


CLI = "import sys; from bookgen.cli import main; sys.exit(main())"


def bookgen(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def test_up_prints_urls_status_shows_it_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    try:
        binaries.find("prometheus")
        binaries.find("alertmanager")
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))
    run_dir = tmp_path / "run"
    out = (tmp_path / "up.out").open("w")
    up = subprocess.Popen(
        bookgen("up", "--workers", "2", "--run-dir", str(run_dir)),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in (tmp_path / "up.out").read_text():
            assert up.poll() is None, (tmp_path / "up.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.5)
        printed = (tmp_path / "up.out").read_text()
        for name in ("api", "prometheus", "alertmanager", "receiver", "sim", "worker 1 metrics"):
            assert f"  {name} " in printed, printed
        state = json.loads((run_dir / "stack.json").read_text())
        pids = [c["pid"] for c in state["components"].values()]
        tree = [psutil.Process(pid) for pid in pids]
        tree += [child for proc in list(tree) for child in proc.children(recursive=True)]
        assert len(tree) >= len(pids) + 2  # the API's two workers at least
        status = subprocess.run(
            bookgen("status", "--run-dir", str(run_dir)), capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "Watchdog" in status.stdout and "down" not in status.stdout, status.stdout
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        up.wait(timeout=60)
    assert "stopped; nothing left running." in (tmp_path / "up.out").read_text()
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], alive
    assert not (run_dir / "stack.json").exists()
    missing = subprocess.run(bookgen("status", "--run-dir", str(run_dir)), capture_output=True)
    assert missing.returncode == 1
