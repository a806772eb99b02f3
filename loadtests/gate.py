"""The gate: on quit, compare the run with the thresholds generated from slo.yaml; set exit code.

Exit codes: 0 every target met, 1 a target breached, 2 no usable thresholds file. Checks: p95 per
route group (`name=` values; a group the thresholds list that got no samples fails, or only the
groups `--gate-groups` names, for a user class that exercises some), the overall fail ratio, the
minimum throughput and the minimum number of users spawned. Given `--prometheus-url`, the
server-side p95, error ratio and request count for the run's window are read from Prometheus and
printed next to the client's figures; a disagreement beyond the tolerances in `targets.py` (or a
Prometheus that cannot answer) fails the gate, since then one of the two measurements is wrong.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import RequestStats

from targets import (
    DEFAULT_THRESHOLDS,
    GroupFigures,
    RunSummary,
    Thresholds,
    ThresholdsError,
    evaluate,
    load_thresholds,
    percentile,
    render,
    server_side,
)

log = logging.getLogger("bookgen.gate")
EXIT_PASS, EXIT_BREACH, EXIT_NO_THRESHOLDS = 0, 1, 2


def summarize(stats: RequestStats, duration_s: float, max_users: int) -> RunSummary:
    """Per route group figures; entries sharing a name (several methods) are merged."""
    merged: dict[str, tuple[int, int, dict[int, int]]] = {}
    for (name, _method), entry in stats.entries.items():
        requests, failures, times = merged.get(name, (0, 0, {}))
        for rounded, count in entry.response_times.items():
            times[rounded] = times.get(rounded, 0) + count
        merged[name] = (requests + entry.num_requests, failures + entry.num_failures, times)
    groups = {
        name: GroupFigures(requests, failures, percentile(times, 0.95))
        for name, (requests, failures, times) in merged.items()
    }
    return RunSummary(
        groups=groups,
        requests=stats.total.num_requests,
        failures=stats.total.num_failures,
        duration_s=duration_s,
        max_users=max_users,
        p95_ms=percentile(dict(stats.total.response_times), 0.95),
    )


# --- Locust wiring ----------------------------------------------------------------------------
@dataclass
class _RunState:
    thresholds: Thresholds | None = None
    error: str | None = None
    started: float | None = None
    stopped: float | None = None
    max_users: int = 0


_state = _RunState()
_registered: list[bool] = []


def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("BookGen gate")
    group.add_argument(
        "--thresholds", default=str(DEFAULT_THRESHOLDS), help="thresholds JSON (from slo.yaml)"
    )
    group.add_argument(
        "--gate-min-rps",
        type=float,
        default=None,
        help="override the file's min_rps (e.g. for a run of another size)",
    )
    group.add_argument(
        "--gate-groups",
        default="",
        help="comma-separated route groups that must have samples, or 'none' (default: every "
        "group in the thresholds file)",
    )
    group.add_argument("--gate-report", default="", help="write the gate's verdicts as JSON here")
    group.add_argument(
        "--prometheus-url", default="", help="compare with server-side figures from Prometheus"
    )
    group.add_argument(
        "--prometheus-settle",
        type=float,
        default=3.0,
        help="seconds to wait for a last scrape before querying Prometheus",
    )
    group.add_argument("--no-gate", action="store_true", help="report only; exit code untouched")


def _on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None or getattr(options, "no_gate", False):
        return
    try:
        _state.thresholds = load_thresholds(Path(options.thresholds))
        log.info(
            "gate: thresholds from %s (source %s)", options.thresholds, _state.thresholds.source
        )
    except ThresholdsError as exc:
        _state.error = str(exc)
        log.error("gate: %s", exc)


def _is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if _is_worker(environment):
        return
    _state.started = time.time()
    runner = environment.runner
    if _state.error is not None and runner is not None:
        log.error("gate: stopping at once: %s", _state.error)
        gevent.spawn_later(0.1, runner.quit)
        return

    def sample() -> None:
        while runner is not None and runner.state not in ("stopped", "quitting"):
            _state.max_users = max(_state.max_users, runner.user_count)
            gevent.sleep(0.5)

    gevent.spawn(sample)


def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if not _is_worker(environment):
        _state.stopped = time.time()
        if environment.runner is not None:
            _state.max_users = max(_state.max_users, environment.runner.user_count)


def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if _is_worker(environment) or options is None or getattr(options, "no_gate", False):
        return
    if _state.thresholds is None:
        print(f"\nGATE FAIL (exit {EXIT_NO_THRESHOLDS}): {_state.error}", flush=True)
        environment.process_exit_code = EXIT_NO_THRESHOLDS
        return
    start = _state.started or environment.stats.total.start_time
    end = _state.stopped or time.time()
    summary = summarize(environment.stats, end - start, _state.max_users)
    server = None
    if options.prometheus_url:
        time.sleep(max(0.0, options.prometheus_settle))
        server = server_side(options.prometheus_url, start, end, summary)
    named = [g.strip() for g in str(options.gate_groups).split(",") if g.strip()]
    groups = [] if named == ["none"] else (named or None)
    verdicts = evaluate(summary, _state.thresholds, options.gate_min_rps, groups, server)
    passed = all(v.ok for v in verdicts)
    role = "master" if isinstance(environment.runner, MasterRunner) else "local"
    print(
        f"\nBookGen gate ({role}; thresholds from {_state.thresholds.source}; "
        f"{summary.requests} requests in {summary.duration_s:.1f} s, "
        f"max {summary.max_users} users)\n{render(verdicts, server, summary.p95_ms)}\n"
        f"GATE {'PASS' if passed else 'FAIL'}",
        flush=True,
    )
    if options.gate_report:
        report = {
            "passed": passed,
            "thresholds": asdict(_state.thresholds),
            "window": {"start": start, "end": end},
            "requests": summary.requests,
            "failures": summary.failures,
            "fail_ratio": summary.fail_ratio,
            "rps": summary.rps,
            "max_users": summary.max_users,
            "p95_ms_overall": summary.p95_ms,
            "groups": {k: asdict(v) for k, v in summary.groups.items()},
            "verdicts": [asdict(v) for v in verdicts],
            "server": None if server is None else asdict(server),
        }
        Path(options.gate_report).parent.mkdir(parents=True, exist_ok=True)
        Path(options.gate_report).write_text(json.dumps(report, indent=2))
    environment.process_exit_code = EXIT_PASS if passed else EXIT_BREACH


def register() -> None:
    """Attach the gate to Locust's events (once)."""
    if _registered:
        return
    _registered.append(True)
    events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
    events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
    events.test_start.add_listener(_on_test_start)  # type: ignore[no-untyped-call]
    events.test_stop.add_listener(_on_test_stop)  # type: ignore[no-untyped-call]
    events.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]
