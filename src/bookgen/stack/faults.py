"""Clients for the fault switches: the service's debug routes and the sim's admin route."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

_ATTEMPTS = 200
Report = dict[str, Any]


class FaultError(RuntimeError):
    """A fault switch could not be reached or refused the change."""


def debug_headers(token: str | None) -> dict[str, str]:
    """What a request to the service's debug routes carries (`Stack.debug_token`)."""
    return {"X-Debug-Token": token} if token else {}


class ApiFaults:
    """The debug routes of every worker behind one SO_REUSEPORT port.

    A request naming a worker is answered 421 by the others; each attempt opens a new connection,
    which the kernel hashes to a worker, so worker i is reached within a few attempts.
    """

    def __init__(
        self, api_url: str, workers: int, timeout_s: float = 30.0, token: str | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.workers = workers
        self._timeout = timeout_s
        self.headers = debug_headers(token)

    def on_worker(
        self, worker: int, method: str, path: str, json: dict[str, Any] | None = None
    ) -> Report:
        body = {**(json or {}), "worker": worker}
        params = {"worker": str(worker)} if method == "DELETE" else None
        last = "no attempt"
        for _ in range(_ATTEMPTS):
            with httpx.Client(timeout=self._timeout) as client:  # a new connection each time
                response = client.request(
                    method,
                    f"{self.api_url}{path}",
                    json=None if method == "DELETE" else body,
                    params=params,
                    headers=self.headers,
                )
            if response.status_code == 421:
                continue
            if response.status_code == 404:
                raise FaultError(
                    f"{path} not found: start the stack with faults enabled (bookgen up --faults)"
                )
            if response.status_code == 401:
                raise FaultError(f"{path} refused the debug token: pass the stack's debug_token")
            if not response.is_success:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                break
            report: Report = response.json()
            return report
        raise FaultError(f"{method} {path} on worker {worker} failed: {last}")

    def on_workers(
        self, method: str, path: str, json: dict[str, Any] | None = None, worker: int | None = None
    ) -> list[Report]:
        targets = range(self.workers) if worker is None else (worker,)
        return [self.on_worker(i, method, path, json) for i in targets]

    def latency(self, seconds: float, worker: int | None = None) -> list[Report]:
        """Added before every API route's handler."""
        return self.on_workers("PUT", "/debug/faults", {"latency_s": seconds}, worker)

    def errors(self, ratio: float, worker: int | None = None) -> list[Report]:
        """Share of API requests answered 500."""
        return self.on_workers("PUT", "/debug/faults", {"error_ratio": ratio}, worker)

    def balloon(self, mib: int, worker: int = 0) -> Report:
        return self.on_worker(worker, "POST", "/debug/balloon", {"mib": mib})

    def release(self, worker: int | None = None) -> list[Report]:
        return self.on_workers("DELETE", "/debug/balloon", worker=worker)

    def pause(self, worker: int | None = None) -> list[Report]:
        return self.on_workers("POST", "/debug/pause", {}, worker)

    def resume(self, worker: int | None = None) -> list[Report]:
        return self.on_workers("POST", "/debug/resume", {}, worker)

    def state(self, worker: int) -> Report:
        return self.on_worker(worker, "PUT", "/debug/faults", {})

    def reset(self) -> None:
        self.on_workers("PUT", "/debug/faults", {"latency_s": 0.0, "error_ratio": 0.0})
        self.release()
        self.resume()


class SimFaults:
    """The simulated model's knobs (`GET|PATCH /admin/config`): errors, 429s, latency, stalls."""

    def __init__(self, sim_url: str, timeout_s: float = 10.0) -> None:
        self._client = httpx.Client(base_url=sim_url.rstrip("/"), timeout=timeout_s)
        self._initial = self.config()

    def config(self) -> Report:
        response = self._client.get("/admin/config")
        response.raise_for_status()
        config: Report = response.json()
        return config

    def set(self, **knobs: float) -> Report:
        response = self._client.patch("/admin/config", json=knobs)
        if not response.is_success:
            raise FaultError(f"sim refused {knobs}: HTTP {response.status_code} {response.text}")
        config: Report = response.json()
        return config

    def reset(self) -> Report:
        """Back to the knobs the sim had when this client was made."""
        return self.set(**self._initial)

    def close(self) -> None:
        self._client.close()


class ScrapeJobs:
    """Jobs of a running Prometheus (`--web.enable-lifecycle`): take one out of its config and
    reload, as a lost service discovery would; `restore` puts the config back as it was."""

    def __init__(self, config_path: Path, prometheus_url: str, timeout_s: float = 10.0) -> None:
        self.config_path = config_path
        self.prometheus_url = prometheus_url.rstrip("/")
        self._timeout = timeout_s
        self._original: str | None = None

    def drop(self, job: str) -> None:
        """Every target of `job` gone, the job itself kept: Prometheus marks the series of the
        targets it stops scraping stale (a job removed whole keeps them for the lookback)."""
        text = self.config_path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
        found = [j for j in config.get("scrape_configs") or [] if j.get("job_name") == job]
        if not found:
            raise FaultError(f"Prometheus scrapes no job {job!r}")
        if self._original is None:
            self._original = text
        for entry in found:
            entry["static_configs"] = []
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self._reload()
        self._wait_unscraped(job)

    def _wait_unscraped(self, job: str) -> None:
        """Until no active target of `job` is left (discovery applies a reload within seconds)."""
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=self.prometheus_url, timeout=self._timeout) as client:
            while time.monotonic() < deadline:
                data = client.get("/api/v1/targets", params={"state": "active"}).json()
                targets = data["data"]["activeTargets"]
                if not [t for t in targets if t["labels"].get("job") == job]:
                    return
                time.sleep(0.1)
        raise FaultError(f"Prometheus still scrapes {job!r} 30 s after the reload")

    def restore(self) -> None:
        if self._original is not None:
            self.config_path.write_text(self._original, encoding="utf-8")
            self._original = None
            self._reload()

    def _reload(self) -> None:
        response = httpx.post(f"{self.prometheus_url}/-/reload", timeout=self._timeout)
        if not response.is_success:
            raise FaultError(f"Prometheus refused the reload: HTTP {response.status_code}")
