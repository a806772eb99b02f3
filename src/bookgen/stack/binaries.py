"""Locating the stack's executables, with a one-line install hint when one is missing."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

INSTALL_HINT = (
    "install it with: sudo apt-get install prometheus prometheus-alertmanager "
    "(Debian/Ubuntu), or put the official release binary on PATH"
)
_POSTGRES_HINT = "install it: apt-get install postgresql (or pass --database-url)"
# prometheus-exporter-celery pins redis<6 and prometheus-client<0.22, which celery[redis]>=5.6
# cannot share an environment with, so scripts/setup.sh gives it a virtualenv of its own.
CELERY_EXPORTER_VENV = Path.home() / ".local/share/bookgen/celery-exporter"

# Environment override, then the Debian names, then the upstream release names.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "promtool": ("promtool",),
    "amtool": ("amtool",),
    "redis-server": ("redis-server",),
    "initdb": ("initdb",),
    "postgres": ("postgres",),
    "redis-exporter": ("prometheus-redis-exporter", "redis_exporter"),
    "postgres-exporter": ("prometheus-postgres-exporter", "postgres_exporter"),
    "celery-exporter": ("celery-exporter", str(CELERY_EXPORTER_VENV / "bin/celery-exporter")),
}
HINTS: dict[str, str] = {
    "redis-server": "install it: apt-get install redis-server",
    "initdb": _POSTGRES_HINT,
    "postgres": _POSTGRES_HINT,
    "redis-exporter": "install it: apt-get install prometheus-redis-exporter",
    "postgres-exporter": "install it: apt-get install prometheus-postgres-exporter",
    "celery-exporter": "install it: bash scripts/setup.sh (prometheus-exporter-celery, own venv)",
}
# Debian keeps the PostgreSQL server binaries off PATH, one directory per major version.
_EXTRA_PATH = "/usr/bin:/usr/local/bin:/usr/sbin:" + ":".join(
    sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
)


class MissingBinaryError(RuntimeError):
    """A required executable is not installed."""


def find(tool: str) -> str:
    """Path of `tool` (`BOOKGEN_<TOOL>_BIN` wins), or an error saying how to install it."""
    variable = f"BOOKGEN_{tool.upper().replace('-', '_')}_BIN"
    override = os.environ.get(variable)
    if override:
        if shutil.which(override) is None:
            raise MissingBinaryError(f"{variable}={override} is not executable")
        return override
    for name in CANDIDATES[tool]:
        path = shutil.which(name) or shutil.which(name, path=_EXTRA_PATH)
        if path:
            return path
    names = " or ".join(CANDIDATES[tool])
    hint = HINTS.get(tool, INSTALL_HINT)
    raise MissingBinaryError(f"{tool} not found (looked for {names} on PATH); {hint}")
