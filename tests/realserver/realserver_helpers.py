"""A real `bookgen serve` process on a free 127.0.0.1 port, started and stopped by the test."""

from __future__ import annotations

import os
from pathlib import Path

from bookgen.stack.ports import HOST, free_port
from bookgen.stack.process import Component, bookgen_argv

START_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 25.0


class ServerProcess(Component):
    """`bookgen serve` with only the BOOKGEN_ settings the test gives (none of the caller's)."""

    def __init__(
        self, tmp_path: Path, database_url: str, *, workers: int = 1, **env: str | float | int
    ) -> None:
        self.port = free_port()
        self.workers = workers
        base = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGEN_")}
        full_env = {
            **base,
            "BOOKGEN_DATABASE_URL": database_url,
            "BOOKGEN_TELEMETRY": os.environ.get("BOOKGEN_TEST_TELEMETRY", "false"),
            "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0",
            "BOOKGEN_SIM__JITTER": "0",
            "BOOKGEN_POLL_INTERVAL_S": "0.1",
            "BOOKGEN_JOB_LEASE_S": "2",
            **{key: str(value) for key, value in env.items()},
        }
        argv = bookgen_argv(
            "serve", "--port", str(self.port), "--workers", str(workers), "--log-level", "warning"
        )
        super().__init__(
            "serve",
            argv,
            tmp_path / f"serve-{self.port}.log",
            f"{self.url}/health",
            full_env,
            inherit_env=False,
            ready_timeout_s=START_TIMEOUT_S,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        return super().stop(grace_s)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
