"""A real `bookgen serve` or `bookgen sim-llm` process on a free 127.0.0.1 port."""

from __future__ import annotations

from pathlib import Path

import httpx

from bookgen.stack.ports import HOST, free_port
from bookgen.stack.process import Component, bookgen_argv


class SimProcess(Component):
    """`bookgen sim-llm`: the simulated model in its own process (so it takes no API CPU)."""

    def __init__(
        self,
        run_dir: Path,
        tokens_per_second: float | None = None,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.port = free_port()
        argv = bookgen_argv("sim-llm", "--host", HOST, "--port", str(self.port))
        if tokens_per_second is not None:
            argv += ["--tokens-per-second", f"{tokens_per_second:g}"]
        super().__init__(
            "sim",
            argv,
            Path(run_dir) / "sim.log",
            f"{self.url}/health",
            {"PYTHONUNBUFFERED": "1", **(env or {})},
            ready_timeout_s=ready_timeout_s,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def configure(self, **knobs: float) -> dict[str, object]:
        """Change the sim's knobs at runtime (PATCH /admin/config)."""
        response = httpx.patch(f"{self.url}/admin/config", json=knobs, timeout=5.0)
        response.raise_for_status()
        return dict(response.json())


class ServeProcess(Component):
    """`bookgen serve --workers N` with its own SQLite file, against `llm_url` if given."""

    def __init__(
        self,
        run_dir: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        llm_url: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.workers = workers
        base = {
            "PYTHONUNBUFFERED": "1",
            "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{Path(run_dir) / 'bookgen.db'}",
        }
        if llm_url:
            base["BOOKGEN_LLM_BASE_URL"] = llm_url
        argv = bookgen_argv(
            "serve", "--workers", str(workers), "--host", HOST, "--port", str(self.port)
        )
        super().__init__(
            "serve",
            argv,
            Path(run_dir) / "serve.log",
            f"{self.url}/health",
            {**base, **(env or {})},
            ready_timeout_s=ready_timeout_s,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"
