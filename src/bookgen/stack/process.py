"""One supervised child: its own process group, stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

_PR_SET_PDEATHSIG = 1


class ComponentError(RuntimeError):
    """A component exited, or did not become ready in time."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text) or "(no output)"


@dataclass
class Component:
    name: str
    argv: Sequence[str]
    log: Path
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # Every PID seen in its tree, so a child that left the process group is still stopped.
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        with contextlib.suppress(psutil.Error):
            self.seen[self.process.pid] = psutil.Process(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The live processes started for this component, refreshing `seen`."""
        if self.process is None:
            return []
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        # psutil.Process remembers its start time, so a recycled PID is never mistaken for ours.
        self.seen = {**self.seen, **found}
        return [p for p in self.seen.values() if _running(p)]

    def wait_ready(self, timeout_s: float, url: str | None = None) -> None:
        """Poll `url` (default `ready_url`) until it answers 2xx, or raise with the log tail."""
        url = url or self.ready_url
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.process.returncode if self.process else None
                    raise ComponentError(
                        f"{self.name} exited with code {code} before it was ready; "
                        f"last lines of {self.log}:\n{tail(self.log)}"
                    )
                try:
                    response = client.get(url)
                    if response.is_success:
                        self.tree()
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.2)
        raise ComponentError(
            f"{self.name} not ready at {url} after {timeout_s:.0f} s ({last}); "
            f"last lines of {self.log}:\n{tail(self.log)}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after `grace_s`; reap the child."""
        if self.process is None:
            return
        processes = self.tree()
        self._signal_group(signal.SIGTERM)
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)  # a paused (SIGSTOPped) process cannot exit
                proc.terminate()
        _, alive = psutil.wait_procs(processes, timeout=grace_s)
        if alive:
            self._signal_group(signal.SIGKILL)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
