"""`bookgen verify`: the six targets measured in one command."""

from __future__ import annotations

from pathlib import Path

import click

from bookgen.acceptance.locust_run import exit_on_sigterm, parse_duration, timestamp


@click.command("verify")
@click.option("--users", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--duration", default="5m", show_default=True, help="Acceptance load time.")
@click.option("--books", default=4, show_default=True, help="Full-size books written meanwhile.")
@click.option("--chapters", default=20, show_default=True, help="Chapters per full-size book.")
@click.option("--words", default=51_000, show_default=True, help="Words per full-size book.")
@click.option(
    "--book-wait", default="4m", show_default=True, help="Max wait for books after the load."
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--fast/--default-rules",
    default=False,
    show_default=True,
    # Production rules by default: then an alert in the table is a real breach. The fast profile
    # divides time limits by 60, so full-size books (about 3 min) trip its 30 s book-time alert.
    help="Alert rules of the fast profile (time horizons scaled down) or the production ones.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default reports/verify-<timestamp>.",
)
@click.option("--slo", "slo_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--thresholds", type=click.Path(dir_okay=False, path_type=Path))
def verify(
    users: int,
    duration: str,
    books: int,
    chapters: int,
    words: int,
    book_wait: str,
    workers: int,
    fast: bool,
    report_dir: Path | None,
    slo_path: Path | None,
    thresholds: Path | None,
) -> None:
    """Bring the stack up, run the acceptance load while books are written, print the targets."""
    exit_on_sigterm()
    from bookgen.acceptance.targets import load_targets
    from bookgen.acceptance.verify import VerifyOptions, run_verify

    try:
        targets = load_targets(slo_path, thresholds)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot read the targets: {exc}") from None
    options = VerifyOptions(
        report_dir=report_dir or Path("reports") / f"verify-{timestamp()}",
        users=users,
        duration_s=parse_duration(duration),
        full_books=books,
        book_chapters=chapters,
        book_words=words,
        book_wait_s=parse_duration(book_wait),
        workers=workers,
        fast=fast,
    )
    try:
        code = run_verify(options, targets)
    except (RuntimeError, OSError) as exc:  # the stack could not start: say which part and why
        raise click.ClickException(f"verify could not run: {exc}") from None
    raise SystemExit(code)
