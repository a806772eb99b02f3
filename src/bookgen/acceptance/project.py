"""Where the acceptance commands find slo.yaml, the Locust files and the generated thresholds.

`bookgen verify` and `bookgen loadtest` read files that live beside the package, not in it
(the SLO spec and the load tests). They are looked up in this order, and the first folder that
holds both `slo.yaml` and `loadtests/locustfile.py` wins:

1. `--project DIR` (explicit),
2. the `BOOKGEN_ROOT` environment variable,
3. the working directory and each of its parents (so any folder of a checkout works),
4. the checkout the package was imported from (an editable install).

A non-editable install outside a checkout has none of these, so it needs `--project` or
`BOOKGEN_ROOT`; the error says so. Once found, the root is exported as `BOOKGEN_ROOT`, so the
stack (`bookgen.stack.profile.repo_root`) renders its alert rules from the same slo.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bookgen

ROOT_ENV = "BOOKGEN_ROOT"


class ProjectNotFound(FileNotFoundError):
    """No folder with slo.yaml and loadtests/ was found; the message lists where we looked."""


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def slo(self) -> Path:
        return self.root / "slo.yaml"

    @property
    def loadtests(self) -> Path:
        return self.root / "loadtests"

    @property
    def thresholds(self) -> Path:
        return self.loadtests / "thresholds.json"

    @property
    def locustfiles(self) -> str:
        """The `-f` argument of Locust: the users and the shapes, as absolute paths."""
        return f"{self.loadtests / 'locustfile.py'},{self.loadtests / 'shapes.py'}"

    def export(self) -> None:
        """Make this root the one every part of this process (and its children) reads."""
        os.environ[ROOT_ENV] = str(self.root)


def _is_project(folder: Path) -> bool:
    return (folder / "slo.yaml").is_file() and (folder / "loadtests" / "locustfile.py").is_file()


def candidates(explicit: Path | None = None) -> list[tuple[str, Path]]:
    """Every folder looked at, in order, with where it came from."""
    found: list[tuple[str, Path]] = []
    if explicit is not None:
        return [("--project", explicit.expanduser().resolve())]
    env = os.environ.get(ROOT_ENV)
    if env:
        found.append((ROOT_ENV, Path(env).expanduser().resolve()))
    cwd = Path.cwd().resolve()
    found += [("working directory", folder) for folder in (cwd, *cwd.parents)]
    found.append(("package checkout", Path(bookgen.__file__).resolve().parents[2]))
    return found


def find_project(explicit: Path | None = None) -> Project:
    """The project root (see the module docstring); raises ProjectNotFound naming each place."""
    tried = candidates(explicit)
    for _origin, folder in tried:
        if _is_project(folder):
            return Project(folder)
    if explicit is not None:
        raise ProjectNotFound(
            f"--project {explicit}: no slo.yaml and loadtests/locustfile.py in {tried[0][1]}"
        )
    shown = [f"{origin} {folder}" for origin, folder in tried if origin != "working directory"]
    shown.insert(0, f"working directory {Path.cwd()} and its parents")
    raise ProjectNotFound(
        "no BookGen project (slo.yaml and loadtests/locustfile.py) found; looked in: "
        + "; ".join(shown)
        + f". Pass --project PATH/TO/CHECKOUT or set {ROOT_ENV}."
    )
