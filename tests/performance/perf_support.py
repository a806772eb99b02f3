"""Shared state of the performance suite: the targets and the figures to print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BOOKS = 32  # kept in progress the whole time
IN_FLIGHT = 32  # requests always in flight (closed loop)
# "load": the closed-loop run (per route group), "capacity": the knee search.
RESULTS: dict[str, Any] = {}


def target_p95_ms(group: str) -> float:
    """The route group's p95 target: the generated thresholds, else slo.yaml's latency bound."""
    thresholds = ROOT / "loadtests" / "thresholds.json"
    if thresholds.is_file():
        return float(json.loads(thresholds.read_text())["p95_ms"][group])
    from bookgen.slo.spec import load_spec

    spec = load_spec(ROOT / "slo.yaml")
    latency = spec.slo(spec.targets.api_latency.slo).latency
    assert latency is not None
    return float(latency.le) * 1000.0
