"""Run Locust headless as a subprocess with a profile's users, shape, gate and report paths."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bookgen.acceptance.project import Project, find_project


@dataclass(frozen=True)
class Profile:
    user: str
    shape: str
    users: int
    duration_s: float
    extra: tuple[str, ...] = ()


# StressTestUser sends no ready, download or cancel requests: the gate requires only the others.
STRESS_GROUPS = "health,status,job-status,list,sources,metrics,generate"
STRESS_EXTRA = ("--step-users", "10", "--step-time", "15", "--gate-groups", STRESS_GROUPS)

PROFILES: dict[str, Profile] = {
    "acceptance": Profile("BookGenUser", "steady", 10, 120),
    "stress": Profile("StressTestUser", "step", 60, 120, STRESS_EXTRA),
    "spike": Profile("BookGenUser", "spike", 50, 180),
    "soak": Profile("BookGenUser", "soak", 10, 1800),
    # The search climbs until p95 or errors break; users and time are only a safety ceiling
    # (3,000 users x 20 req/s is far past what one API process serves).
    "capacity": Profile(
        "CapacityUser", "capacity", 3000, 3000, ("--step-users", "10", "--step-time", "10")
    ),
}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `5m`, `1h30m`."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 90s, 5m or 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in parts)


def loadtests_dir(project: Project | None = None) -> Path:
    """The project's loadtests/ folder (see `bookgen.acceptance.project`)."""
    return (project or find_project()).loadtests


@dataclass
class LocustRun:
    """One headless Locust run; `argv()` is the exact command, `run()` executes it.

    Every path handed to Locust is absolute and Locust runs in the report folder, so where the
    command was started from changes nothing.
    """

    profile: str
    host: str
    report_dir: Path
    users: int | None = None
    duration_s: float | None = None
    spawn_rate: float | None = None
    processes: int = 0
    prometheus_url: str = ""
    thresholds: Path | None = None
    min_rps: float | None = None
    extra: list[str] = field(default_factory=list)
    project: Project | None = None

    def __post_init__(self) -> None:
        self.report_dir = Path(self.report_dir).expanduser().resolve()
        self.project = self.project or find_project()
        if self.thresholds is not None:
            self.thresholds = Path(self.thresholds).expanduser().resolve()

    @property
    def spec(self) -> Profile:
        return PROFILES[self.profile]

    @property
    def gate_report(self) -> Path:
        return self.report_dir / "gate.json"

    def argv(self) -> list[str]:
        assert self.project is not None, "set in __post_init__"
        spec = self.spec
        users = self.users or spec.users
        duration = int(self.duration_s or spec.duration_s)
        rate = self.spawn_rate or (users if spec.shape != "soak" else max(1.0, users / 10))
        out = self.report_dir
        argv = [
            sys.executable, "-m", "locust",
            "-f", self.project.locustfiles,
            spec.user, "--headless", "--shape", spec.shape,
            "--users", str(users), "--spawn-rate", f"{rate:g}", "--run-time", f"{duration}s",
            "--stop-timeout", "5", "--host", self.host,
            "--html", str(out / "report.html"), "--csv", str(out / "stats"), "--csv-full-history",
            "--json-file", str(out / "stats"), "--gate-report", str(self.gate_report),
            "--logfile", str(out / "locust.log"), "--only-summary",
            *spec.extra,
        ]  # fmt: skip
        if spec.shape == "capacity":
            argv += ["--capacity-report", str(out / "capacity.json")]
        if self.processes:
            argv += ["--processes", str(self.processes)]
        if self.prometheus_url:
            argv += ["--prometheus-url", self.prometheus_url]
        argv += ["--thresholds", str(self.thresholds or self.project.thresholds)]
        if self.min_rps is not None:
            argv += ["--gate-min-rps", f"{self.min_rps:g}"]
        return argv + self.extra

    def start(self) -> subprocess.Popen[bytes]:
        """Start Locust; its console output goes to the report folder's locust-console.txt."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        (self.report_dir / "command.txt").write_text(" ".join(argv) + "\n")
        console = (self.report_dir / "locust-console.txt").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            argv, stdout=console, stderr=subprocess.STDOUT, cwd=self.report_dir, env=env
        )

    def run(self, echo: bool = True) -> int:
        proc = self.start()
        limit = (self.duration_s or self.spec.duration_s) + 120
        deadline = time.monotonic() + limit
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            stop(proc)
        if echo:
            sys.stdout.write(self.console())
        return int(proc.returncode)

    def console(self) -> str:
        path = self.report_dir / "locust-console.txt"
        return path.read_text(errors="replace") if path.is_file() else ""

    def gate(self) -> dict[str, Any] | None:
        path = self.gate_report
        return dict(json.loads(path.read_text())) if path.is_file() else None


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """End a Locust we started (SIGTERM lets it write its reports), SIGKILL after a grace."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with` blocks stop every process this command started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def use_api_key(key: str | None) -> None:
    """Hand the API key to everything this command runs: Locust (its users read
    BOOKGEN_API_KEY) and its own requests. Through the environment, so it is never on a
    command line (visible to every user of the machine in the process list)."""
    if key:
        os.environ["BOOKGEN_API_KEY"] = key


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())
