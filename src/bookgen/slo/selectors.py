"""Every label matcher and grouping of the generated queries, built in one place.

As kubernetes-mixin threads its `_config` selectors: a series is read with the matcher of the job
that exposes it plus the deployment's namespace and cluster matchers from `slo.yaml`, and every
aggregation keeps `namespace` and `job`, so one Prometheus can hold several deployments (staging
and production) without one moving the other's SLIs. Dashboards add their `$namespace` and
`$job` variables on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from bookgen.instrumentation.catalogue import WORKER_ONLY, family_of
from bookgen.slo import conventions as names
from bookgen.slo.spec import Selector, Spec

# The labels every aggregation keeps: what tells one deployment's series from another's.
GROUP = (names.NAMESPACE_LABEL, names.JOB_LABEL)
# Whole-service figures the API processes report from the job runtime (workers do not).
API_ONLY = frozenset(
    {
        "bookgen_jobs_queued",
        "bookgen_jobs_running",
        "bookgen_job_oldest_running_age_seconds",
        "bookgen_job_queue_capacity",
        "bookgen_job_oldest_queued_age_seconds",
        "bookgen_section_oldest_queued_age_seconds",
        "bookgen_sections",
        "bookgen_workers_expected",
    }
)


@dataclass(frozen=True)
class Scope:
    """Matchers for rules (`dashboard` False) or for dashboard panels (variables added)."""

    spec: Spec
    dashboard: bool = False

    def job(self, metric: str) -> str:
        """The matcher of the jobs that expose a catalogued family."""
        sc = self.spec.scrape
        family = family_of(metric)
        if family is not None and family.name in WORKER_ONLY:
            return f'job="{sc.worker_job}"'
        if family is not None and (
            family.name in API_ONLY or family.name.startswith("bookgen_http_")
        ):
            return f'job="{sc.api_job}"'
        # Book, LLM and process families are counted by whichever tier does the work: the API
        # processes with in-process jobs, the section workers with the worker tier.
        return f'job=~"{sc.api_job}|{sc.worker_job}"'

    def deployment(self) -> list[str]:
        """The namespace and cluster matchers of slo.yaml (none on a single machine)."""
        sel = self.spec.selectors
        found = [m for m in (sel.namespace, sel.cluster) if m]
        if self.dashboard:
            found += [f'{names.NAMESPACE_LABEL}=~"$namespace"', f'{names.JOB_LABEL}=~"$job"']
        return found

    def series(self, selector: Selector, *extra: str) -> str:
        """A catalogued selector with its job and the deployment matchers."""
        return selector.promql(self.job(selector.metric), *self.deployment(), *extra)

    def metric(self, metric: str, *extra: str) -> str:
        """A catalogued series by name, with its job and the deployment matchers."""
        return self.series(Selector.model_validate(metric), *extra)

    def target(self, metric: str, job: str, *extra: str) -> str:
        """A series of a scrape target outside the catalogue (`up`, exporters) by its job."""
        return _braces(metric, [job, *self.deployment(), *extra])

    def recorded(self, record: str, *extra: str) -> str:
        """A recorded series: it already carries namespace and job, so only those are matched
        (the cluster label does not survive the aggregation)."""
        matchers = [self.spec.selectors.namespace] if self.spec.selectors.namespace else []
        if self.dashboard:
            matchers += [f'{names.NAMESPACE_LABEL}=~"$namespace"', f'{names.JOB_LABEL}=~"$job"']
        return _braces(record, [*matchers, *extra])

    def by(self, *labels: str) -> str:
        return f"by ({', '.join((*GROUP, *labels))})"

    def on(self, *labels: str) -> str:
        return f"on({', '.join((*GROUP, *labels))})"


def _braces(metric: str, matchers: list[str]) -> str:
    present = [m for m in matchers if m]
    return f"{metric}{{{','.join(present)}}}" if present else metric


def deployment_on() -> str:
    """Matching across tiers (the API's figures against the workers'): by namespace only."""
    return f"on({names.NAMESPACE_LABEL})"
