"""prometheus.yml for the stack: each worker as job `bookgen`, the model as `bookgen-llm`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

API_JOB = "bookgen"
LLM_JOB = "bookgen-llm"


@dataclass(frozen=True, slots=True)
class Intervals:
    scrape: str
    evaluation: str

    @property
    def scrape_timeout(self) -> str:
        # Prometheus refuses a timeout longer than the interval; 10 s is its own default cap.
        return self.scrape if seconds(self.scrape) <= 10 else "10s"


_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def seconds(duration: str | float) -> float:
    """A Prometheus duration (`1m30s`, `500ms`, or a bare number of seconds) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    text = duration.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a Prometheus duration: {duration!r}") from None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def render(
    *,
    worker_targets: Sequence[str],
    llm_target: str | None,
    alertmanager_target: str,
    rule_files: Sequence[str],
    intervals: Intervals,
) -> dict[str, Any]:
    """The config as a dict; worker i is `worker_targets[i]` and gets the label `worker="i"`."""
    scrape_configs: list[dict[str, Any]] = [
        {
            "job_name": API_JOB,
            "static_configs": [
                {"targets": [target], "labels": {"worker": str(index)}}
                for index, target in enumerate(worker_targets)
            ],
        }
    ]
    if llm_target is not None:
        scrape_configs.append({"job_name": LLM_JOB, "static_configs": [{"targets": [llm_target]}]})
    return {
        "global": {
            "scrape_interval": intervals.scrape,
            "scrape_timeout": intervals.scrape_timeout,
            "evaluation_interval": intervals.evaluation,
        },
        "rule_files": list(rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_target]}]}]},
        "scrape_configs": scrape_configs,
    }


def dump(config: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return f"{header}{body}"
