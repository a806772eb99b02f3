"""One supervised child process: its own process group and log, ready by URL or TCP port.

Every server the stack, the acceptance runs, the real-server tests and the scripts start goes
through `Component`, so each is stopped the same way: SIGTERM to the process it started (which
stops its own children in order), then SIGTERM and finally SIGKILL to its process group and every
PID remembered in its tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import psutil

_PR_SET_PDEATHSIG = 1


class ComponentError(RuntimeError):
    """A component exited, or did not become ready in time."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _as_user(user: str) -> Callable[[], None]:
    """A pre-exec step that becomes `user`, then asks for the parent-death signal.

    Not Popen(user=...): the kernel clears the parent-death signal when the user changes.
    """
    entry = pwd.getpwnam(user)

    def switch() -> None:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        _die_with_parent()

    return switch


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def bookgen_argv(*args: str) -> list[str]:
    """The `bookgen` command of this interpreter (its console script, else `python -c`)."""
    script = Path(sys.executable).with_name("bookgen")
    if script.is_file():
        return [str(script), *args]
    found = shutil.which("bookgen")
    if found:
        return [found, *args]
    return [
        sys.executable,
        "-c",
        "import sys; from bookgen.cli import main; sys.exit(main())",
        *args,
    ]


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text) or "(no output)"


@dataclass(eq=False)
class Component:
    """A command, its log file, and how to tell it is ready (`ready_url` 2xx, else `ready_tcp`)."""

    name: str
    argv: Sequence[str]
    log: Path
    ready_url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ready_tcp: tuple[str, int] | None = None
    # False: `env` is the whole environment (e.g. a test that must not see the caller's BOOKGEN_*).
    inherit_env: bool = True
    ready_timeout_s: float = 60.0
    # Run as this system user (when root), e.g. PostgreSQL, which refuses to run as root.
    user: str | None = None
    cwd: Path | None = None
    # What asks it to stop cleanly (PostgreSQL's SIGTERM waits for every client to leave).
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    # Every PID seen in its tree, so a child that left the process group is still stopped.
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def address(self) -> str:
        """Where it answers: the readiness URL, else host:port, else its log."""
        if self.ready_url:
            return self.ready_url
        if self.ready_tcp:
            return f"{self.ready_tcp[0]}:{self.ready_tcp[1]}"
        return str(self.log)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.inherit_env else dict(self.env)
        self.seen = {}
        with self.log.open("ab") as out:
            try:
                self.process = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_as_user(self.user) if self.user else _die_with_parent,
                )
            except OSError as exc:
                raise ComponentError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from None
        with contextlib.suppress(psutil.Error):
            self.seen[self.process.pid] = psutil.Process(self.process.pid)

    def run(self, timeout_s: float | None = None) -> Self:
        """Start and wait until ready; on failure stop it again and raise."""
        self.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop(grace_s=2.0)
            raise
        return self

    def restart(self, grace_s: float = 10.0, timeout_s: float | None = None) -> Self:
        self.stop(grace_s)
        return self.run(timeout_s)

    def __enter__(self) -> Self:
        return self.run()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what runs ------------------------------------------------------------------------
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

    def pids(self) -> list[int]:
        """The started process first, then its live descendants."""
        return [p.pid for p in self.tree()]

    def rss_bytes(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                found[proc.pid] = proc.memory_info().rss
        return found

    # --- readiness ------------------------------------------------------------------------
    def _probe(self, client: httpx.Client, url: str | None) -> str | None:
        """None when ready, else why not."""
        if url:
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return None if response.is_success else f"HTTP {response.status_code}"
        if self.ready_tcp:
            try:
                socket.create_connection(self.ready_tcp, timeout=1.0).close()
            except OSError as exc:
                return exc.strerror or type(exc).__name__
        return None

    def wait_ready(self, timeout_s: float | None = None, url: str | None = None) -> None:
        """Poll `url` (default `ready_url`, else `ready_tcp`) until it answers, or raise."""
        url = url or self.ready_url
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        last: str | None = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.process.returncode if self.process else None
                    raise ComponentError(
                        f"{self.name} exited with code {code} before it was ready; "
                        f"last lines of {self.log}:\n{tail(self.log)}"
                    )
                last = self._probe(client, url)
                if last is None:
                    self.tree()
                    return
                time.sleep(0.2)
        raise ComponentError(
            f"{self.name} not ready at {url or self.address} after {timeout_s:.0f} s ({last}); "
            f"last lines of {self.log}:\n{tail(self.log)}"
        )

    # --- signals --------------------------------------------------------------------------
    def send(self, sig: signal.Signals, *, group: bool = False) -> None:
        """Signal the started process (its remembered PID), or its whole process group."""
        if not self.alive():
            raise ComponentError(f"{self.name} is not running")
        assert self.process is not None
        if group:
            self._signal_group(sig)
        else:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the group and every remembered PID at once: a crash, nothing handed back."""
        if self.process is None:
            return
        processes = self.tree()
        if processes:
            self._signal_group(signal.SIGKILL)
            for proc in processes:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            self._wait(processes, timeout_s=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """`stop_signal`, SIGKILL whatever is left after `grace_s`; reap; return the exit code."""
        if self.process is None:
            return None
        processes = self.tree()
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)  # a paused (SIGSTOPped) process cannot exit
        deadline = time.monotonic() + grace_s
        if self.process.poll() is None:
            # One signal to the leader: a supervisor forwards it, and uvicorn or Celery take a
            # second one as "exit now", skipping their graceful shutdown.
            self.process.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        alive = [p for p in processes if _running(p)]
        if alive:
            self._signal_group(signal.SIGTERM)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            alive = self._wait(alive, timeout_s=max(0.5, deadline - time.monotonic()))
        if alive:
            self._signal_group(signal.SIGKILL)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            self._wait(alive, timeout_s=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        return self.process.returncode

    def _wait(self, processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
        """Wait for `processes` to end; those still alive. The started one is reaped through
        Popen, which would otherwise lose its exit code to psutil."""
        assert self.process is not None
        leader = [p for p in processes if p.pid == self.process.pid]
        others = [p for p in processes if p.pid != self.process.pid]
        deadline = time.monotonic() + timeout_s
        if leader:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
        return alive + (leader if self.process.poll() is None else [])

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
