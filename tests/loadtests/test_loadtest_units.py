"""Pure parts of the load-test kit: body checks, thresholds, verdicts, the verify table, argv."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bookgen.acceptance.locust_run import LocustRun, parse_duration
from bookgen.acceptance.targets import AcceptanceTargets
from bookgen.acceptance.verify import Measured, acceptance_rows, nearest_rank, read_alerts

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    """A loadtests/ module under a private name (loadtests import nothing from bookgen)."""
    spec = importlib.util.spec_from_file_location(f"lt_{name}", ROOT / "loadtests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


checks = load("checks")
targets = load("targets")


def test_a_200_with_a_wrong_body_fails() -> None:
    assert checks.check_health(200, {"status": "healthy", "timestamp": 1}) is None
    assert checks.check_health(200, {"status": "ok"}) is not None
    assert checks.check_status(200, {"status": "operational", "api_version": "v1"}) is not None
    assert (
        checks.check_generate(202, {"job_id": "a", "status": "pending", "character": "X"}, "X")
        is None
    )
    assert checks.check_generate(200, {"job_id": "a", "status": "pending", "character": "X"}, "X")
    assert checks.check_sources(200, {"total_sources": 2, "results": [{}]}, 2) is not None
    assert checks.check_list(200, {"items": [{"job_id": "a"}]}) is not None
    assert checks.check_download(200, {"content-type": "text/html"}, "x " * 100) is not None
    assert checks.check_metrics(200, "# nothing here") is not None
    assert checks.check_backpressure(429, {}) == "429 without Retry-After"
    assert checks.check_backpressure(429, {"Retry-After": "3"}) is None


def test_thresholds_missing_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(targets.ThresholdsError, match="bookgen slo generate"):
        targets.load_thresholds(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"p95_ms": {}}))
    with pytest.raises(targets.ThresholdsError, match="malformed"):
        targets.load_thresholds(bad)


def test_evaluate_flags_each_breach() -> None:
    t = targets.Thresholds(0.01, {"health": 200.0}, 3.0, 10, "test")
    g = targets.GroupFigures
    ok = targets.RunSummary({"health": g(100, 0, 20.0)}, 100, 0, 10.0, 10)
    assert all(v.ok for v in targets.evaluate(ok, t))
    slow = targets.RunSummary({"health": g(100, 0, 250.0)}, 100, 0, 10.0, 10)
    assert [v.check for v in targets.evaluate(slow, t) if not v.ok] == ["p95 health"]
    failing = targets.RunSummary({"health": g(100, 2, 20.0)}, 100, 2, 10.0, 10)
    assert [v.check for v in targets.evaluate(failing, t) if not v.ok] == ["fail ratio"]
    few = targets.RunSummary({"health": g(10, 0, 20.0)}, 10, 0, 10.0, 5)
    assert {v.check for v in targets.evaluate(few, t) if not v.ok} == {
        "throughput req/s",
        "concurrent users",
    }
    assert targets.percentile({10: 94, 300: 6}, 0.95) == 300.0


def acceptance_targets() -> AcceptanceTargets:
    return AcceptanceTargets(1800.0, 0.95, 200.0, {"health": 200.0}, 10, 2**31, 2.0, 0.01, "t")


def test_verify_table_passes_and_fails_on_measured_figures() -> None:
    good = Measured(
        book_seconds=[120.0, 150.0], books_total=2, group_p95_ms={"health": 20.0},
        fail_ratio=0.0, requests=1000, max_users=10, rejections=0.0, rss_psutil=200 * 2**20,
        completed_full_in_window=2, completed_in_window=30, window_s=400.0,
    )  # fmt: skip
    rows = acceptance_rows(good, acceptance_targets())
    assert [r.ok for r in rows] == [True] * 6, rows
    bad = Measured(
        book_seconds=[2000.0], books_total=2, books_unfinished=1, group_p95_ms={"health": 250.0},
        fail_ratio=0.02, requests=1000, max_users=9, rejections=3.0, rss_psutil=3 * 2**30,
        completed_full_in_window=0, window_s=400.0,
    )  # fmt: skip
    assert [r.ok for r in acceptance_rows(bad, acceptance_targets())] == [False] * 6
    assert nearest_rank([1.0, 2.0, 3.0], 0.95) == 3.0


def test_read_alerts(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    alert = {"labels": {"alertname": "Watchdog", "severity": "info"}, "startsAt": "t"}
    path.write_text(
        json.dumps({"alerts": [{**alert, "status": "firing"}]}) + "\n"
        + json.dumps({"alerts": [{**alert, "status": "resolved"}]}) + "\n"
    )  # fmt: skip
    [entry] = read_alerts(path)
    assert entry["alertname"] == "Watchdog" and entry["status"] == "resolved"


def test_profiles_build_locust_commands(tmp_path: Path) -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("soon")
    argv = LocustRun("stress", "http://127.0.0.1:1", tmp_path, users=5, duration_s=30).argv()
    assert "StressTestUser" in argv and argv[argv.index("--shape") + 1] == "step"
    assert argv[argv.index("--run-time") + 1] == "30s"
    assert "--html" in argv and "--csv" in argv and "--json-file" in argv


def test_shapes_in_a_subprocess() -> None:
    """The shape functions (importing Locust monkey-patches, so not in this process)."""
    import subprocess

    code = """
import sys
sys.path.insert(0, "loadtests")
import shapes
assert shapes.steady(5, 10, 10, 60) == (10, 10) and shapes.steady(61, 10, 10, 60) is None
assert [shapes.step(t, 30, 5, 60, 10, 10)[0] for t in (0, 10, 25, 59)] == [10, 20, 30, 30]
assert shapes.spike(0, 50, 5, 60)[0] == 10 and shapes.spike(30, 50, 5, 60)[0] == 50
assert shapes.soak(0, 10, 1, 600)[0] == 1 and shapes.soak(300, 10, 1, 600)[0] == 10
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
