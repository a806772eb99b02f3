"""`bookgen loadtest`: Locust headless with a profile's users, shape, gate and reports."""

from __future__ import annotations

from pathlib import Path

import click

from bookgen.acceptance.locust_run import (
    PROFILES,
    LocustRun,
    exit_on_sigterm,
    parse_duration,
    timestamp,
    use_api_key,
)
from bookgen.acceptance.project import Project
from bookgen.cli.keys import api_key_option

# The stack's default scrape interval: the charts' rate windows span several scrapes of it.
SCRAPE_S = 15.0


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("loadtest")
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default="acceptance",
    show_default=True,
    help="acceptance: BookGenUser steady; stress: StressTestUser step; spike; soak; "
    "capacity: the step search for the highest sustained req/s of one API process.",
)
@click.option("--users", type=click.IntRange(1, 100_000), help="Peak users (profile default).")
@click.option("--duration", callback=_duration, help="Run time, e.g. 90s, 5m (profile default).")
@click.option("--host", help="API base URL. capacity without it starts its own server.")
@click.option("--spawn-rate", type=float, help="Users started per second.")
@click.option("--processes", type=int, default=0, help="Locust worker processes (distributed).")
@click.option("--prometheus-url", default="", help="Compare with the server side in Prometheus.")
@click.option(
    "--thresholds",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Thresholds JSON (default loadtests/thresholds.json, generated from slo.yaml).",
)
@click.option("--min-rps", type=float, help="Override the thresholds' minimum throughput.")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where reports go (default reports/loadtest-<profile>-<timestamp>).",
)
@click.option("--generations", default=32, show_default=True, help="capacity: books in flight.")
@click.option("--user-rate", default=20.0, show_default=True, help="capacity: req/s per user.")
@click.option("--step-users", default=10, show_default=True, help="capacity: users per step.")
@click.option(
    "--database-url", help="capacity: the store of the server it starts (default SQLite)."
)
@click.option("--step-time", default=10.0, show_default=True, help="capacity: seconds per step.")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="The BookGen checkout holding slo.yaml and loadtests/ (default: BOOKGEN_ROOT, the "
    "working directory or a parent of it, else the checkout the package runs from).",
)
@api_key_option
def loadtest(
    profile: str,
    users: int | None,
    duration: float | None,
    host: str | None,
    spawn_rate: float | None,
    processes: int,
    prometheus_url: str,
    thresholds: Path | None,
    min_rps: float | None,
    report_dir: Path | None,
    generations: int,
    user_rate: float,
    step_users: int,
    step_time: float,
    database_url: str | None,
    project: Path | None,
    api_key: str | None,
) -> None:
    """Run a load profile headless; exits non-zero when the gate finds a target breached."""
    exit_on_sigterm()
    use_api_key(api_key)
    from bookgen.acceptance.project import find_project

    try:
        found = find_project(project)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    folder = (report_dir or Path("reports") / f"loadtest-{profile}-{timestamp()}").resolve()
    if profile == "capacity":
        from bookgen.acceptance.capacity import capacity_goal_rps, knee_verdict, run_capacity

        report = run_capacity(
            folder,
            host,
            generations=generations,
            max_users=users or PROFILES["capacity"].users,
            step_users=step_users,
            step_time_s=step_time,
            user_rate=user_rate,
            processes=processes,
            database_url=database_url,
            project=found,
        )
        click.echo(f"{'users':>6} {'offered':>8} {'req/s':>8} {'p95 ms':>7} {'failures':>8}  step")
        for step in report.get("steps", []):
            p95 = "-" if step["p95_ms"] is None else f"{step['p95_ms']:.0f}"
            verdict = "ok" if step["ok"] else f"BREACH: {step.get('breach', '')}"
            if not step.get("sustained", True):
                verdict += " (offered rate not sustained)"
            click.echo(
                f"{step['users']:>6} {step['offered_rps']:>8.0f} {step['rps']:>8.1f} {p95:>7} "
                f"{step['failures']:>8}  {verdict}"
            )
        click.echo(f"reports: {folder}")
        figure = float(report.get("capacity_rps", 0.0))
        broke = report.get("breaking_step")
        click.echo(
            "KNEE: "
            + (
                f"{figure:.0f} req/s is the last step that held; at {broke['users']} users "
                f"({broke['offered_rps']:.0f} req/s offered, {broke['rps']:.0f} served): "
                f"{broke['breach']}"
                if broke
                else "not reached (the search hit its user ceiling or run time first)"
            )
        )
        click.echo(
            f"CAPACITY {figure:.0f} req/s per API process with "
            f"{report.get('generations_running_min')}..{report.get('generations_running_max')} "
            "generations running during the measurement; "
            + knee_verdict(figure, capacity_goal_rps(found))
        )
        if report.get("api_cpu_ms_per_request"):
            click.echo(
                f"API process CPU: {report['api_cpu_ms_per_request']:.2f} ms per request of the "
                f"mix -> {report['projected_rps_per_core']:.0f} req/s per fully available core; "
                f"the generations alone used {report['generations_cpu_share_of_a_core']:.0%} "
                "of a core"
            )
        raise SystemExit(0 if figure > 0 else 1)
    if host is None:
        raise click.UsageError("--host is required for this profile (e.g. http://127.0.0.1:8000)")
    run = LocustRun(
        profile,
        host,
        folder,
        users=users,
        duration_s=duration,
        spawn_rate=spawn_rate,
        processes=processes,
        prometheus_url=prometheus_url,
        thresholds=thresholds,
        min_rps=min_rps,
        project=found,
    )
    click.echo(f"$ {' '.join(run.argv())}")
    code = run.run()
    page = write_page(run, found, prometheus_url)
    click.echo(f"reports: {folder} (report.html, stats_*.csv, stats.json, gate.json)")
    click.echo(f"report: {page}" if page else "report: none (the gate wrote no gate.json)")
    raise SystemExit(code)


def write_page(run: LocustRun, project: Project, prometheus_url: str) -> Path | None:
    """loadtest.html beside Locust's reports: the gate's verdicts and, given Prometheus, charts."""
    from bookgen.acceptance.report import collect, report_data, write_report

    gate = run.gate()
    if gate is None:
        return None
    rows = [
        {
            "target": v["check"],
            "measured": "-" if v.get("measured") is None else f"{float(v['measured']):.4g}",
            "goal": v["target"],
            "ok": v["ok"],
            "note": v.get("note", ""),
        }
        for v in gate.get("verdicts", [])
    ]
    start, end = float(gate["window"]["start"]), float(gate["window"]["end"])
    limits = {"api_p95_ms": max(gate["thresholds"]["p95_ms"].values(), default=0.0)}
    try:
        from bookgen.acceptance.targets import load_targets

        limits["max_rss_mib"] = load_targets(project=project).max_rss_bytes / 2**20
    except (OSError, ValueError, KeyError):
        pass  # no memory line then; the verdicts do not depend on it
    series = collect(prometheus_url, start, end, SCRAPE_S) if prometheus_url else None
    data = report_data(
        title=f"BookGen load test: profile {run.profile} against {run.host}",
        verdict=f"GATE {'PASS' if gate.get('passed') else 'FAIL'}",
        rows=rows,
        start=start,
        end=end,
        limits=limits,
        series=series,
        notes=[f"{gate.get('requests', 0)} requests, {gate.get('rps', 0.0):.1f} req/s"],
    )
    return write_report(run.report_dir, "loadtest", data)
