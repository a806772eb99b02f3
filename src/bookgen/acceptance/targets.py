"""The six acceptance targets, read from slo.yaml and the generated load-test thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bookgen.acceptance.project import Project, find_project
from bookgen.slo.spec import load_spec


@dataclass(frozen=True)
class AcceptanceTargets:
    book_time_s: float  # a completed book within this (p95)
    book_quantile: float
    api_p95_ms: float  # every route group's p95 under this
    p95_by_group_ms: dict[str, float]
    min_users: int
    max_rss_bytes: int  # per worker process
    min_books_per_hour: float
    max_error_ratio: float
    source: str


def _need(project: Project | None) -> Project:
    assert project is not None, "found above whenever a path is missing"
    return project


def load_targets(
    slo_path: Path | None = None,
    thresholds_path: Path | None = None,
    project: Project | None = None,
) -> AcceptanceTargets:
    """Every number comes from slo.yaml (the spec model) or the thresholds generated from it.

    Explicit paths win; the others come from the project (found as `find_project` says).
    """
    if slo_path is None or thresholds_path is None:
        project = project or find_project()
    slo_file = (slo_path or _need(project).slo).resolve()
    spec = load_spec(slo_file)
    thresholds_file = (thresholds_path or _need(project).thresholds).resolve()
    thresholds = json.loads(thresholds_file.read_text())
    p95 = {str(k): float(v) for k, v in thresholds["p95_ms"].items()}
    latency = spec.targets.api_latency
    latency_slo = spec.slo(latency.slo).latency
    api_ms = float(latency_slo.le) * 1000.0 if latency_slo is not None else max(p95.values())
    error_slo = spec.slo(spec.targets.error_rate.slo)
    return AcceptanceTargets(
        book_time_s=spec.targets.book_time.max_seconds,
        book_quantile=spec.targets.book_time.quantile,
        api_p95_ms=api_ms,
        p95_by_group_ms=p95,
        min_users=spec.targets.concurrent_users.min_users,
        max_rss_bytes=spec.targets.memory.max_bytes,
        min_books_per_hour=spec.targets.throughput.min_per_hour,
        max_error_ratio=round(1.0 - error_slo.objective, 6),
        source=f"{slo_file} + {thresholds_file}",
    )
