"""Targets and verdicts of a load run: thresholds, per route group figures, the server's side.

Pure Python (no Locust import), so tests and tools can use it without gevent's monkey-patching.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.json")
# How far Locust's figures may stray from the server's before the gate fails. The client also
# counts the network, its own scheduling and wrong bodies, so the two never match exactly; beyond
# these, one of the two measurements is wrong and the run proves nothing.
P95_TOLERANCE_MS = 50.0  # p95 apart by more than this ...
P95_TOLERANCE_RATIO = 0.5  # ... and by more than this share of the larger one
ERROR_RATIO_TOLERANCE = 0.01  # error ratios apart by more than one point
REQUESTS_TOLERANCE = 0.2  # request counts apart by more than a fifth
TOLERANCE_TEXT = "within tolerance"


def percentile(times: dict[int, int], fraction: float) -> float | None:
    """The response time (ms) under which `fraction` of the counted requests fall."""
    total = sum(times.values())
    if total == 0:
        return None
    rank = math.ceil(fraction * total)
    seen = 0
    for value in sorted(times):
        seen += times[value]
        if seen >= rank:
            return float(value)
    return float(max(times))


class ThresholdsError(Exception):
    """The thresholds file is missing or malformed."""


@dataclass(frozen=True)
class Thresholds:
    fail_ratio_max: float
    p95_ms: dict[str, float]
    min_rps: float | None
    min_users: int | None
    source: str


@dataclass(frozen=True)
class GroupFigures:
    requests: int
    failures: int
    p95_ms: float | None


@dataclass
class RunSummary:
    groups: dict[str, GroupFigures]
    requests: int
    failures: int
    duration_s: float
    max_users: int
    p95_ms: float | None = None

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    check: str
    measured: float | None
    target: str
    ok: bool
    note: str = ""


@dataclass
class ServerSide:
    p95_ms: float | None = None
    error_ratio: float | None = None
    requests: float | None = None
    by_route_p95_ms: dict[str, float] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)
    error: str | None = None


def load_thresholds(path: Path) -> Thresholds:
    if not path.is_file():
        raise ThresholdsError(
            f"thresholds file {path} is missing: generate it with `bookgen slo generate` "
            "(it is derived from slo.yaml) or pass --thresholds PATH"
        )
    try:
        raw = json.loads(path.read_text())
        p95 = {str(k): float(v) for k, v in dict(raw["p95_ms"]).items()}
        min_rps = raw.get("min_rps")
        min_users = raw.get("min_users")
        return Thresholds(
            fail_ratio_max=float(raw["fail_ratio_max"]),
            p95_ms=p95,
            min_rps=None if min_rps is None else float(min_rps),
            min_users=None if min_users is None else int(min_users),
            source=str(raw.get("source", path.name)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ThresholdsError(f"thresholds file {path} is malformed: {exc!r}") from exc


def evaluate(
    summary: RunSummary,
    thresholds: Thresholds,
    min_rps: float | None = None,
    groups: list[str] | None = None,
    server: ServerSide | None = None,
) -> list[Verdict]:
    """One verdict per target; `min_rps` overrides the file's (for runs of a different size).

    Every route group the thresholds list (or `groups`, for a user class that exercises only
    some) must have samples: a group that never ran has not met its target. Given `server`, the
    client's and the server's figures must agree within the stated tolerances (`compare`).
    """
    verdicts: list[Verdict] = []
    required = set(thresholds.p95_ms) if groups is None else set(groups)
    for group in sorted(required | set(summary.groups)):
        figures = summary.groups.get(group)
        target = thresholds.p95_ms.get(group)
        goal = "-" if target is None else f"< {target:g} ms"
        if figures is None or figures.requests == 0 or figures.p95_ms is None:
            ok = group not in required
            verdicts.append(Verdict(f"p95 {group}", None, goal, ok, "no samples"))
        elif target is None:
            verdicts.append(Verdict(f"p95 {group}", figures.p95_ms, goal, True, "no target"))
        else:
            verdicts.append(Verdict(f"p95 {group}", figures.p95_ms, goal, figures.p95_ms < target))
    ok = summary.requests > 0 and summary.fail_ratio <= thresholds.fail_ratio_max
    note = "" if summary.requests else "no requests"
    verdicts.append(
        Verdict("fail ratio", summary.fail_ratio, f"<= {thresholds.fail_ratio_max:g}", ok, note)
    )
    floor = thresholds.min_rps if min_rps is None else min_rps
    if floor is not None:
        verdicts.append(
            Verdict("throughput req/s", summary.rps, f">= {floor:g}", summary.rps >= floor)
        )
    if thresholds.min_users is not None:
        verdicts.append(
            Verdict(
                "users spawned",
                float(summary.max_users),
                f">= {thresholds.min_users}",
                summary.max_users >= thresholds.min_users,
                "Locust's count; the service-side count is bookgen verify's",
            )
        )
    if server is not None:
        if server.error is not None:
            verdicts.append(
                Verdict("client/server agree", None, TOLERANCE_TEXT, False, server.error)
            )
        else:
            found = len(server.disagreements)
            verdicts.append(
                Verdict(
                    "client/server agree",
                    float(found),
                    TOLERANCE_TEXT,
                    found == 0,
                    "; ".join(server.disagreements),
                )
            )
    return verdicts


# --- Prometheus, the server's side ---------------------------------------------------------
def _prom_scalar(base_url: str, query: str, at: float, timeout_s: float = 5.0) -> list[Any]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    url = f"{base_url.rstrip('/')}/api/v1/query?{params}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        payload = json.load(response)
    if payload.get("status") != "success":
        raise RuntimeError(f"Prometheus query failed: {payload.get('error')}")
    result: list[Any] = payload["data"]["result"]
    return result


def _value(result: list[Any]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


def compare(client: RunSummary, side: ServerSide) -> list[str]:
    """Where Locust's and the server's figures disagree beyond the tolerances above."""
    found: list[str] = []
    overall = client.p95_ms
    if side.p95_ms is not None and overall is not None:
        gap = abs(overall - side.p95_ms)
        if gap > P95_TOLERANCE_MS and gap > P95_TOLERANCE_RATIO * max(overall, side.p95_ms):
            found.append(
                f"p95: client {overall:.0f} ms vs server {side.p95_ms:.0f} ms "
                f"(allowed: {P95_TOLERANCE_MS:g} ms or {P95_TOLERANCE_RATIO:.0%} apart)"
            )
    elif client.requests and side.p95_ms is None:
        found.append("p95: the server recorded no request durations in the run's window")
    if side.error_ratio is not None:
        if abs(client.fail_ratio - side.error_ratio) > ERROR_RATIO_TOLERANCE:
            found.append(
                f"error ratio: client {client.fail_ratio:.4f} vs server 5xx "
                f"{side.error_ratio:.4f} (allowed: {ERROR_RATIO_TOLERANCE:g} apart)"
            )
    elif client.requests:
        found.append("error ratio: the server counted no requests in the run's window")
    if (
        side.requests is not None
        and client.requests
        and abs(side.requests - client.requests) > REQUESTS_TOLERANCE * client.requests
    ):
        found.append(
            f"requests: client {client.requests} vs server {side.requests:.0f} "
            f"(allowed: {REQUESTS_TOLERANCE:.0%} apart)"
        )
    return found


def server_side(base_url: str, start: float, end: float, client: RunSummary) -> ServerSide:
    """Server-measured p95 and 5xx ratio over [start, end], and where they disagree."""
    window = f"{max(1, math.ceil(end - start))}s"
    sel = 'job="bookgen"'
    bucket = f"increase(bookgen_http_request_duration_seconds_bucket{{{sel}}}[{window}])"
    side = ServerSide()
    try:
        p95 = _value(
            _prom_scalar(base_url, f"histogram_quantile(0.95, sum by (le) ({bucket}))", end)
        )
        side.p95_ms = None if p95 is None else p95 * 1000.0
        for row in _prom_scalar(
            base_url, f"histogram_quantile(0.95, sum by (le, route) ({bucket}))", end
        ):
            value = float(row["value"][1])
            if not math.isnan(value):
                side.by_route_p95_ms[row["metric"].get("route", "?")] = value * 1000.0
        total = _value(
            _prom_scalar(
                base_url, f"sum(increase(bookgen_http_requests_total{{{sel}}}[{window}]))", end
            )
        )
        errors = _value(
            _prom_scalar(
                base_url,
                f'sum(increase(bookgen_http_requests_total{{{sel},status=~"5.."}}[{window}]))',
                end,
            )
        )
        side.requests = total
        if total:
            side.error_ratio = (errors or 0.0) / total
    except Exception as exc:  # an unreachable Prometheus is a failed cross-check, not a crash
        side.error = f"Prometheus unavailable: {type(exc).__name__}: {exc}"
        return side
    side.disagreements = compare(client, side)
    return side


# --- reporting --------------------------------------------------------------------------------
def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def render(verdicts: list[Verdict], server: ServerSide | None, client_p95: float | None) -> str:
    lines = [f"{'check':<24} {'measured':>12} {'target':>14}  result"]
    for v in verdicts:
        measured = "-" if v.measured is None else f"{v.measured:.4g}"
        result = "PASS" if v.ok else "FAIL"
        lines.append(f"{v.check:<24} {measured:>12} {v.target:>14}  {result} {v.note}".rstrip())
    if server is not None:
        lines.append("")
        if server.error:
            lines.append(f"server side (Prometheus): unavailable: {server.error}")
        else:
            lines.append(
                f"server side (Prometheus): p95 {fmt(server.p95_ms)} ms, 5xx ratio "
                f"{fmt(server.error_ratio)}, requests {fmt(server.requests)}"
            )
            lines.append(f"client side (Locust):     p95 {fmt(client_p95)} ms (all groups)")
            for route, p95 in sorted(server.by_route_p95_ms.items()):
                lines.append(f"  server p95 {route:<44} {p95:8.1f} ms")
            for text in server.disagreements:
                lines.append(f"client/server disagreement beyond tolerance: {text}")
    return "\n".join(lines)
