"""Clients for the fault switches: the service's debug routes and the sim's admin route."""

from __future__ import annotations

from typing import Any

import httpx

_ATTEMPTS = 200
Report = dict[str, Any]


class FaultError(RuntimeError):
    """A fault switch could not be reached or refused the change."""


class ApiFaults:
    """The debug routes of every worker behind one SO_REUSEPORT port.

    A request naming a worker is answered 421 by the others; each attempt opens a new connection,
    which the kernel hashes to a worker, so worker i is reached within a few attempts.
    """

    def __init__(self, api_url: str, workers: int, timeout_s: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.workers = workers
        self._timeout = timeout_s

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
                )
            if response.status_code == 421:
                continue
            if response.status_code == 404:
                raise FaultError(
                    f"{path} not found: start the stack with faults enabled (bookgen up --faults)"
                )
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
