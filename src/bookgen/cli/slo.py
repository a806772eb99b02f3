"""`bookgen slo`: render the rules, dashboards, Alertmanager config and gates from slo.yaml."""

from __future__ import annotations

from pathlib import Path

import click

from bookgen.slo.generate import stale, write_all
from bookgen.slo.spec import SpecError, load_spec


def _deploy_files(root: Path) -> dict[str, str]:
    """Container deploy configs that embed the generated rules, when ROOT is a checkout."""
    if not (root / "deploy").is_dir():
        return {}
    from bookgen.stack import deploy  # the slo package must not import stack; the CLI may

    return {name: render() for name, render in deploy.GENERATED.items()}


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
    try:
        spec = load_spec(spec_path or root / "slo.yaml")
    except SpecError as error:
        raise click.ClickException(str(error)) from None
    written = write_all(spec, root)
    for rel, text in _deploy_files(root).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(rel)
    for rel in written:
        click.echo(f"wrote {rel}")
    click.echo(f"{len(written)} file(s) written; the others were up to date.")


@slo.command()
@_root
@_spec
def check(root: Path, spec_path: Path | None) -> None:
    """Exit 1 listing every generated file that is missing or stale."""
    try:
        spec = load_spec(spec_path or root / "slo.yaml")
    except SpecError as error:
        raise click.ClickException(str(error)) from None
    out_of_date = list(stale(spec, root))
    for rel, text in _deploy_files(root).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out_of_date.append(rel)
    if out_of_date:
        for rel in out_of_date:
            click.echo(f"stale: {rel}", err=True)
        click.echo("run `bookgen slo generate` and commit the result", err=True)
        raise SystemExit(1)
    click.echo("all generated files are up to date with slo.yaml")
