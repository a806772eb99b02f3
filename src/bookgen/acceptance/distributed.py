"""The distributed acceptance: the worker tier on several hosts, workers killed while books are
written, and the store's word on what happened.

    python -m bookgen.acceptance.distributed [--report reports/distributed.json] [--loopback]

Hosts (network namespaces, see netns.py): `data` runs the broker (Redis) and PostgreSQL bound to
its own address, `llm` the simulated model, `api` the API process, `worker-a` and `worker-b` two
`bookgen worker` processes each, `monitor` Prometheus scraping every target across the network.
Without root (or without namespaces) the same scenario runs on loopback with distinct processes.

The scenario submits the books, then SIGKILLs worker processes one at a time, alternating hosts,
and once kills every process of one worker host and takes the host off the network before
bringing it back. It measures, from the store, how long each killed section took to run again,
and at the end that every book completed with every section stored exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from bookgen.acceptance.fleet import Fleet, Host, Worker
from bookgen.acceptance.netns import NetnsUnavailable, Network, on_host, why_unavailable
from bookgen.stack import binaries
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component
from bookgen.stack.services import (
    create_database,
    postgres_server,
    postgres_url,
    redis_server,
    redis_url,
)

HOSTS = ["data", "llm", "api", "worker-a", "worker-b", "monitor"]
WORKER_HOSTS = ("worker-a", "worker-b")
PROCESSES_PER_WORKER_HOST = 2
# Leases short enough that five kills fit in a few minutes; production keeps 30 s.
TIER_ENV = {
    "BOOKGEN_SECTION_LEASE_S": "6",
    "BOOKGEN_REAP_INTERVAL_S": "1",
    "BOOKGEN_WORKER_DRAIN_S": "2",
    "BOOKGEN_SECTION_REPUBLISH_IDLE_S": "10",
    # Above the kills the scenario makes (5 + 1), so a section the scenario itself hits in
    # every kill is not taken for a poison task; the run limit is tested on its own.
    "BOOKGEN_SECTION_MAX_RUNS": "8",
    "BOOKGEN_ACCESS_LOG": "false",
    "BOOKGEN_RATE_LIMIT": "1000/minute",
}


@dataclass(slots=True)
class Plan:
    books: int = 6
    chapters: int = 8
    total_words: int = 4000
    tokens_per_second: float = 30.0
    timeout_s: float = 600.0


@dataclass(slots=True)
class Kill:
    worker: str
    host: str
    sections: int
    rerun_delay_s: float | None


@dataclass(slots=True)
class RssSampler:
    """The largest RSS seen of any worker process, sampled every half second."""

    fleet: Fleet
    max_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for worker in self.fleet.workers:
                pid = worker.component.pid
                if pid is None or not worker.component.alive():
                    continue
                with contextlib.suppress(psutil.Error):
                    self.max_bytes = max(self.max_bytes, psutil.Process(pid).memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def _hosts(loopback: bool) -> Iterator[tuple[dict[str, Host], Network | None, str]]:
    reason = "loopback asked for" if loopback else why_unavailable()
    if reason is None:
        try:
            with Network(HOSTS) as network:
                yield network.hosts, network, "netns"
                return
        except NetnsUnavailable as error:
            reason = str(error)
    print(f"note: running on loopback ({reason})", file=sys.stderr)
    yield {name: Host(name) for name in HOSTS}, None, f"loopback ({reason})"


def _prometheus(run_dir: Path, host: Host, fleet: Fleet) -> tuple[Component, str]:
    port = free_port()
    targets = {
        "bookgen": [f"{fleet.api_host.address}:{fleet.api_port}"],
        "bookgen-llm": [f"{fleet.sim_host.address}:{fleet.sim_port}"],
        "bookgen-worker": [f"{w.host.address}:{w.metrics_port}" for w in fleet.workers],
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    folder = run_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        binaries.find("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={host.address}:{port}",
    ]
    url = f"http://{host.address}:{port}"
    component = Component("prometheus", argv, run_dir / "prometheus.log", f"{url}/-/ready")
    return on_host(component, host), url


def _targets(url: str) -> dict[str, int]:
    """Healthy targets per scrape job, as Prometheus sees them across the network."""
    body = httpx.get(f"{url}/api/v1/targets", timeout=5).json()
    up: dict[str, int] = {}
    for target in body["data"]["activeTargets"]:
        job = target["labels"]["job"]
        up[job] = up.get(job, 0) + (target["health"] == "up")
    return up


def _kill(fleet: Fleet, workers: list[Worker], network: Network | None, host: str) -> list[Kill]:
    """SIGKILL `workers` (all on `host`) once each has a chapter running; time their reruns."""
    held: dict[str, list[tuple[str, int]]] = {}
    deadline = time.monotonic() + 120
    for worker in workers:
        while time.monotonic() < deadline:
            pieces = fleet.running_pieces(worker.owner_prefix)
            if any(index > 0 for _, index in pieces):
                held[worker.owner_prefix] = pieces
                break
            time.sleep(0.2)
        else:
            held[worker.owner_prefix] = fleet.running_pieces(worker.owner_prefix)
    prefixes = [w.owner_prefix for w in workers]
    for worker in workers:
        worker.component.kill()
    killed = time.time()
    if network is not None and len(workers) > 1:
        network.link(host, up=False)  # the whole host gone, not just its processes
    pending = {p: held[p] for p in prefixes}
    delays: dict[str, float | None] = {p: None for p in prefixes}
    brought_back = False
    while any(delays[p] is None and pending[p] for p in prefixes):
        if time.time() - killed > 180:
            break
        if not brought_back and time.time() - killed > 3:
            if network is not None and len(workers) > 1:
                network.link(host, up=True)
            for worker in workers:
                fleet.restart(worker)
            brought_back = True
        for prefix in prefixes:
            if delays[prefix] is None and pending[prefix]:
                started = fleet.restarted_at(pending[prefix], prefix)
                if all(v is not None for v in started.values()):
                    delays[prefix] = max(
                        v.timestamp() - killed for v in started.values() if v is not None
                    )
        time.sleep(0.25)
    if not brought_back:
        if network is not None and len(workers) > 1:
            network.link(host, up=True)
        for worker in workers:
            fleet.restart(worker)
    return [
        Kill(w.component.name, host, len(held[p]), delays[p])
        for w, p in zip(workers, prefixes, strict=True)
    ]


def run(report: Path, plan: Plan | None = None, *, loopback: bool = False) -> dict[str, Any]:
    plan = plan or Plan()
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="bookgen-distributed-"))
    run_dir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory
    with _hosts(loopback) as (hosts, network, mode), contextlib.ExitStack() as stack:
        data = hosts["data"]
        redis_port, pg_port = free_port(), free_port()
        redis = redis_server(run_dir, data.address, redis_port)
        if network is not None:
            # Protected mode answers only loopback; this Redis is reachable from the bridge only.
            redis = replace(redis, argv=[*redis.argv, "--protected-mode", "no"])
        redis = on_host(redis, data)
        stack.callback(redis.stop, 5.0)
        redis.run(timeout_s=30)
        postgres = on_host(postgres_server(run_dir, data.address, pg_port), data)
        if network is not None:
            # initdb trusts loopback only; the other hosts reach it over the bridge.
            with (run_dir / "postgres" / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {network.subnet}.0/24 trust\n")
        stack.callback(postgres.stop, 10.0)
        postgres.run(timeout_s=60)
        create_database(data.address, pg_port)
        fleet = Fleet(
            run_dir / "fleet",
            redis_url(data.address, redis_port, 0),
            postgres_url(data.address, pg_port),
            sim_host=hosts["llm"],
            api_host=hosts["api"],
            env=TIER_ENV,
            tokens_per_second=plan.tokens_per_second,
        )
        stack.callback(fleet.stop)
        workers = [hosts[h] for h in WORKER_HOSTS for _ in range(PROCESSES_PER_WORKER_HOST)]
        fleet.start(workers)
        prometheus, prometheus_url = _prometheus(run_dir, hosts["monitor"], fleet)
        stack.callback(prometheus.stop, 5.0)
        prometheus.run(timeout_s=60)
        sampler = RssSampler(fleet)
        sampler.start()
        stack.callback(sampler.stop)

        ids = fleet.submit(plan.books, plan.chapters, plan.total_words)
        by_host = {h: [w for w in fleet.workers if w.host.name == h] for h in WORKER_HOSTS}
        kills: list[Kill] = []
        # Alternate hosts one process at a time, then a whole host at once.
        for host, slot in (("worker-a", 0), ("worker-b", 0), ("worker-a", 1)):
            kills += _kill(fleet, [by_host[host][slot]], network, host)
        kills += _kill(fleet, by_host["worker-b"], network, "worker-b")
        statuses = fleet.wait_finished(ids, plan.timeout_s)
        census = fleet.census(ids)
        time.sleep(3)  # two scrapes after the last restart
        targets = _targets(prometheus_url)
        delays = [k.rerun_delay_s for k in kills if k.sections]
        result: dict[str, Any] = {
            "hosts": len(hosts),
            "books": census.books,
            "completed": census.completed,
            "kills": len(kills),
            "duplicate_sections": census.duplicate_sections,
            "missing_sections": census.missing_sections,
            "max_rerun_delay_s": _worst(delays),
            "worker_rss_max_mb": round(sampler.max_bytes / 2**20, 1),
            "network": mode,
            "kills_detail": [_kill_row(k) for k in kills],
            "failed": census.failed,
            "errors": census.errors[:5],
            "statuses": sorted(set(statuses.values())),
            "prometheus_targets_up": targets,
            "worker_processes": len(fleet.workers),
            "plan": {
                "books": plan.books,
                "chapters": plan.chapters,
                "total_words": plan.total_words,
                "tokens_per_second": plan.tokens_per_second,
                "section_lease_s": float(TIER_ENV["BOOKGEN_SECTION_LEASE_S"]),
            },
            "duration_s": round(time.monotonic() - started, 1),
        }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _worst(delays: list[float | None]) -> float | None:
    """The longest rerun delay; None when a killed section never ran again."""
    measured = [d for d in delays if d is not None]
    if len(measured) < len(delays):
        return None
    return round(max(measured, default=0.0), 1)


def _kill_row(kill: Kill) -> dict[str, Any]:
    return {
        "worker": kill.worker,
        "host": kill.host,
        "sections": kill.sections,
        "rerun_delay_s": None if kill.rerun_delay_s is None else round(kill.rerun_delay_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="the distributed acceptance of the worker tier")
    parser.add_argument("--report", type=Path, default=Path("reports/distributed.json"))
    parser.add_argument("--loopback", action="store_true", help="no namespaces: one host")
    parser.add_argument("--books", type=int, default=Plan().books)
    parser.add_argument("--chapters", type=int, default=Plan().chapters)
    args = parser.parse_args()
    result = run(
        args.report, Plan(books=args.books, chapters=args.chapters), loopback=args.loopback
    )
    print(json.dumps(result, indent=2))
    ok = (
        result["completed"] == result["books"]
        and result["duplicate_sections"] == 0
        and result["missing_sections"] == 0
        and result["max_rerun_delay_s"] is not None
        and result["max_rerun_delay_s"] <= 90
    )
    print(f"distributed acceptance: {'PASS' if ok else 'FAIL'} (report: {args.report.resolve()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
