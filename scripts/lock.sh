#!/usr/bin/env bash
# Refresh requirements.lock: every package (with its hashes) that scripts/setup.sh installs, from
# pyproject.toml's dependencies and its dev and tools extras, plus what building bookgen needs.
# Run it after changing a dependency, then commit the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
printf 'setuptools>=69\nwheel\n' | uv pip compile pyproject.toml - --extra dev --extra tools \
  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  --custom-compile-command "bash scripts/lock.sh" --quiet -o requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages pinned with hashes"
