"""The alert profile a stack runs: rules, Alertmanager config and timings from slo.yaml."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import bookgen
from bookgen.slo import alertmanager, rules, spec
from bookgen.slo.spec import Spec
from bookgen.stack.prometheus import Intervals, seconds


def repo_root() -> Path:
    """Where slo.yaml and alerts/ live: `BOOKGEN_ROOT`, the working directory, or the checkout."""
    env = os.environ.get("BOOKGEN_ROOT")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd(), Path(bookgen.__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "slo.yaml").is_file():
            return root
    raise FileNotFoundError(
        "slo.yaml not found (looked in BOOKGEN_ROOT, the working directory and the checkout); "
        "run from the BookGen repository or set BOOKGEN_ROOT"
    )


@dataclass(frozen=True, slots=True)
class AlertProfile:
    name: str
    intervals: Intervals
    group_wait_s: float
    # (alertname, severity) -> its `for` in seconds, as rendered for this profile.
    alert_for_s: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def for_s(self, alertname: str, severity: str | None = None) -> float:
        """`for` of the alert; give the severity where one name has several (burn rates)."""
        found = {
            sev: value
            for (name, sev), value in self.alert_for_s.items()
            if name == alertname and severity in (None, sev)
        }
        if len(found) != 1:
            raise KeyError(f"{alertname} (severity {severity}): {len(found)} rules match")
        return next(iter(found.values()))

    def detection_bound_s(self, alertname: str, severity: str | None = None) -> float:
        """2 x (for + scrape interval + evaluation interval + group_wait): the e2e bound."""
        return 2 * (
            self.for_s(alertname, severity)
            + seconds(self.intervals.scrape)
            + seconds(self.intervals.evaluation)
            + self.group_wait_s
        )


def load_spec() -> Spec:
    return spec.load_spec(repo_root() / "slo.yaml")


def rules_text(name: str) -> str:
    """The Prometheus rules for profile `name`, rendered from slo.yaml now (never a stale copy)."""
    return str(yaml.safe_dump(rules.render(load_spec(), name), sort_keys=False))


def alertmanager_config(webhook_url: str, name: str) -> dict[str, Any]:
    """Alertmanager config posting to `webhook_url`, with the profile's grouping timings."""
    config: dict[str, Any] = alertmanager.render(load_spec(), webhook_url, name)
    return config


def load(name: str, rendered: str | None = None) -> AlertProfile:
    """Timings of profile `name` from slo.yaml and each alert's `for` from its rendered rules."""
    timings = load_spec().profile(name)
    groups = yaml.safe_load(rendered if rendered is not None else rules_text(name))["groups"]
    alert_for = {
        (rule["alert"], rule["labels"]["severity"]): seconds(rule.get("for", "0s"))
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    }
    return AlertProfile(
        name=name,
        intervals=Intervals(
            scrape=f"{timings.scrape_interval}s", evaluation=f"{timings.evaluation_interval}s"
        ),
        group_wait_s=float(timings.group_wait),
        alert_for_s=alert_for,
    )
