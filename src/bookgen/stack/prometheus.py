"""prometheus.yml for the stack: one job per tier, each process its own target.

`bookgen`: each API process (label `worker`); `bookgen-llm`: the model; with the Celery engine
also `bookgen-worker` (each Celery worker, label `worker`), `bookgen-broker`, `bookgen-store` and
`bookgen-celery` (celery-exporter). Alert rules select on these names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

API_JOB = "bookgen"
LLM_JOB = "bookgen-llm"
WORKER_JOB = "bookgen-worker"
BROKER_JOB = "bookgen-broker"
STORE_JOB = "bookgen-store"
CELERY_JOB = "bookgen-celery"
# celery-exporter asks every worker on each scrape (two broadcasts of 1 s each).
CELERY_MIN_SCRAPE_S = 5.0


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
    celery_workers: Sequence[str] = (),
    broker_target: str | None = None,
    store_target: str | None = None,
    celery_target: str | None = None,
) -> dict[str, Any]:
    """The config as a dict; API process i is `worker_targets[i]` with label `worker="i"`, and
    Celery worker i is `celery_workers[i]`, labelled the same way in its own job."""
    scrape_configs = [_per_worker(API_JOB, worker_targets)]
    if llm_target is not None:
        scrape_configs.append(_job(LLM_JOB, llm_target))
    if celery_workers:
        scrape_configs.append(_per_worker(WORKER_JOB, celery_workers))
    if broker_target is not None:
        scrape_configs.append(_job(BROKER_JOB, broker_target))
    if store_target is not None:
        scrape_configs.append(_job(STORE_JOB, store_target))
    if celery_target is not None:
        interval = max(seconds(intervals.scrape), CELERY_MIN_SCRAPE_S)
        job = _job(CELERY_JOB, celery_target)
        job["scrape_interval"] = f"{interval:g}s"
        job["scrape_timeout"] = f"{min(interval, 10.0):g}s"
        scrape_configs.append(job)
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


def _job(name: str, target: str) -> dict[str, Any]:
    return {"job_name": name, "static_configs": [{"targets": [target]}]}


def _per_worker(name: str, targets: Sequence[str]) -> dict[str, Any]:
    return {
        "job_name": name,
        "static_configs": [
            {"targets": [target], "labels": {"worker": str(index)}}
            for index, target in enumerate(targets)
        ],
    }


def dump(config: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return f"{header}{body}"
