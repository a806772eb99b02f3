"""The Locust gate turns a breached target into a non-zero exit code, and a healthy run into 0.

Each case runs real Locust (headless, a few seconds) against a tiny fake API on a free 127.0.0.1
port; the cases run side by side so the whole file takes about 15 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_api import fake_api

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
GROUPS = ["health", "ready", "status", "generate", "job-status"]
GROUPS += ["download", "list", "cancel", "sources", "metrics"]


def thresholds(tmp_path: Path, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "fail_ratio_max": 0.01,
        # Wide margins both ways (healthy ~10 ms, slow 1.5 s), so a busy shared machine cannot
        # turn a healthy run red or a slow one green.
        "p95_ms": dict.fromkeys(GROUPS, 800.0),
        "min_rps": 1.0,
        "min_users": 4,
        "source": "test",
    }
    data.update(overrides)
    path = tmp_path / f"thresholds-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return path


def locust(host: str, thresholds_path: Path, report: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "BookGenUser", "--headless",
        "--users", "5", "--spawn-rate", "5", "--run-time", "7s", "--stop-timeout", "2",
        "--host", host, "--thresholds", str(thresholds_path), "--gate-report", str(report),
        "--only-summary", "--book-timeout", "5", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )


@pytest.mark.timeout(90)
def test_gate_exit_codes(tmp_path: Path) -> None:
    good = thresholds(tmp_path)
    cases: dict[str, tuple[str, Path, tuple[str, ...], int]] = {
        # name: (fake API mode, thresholds, extra args, expected exit code)
        "healthy": ("healthy", good, (), 0),
        "slow": ("slow", good, (), 1),
        "errors": ("errors", good, (), 1),
        "wrong-body": ("wrong-body", good, (), 1),
        "throughput": ("healthy", thresholds(tmp_path, min_rps=1000.0), (), 1),
        "users": ("healthy", thresholds(tmp_path, min_users=50), (), 1),
        "no-thresholds": ("healthy", tmp_path / "missing.json", (), 2),
    }
    results: dict[str, tuple[int, str]] = {}
    with ExitStack() as stack:
        procs = {}
        for name, (mode, path, extra, _) in cases.items():
            host = stack.enter_context(fake_api(mode, slow_s=1.5, error_every=4))
            procs[name] = locust(host, path, tmp_path / f"{name}.json", *extra)
        deadline = time.monotonic() + 75
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            results[name] = (proc.returncode, out)
    wrong = {
        name: (code, results[name][1][-1500:])
        for name, (*_, code) in cases.items()
        if results[name][0] != code
    }
    assert not wrong, f"unexpected exit codes: {wrong}"
    # The reports say why: each breach names the failing check.
    healthy = json.loads((tmp_path / "healthy.json").read_text())
    assert healthy["passed"] and healthy["failures"] == 0 and healthy["requests"] >= 5, healthy
    slow = json.loads((tmp_path / "slow.json").read_text())
    assert any(v["check"].startswith("p95") and not v["ok"] for v in slow["verdicts"])
    for name in ("errors", "wrong-body"):
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["fail_ratio"] > 0.01
    throughput = json.loads((tmp_path / "throughput.json").read_text())
    failed = [v["check"] for v in throughput["verdicts"] if not v["ok"]]
    assert failed == ["throughput req/s"]
    assert "thresholds file" in results["no-thresholds"][1]
