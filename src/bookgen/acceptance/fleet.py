"""A worker tier on a set of hosts: the simulated model, API processes and `bookgen worker`s.

A host is an address its servers bind and an argv prefix that runs a command on it (`ip netns
exec NS` for a network namespace, nothing for this machine). The store and the broker are given
as URLs, so the same fleet runs on loopback, on namespaced hosts, or against a deployment's own.
The fleet reads the store directly to prove what happened (sections stored once, rerun delays).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bookgen.acceptance.clients import client_headers
from bookgen.service.store import SectionRow, Store
from bookgen.service.store.models import JobRow, SectionTaskRow
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component, bookgen_argv

GENERATE = "/api/v1/biographies/generate"


def source_address(address: str) -> str:
    """This machine's address towards `address`: the peer a server there sees us as."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))  # UDP: only picks the route, sends nothing
        return str(probe.getsockname()[0])


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str = "127.0.0.1"
    wrap: tuple[str, ...] = ()  # argv prefix that runs a command on this host

    def port(self) -> int:
        # Free on this machine's loopback, hence free on a fresh namespaced host too.
        return free_port()


@dataclass(slots=True)
class Worker:
    host: Host
    index: int
    component: Component
    metrics_port: int

    @property
    def owner_prefix(self) -> str:
        """How this process names itself as a lease owner in the store (host:pid:...)."""
        return f"{socket.gethostname()}:{self.component.pid}:"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host.address}:{self.metrics_port}/metrics"


@dataclass(frozen=True, slots=True)
class Census:
    """What the store says about a set of books."""

    books: int
    completed: int
    failed: int
    duplicate_sections: int
    missing_sections: int
    errors: list[str]


