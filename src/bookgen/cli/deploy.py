"""`bookgen deploy check`: validate deploy/ offline, one line per check."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def deploy() -> None:
    """The compose and Kubernetes deployments in deploy/."""


@deploy.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root (deploy/, alerts/, slo.yaml).",
)
def check(root: Path) -> None:
    """Exit 1 unless every check passes (compose, kustomize, schemas, policy, rules, amtool)."""
    from bookgen.deploy.check import run_all

    failed = 0
    for result in run_all(root.resolve()):
        click.echo(result.line())
        failed += not result.ok
    if failed:
        click.echo(f"{failed} check(s) failed", err=True)
        raise SystemExit(1)
