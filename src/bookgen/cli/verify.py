"""`bookgen verify`: the six targets measured in one command."""

from __future__ import annotations

from pathlib import Path

import click

from bookgen.acceptance.locust_run import (
    exit_on_sigterm,
    parse_duration,
    timestamp,
    use_api_key,
)
from bookgen.cli.keys import api_key_option


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
    "--user-book",
    default="3x3000",
    show_default=True,
    help="Each load user's own book, CHAPTERSxWORDS.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default ./reports/verify-<timestamp> (printed as an absolute path).",
)
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="The BookGen checkout holding slo.yaml and loadtests/ (default: BOOKGEN_ROOT, the "
    "working directory or a parent of it, else the checkout the package runs from).",
)
@click.option(
    "--slo",
    "--spec",
    "slo_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SLO spec for the targets (default PROJECT/slo.yaml).",
)
@click.option(
    "--thresholds",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Generated gate thresholds (default PROJECT/loadtests/thresholds.json).",
)
@api_key_option
def verify(
    users: int,
    duration: str,
    books: int,
    chapters: int,
    words: int,
    book_wait: str,
    workers: int,
    fast: bool,
    user_book: str,
    report_dir: Path | None,
    project: Path | None,
    slo_path: Path | None,
    thresholds: Path | None,
    api_key: str | None,
) -> None:
    """Bring the stack up, run the acceptance load while books are written, print the targets."""
    exit_on_sigterm()
    use_api_key(api_key)
    from bookgen.acceptance.project import find_project
    from bookgen.acceptance.targets import load_targets
    from bookgen.acceptance.verify import VerifyOptions, run_verify

    try:
        found = find_project(project)
        targets = load_targets(slo_path, thresholds, found)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot read the targets: {exc}") from None
    try:
        user_chapters, user_words = (int(x) for x in user_book.lower().split("x"))
    except ValueError:
        message = f"{user_book!r} is not CHAPTERSxWORDS"
        raise click.BadParameter(message, param_hint="--user-book") from None
    options = VerifyOptions(
        report_dir=(report_dir or Path("reports") / f"verify-{timestamp()}").resolve(),
        users=users,
        duration_s=parse_duration(duration),
        full_books=books,
        book_chapters=chapters,
        book_words=words,
        book_wait_s=parse_duration(book_wait),
        workers=workers,
        fast=fast,
        user_book_chapters=user_chapters,
        user_book_words=user_words,
        project=found,
    )
    try:
        code = run_verify(options, targets)
    except (RuntimeError, OSError) as exc:  # the stack could not start: say which part and why
        raise click.ClickException(f"verify could not run: {exc}") from None
    raise SystemExit(code)
