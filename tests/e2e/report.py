"""The time-to-detect table: filled by the tests, written and printed at the end of the session.

One row per alert rule (alertname and severity) of the fast-profile rules file but the Watchdog;
`missing` names the rules no scenario has proven yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "e2e-ttd.json"
FAST_RULES = ROOT / "alerts" / "bookgen.fast.rules.yml"
WATCHDOG = "Watchdog"

RESULTS: dict[str, Any] = {"scenarios": [], "clean_run": None}


def rule_alerts(path: Path = FAST_RULES) -> set[tuple[str, str]]:
    """(alertname, severity) of every alert rule in the rules file but the Watchdog."""
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return {
        (str(rule["alert"]), str(rule["labels"]["severity"]))
        for group in groups
        for rule in group["rules"]
        if "alert" in rule and rule["alert"] != WATCHDOG
    }


def proven(results: dict[str, Any]) -> set[tuple[str, str]]:
    """(alertname, severity) of the rows that fired and resolved."""
    return {
        (str(r["alert"]), str(r["labels"]["severity"]))
        for r in results["scenarios"]
        if r["detected_s"] is not None and r["resolved_s"] is not None
    }


def missing(results: dict[str, Any], path: Path = FAST_RULES) -> list[str]:
    """The alert rules without a row that fired and resolved, as `alertname/severity`."""
    return [f"{name}/{severity}" for name, severity in sorted(rule_alerts(path) - proven(results))]


def table(results: dict[str, Any]) -> str:
    """Seconds: `detected` counts from the fault being in place, `resolved` from its removal."""
    lines = [
        f"{'alert':<35} {'severity':<8} {'for':>4} {'condition':>9} {'bound':>6} "
        f"{'detected':>8} {'resolved':>8} {'res.bound':>9}  fault",
    ]
    for r in results["scenarios"]:
        detected = "-" if r["detected_s"] is None else f"{r['detected_s']:.1f}"
        resolved = "-" if r["resolved_s"] is None else f"{r['resolved_s']:.1f}"
        lines.append(
            f"{r['alert']:<35} {r['labels']['severity']:<8} {r['for_s']:>4.0f} "
            f"{r['condition_delay_s']:>9.0f} {r['bound_s']:>6.1f} {detected:>8} {resolved:>8} "
            f"{r['resolve_bound_s']:>9.1f}  {r['fault']}"
        )
    lines.append("bound = 2 x (for + scrape + evaluation + group_wait), after the condition delay")
    clean = results["clean_run"]
    if clean is not None:
        others = ", ".join(clean["alerts_other_than_watchdog"]) or "none"
        lines.append(f"clean run {clean['duration_s']:.0f} s: alerts other than Watchdog: {others}")
    return "\n".join(lines)
