"""`bookgen up` and `bookgen status`: the whole stack on this machine, and what it is doing."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("run"),
    show_default=True,
    help="Directory holding every component's config, data and logs.",
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("up")
@click.option(
    "--engine",
    type=click.Choice(["embedded", "celery"]),
    default="embedded",
    show_default=True,
    help="Who writes the books: the API processes, or Celery workers behind a broker.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API processes (embedded), or Celery worker processes (celery).",
)
@click.option(
    "--api-workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API processes in front of the Celery workers (celery engine only).",
)
@click.option(
    "--broker",
    type=click.Choice(["redis", "rabbitmq"]),
    default="redis",
    show_default=True,
    help="celery engine: a private Redis, or the system RabbitMQ on 127.0.0.1:5672.",
)
@click.option(
    "--database-url",
    default=None,
    help="Use this store instead of a private one (PostgreSQL for the celery engine).",
)
@click.option(
    "--fast/--default-rules",
    default=True,
    show_default=True,
    help="Fast alert profile (1 s scrape and evaluation, short windows) or the production rules.",
)
@click.option("--port", "api_port", type=click.IntRange(1, 65535), help="API port (default: free).")
@click.option("--faults", is_flag=True, help="Enable the fault-injection debug routes.")
@click.option(
    "--sim", is_flag=True, help="Use the simulated model even if a provider is configured."
)
@RUN_DIR
def up(
    engine: str,
    workers: int,
    api_workers: int,
    broker: str,
    database_url: str | None,
    fast: bool,
    api_port: int | None,
    faults: bool,
    run_dir: Path,
    sim: bool = False,
) -> None:
    """Start the API, the simulated model, Prometheus, Alertmanager and an alert receiver
    (with --engine celery also the workers, their broker, store and exporters)."""
    from bookgen.stack.supervisor import Stack

    stack = Stack(
        run_dir,
        workers,
        fast,
        api_port,
        faults=faults,
        echo=sys.stdout,
        engine=engine,
        broker=broker,
        database_url=database_url,
        api_workers=api_workers,
    )
    if sim:
        stack.llm_base_url = None  # its own simulated model, declared as such to the service
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it
        signal.signal(sig, _terminate)
    click.echo(f"starting the stack in {stack.run_dir} ...")
    try:
        stack.start()
    except KeyboardInterrupt:
        stack.stop()
        raise SystemExit(130) from None
    except (RuntimeError, OSError, ValueError) as exc:  # every start error says what to do
        raise click.ClickException(str(exc)) from None
    try:
        width = max(len(name) for name in stack.urls())
        for name, url in stack.urls().items():
            click.echo(f"  {name:<{width}}  {url}")
        click.echo(f"  {'alerts log':<{width}}  {stack.notifications_path}")
        if faults:
            click.echo(f"  {'faults':<{width}}  {stack.api_url}/debug/faults")
            click.echo(f"  {'debug token':<{width}}  X-Debug-Token: {stack.debug_token}")
        click.echo(f"profile: {stack.profile_name}. Ctrl-C stops everything.")
        reported: set[str] = set()
        while True:
            dead = [c.name for c in stack.components if not c.alive()]
            # A lost Celery worker is what the alerts are for; anything else ends the stack.
            fatal = [name for name in dead if not name.startswith("worker-")]
            if fatal:
                raise click.ClickException(f"{', '.join(fatal)} exited; see {run_dir}/logs")
            for name in set(dead) - reported:
                click.echo(f"{name} exited; see {run_dir}/logs/{name}.log", err=True)
            reported = set(dead)
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    finally:
        stack.stop()
        click.echo("stopped; nothing left running.")


@click.command("status")
@RUN_DIR
def status(run_dir: Path) -> None:
    """Show which components of `bookgen up` run, and which alerts fire."""
    from bookgen.stack import state
    from bookgen.stack.receiver import describe

    data = state.read(run_dir)
    if data is None:
        raise click.ClickException(f"no stack running in {run_dir} (start one with `bookgen up`)")
    found = state.probe(data)
    engine = data.get("engine", "embedded")
    click.echo(
        f"stack in {run_dir} (profile {data['profile']}, engine {engine}, "
        f"{data['workers']} workers)"
    )
    for c in found.components:
        mark = "up" if c.running and c.ready else ("running, not ready" if c.running else "down")
        click.echo(f"  {c.name:<17} pid {c.pid!s:<8} {mark:<18} {c.url}")
    if found.targets_error:
        click.echo(found.targets_error)
    else:
        click.echo(f"prometheus targets: {len(found.targets)}")
        for t in found.targets:
            error = f"  ({t.error})" if t.error and t.health != "up" else ""
            click.echo(f"  {t.job:<17} {t.instance:<22} {t.health}{error}")
    if found.error:
        click.echo(found.error)
    else:
        click.echo(f"firing alerts: {len(found.firing)}")
        for alert in found.firing:
            click.echo(f"  {describe(alert['labels'])} since {alert.get('startsAt', '?')}")
    if not all(c.running and c.ready for c in found.components):
        raise SystemExit(1)
