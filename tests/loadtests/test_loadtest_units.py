"""Pure parts of the load-test kit: body checks, thresholds, verdicts, the verify table, argv."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from bookgen.acceptance.locust_run import LocustRun, parse_duration
from bookgen.acceptance.project import ROOT_ENV, Project, ProjectNotFound, find_project
from bookgen.acceptance.targets import AcceptanceTargets, load_targets
from bookgen.acceptance.verify import (
    Measured,
    acceptance_rows,
    nearest_rank,
    read_alerts,
    users_served,
)

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
        "users spawned",
    }
    assert targets.percentile({10: 94, 300: 6}, 0.95) == 300.0


def acceptance_targets() -> AcceptanceTargets:
    return AcceptanceTargets(1800.0, 0.95, 200.0, {"health": 200.0}, 10, 2**31, 2.0, 0.01, "t")


def test_verify_table_passes_and_fails_on_measured_figures() -> None:
    good = Measured(
        book_seconds=[120.0, 150.0], books_total=2, group_p95_ms={"health": 20.0},
        fail_ratio=0.0, requests=1000, max_users=10, rejections=0.0, rss_psutil=200 * 2**20,
        completed_full_in_window=2, completed_in_window=30, window_s=400.0, users_served=10,
        server_p95_ms=30.0, queue_had_room=True,
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


def good_measured(**changes: object) -> Measured:
    figures: dict[str, object] = dict(
        book_seconds=[120.0], books_total=1, group_p95_ms={"health": 20.0}, fail_ratio=0.0,
        requests=1000, max_users=10, users_served=10, rejections=0.0, queue_had_room=True,
        server_p95_ms=30.0, rss_psutil=2**28, completed_full_in_window=1, window_s=600.0,
    )  # fmt: skip
    figures.update(changes)
    return Measured(**figures)  # type: ignore[arg-type]


def failing_rows(m: Measured) -> list[str]:
    return [r.target for r in acceptance_rows(m, acceptance_targets()) if not r.ok]


def test_users_row_counts_what_the_service_served() -> None:
    assert failing_rows(good_measured()) == []
    users = "users served (service side)"
    # Locust spawned ten, but the service never served ten users at once.
    assert failing_rows(good_measured(users_served=7)) == [users]
    # A submission refused while the queue had room; or rejections not known at all.
    assert failing_rows(good_measured(rejections=1.0)) == [users]
    assert failing_rows(good_measured(rejections=None)) == [users]
    # The server's own p95 did not hold for those users (or is unknown).
    assert failing_rows(good_measured(server_p95_ms=250.0)) == [users]
    assert failing_rows(good_measured(server_p95_ms=None)) == [users]


def test_p95_row_fails_on_a_silent_group_or_a_disagreement() -> None:
    p95 = "API p95 (every route)"
    targets_two = AcceptanceTargets(
        1800.0, 0.95, 200.0, {"health": 200.0, "download": 200.0}, 10, 2**31, 2.0, 0.01, "t"
    )
    silent = [r for r in acceptance_rows(good_measured(), targets_two) if not r.ok]
    assert [r.target for r in silent] == [p95] and "no samples: download" in silent[0].note
    disagree = good_measured(disagreements=["p95: client 180 ms vs server 20 ms"])
    assert failing_rows(disagree) == [p95]
    assert failing_rows(good_measured(server_error="Prometheus unavailable")) == [p95]


def test_users_served_is_the_most_users_whose_books_the_service_was_serving_at_once() -> None:
    def job(
        job_id: str, owner: str | None, start: int, end: int | None, status: str = "completed"
    ) -> dict[str, str | None]:
        stamp = "2030-01-01T00:00:{:02d}+00:00"
        item = {"job_id": job_id, "owner": owner, "status": status}
        item["created_at"] = stamp.format(start)
        if end is not None:
            item["completed_at"] = stamp.format(end)
        return item

    t0 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    jobs = [
        # u1 is between books at 10-12 while u2 and u3 run: still a user being served.
        job("a1", "ip:u1", 1, 10), job("a2", "ip:u1", 12, 18),
        job("b", "ip:u2", 2, 4), job("c", "ip:u3", 4, 11),  # u2 ends as u3 starts
        job("d", "ip:u4", 5, None, "in_progress"),  # still held at the end of the window
        job("own", "ip:verify", 3, 8),  # the verify run's own book, not a user's
        job("x", "ip:u5", 6, None, "cancelled"),  # no end time: never counted
        job("early", "ip:u6", 0, 30),  # before the window
        job("cli", None, 15, 16),  # no owner: a user of its own
    ]  # fmt: skip
    assert users_served(jobs, {"own"}, t0 + 1, t0 + 20) == 3  # u1, u3, u4 at 5-10
    assert users_served(jobs, set(), t0 + 1, t0 + 20) == 4  # and the verify run at 5-8
    # Never three books held at one instant (u1 is between its books while u3's runs), but
    # three users served at once; counted as books without owners, two.
    gap = [job("p", "ip:u1", 1, 3), job("q", "ip:u1", 4, 20), job("r", "ip:u2", 2, 20)]
    gap.append(job("s", "ip:u3", 3, 4))
    assert users_served(gap, set(), t0, t0 + 20) == 3
    assert users_served([dict(j, owner=None) for j in gap], set(), t0, t0 + 20) == 2
    assert users_served([], set(), t0, t0 + 1) == 0


def test_project_found_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    # Outside a checkout: the checkout the package runs from (this editable install).
    assert find_project().root == ROOT
    # Inside any folder of a checkout: that checkout.
    copy = tmp_path / "copy"
    (copy / "loadtests").mkdir(parents=True)
    (copy / "slo.yaml").write_text("x")
    (copy / "loadtests" / "locustfile.py").write_text("x")
    (copy / "docs").mkdir()
    monkeypatch.chdir(copy / "docs")
    assert find_project().root == copy
    # BOOKGEN_ROOT beats the working directory; --project beats both.
    monkeypatch.setenv(ROOT_ENV, str(ROOT))
    assert find_project().root == ROOT
    assert find_project(copy).root == copy
    with pytest.raises(ProjectNotFound, match="--project"):
        find_project(tmp_path)


def test_targets_and_locust_paths_are_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project(ROOT)
    t = load_targets(project=project)
    assert str(ROOT / "slo.yaml") in t.source and t.min_users >= 1
    run = LocustRun("acceptance", "http://127.0.0.1:1", Path("rel"), project=project)
    assert run.report_dir == tmp_path / "rel"
    argv = run.argv()
    files = argv[argv.index("-f") + 1].split(",")
    assert files == [str(ROOT / "loadtests" / "locustfile.py"), str(ROOT / "loadtests/shapes.py")]
    assert argv[argv.index("--thresholds") + 1] == str(ROOT / "loadtests" / "thresholds.json")
    for flag in ("--html", "--gate-report", "--logfile"):
        assert Path(argv[argv.index(flag) + 1]).is_absolute()


def test_gate_fails_on_disagreement_beyond_tolerance() -> None:
    t = targets.Thresholds(0.01, {"health": 200.0}, None, None, "test")
    client = targets.RunSummary(
        {"health": targets.GroupFigures(1000, 0, 40.0)}, 1000, 0, 10.0, 10, 40.0
    )
    near = targets.ServerSide(p95_ms=20.0, error_ratio=0.0, requests=1100.0)
    near.disagreements = targets.compare(client, near)
    assert near.disagreements == [] and all(v.ok for v in targets.evaluate(client, t, server=near))
    for side, what in (
        (targets.ServerSide(p95_ms=150.0, error_ratio=0.0, requests=1000.0), "p95"),
        (targets.ServerSide(p95_ms=40.0, error_ratio=0.05, requests=1000.0), "error ratio"),
        (targets.ServerSide(p95_ms=40.0, error_ratio=0.0, requests=500.0), "requests"),
        (targets.ServerSide(p95_ms=None, error_ratio=None, requests=None), "p95"),
    ):
        side.disagreements = targets.compare(client, side)
        [failed] = [v for v in targets.evaluate(client, t, server=side) if not v.ok]
        assert failed.check == "client/server agree" and failed.note.startswith(what), side
    down = targets.ServerSide(error="Prometheus unavailable: URLError")
    assert [v.check for v in targets.evaluate(client, t, server=down) if not v.ok] == [
        "client/server agree"
    ]


def test_gate_fails_a_configured_group_without_samples() -> None:
    t = targets.Thresholds(0.01, {"health": 200.0, "download": 200.0}, None, None, "test")
    run = targets.RunSummary({"health": targets.GroupFigures(10, 0, 5.0)}, 10, 0, 10.0, 10)
    [failed] = [v for v in targets.evaluate(run, t) if not v.ok]
    assert failed.check == "p95 download" and failed.note == "no samples"
    # A user class that sends only some groups names them; the others are then not required.
    assert all(v.ok for v in targets.evaluate(run, t, groups=["health"]))


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
# The capacity search: only p95 or errors end it; an unsustained step is noted, not a breach.
assert shapes.step_breach(100, 0, 50.0, 200.0) == ""
assert shapes.step_breach(100, 2, 50.0, 200.0) == "2 failures"
assert shapes.step_breach(100, 0, 250.0, 200.0).startswith("p95 250 ms")
S = shapes.StepResult
steps = [S(10, 7, 1400, 0, 200.0, 9.0, 200.0, True), S(20, 7, 2500, 0, 360.0, 30.0, 400.0, True,
         False), S(30, 7, 2600, 0, 370.0, 300.0, 600.0, False, False, "p95 300 ms >= 200 ms")]
best, broke = shapes.knee(steps)
assert best is steps[1] and broke is steps[2]
assert shapes.knee(steps[:2]) == (steps[1], None)
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
