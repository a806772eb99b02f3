"""A real `bookgen serve` process on a free 127.0.0.1 port, for stress and capacity runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import psutil

from bookgen.stack.ports import HOST, free_port


def bookgen_argv(*args: str) -> list[str]:
    return [
        sys.executable, "-c", "import sys; from bookgen.cli import main; sys.exit(main())", *args
    ]  # fmt: skip


class _Process:
    """A `bookgen` subcommand in its own session, healthy once `health_path` answers 200."""

    name = "process"
    health_path = "/health"

    def __init__(
        self, run_dir: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 60.0
    ) -> None:
        self.run_dir = Path(run_dir)
        self.env = env or {}
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log_path = self.run_dir / f"{self.name}.log"
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {log_path}")
            try:
                if httpx.get(self.url + self.health_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.name} not healthy in {self.ready_timeout_s:.0f} s; see {log_path}"
        )

    def pids(self) -> list[int]:
        """The serving processes: the parent and its children (the workers, the in-process sim)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for pid in self.pids():
            try:
                found[pid] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what it started
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimProcess(_Process):
    """`bookgen sim-llm`: the simulated model in its own process (so it takes no API CPU)."""

    name = "sim"

    def __init__(
        self,
        run_dir: Path,
        tokens_per_second: float | None = None,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(run_dir, env, ready_timeout_s)
        self.tokens_per_second = tokens_per_second

    def argv(self) -> list[str]:
        argv = bookgen_argv("sim-llm", "--host", HOST, "--port", str(self.port))
        if self.tokens_per_second is not None:
            argv += ["--tokens-per-second", f"{self.tokens_per_second:g}"]
        return argv

    def configure(self, **knobs: float) -> dict[str, object]:
        """Change the sim's knobs at runtime (PATCH /admin/config)."""
        response = httpx.patch(f"{self.url}/admin/config", json=knobs, timeout=5.0)
        response.raise_for_status()
        return dict(response.json())


class ServeProcess(_Process):
    """`bookgen serve --workers N` with its own SQLite file, against `llm_url` if given."""

    name = "serve"

    def __init__(
        self,
        run_dir: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        llm_url: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        base = {"BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{Path(run_dir) / 'bookgen.db'}"}
        if llm_url:
            base["BOOKGEN_LLM_BASE_URL"] = llm_url
        super().__init__(run_dir, {**base, **(env or {})}, ready_timeout_s)
        self.workers = workers

    def argv(self) -> list[str]:
        return bookgen_argv(
            "serve", "--workers", str(self.workers), "--host", HOST, "--port", str(self.port)
        )
