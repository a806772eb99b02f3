"""`bookgen worker`: a Celery worker that writes books, section by section."""

from __future__ import annotations

import click

from bookgen.service.settings import get_settings


@click.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 512),
    default=None,
    help="sections at once (default BOOKGEN_WORKER_CONCURRENCY, 32)",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="BOOKGEN_WORKER_METRICS_PORT",
    help="serve this worker's /metrics here (separate from any API port)",
)
@click.option("--hostname", default=None, help="Celery node name, e.g. worker-1@%h")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(
    concurrency: int | None,
    metrics_host: str,
    metrics_port: int | None,
    hostname: str | None,
    loglevel: str,
) -> None:
    """Run a worker of the worker tier (needs BOOKGEN_BROKER_URL and a shared store)."""
    settings = get_settings()
    if not settings.broker_url:
        raise click.ClickException(
            "no broker: set BOOKGEN_BROKER_URL, e.g. redis://127.0.0.1:6379/1 "
            "(or amqp://guest:guest@127.0.0.1:5672//)"
        )
    from bookgen.cli.serve import check_provider

    check_provider()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    from bookgen.worker import build_worker

    build_worker(settings, metrics_host=metrics_host, metrics_port=metrics_port).run(
        hostname, loglevel
    )
