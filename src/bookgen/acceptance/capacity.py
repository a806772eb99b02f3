"""Capacity: the highest request rate one API process sustains on the BookGen mix, p95 under the
latency bound and no errors, while a fixed number of generations run (kept topped up)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance.locust_run import LocustRun
from bookgen.acceptance.project import Project, find_project
from bookgen.acceptance.server import ServeProcess, SimProcess

CHARACTERS = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie")


class Generations:
    """Keeps `count` books in flight on `host` until stopped (submits one per finished book)."""

    def __init__(self, host: str, count: int, chapters: int = 20, words: int = 51_000) -> None:
        self.host = host
        self.count = count
        self.body = {"chapters": chapters, "total_words": words}
        self.submitted = 0
        self.running_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="generations", daemon=True)

    def _submit(self, client: httpx.Client) -> None:
        body = {"character": CHARACTERS[self.submitted % len(CHARACTERS)], **self.body}
        headers = {"X-Client-Id": f"capacity-{uuid.uuid4().hex[:12]}"}
        response = client.post("/api/v1/biographies/generate", json=body, headers=headers)
        if response.status_code == 202:
            self.submitted += 1

    def _count(self, client: httpx.Client, state: str) -> int:
        params: dict[str, str | int] = {"status": state, "page_size": 1}
        return int(client.get("/api/v1/biographies", params=params).json().get("total", 0))

    def _loop(self) -> None:
        """Two light requests every 2 s: top up to `count` jobs waiting or running."""
        with httpx.Client(base_url=self.host, timeout=10.0) as client:
            for _ in range(100_000):  # bounded; each pass sleeps
                if self._stop.is_set():
                    return
                try:
                    running = self._count(client, "in_progress")
                    waiting = self._count(client, "pending")
                    self.running_samples.append(running)
                    for _ in range(max(0, self.count - running - waiting)):
                        self._submit(client)
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self._stop.wait(2.0)

    def __enter__(self) -> Generations:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_running(self, timeout_s: float = 60.0) -> int:
        """Wait until `count` jobs are in progress (or the timeout); returns how many are."""
        for _ in range(int(timeout_s / 0.5)):
            if self.running_samples and self.running_samples[-1] >= self.count:
                break
            self._stop.wait(0.5)
        return self.running_samples[-1] if self.running_samples else 0


def finished_book(host: str, timeout_s: float = 180.0) -> str | None:
    """One small completed book, so the download route is part of the mix."""
    with httpx.Client(base_url=host, timeout=10.0) as client:
        response = client.post(
            "/api/v1/biographies/generate",
            json={"character": "Ada Lovelace", "chapters": 2, "total_words": 1000},
            headers={"X-Client-Id": f"capacity-{uuid.uuid4().hex[:12]}"},
        )
        if response.status_code != 202:
            return None
        job_id = str(response.json()["job_id"])
        for _ in range(int(timeout_s)):
            state = client.get(f"/api/v1/biographies/{job_id}/status").json().get("status")
            if state == "completed":
                return job_id
            if state in ("failed", "cancelled"):
                return None
            time.sleep(1.0)
    return None


def cancel_all(host: str) -> None:
    """Cancel every unfinished job (so a shared server is left idle)."""
    with httpx.Client(base_url=host, timeout=10.0) as client:
        for state in ("pending", "in_progress"):
            for _ in range(50):
                page = client.get(
                    "/api/v1/biographies", params={"status": state, "page_size": 100}
                ).json()
                if not page.get("items"):
                    break
                for item in page["items"]:
                    client.post(f"/api/v1/biographies/{item['job_id']}/cancel")


def run_capacity(
    report_dir: Path,
    host: str | None = None,
    generations: int = 32,
    max_users: int = 3000,
    step_users: int = 10,
    step_time_s: float = 10.0,
    user_rate: float = 20.0,
    p95_ms: float | None = None,
    processes: int = 0,
    settle_s: float = 20.0,
    database_url: str | None = None,
    project: Project | None = None,
) -> dict[str, Any]:
    """Run the capacity search; returns the capacity report (also written as capacity.json)."""
    report_dir = report_dir.expanduser().resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    project = project or find_project()
    if p95_ms is None:  # the strictest route group's p95 target, generated from slo.yaml
        thresholds = json.loads(project.thresholds.read_text())
        p95_ms = min(float(v) for v in thresholds["p95_ms"].values())
    server_pids: list[int] = []
    with ExitStack() as stack:
        if host is None:
            sim = stack.enter_context(SimProcess(report_dir / "sim"))
            env = {
                "BOOKGEN_JOB_CONCURRENCY": str(max(1, generations)),
                "BOOKGEN_MAX_QUEUE": str(max(200, generations * 4)),
                **({"BOOKGEN_DATABASE_URL": database_url} if database_url else {}),
            }
            server = stack.enter_context(
                ServeProcess(report_dir / "serve", 1, env, llm_url=f"{sim.url}/v1")
            )
            host = server.url
            server_pids = server.pids()
        finished_book(host)
        books = stack.enter_context(Generations(host, generations))
        running = books.wait_running()
        print(f"capacity: {running} generations running on {host}", flush=True)
        idle_cpu, idle_t = cpu_seconds(server_pids), time.monotonic()
        time.sleep(settle_s)  # past the burst of 32 outlines and first chapters
        generations_cpu_rate = (cpu_seconds(server_pids) - idle_cpu) / (time.monotonic() - idle_t)
        steps = max(1, max_users // step_users)
        run = LocustRun(
            "capacity",
            host,
            report_dir,
            users=max_users,
            duration_s=steps * step_time_s + 5,
            spawn_rate=step_users * 4,
            processes=processes,
            project=project,
            extra=[
                "--step-users", str(step_users), "--step-time", f"{step_time_s:g}",
                "--capacity-user-rate", f"{user_rate:g}", "--capacity-p95-ms", f"{p95_ms:g}",
                "--no-gate",
            ],
        )  # fmt: skip
        first = len(books.running_samples)
        cpu_before, run_t = cpu_seconds(server_pids), time.monotonic()
        code = run.run(echo=False)
        cpu_used = cpu_seconds(server_pids) - cpu_before
        # What the requests cost: the run's CPU less what the generations alone were using.
        http_cpu = cpu_used - generations_cpu_rate * (time.monotonic() - run_t)
        during = books.running_samples[first:] or [0]
        stack.callback(cancel_all, host)
        path = report_dir / "capacity.json"
        report: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        report.update(
            {
                "locust_exit_code": code,
                "host": host,
                "generations_target": generations,
                "generations_running_min": min(during),
                "generations_running_max": max(during),
                "generations_running_samples": during[-100:],
                "command": " ".join(run.argv()),
            }
        )
        served = locust_requests(report_dir / "stats.json")
        if server_pids and served:
            # Machine-independent-ish: what one request of the mix costs the API process.
            report["generations_cpu_share_of_a_core"] = generations_cpu_rate
            report["api_cpu_ms_per_request"] = 1000.0 * http_cpu / served
            report["projected_rps_per_core"] = served / http_cpu if http_cpu > 0 else None
        path.write_text(json.dumps(report, indent=2))
        return report


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def locust_requests(stats_json: Path) -> int:
    """Requests Locust sent in the whole run (its --json-file output)."""
    if not stats_json.is_file():
        return 0
    return sum(int(entry.get("num_requests", 0)) for entry in json.loads(stats_json.read_text()))
