"""The time-to-detect table: filled by the tests, written and printed at the end of the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "e2e-ttd.json"

RESULTS: dict[str, Any] = {"scenarios": [], "clean_run": None}


def table(results: dict[str, Any]) -> str:
    """Seconds: `detected` counts from the fault being in place, `resolved` from its removal."""
    lines = [
        f"{'family':<14} {'alert':<31} {'for':>4} {'condition':>9} {'bound':>6} "
        f"{'detected':>8} {'resolved':>8} {'res.bound':>9}",
    ]
    for r in results["scenarios"]:
        detected = "-" if r["detected_s"] is None else f"{r['detected_s']:.1f}"
        resolved = "-" if r["resolved_s"] is None else f"{r['resolved_s']:.1f}"
        lines.append(
            f"{r['family']:<14} {r['alert']:<31} {r['for_s']:>4.0f} {r['condition_delay_s']:>9.0f} "
            f"{r['bound_s']:>6.1f} {detected:>8} {resolved:>8} {r['resolve_bound_s']:>9.1f}"
        )
    lines.append("bound = 2 x (for + scrape + evaluation + group_wait), after the condition delay")
    clean = results["clean_run"]
    if clean is not None:
        others = ", ".join(clean["alerts_other_than_watchdog"]) or "none"
        lines.append(f"clean run {clean['duration_s']:.0f} s: alerts other than Watchdog: {others}")
    return "\n".join(lines)
