"""`bookgen slo`: render the rules, dashboards, Alertmanager config and gates from slo.yaml."""

from __future__ import annotations

from pathlib import Path

import click

from bookgen.slo.generate import stale, write_all
from bookgen.slo.spec import Spec, SpecError, load_spec


def _stale_deploy_files(root: Path) -> dict[str, str]:
    """Container deploy configs embedding the rules that differ from a fresh render (checkouts)."""
    if not (root / "deploy").is_dir():
        return {}
    from bookgen.stack import deploy  # the slo package must not import stack; the CLI may

    fresh = {name: render() for name, render in deploy.GENERATED.items()}
    return {
        rel: text
        for rel, text in fresh.items()
        if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text
    }


def _load(root: Path, spec_path: Path | None) -> Spec:
    try:
        return load_spec(spec_path or root / "slo.yaml")
    except SpecError as error:
        raise click.ClickException(str(error)) from None


_root = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root: slo.yaml is read and files are written relative to it.",
)
_spec = click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The SLO spec (default: ROOT/slo.yaml).",
)


@click.group()
def slo() -> None:
    """Generate and check the artefacts derived from slo.yaml."""


@slo.command()
@_root
@_spec
def generate(root: Path, spec_path: Path | None) -> None:
    """Write every generated file (rules, tests, runbook, Alertmanager, dashboards, gates)."""
    written = write_all(_load(root, spec_path), root)
    for rel, text in _stale_deploy_files(root).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
        written.append(rel)
    for rel in written:
        click.echo(f"wrote {rel}")
    click.echo(f"{len(written)} file(s) written; the others were up to date.")


@slo.command()
@_root
@_spec
def check(root: Path, spec_path: Path | None) -> None:
    """Exit 1 listing every generated file that is missing or stale."""
    out_of_date = [*stale(_load(root, spec_path), root), *_stale_deploy_files(root)]
    if out_of_date:
        for rel in out_of_date:
            click.echo(f"stale: {rel}", err=True)
        click.echo("run `bookgen slo generate` and commit the result", err=True)
        raise SystemExit(1)
    click.echo("all generated files are up to date with slo.yaml")
