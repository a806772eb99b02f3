"""The Locust gate turns a breached target into a non-zero exit code, and a healthy run into 0.

Each case runs real Locust (headless, a few seconds) against a tiny fake API on a free 127.0.0.1
port; the cases run five at a time, so the whole file takes about 30 s.
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
from fake_api import fake_api, fake_prometheus

from bookgen.stack.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
GROUPS = ["health", "ready", "status", "generate", "job-status"]
GROUPS += ["download", "list", "cancel", "sources", "metrics"]


def thresholds(tmp_path: Path, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "fail_ratio_max": 0.01,
        # Wide margins both ways (healthy ~10 ms, slow 2.5 s), so a busy shared machine cannot
        # turn a healthy run red or a slow one green.
        "p95_ms": dict.fromkeys(GROUPS, 1200.0),
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
    if "--gate-groups" not in extra:  # a 7 s run of 5 users on a busy machine may miss any group
        argv += ["--gate-groups", "none"]
    # Not the checkout: the locustfile's folder must be enough for its imports.
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=report.parent
    )


@pytest.mark.timeout(200)
def test_gate_exit_codes(tmp_path: Path) -> None:
    good = thresholds(tmp_path)
    nobody = f"http://127.0.0.1:{free_port()}"  # a Prometheus that is not there
    prometheus = {"disagree": "", "no-prometheus": nobody}
    cases: dict[str, tuple[str, Path, tuple[str, ...], int]] = {
        # name: (fake API mode, thresholds, extra args, expected exit code)
        "healthy": ("healthy", good, (), 0),
        "slow": ("slow", good, (), 1),
        "errors": ("errors", good, (), 1),
        "wrong-body": ("wrong-body", good, (), 1),
        "throughput": ("healthy", thresholds(tmp_path, min_rps=1000.0), (), 1),
        "users": ("healthy", thresholds(tmp_path, min_users=50), (), 1),
        "no-thresholds": ("healthy", tmp_path / "missing.json", (), 2),
        # A route group that must have samples and got none.
        "no-samples": ("healthy", good, ("--gate-groups", "never-called"), 1),
        # The server's figures (from Prometheus) disagree with Locust's, or cannot be read.
        "disagree": ("healthy", good, ("--prometheus-settle", "0"), 1),
        "no-prometheus": ("healthy", good, ("--prometheus-settle", "0"), 1),
    }
    results: dict[str, tuple[int, str]] = {}
    names = list(cases)
    # A handful at a time: ten Locust processes starting at once on two shared cores would slow
    # even the healthy fake API past its bound.
    for batch in (names[:5], names[5:]):
        with ExitStack() as stack:
            # Every answer 30: a p95 of 30 s, 30 requests and an error ratio of 30 "per one".
            prometheus["disagree"] = stack.enter_context(fake_prometheus(30.0))
            procs = {}
            for name in batch:
                mode, path, extra, _ = cases[name]
                host = stack.enter_context(fake_api(mode, slow_s=2.5, error_every=4))
                if name in prometheus:
                    extra = (*extra, "--prometheus-url", prometheus[name])
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
    no_samples = json.loads((tmp_path / "no-samples.json").read_text())
    assert [v["check"] for v in no_samples["verdicts"] if not v["ok"]] == ["p95 never-called"]
    for name, why in (("disagree", "p95: client"), ("no-prometheus", "Prometheus unavailable")):
        report = json.loads((tmp_path / f"{name}.json").read_text())
        [failed] = [v for v in report["verdicts"] if not v["ok"]]
        assert failed["check"] == "client/server agree" and why in failed["note"], report