@dataclass(slots=True)
class Fleet:
    run_dir: Path
    broker_url: str
    database_url: str
    sim_host: Host = field(default_factory=lambda: Host("local"))
    api_host: Host = field(default_factory=lambda: Host("local"))
    env: Mapping[str, str] = field(default_factory=dict)
    tokens_per_second: float = 400.0
    ready_timeout_s: float = 90.0
    sim: Component | None = None
    api: Component | None = None
    api_port: int = 0
    sim_port: int = 0
    workers: list[Worker] = field(default_factory=list)

    # --- processes -----------------------------------------------------------------------
    def _component(
        self, host: Host, name: str, argv: Sequence[str], ready: str | None
    ) -> Component:
        env = {
            "PYTHONUNBUFFERED": "1",
            "BOOKGEN_BROKER_URL": self.broker_url,
            "BOOKGEN_DATABASE_URL": self.database_url,
            **self.env,
        }
        return Component(
            name,
            [*host.wrap, *argv],
            self.run_dir / f"{name}.log",
            ready,
            env,
            ready_timeout_s=self.ready_timeout_s,
        )

    @property
    def llm_url(self) -> str:
        return f"http://{self.sim_host.address}:{self.sim_port}/v1"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host.address}:{self.api_port}"

    def start(self, workers: Sequence[Host] = (), *, api: bool = True) -> Fleet:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.sim_port = self.sim_host.port()
        argv = bookgen_argv(
            "sim-llm",
            "--host",
            self.sim_host.address,
            "--port",
            str(self.sim_port),
            "--tokens-per-second",
            f"{self.tokens_per_second:g}",
        )
        ready = f"http://{self.sim_host.address}:{self.sim_port}/health"
        self.sim = self._component(self.sim_host, "sim", argv, ready).run()
        if api:
            self.api_port = self.api_host.port()
            argv = bookgen_argv(
                "api", "--host", self.api_host.address, "--port", str(self.api_port)
            )
            component = self._component(self.api_host, "api", argv, f"{self.api_url}/ready")
            # A namespaced host's address is not loopback, so the API would require keys; the
            # fleet's network is private to the test and its clients send none. Every book comes
            # from this process, the fleet's edge: the API believes its X-Forwarded-For, so each
            # book is a client of its own (as behind a real proxy), not all one address.
            component.env = {
                "BOOKGEN_AUTH": "off",
                "BOOKGEN_FORWARDED_ALLOW_IPS": source_address(self.api_host.address),
                **component.env,
            }
            self.api = component.run()
        for host in workers:
            self.add_worker(host)
        for worker in self.workers:
            worker.component.wait_ready()
        return self

    def add_worker(self, host: Host, *, wait: bool = False) -> Worker:
        index = len(self.workers)
        port = host.port()
        argv = bookgen_argv(
            "worker",
            "--metrics-host",
            host.address,
            "--metrics-port",
            str(port),
            "--hostname",
            f"worker-{index}@{host.name}",
            "--loglevel",
            "WARNING",
        )
        name = f"worker-{index}-{host.name}"
        component = self._component(host, name, argv, f"http://{host.address}:{port}/metrics")
        component.env = {**component.env, "BOOKGEN_LLM_BASE_URL": self.llm_url}
        component.start()
        worker = Worker(host, index, component, port)
        self.workers.append(worker)
        if wait:
            component.wait_ready()
        return worker

    def restart(self, worker: Worker) -> None:
        """Start the worker again in place (same host and port), after a kill or a stop."""
        worker.component.start()
        worker.component.wait_ready()

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.component.alive()]

    def stop(self) -> None:
        for worker in self.workers:
            worker.component.stop(grace_s=5.0)
        for component in (self.api, self.sim):
            if component is not None:
                component.stop(grace_s=5.0)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- books ---------------------------------------------------------------------------
    def submit(self, books: int, chapters: int, total_words: int) -> list[str]:
        ids: list[str] = []
        with httpx.Client(base_url=self.api_url, timeout=30.0) as client:
            for n in range(books):
                body = {
                    "character": f"Ada Lovelace {n}",
                    "chapters": chapters,
                    "total_words": total_words,
                }
                response = client.post(GENERATE, json=body, headers=client_headers(f"book-{n}"))
                response.raise_for_status()
                ids.append(response.json()["job_id"])
        return ids

    # --- the store, read directly --------------------------------------------------------
    def query(self, coro_factory: Any) -> Any:
        async def run() -> Any:
            store = Store.from_url(self.database_url)
            try:
                return await coro_factory(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        async def read(store: Store) -> dict[str, str]:
            async with store.sessions() as s:
                rows = await s.execute(
                    select(JobRow.id, JobRow.status).where(JobRow.id.in_(job_ids))
                )
                return {job_id: status for job_id, status in rows.all()}

        result: dict[str, str] = self.query(read)
        return result

    def wait_finished(self, job_ids: Sequence[str], timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.statuses(job_ids)
            if all(s in ("completed", "failed", "cancelled") for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            time.sleep(1.0)

    def running_pieces(self, owner_prefix: str) -> list[tuple[str, int]]:
        async def read(store: Store) -> list[tuple[str, int]]:
            query = select(SectionTaskRow.job_id, SectionTaskRow.index).where(
                SectionTaskRow.state == "running",
                SectionTaskRow.lease_owner.startswith(owner_prefix),
            )
            async with store.sessions() as s:
                return [(j, i) for j, i in (await s.execute(query)).all()]

        result: list[tuple[str, int]] = self.query(read)
        return result

    def restarted_at(
        self, pieces: Sequence[tuple[str, int]], owner_prefix: str
    ) -> dict[tuple[str, int], datetime | None]:
        """When each piece started again under another owner, or finished (None: not yet)."""

        async def read(store: Store) -> dict[tuple[str, int], datetime | None]:
            found: dict[tuple[str, int], datetime | None] = {}
            async with store.sessions() as s:
                for job_id, index in pieces:
                    row = await s.get(SectionTaskRow, (job_id, index))
                    moved = row is not None and not (row.lease_owner or "").startswith(owner_prefix)
                    found[(job_id, index)] = (
                        row.started_at
                        if row is not None and moved and row.state != "queued"
                        else None
                    )
            return found

        result: dict[tuple[str, int], datetime | None] = self.query(read)
        return result

    def census(self, job_ids: Sequence[str]) -> Census:
        async def read(store: Store) -> Census:
            async with store.sessions() as s:
                jobs = (await s.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))).all()
                counts = dict(
                    (
                        await s.execute(
                            select(SectionRow.job_id, func.count())
                            .where(SectionRow.job_id.in_(job_ids))
                            .group_by(SectionRow.job_id)
                        )
                    ).all()
                )
                distinct = dict(
                    (
                        await s.execute(
                            select(SectionRow.job_id, func.count(func.distinct(SectionRow.index)))
                            .where(SectionRow.job_id.in_(job_ids))
                            .group_by(SectionRow.job_id)
                        )
                    ).all()
                )
            # A section stored twice shows as a second row, or as the book's counter running
            # ahead of its distinct sections (counted twice in the same transaction's update).
            duplicate = sum(
                counts.get(j.id, 0)
                - distinct.get(j.id, 0)
                + max(0, j.sections_completed - distinct.get(j.id, 0))
                for j in jobs
            )
            missing = sum(max(0, j.chapters + 2 - distinct.get(j.id, 0)) for j in jobs)
            return Census(
                books=len(job_ids),
                completed=sum(j.status == "completed" for j in jobs),
                failed=sum(j.status == "failed" for j in jobs),
                duplicate_sections=duplicate,
                missing_sections=missing,
                errors=[j.error for j in jobs if j.error],
            )

        result: Census = self.query(read)
        return result
