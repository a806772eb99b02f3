"""Load shapes: steady, step, spike, soak, and the capacity search (a step shape that measures).

Add this file to the run and pick the shape by option:
`locust -f loadtests/locustfile.py,loadtests/shapes.py --shape step --users 100 --run-time 5m`.
`--users`, `--spawn-rate` and `--run-time` set the peak, ramp and length of every shape.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events
from locust.stats import calculate_response_time_percentile

log = logging.getLogger("bookgen.shapes")
SHAPES = ("steady", "step", "spike", "soak", "capacity")
Tick = tuple[int, float] | None
# A capacity step that served less than this share of the offered rate is marked "not
# sustained": the server (or the load generator) is saturated. The search still climbs, since
# saturation shows as rising latency at the next step; only p95 or errors end it.
SUSTAINED = 0.9


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: Any) -> None:
    group = parser.add_argument_group("BookGen shapes")
    group.add_argument("--shape", choices=SHAPES, default="steady", help="load shape")
    group.add_argument("--step-users", type=int, default=10, help="users added per step")
    group.add_argument("--step-time", type=float, default=30.0, help="seconds per step")
    group.add_argument(
        "--step-settle", type=float, default=3.0, help="capacity: seconds ignored after a step"
    )
    group.add_argument(
        "--capacity-p95-ms", type=float, default=200.0, help="capacity: p95 a step must stay under"
    )
    group.add_argument("--capacity-report", default="", help="capacity: write the steps as JSON")


def steady(t: float, users: int, rate: float, duration: float) -> Tick:
    return (users, rate) if t < duration else None


def step(t: float, users: int, rate: float, duration: float, add: int, every: float) -> Tick:
    if t >= duration:
        return None
    return (min(users, add * (int(t // every) + 1)), rate)


def spike(t: float, users: int, rate: float, duration: float) -> Tick:
    """A fifth of the peak, the peak at once for a sixth of the run, then back to a fifth."""
    if t >= duration:
        return None
    base = max(1, users // 5)
    if duration * 0.4 <= t < duration * 0.4 + duration / 6:
        return (users, max(rate, float(users)))  # all at once: that is the spike
    return (base, max(rate, float(users)))


def soak(t: float, users: int, rate: float, duration: float) -> Tick:
    """A slow ramp over the first tenth, then the same load for the rest of a long run."""
    if t >= duration:
        return None
    ramp = max(1.0, duration * 0.1)
    return (max(1, min(users, round(users * t / ramp) + 1)), rate)


@dataclass(frozen=True)
class StepResult:
    users: int
    seconds: float
    requests: int
    failures: int
    rps: float
    p95_ms: float | None
    offered_rps: float
    ok: bool
    sustained: bool = True
    breach: str = ""  # why the step failed: p95, errors, no requests


def step_breach(requests: int, failures: int, p95: float | None, limit_ms: float) -> str:
    """Why a step breaks the capacity criterion ("" when it holds)."""
    if requests == 0 or p95 is None:
        return "no requests served"
    if failures:
        return f"{failures} failures"
    if p95 >= limit_ms:
        return f"p95 {p95:.0f} ms >= {limit_ms:g} ms"
    return ""


def knee(steps: list[StepResult]) -> tuple[StepResult | None, StepResult | None]:
    """(the best step before the first breach, the first breaching step)."""
    best: StepResult | None = None
    for s in steps:
        if not s.ok:
            return best, s
        if best is None or s.rps > best.rps:
            best = s
    return best, None


@dataclass
class _Snapshot:
    at: float
    requests: int
    failures: int
    times: dict[int, int]


class ProfileShape(LoadTestShape):
    use_common_options = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.steps: list[StepResult] = []
        self._step_index = -1
        self._snapshot: _Snapshot | None = None
        self._done = False

    def _figures(self) -> tuple[int, float, float, str, Any]:
        options = self.runner.environment.parsed_options if self.runner else None
        users = int(getattr(options, "num_users", None) or 10)
        rate = float(getattr(options, "spawn_rate", None) or users)
        duration = float(getattr(options, "run_time", None) or 60)
        name = str(getattr(options, "shape", "steady"))
        return users, rate, duration, name, options

    def tick(self) -> Tick:
        users, rate, duration, name, options = self._figures()
        t = float(self.get_run_time())  # type: ignore[no-untyped-call]
        if name == "step":
            return step(t, users, rate, duration, options.step_users, options.step_time)
        if name == "spike":
            return spike(t, users, rate, duration)
        if name == "soak":
            return soak(t, users, rate, duration)
        if name == "capacity":
            return self._capacity(t, users, duration, options)
        return steady(t, users, rate, duration)

    # --- capacity: step up, measure each step after it settles, stop at the first breach ----
    def _environment(self) -> Any:
        assert self.runner is not None, "a shape ticks only inside a runner"
        return self.runner.environment

    def _take(self) -> _Snapshot:
        total = self._environment().stats.total
        return _Snapshot(
            time.monotonic(), total.num_requests, total.num_failures, dict(total.response_times)
        )

    def _close_step(self, users: int, limit_ms: float) -> StepResult | None:
        if self._snapshot is None:
            return None
        now = self._take()
        before = self._snapshot
        times = {k: v - before.times.get(k, 0) for k, v in now.times.items()}
        times = {k: v for k, v in times.items() if v > 0}
        counted = sum(times.values())
        seconds = now.at - before.at
        p95 = float(calculate_response_time_percentile(times, counted, 0.95)) if counted else None
        requests, failures = now.requests - before.requests, now.failures - before.failures
        options = self._environment().parsed_options
        offered = users * float(getattr(options, "capacity_user_rate", 0.0) or 0.0)
        sustained = requests / seconds >= SUSTAINED * offered
        breach = step_breach(requests, failures, p95, limit_ms)
        result = StepResult(
            users,
            round(seconds, 2),
            requests,
            failures,
            requests / seconds,
            p95,
            offered,
            not breach,
            sustained,
            breach,
        )
        self.steps.append(result)
        log.info("capacity step: %s", result)
        print(
            f"capacity step: {users:4d} users  {result.rps:8.1f} req/s  p95 "
            f"{'-' if p95 is None else f'{p95:.0f}'} ms  failures {failures}  "
            f"{'ok' if not breach else 'BREACH ' + breach}"
            f"{'' if sustained else ' (offered rate not sustained)'}",
            flush=True,
        )
        return result

    def _capacity(self, t: float, users: int, duration: float, options: Any) -> Tick:
        every = float(options.step_time)
        index = int(t // every)
        step_users = options.step_users * (index + 1)
        limit = float(options.capacity_p95_ms)
        if self._done:
            return None
        if index != self._step_index:
            closed = self._close_step(options.step_users * (self._step_index + 1), limit)
            self._snapshot = None
            self._step_index = index
            if (closed is not None and not closed.ok) or step_users > users or t >= duration:
                self._done = True
                self._finish(options)
                return None
        if self._snapshot is None and t - index * every >= options.step_settle:
            self._snapshot = self._take()
        return (step_users, float(max(options.step_users, 1)) * 4)

    def _finish(self, options: Any) -> None:
        best, broke = knee(self.steps)
        figure = 0.0 if best is None else best.rps
        print(
            f"CAPACITY: {figure:.0f} req/s sustained with p95 < "
            f"{options.capacity_p95_ms:g} ms and no failures"
            + ("" if best is None else f" ({best.users} users, p95 {best.p95_ms:.0f} ms)"),
            flush=True,
        )
        if broke is not None:
            print(
                f"KNEE: after {figure:.0f} req/s; at {broke.users} users ({broke.offered_rps:.0f} "
                f"offered, {broke.rps:.0f} served) {broke.breach}",
                flush=True,
            )
        else:
            print("KNEE: not reached: the search stopped at its user ceiling or time", flush=True)
        if options.capacity_report:
            Path(options.capacity_report).parent.mkdir(parents=True, exist_ok=True)
            Path(options.capacity_report).write_text(
                json.dumps(
                    {
                        "capacity_rps": figure,
                        "p95_limit_ms": options.capacity_p95_ms,
                        "best": None if best is None else asdict(best),
                        "breaking_step": None if broke is None else asdict(broke),
                        "steps": [asdict(s) for s in self.steps],
                    },
                    indent=2,
                )
            )
