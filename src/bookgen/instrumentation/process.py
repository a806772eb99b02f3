"""Figures read at scrape time: job runtime state, this process (psutil), GC, event-loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bookgen.instrumentation import catalogue as cat

log = logging.getLogger(__name__)


class _Snapshot(Protocol):
    queued: int
    running: int
    oldest_running_created_at: datetime | None
    queue_capacity: int
    sections_queued: int
    sections_running: int
    oldest_queued_section_at: datetime | None
    oldest_queued_created_at: datetime | None
    workers_expected: int


def _age(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    spec = cat.BY_NAME[name]
    return GaugeMetricFamily(spec.name, spec.help, value=value, unit=spec.unit)


class RuntimeCollector(Collector):
    """Queue and running-job gauges from `app.state.runtime.snapshot()`; zeros until it exists."""

    def __init__(
        self,
        runtime: Callable[[], Any],
        default_capacity: int,
        admission: Callable[[], Any] = lambda: None,
    ) -> None:
        self._runtime = runtime
        self._default_capacity = default_capacity
        # The service's admission state (`spend_by_principal()`, cached by its refresh loop).
        self._admission = admission

    def collect(self) -> Iterator[Metric]:
        queued = running = age = 0.0
        sections = {"queued": 0.0, "running": 0.0}
        queued_age = expected = job_wait = 0.0
        capacity = float(self._default_capacity)
        runtime = self._runtime()
        if runtime is not None:
            try:
                snap: _Snapshot = runtime.snapshot()
                queued, running = float(snap.queued), float(snap.running)
                capacity = float(snap.queue_capacity)
                age = _age(snap.oldest_running_created_at)
                sections = {"queued": snap.sections_queued, "running": snap.sections_running}
                queued_age = _age(snap.oldest_queued_section_at)
                job_wait = _age(snap.oldest_queued_created_at)
                expected = float(snap.workers_expected)
            except Exception:  # a scrape must not fail because the runtime is mid-shutdown
                log.warning("runtime snapshot failed", exc_info=True)
        yield _gauge("bookgen_jobs_queued", queued)
        yield _gauge("bookgen_jobs_running", running)
        yield _gauge("bookgen_job_oldest_running_age_seconds", age)
        yield _gauge("bookgen_job_queue_capacity", capacity)
        yield _gauge("bookgen_job_oldest_queued_age_seconds", job_wait)
        spec = cat.BY_NAME["bookgen_sections"]
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for state in cat.SECTION_STATES:
            family.add_metric([state], float(sections[state]))
        yield family
        yield _gauge("bookgen_section_oldest_queued_age_seconds", queued_age)
        yield _gauge("bookgen_workers_expected", expected)
        yield self._spend()

    def _spend(self) -> Metric:
        spec = cat.BY_NAME["bookgen_principal_spend_usd"]
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        spend: dict[str, float] = {"(anonymous)": 0.0, "(other)": 0.0}
        admission = self._admission()
        if admission is not None:
            try:
                spend = admission.spend_by_principal()
            except Exception:
                log.warning("spend per principal unavailable", exc_info=True)
        for principal, usd in sorted(spend.items()):
            family.add_metric([principal], usd)
        return family


class WorkerCollector(Collector):
    """A worker process's slots and the sections it runs now."""

    def __init__(self, slots: int, running: Callable[[], int]) -> None:
        self._slots = slots
        self._running = running

    def collect(self) -> Iterator[Metric]:
        yield _gauge("bookgen_worker_slots", self._slots)
        yield _gauge("bookgen_worker_sections_running", self._running())


class ProcessCollector(Collector):
    """RSS, CPU, fds, threads and GC of this worker process."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        proc = self._process
        with proc.oneshot():
            rss = proc.memory_info().rss
            cpu = proc.cpu_times()
            fds = proc.num_fds()
            threads = proc.num_threads()
        yield _gauge("bookgen_process_resident_memory_bytes", rss)
        spec = cat.BY_NAME["bookgen_process_cpu_seconds_total"]
        yield CounterMetricFamily(spec.name, spec.help, value=cpu.user + cpu.system, unit=spec.unit)
        yield _gauge("bookgen_process_open_fds", fds)
        yield _gauge("bookgen_process_threads", threads)
        stats = gc.get_stats()
        for name, key in (
            ("bookgen_python_gc_collections_total", "collections"),
            ("bookgen_python_gc_objects_collected_total", "collected"),
        ):
            spec = cat.BY_NAME[name]
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for generation, stat in zip(cat.GC_GENERATIONS, stats, strict=False):
                family.add_metric([generation], stat[key])
            yield family


class EventLoopLagMonitor:
    """Sleeps `interval_s` in a loop and records how late each wake-up came."""

    def __init__(self, histogram: Histogram, interval_s: float = 0.25) -> None:
        self._histogram = histogram
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="bookgen-event-loop-lag"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        interval = self._interval_s
        while True:
            expected = time.perf_counter() + interval
            await asyncio.sleep(interval)
            self._histogram.observe(max(0.0, time.perf_counter() - expected))
