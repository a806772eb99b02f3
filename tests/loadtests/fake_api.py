"""A tiny stand-in for the BookGen v1 API, to prove the Locust gate both ways.

It answers every route group with a correct body; `mode` makes it breach a target on purpose:
`slow` sleeps longer than the latency bound on every request, `errors` answers 500 to a share
of requests, `wrong-body` answers 200 with a body that is not what the route promises.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOOK = " ".join(["Ada wrote the first program for an engine that was never built."] * 20)


class _State:
    def __init__(self, mode: str, slow_s: float, error_every: int) -> None:
        self.mode = mode
        self.slow_s = slow_s
        self.error_every = error_every
        self.count = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    done = time.monotonic() - job["t0"] > 1.0
    status = job["status"] if job["status"] == "cancelled" else ("completed" if done else "pending")
    total = job["chapters"]
    finished = total if status == "completed" else 0
    return {
        "job_id": job["job_id"],
        "status": status,
        "character": job["character"],
        "progress": {
            "chapters_completed": finished,
            "total_chapters": total,
            "percentage": 100.0 * finished / total,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the access log
        return

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if content_type.startswith("text/plain"):
            self.send_header("Content-Disposition", 'attachment; filename="book.txt"')
        self.end_headers()
        self.wfile.write(data)

    def _fault(self) -> bool:
        state = self.server.state
        with state.lock:
            state.count += 1
            count = state.count
        if state.mode == "slow":
            time.sleep(state.slow_s)
        if state.mode == "errors" and count % state.error_every == 0:
            self._send(500, {"detail": "injected"})
            return True
        if state.mode == "wrong-body":
            self._send(200, {"unexpected": True})
            return True
        return False

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self._fault():
            return
        path = self.path.split("?")[0]
        jobs = self.server.state.jobs
        if path == "/health":
            self._send(200, {"status": "healthy", "timestamp": time.time(), "version": "fake"})
        elif path == "/ready":
            self._send(200, {"status": "ready"})
        elif path == "/api/v1/status":
            config = {"chapters": 20, "total_words": 51000, "model": "fake"}
            self._send(200, {"status": "operational", "api_version": "v1", "configuration": config})
        elif path == "/api/v1/biographies":
            self._send(200, {"items": [_job_view(j) for j in list(jobs.values())[-20:]]})
        elif path == "/metrics":
            self._send(200, "bookgen_http_requests_total 1\n", "text/plain; version=0.0.4")
        elif path.startswith("/api/v1/biographies/"):
            parts = path.split("/")
            job = jobs.get(parts[4])
            if job is None:
                self._send(404, {"detail": "unknown job"})
            elif parts[5] == "status":
                self._send(200, _job_view(job))
            elif _job_view(job)["status"] != "completed":
                self._send(400, {"detail": "not finished"})
            else:
                self._send(200, BOOK, "text/plain; charset=utf-8")
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:
        if self._fault():
            return
        body = self._body()
        path = self.path.split("?")[0]
        jobs = self.server.state.jobs
        if path == "/api/v1/biographies/generate":
            job_id = uuid.uuid4().hex
            jobs[job_id] = {
                "job_id": job_id,
                "character": body["character"],
                "chapters": body.get("chapters", 20),
                "status": "pending",
                "t0": time.monotonic(),
            }
            self._send(202, {"job_id": job_id, "status": "pending", "character": body["character"]})
        elif path == "/api/v1/sources/validate":
            sources = body["sources"]
            results = [{"valid": bool(s.get("title"))} for s in sources]
            valid = sum(r["valid"] for r in results)
            self._send(
                200,
                {
                    "total_sources": len(sources),
                    "valid_sources": valid,
                    "invalid_sources": len(sources) - valid,
                    "results": results,
                },
            )
        elif path.endswith("/cancel"):
            job = jobs.get(path.split("/")[4])
            if job is None:
                self._send(404, {"detail": "unknown job"})
            else:
                job["status"] = "cancelled"
                self._send(200, _job_view(job))
        else:
            self._send(404, {"detail": "not found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


@contextmanager
def fake_api(mode: str = "healthy", slow_s: float = 0.3, error_every: int = 5) -> Iterator[str]:
    """Serve the fake API on a free 127.0.0.1 port; yields its base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = _State(mode, slow_s, error_every)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _PromHandler(BaseHTTPRequestHandler):
    """Answers every instant query with one sample of the same value, as Prometheus would."""

    server: _PromServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        sample = {"metric": {}, "value": [time.time(), str(self.server.value)]}
        data = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())


class _PromServer(ThreadingHTTPServer):
    daemon_threads = True
    value: float


@contextmanager
def fake_prometheus(value: float) -> Iterator[str]:
    """A Prometheus whose every query answers `value`: a server side that disagrees with Locust
    (p95 `value` s, `value` requests, error ratio 1) for any `value` far from the real figures."""
    server = _PromServer(("127.0.0.1", 0), _PromHandler)
    server.value = value
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if __name__ == "__main__":  # manual use: python tests/loadtests/fake_api.py [mode]
    import sys

    with fake_api(sys.argv[1] if len(sys.argv) > 1 else "healthy") as url:
        print(url, flush=True)
        with suppress(KeyboardInterrupt):
            time.sleep(3600)
