"""Scrape-time collectors and the event-loop lag monitor."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Histogram

from bookgen.instrumentation.exposition import WorkerMetricsServer
from bookgen.instrumentation.process import EventLoopLagMonitor, ProcessCollector, RuntimeCollector
from bookgen.stack.ports import free_port


@dataclass
class Snapshot:
    queued: int
    running: int
    oldest_running_created_at: datetime | None
    queue_capacity: int


class FakeRuntime:
    def __init__(self, snapshot: Snapshot) -> None:
        self.value = snapshot

    def snapshot(self) -> Snapshot:
        return self.value


def test_runtime_gauges_before_and_after_the_runtime_exists() -> None:
    holder: list[FakeRuntime] = []
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(lambda: holder[0] if holder else None, 200))
    assert registry.get_sample_value("bookgen_jobs_queued") == 0
    assert registry.get_sample_value("bookgen_job_queue_capacity") == 200
    started = datetime.now(UTC) - timedelta(seconds=90)
    holder.append(FakeRuntime(Snapshot(7, 2, started, 50)))
    assert registry.get_sample_value("bookgen_jobs_queued") == 7
    assert registry.get_sample_value("bookgen_jobs_running") == 2
    assert registry.get_sample_value("bookgen_job_queue_capacity") == 50
    age = registry.get_sample_value("bookgen_job_oldest_running_age_seconds")
    assert age is not None and 89 < age < 120
    holder[0].value = Snapshot(0, 0, None, 50)
    assert registry.get_sample_value("bookgen_job_oldest_running_age_seconds") == 0


def test_process_figures() -> None:
    registry = CollectorRegistry()
    registry.register(ProcessCollector())
    rss = registry.get_sample_value("bookgen_process_resident_memory_bytes")
    assert rss is not None and rss > 10_000_000
    assert (registry.get_sample_value("bookgen_process_threads") or 0) >= 1
    assert (registry.get_sample_value("bookgen_process_open_fds") or 0) >= 3
    assert registry.get_sample_value("bookgen_process_cpu_seconds_total") is not None
    gen0 = registry.get_sample_value("bookgen_python_gc_collections_total", {"generation": "0"})
    assert gen0 is not None and gen0 >= 0


async def test_event_loop_lag_sees_a_blocked_loop() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("lag_seconds", "lag", registry=registry, buckets=(0.01, 0.1, 1.0))
    monitor = EventLoopLagMonitor(histogram, interval_s=0.01)
    monitor.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 - block the loop on purpose
    await asyncio.sleep(0.05)
    await monitor.stop()
    count = registry.get_sample_value("lag_seconds_count") or 0
    fast = registry.get_sample_value("lag_seconds_bucket", {"le": "0.1"}) or 0
    assert count >= 3 and count - fast >= 1


def test_worker_metrics_server_serves_its_registry() -> None:
    registry = CollectorRegistry()
    registry.register(ProcessCollector())
    server = WorkerMetricsServer(registry, free_port())
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert "bookgen_process_resident_memory_bytes" in body
    finally:
        server.stop()
