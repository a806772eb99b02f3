"""`bookgen serve`: the API with in-process job workers; N worker processes share one port."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType

import click
import uvicorn

from bookgen.service.settings import get_settings

APP_FACTORY = "bookgen.asgi:build_app"
RESTART_DELAY_S = 1.0
STOP_GRACE_S = 20.0
QUICK_EXIT_S = 5.0
MAX_QUICK_EXITS = 5
_PR_SET_PDEATHSIG = 1
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn, except that a stop signal ends in exit code 0 after the graceful shutdown.

    A supervised worker handles SIGTERM only and ignores SIGINT: a Ctrl+C reaches the whole
    process group, and the supervisor's SIGTERM must be the one signal a worker gets (uvicorn
    treats a second signal as "exit now", skipping the clean hand-back of running jobs).
    """

    def __init__(self, config: uvicorn.Config, signals: tuple[signal.Signals, ...]) -> None:
        super().__init__(config)
        self.signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in self.signals}
        ignored = [sig for sig in HANDLED_SIGNALS if sig not in self.signals]
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in ignored}
        try:
            yield
        finally:
            for sig, handler in {**originals, **previous}.items():
                signal.signal(sig, handler)


def run_worker(host: str, port: int, *, reuse_port: bool, log_level: str, access_log: bool) -> None:
    """One process: bind (with SO_REUSEPORT when siblings share the port) and serve."""
    sock = listening_socket(host, port, reuse_port=reuse_port)
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
        backlog=2048,
        # The app reads X-Forwarded-For itself, from BOOKGEN_FORWARDED_ALLOW_IPS only; uvicorn
        # would otherwise believe it from 127.0.0.1, letting a local client choose its address.
        proxy_headers=False,
    )
    signals = (signal.SIGTERM,) if reuse_port else HANDLED_SIGNALS
    _Server(config, signals).run(sockets=[sock])


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to this worker if the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts N workers, restarts any that die, and stops them all on SIGINT/SIGTERM."""

    def __init__(self, args: list[str], workers: int) -> None:
        self.args = args
        self.workers = workers
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.quick_exits = 0
        self.stopping = False

    def spawn(self, index: int) -> None:
        env = {**os.environ, "BOOKGEN_WORKER_INDEX": str(index)}
        command = [sys.executable, "-m", "bookgen.cli.serve", *self.args]
        self.children[index] = subprocess.Popen(command, env=env)
        self.started[index] = time.monotonic()

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        for index in range(self.workers):
            self.spawn(index)
        while not self.stopping:
            for index, child in list(self.children.items()):
                if child.poll() is not None and not self.stopping:
                    click.echo(
                        f"worker {index} exited with {child.returncode}; restarting", err=True
                    )
                    time.sleep(RESTART_DELAY_S)
                    self.spawn(index)
            time.sleep(0.2)
        return self.shutdown()

    def shutdown(self) -> int:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 0


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="one line per request; default: on with telemetry (BOOKGEN_ACCESS_LOG), else off",
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    help="proxies whose X-Forwarded-For is believed, comma separated, '*' for any "
    "(BOOKGEN_FORWARDED_ALLOW_IPS; default: none)",
)
@click.option(
    "--sim",
    is_flag=True,
    help="write books with the built-in simulated model (BOOKGEN_LLM_SIM=true)",
)
def serve(
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool | None,
    forwarded_allow_ips: str | None,
    sim: bool = False,
) -> None:
    """Run the API and its job workers (the simulated model too, unless BOOKGEN_LLM_BASE_URL).

    With BOOKGEN_BROKER_URL set, the API only admits, enqueues and reads; `bookgen worker`
    processes write the books.
    """
    # API keys are required unless this listens on loopback only (BOOKGEN_AUTH=auto).
    os.environ["BOOKGEN_LISTEN_HOST"] = host
    if forwarded_allow_ips is not None:
        os.environ["BOOKGEN_FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
    if sim:
        os.environ["BOOKGEN_LLM_SIM"] = "true"  # the workers inherit it
    get_settings.cache_clear()
    check_provider()
    if access_log is not None:
        # Workers and the app factory read it from the environment, as every other setting.
        os.environ["BOOKGEN_ACCESS_LOG"] = "true" if access_log else "false"
        get_settings.cache_clear()
    # With telemetry on, its JSON access log replaces uvicorn's (which it then silences).
    access_log = bool(access_log)
    if workers == 1:
        os.environ.setdefault("BOOKGEN_WORKER_INDEX", "0")
        run_worker(host, port, reuse_port=False, log_level=log_level, access_log=access_log)
        return
    # Fail fast on a busy port; a socket that is bound but not listening takes no connections.
    try:
        listening_socket(host, port, reuse_port=True).close()
    except OSError as error:
        raise click.ClickException(f"cannot bind {host}:{port}: {error}") from error
    settings = get_settings()
    if settings.rate_limit_storage.startswith("async+memory"):
        click.echo(
            f"note: the rate limit ({settings.rate_limit}) is counted per worker, so {workers} "
            "workers allow up to "
            f"{workers}x; set BOOKGEN_RATE_LIMIT_STORAGE=async+redis://HOST:6379 to share it",
            err=True,
        )
    args = [host, str(port), log_level, "1" if access_log else "0"]
    sys.exit(Supervisor(args, workers).run())


def check_provider() -> None:
    """Stop here, with the one line naming the fix, on a provider setting that is incomplete
    or contradictory (the API tier checks too: it shares the workers' environment)."""
    from bookgen.service.llm.errors import LLMConfigError
    from bookgen.service.llm.provider import resolve_provider

    try:
        resolve_provider(get_settings())
    except LLMConfigError as error:
        raise click.ClickException(str(error)) from None


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def api(ctx: click.Context) -> None:
    """The API tier alone: admits, enqueues and reads (`serve` options; needs a broker)."""
    if not get_settings().broker_url:
        raise click.ClickException(
            "the API tier needs a broker: set BOOKGEN_BROKER_URL (or run `bookgen serve`, which "
            "also writes the books in-process)"
        )
    serve.main(args=ctx.args, prog_name="bookgen api", standalone_mode=False)


def _worker_main(argv: list[str]) -> None:
    host, port, log_level, access_log = argv
    _die_with_parent()
    run_worker(host, int(port), reuse_port=True, log_level=log_level, access_log=access_log == "1")


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
