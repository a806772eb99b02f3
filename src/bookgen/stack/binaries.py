"""Locating the Prometheus and Alertmanager binaries, with an install hint when one is missing."""

from __future__ import annotations

import os
import shutil

INSTALL_HINT = (
    "install it with: sudo apt-get install prometheus prometheus-alertmanager "
    "(Debian/Ubuntu), or put the official release binary on PATH"
)

# Environment override, then the Debian names, then the upstream release names.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "promtool": ("promtool",),
    "amtool": ("amtool",),
}


class MissingBinaryError(RuntimeError):
    """A required executable is not installed."""


def find(tool: str) -> str:
    """Path of `tool` (`BOOKGEN_<TOOL>_BIN` wins), or an error saying how to install it."""
    override = os.environ.get(f"BOOKGEN_{tool.upper()}_BIN")
    if override:
        if shutil.which(override) is None:
            raise MissingBinaryError(f"BOOKGEN_{tool.upper()}_BIN={override} is not executable")
        return override
    for name in CANDIDATES[tool]:
        path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin:/usr/sbin")
        if path:
            return path
    names = " or ".join(CANDIDATES[tool])
    raise MissingBinaryError(f"{tool} not found (looked for {names} on PATH); {INSTALL_HINT}")
