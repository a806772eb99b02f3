"""Fault scenarios: inject, wait for the alerts at the receiver, remove, wait until resolved."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bookgen.slo.rules import fast_profile_table
from bookgen.stack.profile import load_spec
from bookgen.stack.receiver import alert_events, matches
from bookgen.stack.supervisor import Stack

POLL_S = 0.2
# After a fault is removed, the fast profile's 5 s rate windows drain before an expression turns
# false (a paused job needs a few seconds to finish); then the same pipeline as for firing.
RESOLVE_S = 15.0


@dataclass(frozen=True)
class Expect:
    family: str
    alert: str
    labels: dict[str, str]  # with `severity`, and `slo` for a burn alert
    # A burn alert: the error ratio the fault produces, from which the time its long window
    # needs to cross the burn threshold follows.
    error_ratio: float | None = None
    # How long the fault itself takes to produce what the rule reads, when that is longer than
    # the target's definition says (a book slowed to 40 s completes 40 s after the fault).
    fault_delay_s: float = 0.0

    def _row(self) -> dict[str, Any]:
        """The alert's row of the fast-profile table of slo.yaml."""
        for row in fast_profile_table(load_spec())["alerts"]:
            if (row["alert"], row["severity"]) == (self.alert, self.labels["severity"]):
                return dict(row)
        raise KeyError(f"{self.alert} {self.labels} is not in the fast profile")

    def condition_delay_s(self) -> float:
        """How long the breach must last by the target's own definition before any rule can see
        it (a job is "too long" only after 30 s), from the fast-profile table of slo.yaml; the
        detection bound is counted on top of it."""
        if self.error_ratio is not None:
            return burn_ramp_s(self.labels["slo"], self.labels["severity"], self.error_ratio)
        return max(float(self._row()["condition_delay_s"]), self.fault_delay_s)

    def drain_s(self) -> float:
        """How long after the fault the alert's condition may still hold: a threshold alert's
        window must drain (a p95 over 1 m stays high while a slow book is in it); a burn alert
        clears when the short window of every pair that fired has drained."""
        if self.error_ratio is None:
            return RESOLVE_S + float(self._row()["window_s"])
        spec = load_spec()
        shorts = [
            spec.scaled(p.short, "fast")
            for p in spec.burn_rates
            if p.severity == self.labels["severity"]
        ]
        return max(RESOLVE_S, *shorts)


def burn_ramp_s(slo: str, severity: str, error_ratio: float) -> float:
    """Fast profile: how long a fault of `error_ratio` (from a clean start) takes to lift the
    long window of the quickest burn pair of `severity` over factor x error budget; both windows
    must be over it, and the long one is the slower."""
    spec = load_spec()
    budget = spec.slos[slo].error_budget
    return min(
        spec.scaled(pair.long, "fast") * min(1.0, pair.factor * budget / error_ratio)
        for pair in spec.burn_rates
        if pair.severity == severity
    )


@dataclass
class Scenario:
    fault: str
    inject: Callable[[], object]
    remove: Callable[[], object]
    expect: list[Expect]
    # Runs from injection until removal (e.g. the submissions an LLM fault needs to be seen).
    during: Callable[[threading.Event], None] | None = None
    # Runs from removal until every alert resolved (clean traffic that drains a ratio window).
    after: Callable[[threading.Event], None] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


def first_event(
    stack: Stack, labels: dict[str, str], status: str, since: float, until: float
) -> float | None:
    """received_at of the first alert with `labels` and `status` in [since, until], or None."""
    wanted = matches(labels)
    while True:
        for received, alert in alert_events(stack.notifications_path, since):
            if alert.get("status") == status and wanted(alert):
                return received
        if time.time() > until:
            return None
        time.sleep(POLL_S)


def run(stack: Stack, scenario: Scenario) -> list[dict[str, Any]]:
    profile = stack.alert_profile
    assert profile is not None
    stop = threading.Event()
    helper = None
    injecting = time.time()
    scenario.inject()
    # Times count from the moment the fault is in place (a balloon takes seconds to fill);
    # alerts are looked for from the start of the injection.
    started = time.time()
    if scenario.during is not None:
        helper = threading.Thread(target=scenario.during, args=(stop,), daemon=True)
        helper.start()
    fired: list[float | None] = []
    try:
        for e in scenario.expect:
            bound = profile.detection_bound_s(e.alert, e.labels["severity"])
            labels = {"alertname": e.alert, **e.labels}
            until = started + e.condition_delay_s() + bound
            fired.append(first_event(stack, labels, "firing", injecting, until))
    finally:
        removed = time.time()
        stop.set()
        scenario.remove()
        if helper is not None:
            helper.join(timeout=30)
    stop_after = threading.Event()
    if scenario.after is not None:
        helper = threading.Thread(target=scenario.after, args=(stop_after,), daemon=True)
        helper.start()
    try:
        resolved_at = _resolutions(stack, scenario, fired, removed)
    finally:
        stop_after.set()
        if scenario.after is not None and helper is not None:
            helper.join(timeout=30)
    for e, detected, resolved in zip(scenario.expect, fired, resolved_at, strict=True):
        bound = profile.detection_bound_s(e.alert, e.labels["severity"])
        scenario.results.append(
            {
                "family": e.family,
                "alert": e.alert,
                "labels": e.labels,
                "fault": scenario.fault,
                "injection_s": round(started - injecting, 2),
                "for_s": profile.for_s(e.alert, e.labels["severity"]),
                "bound_s": bound,
                "condition_delay_s": e.condition_delay_s(),
                "detected_s": None if detected is None else round(detected - started, 2),
                "detected_at": detected,
                "resolved_s": None if resolved is None else round(resolved - removed, 2),
                "resolved_at": resolved,
                "resolve_bound_s": e.drain_s() + bound,
            }
        )
    return scenario.results


def _resolutions(
    stack: Stack, scenario: Scenario, fired: list[float | None], removed: float
) -> list[float | None]:
    """When each alert that fired was received resolved (None if not within its bound)."""
    profile = stack.alert_profile
    assert profile is not None
    found: list[float | None] = []
    for e, detected in zip(scenario.expect, fired, strict=True):
        bound = profile.detection_bound_s(e.alert, e.labels["severity"])
        labels = {"alertname": e.alert, **e.labels}
        resolved = None
        if detected is not None:
            until = removed + e.drain_s() + bound
            resolved = first_event(stack, labels, "resolved", removed, until)
        found.append(resolved)
    return found


def run_together(stack: Stack, scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """Run scenarios concurrently: only those whose faults and alerts do not interfere."""
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        return [row for rows in pool.map(lambda s: run(stack, s), scenarios) for row in rows]


def problems(results: list[dict[str, Any]]) -> list[str]:
    found = []
    for r in results:
        name = f"{r['family']}: {r['alert']} {r['labels']}"
        if r["detected_s"] is None:
            limit = r["condition_delay_s"] + r["bound_s"]
            found.append(f"{name} did not fire within {limit:.1f} s")
        elif r["resolved_s"] is None:
            found.append(f"{name} did not resolve within {r['resolve_bound_s']:.1f} s")
    return found
