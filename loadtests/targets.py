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
    summary: RunSummary, thresholds: Thresholds, min_rps: float | None = None
) -> list[Verdict]:
    """One verdict per target; `min_rps` overrides the file's (for runs of a different size)."""
    verdicts: list[Verdict] = []
    for group, figures in sorted(summary.groups.items()):
        target = thresholds.p95_ms.get(group)
        if target is None:
            verdicts.append(Verdict(f"p95 {group}", figures.p95_ms, "-", True, "no target"))
        elif figures.p95_ms is None:
            verdicts.append(Verdict(f"p95 {group}", None, f"< {target:g} ms", True, "no data"))
        else:
            ok = figures.p95_ms < target
            verdicts.append(Verdict(f"p95 {group}", figures.p95_ms, f"< {target:g} ms", ok))
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
                "concurrent users",
                float(summary.max_users),
                f">= {thresholds.min_users}",
                summary.max_users >= thresholds.min_users,
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
    except Exception as exc:  # Prometheus is advisory here: report, never crash the gate
        side.error = f"{type(exc).__name__}: {exc}"
        return side
    client_p95 = max((g.p95_ms or 0.0 for g in client.groups.values()), default=0.0)
    overall = client.p95_ms
    if side.p95_ms is not None and overall is not None:
        gap = abs(overall - side.p95_ms)
        if gap > 50.0 and gap > 0.5 * max(overall, side.p95_ms):
            side.disagreements.append(
                f"p95: client {overall:.0f} ms vs server {side.p95_ms:.0f} ms "
                f"(worst client group {client_p95:.0f} ms)"
            )
    if side.error_ratio is not None and abs(client.fail_ratio - side.error_ratio) > 0.01:
        side.disagreements.append(
            f"error ratio: client {client.fail_ratio:.4f} vs server 5xx {side.error_ratio:.4f}"
        )
    if (
        side.requests is not None
        and client.requests
        and abs(side.requests - client.requests) > 0.2 * client.requests
    ):
        side.disagreements.append(
            f"requests: client {client.requests} vs server {side.requests:.0f}"
        )
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
                lines.append(f"WARNING large client/server disagreement: {text}")
    return "\n".join(lines)
