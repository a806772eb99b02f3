"""`bookgen sim-llm`: run the simulated OpenAI-compatible model as its own server."""

from __future__ import annotations

import click

from bookgen.service.settings import SimSettings, get_settings


@click.command("sim-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tokens-per-second", type=float, help="Tokens per second per stream.")
@click.option("--time-to-first-token", "time_to_first_token_s", type=float, help="Seconds.")
@click.option("--jitter", type=float, help="0-1: random spread of the pacing.")
@click.option("--error-rate", type=float, help="0-1: share of requests answered 500.")
@click.option("--rate-limit-rate", type=float, help="0-1: share answered 429.")
@click.option("--retry-after", "retry_after_s", type=float, help="Retry-After of those 429s.")
@click.option("--timeout-rate", type=float, help="0-1: share of requests that hang.")
@click.option("--hang", "hang_s", type=float, help="How long a hanging request hangs (s).")
@click.option("--stall", "stall_s", type=float, help="Pause once mid-response (s).")
@click.option("--latency", "latency_s", type=float, help="Added before the first token (s).")
@click.option("--log-level", default="warning", show_default=True)
def sim_llm(host: str, port: int, log_level: str, **knobs: float | None) -> None:
    """Serve the simulated model (OpenAI-compatible, base URL http://HOST:PORT/v1).

    Knobs default to BOOKGEN_SIM__* settings and can be changed at runtime with
    PATCH /admin/config.
    """
    import uvicorn

    from bookgen.service.llm.sim import create_sim_app

    base = get_settings().sim.model_dump()
    base.update({k: v for k, v in knobs.items() if v is not None})
    try:
        sim_settings = SimSettings.model_validate(base)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    app = create_sim_app(sim_settings)
    click.echo(f"simulated model on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
